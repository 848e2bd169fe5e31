"""The Jupyter server extension ``refbook.server`` (API.md section 5): what the
JupyterLab sidebar asks the server, not a kernel.  ``GET <base_url>refbook/api/clusters``
lists the clusters this user runs on this host (``refbook start``, and notebooks' and
scripts' embedded clusters) with their nodes, so that a cluster is visible before any
kernel joins it.  It answers only requests that Jupyter's own authentication let in.
Nothing here starts or changes a cluster."""

from __future__ import annotations

import asyncio
import json

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..clusters import running_clusters


class ClustersHandler(APIHandler):
    @web.authenticated
    async def get(self):
        # the probes wait on sockets: off the server's event loop
        clusters = await asyncio.get_running_loop().run_in_executor(None, running_clusters)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"clusters": clusters}))


def _jupyter_server_extension_points():
    return [{"module": "refbook.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], "refbook", "api", "clusters")
    web_app.add_handlers(".*$", [(route, ClustersHandler)])
    serverapp.log.info("refbook: GET %s lists this host's refbook clusters", route)
