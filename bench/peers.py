"""How each row runs: one function per peer, which prepares what it needs and returns a function doing one run.

All rows share one ``Workspace``: the lab's busybox image unpacked once into ``labcore-bench-<hex>/rootfs``,
an OCI bundle on that same directory for runc and crun, their ``--root`` state dirs, and the daemons. The
directory and every process the bench starts are recorded in the journal the moment they exist, so a crash
leaves nothing that `labcore cleanup` cannot remove. A peer that cannot run here raises ``Missing`` with the
reason (the tool's own error where there is one): it is reported, never dropped.
"""
from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from labcore import paths
from labcore.kernel import journal

VENV_BIN = Path(sys.executable).parent          # the .venv's python and its `labcore` console script
# The package under test is this checkout's (a worktree's, too), not the one the .venv's path entry names: its
# processes get it first on their path, compiled ahead as `./lab` compiles it (PYTHONDONTWRITEBYTECODE is set
# on the lab's machines, and a module compiled at every start would be timed as well).
CHECKOUT = Path(__file__).resolve().parents[1]


def labcore_environment(**extra) -> dict:
    """The environment of a `labcore` process the bench starts: this checkout's package, byte-compiled."""
    import compileall
    compileall.compile_dir(str(CHECKOUT / "labcore"), quiet=1)
    path = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


class Missing(Exception):
    """This peer cannot run on this machine; the message says why."""


class Workspace:
    """What the rows share, made once, under one journaled ``labcore-bench-<hex>`` directory."""

    def __init__(self, scope: journal.Scope, stack: ExitStack):
        from labcore.image import baseimage, oci
        self.scope, self.stack = scope, stack
        self.dir = paths.scratch_dir() / f"{paths.PREFIX}-bench-{secrets.token_hex(4)}"
        self.dir.mkdir(parents=True)
        scope.record("directory", str(self.dir), "rmtree", path=str(self.dir))
        self.rootfs = self.dir / "rootfs"
        oci.Store().unpack(baseimage.ensure_base_image(), self.rootfs)
        self.bundle = write_bundle(self.dir / "bundle", self.rootfs)
        self._runs = itertools.count()
        self.made = [self.dir]          # directories (and cgroup names) that must be gone afterwards

    def unique(self, peer: str) -> str:
        """A fresh labcore- container id: runc and crun refuse an id whose state dir still exists."""
        return f"{paths.PREFIX}-bench-{peer}-{next(self._runs)}"

    def state_dir(self, runtime: str) -> Path:
        path = self.dir / f"{runtime}-state"
        path.mkdir(exist_ok=True)
        return path

    def start_process(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        """A background process, journaled at once, stopped (SIGTERM, then SIGKILL) when the bench ends."""
        log = open(self.dir / f"{name}.log", "wb")
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        owner = journal.owner_of(process.pid)
        self.scope.record("process", str(process.pid), "kill", pid=process.pid, start=owner["start"])
        self.stack.callback(stop_process, process, log)
        return process


def write_bundle(bundle: Path, rootfs: Path) -> Path:
    """An OCI bundle: `runc spec`'s config.json with args ["/bin/true"], no terminal, a writable root.
    Its default namespaces already include the network namespace (and pid, ipc, uts, mount)."""
    need("runc", "runc")
    bundle.mkdir()
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(rootfs), "readonly": False}
    config["process"].update(terminal=False, args=["/bin/true"])
    assert any(ns["type"] == "network" for ns in config["linux"]["namespaces"])
    (bundle / "config.json").write_text(json.dumps(config, indent=1))
    return bundle


def stop_process(process: subprocess.Popen, log) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise Missing(f"{tool} is not installed (apt-get install {package})")
    return path


def command(argv_for: Callable[[], list[str]], env: dict | None = None) -> Callable[[], None]:
    """One run = one process to its exit, stdio as for every row: stdin /dev/null, output to pipes."""
    def once() -> None:
        argv = argv_for()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env)
        if done.returncode != 0:
            error = (done.stderr or done.stdout).decode(errors="replace").strip() or "(no output)"
            raise Missing(f"`{' '.join(argv)}` exited {done.returncode}: {error[-400:]}")
    return once


