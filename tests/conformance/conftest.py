"""Two daemons for the differential suite: labd and Debian's dockerd, started once for the module (and stopped
after it: later tests check that no child process of theirs is left), each with busybox (the same bytes, so
the same IMAGE ID). Tests send both the same raw HTTP request and compare."""
import json
import os
import socket
import time

import pytest

from labcore.errors import LabError
from labcore.kernel.journal import Journal

API = "/v1.41"          # Debian's Docker 20.10 speaks 1.41; labd speaks it too


class Answer:
    def __init__(self, status: int, headers: dict, data: bytes):
        self.status, self.headers, self.data = status, headers, data

    def json(self):
        return json.loads(self.data)

    def __repr__(self) -> str:
        return f"<{self.status} {self.data[:200]!r}>"


class Engine:
    """One daemon, spoken to in raw HTTP/1.1 over its Unix socket: the same bytes go to both."""

    def __init__(self, name: str, socket_path: str):
        self.name, self.socket = name, socket_path

    def request(self, method: str, path: str, body=None, raw: bytes | None = None, headers=None,
                version: str = API) -> Answer:
        from tests.unixhttp import unix_connection
        connection = unix_connection(self.socket)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            connection.request(method, version + path, body=data,
                               headers={"Content-Type": "application/json", **(headers or {})})
            response = connection.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def hijack(self, method: str, path: str, body=None, send: bytes = b"", seconds: float = 10) -> Answer:
        """A request answered 101: everything the daemon sends after the headers, until it closes."""
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(seconds)
            connection.connect(self.socket)
            data = json.dumps(body).encode() if body is not None else b""
            connection.sendall(f"{method} {API}{path} HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n"
                               f"Upgrade: tcp\r\nContent-Type: application/json\r\n"
                               f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            received = b""
            while b"\r\n\r\n" not in received:
                received += connection.recv(4096)
            head, _, rest = received.partition(b"\r\n\r\n")
            if send:
                connection.sendall(send)
            deadline = time.monotonic() + seconds
            try:
                while time.monotonic() < deadline and (chunk := connection.recv(65536)):
                    rest += chunk
            except (TimeoutError, ConnectionError):
                pass                          # still open when the time was up: what came is the answer
        return Answer(int(head.split()[1]), {}, rest)

    # The docker SDK's steps, in raw requests.
    def create(self, cmd, name: str | None = None, **config) -> str:
        host = {"NetworkMode": "none", **config.pop("HostConfig", {})}
        answer = self.request("POST", "/containers/create" + (f"?name={name}" if name else ""),
                              {"Image": "busybox", "Cmd": cmd, **config, "HostConfig": host})
        assert answer.status == 201, answer
        return answer.json()["Id"]

    def run(self, cmd, **config) -> str:
        container = self.create(cmd, **config)
        assert self.request("POST", f"/containers/{container}/start").status == 204
        return container

    def wait(self, container: str) -> int:
        return self.request("POST", f"/containers/{container}/wait").json()["StatusCode"]

    def remove(self, container: str) -> None:
        self.request("DELETE", f"/containers/{container}?force=1&v=1")


@pytest.fixture(scope="module")
def engines(tmp_path_factory, shared_images):
    """{"labd": Engine, "dockerd": Engine}; skipped with the reason when Docker cannot run here."""
    if os.geteuid() != 0:
        pytest.skip("the differential suite starts dockerd and labd as root")
    from labcore.lessons.dockerd import Dockerd, dockerd_unavailable_reason, import_busybox
    reason = dockerd_unavailable_reason()
    if reason:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("labcore-differential")
    os.symlink(shared_images, home / "images")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LABCORE_HOME", str(home))
        from labcore.api.labd import Labd
        from labcore.image.baseimage import ensure_base_image
        ensure_base_image()
        with Dockerd() as dockerd, Labd(f"/run/labcore-differential-{os.getpid()}.sock") as labd:
            try:
                import_busybox(dockerd)
            except LabError as err:
                pytest.skip(f"dockerd cannot load busybox: {err}")
            yield {"labd": Engine("labd", labd.socket), "dockerd": Engine("dockerd", dockerd.socket)}
        left = Journal(home / "journal").entries()
        Journal(home / "journal").undo_all()
        assert not left, "the engines left: " + ", ".join(entry.describe() for entry in left)


@pytest.fixture
def both(engines):
    """The two engines, and every container a test made removed afterwards on each."""
    made = []
    original = Engine.create

    def create(self, *args, **kwargs):
        container = original(self, *args, **kwargs)
        made.append((self, container))
        return container
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Engine, "create", create)
        yield engines["labd"], engines["dockerd"]
    for engine, container in made:
        engine.remove(container)
