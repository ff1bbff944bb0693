"""Containers on the real kernel: pid 1, its own hostname and mounts, exit codes, and nothing left behind."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labcore import paths
from labcore.errors import LabError
from labcore.kernel import journal
from labcore.runtime import container
from labcore.runtime.container import Spec
from tests.conftest import NOBODY, eventually, privileged

pytestmark = [privileged, pytest.mark.usefixtures("no_container_left")]
ROOT = Path(__file__).resolve().parents[2]


def sh(script: str, **options) -> container.Result:
    return container.run(Spec("busybox", ["sh", "-c", script], rm=True, **options))


def test_the_command_is_pid_1_on_the_images_root():
    result = sh("echo $$; read -r name < /proc/1/comm; echo $name; ls /")
    pid, name, *names = result.stdout.decode().split()
    assert (pid, name) == ("1", "sh") and "bin" in names and "boot" not in names


def test_hostname_changes_inside_only():
    result = sh("hostname; cat /etc/hostname", hostname="box1")
    assert result.stdout == b"box1\nbox1\n"
    assert os.uname().nodename != "box1"


def test_default_hostname_is_the_first_12_hex_of_the_id():
    spec = Spec("busybox", ["hostname"], rm=True)
    assert container.run(spec).stdout.decode().strip() == spec.id[:12]


def test_exit_code_is_the_commands():
    assert sh("exit 42").exit_code == 42


def test_pid_1_ignores_signals_it_has_no_handler_for():
    assert sh("kill -TERM $$; kill -KILL $$; echo still alive").stdout == b"still alive\n"
    assert sh("trap 'exit 3' TERM; kill -TERM $$; sleep 5").exit_code == 3


def test_a_mount_inside_is_absent_from_the_hosts_mount_table_and_sigkill_gives_137():
    # Mounting needs CAP_SYS_ADMIN, which Docker's default set leaves out: --cap-add SYS_ADMIN, as with docker run.
    spec = Spec("busybox", ["sh", "-c", "mount -t tmpfs labcore-probe /tmp && sleep 100"], rm=True,
                cap_add=["SYS_ADMIN"])
    with journal.Scope() as scope, container.Stdio("capture") as io:
        box = container.create(spec, scope, io)
        try:
            container.start(box)
            inside = eventually(lambda: "labcore-probe" in Path(f"/proc/{box.pid}/mountinfo").read_text())
            assert inside and "labcore-probe" not in Path("/proc/self/mountinfo").read_text()
            container.kill(box, signal.SIGTERM)             # no handler: pid 1 ignores it, even from the host
            time.sleep(0.2)
            assert Path(f"/proc/{box.pid}").exists()
            container.kill(box, signal.SIGKILL)
            io.pump()
            assert container.wait(box) == 137
        finally:
            container.stop_if_running(box)
    assert not box.directory.exists()


def test_environment_user_and_working_directory_as_docker_sets_them():
    result = sh("id -u; id -g; pwd; echo $FOO $HOSTNAME", user="1000:100", workdir="/work",
                env=["FOO=bar"], hostname="box1")
    assert result.stdout == b"1000\n100\n/work\nbar box1\n"


def test_dev_proc_and_sys_are_the_containers_own():
    result = sh("ls /dev; grep -c . /proc/self/mountinfo; touch /sys/x 2>&1; echo x > /dev/null; "
                "head -c 3 /dev/zero | wc -c")
    out = result.stdout.decode()
    for name in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "fd", "ptmx"):
        assert f"{name}\n" in out
    assert "Read-only file system" in out and out.endswith("3\n")


def test_without_rm_the_stopped_container_stays_until_cleanup():
    spec = Spec("busybox", ["true"])
    assert container.run(spec).exit_code == 0
    state = (paths.containers_dir() / spec.id / "state.json").read_text()
    assert '"state": "exited"' in state
    assert "removed directory" in journal.cleanup()
    assert not (paths.containers_dir() / spec.id).exists()


def test_cli_run_prints_pid_1_hostname_and_the_images_root():
    result = labcore("run", "--rm", "--hostname", "box1", "busybox", "sh", "-c", "echo $$; hostname; ls /")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[:2] == ["1", "box1"] and "bin" in lines
    assert labcore("run", "--rm", "busybox", "sh", "-c", "exit 42").returncode == 42
    assert labcore("run", "--rm", "busybox", "nosuchcommand").returncode == 127


def test_rootless_as_nobody_runs_as_root_inside(nobody_home):
    python = python_for_nobody()
    result = as_nobody(python, "-m", "labcore", "run", "--rm", "busybox", "sh", "-c", "id; echo $$",
                       env={"LABCORE_HOME": f"{nobody_home}/home"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "uid=0(root) gid=0(root)\n1\n"
    assert not os.listdir(f"{nobody_home}/home/containers") and not os.listdir(f"{nobody_home}/home/journal")


def labcore(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labcore", *argv], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, stdin=subprocess.DEVNULL)


def as_nobody(*argv: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *argv],
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd="/", capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def python_for_nobody() -> str:
    """A Python that user nobody may execute: the venv's may live under a private directory (/root)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        check = "import sys; sys.exit(sys.version_info < (3, 10))"
        if os.path.exists(candidate) and as_nobody(candidate, "-c", check, env={}).returncode == 0:
            return candidate
    pytest.skip("no Python that user nobody may execute (the venv's lives under a private directory)")


