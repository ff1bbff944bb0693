"""02's daemon on TCP, the parts that need no daemon: the listening fd found from /proc/net/tcp, an HTTP GET on
either kind of socket, the daemon's start-up lines read up to its "listening" line."""
import io
import os
import socket
import threading
from types import SimpleNamespace

from labcore.lessons import client_server


def test_the_listening_tcp_socket_is_found_as_an_fd_of_its_process():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        found = client_server.tcp_listener(os.getpid(), port)
        assert (found["fd"], found["address"]) == (server.fileno(), "127.0.0.1")
        assert found["inode"] == os.fstat(server.fileno()).st_ino
    assert client_server.tcp_listener(os.getpid(), port) == {}            # closed: nothing listens


def serve_once(server: socket.socket, answer: bytes) -> None:
    connection, _ = server.accept()
    with connection:
        connection.recv(65536)
        connection.sendall(answer)


def test_a_get_reads_the_status_line_and_the_body_on_unix_and_tcp(tmp_path):
    answer = b'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"ApiVersion": "9.9"}'
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as unix, socket.socket() as tcp:
        unix.bind(path)
        tcp.bind(("127.0.0.1", 0))
        for server in (unix, tcp):
            server.listen(1)
            threading.Thread(target=serve_once, args=(server, answer), daemon=True).start()
        over_unix = client_server.http_get(path, "/version")
        over_tcp = client_server.http_get(tcp.getsockname(), "/version")
    assert over_unix == over_tcp == ("HTTP/1.1 200 OK", b'{"ApiVersion": "9.9"}')
    assert client_server.answer_line(over_tcp) == "HTTP/1.1 200 OK, ApiVersion 9.9"
    assert client_server.answer_line(("HTTP/1.1 500 Oops", b"not json")) == "HTTP/1.1 500 Oops"


def test_the_start_up_lines_end_at_listening_and_never_wait_for_more():
    text = b'labd: level=warning msg="Binding..."\nlabd: listening on unix:///s and tcp://127.0.0.1:1\nlater\n'
    daemon = SimpleNamespace(process=SimpleNamespace(stderr=io.BytesIO(text)))
    assert client_server.startup_lines(daemon) == ['labd: level=warning msg="Binding..."',
                                                   "labd: listening on unix:///s and tcp://127.0.0.1:1"]
    ended = SimpleNamespace(process=SimpleNamespace(stderr=io.BytesIO(b"labd: died\n")))
    assert client_server.startup_lines(ended) == ["labd: died"]


def test_a_free_port_is_one_that_can_be_bound():
    port = client_server.free_loopback_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


# --- Docker's process tree: the parts that need no dockerd ------------------------------------------------

def test_a_process_is_read_from_proc_and_a_missing_one_is_gone():
    me = client_server.process_facts(os.getpid())
    assert (me["pid"], me["ppid"], me["state"]) == (os.getpid(), os.getppid(), "running")
    assert client_server.describe(me).startswith(f"pid {os.getpid()} ")
    gone = client_server.process_facts(2 ** 22 + 1)                   # above pid_max's ceiling: never a process
    assert gone == {"pid": 2 ** 22 + 1, "state": "gone"} and client_server.describe(gone).endswith(": gone")


def test_the_tree_draws_parents_solid_the_starter_dashed_and_what_survived_green():
    from tests.unit.test_diagram_fit import DOCKER_TREE
    source = client_server.docker_tree_dot(DOCKER_TREE)
    assert '"shim" -> "container" [label="parent: reaps it"]' in source
    assert '"containerd" -> "shim" [label="started it\\n(ttrpc)", style="dashed"]' in source
    assert '"init" -> "shim"' in source and "pid 1: systemd" in source
    assert source.count('fillcolor="palegreen"') == 2                    # the shim and the container
    assert "after: killed (SIGKILL)" in source and "after: ended with dockerd" in source


def test_without_dockerd_the_step_is_refused_with_its_recording_key(monkeypatch):
    from labcore.lessons import dockerd
    monkeypatch.setattr(dockerd, "dockerd_unavailable_reason", lambda: "dockerd is not installed: apt-get ...")
    step = client_server.docker_process_tree()
    assert not step.permitted and step.key == client_server.TREE_KEY
    assert "dockerd is not installed" in step.reason
    assert not step.data["container survived"] and step.data["before"]["shim"]["pid"] is not None


def test_a_cgroup_busy_a_moment_is_removed_when_it_empties(tmp_path, monkeypatch):
    calls = []

    def rmdir(path):
        calls.append(path)
        if len(calls) < 3:
            raise OSError(16, "Device or resource busy")
    monkeypatch.setattr(os, "rmdir", rmdir)
    client_server.retry_rmdir(str(tmp_path / "x"))
    assert len(calls) == 3
