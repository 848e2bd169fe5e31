"""Sort and shuffle as a library on refbook's public API (API.md section 6), after
Exoshuffle (SIGCOMM'23): the runtime keeps the blocks, spills them when memory runs
short, runs tasks as their inputs arrive and rebuilds what a dead node held; the
library only says which task makes which block.

```python
from refbook import shuffle
blocks = shuffle.gensort_blocks(1_000_000, 8, seed=1)      # 8 refs to 100-byte records
out = shuffle.sort(blocks, key="key", strategy="push")      # refs, globally ordered
shuffle.check_sorted(out, key="key")   # {"records", "checksum", "sorted"}
```

Strategies:
- ``simple``: each map task sorts its block and cuts it into ``num_partitions`` pieces
  (``num_returns``); each reduce task merges one piece of every map.
- ``merge`` (Riffle's pre-shuffle merge): merge tasks combine the pieces of a group of
  maps first, so that each reducer reads a few large runs instead of many small ones.
- ``push`` (Magnet, Ray Data's push-based shuffle): maps run in rounds; as each round
  finishes (``refbook.wait``), its pieces are merged while the next round of maps runs,
  so merging overlaps mapping; the reducers then merge the merged runs.
"""

from __future__ import annotations

import math

import numpy as np

import refbook

from . import blocks as B

__all__ = ["sort", "shuffle", "check_sorted", "gensort", "gensort_blocks", "STRATEGIES"]

STRATEGIES = ("simple", "merge", "push")
SAMPLES_PER_BLOCK = 256


# -- the tasks (each one function of blocks.py, run remotely) ----------------------------
@refbook.remote
def _sample(block, n, seed, key):
    return B.sample(block, n, seed, key)


@refbook.remote
def _map_sort(block, bounds, key):
    return _returns(B.split(B.sort_block(block, key), bounds, key))


@refbook.remote
def _map_partition(block, partition, n):
    pieces = list(partition(block, n))
    if len(pieces) != n:
        raise ValueError(f"partition(block, {n}) returned {len(pieces)} blocks, not {n}")
    return _returns(pieces)


def _returns(pieces: list):
    """A task's ``num_returns=len(pieces)`` values."""
    return pieces[0] if len(pieces) == 1 else tuple(pieces)


@refbook.remote
def _merge_groups(key, width, *runs):
    """``runs`` are ``width`` pieces from each of several maps, map by map: merge
    piece j of every map, for each j."""
    return _returns([B.merge(runs[j::width], key) for j in range(width)])


@refbook.remote
def _concat_groups(width, *runs):
    return _returns([B.concat(list(runs[j::width])) for j in range(width)])


@refbook.remote
def _reduce_sort(key, *runs):
    return B.merge(runs, key)


@refbook.remote
def _reduce_concat(*runs):
    return B.concat(list(runs))


@refbook.remote
def _summary(block, key):
    return B.summary(block, key)


@refbook.remote
def _gensort(n, seed, index):
    return gensort(n, seed, index)


# -- the public functions ---------------------------------------------------------------
def sort(blocks, key=None, num_partitions=None, strategy="simple", rounds=None):
    """Sort ``blocks`` (refs to, or values of, numpy arrays or Arrow tables; ``key``
    names the column or field to sort by): returns refs to ``num_partitions`` sorted
    blocks (default: as many as the input), in global order."""
    refs = _as_refs(blocks)
    p = _partitions(num_partitions, len(refs))
    _check_strategy(strategy)
    samples = refbook.get([_sample.remote(r, SAMPLES_PER_BLOCK, i, key)
                           for i, r in enumerate(refs)])
    bounds = B.boundaries(samples, p)
    mapper = _map_sort.options(num_returns=p)
    return _run(strategy, [lambda r=r: mapper.remote(r, bounds, key) for r in refs], p,
                merge=lambda w: _merge_groups.options(num_returns=w), bind=(key,),
                reduce=lambda runs: _reduce_sort.remote(key, *runs), rounds=rounds)


def shuffle(blocks, partition, num_partitions, strategy="simple", rounds=None):
    """Repartition ``blocks``: ``partition(block, n)`` returns ``n`` blocks, and output
    block i gathers the i-th of every input block's (in input order)."""
    refs = _as_refs(blocks)
    p = _partitions(num_partitions, len(refs))
    _check_strategy(strategy)
    if not callable(partition):
        raise TypeError(f"partition must be a function (block, n) -> n blocks, not "
                        f"{type(partition).__name__}")
    mapper = _map_partition.options(num_returns=p)
    return _run(strategy, [lambda r=r: mapper.remote(r, partition, p) for r in refs], p,
                merge=lambda w: _concat_groups.options(num_returns=w), bind=(),
                reduce=lambda runs: _reduce_concat.remote(*runs), rounds=rounds)


