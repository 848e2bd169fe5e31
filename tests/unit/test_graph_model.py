"""The object graph's model without a cluster: what is shown for this notebook or for
some refs, the edges, grouping above a limit, and the layout by dependency."""

import time

from refbook.widgets import graph_model as gm

ME = "ipc:///tmp/x/n-aaaa1111/d-me"
OTHER = "ipc:///tmp/x/n-bbbb2222/w-1-other"


def obj(h, owner=ME, task=None, made_by="put", names=(), contained_in=(), nodes=("aaaa1111",),
        state="ready", size=100, site="<cell 1>, line 1"):
    return {"object_id": h, "owner": owner, "task": task, "made_by": made_by,
            "names": list(names), "contained_in": list(contained_in), "nodes": list(nodes),
            "state": state, "size": size, "call_site": site, "borrowers": []}


def task(t, name, args=(), returns=(), owner=ME, state="done", node="aaaa1111"):
    return {"task_id": t, "name": name, "args": list(args), "returns": list(returns),
            "owner": owner, "state": state, "node_id": node, "call_site": "<cell 2>, line 1"}


def chain():
    """a (put) -> double -> b -> total -> c; outer contains inner (made in a worker)."""
    objects = [obj("a", names=["a"]), obj("b", task="T1", made_by="double"),
               obj("c", task="T2", made_by="total", names=["c"]),
               obj("inner", owner=OTHER, contained_in=["outer"], nodes=["bbbb2222"]),
               obj("outer", names=["outer"]), obj("stranger", owner=OTHER)]
    tasks = [task("T1", "double", ["a"], ["b"]), task("T2", "total", ["b"], ["c"], state="running")]
    return objects, tasks


def test_this_notebooks_refs_with_their_tasks_and_what_they_contain():
    g = gm.select(*chain(), ME, None)
    assert set(g["nodes"]) == {"a", "b", "c", "inner", "outer", "T1", "T2"}   # no stranger
    assert set(g["edges"]) == {("a", "T1", "arg"), ("T1", "b", "return"), ("b", "T2", "arg"),
                               ("T2", "c", "return"), ("outer", "inner", "contains")}
    assert g["nodes"]["T2"]["state"] == "running" and g["nodes"]["T1"]["state"] == "done"
    assert g["nodes"]["c"]["name"] == "c" and g["nodes"]["a"]["name"] == "a"
    assert g["nodes"]["inner"]["band"] == "node bbbb2222"
    assert gm.select(*chain(), ME, None, group_by="owner")["nodes"]["inner"]["band"] == \
        "owner worker w-1-other"


def test_some_refs_with_their_lineage_only():
    g = gm.select(*chain(), ME, {"c"})
    assert set(g["nodes"]) == {"a", "b", "c", "T1", "T2"}
    g = gm.select(*chain(), ME, {"outer"})
    assert set(g["nodes"]) == {"outer", "inner"}


def test_a_finished_task_no_longer_kept_is_known_by_its_outputs():
    objects = [obj("r", task="T9", made_by="load", names=["r"])]
    g = gm.select(objects, [], ME, None)
    assert g["nodes"]["T9"]["name"] == "load" and g["nodes"]["T9"]["state"] == "done"
    assert g["edges"] == [("T9", "r", "return")]


def test_big_graphs_are_grouped_by_function_and_call_site_with_counts():
    objects = [obj(f"p{i}", names=[]) for i in range(3000)]
    objects += [obj(f"q{i}", task=f"T{i}", made_by="inc",
                    state="lost" if i == 7 else "ready") for i in range(3000)]
    tasks = [task(f"T{i}", "inc", [f"p{i}"], [f"q{i}"]) for i in range(3000)]
    t = time.perf_counter()
    g = gm.select(objects, tasks, ME, None)
    c = gm.collapse(g)
    took = time.perf_counter() - t
    by = {(n["name"], n["kind"]): n for n in c["nodes"].values()}
    assert set(by) == {("put \u00d73000", "object_group"), ("inc \u00d73000", "task_group"),
                       ("inc \u00d73000", "object_group")}
    out = by[("inc \u00d73000", "object_group")]
    assert out["count"] == 3000 and out["states"] == {"ready": 2999, "lost": 1}
    assert out["state"] == "lost"                     # the most urgent member's
    assert sorted(c["edge_counts"].values()) == [3000, 3000]
    assert took < 2.0, took
    pos = gm.layout(c)
    x = {by[k]["id"]: pos[by[k]["id"]][0] for k in by}
    put, tk, inc = (by[("put \u00d73000", "object_group")]["id"],
                    by[("inc \u00d73000", "task_group")]["id"],
                    by[("inc \u00d73000", "object_group")]["id"])
    assert x[put] < x[tk] < x[inc]


def test_layout_runs_arguments_task_outputs_left_to_right_in_bands():
    g = gm.select(*chain(), ME, None)
    pos = gm.layout(g)
    x = {h: p[0] for h, p in pos.items()}
    assert x["a"] < x["T1"] < x["b"] < x["T2"] < x["c"]
    assert x["inner"] < x["outer"]                     # what a value holds comes first
    # the worker's object is in its own node's box, below the driver's node's
    bands = g["bands"]
    assert set(bands) == {"node aaaa1111", "node bbbb2222"}
    top, height = bands["node bbbb2222"]
    assert -pos["inner"][1] >= top > max(-pos[h][1] for h in pos if h != "inner")
    assert len(set(pos.values())) == len(pos)          # no two nodes on one spot


def test_layout_survives_cycles_between_groups():
    g = {"nodes": {h: {"id": h, "band": ""} for h in "xyz"},
         "edges": [("x", "y", "arg"), ("y", "z", "return"), ("z", "x", "arg")]}
    pos = gm.layout(g)
    assert set(pos) == {"x", "y", "z"} and len({p[0] for p in pos.values()}) == 3


def test_most_urgent_state():
    assert gm.most_urgent(["ready", "spilled", "reconstructing"]) == "reconstructing"
    assert gm.most_urgent(["done", "running"]) == "running"


def test_nodes_with_no_edge_go_in_a_grid_under_the_others():
    objects = [obj(f"x{i}", names=[f"x{i}"]) for i in range(8)] + [obj("a", names=["a"])]
    objects += [obj("b", task="T1", made_by="f")]
    g = gm.select(objects, [task("T1", "f", ["a"], ["b"])], ME, None)
    pos = gm.layout(g)
    rows = {pos[f"x{i}"][1] for i in range(8)}
    assert len(rows) == 2 and max(rows) < min(pos[h][1] for h in ("a", "T1", "b"))
    assert len(set(pos.values())) == len(pos)
    assert g["columns"] == (0, gm.GRID_WIDTH - 1)


def test_a_ready_small_value_is_in_its_owners_box_and_a_pending_one_not_placed_yet():
    """Small values live in their owner's memory, in no store: they are not 'not placed
    yet' (a shuffle's merged pieces were shown so)."""
    small = gm._object_node(obj("s", nodes=()), "node")
    waiting = gm._object_node(obj("p", nodes=(), state="pending"), "node")
    stored = gm._object_node(obj("x"), "node")
    assert small["band"] == gm.INLINE == "small values, in their owner's memory"
    assert waiting["band"] == "not placed yet"
    assert stored["band"] == "node aaaa1111"
