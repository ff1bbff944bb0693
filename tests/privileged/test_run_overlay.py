"""Containers on an overlay of their image's cached layers, for real: writes stay in the container's upperdir,
containers share the lower directories, volumes are the host's files, and nothing is left mounted."""
import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from labcore import paths
from labcore.errors import BadInput
from labcore.image import layers
from labcore.kernel import journal
from labcore.lessons import union_fs
from labcore.runtime import container
from labcore.runtime.container import Spec
from tests.conftest import eventually, privileged
from tests.privileged.test_run import as_nobody, python_for_nobody

pytestmark = [privileged, pytest.mark.usefixtures("no_container_left")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def busybox_layer(busybox_image) -> Path:
    return layers.image_lowers(busybox_image)[0]


@pytest.fixture
def volume():
    with journal.Scope() as scope:
        paths.scratch_dir().mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix="labcore-volume-", dir=paths.scratch_dir()))
        scope.record("directory", str(directory), "rmtree", path=str(directory))
        yield directory


@contextlib.contextmanager
def running(*specs: Spec):
    """Containers started and left running for the block, then killed and removed."""
    with journal.Scope() as scope, contextlib.ExitStack() as stack:
        boxes = []
        for spec in specs:
            io = stack.enter_context(container.Stdio("capture"))
            box = container.create(spec, scope, io)
            stack.callback(container.stop_if_running, box)
            container.start(box)
            boxes.append(box)
        yield boxes


def test_a_container_writes_to_its_upperdir_and_never_to_the_images_layer(busybox_layer):
    before = {name: os.lstat(busybox_layer / name) for name in ("etc/passwd", "etc/group")}
    spec = Spec("busybox", ["sh", "-c", "echo intruder >> /etc/passwd; rm /etc/group; grep -c . /etc/passwd; "
                                        "ls /etc/group 2>&1; grep ' / ' /proc/self/mountinfo"], network="none")
    result = container.run(spec)
    out = result.stdout.decode()
    assert result.exit_code == 0 and out.startswith("3\n") and "No such file" in out
    assert " - overlay overlay " in out and f"{busybox_layer}," in out          # the cached layer is a lowerdir
    upper = paths.containers_dir() / spec.id / "upper"
    assert (upper / "etc/passwd").read_text().endswith("intruder\n")            # copy-up
    assert os.lstat(upper / "etc/group").st_rdev == 0                          # a whiteout
    for name, info in before.items():                                          # the image's files, untouched
        after = os.lstat(busybox_layer / name)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (info.st_ino, info.st_size, info.st_mtime_ns)
    assert "removed directory" in journal.cleanup()


def test_two_containers_share_the_lower_dirs_and_have_their_own_upperdirs(busybox_layer):
    sleep = ["sh", "-c", "echo $HOSTNAME > /mine; sleep 30"]
    with running(Spec("busybox", sleep, rm=True, network="none"),
                 Spec("busybox", sleep, rm=True, network="none")) as (one, two):
        assert eventually(lambda: all((box.directory / "upper/mine").exists() for box in (one, two)))
        options = [layers.mounted_root(box.pid) for box in (one, two)]
        lowers = [dict(o.partition("=")[::2] for o in text.split(","))["lowerdir"].split(":") for text in options]
        assert lowers[0][1:] == lowers[1][1:] == [str(busybox_layer)]         # the same image directory
        assert lowers[0][0] != lowers[1][0]                                    # each its own init layer
        assert (one.directory / "upper/mine").read_text() != (two.directory / "upper/mine").read_text()
        assert not (busybox_layer / "mine").exists()
        assert str(paths.home()) not in Path("/proc/self/mountinfo").read_text()   # in their namespaces


def test_a_volume_is_the_hosts_directory_and_outlives_the_container(volume):
    (volume / "from-host").write_text("host\n")
    spec = Spec("busybox", ["sh", "-c", "cat /data/from-host; echo kept > /data/kept; echo lost > /lost"],
                volumes=[f"{volume}:/data"], rm=True, network="none")
    result = container.run(spec)
    assert result.stdout == b"host\n" and result.exit_code == 0
    assert (volume / "kept").read_text() == "kept\n"                           # survived docker rm
    assert not (paths.containers_dir() / spec.id).exists()                     # the upperdir did not


def test_a_read_only_volume_refuses_writes_with_erofs(volume):
    result = container.run(Spec("busybox", ["sh", "-c", "cat /data/x; echo no > /data/x"],
                                volumes=[f"{volume}:/data:ro"], rm=True, network="none"))
    assert not (volume / "x").exists()
    assert b"Read-only file system" in result.stderr and result.exit_code != 0


def test_a_missing_host_path_is_refused_before_anything_exists():
    with pytest.raises(BadInput, match="bind source path does not exist"):
        container.run(Spec("busybox", ["true"], volumes=["/labcore-no-such-dir:/data"], rm=True))
    assert not paths.containers_dir().exists() or not any(paths.containers_dir().iterdir())


def test_the_diagram_of_a_running_container_marks_its_changes():
    script = "echo more >> /etc/passwd; rm /etc/group; touch /new; echo ready; sleep 30"
    with running(Spec("busybox", ["sh", "-c", script], rm=True, network="none")) as (box,):
        assert eventually(lambda: (box.directory / "upper/new").exists())
        dot = union_fs.container_diagram(box.spec.id).source
    assert '"L0:etc/passwd" [label="/etc/passwd", fillcolor="orange"]' in dot   # copied up
    assert '"L0:new" [label="/new", fillcolor="palegreen"]' in dot             # new
    assert "/etc/group (whiteout 0/0)" in dot and "init (/etc/hostname" in dot
    assert "/proc/" not in dot.replace(f"/proc/{box.pid}/root", "")             # other mounts not walked


def test_the_cli_mounts_a_volume_and_removes_the_container(volume):
    result = subprocess.run([os.sys.executable, "-m", "labcore", "run", "--rm", "--network", "none",
                             "-v", f"{volume}:/data", "busybox", "sh", "-c", "echo cli > /data/out"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert (volume / "out").read_text() == "cli\n"
    refused = subprocess.run([os.sys.executable, "-m", "labcore", "run", "-v", "data:/data", "busybox", "true"],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert refused.returncode == 125 and "HOST:CONTAINER[:ro]" in refused.stderr


def test_rootless_runs_on_an_overlay_with_userxattr_and_a_volume(nobody_home):
    python = python_for_nobody()
    home = nobody_home
    os.makedirs(f"{home}/vol")
    os.chown(f"{home}/vol", 65534, 65534)
    script = ("rm -r /usr; mkdir /usr; rm /etc/group; echo v > /v/out; cat /v/out; "
              "grep ' / ' /proc/self/mountinfo; touch /ro/x 2>&1")
    result = as_nobody(python, "-m", "labcore", "run", "--rm", "-v", f"{home}/vol:/v", "-v", f"{home}:/ro:ro",
                       "busybox", "sh", "-c", script, env={"LABCORE_HOME": f"{home}/home"})
    assert result.returncode == 1, result.stderr                          # touch on :ro failed, last
    assert result.stdout.startswith("v\n") and "userxattr" in result.stdout
    assert "Read-only file system" in result.stdout
    assert not os.listdir(f"{home}/home/containers") and not os.listdir(f"{home}/home/journal")
