"""What the shuffle does to one block, in one process: sort it, cut it at boundaries,
merge sorted runs, sample its keys, hash its records.  A block is a 1-D numpy array (its
values are the keys), a numpy structured array (``key`` names a field; gensort records
have a 10-byte ``key`` field) or an Arrow table (``key`` names a column).

No refbook here: the same functions make the single-process floor in the benchmark."""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


def is_table(block) -> bool:
    return type(block).__module__.startswith("pyarrow")


def num_rows(block) -> int:
    return block.num_rows if is_table(block) else len(block)


def keys(block, key=None) -> np.ndarray:
    """The keys of a block, as a numpy array that sorts in the block's order (a bytes
    field such as gensort's 10-byte key compares byte by byte)."""
    if is_table(block):
        if key is None:
            raise ValueError("sorting an Arrow table needs key=<column name>")
        if key not in block.column_names:
            raise KeyError(f"no column {key!r} in the table (it has "
                           f"{', '.join(block.column_names)})")
        col = block.column(key)
        return col.to_numpy() if col.num_chunks != 1 else col.chunk(0).to_numpy(
            zero_copy_only=False)
    if block.dtype.names:
        name = key or block.dtype.names[0]
        if name not in block.dtype.names:
            raise KeyError(f"no field {name!r} in the records (they have "
                           f"{', '.join(block.dtype.names)})")
        return block[name]
    if key is not None:
        raise ValueError("key= is for Arrow tables and numpy records; a plain array "
                         "sorts by its values")
    return block


def take(block, order: np.ndarray):
    return block.take(order) if is_table(block) else block[order]


def cut(block, a: int, b: int):
    return block.slice(a, b - a) if is_table(block) else block[a:b]


def concat(blocks: list):
    blocks = [b for b in blocks if num_rows(b)] or blocks[:1]
    if len(blocks) == 1:
        return blocks[0]
    if is_table(blocks[0]):
        import pyarrow as pa
        return pa.concat_tables(blocks)
    return np.concatenate(blocks)


def sort_block(block, key=None):
    """The block in key order (stable)."""
    if not is_table(block) and not block.dtype.names:
        return np.sort(block)
    return take(block, np.argsort(keys(block, key), kind="stable"))


def split(sorted_block, bounds: np.ndarray, key=None) -> list:
    """A sorted block cut before each of the ``bounds``: ``len(bounds) + 1`` pieces,
    piece i holding the keys in [bounds[i-1], bounds[i])."""
    cuts = np.searchsorted(keys(sorted_block, key), bounds, side="left")
    edges = [0, *cuts.tolist(), num_rows(sorted_block)]
    return [cut(sorted_block, a, b) for a, b in zip(edges, edges[1:], strict=False)]


def merge(runs: list, key=None):
    """Sorted runs as one sorted block."""
    block = concat(list(runs))
    if is_table(block) or block.dtype.names or not block.flags.writeable or \
            any(block is r for r in runs):
        return sort_block(block, key)
    block.sort()            # the concatenation is ours: sort it where it is
    return block


def sample(block, n: int, seed: int = 0, key=None) -> np.ndarray:
    k = keys(block, key)
    if len(k) <= n:
        return k.copy()
    idx = np.random.default_rng(seed).choice(len(k), size=n, replace=False)
    return k[idx]


def boundaries(samples: list, num_partitions: int) -> np.ndarray:
    """``num_partitions - 1`` keys that cut the sampled keys into equal parts."""
    allk = np.sort(np.concatenate(samples))
    if len(allk) == 0 or num_partitions == 1:
        return allk[:0]
    idx = (np.arange(1, num_partitions) * len(allk)) // num_partitions
    return allk[idx]


# -- checking (valsort-style) -----------------------------------------------------------
def _fmix(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, element-wise (wraps modulo 2**64)."""
    x = x ^ (x >> _S33)
    x = x * _M1
    x = x ^ (x >> _S33)
    x = x * _M2
    return x ^ (x >> _S33)


def record_hashes(block) -> np.ndarray:
    """One 64-bit hash per record (row), from every byte of it."""
    if is_table(block):
        h = np.zeros(block.num_rows, dtype=np.uint64)
        for i, col in enumerate(block.columns):
            h = _fmix(h ^ (_column_hash(col) + np.uint64(i + 1)))
        return h
    a = np.ascontiguousarray(block)
    width = a.dtype.itemsize
    raw = a.view(np.uint8).reshape(len(a), width)
    pad = (-width) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((len(a), pad), np.uint8)], axis=1)
    words = raw.view("<u8")
    h = np.zeros(len(a), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h = _fmix(h ^ (words[:, j] + np.uint64(j + 1)))
    return h


def _column_hash(col) -> np.ndarray:
    import pyarrow as pa
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_timestamp(t):
        v = col.to_numpy().astype(np.float64 if pa.types.is_floating(t) else np.int64)
        return _fmix(np.ascontiguousarray(v).view(np.uint64))
    # anything else: Python's hash of each value, made stable across processes
    import zlib
    return np.fromiter((zlib.crc32(repr(v).encode()) for v in col.to_pylist()),
                       dtype=np.uint64, count=len(col))


def summary(block, key=None) -> dict:
    """What ``check_sorted`` needs of one block: rows, checksum, in order?, first and
    last key."""
    n = num_rows(block)
    with np.errstate(over="ignore"):
        checksum = int(record_hashes(block).sum(dtype=np.uint64)) if n else 0
    k = keys(block, key) if n else None
    ordered = bool(n < 2 or not (k[1:] < k[:-1]).any())
    return {"records": n, "checksum": checksum, "sorted": ordered,
            "first": k[0] if n else None, "last": k[-1] if n else None}
