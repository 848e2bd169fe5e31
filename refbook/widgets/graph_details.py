"""The object graph's words: the details panel (what made a node, where it lives, what
holds it, every path that keeps it alive, from ``state.why_alive``), the hover texts,
the labels under the nodes, the legend and the style sheet."""

from __future__ import annotations

import html

from .. import state
from ..units import fmt_bytes
from . import theme
from .graph_model import COLOURS, process_name

PATHS_SHOWN = 8
LEGEND = ("pending", "running", "ready", "spilled", "lost", "reconstructing", "freed",
          "done")


def hint() -> str:
    return ('<div class="rb-section">details</div><div class="rb-empty">click a node '
            'to see what made it, where it lives and what keeps it alive</div>')


def gone(node_id: str) -> str:
    return (f'<div class="rb-section">details</div><div class="rb-empty">'
            f'{theme.short(node_id)} is gone: it was freed</div>')


def size_text(n: dict) -> str:
    if n["kind"].endswith("_group"):
        return f"{n['count']} {'tasks' if n['kind'] == 'task_group' else 'objects'}" + \
            (f", {fmt_bytes(n['size'])}" if n.get("size") else "")
    if n["kind"] == "task":
        return f"task, attempt {n.get('attempt') or 1}"
    return fmt_bytes(n["size"]) if n.get("size") is not None else "size not known yet"


def made_text(n: dict) -> str:
    site = n.get("call_site")
    at = f" at {site}" if site else ""
    if n["kind"] == "task":
        return f"submitted{at}"
    if n["kind"].endswith("_group"):
        return f"made by {n.get('made_by')}{at}"
    made = n.get("made_by")
    return (f"made by {'put()' if made == 'put' else made}{at}" if made
            else "made by a task")


def held_text(n: dict) -> str:
    """What holds it, in a few words (the hover; the panel says more)."""
    parts = []
    if n.get("names"):
        parts.append("variable " + ", ".join(n["names"]))
    if n.get("contained_in"):
        parts.append(f"inside {len(n['contained_in'])} object(s)")
    if n.get("borrowers"):
        parts.append("borrowed by " + ", ".join(process_name(b) for b in n["borrowers"]))
    if n["kind"] == "object" and n.get("owner"):
        parts.append(f"owned by {process_name(n['owner'])}")
    if n["kind"].endswith("_group"):
        parts.append(", ".join(f"{c} {s}" for s, c in sorted(n["states"].items())))
    return "; ".join(parts)


def fetch(node: dict) -> dict:
    """What the cluster says of ``node`` beyond the snapshot: ``why_alive`` paths for an
    object."""
    if node["kind"] != "object":
        return {}
    return {"why_alive": state.why_alive(node["id"])}


def summary(node: dict, why: dict | None) -> dict:
    """The details as plain data (``view.details``), for tests and export."""
    out = {k: node.get(k) for k in ("id", "kind", "state", "size", "name", "made_by",
                                    "call_site", "owner", "where", "names", "borrowers",
                                    "contained_in", "count", "states")
           if k in node}
    if why:
        out.update(why)
    return out


def step_text(step: dict, names: dict) -> str:
    k = step.get("kind")
    if k == "variable":
        return f"variable <b>{html.escape(str(step.get('name')))}</b>"
    if k == "ref":
        return f"a ref in {html.escape(process_name(step.get('process')))}"
    if k == "borrower":
        return f"borrowed by {html.escape(process_name(step.get('process')))}"
    if k == "task":
        return f"pending task {theme.short(step.get('task_id'))}"
    if k == "lineage":
        return f"lineage of task {theme.short(step.get('task_id'))} (kept to rebuild)"
    if k == "object":
        h = step.get("object_id") or ""
        return f"inside object {html.escape(names.get(h) or theme.object_name(h))}"
    return html.escape(str(step))


