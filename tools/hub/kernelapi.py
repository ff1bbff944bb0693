"""A student's session, driven the way a browser drives it: the hub's REST API, then the server's kernel API.

    login          POST /hub/api/users/NAME/tokens {"auth": {"username", "password"}}: the hub hands the
                   credentials to its Authenticator (PAM) and returns a token with the student's own rights
    start          POST /hub/api/users/NAME/server, then GET /hub/api/users/NAME until the server is ready
    run_notebook   GET  /user/NAME/api/contents/PATH: the student's own copy of the notebook;
                   POST /user/NAME/api/kernels {"path": DIR}: a kernel in that directory;
                   the kernel's websocket, /api/kernels/ID/channels: one execute_request per code cell, in
                   order, every cell even after an error (as nbclient's allow_errors), its outputs gathered
                   from the iopub messages that name it as their parent until the kernel says idle
                   (jupyter-client's messaging.rst; jupyter_server's "kernel websocket" protocol, JSON form)
    stop           DELETE /hub/api/users/NAME/server

The notebook comes back with its outputs, ready for ``tools.host_matrix.count``: cells, error cells, steps
real or refused. Only tornado, which JupyterHub and Jupyter Server depend on, is needed.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

CELL_TIMEOUT = 300
CONNECT_TIMEOUT = 150      # above the server's own waits before it answers (2 x 60 s); see Session.websocket


class Session:
    """One student at the hub at ``url`` (the proxy's public address, e.g. http://127.0.0.1:8000)."""

    def __init__(self, url: str, name: str):
        self.url, self.name, self.token = url.rstrip("/"), name, ""
        self.http = AsyncHTTPClient()

    async def call(self, method: str, path: str, body=None, timeout: float = 120):
        """One REST call with the student's token; the JSON answer (None when empty)."""
        request = HTTPRequest(self.url + path, method=method, request_timeout=timeout,
                              body=None if body is None and method == "GET" else json.dumps(body or {}),
                              headers={"Authorization": f"token {self.token}"} if self.token else {},
                              allow_nonstandard_methods=True)
        response = await self.http.fetch(request)
        return json.loads(response.body) if response.body else None

    async def login(self, password: str) -> None:
        answer = await self.call("POST", f"/hub/api/users/{self.name}/tokens",
                                 {"auth": {"username": self.name, "password": password},
                                  "note": "labcore hub session"})
        self.token = answer["token"]

    async def start(self, timeout: float = 300) -> None:
        """Ask for the server and wait until the hub reports it ready (a 202 means "still starting")."""
        await self.call("POST", f"/hub/api/users/{self.name}/server", {}, timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            user = await self.call("GET", f"/hub/api/users/{self.name}")
            if user["servers"].get("", {}).get("ready"):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{self.name}'s server was not ready after {timeout:.0f} s")

    async def server_running(self) -> bool:
        user = await self.call("GET", f"/hub/api/users/{self.name}")
        return bool(user["servers"].get("", {}).get("ready"))

    async def stop(self) -> None:
        try:
            await self.call("DELETE", f"/hub/api/users/{self.name}/server")
        except HTTPClientError as err:
            if err.code != 404:
                raise
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (await self.call("GET", f"/hub/api/users/{self.name}"))[
                "servers"]:
            await asyncio.sleep(0.5)

    async def run_notebook(self, path: str):
        """Run the student's copy of the notebook at ``path`` (below their home) in a new kernel; return it
        with its outputs (an nbformat notebook)."""
        import nbformat
        server = f"/user/{self.name}/api"
        model = await self.call("GET", f"{server}/contents/{quote(path)}?content=1&type=notebook")
        notebook = nbformat.from_dict(model["content"])
        directory = path.rpartition("/")[0]
        kernel = await self.call("POST", f"{server}/kernels", {"name": "python3", "path": directory})
        try:
            await self.execute_cells(f"{server}/kernels/{kernel['id']}/channels", notebook)
        finally:
            await self.call("DELETE", f"{server}/kernels/{kernel['id']}")
        return notebook

    async def websocket(self, channels: str):
        url = self.url.replace("http", "ws", 1) + channels
        # The server answers the upgrade only once the new kernel is alive and has replied to kernel_info; it
        # waits up to kernel_info_timeout (60 s by default) for each (jupyter_server's connection/channels.py,
        # prepare). tornado's default of 20 s gave up first when ten kernels started at once on two CPUs (CI).
        return await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {self.token}"},
                                                   connect_timeout=CONNECT_TIMEOUT,
                                                   request_timeout=CONNECT_TIMEOUT))

    async def execute_cells(self, channels: str, notebook) -> None:
        socket = await self.websocket(channels)
        try:
            session = uuid.uuid4().hex
            for cell in notebook.cells:
                if cell.cell_type == "code":
                    cell.outputs = await execute(socket, session, self.name, cell.source)
        finally:
            socket.close()


async def execute(socket, session: str, username: str, code: str) -> list[dict]:
    """Send one execute_request; gather its outputs as nbformat outputs until the kernel is idle again."""
    import nbformat
    msg_id = uuid.uuid4().hex
    await socket.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": username,
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": False}}))
    outputs = []
    deadline = time.monotonic() + CELL_TIMEOUT
    while True:
        text = await asyncio.wait_for(socket.read_message(), max(1.0, deadline - time.monotonic()))
        if text is None:
            raise ConnectionError(f"{username}'s kernel websocket closed during a cell (close code "
                                  f"{socket.close_code}, reason {socket.close_reason!r}): {code[:80]!r}")
        message = json.loads(text)
        if message.get("parent_header", {}).get("msg_id") != msg_id or message.get("channel") != "iopub":
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "status" and content["execution_state"] == "idle":
            return outputs
        if kind in ("stream", "display_data", "execute_result", "error"):
            outputs.append(nbformat.v4.output_from_msg(message))
