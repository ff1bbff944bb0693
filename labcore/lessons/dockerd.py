"""The real Docker, started by the lab beside its own work: for tests, benchmarks and side-by-side cells.

`docker` is a client; `dockerd` is the daemon that does the work, and it starts a containerd of its own when
not given one (``--containerd``). The lab never uses the host's Docker, which may hold a student's images:
``Dockerd()`` starts a private one whose every file is under two ``labcore-dockerd-*`` directories,
as Docker itself splits /var/lib/docker from /run/docker:

    <state>/tmp/labcore-dockerd-X/data   --data-root: images, overlay2 layers, containers; data/containerd is
                                         the root of the containerd that dockerd starts (so no
                                         --containerd-namespace is needed: nothing else uses that one)
    /run/labcore-dockerd-X/exec          --exec-root: runtime state; exec/containerd holds its socket and pid
    /run/labcore-dockerd-X/docker.sock   -H: the Engine API that `docker` and the docker SDK speak
                                         (a Unix socket path may hold only 108 bytes, unix(7): hence /run)

No bridge and no iptables rules (``--bridge=none --iptables=false``): the lab leaves the host's network alone,
so containers run with ``--network none``. Their cgroups go under ``labcore-dockerd-X`` (``--cgroup-parent``).
The daemon, its containerd and every directory are journaled: ``labcore cleanup`` stops and removes them after
a crash. Two paths are compiled into this Docker and containerd, /run/docker/plugins and /run/containerd/s
(shim sockets); they are removed when they are empty and were not there before.
Next: ``labcore.image.archive`` moves images between this Docker and the lab's store.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from labcore import paths
from labcore.api.labd import ping
from labcore.errors import LabError, NotSupportedHere
from labcore.kernel import procfs
from labcore.kernel.journal import Scope, make_scratch, process_start_time
from labcore.kernel.process import wait_until_ready

COMPILED_IN = ("/run/docker/plugins", "/run/docker", "/run/containerd/s", "/run/containerd")


def dockerd_unavailable_reason() -> str | None:
    """Why a real Docker cannot be started here (for pytest's skip), or None when it can."""
    if os.geteuid() != 0:
        return "dockerd needs root here (rootless Docker is not set up): this is measured where you are root"
    for program, package in (("dockerd", "docker.io"), ("docker", "docker.io"), ("containerd", "containerd")):
        if not shutil.which(program):
            return f"{program} is not installed: apt-get install {package}"
    if "overlay" not in procfs.filesystems():
        return "the kernel has no overlay filesystem, which --storage-driver overlay2 needs: modprobe overlay"
    return None


class Dockerd:
    """``with Dockerd() as docker:`` → ``docker.cli("images")``, ``docker.client()``, ``docker.socket``."""

    def __init__(self, timeout: float = 60):
        self.timeout = timeout
        self.scope = Scope()
        self.directory = self.runtime = self.socket = ""
        self.process: subprocess.Popen | None = None
        self.existed = [path for path in COMPILED_IN if os.path.lexists(path)]

    def __enter__(self) -> "Dockerd":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        reason = dockerd_unavailable_reason()
        if reason:
            raise NotSupportedHere(f"cannot start dockerd: {reason}")
        self.make_directories()
        self.record_cgroup_parents()
        log = open(Path(self.directory, "dockerd.log"), "wb")
        with log:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.record_process(self.process.pid)
        self.wait_until_ready()
        # dockerd started its containerd before answering; record it too, so a crash leaves neither behind.
        self.record_process(int(Path(self.runtime, "exec", "containerd", "containerd.pid").read_text()))

    def make_directories(self) -> None:
        self.directory = make_scratch(self.scope, "labcore-dockerd-")      # named, journaled, made
        self.runtime = f"/run/{os.path.basename(self.directory)}"
        self.scope.record("directory", self.runtime, "rmtree", path=self.runtime)
        os.mkdir(self.runtime, 0o700)
        self.socket = f"{self.runtime}/docker.sock"
        # Its own configuration: the host's /etc/docker/daemon.json must not change this daemon, and
        # Docker 20.10 would otherwise write its identity key to /etc/docker/key.json.
        Path(self.directory, "daemon.json").write_text(json.dumps(
            {"deprecated-key-path": f"{self.directory}/key.json"}))

    def command(self) -> list[str]:
        return ["dockerd", "--config-file", f"{self.directory}/daemon.json",
                "--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver", "overlay2",
                "--data-root", f"{self.directory}/data", "--exec-root", f"{self.runtime}/exec",
                "--pidfile", f"{self.runtime}/dockerd.pid", "-H", f"unix://{self.socket}",
                "--cgroup-parent", os.path.basename(self.directory)]

    def record_cgroup_parents(self) -> None:
        """One rmdir per cgroup hierarchy, recorded before dockerd makes them (an absent one is done)."""
        for path in cgroup_parent_directories(os.path.basename(self.directory)):
            self.scope.record("cgroup", path, "rmdir_cgroup", path=path)

    def record_process(self, pid: int) -> None:
        self.scope.record("process", str(pid), "kill", pid=pid, start=process_start_time(pid))

    def wait_until_ready(self) -> None:
        """Until GET /_ping answers OK (the Engine API's liveness check), or dockerd exits."""
        wait_until_ready(self.process, lambda: ping(self.socket), f"dockerd on {self.socket}", self.timeout,
                         lambda: f"\n{self.log_tail()}\n(the whole log: {self.directory}/dockerd.log)")

    def log_tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(Path(self.directory, "dockerd.log").read_text().splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM first: dockerd stops its containers and its containerd, and unmounts their layers.
        Then the journal's undo kills whatever is left and removes the cgroups and directories."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        kill_processes_naming(self.runtime)
        failures = self.scope.close()
        if self.process:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)       # reap it: no zombie in a long-lived notebook kernel
        remove_compiled_in_directories(self.existed)
        if failures:
            raise LabError("could not undo: " + "; ".join(failures), fix="run `labcore cleanup`")

    # --- talking to it ------------------------------------------------------------------------------------

    def environment(self) -> dict:
        # DOCKER_CONFIG: the CLI's own files (contexts, credentials) stay here, not in ~/.docker.
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_CONFIG": f"{self.directory}/cli"}

    def cli(self, *args: str, text: bool = True, check: bool = True) -> subprocess.CompletedProcess:
        """Run the docker CLI against this daemon; a failure raises LabError with docker's own message."""
        result = subprocess.run(["docker", *args], env=self.environment(), capture_output=True, text=text)
        if check and result.returncode != 0:
            message = result.stderr if text else result.stderr.decode(errors="replace")
            raise LabError(f"docker {' '.join(args)} failed: {message.strip()}")
        return result

    def run(self, image: str, *command: str) -> str:
        """`docker run --rm --network none IMAGE COMMAND...`: its output. With --bridge=none there is no
        network to join, so every container of this daemon is started without one."""
        return self.cli("run", "--rm", "--network", "none", image, *command).stdout

    def client(self):
        """A docker SDK client for this daemon (imported here: the SDK is not needed anywhere else).
        version="auto" asks the daemon which API it speaks; Debian's Docker 20.10 speaks 1.41."""
        import docker
        return docker.DockerClient(base_url=f"unix://{self.socket}", version="auto")


def import_busybox(dockerd: Dockerd, store=None) -> str:
    """Make busybox:latest inside ``dockerd`` from the lab's own base image, offline: `labcore save`, then
    `docker load`. The same config bytes arrive, so Docker reports the same IMAGE ID; it is returned."""
    from labcore.image import archive
    from labcore.image.baseimage import ensure_base_image
    from labcore.image.oci import BASE_IMAGE
    image = ensure_base_image(store)
    with Scope() as scope:
        tar = os.path.join(archive.make_directory(scope, "labcore-busybox-"), "busybox.tar")
        archive.save([BASE_IMAGE], tar, store)
        dockerd.cli("load", "-i", tar)
    loaded = dockerd.cli("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()
    if loaded != image.id:
        raise LabError(f"docker load gave {loaded}, not the lab's {image.id}")
    return loaded


def kill_processes_naming(runtime: str) -> None:
    """SIGKILL what still names this daemon's runtime dir on its command line: containerd-shims. A shim is
    built to outlive containerd (so containers survive a daemon upgrade), so one whose daemon died first
    waits forever. The labcore-dockerd-* path in its arguments makes it ours, and no one else's."""
    if not os.path.basename(runtime).startswith(paths.PREFIX):
        return
    for pid in procfs.pids():
        with contextlib.suppress(OSError):
            if pid != os.getpid() and any(runtime in argument for argument in procfs.cmdline(pid)):
                os.kill(pid, signal.SIGKILL)


def cgroup_parent_directories(name: str) -> list[str]:
    """Where a relative --cgroup-parent NAME lands in each hierarchy: below the cgroup that dockerd starts
    in (runc joins a relative path to the caller's own cgroup), which is ours: /proc/self/cgroup, matched
    to each cgroup mount of /proc/self/mountinfo by its controllers (cgroups(7), proc(5))."""
    own = {frozenset(line.controllers): line.path for line in procfs.cgroups()}
    found = []
    for mount in procfs.mountinfo():
        if mount.fstype not in ("cgroup", "cgroup2"):
            continue
        wanted = set(mount.super_options.split(",")) if mount.fstype == "cgroup" else set()
        path = next((p for keys, p in own.items() if (keys <= wanted and keys) or keys == wanted), None)
        if path is not None:
            found.append(os.path.normpath(os.path.join(mount.point, os.path.relpath(path, mount.root), name)))
    return found


def remove_compiled_in_directories(existed: list[str]) -> None:
    # rmdir(2) removes only an empty directory: one that another Docker is using is never touched.
    for path in COMPILED_IN:
        if path not in existed:
            with contextlib.suppress(OSError):
                os.rmdir(path)
