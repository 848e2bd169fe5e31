"""The deterministic simulator: the real protocol classes under seeded faults."""

import pytest

from refbook.testing import sim


@pytest.mark.parametrize("block", range(4))
def test_2000_seeds_of_crashes_reorderings_and_drops(block):
    """Seeds 0..1999 in four blocks; a failure names its seed, which replays exactly."""
    for seed in range(block * 500, block * 500 + 500):
        sim.run(seed)


def test_a_seed_replays_exactly():
    a, b = sim.run(123), sim.run(123)
    assert a.log == b.log and len(a.log) > 100


class _Forgetful(dict):
    """A ``stale`` map that never remembers: outputs stored by attempts that crashed are
    never freed, the leak the simulator found at seed 6."""

    def setdefault(self, key, default=None):
        return set()


def test_the_simulator_catches_a_leak(monkeypatch):
    init = sim.World.__init__

    def forgetful_init(self, *a, **k):
        init(self, *a, **k)
        self.stale = _Forgetful()

    monkeypatch.setattr(sim.World, "__init__", forgetful_init)
    with pytest.raises(sim.SimFailure, match="objects left"):
        for seed in range(200):
            sim.run(seed)
