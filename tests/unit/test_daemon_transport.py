"""labd's transport: version prefixes stripped, Docker's error shapes and status codes."""
import pytest

from labcore.api import labd
from labcore.errors import BadInput, InvalidTransition, LabError, NotFound


def test_status_codes_follow_docker():
    assert [labd.status_for(e("x")) for e in (NotFound, InvalidTransition, BadInput, LabError)] == \
        [404, 409, 400, 500]


def test_routes_match_with_or_without_api_version(monkeypatch):
    monkeypatch.setattr(labd, "ROUTES", [])
    labd.route("GET", "/containers/{id}/json")(lambda request, id: {"Id": id})
    for path in ("/containers/abc/json", "/v1.45/containers/abc/json"):
        assert labd.dispatch(labd.Request("GET", path, {}, b"")) == {"Id": "abc"}
    with pytest.raises(labd.ApiError) as missing:
        labd.dispatch(labd.Request("POST", "/containers/abc/json", {}, b""))
    assert missing.value.status == 404


def test_malformed_json_is_a_400():
    with pytest.raises(labd.ApiError) as bad:
        labd.Request("POST", "/containers/create", {}, b"{not json").json()
    assert bad.value.status == 400


def test_tcp_only_on_loopback():
    with pytest.raises(BadInput, match="loopback only"):
        labd.bind_tcp("0.0.0.0:2375")


@pytest.mark.parametrize("path, message", [
    ("/v9.99/_ping", "client version 9.99 is too new. Maximum supported API version is 1.45"),
    ("/v1.0/_ping", "client version 1.0 is too old. Minimum supported API version is 1.24"),
    ("/v1..2/_ping", "invalid API version"),
])
def test_api_versions_labd_does_not_speak_are_refused_as_docker_refuses_them(path, message):
    with pytest.raises(labd.ApiError, match=message) as refused:
        labd.api_version(path)
    assert refused.value.status == 400
    assert labd.api_version("/v1.41/_ping") == ("/_ping", "1.41")
    assert labd.api_version("/vx/_ping") == ("/vx/_ping", None)       # not a version: a path, 404 later


def test_a_chunked_body_is_read_as_its_chunks_and_a_json_body_is_bounded():
    import io
    reader = labd.BodyReader(io.BytesIO(b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\nNEXT"), None, True)
    assert b"".join(reader.chunks(100)) == b"hello world"
    huge = labd.BodyReader(io.BytesIO(b""), labd.MAX_JSON_BODY + 1, False)
    with pytest.raises(labd.ApiError) as refused:
        huge.read_all(labd.MAX_JSON_BODY)
    assert refused.value.status == 413                      # refused from the header, before reading a byte
    with pytest.raises(labd.ApiError, match="malformed chunked"):
        b"".join(labd.BodyReader(io.BytesIO(b"zz\r\n"), None, True).chunks(100))


def test_a_bad_content_length_is_answered_400_and_a_deep_body_too(tmp_path):
    import socket
    import threading
    from labcore.api import routes
    path = str(tmp_path / "labcore-t.sock")
    server = labd.bind_unix(path)
    server.routes = routes.table()              # as labd.serve is given them: /_ping among them
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def ask(raw: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(path)
                client.sendall(raw)
                answer = b""
                while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                    answer += client.recv(4096)
                return answer
        answer = ask(b"POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400") and b"bad Content-Length" in answer
        deep = b"[" * 100_000
        answer = ask(b"POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(deep) + deep)
        assert answer.startswith(b"HTTP/1.1 404")           # no such route: the body is never parsed
        assert labd.ping(path)
        with pytest.raises(InvalidTransition, match="another daemon is listening"):
            labd.bind_unix(path)                           # a second daemon refuses a live socket
    finally:
        server.shutdown()
        server.server_close()


def test_a_deeply_nested_body_is_a_400_not_a_crash():
    with pytest.raises(labd.ApiError) as bad:
        labd.Request("POST", "/containers/create", {}, b"[" * 100_000 + b"]" * 100_000).json()
    assert bad.value.status == 400


def test_a_pull_the_registry_refuses_at_once_is_a_404_and_a_later_error_travels_in_the_stream(monkeypatch):
    """As dockerd answers: the manifest is asked for before the first byte of the answer, so a missing image is a
    404 (tests/conformance compares the two daemons), not a 200 stream."""
    from labcore.api import routes

    def missing(reference):
        raise NotFound(f"manifest unknown: http://127.0.0.1:5000/v2/{reference}")
        yield                                                   # a generator, as registry.pull is

    def failing_later(reference):
        yield {"status": "Pulling from lab/hello", "id": "v1"}
        raise LabError("digest mismatch")
    request = labd.Request("POST", "/images/create", {"fromImage": "127.0.0.1:5000/lab/hello", "tag": "v9"}, b"")
    monkeypatch.setattr(routes.engine, "pull", missing)
    with pytest.raises(NotFound, match="manifest unknown"):
        routes.pull_image(request)
    monkeypatch.setattr(routes.engine, "pull", failing_later)
    stream = routes.pull_image(request)
    assert next(stream.chunks) == b'{"status": "Pulling from lab/hello", "id": "v1"}\r\n'
    with pytest.raises(LabError, match="digest mismatch"):            # answer_stream writes it as an error line
        next(stream.chunks)
