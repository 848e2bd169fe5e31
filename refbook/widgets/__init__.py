"""What refbook shows in a notebook: live status lines for cells, refs and the cluster
(``live.py``), and progress bars for long gets and waits (``progress.py``).  Views of the
object graph, memory pressure, spilling and recovery come next."""
