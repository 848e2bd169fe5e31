"""``import refbook as ray``: borrowing in depth frees everything at the end (issue 19).

Each scenario runs on 1 CPU with a 100 MiB store.  While the object can be reached it
stays pinned: the store is filled past its capacity and the object must still be
readable.  Once nothing can reach it (the last ref dropped, or its owner dead), its
memory is given back within a second.
"""

import gc
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

import refbook as ray
from refbook import state

MiB = 1 << 20
SIZE = 20 * MiB
PROMPT = 0.8          # s: "within a second of the last drop", with room for a busy CI


@pytest.fixture(scope="module", autouse=True)
def one_cpu():
    ray.shutdown()
    ray.init(num_cpus=1, object_store_memory=100 * MiB)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def empty_store():
    gc.collect()
    assert wait_used(0, 10) is not None, state.objects()


def used() -> int:
    return ray.nodes()[0]["store"]["used"]


def wait_used(n: int, timeout: float) -> float | None:
    """Seconds until the store holds ``n`` bytes (None: not within ``timeout``)."""
    t0 = time.monotonic()
    while used() != n:
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(0.005)
    return time.monotonic() - t0


def fill() -> None:
    """Put more than the store holds: whatever is not pinned may go."""
    for _ in range(5):
        ray.put(np.zeros(SIZE, dtype=np.uint8))


def assert_pinned(ref, read=True) -> None:
    fill()
    rows = state.objects(ids=[ref])
    assert rows and rows[0]["state"] not in ("unknown", "failed"), rows
    assert state.why_alive(ref), "reachable, yet nothing keeps it alive"
    if read:
        assert ray.get(ref).nbytes == SIZE


def assert_freed(what: str) -> None:
    took = wait_used(0, 5)
    assert took is not None and took < PROMPT, (
        f"{what}: the store still holds {used()} bytes {took} s after the last drop; "
        f"objects: {[(o['object_id'], o['owner'][-16:]) for o in state.objects()]}")


@ray.remote
def made():
    return np.zeros(SIZE, dtype=np.uint8)


def make(use_put: bool):
    return ray.put(np.zeros(SIZE, dtype=np.uint8)) if use_put else made.remote()


@ray.remote(max_concurrency=4)
class Signal:
    def __init__(self):
        self.ev = threading.Event()

    def wait(self):
        self.ev.wait()
        return 1

    def send(self):
        self.ev.set()
        return 1


# -- a ref nested 5 deep in put lists, down a chain of recursive tasks ----------------

@ray.remote(max_retries=1)
def unwrap(ref, sig, depth, failure):
    inner = ray.get(ref[0])
    if depth == 0:
        ray.get(sig.wait.remote())
        if failure:
            os._exit(0)
        return None
    return unwrap.remote(inner, sig, depth - 1, failure)


@pytest.mark.parametrize("use_put,failure", [(True, False), (False, True)])
def test_nested_five_deep_down_a_recursive_chain(use_put, failure):
    sig = Signal.remote()
    array = make(use_put)
    ray.wait([array])
    h = array.hex()
    nested = array
    for _ in range(5):
        nested = ray.put([nested])
    head = unwrap.remote([nested], sig, 5, failure)
    del nested
    tail = head
    for _ in range(5):
        tail = ray.get(tail)
    assert_pinned(array)
    del array
    fill()
    assert state.objects(ids=[h]), "the chain's tasks still reach it"
    ray.get(sig.send.remote())
    if failure:     # one CPU: the same worker ran every task, and owned the tail
        with pytest.raises(ray.exceptions.OwnerDiedError):
            ray.get(tail)
    else:
        assert ray.get(tail) is None
    del head, tail, sig           # the last refs (with them, the lineage they keep)
    assert_freed("nested in put lists")


# -- a borrowed ref returned up through several tasks -------------------------------

@ray.remote
def return_borrowed(n, use_put):
    if n == 0:
        return make(use_put), os.getpid()
    return ray.get(return_borrowed.remote(n - 1, use_put))


