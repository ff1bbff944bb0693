"""The standard library's HTTP client over a Unix socket, for tests that send raw requests to labd and dockerd.

The lab's own client speaks through ``labcore.api.wire``; the tests speak through http.client, a second,
independent implementation, so that a mistake in one is not hidden by the same mistake in the other."""
import http.client
import socket


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost")          # the Host header needs a name; Docker's CLI sends this one
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def unix_connection(path: str) -> UnixConnection:
    return UnixConnection(path)
