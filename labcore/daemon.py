"""The daemon: a long-running process that owns a Unix socket and does what clients ask.

`docker run` is not one program. The `docker` command is a client; it sends HTTP requests over the Unix
socket /var/run/docker.sock to `dockerd`, the daemon, which pulls images, creates containers and starts them.
The client can exit and the containers keep running, because they belong to the daemon.

`labd` (``labcore daemon``) is the same architecture in a few hundred lines. It listens on
``<state dir>/labd.sock`` (mode 0660: whoever can write to it can ask for a container that bind-mounts the
host's /, which is why access to docker.sock equals root), speaks the part of the Docker Engine API that the
official docker SDK uses, and answers errors in Docker's JSON shape and status codes, so unmodified Docker
clients work against it:

    docker.DockerClient(base_url="unix:///var/lib/labcore/labd.sock").containers.run("busybox", "echo hi")

This module is the transport: sockets, HTTP, routing, streaming. What each route does is in
``labcore.dockerapi``. TCP is offered only on loopback and only when asked for (`--tcp 127.0.0.1:2375`):
an unauthenticated Docker API on a network is a well-known way to hand out root.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import socketserver
import sys
import threading
import urllib.parse
from typing import Callable, Iterator

from labcore import paths
from labcore.errors import BadInput, InvalidTransition, LabError, NotFound

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"


def socket_path() -> str:
    return str(paths.home() / "labd.sock")


class ApiError(Exception):
    """An answer in Docker's error shape: ``{"message": ...}`` with an HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def status_for(error: LabError) -> int:
    """Docker's status codes: 404 no such object, 409 conflict with the state, 400 bad parameter."""
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, InvalidTransition):
        return 409
    if isinstance(error, BadInput):
        return 400
    return 500


class Stream:
    """A streamed answer (pull progress, logs, exec output): chunks written as they are produced."""

    def __init__(self, chunks: Iterator[bytes], content_type: str):
        self.chunks = chunks
        self.content_type = content_type


ROUTES: list[tuple[str, re.Pattern, Callable]] = []


def route(method: str, pattern: str):
    """Register a handler for ``METHOD /path/{name}``; handlers get (request, **path parameters)."""
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")

    def register(handler):
        ROUTES.append((method, regex, handler))
        return handler
    return register


class Request:
    def __init__(self, method: str, path: str, query: dict[str, str], body: bytes):
        self.method, self.path, self.query, self.body = method, path, query, body

    def json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise ApiError(400, f"invalid JSON: {err}") from err

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.query.get(name)
        return default if value is None else value.lower() in ("1", "true", "yes")


def dispatch(request: Request):
    """Find the route, strip the API version prefix (/v1.45/...), call the handler."""
    path = re.sub(r"^/v\d+\.\d+(?=/)", "", request.path)
    for method, regex, handler in ROUTES:
        match = regex.match(path)
        if match and method == request.method:
            return handler(request, **{k: urllib.parse.unquote(v) for k, v in match.groupdict().items()})
    raise ApiError(404, f"page not found: {request.method} {request.path}")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"            # keep-alive, as the docker SDK's connection pool expects
    server_version = "labd"

    def do_GET(self):
        self.handle_api()

    do_POST = do_DELETE = do_HEAD = do_PUT = do_GET

    def handle_api(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(self.command, url.path, query, self.rfile.read(length) if length else b"")
        try:
            self.answer(dispatch(request))
        except ApiError as err:
            self.answer_json(err.status, {"message": str(err)})
        except LabError as err:
            self.answer_json(status_for(err), {"message": err.message})

    def answer(self, result) -> None:
        if isinstance(result, Stream):
            self.answer_stream(result)
        elif result is None:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif isinstance(result, tuple):
            self.answer_json(*result)
        elif isinstance(result, str):
            self.answer_bytes(200, result.encode(), "text/plain; charset=utf-8")
        else:
            self.answer_json(200, result)

    def answer_json(self, status: int, body) -> None:
        self.answer_bytes(status, json.dumps(body).encode(), "application/json")

    def answer_bytes(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def answer_stream(self, stream: Stream) -> None:
        """HTTP/1.1 chunked transfer: each chunk reaches the client as soon as it exists (live progress)."""
        self.send_response(200)
        self.send_header("Content-Type", stream.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in stream.chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
        except LabError as err:                    # after the 200 is sent, errors travel in the stream
            line = json.dumps({"errorDetail": {"message": err.message}, "error": err.message}) + "\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line.encode()))
        self.wfile.write(b"0\r\n\r\n")

    def address_string(self) -> str:
        return "unix"                         # a Unix socket peer has no address

    def log_message(self, format: str, *args) -> None:
        if self.server.verbose:
            sys.stderr.write(f"labd: {format % args}\n")


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    verbose = False


class TcpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    verbose = False


def bind_unix(path: str) -> UnixServer:
    """Bind the socket with mode 0660: root and the socket's group may talk to the daemon, no one else."""
    if os.path.exists(path):
        os.unlink(path)              # a socket file left by a daemon that died; binding needs the name free
    os.makedirs(os.path.dirname(path), exist_ok=True)
    old_mask = os.umask(0o117)
    try:
        server = UnixServer(path, Handler)
    finally:
        os.umask(old_mask)
    return server


def bind_tcp(address: str) -> TcpServer:
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        raise BadInput(f"--tcp {address}: labd listens on loopback only",
                       fix="use --tcp 127.0.0.1:PORT; an open Docker API on a network is root for anyone")
    return TcpServer((host.strip("[]"), int(port)), Handler)


def serve(socket: str | None = None, tcp: str | None = None, verbose: bool = False) -> None:
    """Run until interrupted. Routes come from labcore.dockerapi (imported here for their side effect)."""
    import labcore.dockerapi  # noqa: F401 - registers the routes
    servers = [bind_unix(socket or socket_path())] + ([bind_tcp(tcp)] if tcp else [])
    for server in servers:
        server.verbose = verbose
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"labd: listening on unix://{socket or socket_path()}" + (f" and tcp://{tcp}" if tcp else ""),
          file=sys.stderr, flush=True)
    try:
        servers[0].serve_forever()
    finally:
        for server in servers:
            server.server_close()
        if os.path.exists(socket or socket_path()):
            os.unlink(socket or socket_path())
