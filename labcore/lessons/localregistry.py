"""A real registry on loopback, for pulling without the internet.

Debian's ``docker-registry`` package is the CNCF distribution registry (the code behind Docker Hub's
registry API). The lab starts one on 127.0.0.1 with its storage in a ``labcore-registry-*`` directory, so the
`docker run` flow can show a real pull: the image is not local, the daemon asks the registry, the layers
arrive by digest. It runs until the block ends (or `labcore cleanup` stops it after a crash).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from labcore import paths
from labcore.errors import NotSupportedHere
from labcore.kernel.journal import Scope, process_start_time
from labcore.kernel.process import READY_SECONDS, wait_until_ready

CONFIG = """version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalRegistry:
    """``with LocalRegistry() as registry:`` → ``registry.address`` is ``127.0.0.1:PORT``."""

    def __init__(self):
        self.scope = Scope()
        self.address = ""
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "LocalRegistry":
        try:
            self.start()
        except BaseException:
            self.scope.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.scope.close()
        if self.process:
            self.process.wait()          # reap it: no zombie left in a long-lived notebook kernel

    def start(self) -> None:
        program = shutil.which("docker-registry")
        if not program:
            raise NotSupportedHere("docker-registry is not installed",
                                   fix="apt-get install docker-registry (Debian's CNCF distribution registry)")
        directory = self.make_directory()
        port = free_port()
        config = Path(directory, "config.yml")
        config.write_text(CONFIG.format(storage=Path(directory, "storage"), port=port))
        self.process = subprocess.Popen([program, "serve", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        self.scope.record("process", self.process.pid, "kill", pid=self.process.pid,
                          start=process_start_time(self.process.pid))
        self.address = f"127.0.0.1:{port}"
        self.wait_until_serving()

    def make_directory(self) -> str:
        paths.scratch_dir().mkdir(parents=True, exist_ok=True)
        directory = tempfile.mkdtemp(prefix="labcore-registry-", dir=paths.scratch_dir())
        self.scope.record("directory", directory, "rmtree", path=directory)
        return directory

    def wait_until_serving(self, seconds: float = READY_SECONDS) -> None:
        wait_until_ready(self.process, self.answers, f"docker-registry on {self.address}", seconds,
                         lambda: self.process.stderr.read().decode()[-500:] if self.process.poll() else "")

    def answers(self) -> bool:
        try:
            urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1).close()
            return True
        except OSError:
            return False
