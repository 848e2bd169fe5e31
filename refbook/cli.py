"""The ``refbook`` command line: start and join clusters, see them, stop them, bench."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time

from .clusters import Client, candidates, read_hex
from .exceptions import RefbookError
from .units import SIZE_HELP, parse_bytes


def _size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _query(head: str, secret: bytes, what, timeout: float = 5.0):
    with Client(head, secret) as client:
        return client.ask(client.head, what, timeout)


NOTHING_RUNS = ("no refbook cluster is running on this host. Start one with "
                "refbook.init() in Python, %load_ext refbook in a notebook, or `refbook "
                "start --head`; or give --address HOST:PORT of a cluster elsewhere")


def connect(args) -> Client:
    """A client of the cluster that ``--address`` (or REFBOOK_ADDRESS) names, or else of
    the newest cluster running on this host: one that refbook.init() (a notebook, a
    script) or `refbook start --head` started."""
    from .runtime.processes.launch import find_secret, parse_address
    address = args.address or os.environ.get("REFBOOK_ADDRESS")
    if address and address.startswith("ipc://"):
        root = os.path.dirname(os.path.dirname(address[len("ipc://"):]))
        return Client(address, _read_hex(os.path.join(root, "secret"), args.secret_file))
    if address:
        host, port = parse_address(address.removeprefix("tcp://"))
        return Client(address, find_secret(host, port, args.secret_file))
    found = [(addr, secret) for addr, _kind, secret in candidates(args.secret_file)]
    for addr, secret in found:          # the newest that answers
        try:
            client = Client(addr, secret())
        except (OSError, RefbookError):
            continue
        try:
            client.ask(client.head, "nodes", timeout=2.0)
        except RefbookError:
            client.close()
            continue
        if len(found) > 1:
            print(f"({len(found)} clusters on this host; this is the newest, at "
                  f"{addr}: choose another with --address)", file=sys.stderr)
        return client
    raise RefbookError(NOTHING_RUNS)


def _read_hex(path: str, secret_file: str | None) -> bytes:
    return read_hex(secret_file or path)


def cmd_start(args) -> int:
    from .runtime.processes.launch import (
        find_secret,
        local_ip_towards,
        parse_address,
        start_node,
        write_secret,
    )
    from .runtime.wire.transport import free_port
    resources = json.loads(args.resources) if args.resources else {}
    num_cpus = args.num_cpus if args.num_cpus is not None else (os.cpu_count() or 1)
    capacity = args.object_store_memory or int(__import__("psutil").virtual_memory().total * 0.3)
    if args.head:
        host = args.bind or "127.0.0.1"
        secret = os.urandom(32)
        path = write_secret(host, args.port, secret)
        rec = start_node(host=host, port=args.port, secret=secret, head=None,
                         num_cpus=num_cpus, capacity=capacity, resources=resources)
        print(f"refbook head started at {host}:{args.port} (pid {rec['pid']})")
        print(f"  secret (readable only by you): {path}")
        print(f"  join from another host:  refbook start --address {host}:{args.port} "
              f"--secret-file <a copy of {path}>")
        print(f"  from Python:             refbook.init(address=\"{host}:{args.port}\")")
        return 0
    if not args.address:
        print("refbook start: give --head, or --address HOST:PORT to join", file=sys.stderr)
        return 2
    head_host, head_port = parse_address(args.address)
    secret = find_secret(head_host, head_port, args.secret_file)
    host = args.bind or local_ip_towards(head_host)
    port = free_port(host)
    rec = start_node(host=host, port=port, secret=secret, head=f"tcp://{head_host}:{head_port}",
                     num_cpus=num_cpus, capacity=capacity, resources=resources)
    node_id = rec["address"].split("/n-")[1].split("/")[0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:       # did the head take us in?
        try:
            nodes = _query(args.address, secret, "nodes", timeout=2)
        except RefbookError as e:
            _kill(rec["pid"])
            print(f"refbook start: {e}", file=sys.stderr)
            return 1
        if any(n["node_id"] == node_id and n["alive"] for n in nodes):
            print(f"refbook node {node_id} joined {args.address} (pid {rec['pid']})")
            return 0
        time.sleep(0.1)
    _kill(rec["pid"])
    print(f"refbook start: the head at {args.address} did not take this node in within "
          f"10 s", file=sys.stderr)
    return 1


def cmd_status(args) -> int:
    with connect(args) as client:
        nodes = client.ask(client.head, "nodes")
        actors = client.ask(client.head, "actors") or []
        address = client.address
    print(f"cluster at {address}: {sum(n['alive'] for n in nodes)} live node(s)")
    wide = max([34] + [len(n["address"]) + 2 for n in nodes])
    print(f"{'node':<10}{'alive':<7}{'store used':>16}{'objects':>9}  {'address':<{wide}}"
          f"resources (available/total)")
    for n in nodes:
        st = n["store"]
        print(f"{n['node_id']:<10}{str(n['alive']):<7}"
              f"{st['used'] / 2**20:>10.1f} MiB{st['num_objects']:>9}  "
              f"{n['address']:<{wide}}{_resources(n)}")
    totals: dict = {}
    for n in nodes:
        if n["alive"]:
            for k, v in n["resources"].items():
                have = totals.setdefault(k, [0.0, 0.0])
                have[0] += n["available"].get(k, 0)
                have[1] += v
    print("cluster: " + (", ".join(f"{a:g}/{t:g} {k}" for k, (a, t) in sorted(totals.items()))
                         or "no resources"))
    live = [a for a in actors if a["state"] != "dead"]
    print(f"actors: {len(live)} live")
    for a in live:
        print(f"  {a.get('name') or '-':<16}{a['class_name']:<16}{a['state']}")
    return 0


def _resources(node: dict) -> str:
    """``2/2 CPU, 1/1 far``: every resource of a node, CPU first."""
    keys = sorted(node["resources"], key=lambda k: (k != "CPU", k))
    return ", ".join(f"{node['available'].get(k, 0):g}/{node['resources'][k]:g} {k}"
                     for k in keys)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def cmd_memory(args) -> int:
    from .clitables import memory_table
    from .runtime.api.snapshots import objects_of
    with connect(args) as client:
        objects = objects_of(client.probe)
        address = client.address
    print(f"cluster at {address}: object table, grouped by {args.group_by}")
    if not objects:
        print("no live objects")
        return 0
    for line in memory_table(objects, args.group_by):
        print(line)
    return 0


def cmd_events(args) -> int:
    from .clitables import event_line
    from .runtime.api.events import Collector
    with connect(args) as client:
        log = Collector(client.probe)     # the state API's merge and numbering
        log.poll()
        evs = log.after(0)
        print(f"cluster at {client.address}: {len(evs)} event(s)"
              + ("; following (Ctrl-C to stop)" if args.follow else ""))
        for e in evs:
            print(event_line(e))
        if not args.follow:
            return 0
        sys.stdout.flush()
        seen = log.seq
        try:
            while True:
                time.sleep(args.interval)
                try:
                    log.poll()
                except RefbookError as e:
                    print(f"refbook events: {e}; stopped following", file=sys.stderr)
                    return 1
                for e in log.after(seen):
                    print(event_line(e), flush=True)
                seen = log.seq
        except KeyboardInterrupt:
            return 0


def cmd_stop(args) -> int:
    from .runtime.processes.launch import forget_all, secret_path, started_here
    started = started_here()
    for rec in reversed(started):            # nodes first, the head last
        _kill(rec["pid"])
        shutil.rmtree(rec["session"], ignore_errors=True)
        if rec["head"]:
            try:
                os.unlink(secret_path(rec["host"], rec["port"]))
            except OSError:
                pass
    forget_all()
    print(f"refbook stop: stopped {len(started)} process(es) started on this host")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from .bench.run import main as bench_main
        return bench_main(argv[1:])
    if argv and argv[0] == "kernel":
        from .kernel.kernelspec import main as kernel_main
        return kernel_main(argv[1:])
    ap = argparse.ArgumentParser(prog="refbook", description="refbook command line")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("bench", help="run the benchmarks (refbook bench --help)")
    st = sub.add_parser("start", help="start a head (--head) or join a cluster (--address)",
                        description="Start a refbook node on this host: the head of a new "
                                    "cluster (--head), or a node that joins one (--address).")
    st.add_argument("--head", action="store_true",
                    help="start the head of a new cluster; it prints the command to join")
    st.add_argument("--address", metavar="HOST:PORT", help="the head to join")
    st.add_argument("--port", type=int, default=6380,
                    help="the head's TCP port; it also uses port+1 (default: 6380)")
    st.add_argument("--bind", metavar="IP", help="address to listen on (default: loopback "
                                                 "for a head, the address that reaches the "
                                                 "head for a node)")
    st.add_argument("--num-cpus", type=int, metavar="N",
                    help="CPUs this node offers, one worker each (default: all of them)")
    st.add_argument("--object-store-memory", type=_size, metavar="SIZE",
                    help=f"shared memory for this node's objects, in {SIZE_HELP} "
                         f"(default: 30%% of this machine's memory)")
    st.add_argument("--resources", metavar="JSON",
                    help='custom resources this node offers, e.g. \'{"gpu": 1}\'')
    st.add_argument("--secret-file", metavar="PATH",
                    help="the cluster's secret, a copy of the file `refbook start --head` "
                         "wrote (default: $REFBOOK_SECRET, or that file when the head "
                         "runs on this host)")
    ss = sub.add_parser("status", help="nodes, resources, store use and actors")
    sm = sub.add_parser("memory", help="the object table, like `ray memory`")
    sm.add_argument("--group-by", choices=("call_site", "node", "owner"), default="node",
                    help="group objects by the node that holds them (default, as `ray "
                         "memory` does), where they were created, or their owner")
    se = sub.add_parser("events", help="what the cluster did: spills, restores, "
                                       "transfers, OOM kills, node deaths")
    se.add_argument("--follow", "-f", action="store_true",
                    help="keep printing new events until Ctrl-C")
    se.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    for p in (ss, sm, se):
        p.add_argument("--address", metavar="HOST:PORT",
                       help="the cluster's head (default: $REFBOOK_ADDRESS, or the newest "
                            "cluster running on this host)")
        p.add_argument("--secret-file", metavar="PATH")
    sub.add_parser("stop", help="stop what `refbook start` started on this host")
    sub.add_parser("kernel", help='install the "Python 3 (refbook)" Jupyter kernel')
    args = ap.parse_args(argv)
    try:
        if args.cmd == "start":
            return cmd_start(args)
        if args.cmd == "status":
            return cmd_status(args)
        if args.cmd == "memory":
            return cmd_memory(args)
        if args.cmd == "events":
            return cmd_events(args)
        if args.cmd == "stop":
            return cmd_stop(args)
    except RefbookError as e:
        print(f"refbook {args.cmd}: {e}", file=sys.stderr)
        return 1
    print(f"refbook {args.cmd}: not available in this version yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
