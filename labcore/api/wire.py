"""HTTP/1.1 as the Engine API's clients speak it: one request, one answer, on one connection.

A request is a line, headers, a blank line and the body (RFC 9112):

    POST /v1.45/containers/create?name=web HTTP/1.1
    Host: localhost
    Content-Type: application/json
    Content-Length: 42

    {"Image": "busybox", "Cmd": ["/bin/true"]}

The answer is read the same way. Its body ends in one of three ways (RFC 9112 §6.3): after Content-Length
bytes; after the last of its chunks ("<hex size>\\r\\n<data>\\r\\n" ..., then a chunk of size 0), when the
daemon streams logs or pull progress as they are made; or, with neither header, when the daemon closes the
connection. A "101 Switching Protocols" answer (`docker exec`'s hijack) has no body: from the blank line on,
the socket carries the container's raw frames.

Why not http.client: it is the standard library's, and it would do, but it imports ssl and the email package
(12 ms of a 100 ms `labcore run` on the lab's machine, `python -X importtime`) for TLS and MIME headers that a
Unix socket to labd never carries. What the lab needs of it is the hundred lines below.
"""
from __future__ import annotations

import io
import socket

from labcore.errors import LabError


class Answer:
    """An HTTP answer: ``status``, ``headers`` (lower-case names), and its body through ``read``, ``read1`` and
    ``readline`` (an io.BufferedReader over ``Body``). ``fp``: the socket itself, from the end of the headers."""

    def __init__(self, fp):
        self.fp = fp
        try:
            line = fp.readline(65537).decode("latin-1")
        except ConnectionError:          # reset: the other end read something it did not understand, and left
            line = ""
        version, _, rest = line.partition(" ")
        status, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not status.isdigit():
            raise LabError(f"the socket did not answer in HTTP/1.1 ({line.strip()[:40]!r}, or nothing)",
                           fix="point --host or LABCORE_HOST at labd's socket (or dockerd's), e.g. "
                               "unix:///var/lib/labcore/labd.sock")
        self.status, self.reason = int(status), reason.strip()
        self.headers = read_headers(fp)
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        if self.status in (204, 304) or self.status < 200:      # 101 too: what follows is not a body
            left = 0
        else:
            left = int(length) if length is not None and not chunked else None
        self.body = io.BufferedReader(Body(fp, left, chunked))

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def read(self, size: int = -1) -> bytes:
        return self.body.read(size)

    def read1(self, size: int = -1) -> bytes:
        return self.body.read1(size)

    def readline(self, size: int = -1) -> bytes:
        return self.body.readline(size)


class Body(io.RawIOBase):
    """The body as it was sent, before any buffering: ``left`` bytes (None: until the connection closes), or
    chunk after chunk, each size read off its own line."""

    def __init__(self, fp, left: int | None, chunked: bool):
        self.fp, self.left, self.chunked = fp, left, chunked

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.chunked and not self.left:
            self.left = self._next_chunk()
        if self.left == 0:
            return 0
        data = self.fp.read1(len(buffer) if self.left is None else min(len(buffer), self.left))
        if not data:                                 # closed early: the end, never invented bytes
            self.left = 0
            return 0
        buffer[:len(data)] = data
        if self.left is not None:
            self.left -= len(data)
            if self.chunked and self.left == 0:
                self.fp.readline()                   # the CRLF after a chunk's data
        return len(data)

    def _next_chunk(self) -> int:
        size = int(self.fp.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            read_headers(self.fp)                    # trailers, if any, then the final blank line
            self.chunked = False
        return size


def read_headers(fp) -> dict[str, str]:
    headers = {}
    while (line := fp.readline(65537)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def send(sock: socket.socket, method: str, target: str, headers: dict, body=None) -> None:
    """The request line, the headers and the body: bytes with Content-Length, a file object in chunks."""
    headers = {"Host": "localhost", **headers}      # a Unix socket has no host name; Docker's CLI sends this one
    if body is None:
        head_body = b""
    elif hasattr(body, "read"):
        headers["Transfer-Encoding"] = "chunked"
        head_body = None
    else:
        headers["Content-Length"] = str(len(body))
        head_body = body
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode("latin-1") + (head_body or b""))
    if head_body is None:
        while chunk := body.read(1 << 16):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")


def exchange(sock: socket.socket, method: str, target: str, headers: dict, body=None) -> Answer:
    """Send one request on a connected socket and read the answer's status line and headers."""
    send(sock, method, target, headers, body)
    return Answer(sock.makefile("rb"))
