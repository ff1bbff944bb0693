"""labcore.lessons.run_flow without root: the wire against a fake daemon, HTTP parsing, frames, the diagram,
the stepper."""
import os
import socket
import threading

import pytest

from labcore.errors import LabError
from labcore.lessons import client_server, run_flow, widgets

PONG = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK"
CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"11\r\n{\"status\": \"a\"}\r\n\r\n11\r\n{\"status\": \"b\"}\r\n\r\n0\r\n\r\n")


@pytest.fixture
def fake_daemon():
    """A Unix socket that records one request and answers with canned bytes, then closes."""
    path = f"/tmp/labcore-unit-{os.getpid()}-{threading.get_ident()}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    seen, answer = [], [PONG]

    def serve():
        connection, _ = server.accept()
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(4096)
            seen.append(data)
            connection.sendall(answer[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, seen, answer
    thread.join(timeout=5)
    server.close()
    os.unlink(path)


def test_the_wire_keeps_the_exact_bytes_sent_and_received(fake_daemon):
    path, seen, _ = fake_daemon
    exchange = run_flow.Wire(path).exchange("GET", "/_ping")
    assert exchange.request == seen[0]
    assert exchange.request.startswith(b"GET /_ping HTTP/1.1\r\n") and b"Connection: close\r\n" in exchange.request
    assert exchange.response == PONG and exchange.status == 200 and exchange.body == b"OK"
    assert str(exchange).splitlines()[0] == "> GET /_ping HTTP/1.1" and "< OK" in str(exchange)


def test_a_chunked_stream_is_joined_back_into_json_lines(fake_daemon):
    path, _, answer = fake_daemon
    answer[0] = CHUNKED
    exchange = run_flow.Wire(path).exchange("POST", "/v1.45/images/create?fromImage=x", body={})
    assert [event["status"] for event in exchange.stream()] == ["a", "b"]
    assert b"Content-Length: 2\r\n\r\n{}" in exchange.request


def test_no_daemon_is_an_error_that_says_so(tmp_path):
    with pytest.raises(LabError, match="cannot connect"):
        run_flow.Wire(str(tmp_path / "labcore-none.sock")).exchange("GET", "/_ping")


def test_not_http_is_refused():
    with pytest.raises(LabError, match="not an HTTP answer"):
        run_flow.parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_docker_log_frames_are_split_and_shown_escaped():
    body = b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n\x02\x00\x00\x00\x00\x00\x00\x04oops"
    assert run_flow.split_frames(body) == [(1, b"hi\n"), (2, b"oops")]
    assert run_flow.printable(body[:8]) == "\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x03"


def test_a_long_body_is_cut_and_says_how_much_is_left():
    lines = b"\r\n".join(b"line %d" % n for n in range(40))
    exchange = run_flow.Exchange(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n" + lines, 200, lines)
    text = str(exchange)
    assert "< line 0" in text and "< line 39" not in text
    assert f"more lines ({len(lines)} bytes in all)" in text


def test_the_diagram_lights_the_current_step_only():
    source = run_flow.flow_dot("pull")
    assert '"pull" [label="pull\\nPOST /images/create", fillcolor="gold"' in source
    assert source.count('fillcolor="gold"') == 1
    assert run_flow.flow_dot("connect").count('fillcolor="gold"') == 3      # client, socket and daemon
    assert run_flow.flow_dot().count('fillcolor="gold"') == 0


def test_the_branch_without_the_image_goes_from_the_pull_back_to_the_client():
    source = run_flow.flow_dot("missing")
    assert '"pull" -> "client"' in source and "registry 404 manifest unknown" in source
    assert source.count('fillcolor="gold"') == 2                            # the pull and the client
    assert source.count('penwidth="2"') >= 3


def test_the_registrys_error_body_is_read_in_the_distribution_specs_shape():
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}'
    exchange = run_flow.Exchange(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 Not Found\r\n\r\n" + body, 404, body)
    assert run_flow.registry_error(exchange) == "MANIFEST_UNKNOWN: manifest unknown"
    odd = run_flow.Exchange(b"", b"HTTP/1.1 404 Not Found\r\n\r\nnope", 404, b"nope")
    assert run_flow.registry_error(odd) == "nope"


class FakeStage:
    """Enough of a Stage for the stepper: a wire whose answers are canned."""

    def __init__(self, home):
        self.home, self.reference, self.calls = str(home), "127.0.0.1:5000/lab/hello:v1", []
        self.wire = self

    def exchange(self, method, target, body=None):
        self.calls.append(f"{method} {target}")
        return run_flow.Exchange(b"", b"HTTP/1.1 200 OK\r\n\r\n[]", 200, b"[]")


def test_the_stepper_starts_by_forgetting_the_image_then_walks_the_flow(tmp_path):
    pytest.importorskip("ipywidgets")
    stage = FakeStage(tmp_path)
    stepper = run_flow.stepper(stage)
    assert isinstance(stepper, widgets.Stepper)
    assert [page.title for page in stepper.pages] == ["forget the image (docker rmi)"] + [n for n, _ in run_flow.STEPS]
    assert stage.calls == ["DELETE /v1.45/images/127.0.0.1:5000/lab/hello:v1"]     # only the page shown ran
    assert all(page.dot and "digraph" in page.dot for page in stepper.pages)


def test_listening_ports_reads_ipv4_and_ipv6_tables():
    with socket.create_server(("127.0.0.1", 0)) as four, socket.create_server(("::1", 0), family=socket.AF_INET6) \
            as six:
        found = client_server.listening_ports("self")
        assert f"127.0.0.1:{four.getsockname()[1]}" in found and f"[::1]:{six.getsockname()[1]}" in found


def test_the_tap_relays_unchanged_and_notes_request_and_status(fake_daemon):
    path, seen, _ = fake_daemon
    with run_flow.Tap(path) as tap:
        exchange = run_flow.Wire(tap.path).exchange("GET", "/_ping")
    assert exchange.response == PONG and seen[0] == exchange.request
    assert tap.requests() == ["GET /_ping → 200"]
    assert not os.path.exists(tap.path)


def test_a_flow_step_in_a_notebook_is_its_evidence_then_the_flowchart_lit_where_it_is(monkeypatch):
    import IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    step = run_flow.FlowStep("pull from the registry", "POST /images/create", where="pull")
    step._ipython_display_()
    evidence, drawing = shown
    assert "pull from the registry" in evidence["text/plain"] and "POST /images/create" in evidence["text/html"]
    assert drawing.source == run_flow.flow_dot("pull") and 'fillcolor="gold"' in drawing.source
    shown.clear()
    run_flow.FlowStep("forget the image", "DELETE /images/x")._ipython_display_()
    assert len(shown) == 1                      # no place in the flowchart: no drawing


def test_the_lookup_note_follows_labds_answer():
    assert run_flow.lookup_note(404).startswith("not here")
    assert run_flow.lookup_note(200).startswith("here already")
    assert "500" in run_flow.lookup_note(500)
