"""Live views of the object graph, memory pressure, spilling and recovery, fed by the
state API (``refbook.nodes()``, ``refbook.objects()``).  Not implemented yet."""
