"""Starting node processes that outlive the command that started them
(``refbook start``), and finding a cluster's secret."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys

from ...exceptions import RefbookError


def state_dir() -> str:
    """``~/.refbook``, resolved when used: a process may set HOME after importing us."""
    return os.path.expanduser("~/.refbook")


def secret_path(host: str, port: int) -> str:
    return os.path.join(state_dir(), f"{host}_{port}.secret")


def write_secret(host: str, port: int, secret: bytes) -> str:
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)
    path = secret_path(host, port)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    return path


def find_secret(host: str, port: int, secret_file: str | None = None) -> bytes:
    """``--secret-file``, then ``REFBOOK_SECRET``, then the file ``refbook start
    --head`` wrote for this user on this host."""
    if secret_file:
        with open(secret_file) as f:
            return bytes.fromhex(f.read().strip())
    env = os.environ.get("REFBOOK_SECRET")
    if env:
        return bytes.fromhex(env.strip())
    path = secret_path(host, port)
    try:
        with open(path) as f:
            return bytes.fromhex(f.read().strip())
    except OSError:
        raise RefbookError(
            f"no secret for the cluster at {host}:{port}: pass --secret-file PATH or set "
            f"REFBOOK_SECRET (on the head's host it is in {path})") from None


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RefbookError(f"an address is HOST:PORT, not {address!r}")
    return host, int(port)


def local_ip_towards(host: str) -> str:
    """The address of this host on the network that reaches ``host``."""
    if host in ("127.0.0.1", "localhost"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))
        return s.getsockname()[0]


def spawn_node(cfg: dict, secret: bytes, log_path: str, extra_fds: tuple = ()):
    """Start a node manager process (``python -m refbook.runtime.processes.node``) in a session
    of its own.  Returns the process and the read end of its ready pipe, for
    :func:`wait_ready` (the caller may do other work in between)."""
    ready_r, ready_w = os.pipe()
    # the secret goes through a pipe, never the environment: /proc/<pid>/environ keeps
    # the environment a process was started with (and every fork of it) readable for
    # its whole life, whatever the process later removes from os.environ
    secret_r, secret_w = os.pipe()
    os.write(secret_w, secret.hex().encode())      # 64 bytes: fits in any pipe buffer
    os.close(secret_w)
    cfg = dict(cfg, ready_fd=ready_w, secret_fd=secret_r)
    env = {k: v for k, v in os.environ.items() if k != "REFBOOK_SECRET"}
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "refbook.runtime.processes.node",
                                 json.dumps(cfg)],
                                pass_fds=(*extra_fds, ready_w, secret_r), env=env,
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True)
    os.close(ready_w)
    os.close(secret_r)
    return proc, ready_r


def read_secret_fd(fd: int) -> bytes:
    """The secret :func:`spawn_node` wrote into the pipe ``fd`` (closed here)."""
    with os.fdopen(fd, "rb") as f:
        return bytes.fromhex(f.read().decode())


def wait_ready(proc, ready_r: int, log_path: str, timeout: float = 30.0) -> None:
    """Wait until the node manager says it is ready; if it does not, kill it and raise
    with the end of its log."""
    try:
        r, _, _ = select.select([ready_r], [], [], timeout)
        ok = bool(r) and os.read(ready_r, 64).startswith(b"ready")
    finally:
        os.close(ready_r)
    if not ok:
        proc.kill()
        try:
            with open(log_path, errors="replace") as f:
                tail = f.read()[-2000:]
        except OSError:
            tail = ""
        raise RefbookError(f"the refbook node process did not start:\n{tail}")


def private_dir(path: str) -> None:
    """Create ``path`` (mode 0700), or make sure an existing one is a real directory of
    this user that nobody else can use: its name in /tmp is predictable."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    import stat
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RefbookError(f"{path} exists but is not a private directory of this user; "
                           f"remove it, or start the node on another port")


