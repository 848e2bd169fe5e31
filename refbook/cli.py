"""The ``refbook`` command line: start and join clusters, see them, stop them, bench."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time

from .exceptions import RefbookError
from .units import SIZE_HELP, parse_bytes


def _size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _query(head: str, secret: bytes, what, timeout: float = 5.0):
    from .runtime.processes.launch import local_ip_towards, parse_address
    from .runtime.processes.probe import Probe
    from .runtime.wire.transport import free_port
    host, port = parse_address(head)
    me = local_ip_towards(host)
    with Probe(f"tcp://{me}:{free_port(me)}/cli", secret) as probe:
        try:
            return probe.ask(f"tcp://{host}:{port}", what, timeout)
        except TimeoutError:
            raise RefbookError(
                f"no answer from the cluster at {head}: it is not running there, or it "
                f"refused us because the secret does not match") from None


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
    from .runtime.processes.launch import find_secret, parse_address, started_here
    address = args.address or os.environ.get("REFBOOK_ADDRESS")
    if not address:
        heads = [r for r in started_here() if r["head"]]
        if not heads:
            print("refbook status: no cluster started here; give --address HOST:PORT",
                  file=sys.stderr)
            return 2
        address = f"{heads[-1]['host']}:{heads[-1]['port']}"
    host, port = parse_address(address)
    secret = find_secret(host, port, args.secret_file)
    nodes = _query(address, secret, "nodes")
    actors = _query(address, secret, "actors") or []
    print(f"cluster at {address}: {sum(n['alive'] for n in nodes)} live node(s)")
    print(f"{'node':<10}{'alive':<7}{'store used':>16}{'objects':>9}  {'address':<34}"
          f"resources (available/total)")
    for n in nodes:
        st = n["store"]
        print(f"{n['node_id']:<10}{str(n['alive']):<7}"
              f"{st['used'] / 2**20:>10.1f} MiB{st['num_objects']:>9}  {n['address']:<34}"
              f"{_resources(n)}")
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
    ss.add_argument("--address")
    ss.add_argument("--secret-file")
    sub.add_parser("stop", help="stop what `refbook start` started on this host")
    sub.add_parser("kernel", help='install the "Python 3 (refbook)" Jupyter kernel')
    args = ap.parse_args(argv)
    try:
        if args.cmd == "start":
            return cmd_start(args)
        if args.cmd == "status":
            return cmd_status(args)
        if args.cmd == "stop":
            return cmd_stop(args)
    except RefbookError as e:
        print(f"refbook {args.cmd}: {e}", file=sys.stderr)
        return 1
    print(f"refbook {args.cmd}: not available in this version yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
