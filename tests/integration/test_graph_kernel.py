"""The object graph (refbook.widgets.object_graph) in a real kernel on real clusters:
its ``.data`` for a task chain and a nested ref, a ``del`` fading a node out, a killed
node's objects going lost, reconstructing and ready, thousands of objects grouped, the
details panel, ``%refbook graph`` and the empty states."""

import statistics
import time

import pytest

from tests.integration.test_kernel import Messages, run
from tests.integration.test_views_kernel import until, value

pytest.importorskip("jupyter_client")
pytest.importorskip("jupyter_bokeh")

CHAIN = """\
import numpy as np
@refbook.remote
def double(x):
    return x * 2
@refbook.remote
def total(x):
    return float(x.sum())
a = refbook.put(np.ones(100_000))
b = double.remote(a)
c = total.remote(b)
inner = refbook.put(np.arange(10))
outer = refbook.put([inner])
refbook.get(c)
"""


def test_a_task_chain_and_a_nested_ref_in_the_graph(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    out, err = run(kc, "from refbook import widgets\ng = widgets.object_graph()\ndisplay(g)")
    assert err is None, err
    assert "no refs yet" in value(kc, "g.notice.value")
    out, err = run(kc, CHAIN + "ids = {k: globals()[k].hex() for k in 'a b c inner outer'.split()}")
    assert err is None, err
    ids = value(kc, "ids")
    t = time.monotonic()
    got = until(kc, "len([e for e in g.data['edges'] if e['kind'] == 'return']) >= 2 and "
                    "any(e['kind'] == 'contains' for e in g.data['edges']) and "
                    "all(n['state'] in ('ready', 'done') for n in g.data['nodes']) and g.data",
                10)
    assert got, value(kc, "g.data")
    assert time.monotonic() - t < 3
    nodes = {n["id"]: n for n in got["nodes"]}
    edges = {(e["src"], e["dst"], e["kind"]) for e in got["edges"]}
    for k in ("a", "b", "c", "inner", "outer"):
        n = nodes[ids[k]]
        assert n["kind"] == "object" and n["name"] == k and n["state"] == "ready", n
        assert set(n) >= {"id", "kind", "state", "size", "name"}
    assert nodes[ids["a"]]["size"] >= 800_000
    tasks = {n["name"]: n for n in got["nodes"] if n["kind"] == "task"}
    assert set(tasks) == {"double", "total"} and tasks["total"]["state"] == "done"
    # arguments -> task -> outputs, and the nested ref
    d, s = tasks["double"]["id"], tasks["total"]["id"]
    assert {(ids["a"], d, "arg"), (d, ids["b"], "return"), (ids["b"], s, "arg"),
            (s, ids["c"], "return"), (ids["outer"], ids["inner"], "contains")} <= edges, edges
    # the details panel: what made it, where, what holds it and why it is alive
    run(kc, "g.select(ids['b'])")
    det = until(kc, "'why_alive' in g.details and g.details", 10)
    assert det["made_by"] == "double" and det["call_site"].startswith("<cell"), det
    assert det["names"] == ["b"] and det["where"], det
    assert any(p[0]["kind"] == "variable" and p[0]["name"] == "b" for p in det["why_alive"]), \
        det["why_alive"]
    html = value(kc, "g.details_html.value")
    assert "variable <b>b</b>" in html and "made by double" in html
    run(kc, "g.select(ids['inner'])")
    det = until(kc, "'why_alive' in g.details and g.details['id'] == ids['inner'] "
                    "and g.details", 10)
    assert any(step.get("object_id") == ids["outer"] for p in det["why_alive"] for step in p)
    # boxes per owner instead of per node: the notebook's objects in the driver's box
    run(kc, "g.group_pick.value = 'owner'")
    bands = until(kc, "{n['band'] for n in g.data['nodes']} if all(n['band'].startswith("
                      "'owner') for n in g.data['nodes']) else None", 5)
    assert bands and all(b.startswith("owner driver d-") for b in bands), bands
    run(kc, "g.group_pick.value = 'node'")
    # del: the node goes freed (fading), then it is gone
    run(kc, "del c")
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = value(kc, f"[n['state'] for n in g.data['nodes'] if n['id'] == {ids['c']!r}]")
        seen.append(st[0] if st else None)
        if st == [] and "freed" in seen:
            break
        time.sleep(0.1)
    assert "freed" in seen and seen[-1] is None, seen
    assert seen.index("freed") < len(seen) - 1
    assert value(kc, "g.latencies and max(g.latencies)") < 0.5
    run(kc, "g.close()")
    assert value(kc, "(g.stopped, g._sub is None)") == ("closed", True)


def test_refs_narrow_the_graph_to_them_and_their_lineage(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    out, err = run(kc, CHAIN + "from refbook import widgets\n"
                               "g = widgets.object_graph([c])\n"
                               "ids = {k: globals()[k].hex() for k in 'a b c inner outer'.split()}")
    assert err is None, err
    ids = value(kc, "ids")
    got = until(kc, "len(g.data['nodes']) >= 5 and g.data", 10)
    names = sorted(n["name"] for n in got["nodes"])
    assert names == ["a", "b", "c", "double", "total"], names
    assert value(kc, "g.roots") == {ids["c"]}
    # by notebook variable name, and %refbook graph
    assert value(kc, "sorted(widgets.object_graph('outer').roots)") == [ids["outer"]]
    # a variable holding a list of refs names them all
    assert value(kc, "len(widgets.object_graph(['pair']).roots) if (pair := [a, b]) else 0") == 2
    out, err = run(kc, "widgets.object_graph(['nope'])")
    assert err is not None and "nope" in str(err) and "variables holding refs" in str(err)
    out, err = run(kc, "widgets.object_graph(3)")
    assert err is not None and "TypeError" in str(err)
    m = Messages(kc)
    mid = m.run("%refbook graph outer")
    assert m.error(mid) is None
    shown = [x for x in m.all if x["parent_header"].get("msg_id") == mid
             and x["msg_type"] == "display_data"]
    assert shown and "application/vnd.jupyter.widget-view+json" in shown[0]["content"]["data"]
    out, err = run(kc, "%refbook graph nope")
    assert "no notebook variable named 'nope'" in out + str(err), (out, err)
    out, err = run(kc, "k = 3\n%refbook graph k")
    assert "k holds no ref" in out + str(err), (out, err)


def test_a_killed_node_shows_lost_then_reconstructing_then_ready(kernel):
    km, kc = kernel
    run(kc, "import refbook, numpy as np, time\nrefbook.init(num_nodes=3, num_cpus=1)")
    run(kc, "%load_ext refbook")
    run(kc, "from refbook import widgets, state\ng = widgets.object_graph()\ndisplay(g)")
    out, err = run(kc, "@refbook.remote\ndef part(i):\n    time.sleep(0.2)\n"
                       "    return np.ones(100_000) * i\n"
                       "parts = [part.remote(i) for i in range(6)]\n"
                       "refbook.wait(parts, num_returns=6)\n"
                       "head = [n['node_id'] for n in state.nodes() if n['is_head']][0]\n"
                       "where = {o['object_id']: o['nodes'] for o in state.objects()}\n"
                       "victim = sorted({n for p in parts for n in where[p.hex()]} - {head})[0]\n"
                       "on_victim = [p.hex() for p in parts if victim in where[p.hex()]]\n"
                       "time.sleep(1)\n"
                       "t_kill = time.time()\n"
                       "state.kill_node(victim)\n"
                       "total = sum(float(p.sum()) for p in refbook.get(parts))")
    assert err is None, err
    lost = value(kc, "on_victim")
    assert lost
    want = ["lost", "reconstructing", "ready"]

    def sequences() -> dict:
        log = value(kc, "[(h, s) for t, h, s in g.state_log if t >= t_kill and h in on_victim]")
        seqs: dict = {h: [] for h in lost}
        for h, s in log:
            seqs[h].append(s)
        return seqs

    def in_order(seq: list) -> bool:
        it = iter(seq)
        return all(s in it for s in want)
    deadline = time.monotonic() + 20
    while True:
        seqs = sequences()
        if all(in_order(seq) for seq in seqs.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print("states the graph showed after the kill:", seqs)
    for h, seq in seqs.items():
        assert in_order(seq), (h, seq)
    box = value(kc, "list(g.band_source.data['label'])")
    assert any("(died)" in b for b in box) or len(box) >= 1, box
    # the box of the dead node says so; the view is still live
    assert value(kc, "g.stopped") is None
    run(kc, "g.close()")


def test_labels_go_when_the_rows_have_no_room_for_them(kernel):
    """A shuffle's pieces make columns of many rows in a plot of capped height: their
    labels overlapped; then only hover and the details name them."""
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "from refbook import widgets\ng = widgets.object_graph()\ndisplay(g)\n"
            "few = [refbook.put(i) for i in range(3)]")
    assert until(kc, "len(g.data['nodes']) == 3 and g.labels.visible", 10)
    # a map's 60 pieces: one column of 60 rows
    run(kc, "@refbook.remote(num_returns=60)\ndef split():\n    return list(range(60))\n"
            "many = split.remote()\nrefbook.get(many)")
    assert until(kc, "len(g.data['nodes']) == 64 and not g.labels.visible", 10)
    run(kc, "del many")
    assert until(kc, "len(g.data['nodes']) == 3 and g.labels.visible", 15)
    run(kc, "g.close()")


def test_thousands_of_objects_are_grouped_by_function_and_call_site(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    out, err = run(kc, "import time, statistics\nfrom refbook import widgets\n"
                       "@refbook.remote\ndef inc(x):\n    return x + 1\n"
                       "xs = [refbook.put(i) for i in range(2500)]\n"
                       "ys = [inc.remote(x) for x in xs]\n"
                       "refbook.wait(ys, num_returns=len(ys))\n"
                       "t = time.perf_counter()\ng = widgets.object_graph()\n"
                       "built = time.perf_counter() - t", timeout=120)
    assert err is None, err
    d = value(kc, "g.data")
    assert d["collapsed"] and d["objects"] == 5000 and d["tasks"] == 2500, d
    groups = {(n["name"], n["kind"]): n for n in d["nodes"]}
    assert groups[("put \u00d72500", "object_group")]["count"] == 2500
    assert groups[("inc \u00d72500", "task_group")]["states"] == {"done": 2500}
    assert groups[("inc \u00d72500", "object_group")]["states"] == {"ready": 2500}
    kinds = {(e["kind"], e["count"]) for e in d["edges"]}
    assert kinds == {("arg", 2500), ("return", 2500)}, kinds
    # still live: a new object is in .data within half a second of its put()
    run(kc, "def shown_within(i):\n"
            "    count = lambda: sum(n['count'] for n in g.data['nodes'])\n"
            "    n0 = count()\n"
            "    t = time.perf_counter()\n"
            "    globals()[f'z{i}'] = refbook.put(i)\n"
            "    while count() == n0 and time.perf_counter() - t < 5:\n"
            "        time.sleep(0.005)\n"
            "    return time.perf_counter() - t")
    lat = []
    for i in range(8):
        lat.append(value(kc, f"shown_within({i})"))
        time.sleep(0.3)
    print(f"\n5,000 objects: view built in {value(kc, 'built'):.2f} s; put() to the model "
          f"updated {[round(x, 3) for x in lat]} s; snapshots "
          f"{[round(x, 3) for x in value(kc, 'list(g.snapshot_times)')]} s")
    assert statistics.median(lat) <= 0.3 and max(lat) < 1.0, lat
    assert value(kc, "g.rate(1.0)") <= 5
    run(kc, "g.close()")


def test_without_a_cluster_the_graph_says_what_to_do(kernel):
    km, kc = kernel
    out, err = run(kc, "from refbook import widgets\ng = widgets.object_graph()\n"
                       "print(g.stopped, '|', g.notice.value, '|', g.data)")
    assert err is None, err
    assert out.startswith("no cluster |") and "%load_ext refbook" in out, out
    assert "'nodes': []" in out


def test_the_dashboards_recovery_shows_a_hit_object_in_the_graph(kernel):
    km, kc = kernel
    run(kc, "import refbook, numpy as np, time\nrefbook.init(num_nodes=2, num_cpus=1)")
    run(kc, "%load_ext refbook")
    run(kc, "from refbook import widgets, state\nd = widgets.dashboard()\ndisplay(d)\n"
            "r, g = d.views['recovery'], d.views['object_graph']\n"
            "d.tabs.selected_index = list(d.views).index('recovery')")
    assert value(kc, "r.graph_pick.layout.display") == "none"   # nothing hit yet
    out, err = run(kc, "@refbook.remote\ndef part(i):\n    time.sleep(0.2)\n"
                       "    return np.ones(100_000) * i\n"
                       "parts = [part.remote(i) for i in range(4)]\n"
                       "refbook.wait(parts, num_returns=4)\n"
                       "head = [n['node_id'] for n in state.nodes() if n['is_head']][0]\n"
                       "where = {o['object_id']: o['nodes'] for o in state.objects()}\n"
                       "victim = [n for n in state.nodes() if not n['is_head']][0]['node_id']\n"
                       "on_victim = [p.hex() for p in parts if victim in where[p.hex()]]\n"
                       "state.kill_node(victim)\n"
                       "total = sum(float(p.sum()) for p in refbook.get(parts))")
    assert err is None, err
    lost = value(kc, "on_victim")
    if not lost:
        pytest.skip("no part was made on the second node")
    offered = until(kc, "[v for _, v in r.graph_pick.options if v in on_victim]", 20)
    assert offered, value(kc, "r.graph_pick.options")
    assert value(kc, "r.graph_pick.layout.display") == "flex"
    run(kc, f"r.graph_pick.value = {offered[0]!r}")
    assert value(kc, "d.tabs.selected_index") == 0
    assert value(kc, "g.selected") == offered[0]
    assert until(kc, f"{offered[0][:8]!r} in g.details_html.value", 5)
    run(kc, "d.close()")
