"""A tour of refbook's runtime: tasks, refs, zero-copy data, automatic memory."""

import time

import numpy as np

import refbook


@refbook.remote
def make_block(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


@refbook.remote
def block_sum(block: np.ndarray) -> float:
    return float(block.sum())


@refbook.remote
def total(*parts: float) -> float:
    return sum(parts)


def store_mb() -> float:
    return refbook.nodes()[0]["store"]["used"] / 1e6


def main() -> None:
    t = time.perf_counter()
    ctx = refbook.init()
    print(f"cluster up in {time.perf_counter() - t:.2f} s: {ctx}")

    # Tasks return refs at once; refs flow into other tasks without copies.
    blocks = [make_block.remote(i, 2_000_000) for i in range(8)]      # 8 x 16 MB
    sums = [block_sum.remote(b) for b in blocks]
    grand = total.remote(*sums)
    print(f"sum of 16M random numbers: {refbook.get(grand):,.1f}")
    print(f"object store holds {store_mb():.0f} MB in {len(refbook.objects())} objects")

    # get() of a large array is a read-only view of shared memory: no copy.
    first = refbook.get(blocks[0])
    print(f"block 0: {first.nbytes / 1e6:.0f} MB, writeable={first.flags.writeable}")

    # Memory follows the references: drop them and the store empties.
    del blocks, sums, first
    time.sleep(0.2)
    print(f"after del: object store holds {store_mb():.1f} MB")

    # Errors come back with the remote traceback, as the original exception type.
    @refbook.remote
    def divide(a, b):
        return a / b

    try:
        refbook.get(divide.remote(1, 0))
    except ZeroDivisionError as e:
        print(f"caught {type(e).__name__} from a task:\n{str(e).splitlines()[0]}")

    refbook.shutdown()


if __name__ == "__main__":
    main()