def check_sorted(out, key=None) -> dict:
    """valsort: ``{"records", "checksum", "sorted"}`` over the blocks ``out``, in order.
    The checksum adds a hash of every record, so it does not depend on order: it equals
    the input's when the sort lost, duplicated and changed nothing."""
    sums = refbook.get([_summary.remote(r, key) for r in _as_refs(out)])
    ordered = all(s["sorted"] for s in sums)
    last = None
    for s in sums:
        if s["records"]:
            if last is not None and s["first"] < last:
                ordered = False
            last = s["last"]
    total = sum(s["checksum"] for s in sums) % (1 << 64)
    return {"records": sum(s["records"] for s in sums), "checksum": total,
            "sorted": ordered}


RECORD = np.dtype([("key", "S10"), ("value", "S90")])


def gensort(n: int, seed: int = 0, index: int = 0) -> np.ndarray:
    """``n`` 100-byte records (a 10-byte ``key``, 90 bytes of ``value``), random but
    the same for the same ``(seed, index)``: block ``index`` of a data set."""
    rng = np.random.default_rng([seed, index])
    return rng.integers(0, 256, size=(n, 100), dtype=np.uint8).view(RECORD).reshape(n)


def gensort_blocks(records: int, num_blocks: int, seed: int = 0) -> list:
    """Refs to ``num_blocks`` blocks of :func:`gensort` records, ``records`` in all,
    each made by a task where it will be used."""
    if num_blocks < 1 or records < 0:
        raise ValueError("gensort_blocks needs records >= 0 and num_blocks >= 1")
    per = [records // num_blocks + (i < records % num_blocks) for i in range(num_blocks)]
    return [_gensort.remote(n, seed, i) for i, n in enumerate(per)]


# -- the strategies ----------------------------------------------------------------------
def _run(strategy, maps, p, merge, bind, reduce, rounds):
    """Run the map tasks ``maps`` (each returns ``p`` refs) and the reduces, as
    ``strategy`` says; returns the ``p`` output refs."""
    if strategy == "simple":
        pieces = [_as_list(m(), p) for m in maps]
        return [reduce([ps[j] for ps in pieces]) for j in range(p)]
    group = _group_size(len(maps), rounds)
    if strategy == "merge":
        runs = []                   # per group: p merged refs
        for g in range(0, len(maps), group):
            pieces = [_as_list(m(), p) for m in maps[g:g + group]]
            runs.append(_merged(merge, bind, pieces, p))
        return [reduce([rs[j] for rs in runs]) for j in range(p)]
    # push: a round of maps, then its merges while the next round maps
    runs, pending = [], []
    for g in range(0, len(maps), group):
        pieces = [_as_list(m(), p) for m in maps[g:g + group]]
        if pending:                 # the previous round: merge it as soon as it is done
            refbook.wait([ps[0] for ps in pending], num_returns=len(pending))
            runs.append(_merged(merge, bind, pending, p))
        pending = pieces
    if pending:
        runs.append(_merged(merge, bind, pending, p))
    return [reduce([rs[j] for rs in runs]) for j in range(p)]


def _merged(merge, bind, pieces, p) -> list:
    """Merge tasks for one group of maps: one per slice of the partitions (so that the
    merging spreads over the workers), each returning its slice's merged runs."""
    width = max(1, math.ceil(p / 2))
    out = []
    for a in range(0, p, width):
        w = min(width, p - a)
        args = [r for ps in pieces for r in ps[a:a + w]]
        out += _as_list(merge(w).remote(*bind, w, *args), w)
    return out


def _group_size(num_maps: int, rounds) -> int:
    if rounds is None:
        rounds = max(2, min(8, num_maps // 2)) if num_maps > 1 else 1
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, not {rounds!r}")
    return max(1, math.ceil(num_maps / rounds))


def _as_list(refs, n: int) -> list:
    return [refs] if n == 1 else list(refs)


def _as_refs(blocks) -> list:
    if isinstance(blocks, refbook.ObjectRef) or not hasattr(blocks, "__iter__") or \
            B.is_table(blocks) or isinstance(blocks, np.ndarray):
        raise TypeError("blocks must be a list of blocks or of refs to blocks")
    refs = [b if isinstance(b, refbook.ObjectRef) else refbook.put(b) for b in blocks]
    if not refs:
        raise ValueError("no blocks to sort")
    return refs


def _partitions(n, default: int) -> int:
    n = default if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"num_partitions must be a positive integer, not {n!r}")
    return n


def _check_strategy(strategy) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not "
                         f"{strategy!r}")
