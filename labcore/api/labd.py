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
``labcore.api.routes``. TCP is offered only on loopback and only when asked for (`--tcp 127.0.0.1:2375`):
an unauthenticated Docker API on a network is a well-known way to hand out root.
"""
from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import socket
import socketserver
import sys
import threading
import urllib.parse
from typing import Callable, Iterator

from labcore import paths
from labcore.api.schema import ApiError, query_bool
from labcore.errors import BadInput, InvalidTransition, LabError, NotFound, NotSupportedHere

API_VERSION = "1.45"
MIN_API_VERSION = "1.24"
MAX_JSON_BODY = 4 << 20        # a ContainerConfig is a few kB; a JSON body beyond 4 MiB is refused unread
MAX_STREAM_BODY = 16 << 30     # a tar upload (load, build, import, put archive) goes to disk, up to 16 GiB


def socket_path() -> str:
    return str(paths.home() / "labd.sock")


def status_for(error: LabError) -> int:
    """Docker's status codes: 404 no such object, 409 conflict with the state, 400 bad parameter (and a
    request this host cannot honour: it is the request that has to change)."""
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, InvalidTransition):
        return 409
    if isinstance(error, (BadInput, NotSupportedHere)):
        return 400
    return 500


class Stream:
    """A streamed answer (pull progress, logs, exec output): chunks written as they are produced."""

    def __init__(self, chunks: Iterator[bytes], content_type: str, headers: dict | None = None):
        self.chunks = chunks
        self.content_type = content_type
        self.headers = headers or {}


class Headers:
    """An answer of headers alone (HEAD /containers/{id}/archive)."""

    def __init__(self, headers: dict):
        self.headers = headers


class Hijack:
    """Docker's "hijacked" connection (exec start, attach): a 101 answer, then raw bytes until the end.

    The docker SDK reads these frames from the socket itself, not through HTTP, so they are not chunked."""

    def __init__(self, chunks: Iterator[bytes], on_input: Callable | None = None):
        self.chunks = chunks
        self.on_input = on_input      # on_input(rfile, socket): what the client sends after the 101 (stdin)


class Handoff:
    """Not Docker's: a 101, then the connection itself goes to ``take(connection)``, which may pass file
    descriptors on it (SCM_RIGHTS): `labcore run` handed to labd (``labcore.cli.handoff``)."""

    def __init__(self, take: Callable[[socket.socket], None]):
        self.take = take


ROUTES: list[tuple[str, re.Pattern, Callable]] = []


def compile_route(method: str, pattern: str, handler: Callable) -> tuple[str, re.Pattern, Callable]:
    """A route for ``METHOD /path/{name}``; handlers get (request, **path parameters).

    ``{name*}`` may span slashes, as image names do (``localhost:5000/lab/hello``): Docker's router
    writes it ``{name:.*}``."""
    regex = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.+)", pattern)
    return method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", regex) + "$"), handler


def route(method: str, pattern: str):
    """Register a handler in ROUTES (``compile_route``)."""
    def register(handler):
        ROUTES.append(compile_route(method, pattern, handler))
        return handler
    return register


class Request:
    """One request. The body is read only when a handler asks: ``json()`` reads at most MAX_JSON_BODY
    bytes into memory; ``body_file()`` copies an upload (a tar) to a file, chunk by chunk, never all of it
    into memory. Query values are checked where they are read, by ``labcore.api.schema``."""

    def __init__(self, method: str, path: str, query: dict[str, str], body: bytes | None = None,
                 reader: "BodyReader | None" = None, multi: dict[str, list[str]] | None = None):
        self.method, self.path, self.query = method, path, query
        self.multi = multi or {name: [value] for name, value in query.items()}   # ?t=a&t=b: every value
        self.reader = reader or BodyReader.of_bytes(body or b"")

    @property
    def body(self) -> bytes:
        return self.reader.read_all(MAX_JSON_BODY)

    def json(self):
        """The body as JSON, of any shape: ``labcore.api.schema`` says whether the shape is the right one."""
        data = self.body
        try:
            return json.loads(data) if data.strip() else None
        except RecursionError as err:
            raise ApiError(400, "invalid JSON: nested too deeply") from err
        except ValueError as err:
            raise ApiError(400, f"invalid JSON: {err}") from err

    def body_file(self, scope) -> str:
        """The body, copied to a journaled file in the state dir's scratch space (an image tar may be GBs)."""
        from labcore.kernel.journal import make_scratch
        path = make_scratch(scope, "labcore-upload-", directory=False)
        with open(path, "wb") as file:
            for chunk in self.reader.chunks(MAX_STREAM_BODY):
                file.write(chunk)
        return path

    def flag(self, name: str, default: bool = False) -> bool:
        return query_bool(self.query, name, default)


