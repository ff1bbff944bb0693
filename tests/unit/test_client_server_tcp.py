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
