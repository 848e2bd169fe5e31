"""Sizes as people write and read them: ``fmt_bytes(100 * 2**20) == "100 MiB"`` and
``parse_bytes("100MB") == 100_000_000``."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
SIZE_HELP = ("bytes, or a number with a unit: KB, MB, GB (powers of 1000) or KiB, MiB, "
             "GiB (powers of 1024), e.g. 100MB or 2GiB")


def fmt_bytes(n) -> str:
    """Three significant digits at most, in binary units: 512 B, 15.3 MiB, 100 MiB."""
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{n:.0f} B"
            text = f"{n:.3g}" if abs(n) < 1000 else f"{n:.0f}"
            return f"{text} {unit}"
        n /= 1024
    return str(n)


def parse_bytes(text) -> int:
    """``"100MB"``, ``"1.5 GiB"``, ``"4096"`` -> bytes.  Raises ValueError naming the
    units it takes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size: give {SIZE_HELP}")
    return int(float(m.group(1)) * _UNITS[unit])


def short_id(hexid: str) -> str:
    """An object id as ``%refs``, the views and the sidebar show it: ``9f3e:17`` (the
    creating process's tag, and its counter) or ``9f3e:17/1`` for a task's second
    return value; unique among the objects of a session."""
    if len(hexid) != 40:
        return hexid[:12]
    tag, counter, index = hexid[:4], int(hexid[16:32], 16), hexid[32:]
    out = f"{tag}:{counter}"
    if index not in ("00000000", "ffffffff"):
        out += f"/{int(index, 16)}"
    return out
