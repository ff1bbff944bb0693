"""labcore.lessons.root_fs (notebook 06) on the real kernel: chroot, the escape that works from a chroot, and fails
after pivot_root."""
import os
from pathlib import Path

import pytest

from labcore import paths
from labcore.kernel import journal
from labcore.lessons import root_fs
from labcore.lessons.evidence import Mode
from tests.conftest import privileged

pytestmark = privileged


@pytest.fixture
def image_root(busybox_image):
    with journal.Scope() as scope:
        yield root_fs.unpack(busybox_image, paths.scratch_dir() / "labcore-rootfs-test", scope)
    assert not (paths.scratch_dir() / "labcore-rootfs-test").exists()


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    assert str(paths.home()) not in Path("/proc/self/mountinfo").read_text()    # no mount of this test's
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert not children, f"child processes left running: {children}"


def test_the_image_is_a_directory_without_the_hosts_files(image_root):
    step = root_fs.look_inside(image_root)
    assert step.before["/ is"] == root_fs.HOST_ROOT and step.after["/ is"] == root_fs.IMAGE_ROOT
    assert "bin" in step.after["ls /"] and step.after["/etc/os-release"] == "absent"
    assert step.before["/etc/os-release"] != "absent"


def test_chroot_moves_slash_to_the_image(image_root):
    step = root_fs.chroot_into(image_root)
    assert step.mode is Mode.ROOT and step.data["inside"]


def test_escape_succeeds_from_a_chroot(image_root):
    step = root_fs.escape_chroot(image_root)
    assert step.before["/ is"] == root_fs.IMAGE_ROOT
    assert step.after["/ is"] == root_fs.HOST_ROOT and step.data["escaped"]
    assert step.after["/etc/os-release"] != "absent"           # it reads the host's os-release
    assert not (image_root / root_fs.ESCAPE_DIR).exists()


def test_escape_fails_after_pivot_root(image_root):
    step = root_fs.escape_pivot_root(image_root)
    assert step.before["/ is"] == step.after["/ is"] == root_fs.IMAGE_ROOT
    assert not step.data["escaped"] and step.after["/etc/os-release"] == "absent"


def test_both_escapes_side_by_side(image_root):
    step = root_fs.compare_escapes(image_root)
    assert step.data == {"escaped_chroot": True, "escaped_pivot_root": False}
    assert step.before["/ is"] == root_fs.HOST_ROOT and step.after["/ is"] == root_fs.IMAGE_ROOT


def test_mountinfo_after_chroot_hides_the_mounts_and_after_pivot_root_one_is_left(image_root):
    step = root_fs.mount_trees(image_root)
    assert step.data["shown_after_chroot"] == 0 and len(step.data["host"]) >= 2
    # the host's, copied (other processes may mount meanwhile: no count), and the bind of the image's root
    assert [line.split()[4] for line in step.data["unshared"]].count(str(image_root)) == 1
    assert step.data["mounts_after_pivot_root"] == 1 and step.data["old_root_gone"]
    assert step.data["pivoted"][0].split()[4] == "/" and str(image_root) in step.data["pivoted"][0]
    assert step.after["mountinfo after pivot_root"].rows[0][0] == "/"
    assert '"pivot:marker"' in step.data["dot"] and "gone: umount2(MNT_DETACH)" in step.data["dot"]
