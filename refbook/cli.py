"""The ``refbook`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="refbook", description="refbook command line")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("bench", help="run the core microbenchmarks", add_help=False)
    for name, what in [("start", "start a head or join a node"), ("status", "show the cluster"),
                       ("stop", "stop what this host started"),
                       ("kernel", "install the Jupyter kernelspec")]:
        sub.add_parser(name, help=what, add_help=False)
    if not argv:
        ap.print_help()
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        from .bench import main as bench_main
        return bench_main(rest)
    if cmd in ("start", "status", "stop", "kernel"):
        print(f"refbook {cmd}: not available in this version yet (multi-host clusters and "
              f"the notebook kernelspec are in progress). Use refbook.init() in Python.",
              file=sys.stderr)
        return 2
    ap.parse_args(argv)
    return 2


if __name__ == "__main__":
    sys.exit(main())