def node_config(*, host: str, port: int, head: str | None, num_cpus: int, capacity: int,
                resources: dict, driver_pid: int | None = None,
                heartbeat_s: float | None = None,
                heartbeat_timeout_s: float | None = None, started_by: str = "driver") -> dict:
    """The configuration of a node manager on ``host:port`` (and ``port + 1``).  With
    ``driver_pid`` it belongs to that process and exits with it.  ``started_by`` is what
    its node view says (``refbook start`` nodes refuse the teaching controls)."""
    if heartbeat_s is None:
        heartbeat_s = float(os.environ.get("REFBOOK_HEARTBEAT_S", 0.5))
    if heartbeat_timeout_s is None:
        heartbeat_timeout_s = float(os.environ.get("REFBOOK_HEARTBEAT_TIMEOUT_S", 3.0))
    node_id = os.urandom(4).hex()
    session = os.path.join("/tmp", f"refbook-{os.getuid()}-{host}-{port}")
    private_dir(session)
    os.makedirs(os.path.join(session, "logs"), mode=0o700, exist_ok=True)
    return {"session_dir": session, "sock_dir": session, "node_id": node_id,
            "node_address": f"tcp://{host}:{port}/n-{node_id}/nm", "num_cpus": num_cpus,
            "resources": resources, "capacity": capacity, "arena_fd": None,
            "driver_pid": driver_pid, "owns_session": True,
            "spill_dir": os.path.join(session, "spill"), "memory_threshold": 0.95,
            "head_address": head, "bind_host": host, "heartbeat_s": heartbeat_s,
            "heartbeat_timeout_s": heartbeat_timeout_s, "started_by": started_by}


def start_node(*, host: str, port: int, secret: bytes, head: str | None, num_cpus: int,
               capacity: int, resources: dict, heartbeat_s: float | None = None,
               heartbeat_timeout_s: float | None = None) -> dict:
    """Start a node manager on ``host:port`` (and ``port + 1``), detached from this
    process.  Returns what ``refbook stop`` needs to stop it."""
    cfg = node_config(host=host, port=port, head=head, num_cpus=num_cpus,
                      capacity=capacity, resources=resources, heartbeat_s=heartbeat_s,
                      heartbeat_timeout_s=heartbeat_timeout_s, started_by="refbook start")
    log_path = os.path.join(cfg["session_dir"], "logs", "node.log")
    proc, ready_r = spawn_node(cfg, secret, log_path)
    wait_ready(proc, ready_r, log_path)
    record = {"pid": proc.pid, "address": cfg["node_address"], "session": cfg["session_dir"],
              "host": host, "port": port, "head": head is None}
    _remember(record)
    return record


def _state_file() -> str:
    return os.path.join(state_dir(), "started.json")


def _remember(record: dict) -> None:
    os.makedirs(state_dir(), mode=0o700, exist_ok=True)
    started = started_here()
    started.append(record)
    with open(_state_file(), "w") as f:
        json.dump(started, f)


def started_here() -> list[dict]:
    try:
        with open(_state_file()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def forget_all() -> None:
    try:
        os.unlink(_state_file())
    except OSError:
        pass


# -- embedded clusters (refbook.init()) that the command line can find -------------------
def advertise(session_dir: str, head_address: str, secret: bytes) -> None:
    """Let ``refbook status / memory / events`` on this host find the cluster in
    ``session_dir`` (a private directory, removed with the cluster): its secret, only
    this user can read, and its head's address."""
    fd = os.open(os.path.join(session_dir, "secret"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    with open(os.path.join(session_dir, "head"), "w") as f:
        f.write(head_address)


def local_clusters() -> list[tuple[str, str]]:
    """``(head address, session dir)`` of every cluster that :func:`advertise` announced
    in this user's temporary directory, the newest first."""
    import tempfile
    root = tempfile.gettempdir()
    found = []
    try:
        names = os.listdir(root)
    except OSError:
        return []
    for name in names:
        if not name.startswith("refbook-"):
            continue
        path = os.path.join(root, name)
        try:
            st = os.stat(path)
            if st.st_uid != os.getuid():
                continue
            with open(os.path.join(path, "head")) as f:
                found.append((st.st_mtime, f.read().strip(), path))
        except OSError:
            continue
    return [(addr, path) for _, addr, path in sorted(found, reverse=True)]
