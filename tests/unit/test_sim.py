"""The deterministic simulators: the real protocol classes under seeded faults (sim),
and the real store servers of three nodes under memory pressure (storesim)."""

import os
import subprocess
import sys

import pytest

from refbook.runtime.data.storeserver import StoreServer
from refbook.runtime.protocol import messages as P
from refbook.runtime.protocol.owner import Owner
from refbook.testing import sim, storesim


@pytest.mark.parametrize("block", range(4))
def test_2000_seeds_of_crashes_reorderings_and_drops(block):
    """Seeds 0..1999 in four blocks; a failure names its seed, which replays exactly."""
    for seed in range(block * 500, block * 500 + 500):
        sim.run(seed)


def test_a_seed_replays_exactly():
    a, b = sim.run(123), sim.run(123)
    assert a.log == b.log and len(a.log) > 100


def test_a_seed_replays_exactly_in_another_process():
    """A seed that failed in CI replays on a laptop: nothing depends on the order of a
    set of strings, which differs from one process to the next."""
    code = ("import hashlib; from refbook.testing import sim; "
            "print(hashlib.sha256('\\n'.join(sim.run(7).log).encode()).hexdigest())")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout
            for h in (1, 2, 3)}
    assert len(runs) == 1


def test_the_simulator_runs_the_real_owner():
    """No stand-in: every process in the simulator is the runtime's own Owner."""
    w = sim.run(5)
    assert all(type(p.owner) is Owner for p in w.procs.values())
    from refbook.testing import simprocs
    classes = {n for m in (sim, simprocs) for n, v in vars(m).items()
               if isinstance(v, type) and v.__module__ == m.__name__}
    assert classes == {"Proc", "Node", "World", "SimFailure"}   # glue and the checker


def test_a_leak_planted_in_the_real_owner_is_caught(monkeypatch):
    """The owner forgets the outputs that attempts killed with their worker left in a
    store: a seed finds the objects left behind."""
    def forget(self, task, keep):
        self.stale.pop(task.task_id, None)

    monkeypatch.setattr(Owner, "_free_stale", forget)
    with pytest.raises(sim.SimFailure, match="objects left"):
        for seed in range(300):
            sim.run(seed)


def test_an_early_free_planted_in_the_real_owner_is_caught(monkeypatch):
    """The owner does not count a task's arguments as held: a seed finds an object
    freed while a pending task needs it."""
    def hold_nothing(self, args_entry, top_refs, nested, blob_oid):
        unresolved = {oid for oid, _ in top_refs if oid not in self.values}
        for oid, owner in top_refs:
            if oid in unresolved and owner != self.me:
                self.fetch(oid, owner)
        return args_entry, top_refs + nested, unresolved

    monkeypatch.setattr(Owner, "hold_args", hold_nothing)
    with pytest.raises(sim.SimFailure, match="freed .* while reachable"):
        for seed in range(300):
            sim.run(seed)


# -- the object store across nodes under pressure (refbook.testing.storesim) ---------------

@pytest.mark.parametrize("block", range(2))
def test_500_seeds_of_the_stores_under_pressure_across_three_nodes(block):
    """Spilled objects pulled by other nodes while the source store is full of pinned
    views, seals overtaken by readers, unpins overtaken by pins: every read answered
    with the right bytes, nothing left behind."""
    for seed in range(block * 250, block * 250 + 250):
        storesim.run(seed)


def test_a_store_seed_replays_exactly():
    a, b = storesim.run(7), storesim.run(7)
    assert a.log == b.log and len(a.log) > 300


def test_the_store_simulator_finds_a_restore_booked_for_a_transfer_and_never_started(
        monkeypatch):
    """Issue 12 §1, put back: a transfer out that waited for room drops the restores
    pin_many booked.  The simulator finds it on its own, at the first seed."""
    fixed = StoreServer._pin

    def before_the_fix(self, w):
        if w.kind == "send":
            return self.table.pin_many(w.proc, w.args)
        return fixed(self, w)

    monkeypatch.setattr(StoreServer, "_pin", before_the_fix)
    with pytest.raises(storesim.StoreSimFailure, match="never got an answer.*restoring"):
        for seed in range(20):
            storesim.run(seed)


def test_the_store_simulator_finds_a_pin_overtaken_by_an_older_unpin(monkeypatch):
    """Without the UNPIN numbers, a PIN sent after an UNPIN (on another connection) can
    be served first; the late UNPIN then drops the new pin, and the node spills or
    drops memory under a live view."""
    on_request = StoreServer.on_request

    def unnumbered(self, ident, m):
        if m[0] == P.PIN:
            m = m[:5]
        return on_request(self, ident, m)

    monkeypatch.setattr(StoreServer, "on_request", unnumbered)
    with pytest.raises(storesim.StoreSimFailure, match="no longer in the arena"):
        for seed in range(500):
            storesim.run(seed)
