"""`labcore run` with this user's labd running: the container runs in labd, on the client's own stdout and stderr."""
import contextlib
import signal
import subprocess
import sys

import psutil
import pytest

from labcore import paths
from labcore.api.labd import Labd
from tests.conftest import eventually, labcore, privileged

pytestmark = privileged


@pytest.fixture
def labd(busybox_image):
    """This user's labd, on its default socket in the test's state dir: where `labcore run` looks for it."""
    with Labd(str(paths.home() / "labd.sock")) as daemon:
        yield daemon


def commands_of_children(pid: int) -> list[str]:
    found = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):        # a shim that has just exited, not yet reaped: a zombie
            found.append(" ".join(child.cmdline()))
    return found


def ctrl_c_at_its_default() -> None:
    """As a terminal's shell starts a command. A test run started in the background by a shell without job
    control (`./lab test &` in a script, nohup) has SIGINT ignored, and a child inherits that through execve
    (signal(7)); Python then installs no KeyboardInterrupt handler, and the client would sleep through Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_container_runs_in_labd_and_writes_to_the_clients_own_stdout_and_stderr(labd):
    client = subprocess.Popen([sys.executable, "-m", "labcore", "run", "--rm", "--network", "none", "busybox",
                               "sh", "-c", "echo out; echo err >&2; exec sleep 30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=ctrl_c_at_its_default)
    try:
        # pid 1 is labd's child (its thread forked the shim, and labd adopted pid 1), not the client's.
        assert eventually(lambda: "sleep 30" in commands_of_children(labd.process.pid), seconds=20)
        assert not psutil.Process(client.pid).children()
        client.send_signal(signal.SIGINT)              # Ctrl-C: the client hangs up, labd kills the container
        out, err = client.communicate(timeout=20)
    finally:
        client.kill()
    assert (client.returncode, out, err) == (130, "out\n", "err\n")
    assert eventually(lambda: "sleep 30" not in commands_of_children(labd.process.pid))
    containers = paths.containers_dir()
    assert eventually(lambda: not containers.exists() or not any(containers.iterdir()))


def test_exit_codes_and_errors_are_those_of_labcore_run_without_a_daemon(labd):
    done = labcore("run", "--rm", "--network", "none", "busybox", "sh", "-c", "exit 3", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (3, "", "")
    missing = labcore("run", "--rm", "--network", "none", "busybox", "nosuch", check=False)
    assert missing.returncode == 127 and missing.stderr.startswith("labcore: execve on nosuch failed")
    no_image = labcore("run", "--rm", "nosuchimage", check=False)
    assert no_image.returncode == 125 and no_image.stderr.startswith("labcore: No such image: nosuchimage")
    bad = labcore("run", "--rm", "--bogus", "busybox", check=False)
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr     # said by the client


def test_much_output_through_a_pipe_arrives_whole_and_in_order(labd):
    done = labcore("run", "--rm", "--network", "none", "busybox", "seq", "1", "50000")
    assert done.stdout.split() == [str(n) for n in range(1, 50001)]


def test_a_value_from_the_clients_environment_runs_in_the_client(labd, monkeypatch):
    monkeypatch.setenv("LABCORE_TEST_VALUE", "from the client")
    done = labcore("run", "--rm", "--network", "none", "-e", "LABCORE_TEST_VALUE", "busybox", "sh", "-c",
                   "echo $LABCORE_TEST_VALUE")
    assert done.stdout == "from the client\n"           # labd, started before it was set, has no such value


def test_labd_stopping_kills_the_runs_it_was_handed_and_leaves_nothing(busybox_image):
    with Labd(str(paths.home() / "labd.sock")) as labd:
        client = subprocess.Popen([sys.executable, "-m", "labcore", "run", "--rm", "--network", "none", "busybox",
                                   "sleep", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert eventually(lambda: "sleep 30" in commands_of_children(labd.process.pid), seconds=20)
            labd.stop()                                # SIGTERM, as a service manager stops it
            _, err = client.communicate(timeout=20)
        finally:
            client.kill()
        assert labd.process.returncode is not None
    assert client.returncode == 137, err               # SIGKILL'd, as `docker run` reports it
    containers = paths.containers_dir()
    assert not containers.exists() or not any(containers.iterdir())
