"""labcore.api.wire against canned bytes: each way an answer's body ends, and what a request puts on the wire."""
import io
import socket

import pytest

from labcore.api import wire
from labcore.errors import LabError


def answer(raw: bytes) -> wire.Answer:
    return wire.Answer(io.BufferedReader(io.BytesIO(raw)))


def test_a_body_of_content_length_bytes_stops_there_though_more_follows():
    got = answer(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                 b'{"Id":"ab"}GARBAGE')
    assert (got.status, got.reason, got.getheader("content-type")) == (201, "Created", "application/json")
    assert got.read() == b'{"Id":"ab"}'
    assert got.read() == b""


def test_chunks_are_joined_and_lines_read_across_them():
    raw = b"4\r\n{\"a\"\r\n6;ext=1\r\n:1}\r\n{\r\n5\r\n}\r\nxy\r\n0\r\nTrailer: x\r\n\r\nAFTER"
    got = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + raw)
    assert got.readline() == b'{"a":1}\r\n'
    assert got.readline() == b"{}\r\n"
    assert got.read() == b"xy"


def test_without_length_or_chunks_the_body_ends_when_the_daemon_closes():
    got = answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\nraw tty bytes")
    assert got.read1(4) == b"raw "
    assert got.read() == b"tty bytes"


def test_204_has_no_body_even_when_bytes_follow():
    got = answer(b"HTTP/1.1 204 No Content\r\n\r\nnot a body")
    assert got.status == 204 and got.read() == b""


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH\r\n\r\n", b""])
def test_not_http_is_refused_naming_the_socket_to_point_at(raw):
    with pytest.raises(LabError) as refused:
        answer(raw)
    assert "did not answer in HTTP/1.1" in refused.value.message and "labd's socket" in refused.value.fix


def test_a_peer_that_resets_the_connection_is_refused_the_same_way():
    class Reset:
        def readline(self, size):
            raise ConnectionResetError(104, "Connection reset by peer")
    with pytest.raises(LabError, match="did not answer in HTTP/1.1"):
        wire.Answer(Reset())


def test_a_request_carries_its_length_and_a_file_goes_in_chunks():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        wire.send(ours, "POST", "/v1.45/containers/create?name=x", {"Content-Type": "application/json"}, b"{}")
        wire.send(ours, "POST", "/v1.45/images/load", {}, io.BytesIO(b"tar bytes"))
        ours.shutdown(socket.SHUT_WR)
        sent = theirs.makefile("rb").read()
    assert sent == (b"POST /v1.45/containers/create?name=x HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
                    b"POST /v1.45/images/load HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"9\r\ntar bytes\r\n0\r\n\r\n")
