"""The zygote: a pre-imported, single-threaded fork of the node manager that forks
workers in about a millisecond (see node.py for the process tree)."""

from __future__ import annotations

import os
import signal

from ..data.arena import Arena


class Zygote:
    """A pre-imported, single-threaded fork of the node manager that forks workers."""

    def __init__(self, cfg: dict, secret: bytes, arena: Arena):
        cmd_r, self._cmd_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        nm_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # the zygote
            os.close(self._cmd_w)
            os.close(self._rep_r)
            self._serve(cmd_r, rep_w, cfg, secret, arena, nm_pid)
            os._exit(0)
        self.pid = pid
        os.close(cmd_r)
        os.close(rep_w)
        os.set_blocking(self._rep_r, False)
        self._partial = b""

    @staticmethod
    def _serve(cmd_r, rep_w, cfg, secret, arena, nm_pid):
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # the kernel reaps workers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            os.close(cfg["ready_fd"])    # only the node manager reports readiness
        except OSError:
            pass
        cmds = os.fdopen(cmd_r, "r", buffering=1)
        for line in cmds:          # ends when the node manager closes the pipe (dies)
            address = line.strip()
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                cmds.close()
                os.close(rep_w)
                from .worker import worker_main
                worker_main(cfg, secret, address, arena, nm_pid)
                os._exit(0)
            os.write(rep_w, f"{address} {pid}\n".encode())

    def spawn(self, address: str) -> None:
        os.write(self._cmd_w, (address + "\n").encode())

    @property
    def report_fd(self) -> int:
        return self._rep_r

    def read_reports(self) -> list[tuple[str, int]]:
        """Every ``(address, pid)`` the zygote has reported since the last call."""
        try:
            data = os.read(self._rep_r, 65536)
        except BlockingIOError:
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            addr, pid = line.decode().split()
            out.append((addr, int(pid)))
        return out

    def close(self) -> None:
        try:
            os.close(self._cmd_w)
        except OSError:
            pass
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