@pytest.mark.parametrize("use_put,failure", [(True, False), (False, True)])
def test_borrowed_ref_returned_recursively(use_put, failure):
    head = return_borrowed.remote(5, use_put)
    final, owner_pid = ray.get(head)
    assert_pinned(final)
    if failure:
        os.kill(owner_pid, signal.SIGKILL)
        assert_freed("owner killed")
        with pytest.raises(ray.exceptions.OwnerDiedError):
            ray.get(final)
    else:
        del head, final
        assert_freed("returned borrowed ref")


# -- a returned ref passed on recursively -------------------------------------------

@ray.remote
def return_an_id(use_put):
    return make(use_put)


@ray.remote(max_retries=1)
def pass_on(ref, sig, depth, failure):
    inner = ray.get(ref[0])
    if depth == 0:
        ray.get(sig.wait.remote())
        if failure:
            os._exit(0)
        return inner
    return inner, pass_on.remote(ref, sig, depth - 1, failure)


@pytest.mark.parametrize("use_put,failure", [(False, False), (True, True)])
def test_returned_ref_passed_recursively(use_put, failure):
    outer = return_an_id.remote(use_put)
    sig = Signal.remote()
    head = pass_on.remote([outer], sig, 5, failure)
    del outer
    inner, tail = None, head
    for _ in range(5):
        inner, tail = ray.get(tail)
    assert_pinned(inner)
    ray.get(sig.send.remote())
    if failure:     # the dying worker owned the tail (and ran every task)
        with pytest.raises(ray.exceptions.OwnerDiedError):
            ray.get(tail)
    else:
        assert ray.get(ray.get(tail)).nbytes == SIZE      # the tail returns the ref
    del inner, head, tail, sig
    assert_freed("returned ref passed on")


# -- an actor constructor keeps a borrowed ref --------------------------------------

@ray.remote
class Borrower:
    def __init__(self, refs):
        self.refs = refs

    def nbytes(self):
        return ray.get(self.refs[0]).nbytes

    def drop(self):
        self.refs = None
        return os.getpid()


def test_actor_constructor_keeps_a_borrowed_ref():
    ref = ray.put(np.zeros(SIZE, dtype=np.uint8))
    b = Borrower.remote([ref])
    h = ref.hex()
    del ref
    for _ in range(3):
        assert ray.get(b.nbytes.remote()) == SIZE
    fill()
    assert ray.get(b.nbytes.remote()) == SIZE
    assert any(p[-1]["kind"] == "borrower" for p in state.why_alive(h)), state.why_alive(h)
    ray.get(b.drop.remote())          # the last drop, in the (idle) actor that lives on
    assert_freed("dropped by the actor that borrowed it")
    del b


# -- a ref forwarded through a task that returns a task's ref -----------------------

@ray.remote
class Maker:
    def nested(self):
        return ray.put(np.zeros(SIZE, dtype=np.uint8))


@ray.remote
def call_maker(maker):
    return maker.nested.remote()          # a ref this worker owns, to a ref it borrows


@ray.remote
def read_later(ref):
    time.sleep(0.3)
    return ray.get(ref).nbytes


def test_ref_forwarded_through_a_task_that_returns_a_task_ref():
    maker = Maker.remote()
    outer = call_maker.remote(maker)
    forwarded = ray.get(outer)
    del outer
    x = read_later.remote(forwarded)
    assert_pinned(forwarded, read=False)
    del forwarded
    assert ray.get(x) == SIZE
    del x, maker
    assert_freed("forwarded through a task")


# -- refs inside an actor handle deserialized out of band ---------------------------

@ray.remote
class Holder:
    def __init__(self):
        self.big = ray.put(np.zeros(SIZE, dtype=np.uint8))

    def nbytes(self):
        return ray.get(self.big).nbytes

    def refs(self):
        return [self.big]


@ray.remote
def use_out_of_band(blob):
    h = pickle.loads(blob)                # an actor handle that refbook did not see pass
    return ray.get(h.nbytes.remote()), h.refs.remote()


def test_refs_inside_an_actor_handle_deserialized_out_of_band():
    holder = Holder.remote()
    blob = pickle.dumps(holder)
    n, refs = ray.get(use_out_of_band.remote(blob))
    assert n == SIZE
    big = ray.get(refs)[0]
    assert_pinned(big)
    del holder, blob, refs, big
    assert_freed("inside an actor handle")
