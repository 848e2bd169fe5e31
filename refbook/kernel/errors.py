"""A failed task's error as a notebook error output (the remote traceback, with the
cell's own lines), for cells whose task fails after the cell returned."""

from __future__ import annotations

RED, CYAN, RESET = "\x1b[31m", "\x1b[36m", "\x1b[39m"


def error_output(task_name: str, err: BaseException) -> dict:
    cls = getattr(err, "cause_cls", None) or type(err)
    ename = cls.__name__
    tb = getattr(err, "traceback_str", "") or ""
    lines = [ln for ln in tb.rstrip().splitlines()]
    if lines and lines[0].startswith("Traceback (most recent call last)"):
        lines = lines[1:]
    evalue = lines[-1].partition(": ")[2] if lines and lines[-1].startswith(ename) else \
        getattr(err, "cause_repr", str(err))
    if not lines:
        lines = [f"{ename}: {evalue}"]
    left = f"{ename} in {task_name}, on a worker"
    right = "Traceback (most recent call last)"
    head = (f"{RED}{ename}{RESET} in {CYAN}{task_name}{RESET}, on a worker"
            f"{' ' * max(2, 75 - len(left) - len(right))}{right}")
    body = [*lines[:-1], f"{RED}{lines[-1].partition(':')[0]}{RESET}:"
            f"{lines[-1].partition(':')[2]}"]
    return {"output_type": "error", "ename": ename, "evalue": evalue,
            "traceback": [f"{RED}{'-' * 75}{RESET}", head, *body]}
