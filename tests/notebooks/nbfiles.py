"""The example notebooks, in the suggested teaching order (examples/notebooks/README.md)."""

import pathlib

NOTEBOOKS = pathlib.Path(__file__).parents[2] / "examples" / "notebooks"
ORDER = ["quickstart", "ownership", "memory-pressure", "recovery", "actors", "shuffle",
         "analysis", "multi-host"]
