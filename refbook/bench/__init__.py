"""Benchmarks that a user runs to check their machine (``refbook bench``), and that
``benchmarks/compare.py`` runs on Ray and Dask too.  One module per group of workloads."""

from .actors import ACTOR_TARGETS, run_actor_workloads
from .common import MB, RefbookBackend, fmt, machine, median_time, table
from .core import TARGETS, run_workloads
from .run import main

__all__ = ["ACTOR_TARGETS", "MB", "TARGETS", "RefbookBackend", "fmt", "machine", "main",
           "median_time", "run_actor_workloads", "run_workloads", "table"]