class BodyReader:
    """A request body as HTTP/1.1 frames it (RFC 9112 §6): ``Content-Length`` bytes, or chunked — the docker
    CLI streams a build context or an image tar chunked, without knowing its length ahead."""

    def __init__(self, rfile, length: int | None, chunked: bool):
        self.rfile, self.length, self.chunked, self.consumed = rfile, length, chunked, False

    @classmethod
    def of_bytes(cls, data: bytes) -> "BodyReader":
        import io
        return cls(io.BytesIO(data), len(data), False)

    def chunks(self, limit: int) -> Iterator[bytes]:
        if self.consumed:
            return
        self.consumed = True
        total = 0
        for chunk in (self._chunked() if self.chunked else self._sized()):
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"request body too large: more than {limit} bytes")
            yield chunk

    def read_all(self, limit: int) -> bytes:
        if self.length is not None and self.length > limit:
            raise ApiError(413, f"request body too large: {self.length} bytes, at most {limit} are accepted")
        if not hasattr(self, "data"):
            self.data = b"".join(self.chunks(limit))
        return self.data

    def _sized(self) -> Iterator[bytes]:
        yield from self._exactly(self.length or 0)

    def _chunked(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError as err:
                raise ApiError(400, f"malformed chunked encoding: {line[:40]!r}") from err
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass                             # trailer fields, if any, end with an empty line
                return
            yield from self._exactly(size)
            self.rfile.readline(8)                   # the CRLF after each chunk

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size:
            chunk = self.rfile.read(min(size, 1 << 16))
            if not chunk:
                raise ConnectionError("the client closed the connection in the middle of its body")
            size -= len(chunk)
            yield chunk

    def drain(self) -> bool:
        """Read what the handler left unread, so the next request on the connection starts at its start.
        False when that is more than a JSON body may be: then the connection is closed instead."""
        try:
            for _ in self.chunks(MAX_JSON_BODY):
                pass
        except (ApiError, ConnectionError):
            return False
        return True


def api_version(path: str) -> tuple[str, str | None]:
    """/v1.41/containers/json -> ("/containers/json", "1.41"); refuse a version outside what labd speaks,
    in the words of Docker's middleware (api/server/middleware/version.go)."""
    match = re.match(r"^/v([0-9.]+)(/.*)$", path)        # Docker's router: /v{version:[0-9.]+}/...
    if not match:
        return path, None
    version, rest = match[1], match[2]
    if not re.fullmatch(r"\d+\.\d+", version):
        raise ApiError(400, f"invalid API version: {version!r}: use MAJOR.MINOR, e.g. /v{API_VERSION}/")
    number = tuple(map(int, version.split(".")))
    if number > tuple(map(int, API_VERSION.split("."))):
        raise ApiError(400, f"client version {version} is too new. Maximum supported API version is "
                            f"{API_VERSION}")
    if number < tuple(map(int, MIN_API_VERSION.split("."))):
        raise ApiError(400, f"client version {version} is too old. Minimum supported API version is "
                            f"{MIN_API_VERSION}, please upgrade your client to a newer version")
    return rest, version


def dispatch(request: Request, routes: list | None = None):
    """Find the route (in ``routes``, else every one registered), check and strip the API version prefix
    (/v1.45/...), call the handler."""
    path, request.version = api_version(request.path)
    for method, regex, handler in ROUTES if routes is None else routes:
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
        pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        multi: dict[str, list[str]] = {}
        for name, value in pairs:
            multi.setdefault(name, []).append(value)
        request = None
        try:
            request = Request(self.command, url.path, dict(pairs), reader=self.body_reader(), multi=multi)
            self.answer(dispatch(request, self.server.routes))
        except ApiError as err:
            self.close_connection = self.close_connection or err.status == 413
            self.answer_json(err.status, {"message": str(err)})
        except LabError as err:
            self.answer_json(status_for(err), {"message": err.message})
        except ConnectionError:                 # the client left first (the docker CLI reads one JSON
            self.close_connection = True        # object of a wait and hangs up): nothing to answer
        except Exception as err:                # a bug in labd: answer as Docker does, keep serving
            if self.server.verbose:
                import traceback
                traceback.print_exc()
            self.close_connection = True
            self.answer_json(500, {"message": f"{type(err).__name__}: {err}"})
        # What the handler left unread of the body is read now, so that the next request on this
        # keep-alive connection starts where it starts; if that is too much, the connection ends instead.
        if request is not None and not self.close_connection and not request.reader.drain():
            self.close_connection = True

    def body_reader(self) -> BodyReader:
        """How long the body is, from the headers; a malformed Content-Length is answered 400, as Go's
        net/http does, and the connection closed (where the next request would start is unknown)."""
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        text = self.headers.get("Content-Length")
        length = None
        if text is not None and not chunked:
            if not text.strip().isdigit():
                self.close_connection = True
                raise ApiError(400, f"bad Content-Length: {text[:40]!r}: a number of bytes is expected")
            length = int(text)
        return BodyReader(self.rfile, length, chunked)

    def answer(self, result) -> None:
        if isinstance(result, Stream):
            self.answer_stream(result)
        elif isinstance(result, Hijack):
            self.answer_hijacked(result)
        elif isinstance(result, Handoff):
            self.answer_handoff(result)
        elif isinstance(result, Headers):
            self.send_response(200)
            for name, value in result.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif result is None or (isinstance(result, tuple) and result[1] is None):
            self.send_response(204 if result is None else result[0])
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
        for name, value in stream.headers.items():
            self.send_header(name, value)
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
        finally:
            close = getattr(stream.chunks, "close", None)
            if close:
                close()                             # a generator's finally runs now, not at garbage collection
        self.wfile.write(b"0\r\n\r\n")

    def answer_hijacked(self, hijack: Hijack) -> None:
        """101, then raw bytes both ways. The handler has checked everything it could before this: from here
        on an error cannot be an HTTP answer any more, so it travels as text on the stream, as Docker writes
        it (api/server/router/container/exec.go), and the connection ends."""
        self.send_response(101, "UPGRADED")
        self.send_header("Content-Type", "application/vnd.docker.raw-stream")
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "tcp")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True          # the end of the stream is the end of the connection
        if hijack.on_input is not None:
            threading.Thread(target=hijack.on_input, args=(self.rfile, self.connection), daemon=True).start()
        try:
            for chunk in hijack.chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        except LabError as err:
            self.wfile.write(err.message.encode() + b"\r\n")
        except ConnectionError:
            pass
        finally:
            close = getattr(hijack.chunks, "close", None)
            if close:
                close()

    def answer_handoff(self, handoff: Handoff) -> None:
        """101, then the connection is the handoff's. The client sends nothing before it has read the 101,
        so nothing of what follows can be in rfile's buffer: the handoff reads the socket itself."""
        self.send_response(101, "UPGRADED")
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "labcore-run")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        handoff.take(self.connection)

    def address_string(self) -> str:
        return "unix"                         # a Unix socket peer has no address

    def log_message(self, format: str, *args) -> None:
        if self.server.verbose:
            sys.stderr.write(f"labd: {format % args}\n")


