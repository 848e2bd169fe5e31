"""Guard: an error in a handler is logged and survived, at a bounded rate."""

import logging

from refbook.runtime.processes.guard import Guard


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def boom(n):
    raise ValueError(f"bad {n}")


def test_errors_are_survived_and_logged_at_most_once_per_interval(caplog):
    clock = Clock()
    g = Guard(logging.getLogger("test.guard"), every=10.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="test.guard"):
        assert g("a message", lambda: None)
        for i in range(10_000):
            clock.now = i * 0.001                  # 10,000 errors in 10 s
            assert not g("a message", boom, i)
        clock.now = 10.5
        assert not g("a message", boom, -1)
        assert not g("a timer", boom, -2)           # another kind: its own budget
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert caplog.records[0].exc_info is not None   # the first one with its traceback
    assert "9999 more like it in the last 10 s" in lines[1]
    assert g.errors == 10_002
