"""The state API in a notebook: call sites name the cell and its line."""

import pytest

from tests.integration.test_kernel import run

pytest.importorskip("jupyter_client")


def test_call_sites_name_the_cell_and_line_in_a_notebook(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")                                        # cell 1
    run(kc, "v = 1\ny = refbook.put(v)")                                # cell 2
    run(kc, "@refbook.remote\ndef f():\n    return refbook.put(3)\n\nr = f.remote()")
    out, err = run(kc, "from refbook import state\n"
                       "inner = refbook.get(r)\n"
                       "objs = {o['object_id']: o for o in state.objects()}\n"
                       "for x in (y, r, inner):\n"
                       "    print(objs[x.hex()]['made_by'], '|', objs[x.hex()]['call_site'])")
    assert err is None, err
    assert out.splitlines() == ["put | <cell 2>, line 2", "f | <cell 3>, line 5",
                                "put | <cell 3>, line 3"], out


def test_why_alive_and_objects_name_the_notebook_variable(kernel):
    km, kc = kernel
    run(kc, "%load_ext refbook")
    run(kc, "data = refbook.put(list(range(10)))\nalias = data")
    out, err = run(kc, "from refbook import state\n"
                       "o = [o for o in state.objects() if o['object_id'] == data.hex()][0]\n"
                       "print(sorted(o['names']))\n"
                       "print(sorted(s['name'] for p in state.why_alive(data) for s in p\n"
                       "             if s['kind'] == 'variable'))")
    assert err is None, err
    assert out.splitlines() == ["['alias', 'data']", "['alias', 'data']"], out


def test_a_remote_cells_task_is_made_at_its_cell(kernel):
    """Not in IPython's magic dispatch (``interactiveshell.py:2644`` in %refs)."""
    km, kc = kernel
    run(kc, "%load_ext refbook")                                        # cell 1
    run(kc, "%%remote --wait\nx = 1")                                   # cell 2
    out, err = run(kc, "from refbook import state\n"
                       "t = [t for t in state.tasks() if t['name'].startswith('cell')]\n"
                       "o = state.objects(ids=[x])[0]\n"
                       "print(t[0]['call_site'], '|', o['call_site'])")
    assert err is None, err
    assert out.strip() == "<cell 2>, line 1 | <cell 2>, line 1", out
