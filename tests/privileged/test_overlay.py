"""overlayfs for real: each step's evidence read back from the layers, and nothing left mounted."""
import os
import stat

import pytest

from labcore import paths
from labcore.errors import LabError
from labcore.kernel import overlay
from labcore.lessons import union_fs
from labcore.kernel.journal import Scope, mounts_under
from labcore.lessons.evidence import Mode
from labcore.lessons.overlay_model import Dir, File, Symlink
from tests.conftest import has, privileged

pytestmark = privileged

TREE = {"etc": Dir(), "etc/os-release": File(b"NAME=labcore\n"), "etc/hostname": File(b"lower\n"),
        "var": Dir(), "var/cache": Dir(), "var/cache/a": File(b"a"), "var/cache/b": File(b"b"),
        "bin": Dir(), "bin/sh": Symlink("busybox")}


@pytest.fixture
def lower():
    with Scope() as scope:
        directory, _ = overlay.make_scratch_dir("lower", scope)
        union_fs.write_layer(directory, TREE)
        yield directory


@pytest.fixture
def mounted(lower):
    with union_fs.create_overlay([lower]) as handle:
        yield handle
    assert mounts_under(str(paths.scratch_dir())) == []
    assert not handle.upper.exists()


def test_a_read_is_served_from_the_lower_file_and_copies_nothing(mounted, lower):
    step = union_fs.read_from_lower(mounted, "etc/os-release")
    lower_stat = os.stat(lower / "etc/os-release")
    assert step.after["content"] == b"NAME=labcore\n"
    assert step.data["merged_ino"] == lower_stat.st_ino          # all layers on one fs: st_ino passes through
    assert step.data["merged_dev"] != lower_stat.st_dev           # ... but st_dev is the overlay's own
    assert os.listdir(mounted.upper) == []


def test_a_write_copies_up_and_leaves_the_lower_file_alone(mounted, lower):
    step = union_fs.write_copies_up(mounted, "etc/hostname", b"more\n")
    assert (mounted.upper / "etc/hostname").read_bytes() == b"lower\nmore\n"
    assert (lower / "etc/hostname").read_bytes() == b"lower\n"
    assert step.data["upper_size"] == 11 and step.data["lower_size"] == 6
    assert step.data["upper_ino"] != step.data["lower_ino"]
    assert step.before["upper"] == "absent" and step.before["lower"] == step.after["lower"]


def test_a_delete_leaves_a_whiteout(mounted, lower):
    step = union_fs.delete_leaves_whiteout(mounted, "etc/os-release")
    mark = os.lstat(mounted.upper / "etc/os-release")
    assert stat.S_ISCHR(mark.st_mode) and mark.st_rdev == 0 and step.data["whiteout"]
    assert not (mounted.merged / "etc/os-release").exists() and (lower / "etc/os-release").exists()


def test_a_replaced_directory_is_opaque(mounted):
    step = union_fs.replace_dir_makes_opaque(mounted, "var")
    assert os.getxattr(mounted.upper / "var", "trusted.overlay.opaque") == b"y" and step.data["opaque"]
    assert os.listdir(mounted.merged / "var") == []


def test_a_lower_directory_does_not_move_without_redirect_dir(mounted):
    with pytest.raises(OSError) as caught:
        os.rename(mounted.merged / "var", mounted.merged / "srv")
    assert caught.value.errno == 18                                  # EXDEV: mv would copy instead


def test_the_diagram_marks_copied_up_new_and_whited_out_paths(mounted):
    union_fs.write_copies_up(mounted, "etc/hostname")
    union_fs.delete_leaves_whiteout(mounted, "etc/os-release")
    (mounted.merged / "new").write_text("new\n")
    dot = union_fs.layer_stack_dot(mounted)
    assert '"L0:etc/hostname" [label="/etc/hostname", fillcolor="orange"]' in dot
    assert '"L0:new" [label="/new", fillcolor="palegreen"]' in dot
    assert '"L0:etc/os-release" -> "L1:etc/os-release"' in dot and '"M:bin/sh" -> "L1:bin/sh"' in dot
    if has("dot"):
        from labcore.lessons.diagrams import render_svg
        assert render_svg(dot).startswith("<svg")


def test_a_failed_mount_removes_what_it_made(lower):
    with Scope() as scope:
        base, _ = overlay.make_scratch_dir("bad", scope)
        (base / "upper").mkdir()
        with pytest.raises(LabError) as caught:       # workdir inside upperdir: the kernel refuses
            overlay.mount_overlay([lower], base / "upper", base / "upper/work", base / "merged", scope)
        assert caught.value.syscall.startswith("mount(") and "dmesg" in caught.value.fix
        assert not (base / "merged").exists() and len(scope.entries) == 1


def test_rootless_overlay_uses_user_xattrs(lower):
    step = union_fs.rootless_overlay([lower], "etc/hostname", "var")
    assert step.mode is Mode.USERNS, step.reason
    assert step.data["opaque"] and step.after["trusted.overlay.opaque"].startswith("(none")
    assert step.after["upper/etc/hostname"].startswith("char device 0/0 = whiteout")


def test_containers_share_the_lower_layer(tmp_path):
    with Scope() as scope:
        root = busybox_root(scope)
        step = union_fs.share_lower_layers(root, containers=10)
    print(step)
    assert step.data["upper_bytes"] * 5 < step.data["copy_bytes"]
    assert mounts_under(str(paths.scratch_dir())) == []


def busybox_root(scope):
    """The busybox image's root filesystem when labcore.image.oci can build it, else the small test tree."""
    directory, _ = overlay.make_scratch_dir("rootfs", scope)
    try:
        from labcore.image.baseimage import ensure_base_image
        from labcore.image.oci import Store
        Store().unpack(ensure_base_image(), directory)
    except (ImportError, LabError):
        union_fs.write_layer(directory, TREE)
    return directory
