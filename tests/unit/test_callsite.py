"""Call sites for the state API: where user code put an object or submitted a task."""

import sys

from refbook.runtime.data import serialization
from refbook.runtime.processes.callsite import (
    Formatter,
    format_site,
    here,
    names,
    set_names_provider,
)


def test_here_is_the_first_frame_outside_refbook():
    made_by, filename, line = here("put", 1)
    assert (made_by, filename) == ("put", __file__)
    assert line == sys._getframe().f_lineno - 2


def test_a_site_prints_as_file_and_line_or_as_a_cell():
    assert format_site("/a/b/test_x.py", 12) == "test_x.py:12"
    serialization.set_filename_display(
        lambda f: "<cell 3>" if f.endswith("/ipykernel_1/42.py") else None)
    try:
        assert format_site("/tmp/ipykernel_1/42.py", 2) == "<cell 3>, line 2"
        assert format_site("/a/b/test_x.py", 12) == "test_x.py:12"
        assert format_site("<cell 7>", 1) == "<cell 7>, line 1"     # in a worker
    finally:
        serialization.set_filename_display(None)
    fmt = Formatter()
    assert fmt(None) is None
    assert fmt(("f", "/x/y.py", 3)) == "y.py:3" == fmt(("g", "/x/y.py", 3))


def test_the_names_provider_and_a_broken_one():
    assert names() == {}
    set_names_provider(lambda: {"ab": ["x"]})
    try:
        assert names() == {"ab": ["x"]}
        set_names_provider(lambda: 1 / 0)
        assert names() == {}
    finally:
        set_names_provider(None)
