"""Hosts for multi-host tests: Linux network namespaces joined by a bridge, made and
removed by the test itself; or, where that is not allowed, loopback addresses."""

from __future__ import annotations

import os
import subprocess
import sys


def _ip(*args, ns=None, check=True):
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


class Hosts:
    """``hosts[name]`` is an IP address; ``run(name, argv)`` runs a command there."""

    def __init__(self, names: list[str], home: str, fast_heartbeat: bool = True):
        self.home = home
        self.fast_heartbeat = fast_heartbeat     # tests: a dead host is noticed in 3 s
        self.tag = os.urandom(2).hex()
        self.bridge = f"rb{self.tag}"
        self.ns: dict[str, str] = {}
        self.ip: dict[str, str] = {}
        self.veth: dict[str, str] = {}
        self.netns = False
        subnet = 100 + int(self.tag, 16) % 100
        try:
            if os.environ.get("REFBOOK_TEST_NO_NETNS"):
                raise FileNotFoundError("REFBOOK_TEST_NO_NETNS is set")
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(names):
                ns = f"rb{self.tag}{name}"
                _ip("netns", "add", ns)
                self.ns[name] = ns
                veth = f"rv{self.tag}{name}"[:15]
                _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("link", "set", veth, "master", self.bridge, "up")
                self.veth[name] = veth
                ip = f"10.{subnet}.0.{10 + i}"
                _ip("addr", "add", f"{ip}/24", "dev", "eth0", ns=ns)
                _ip("link", "set", "eth0", "up", ns=ns)
                _ip("link", "set", "lo", "up", ns=ns)
                self.ip[name] = ip
            self.netns = True
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            self.reason = getattr(e, "stderr", str(e)).strip()
            self.close()
            self.ns.clear()
            self.ip = {name: f"127.0.0.{10 + i}" for i, name in enumerate(names)}

    def env(self) -> dict:
        env = dict(os.environ, HOME=self.home, REFBOOK_QUIET="1")
        if self.fast_heartbeat:
            # not less: on a busy 2-core machine a live node moving 200 MB can miss
            # heartbeats for a second, and was then written off (one run in four)
            env.update(REFBOOK_HEARTBEAT_S="0.2", REFBOOK_HEARTBEAT_TIMEOUT_S="3")
        env.pop("REFBOOK_SECRET", None)
        return env

    def argv(self, name: str, argv: list[str]) -> list[str]:
        if self.netns:
            return ["ip", "netns", "exec", self.ns[name]] + argv
        return argv

    def run(self, name: str, argv: list[str], timeout=120, check=True, **kw):
        p = subprocess.run(self.argv(name, argv), capture_output=True, text=True,
                           env=self.env(), timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"{argv} on {name} failed:\n{p.stdout}\n{p.stderr}")
        return p

    def refbook(self, name: str, *args, check=True):
        return self.run(name, [sys.executable, "-m", "refbook.cli", *args], check=check)

    def cut(self, name: str) -> None:
        """Disconnect a host: its link goes down (on loopback there is no link to cut,
        so its node processes are killed instead)."""
        if self.netns:
            _ip("link", "set", self.veth[name], "down")
        else:
            import psutil
            for p in psutil.process_iter(["cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if "refbook.runtime.processes.node" in cmd and \
                        f'"bind_host": "{self.ip[name]}"' in cmd:
                    p.kill()

    def close(self) -> None:
        for ns in self.ns.values():
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)