class QuietAboutHangups:
    """A client that closes its end mid-answer is normal, not an error to print: labd's stderr is a pipe that
    Labd reads only if the daemon dies, and a full pipe would block the daemon."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class UnixServer(QuietAboutHangups, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # listen(2)'s backlog: the default 5, and even 128, refuse a burst of clients (connect fails with EAGAIN on
    # a Unix socket: 200 SDK threads at once in `bench scale`). SOMAXCONN, as Go's net.Listen asks for dockerd
    # (it reads /proc/sys/net/core/somaxconn; the kernel caps any larger value there).
    request_queue_size = socket.SOMAXCONN
    verbose = False
    routes = None                 # the table serve() was given; None: every route registered


class TcpServer(QuietAboutHangups, socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN
    verbose = False
    routes = None


def bind_unix(path: str) -> UnixServer:
    """Bind the socket with mode 0660: root and the socket's group may talk to the daemon, no one else."""
    if os.path.exists(path):
        if ping(path):               # a live daemon answers on it: taking its name would orphan its clients
            raise InvalidTransition(f"another daemon is listening on {path}",
                                    fix="stop that daemon first, or start this one with --socket OTHER_PATH")
        os.unlink(path)              # a socket file left by a daemon that died; binding needs the name free
    os.makedirs(os.path.dirname(path), exist_ok=True)
    old_mask = os.umask(0o117)
    try:
        server = UnixServer(path, Handler)
    finally:
        os.umask(old_mask)
    return server


# dockerd's own warnings for a TCP socket without --tlsverify (moby cmd/dockerd/daemon.go, loadListeners).
TCP_WARNINGS = ("Binding to IP address without --tlsverify is insecure and gives root access on this machine to "
                "everyone who has access to your network.",
                "Binding to an IP address, even on localhost, can also give access to scripts run in a browser. "
                "Be safe out there!")


