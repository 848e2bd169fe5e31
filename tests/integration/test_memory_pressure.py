"""The object store under memory pressure: spilling, restoring, waiting, clear errors,
and the memory monitor.  Every value read back is checked against a checksum."""

import hashlib
import os
import time

import numpy as np
import psutil
import pytest

import refbook
from refbook.exceptions import ObjectStoreFullError, OutOfMemoryError
from tests.integration.helpers import wait_for

MB = 1 << 20


@pytest.fixture
def small_store(tmp_path):
    refbook.shutdown()
    spill = tmp_path / "spill"
    ctx = refbook.init(num_cpus=2, object_store_memory=100 * MB, spill_dir=str(spill))
    yield ctx
    refbook.shutdown()
    assert not os.listdir(spill), "spill files left in spill_dir after shutdown"


def block(seed: int, mb: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, mb * MB, dtype=np.uint8)


def sha(a) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()


@refbook.remote
def digest(a):
    return hashlib.sha256(memoryview(a).cast("B")).hexdigest()


def store():
    return refbook.nodes()[0]["store"]


def open_spill_files(node_pid: int) -> int:
    """Spill files are anonymous: count the node manager's open deleted files."""
    n = 0
    for fd in os.listdir(f"/proc/{node_pid}/fd"):
        try:
            target = os.readlink(f"/proc/{node_pid}/fd/{fd}")
        except OSError:
            continue
        if "(deleted)" in target and "memfd" not in target:
            n += 1
    return n


def test_240MB_through_a_100MB_store_reads_back_exactly(small_store):
    refs, sums = [], []
    for i in range(12):
        a = block(i, 20)
        sums.append(sha(a))
        refs.append(refbook.put(a))
        del a
    s = store()
    assert s["spilled_bytes"] >= 100 * MB and s["spilled_objects"] >= 5
    assert s["used"] <= s["capacity"]
    objs = {o["object_id"]: o for o in refbook.objects()}
    spilled = [o for o in objs.values() if o["spilled"]]
    assert spilled and all(o["state"] == "spilled" for o in spilled)
    for r, want in zip(refs, sums, strict=True):          # the driver reads them back
        assert sha(refbook.get(r)) == want
    assert refbook.get([digest.remote(r) for r in refs]) == sums   # and so do tasks
    assert store()["restored_bytes"] >= 100 * MB
    kinds = {e["kind"] for e in refbook.events()}
    assert {"spill", "restore"} <= kinds


def test_spill_files_go_away_with_the_refs(small_store):
    node_pid = refbook.nodes()[0]["pid"]
    refs = [refbook.put(block(i, 20)) for i in range(10)]
    assert wait_for(lambda: store()["spill_files"] > 0)
    assert open_spill_files(node_pid) > 0
    assert not os.listdir(small_store.spill_dir)   # anonymous files: no names to leak
    del refs
    assert wait_for(lambda: store()["spill_files"] == 0 and store()["num_objects"] == 0)
    assert wait_for(lambda: open_spill_files(node_pid) == 0)


def test_producers_and_consumers_larger_than_the_store_finish(small_store):
    @refbook.remote
    def produce(i):
        return block(i, 15)

    @refbook.remote
    def consume(a):
        return sha(a)

    outs = [produce.remote(i) for i in range(16)]             # 240 MB of outputs
    sums = refbook.get([consume.remote(o) for o in outs], timeout=300)
    assert sums == [sha(block(i, 15)) for i in range(16)]
    assert store()["spilled_bytes"] + store()["restored_bytes"] > 0


def test_an_object_larger_than_the_store_fails_clearly_and_the_cluster_lives(small_store):
    with pytest.raises(ObjectStoreFullError) as ei:
        refbook.put(np.zeros(150 * MB, dtype=np.uint8))
    msg = str(ei.value)
    assert "157,286," in msg and "104,857,600" in msg and "object_store_memory" in msg

    @refbook.remote
    def too_big():
        return np.zeros(150 * MB, dtype=np.uint8)

    with pytest.raises(ObjectStoreFullError):
        refbook.get(too_big.remote())
    r = refbook.put(block(1, 10))
    assert sha(refbook.get(r)) == sha(block(1, 10))
    assert refbook.get(digest.remote(r)) == sha(block(1, 10))


def test_spilled_arguments_of_queued_tasks_are_restored_in_the_background(small_store):
    @refbook.remote
    def busy(s):
        time.sleep(s)
        return s

    refs = [refbook.put(block(i, 20)) for i in range(8)]       # the first ones spill
    assert wait_for(lambda: store()["spilled_objects"] >= 2)
    before = store()["restored_bytes"]
    hold = [busy.remote(1.5), busy.remote(1.5)]                 # both CPUs busy
    time.sleep(0.2)
    queued = digest.remote(refs[0])                             # spilled, waits for a CPU
    assert wait_for(lambda: store()["restored_bytes"] > before, timeout=1.0)
    assert not refbook.wait([queued], timeout=0)[0]             # restored before it ran
    assert refbook.get(queued) == sha(block(0, 20))
    refbook.get(hold)


def memory_threshold_for_hog(hog_bytes: int) -> float:
    vm = psutil.virtual_memory()
    used = vm.total - vm.available
    return (used + hog_bytes // 2) / vm.total


HOG = 3 << 30


@pytest.fixture
def low_threshold(tmp_path):
    refbook.shutdown()
    ctx = refbook.init(num_cpus=2, object_store_memory=64 * MB,
                       memory_monitor_threshold=memory_threshold_for_hog(HOG))
    yield ctx
    refbook.shutdown()


@refbook.remote
def hog(marker: str, nbytes: int):
    """The first attempt allocates past the threshold and waits to be killed."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        data = bytearray(nbytes)
        for i in range(0, nbytes, 4096):
            data[i] = 1
        time.sleep(30)
        return "not killed"
    return "retried"


def test_memory_monitor_kills_and_retries_the_newest_task(low_threshold, tmp_path):
    @refbook.remote
    def small():
        time.sleep(0.5)
        return "fine"

    bystander = small.remote()
    r = hog.options(max_retries=2).remote(str(tmp_path / "m1"), HOG)
    assert refbook.get(r, timeout=60) == "retried"
    assert refbook.get(bystander) == "fine"
    kills = refbook.events("oom_kill")
    assert kills and kills[0]["task"].endswith("hog")


def test_memory_monitor_without_retries_gives_out_of_memory_error(low_threshold, tmp_path):
    r = hog.options(max_retries=0).remote(str(tmp_path / "m2"), HOG)
    with pytest.raises(OutOfMemoryError) as ei:
        refbook.get(r, timeout=60)
    msg = str(ei.value)
    assert "hog" in msg and "GiB" in msg and "threshold" in msg
    assert refbook.nodes()[0]["alive"]

    @refbook.remote
    def after():
        return 1

    assert refbook.get(after.remote()) == 1