# --- the rows -------------------------------------------------------------------------------------------

def plain_true(ws: Workspace) -> Callable[[], None]:
    return command(lambda: ["/bin/true"])


def python_pass(ws: Workspace) -> Callable[[], None]:
    return command(lambda: [str(VENV_BIN / "python3"), "-c", "pass"])


def unshare_chroot(ws: Workspace) -> Callable[[], None]:
    need("unshare", "util-linux")
    argv = ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "chroot", str(ws.rootfs),
            "/bin/true"]
    return command(lambda: argv)


def bubblewrap(ws: Workspace) -> Callable[[], None]:
    need("bwrap", "bubblewrap")
    argv = ["bwrap", "--unshare-all", "--bind", str(ws.rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "/bin/true"]
    return command(lambda: argv)


# crun 1.8 refuses a hybrid host ("cgroups in hybrid mode not supported, drop all controllers from
# cgroupv2"): it sees the cgroup2 mount at /sys/fs/cgroup/unified. Each run there therefore starts in a private
# mount namespace of its own where that mount is gone; the host's mount table is untouched. A v1-only or v2
# host needs no wrapper.
UNIFIED = "/sys/fs/cgroup/unified"
HIDE_UNIFIED = ["unshare", "--mount", "sh", "-c", f'umount {UNIFIED} && exec "$0" "$@"']


def crun_wrapper_argv() -> list[str]:
    """HIDE_UNIFIED on a hybrid host, nothing elsewhere."""
    return HIDE_UNIFIED if os.path.ismount(UNIFIED) else []


def crun_wrapper(ws: Workspace) -> Callable[[], None]:
    """The wrapper alone, so that its share of crun's time can be read off."""
    need("unshare", "util-linux")
    wrapper = crun_wrapper_argv()
    if not wrapper:
        raise Missing(f"no wrapper on this host: crun runs as it is (no hybrid cgroup2 mount at {UNIFIED})")
    return command(lambda: wrapper + ["/bin/true"])


def crun(ws: Workspace) -> Callable[[], None]:
    need("crun", "crun")
    state = ws.state_dir("crun")
    wrapper = crun_wrapper_argv()
    return command(lambda: wrapper + ["crun", "--root", str(state), "run", "--bundle", str(ws.bundle),
                                      ws.unique("crun")])


def runc(ws: Workspace) -> Callable[[], None]:
    need("runc", "runc")
    state = ws.state_dir("runc")
    return command(lambda: ["runc", "--root", str(state), "run", "--bundle", str(ws.bundle), ws.unique("runc")])


def docker_run(ws: Workspace) -> Callable[[], None]:
    """Debian's docker CLI (the one of the daemon's package, not another `docker` earlier on PATH)."""
    dockerd = start_dockerd(ws.stack)
    ws.made += [Path(dockerd.directory), Path(dockerd.runtime)]
    argv = [docker_cli(), "run", "--rm", "--network", "none", "busybox", "/bin/true"]
    return command(lambda: argv, env=dockerd.environment())


def docker_cli() -> str:
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else need("docker", "docker.io")


def labcore_cli(ws: Workspace) -> Callable[[], None]:
    labcore = VENV_BIN / "labcore"
    if not labcore.exists():
        raise Missing(f"{labcore} does not exist: run ./lab test once to install the package into .venv")
    from labcore.api import client
    if client.local_daemon():
        raise Missing(f"a labd answers on {client.local_daemon()}: this row is `labcore run` without one")
    return command(lambda: [str(labcore), "run", "--rm", "--network", "none", "busybox", "/bin/true"],
                   env=labcore_environment())


def labcore_cli_labd(ws: Workspace) -> Callable[[], None]:
    """`labcore run` where the user's labd answers on its default socket: a state dir of the bench's own
    (LABCORE_HOME), so that row (g) and every other user of the lab's state dir still run without a daemon."""
    labcore = VENV_BIN / "labcore"
    env = labcore_environment(LABCORE_HOME=str(ws.dir / "home"))
    process = ws.start_process("labd-home", [str(labcore), "daemon"], env=env)
    wait_for_socket(ws.dir / "home" / "labd.sock", process, ws.dir / "labd-home.log", "labd (`labcore daemon`)")
    return command(lambda: [str(labcore), "run", "--rm", "--network", "none", "busybox", "/bin/true"], env=env)


def labcore_api(ws: Workspace) -> Callable[[], None]:
    """As a notebook cell does: a warm Python process calls the package; timed in-process."""
    from labcore.runtime import container

    def once() -> None:
        spec = container.Spec("busybox", ["/bin/true"], rm=True, network="none")
        result = container.run(spec, stdio="capture")
        if result.exit_code != 0:
            raise Missing(f"container.run exited {result.exit_code}: {result}")
    return once


def labd_sdk(ws: Workspace) -> Callable[[], None]:
    """The docker SDK, unmodified, against labd on a socket of the bench's own."""
    import docker
    sock = ws.dir / f"{paths.PREFIX}-labd.sock"
    process = ws.start_process("labd", [str(VENV_BIN / "labcore"), "daemon", "--socket", str(sock)],
                               env=labcore_environment())
    wait_for_socket(sock, process, ws.dir / "labd.log", "labd (`labcore daemon`)")
    client = docker.DockerClient(base_url=f"unix://{sock}", timeout=60)
    ws.stack.callback(client.close)
    failed: list[str] = []
    ws.stack.callback(remove_containers, client, failed)      # runs first: the stack unwinds backwards

    def once() -> None:
        # Named, so that a run whose start failed (the SDK then leaves it created, as with Docker) is found.
        name = ws.unique("sdk")
        try:
            client.containers.run("busybox", "/bin/true", remove=True, network_mode="none", name=name)
        except Exception:
            failed.append(name)
            raise
    return once


def remove_containers(client, names: list[str]) -> None:
    import docker
    for name in names:
        try:
            client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass


def wait_for_socket(sock: Path, process: subprocess.Popen, log: Path, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Missing(f"{what} exited {process.returncode}: {log.read_text(errors='replace').strip()[-400:]}")
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(sock))
            return
        except OSError:
            time.sleep(0.05)
    raise Missing(f"{what} did not listen on {sock} within {timeout:.0f} s")


def start_dockerd(stack: ExitStack):
    """Debian's dockerd with its own data-root and socket, busybox imported offline (labcore.lessons.dockerd)."""
    try:
        from labcore.lessons import dockerd as module
    except ImportError as err:
        raise Missing(f"labcore.lessons.dockerd is not there yet ({err})") from err
    reason = module.dockerd_unavailable_reason()
    if reason:
        raise Missing(reason)
    daemon = stack.enter_context(module.Dockerd())
    module.import_busybox(daemon)
    return daemon


# --- facts for the report ---------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    found = {"kernel": os.uname().release, "cpus": str(os.cpu_count()), "python": sys.version.split()[0]}
    for tool in ("runc", "crun", "bwrap", "dockerd", docker_cli(), "unshare"):
        if shutil.which(tool):
            done = subprocess.run([tool, "--version"], capture_output=True, text=True)
            found[tool] = (done.stdout or done.stderr).splitlines()[0].strip() if done.returncode == 0 else "?"
    return found


def leftovers(made: list[Path], containers_before: set[str]) -> list[str]:
    """What the bench might have leaked: mounts, cgroups, its directories, processes, containers, records."""
    names = [f"{paths.PREFIX}-bench"] + [path.name for path in made]
    found = [f"mount {m}" for m in journal.mounts_under("/") if any(name in m for name in names)]
    found += [f"cgroup {c}" for name in names for c in Path("/sys/fs/cgroup").glob(f"*/**/{name}*")]
    found += [f"directory {path}" for path in made if path.exists()]
    import psutil
    found += [f"process {p.pid} {p.name()}" for p in psutil.Process().children(recursive=True)]
    containers = paths.containers_dir()
    now = {p.name for p in containers.iterdir()} if containers.is_dir() else set()
    found += [f"container dir {containers / name} (the bench's, or another user's of this state dir)"
              for name in sorted(now - containers_before)]
    found += [f"journal {e.describe()}" for e in journal.Journal().entries() if any(n in e.name for n in names)]
    return found
