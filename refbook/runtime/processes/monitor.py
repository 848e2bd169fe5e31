"""The memory monitor's decision, without I/O.

When the machine's memory use passes the threshold, the node manager asks its busy
workers what they run and kills one, rather than letting the kernel's OOM killer pick
a victim (it might pick the kernel, or the node manager).  The victim is the newest
task that can be retried; if none can, the newest task (it fails with
``OutOfMemoryError``).  After a kill the monitor waits ``cooldown`` seconds for the
memory to come back before it kills again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TaskInfo:
    worker: str
    task_id: bytes
    name: str
    owner: str
    retriable: bool
    started: float          # time.monotonic() of the worker's clock (same host)
    rss: int = 0


def choose_victim(infos: list[TaskInfo]) -> TaskInfo | None:
    if not infos:
        return None
    retriable = [i for i in infos if i.retriable]
    pool = retriable or infos
    return max(pool, key=lambda i: i.started)


class MemoryMonitor:
    def __init__(self, threshold: float, cooldown: float = 1.0, period: float = 0.25):
        if not 0 < threshold <= 1:
            raise ValueError(f"memory threshold must be in (0, 1], not {threshold!r}")
        self.threshold = threshold
        self.cooldown = cooldown
        self.period = period
        self.last_check = 0.0
        self.last_kill = -1e9
        self.query: dict | None = None     # {"id", "deadline", "waiting", "infos"}
        self._qid = 0

    def should_check(self, now: float) -> bool:
        return now - self.last_check >= self.period

    def check(self, now: float, used_fraction: float, busy_workers: list[str]) -> list:
        """Returns the workers to ask (a new query id with them), or []."""
        self.last_check = now
        if self.query is not None or used_fraction < self.threshold:
            return []
        if now - self.last_kill < self.cooldown or not busy_workers:
            return []
        self._qid += 1
        self.query = {"id": self._qid, "deadline": now + 0.2,
                      "waiting": set(busy_workers), "infos": []}
        return [(w, self._qid) for w in busy_workers]

    def on_info(self, worker: str, qid: int, info: TaskInfo | None) -> None:
        q = self.query
        if q is None or q["id"] != qid:
            return
        q["waiting"].discard(worker)
        if info is not None:
            q["infos"].append(info)

    def decide(self, now: float) -> TaskInfo | None:
        """Once every asked worker answered (or the deadline passed): the victim."""
        q = self.query
        if q is None or (q["waiting"] and now < q["deadline"]):
            return None
        self.query = None
        victim = choose_victim(q["infos"])
        if victim is not None:
            self.last_kill = now
        return victim

    def kill_reason(self, victim: TaskInfo, used: int, total: int) -> str:
        """Why ``victim``'s worker was killed, for its task's error and the log
        (``used`` and ``total``: the machine's memory, in bytes)."""
        return (f"the memory monitor killed the worker running task {victim.name} "
                f"({victim.task_id.hex()}) because this machine's memory use reached "
                f"{used / 2**30:.1f} of {total / 2**30:.1f} GiB "
                f"({100 * used / total:.0f}%, threshold {100 * self.threshold:.0f}%); "
                f"that worker used {victim.rss / 2**30:.2f} GiB")