def test_the_caller_reaps_pid_1_itself_and_keeps_no_shim():
    """The shim leaves once pid 1 is forked; this process, a child subreaper for that moment, adopts pid 1 and
    reaps it (prctl(2)), and is a subreaper no longer afterwards (labd's monitors must still go to init)."""
    with journal.Scope() as scope, container.Stdio("capture") as io:
        box = container.create(Spec("busybox", ["sleep", "30"], rm=True, network="none"), scope, io)
        try:
            container.start(box)
            status = Path(f"/proc/{box.pid}/status").read_text()
            assert f"PPid:\t{os.getpid()}\n" in status                   # adopted: its parent is this process
            assert not Path(f"/proc/{box.shim.pid}").exists()             # the shim is gone, and reaped
            container.kill(box, signal.SIGKILL)
            assert container.wait(box) == 128 + signal.SIGKILL            # read by this process's waitpid
        finally:
            container.stop_if_running(box)
    import ctypes
    flag = ctypes.c_int(-1)
    ctypes.CDLL(None, use_errno=True).prctl(37, ctypes.byref(flag), 0, 0, 0)    # PR_GET_CHILD_SUBREAPER
    assert flag.value == 0


def test_a_run_writes_its_record_when_it_starts_and_when_it_exits_only_if_kept(monkeypatch):
    """`ps` reads state.json while the command runs; a --rm run's directory goes at the exit, so no exit record
    is written into it; without --rm the exit is recorded for `ps -a`. Never a "created" one: run starts at once."""
    import json
    seen = []
    real = container.save_state

    def spy(box):
        real(box)
        seen.append(json.loads((paths.containers_dir() / box.spec.id / "state.json").read_text())["state"])
    monkeypatch.setattr(container, "save_state", spy)
    assert sh("true").exit_code == 0
    assert seen == ["running"]
    seen.clear()
    spec = Spec("busybox", ["true"], network="none")
    assert container.run(spec).exit_code == 0
    assert seen == ["running", "exited"]
    assert "removed directory" in journal.cleanup()


def test_pid_1_starts_with_no_signal_ignored_or_blocked_whatever_the_caller_ignores():
    """execve(2) keeps ignored signals ignored and the mask: pid 1 resets every one before it (Python itself
    ignores SIGPIPE and SIGXFSZ)."""
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        status = container.run(Spec("busybox", ["cat", "/proc/self/status"], rm=True, network="none")).stdout.decode()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert "SigIgn:\t0000000000000000\n" in status and "SigBlk:\t0000000000000000\n" in status


@pytest.mark.parametrize("step", ["move", "record"])
def test_a_start_that_fails_while_the_shim_is_being_moved_leaves_nothing(monkeypatch, step):
    """The move into the cgroup runs in a thread (labcore.kernel.cgroups.Move), in the shim on v1
    (move_oneself), or is pid 1's birth in its group on v2 (clone3 in the shim). A failure beside it, or in
    it, undoes the start: no zombie shim, no pid 1, no cgroup, no directory (the fixture checks the first and
    last)."""
    from labcore.kernel import cgroups, syscalls
    if step == "move":
        real_write = cgroups.write

        def write(path, value):
            if path.name in ("cgroup.procs", "tasks"):        # tasks: the shim's own move, in the fork
                raise LabError("refused for the test", path=str(path))
            real_write(path, value)

        def clone_into_cgroup(cgroup_fd):                     # v2: in the shim, as it forks pid 1
            raise LabError("refused for the test", syscall="clone3(CLONE_INTO_CGROUP)")
        monkeypatch.setattr(cgroups, "write", write)
        monkeypatch.setattr(syscalls, "clone_into_cgroup", clone_into_cgroup)
    else:
        def record_process(scope, pid):
            raise LabError("refused for the test")
        monkeypatch.setattr(container, "record_process", record_process)
    spec = container.Spec("busybox", ["true"], rm=True, network="none")
    with pytest.raises(LabError, match="refused for the test"):
        container.run(spec)
    assert not list(Path("/sys/fs/cgroup").glob(f"*/labcore/labcore-{spec.id}"))
    assert journal.Journal().entries() == []
