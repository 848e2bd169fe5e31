"""How the views look: one style sheet on JupyterLab's own ``--jp-*`` variables (so a
view follows the light and the dark theme), small HTML builders, and the colours the
plots share.  The plots are drawn on canvas, which cannot read CSS variables: they use
transparent backgrounds and mid-tone colours that read on both themes (``plots.py``)."""

from __future__ import annotations

import html

import ipywidgets

from ..units import short_id

# mid-tone colours, readable on white and on JupyterLab's dark grey
USED = "#4e79a7"
PINNED = "#2b4f7a"
SPILLED = "#f28e2b"
RESTORED = "#59a14f"
FREE = "#8c8c8c"
THRESHOLD = "#e15759"
KIND_COLOURS = {
    "worker_died": "#e15759", "node_died": "#b3262c", "oom_kill": "#ff5fa2",
    "task_retried": "#4e79a7", "actor_restarted": "#76b7b2",
    "object_lost": "#e15759", "object_reconstructing": "#f28e2b",
    "object_reconstructed": "#59a14f", "object_spilled": SPILLED,
    "object_restored": RESTORED, "events_dropped": "#8c8c8c",
}

CSS = """
.refbook-view { font-family: var(--jp-ui-font-family, sans-serif);
  color: var(--jp-ui-font-color1, #222); font-size: var(--jp-ui-font-size1, 13px);
  gap: 4px; }
.refbook-view .rb-header { display: flex; align-items: baseline; gap: 10px;
  padding: 2px 0 4px 0; border-bottom: 1px solid var(--jp-border-color2, #ddd); }
.refbook-view .rb-title { font-weight: 600; font-size: var(--jp-ui-font-size2, 14px); }
.refbook-view .rb-summary { color: var(--jp-ui-font-color2, #555); }
.refbook-view .rb-notice { padding: 4px 8px; margin: 2px 0;
  border-left: 3px solid var(--jp-warn-color1, #f57c00);
  background: var(--jp-layout-color2, #eee); color: var(--jp-ui-font-color1, #222); }
.refbook-view .rb-notice.rb-error { border-left-color: var(--jp-error-color1, #d32f2f); }
.refbook-view .rb-section { font-weight: 600; margin-top: 6px;
  color: var(--jp-ui-font-color2, #555); font-size: var(--jp-ui-font-size0, 11px);
  text-transform: uppercase; letter-spacing: 0.04em; }
.refbook-view table.rb-table { border-collapse: collapse; width: 100%;
  font-size: var(--jp-ui-font-size1, 13px); }
.refbook-view table.rb-table th { text-align: left; font-weight: 600;
  color: var(--jp-ui-font-color2, #555); padding: 2px 8px 2px 0;
  border-bottom: 1px solid var(--jp-border-color1, #bbb); }
.refbook-view table.rb-table td { padding: 2px 8px 2px 0; vertical-align: top;
  border-bottom: 1px solid var(--jp-border-color3, #eee); }
.refbook-view table.rb-table td.rb-num { text-align: right; white-space: nowrap;
  font-variant-numeric: tabular-nums; }
.refbook-view .rb-id { font-family: var(--jp-code-font-family, monospace);
  font-size: var(--jp-code-font-size, 12px); }
.refbook-view .rb-muted { color: var(--jp-ui-font-color2, #666); }
.refbook-view .rb-chip { display: inline-block; padding: 0 6px; border-radius: 8px;
  color: #fff; font-size: var(--jp-ui-font-size0, 11px); white-space: nowrap; }
.refbook-view .rb-empty { color: var(--jp-ui-font-color2, #666); font-style: italic;
  padding: 4px 0; }
.refbook-view .bk-root, .refbook-view .jupyter-widgets.bk-root { background: transparent; }
"""


def style() -> ipywidgets.HTML:
    """The style sheet, as a widget to put first in a view."""
    return ipywidgets.HTML(f"<style>{CSS}</style>",
                           layout=ipywidgets.Layout(height="0px", margin="0"))


def set_html(widget, value: str) -> None:
    """Set an HTML widget's value only if it changed (nothing sent otherwise)."""
    if widget.value != value:
        widget.value = value


def header(title: str, summary: str) -> str:
    return (f'<div class="rb-header"><span class="rb-title">{html.escape(title)}</span>'
            f'<span class="rb-summary">{summary}</span></div>')


def notice(text: str, error: bool = False) -> str:
    """A notice (``text`` is HTML): the empty state, a stopped view, an error."""
    return f'<div class="rb-notice{" rb-error" if error else ""}">{text}</div>'


def section(title: str) -> str:
    return f'<div class="rb-section">{html.escape(title)}</div>'


def chip(kind: str) -> str:
    colour = KIND_COLOURS.get(kind, "#8c8c8c")
    return (f'<span class="rb-chip" style="background:{colour}">'
            f'{html.escape(kind.replace("_", " "))}</span>')


def object_name(hexid: str) -> str:
    """An object id as ``%refs`` shows it (``units.short_id``)."""
    return short_id(hexid)


def short(oid: str | None, n: int = 12) -> str:
    """An object id (as :func:`object_name`), or a task or node id cut to ``n``, in the
    id style, the full id on hover."""
    if not oid:
        return ""
    oid = str(oid)
    text = object_name(oid) if len(oid) == 40 else oid[:n]
    return f'<span class="rb-id" title="{html.escape(oid)}">{html.escape(text)}</span>'


def table(columns: list[tuple[str, bool]], rows: list[list[str]], empty: str) -> str:
    """An HTML table: ``columns`` are ``(title, numeric)``; cells are HTML already."""
    if not rows:
        return f'<div class="rb-empty">{html.escape(empty)}</div>'
    head = "".join(f"<th>{html.escape(t)}</th>" for t, _ in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="rb-num">{c}</td>' if num else f"<td>{c}</td>"
                         for c, (_, num) in zip(row, columns, strict=False)) + "</tr>"
        for row in rows)
    return f'<table class="rb-table"><tr>{head}</tr>{body}</table>'


def clock(t: float) -> str:
    """A wall-clock time of day, to the tenth of a second."""
    import time
    lt = time.localtime(t)
    return time.strftime("%H:%M:%S", lt) + f".{int((t % 1) * 10)}"