def bind_tcp(address: str) -> TcpServer:
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        raise BadInput(f"--tcp {address}: labd listens on loopback only",
                       fix="use --tcp 127.0.0.1:PORT; an open Docker API on a network is root for anyone")
    for warning in TCP_WARNINGS:         # labd has no TLS at all: every TCP client is unauthenticated
        print(f'labd: level=warning msg="{warning}" host="tcp://{address}"', file=sys.stderr, flush=True)
    return TcpServer((host.strip("[]"), int(port)), Handler)


def serve(routes: list, socket: str | None = None, tcp: str | None = None, verbose: bool = False) -> None:
    """Run until interrupted, answering with ``routes`` (`labcore daemon` passes ``labcore.api.routes.table()``):
    the transport is given its routes, it does not import them, so the routes may import the transport."""
    servers = [bind_unix(socket or socket_path())] + ([bind_tcp(tcp)] if tcp else [])
    from labcore.runtime import engine
    try:
        engine.hold_monitor()          # the containers' monitor stays as long as we do: no start waits for it
    except LabError as err:            # each start will say why again; the other routes work without it
        print(f"labd: level=warning msg=\"no container monitor: {err}\"", file=sys.stderr, flush=True)
    for server in servers:
        server.verbose, server.routes = verbose, routes
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"labd: listening on unix://{socket or socket_path()}" + (f" and tcp://{tcp}" if tcp else ""),
          file=sys.stderr, flush=True)
    try:
        servers[0].serve_forever()
    finally:
        for server in servers:
            server.server_close()
        engine.release_monitor()
        with contextlib.suppress(LabError, OSError):
            engine.dismiss_monitor()   # if no container keeps it, it leaves with us, not a moment after
        if os.path.exists(socket or socket_path()):
            os.unlink(socket or socket_path())


def ping(path: str) -> bool:
    """GET /_ping over a Unix socket, the Engine API's liveness check (labd's and dockerd's alike)."""
    import socket as sockets
    try:
        with sockets.socket(sockets.AF_UNIX) as probe:
            probe.settimeout(2)
            probe.connect(path)
            probe.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return probe.recv(64).split(b"\r\n")[0].split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


class Labd:
    """``with Labd() as labd:`` runs `labcore daemon` in the background, as a service manager would.

    The daemon is a separate process on purpose: that is the point of the client-server architecture. It is
    journaled like any object the lab makes, so a crashed notebook's daemon is stopped by `labcore cleanup`.
    """

    def __init__(self, socket: str | None = None, home: str | None = None, tcp: str | None = None):
        self.socket = socket or socket_path()
        self.home = home                # its own LABCORE_HOME (images, containers); default: the caller's
        self.tcp = tcp                  # 127.0.0.1:PORT: also listen there (`labcore daemon --tcp`)
        self.process = None
        self.scope = None

    def __enter__(self) -> "Labd":
        import subprocess
        from labcore.kernel.journal import Scope, process_start_time
        self.scope = Scope()
        # A daemon killed with SIGKILL leaves its socket file behind: record it like any object.
        self.scope.record("file", self.socket, "unlink", path=self.socket)
        self.process = subprocess.Popen([sys.executable, "-m", "labcore", "daemon", "--socket", self.socket,
                                         *(["--tcp", self.tcp] if self.tcp else [])],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE,
                                        env={**os.environ, "LABCORE_HOME": self.home} if self.home else None)
        self.scope.record("process", str(self.process.pid), "kill", pid=self.process.pid,
                          start=process_start_time(self.process.pid))
        try:
            self.wait_until_serving()
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_until_serving(self, seconds: float | None = None) -> None:
        from labcore.kernel.process import READY_SECONDS, wait_until_ready
        seconds = READY_SECONDS if seconds is None else seconds
        wait_until_ready(self.process, lambda: ping(self.socket), f"labd on {self.socket}", seconds,
                         lambda: self.process.stderr.read().decode()[-800:] if self.process.poll() else "")

    def ping(self) -> bool:
        return ping(self.socket)

    def stop(self, seconds: float = 10) -> None:
        """SIGTERM first, as a service manager stops a service (systemd's KillMode): labd closes its sockets,
        lets go of the container monitor and, when no container keeps that monitor, waits for it to leave
        too, so that nothing of the daemon's outlives the ``with``."""
        import subprocess
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(seconds)

    def client(self):
        """The official docker SDK, pointed at this daemon."""
        import docker
        return docker.DockerClient(base_url=f"unix://{self.socket}")

    def __exit__(self, *exc) -> None:
        self.stop()
        self.scope.close()              # SIGKILL, if SIGTERM did not end it; its socket file, if left
        self.process.wait()
        self.process.stderr.close()
