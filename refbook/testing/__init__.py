"""Several nodes on one host, for tests and teaching.

    from . import Cluster
    c = Cluster()                                    # a head
    n = c.add_node(num_cpus=1, resources={"x": 1})   # a node manager with its workers
    refbook.init(address=c.address)
    c.wait_for_nodes(); c.remove_node(n)             # SIGKILL: the node is gone
    c.shutdown()
"""

from .cluster import Cluster, Node

__all__ = ["Cluster", "Node"]
