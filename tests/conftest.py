"""Test groups: unit (no root, fakes), privileged (real kernel; skipped with the reason when not root),
and the notebooks (run by nbval from `./lab test`).

Every test runs with its own LABCORE_HOME, so its journal, images and containers are its own, and checks
afterwards that its journal is empty: a test that leaks a kernel object fails even when its assertions pass.
"""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from labcore.kernel.journal import Journal, undo_rmtree

ROOT_REASON = ("needs root to call the kernel for real (running as uid %d); run `sudo ./lab test`, "
               "or see `labcore doctor` for what this user may do" % os.geteuid())
privileged = pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_REASON)
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]    # run what follows as user nobody


def labcore(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """The `labcore` command, in a process of its own, as a user types it; with ``check``, it must succeed."""
    done = subprocess.run([sys.executable, "-m", "labcore", *argv], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def eventually(condition, seconds: float = 5.0) -> bool:
    """Whether ``condition()`` comes true within ``seconds``: for what the kernel or a daemon does a moment later
    (an exit, a removal). A deadline for the test to give up, not a timing that is asserted."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="session")
def shared_images(tmp_path_factory):
    """One image store for the whole run: building the busybox image once is enough."""
    return tmp_path_factory.mktemp("labcore-images")


@pytest.fixture(scope="module")
def engines_home(tmp_path_factory, shared_images):
    """One state directory for a module's daemons (starting dockerd per test would take minutes); it must be
    empty of journal entries when they have stopped."""
    home = tmp_path_factory.mktemp("labcore-engines")
    os.symlink(shared_images, home / "images")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LABCORE_HOME", str(home))
        yield home
        left = Journal(home / "journal").entries()
        Journal(home / "journal").undo_all()
        assert not left, "the engines left: " + ", ".join(entry.describe() for entry in left)


@pytest.fixture(autouse=True)
def signal_handlers():
    """Each test gets the signal handlers it found: `labcore.cli.main`, called in-process, installs its exit on
    SIGTERM and SIGHUP for good, and a child a later test forks would inherit it (its SystemExit once ran the
    rest of the session in a forked stand-in pid 1)."""
    import signal
    kept = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    yield
    for number, handler in kept.items():
        if signal.getsignal(number) is not handler and handler is not None:
            signal.signal(number, handler)


@pytest.fixture(autouse=True)
def labcore_home(tmp_path, monkeypatch, shared_images):
    home = tmp_path / "labcore-home"
    home.mkdir()
    os.symlink(shared_images, home / "images")
    monkeypatch.setenv("LABCORE_HOME", str(home))
    yield home
    from labcore.runtime import engine
    engine.dismiss_monitor()            # the containers' monitor leaves by itself once idle: now, not in a moment
    journal = Journal(home / "journal")
    left = journal.entries()
    undone, failures = journal.undo_all()
    assert not failures, f"could not undo: {failures}"
    assert not left, "test left objects behind: " + ", ".join(e.describe() for e in left)


@pytest.fixture
def fake_tree_scope():
    """A scope over a fake cgroupfs tree: its records are dropped, not undone, afterwards (rmdir cannot remove
    a fake tree's plain files; the tree goes with tmp_path)."""
    from labcore.kernel.journal import Scope
    scope = Scope()
    yield scope
    for entry in scope.release():
        scope.journal.forget(entry)


@pytest.fixture
def nobody_home():
    """A directory user nobody owns, for a rootless run's LABCORE_HOME (nobody cannot enter root's pytest
    tmp_path); removed afterwards by undo_rmtree, which detaches any mount left below it first."""
    if not has("setpriv"):
        pytest.skip("needs setpriv (util-linux) to run as user nobody")
    home = tempfile.mkdtemp(prefix="labcore-nobody-")
    os.chown(home, 65534, 65534)
    os.chmod(home, 0o755)
    yield home
    undo_rmtree(home)


@pytest.fixture
def no_container_left(busybox_image):
    """After a test that runs containers: none of its mounts, container directories or child processes."""
    from pathlib import Path
    from labcore import paths
    yield
    assert str(paths.home()) not in Path("/proc/self/mountinfo").read_text()    # no mount of this test's
    containers = paths.containers_dir()
    assert not containers.exists() or not any(containers.iterdir()), "a container directory was left"
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert not children, f"child processes left running: {children}"


@pytest.fixture
def busybox_image():
    """The base image, built into the shared store the first time a test asks for it."""
    from labcore.image.baseimage import ensure_base_image
    return ensure_base_image()


def has(program: str) -> bool:
    return shutil.which(program) is not None


@contextlib.contextmanager
def dockerd_with_busybox():
    """Debian's dockerd started for the test (labcore.lessons.dockerd), with the lab's busybox loaded; a skip naming why
    when it cannot be."""
    from labcore.errors import LabError
    from labcore.lessons.dockerd import Dockerd, dockerd_unavailable_reason, import_busybox
    reason = dockerd_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with Dockerd() as dockerd:
        try:
            import_busybox(dockerd)
        except LabError as err:
            pytest.skip(f"dockerd cannot load busybox: {err}")
        yield dockerd
