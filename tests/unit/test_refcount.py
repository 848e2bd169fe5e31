"""The reference-counting protocol, driven directly (no processes, no sockets)."""

import pytest

from refbook.runtime.protocol import messages as P
from refbook.runtime.protocol.refcount import Effects, ReferenceTable
from refbook.testing import sim

X, Y = b"x" * 20, b"y" * 20


def test_owned_object_is_freed_when_the_last_local_handle_goes():
    rt = ReferenceTable("o")
    rt.own(X)
    rt.add_local(X, "o")
    rt.add_local(X, "o")
    fx = Effects()
    rt.remove_local(X, fx)
    assert not fx.free
    rt.remove_local(X, fx)
    assert fx.free == [X] and X not in rt


def test_pending_task_argument_keeps_it_alive():
    rt = ReferenceTable("o")
    rt.own(X)
    rt.add_local(X, "o")
    rt.add_submitted([(X, "o")])
    fx = Effects()
    rt.remove_local(X, fx)
    assert not fx.free
    rt.remove_submitted([(X, "o")], fx)
    assert fx.free == [X]


def test_container_keeps_nested_ref_alive_and_frees_it_with_itself():
    rt = ReferenceTable("o")
    rt.own(X)
    rt.add_local(X, "o")
    rt.own(Y, [(X, "o")])
    rt.add_local(Y, "o")
    fx = Effects()
    rt.remove_local(X, fx)
    assert not fx.free
    rt.remove_local(Y, fx)
    assert fx.free == [Y, X]


def test_borrower_dec_before_its_inc_does_not_free():
    rt = ReferenceTable("o")
    rt.own(X)
    rt.add_local(X, "o")
    rt.on_inc(X, "a")                         # a registered by someone
    fx = Effects()
    rt.on_dec(X, "b", 1, fx)                  # b's DEC overtakes the INC made for b
    rt.remove_local(X, fx)
    rt.on_dec(X, "a", 1, fx)
    assert not fx.free                        # b's entry is -1: not zero, not freed
    rt.on_inc(X, "b")
    rt.release_if_unreferenced(X, fx)
    assert fx.free == [X]


def test_borrower_repays_all_registrations_with_one_dec():
    rt = ReferenceTable("b")
    rt.add_local(X, "o")
    rt.mark_registered(X, "o", 2)
    fx = Effects()
    rt.remove_local(X, fx)
    assert fx.send == [("o", (P.DEC_REF, "b", X, 2))]
    assert fx.dropped == [X]


def test_covered_ref_is_reported_at_task_end_only_if_still_held():
    rt = ReferenceTable("w")
    covered = set()
    fx = Effects()
    rt.deserialized(X, "o", covered, None, fx)
    rt.deserialized(Y, "o", covered, None, fx)
    assert not fx.send and covered == {X, Y}
    rt.remove_local(Y, fx)
    assert not fx.send                        # unregistered: no DEC owed
    assert rt.report_borrowed(covered) == [(X, "o")]
    rt.remove_local(X, fx)
    assert fx.send == [("o", (P.DEC_REF, "w", X, 1))]


def test_nested_ref_from_get_registers_and_pins_the_container():
    rt = ReferenceTable("b")
    rt.add_local(Y, "p")                      # we hold the container Y (owner p)
    rt.mark_registered(Y, "p")
    fx = Effects()
    rt.deserialized(X, "o", None, (Y, "p"), fx)
    (addr, msg), = fx.send
    assert addr == "o" and msg[0] == P.INC_REF and msg[3] == "b"
    ack = msg[4]
    fx.send.clear()
    rt.remove_local(Y, fx)
    assert not fx.send                        # Y stays pinned until the ack
    rt.on_ack(ack, fx)
    assert fx.send == [("p", (P.DEC_REF, "b", Y, 1))]


def test_process_death_drops_its_borrows_and_orphans_its_objects():
    rt = ReferenceTable("o")
    rt.own(X)
    rt.on_inc(X, "dead")
    rt.add_local(Y, "dead")
    fx = Effects()
    orphaned = rt.on_process_died("dead", fx)
    assert fx.free == [X] and orphaned == [Y] and rt.get(Y).owner_dead
    rt.on_inc(X, "dead")                      # a late INC for the dead is ignored


@pytest.mark.parametrize("block", range(10))
def test_randomized_interleavings_never_free_reachable_objects_and_leak_nothing(block):
    """Thousands of interleavings without crashes (the simulator of the whole core,
    refbook.testing.sim, with its faults off): a driver and the workers that run its
    tasks lend refs to each other, return them nested, and borrow what workers put;
    nothing reachable is freed, nothing is left.  10 blocks x 200 seeds x 300 steps."""
    for seed in range(block * 200, block * 200 + 200):
        sim.run(seed, steps=300, crash_rate=0.0)
