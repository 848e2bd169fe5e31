"""The command line of the seeded simulators: ``python -m refbook.testing.sim FIRST COUNT``
runs seeds FIRST .. FIRST+COUNT-1; a failing seed replays exactly."""

from __future__ import annotations

import sys
from collections.abc import Callable


def main(run: Callable[[int], object], default_count: int, argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = int(argv[0]) if argv else 0
    count = int(argv[1]) if len(argv) > 1 else default_count
    for seed in range(first, first + count):
        run(seed)
    print(f"{count} seeds passed ({first}..{first + count - 1})")
    return 0
