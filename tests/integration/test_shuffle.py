"""refbook.shuffle: sort and shuffle as a library on the public API, each strategy
checked for the exact result (numpy, gensort records, Arrow, many duplicate keys), with
more data than the store holds, and with a node killed mid-sort."""

import ast
import os
import threading
import time

import numpy as np
import pytest

import refbook
from refbook import shuffle, state

STRATEGIES = shuffle.STRATEGIES


@pytest.fixture(scope="module")
def cluster():
    refbook.shutdown()
    ctx = refbook.init(num_cpus=2, object_store_memory=256 << 20)
    try:
        yield ctx
    finally:
        refbook.shutdown()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_uint64_with_many_duplicates_sorts_exactly(cluster, strategy):
    rng = np.random.default_rng(1)
    data = [rng.integers(0, 50, n, dtype=np.uint64) for n in (30_000, 0, 17, 45_000, 9_999)]
    out = shuffle.sort(data, num_partitions=4, strategy=strategy)
    assert len(out) == 4
    got = refbook.get(out)
    assert np.array_equal(np.concatenate(got), np.sort(np.concatenate(data)))
    c = shuffle.check_sorted(out)
    assert c == {"records": sum(map(len, data)), "sorted": True,
                 "checksum": shuffle.check_sorted(data)["checksum"]}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gensort_records_sort_by_their_10_byte_key(cluster, strategy):
    blocks = shuffle.gensort_blocks(30_000, 5, seed=7)
    before = shuffle.check_sorted(blocks, key="key")
    assert before["records"] == 30_000 and not before["sorted"]
    out = shuffle.sort(blocks, key="key", num_partitions=3, strategy=strategy)
    after = shuffle.check_sorted(out, key="key")
    assert after == {"records": 30_000, "checksum": before["checksum"], "sorted": True}
    keys = np.concatenate([b["key"] for b in refbook.get(out)])
    assert (keys[1:] >= keys[:-1]).all()
    # the same data twice: gensort is deterministic
    again = shuffle.check_sorted(shuffle.gensort_blocks(30_000, 5, seed=7), key="key")
    assert again["checksum"] == before["checksum"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_arrow_tables_sort_by_a_column(cluster, strategy):
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(2)
    tables = [pa.table({"k": rng.integers(0, 20, n), "v": rng.random(n),
                        "s": [f"row {i}" for i in range(n)]}) for n in (2_000, 3_000, 1)]
    out = shuffle.sort(tables, key="k", num_partitions=2, strategy=strategy)
    got = pa.concat_tables(refbook.get(out))
    ks = got.column("k").to_numpy()
    assert got.num_rows == 5_001 and (ks[1:] >= ks[:-1]).all()
    whole = pa.concat_tables(tables)
    assert sorted(zip(ks, got.column("s").to_pylist(), strict=True)) == \
        sorted(zip(whole.column("k").to_numpy(), whole.column("s").to_pylist(), strict=True))
    assert shuffle.check_sorted(out, key="k")["checksum"] == \
        shuffle.check_sorted(tables, key="k")["checksum"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_shuffle_gathers_the_ith_piece_of_every_block(cluster, strategy):
    data = [np.arange(i * 1000, (i + 1) * 1000) for i in range(5)]

    def by_mod(block, n):
        return [block[block % n == j] for j in range(n)]
    out = shuffle.shuffle(data, by_mod, 3, strategy=strategy)
    got = refbook.get(out)
    for j, part in enumerate(got):
        assert (part % 3 == j).all()
        want = np.concatenate([b[b % 3 == j] for b in data])
        assert np.array_equal(np.sort(part), want)


def test_bad_input_gets_a_clear_error(cluster):
    with pytest.raises(ValueError, match="strategy must be one of simple, merge, push"):
        shuffle.sort([np.arange(3)], strategy="fast")
    with pytest.raises(ValueError, match="num_partitions must be a positive integer"):
        shuffle.sort([np.arange(3)], num_partitions=0)
    with pytest.raises(TypeError, match="list of blocks"):
        shuffle.sort(np.arange(3))
    with pytest.raises(ValueError, match="no blocks"):
        shuffle.sort([])
    with pytest.raises(TypeError, match="partition must be a function"):
        shuffle.shuffle([np.arange(3)], "mod", 2)
    pa = pytest.importorskip("pyarrow")
    with pytest.raises(KeyError, match="no column 'x'"):
        shuffle.sort([pa.table({"k": [1]})], key="x")
    with pytest.raises(ValueError, match="needs key="):
        shuffle.sort([pa.table({"k": [1]})])
    # a partition function that returns the wrong number of blocks fails its task
    out = shuffle.shuffle([np.arange(10)], lambda b, n: [b], 2)
    with pytest.raises(refbook.exceptions.RefbookError, match="returned 1 blocks, not 2"):
        refbook.get(out)


def test_more_data_than_the_store_holds_sorts_exactly_by_spilling():
    refbook.shutdown()
    refbook.init(num_cpus=2, object_store_memory=48 << 20)
    try:
        blocks = shuffle.gensort_blocks(1_000_000, 10, seed=5)     # 100 MB of records
        before = shuffle.check_sorted(blocks, key="key")
        out = shuffle.sort(blocks, key="key", num_partitions=10, strategy="push")
        after = shuffle.check_sorted(out, key="key")
        assert after == {"records": 1_000_000, "checksum": before["checksum"],
                         "sorted": True}
        spilled = [e for e in state.events(kinds=["object_spilled"])]
        assert spilled, "100 MB through a 48 MB store must spill"
    finally:
        refbook.shutdown()


def test_a_node_killed_mid_sort_gives_the_exact_result():
    refbook.shutdown()
    ctx = refbook.init(num_nodes=3, num_cpus=1, object_store_memory=128 << 20)
    try:
        # made by tasks, so spread over the nodes (the maps then run where they are)
        data = shuffle.gensort_blocks(540_000, 9, seed=4)
        want = shuffle.check_sorted(data, key="key")
        others = {n["node_id"] for n in refbook.nodes()
                  if n["alive"] and n["node_id"] != ctx.node_id}
        # the victim: the first node other than the driver's where a map task starts
        # (it then holds pieces); the maps go where their blocks are, so which one
        # that is depends on where the blocks were made
        victims: list = []
        mapped = threading.Event()

        def watch(evs):
            for e in evs:
                if e["kind"] == "task_started" and e["node_id"] in others and \
                        "_map_sort" in e["name"] and not victims:
                    victims.append(e["node_id"])
                    mapped.set()
        sub = state.subscribe(watch, kinds=["task_started"])
        killer = threading.Thread(target=lambda: mapped.wait(30) and (
            time.sleep(0.2), state.kill_node(victims[0])))
        killer.start()
        t = time.monotonic()
        out = shuffle.sort(data, key="key", num_partitions=6, strategy="simple")
        got = shuffle.check_sorted(out, key="key")
        killer.join()
        sub.close()
        assert mapped.is_set()
        victim = victims[0]
        assert got == {"records": want["records"], "checksum": want["checksum"],
                       "sorted": True}, time.monotonic() - t
        assert not any(n["node_id"] == victim and n["alive"] for n in refbook.nodes())
        kinds = [e["kind"] for e in state.events()]
        died = kinds.index("node_died")
        # what the node ran or held was run again: the library did nothing for it
        assert {"task_retried", "object_reconstructing"} & set(kinds[died:]), kinds[died:]
    finally:
        refbook.shutdown()


def test_the_library_uses_only_refbooks_public_names():
    """Exoshuffle's claim: a shuffle is a library on the public API."""
    root = os.path.dirname(shuffle.__file__)
    public = set(refbook.__all__) | {"exceptions"}
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(root, name)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("refbook"), (name, node.module)
            if isinstance(node, ast.Import):
                for a in node.names:
                    assert a.name == "refbook" or not a.name.startswith("refbook"), name
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "refbook":
                assert node.attr in public, (name, node.attr)
