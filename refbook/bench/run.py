"""``refbook bench``: every group of workloads, as a table and as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .actors import ACTOR_TARGETS, run_actor_workloads
from .common import RefbookBackend, machine, table
from .core import TARGETS, run_workloads
from .events import EVENT_TARGETS, run_event_workloads
from .net import NET_TARGETS
from .notebook import NOTEBOOK_TARGETS
from .recovery import RECOVERY_TARGETS, run_recovery_workloads
from .snapshots import STATE_TARGETS, run_state_workloads
from .spill import SPILL_TARGETS, run_spill_workloads

DESCRIPTION = ("Measure refbook on this machine: task and object throughput and latency, "
               "actors, spilling, recovery, network transfers, notebook cells, the "
               "state API, what its events cost and the live views. Prints each figure "
               "next to its target and writes the results as JSON. Every figure is a "
               "median over repeats.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="refbook bench", description=DESCRIPTION)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write results here "
                    "(default: bench-results/refbook-<time>.json)")
    ap.add_argument("--num-cpus", type=int, default=2, metavar="N",
                    help="CPUs of the cluster the benchmarks start (default: 2)")
    ap.add_argument("--only", choices=["core", "actors", "spill", "recovery", "net",
                                       "notebook", "snapshots", "events", "widgets"],
                    default=None,
                    help="run one group of workloads")
    args = ap.parse_args(argv)
    res: dict = {}
    if args.only in (None, "core"):
        res.update(run_workloads(RefbookBackend(args.num_cpus), quick=args.quick))
    if args.only in (None, "actors"):
        res.update(run_actor_workloads(RefbookBackend(args.num_cpus), quick=args.quick))
    if args.only in (None, "spill"):
        res.update(run_spill_workloads(quick=args.quick))
    if args.only in (None, "recovery"):
        res.update(run_recovery_workloads(quick=args.quick))
    if args.only in (None, "net"):
        from .net import run_net_workloads
        res.update(run_net_workloads(quick=args.quick))
    if args.only in (None, "notebook"):
        from .notebook import run_notebook_workloads
        res.update(run_notebook_workloads(quick=args.quick))
    if args.only in (None, "snapshots"):
        res.update(run_state_workloads(quick=args.quick, num_cpus=args.num_cpus))
    if args.only in (None, "events"):
        res.update(run_event_workloads(quick=args.quick))
    if args.only in (None, "widgets"):
        from .widgets import run_widget_workloads
        res.update(run_widget_workloads(quick=args.quick))
    from .widgets import WIDGET_TARGETS
    print(table(res, {**TARGETS, **EVENT_TARGETS, **ACTOR_TARGETS, **SPILL_TARGETS,
                      **RECOVERY_TARGETS, **NET_TARGETS, **NOTEBOOK_TARGETS,
                      **STATE_TARGETS, **WIDGET_TARGETS}))
    path = args.json or os.path.join("bench-results",
                                     f"refbook-{time.strftime('%Y%m%d-%H%M%S')}.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine(), "results": {k: {"value": v, "unit": u}
                                                     for k, (v, u) in res.items()}}, f, indent=2)
    print(f"\nwrote {path}")
    return 0



if __name__ == "__main__":
    sys.exit(main())