def render(node: dict, why: dict | None, names: dict) -> str:
    """The panel's HTML.  ``why`` None: still being asked."""
    st = node["state"]
    chip = (f'<span class="rb-chip" style="background:{COLOURS.get(st, "#8c8c8c")}">'
            f'{html.escape(st)}</span>')
    rows = [("id", theme.short(node["id"]) if not node["id"].startswith("group:")
             else '<span class="rb-muted">a group</span>'),
            ("what", html.escape(size_text(node))),
            ("made", html.escape(made_text(node)))]
    if node.get("where"):
        rows.append(("where", html.escape(", ".join(f"node {w[:8]}" for w in node["where"]))))
    if node.get("owner"):
        rows.append(("owner", html.escape(process_name(node["owner"]))))
    if node["kind"] == "object":
        rows.append(("names", html.escape(", ".join(node.get("names") or ()))
                     or '<span class="rb-muted">no notebook variable</span>'))
        if node.get("contained_in"):
            rows.append(("inside", ", ".join(
                html.escape(names.get(c) or theme.object_name(c))
                for c in node["contained_in"])))
        if node.get("borrowers"):
            rows.append(("borrowers", html.escape(
                ", ".join(process_name(b) for b in node["borrowers"]))))
    if node["kind"].endswith("_group"):
        rows.append(("states", html.escape(", ".join(
            f"{c} {s}" for s, c in sorted(node["states"].items())))))
    body = "".join(f'<tr><th>{k}</th><td>{v}</td></tr>' for k, v in rows)
    out = (f'<div class="rb-section">details</div><div class="rb-graph-title">'
           f'<b>{html.escape(node["name"])}</b> {chip}</div>'
           f'<table class="rb-table rb-details">{body}</table>')
    if node["kind"] == "object":
        out += theme.section("why alive")
        if why is None:
            out += '<div class="rb-empty">asking the cluster...</div>'
        elif "error" in why:
            out += f'<div class="rb-empty">cannot ask: {html.escape(why["error"])}</div>'
        elif not why.get("why_alive"):
            out += '<div class="rb-empty">nothing keeps it: it is being freed</div>'
        else:
            paths = why["why_alive"]
            items = "".join(
                "<li>" + " &rarr; ".join(step_text(s, names) for s in p) + "</li>"
                for p in paths[:PATHS_SHOWN])
            more = (f'<li class="rb-muted">and {len(paths) - PATHS_SHOWN} more</li>'
                    if len(paths) > PATHS_SHOWN else "")
            out += f'<ul class="rb-why">{items}{more}</ul>'
    return out


CSS = """
.refbook-view .rb-title { white-space: nowrap; }
.refbook-view .rb-graph-legend { line-height: 1.9; }
.refbook-view .rb-graph-legend .rb-chip { margin-right: 2px; }
.refbook-view .rb-graph-title { margin: 4px 0; font-size: var(--jp-ui-font-size2, 14px); }
.refbook-view table.rb-details th { width: 70px; border-bottom: none;
  color: var(--jp-ui-font-color2, #555); font-weight: normal; vertical-align: top; }
.refbook-view table.rb-details td { border-bottom: none; word-break: break-word; }
.refbook-view ul.rb-why { margin: 2px 0; padding-left: 16px; }
.refbook-view ul.rb-why li { margin: 2px 0; }
"""

TOOLTIP = """<div style="max-width:320px"><b>@name</b> <i>@kind</i> &middot; @state
<br>@size_txt<br>@made_txt<br>@where_txt<br>@held_txt</div>"""


def legend() -> str:
    chips = "".join(
        f'<span class="rb-chip" style="background:{COLOURS[s]}">{s}</span> '
        for s in LEGEND)
    return (f'<div class="rb-graph-legend">{chips}</div><div class="rb-muted">'
            f'&#9679; object, sized by bytes &middot; &#9632; task &middot; left to right: '
            f'arguments, task, outputs &middot; dashed line: the value contains the ref '
            f'&middot; click a node for details</div>')


def band_names(nodes: list) -> dict:
    """``{node id: "node 1a2b3c4d (head)"}`` (and ``(died)``), by the full id and its
    first 8 characters."""
    out = {}
    for n in nodes:
        nid = n["node_id"]
        label = f"node {nid[:8]}" + (" (head)" if n.get("is_head") else "") + \
            ("" if n.get("alive", True) else " (died)")
        out[nid] = out[nid[:8]] = label
    return out


def label_of(n: dict) -> str:
    """What is written under a node: a notebook name, else an object's size (the task
    beside it says what made it), a task's function, a group's name and count."""
    if n["kind"] == "object" and not n.get("names"):
        return fmt_bytes(n["size"]) if n.get("size") is not None else n["name"]
    return n["name"]


def cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "\u2026"
