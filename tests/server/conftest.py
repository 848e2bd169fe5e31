"""pytest-jupyter's server fixtures (``jp_fetch``...), for the tests of this folder only:
its autouse fixtures replace the event loop of every test, which the other folders'
tests (sync Playwright among them) must not get."""
# ruff: noqa: F401, F403
import pytest
from pytest_jupyter.jupyter_core import *
from pytest_jupyter.jupyter_server import *


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"refbook.server": True}}}
