"""After the set-up (``pip install -e ".[test]"``, as scripts/setup.sh runs it), Jupyter
lists both of refbook's extensions as enabled and working."""

import re
import subprocess
import sys


def _list(*what: str) -> str:
    p = subprocess.run([sys.executable, "-m", "jupyter", *what, "list"],
                       capture_output=True, text=True, timeout=120)
    return re.sub(r"\x1b\[[0-9;]*m", "", p.stdout + p.stderr)     # no colours


def test_the_labextension_is_installed_enabled_and_compatible():
    out = _list("labextension")
    assert re.search(r"refbook-labextension v\S+ enabled OK", out), out
    assert "not compatible" not in out and "outdated" not in out, out


def test_the_server_extension_is_enabled():
    out = _list("server", "extension")
    assert re.search(r"refbook\.server\s+enabled", out), out
    assert re.search(r"refbook\.server\s+OK", out), out
