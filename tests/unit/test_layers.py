"""The layer cache without root: OCI whiteouts become overlayfs's on the way in and OCI's again on the way out
(on fake trees, with user.* xattrs as a rootless user writes them), the container's mount order recorded by
syscalls.Recorder, and -v refused in Docker's words before anything exists."""
import io
import os
import stat
import tarfile

import pytest

from labcore import paths
from labcore.errors import BadInput
from labcore.image import layers
from labcore.image.oci import LAYER_TAR
from labcore.kernel import rootfs, syscalls
from labcore.lessons.union_fs import read_layer
from labcore.kernel.process import run_in_child
from labcore.kernel.syscalls import MS_BIND, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT
from labcore.lessons.overlay_model import WHITEOUT, Dir, File, Symlink
from labcore.runtime import container


def make_tar(path, entries) -> str:
    """entries: (name, kind, data) with kind "dir", "file" or "link"."""
    with tarfile.open(path, "w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "link": tarfile.SYMTYPE}[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "link":
                info.linkname = data
            info.size = len(data) if kind == "file" else 0
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return str(path)


LAYER = [("a", "dir", b""), ("a/keep", "file", b"kept"), ("a/.wh.gone", "file", b""),
         ("b", "dir", b""), ("b/.wh..wh..opq", "file", b""), ("b/new", "file", b"new"),
         (".wh.top", "file", b""), ("c", "file", b"mine"), (".wh.c", "file", b""), ("sh", "link", "busybox")]


def test_oci_whiteouts_become_overlayfs_whiteouts(tmp_path):
    dest = tmp_path / "labcore-layer"
    dest.mkdir()
    layers.unpack_layer(make_tar(tmp_path / "layer.tar", LAYER), dest, LAYER_TAR, xattr="user")
    assert read_layer(dest, "user") == {
        "a": Dir(), "a/gone": WHITEOUT, "a/keep": File(b"kept"), "b": Dir(opaque=True), "b/new": File(b"new"),
        "c": File(b"mine"), "sh": Symlink("busybox"), "top": WHITEOUT}      # the layer's own c stays
    gone = os.lstat(dest / "a/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0


@pytest.mark.parametrize("entries", [
    [("link", "link", "/etc"), ("link/.wh.passwd", "file", b"")],          # a whiteout through a symlink
    [("../.wh.escape", "file", b"")],
    [("a", "dir", b""), ("a/.wh..", "file", b"")],
])
def test_hostile_whiteouts_are_refused_by_the_images_checks(tmp_path, entries):
    dest = tmp_path / "labcore-layer"
    dest.mkdir()
    with pytest.raises(BadInput, match="refusing layer entry"):
        layers.unpack_layer(make_tar(tmp_path / "layer.tar", entries), dest, LAYER_TAR, xattr="user")
    assert os.path.exists("/etc/passwd") and not (tmp_path / "escape").exists()


def fake_upper(directory):
    (directory / "etc").mkdir()
    (directory / "etc/motd").write_text("hi\n")
    os.mknod(directory / "etc/group", stat.S_IFCHR, 0)              # what rm leaves in an upperdir
    (directory / "usr").mkdir()
    os.setxattr(directory / "usr", "user.overlay.opaque", b"y")       # what rm -r; mkdir leaves
    (directory / "usr/new").write_text("new\n")
    os.symlink("motd", directory / "etc/link")


def test_an_upperdir_becomes_an_oci_layer_with_wh_files(tmp_path):
    upper = tmp_path / "upper"
    upper.mkdir()
    fake_upper(upper)
    data = layers.layer_tar(upper, "user")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["etc", "etc/.wh.group", "etc/link", "etc/motd", "usr",
                                         "usr/.wh..wh..opq", "usr/new"]
    whiteout = members[1]
    assert whiteout.isreg() and whiteout.size == 0 and whiteout.mode == 0o600
    assert all(m.uname == m.gname == "" for m in members)
    assert layers.layer_tar(upper, "user") == data                    # deterministic: same tree, same bytes


def test_the_round_trip_gives_back_the_same_layer(tmp_path):
    upper, back = tmp_path / "upper", tmp_path / "labcore-back"
    upper.mkdir()
    back.mkdir()
    fake_upper(upper)
    (tmp_path / "layer.tar").write_bytes(layers.layer_tar(upper, "user"))
    layers.unpack_layer(tmp_path / "layer.tar", back, LAYER_TAR, xattr="user")
    assert read_layer(back, "user") == read_layer(upper, "user")


def test_a_layer_is_cached_once_under_its_diff_id(busybox_image):
    from labcore.image.oci import Store
    layer = busybox_image.layers[0]
    first = layers.ensure_layer(Store(), layer)
    assert first == paths.images_dir() / "layers" / layer.diff_id[7:]
    inode = os.stat(first / "bin/busybox").st_ino
    assert layers.ensure_layer(Store(), layer) == first and os.stat(first / "bin/busybox").st_ino == inode
    assert not [name for name in os.listdir(first.parent) if name.startswith("labcore-")]   # no temporary left


def test_a_bad_digest_never_becomes_a_path():
    layer = type("Layer", (), {"diff_id": "sha256:../../etc", "digest": ""})()
    with pytest.raises(BadInput, match="not a sha256 digest"):
        layers.layer_dir(layer)


def test_the_overlay_options_list_init_then_the_top_layer_first(tmp_path):
    stack = layers.RootLayers([tmp_path / "init", tmp_path / "top", tmp_path / "base"], tmp_path / "upper",
                              tmp_path / "work", tmp_path / "rootfs", userxattr=True)
    assert stack.options == (f"lowerdir={tmp_path}/init:{tmp_path}/top:{tmp_path}/base,"
                             f"upperdir={tmp_path}/upper,workdir={tmp_path}/work,userxattr")
    stack.upper = tmp_path / "a:b"
    with pytest.raises(BadInput, match="reserve"):
        layers.check_options(stack)


def record_container_root(root: str, **options) -> list:
    def build():
        with syscalls.use(syscalls.Recorder()) as rec:
            rootfs.mount_container_root(root, False, **options)
        return rec.calls
    return run_in_child(build)


def test_pid_1_mounts_the_overlay_first_and_the_volumes_last_before_pivot_root(tmp_path):
    (tmp_path / "rootfs").mkdir()
    root = str(tmp_path / "rootfs")
    calls = record_container_root(root, layers="lowerdir=/l,upperdir=/u,workdir=/w",
                                  volumes=[(str(tmp_path), "/data", True)])
    pivot = [name for name, _ in calls].index("pivot_root")
    assert calls[0] == ("mount", (None, "/", None, MS_REC | MS_PRIVATE, None))
    assert calls[1] == ("mount", ("overlay", root, "overlay", 0, "lowerdir=/l,upperdir=/u,workdir=/w"))
    bind, remount = calls[pivot - 2], calls[pivot - 1]          # after /proc, /dev and /sys; before the pivot
    assert bind == ("mount", (str(tmp_path), f"{root}/data", None, MS_BIND | MS_REC, None))
    assert remount[1][:2] == (None, f"{root}/data")
    assert remount[1][3] & (MS_BIND | MS_REMOUNT | MS_RDONLY) == MS_BIND | MS_REMOUNT | MS_RDONLY


def test_a_volume_target_through_a_symlink_is_refused(tmp_path):
    os.symlink("/etc", tmp_path / "data")
    with pytest.raises(BadInput, match="is a symlink in the image"):
        rootfs.make_mountpoint(str(tmp_path), "/data/x", True)


@pytest.mark.parametrize("volume, message", [
    ("data:/data", "invalid volume specification"),                # a named volume: not here
    ("/tmp:data", "invalid volume specification"),
    ("/tmp:/data:rx", "invalid volume specification"),
    ("/labcore-no-such-dir:/data", "bind source path does not exist"),
    ("/tmp:/", "can't be '/'"),
])
def test_bad_volumes_are_refused_naming_the_accepted_form(volume, message):
    with pytest.raises(BadInput, match=message) as caught:
        container.check_spec(container.Spec("busybox", volumes=[volume]))
    assert "HOST:CONTAINER[:ro]" in caught.value.fix
    assert not paths.containers_dir().exists()


def test_volumes_parse_as_docker_reads_them():
    assert container.parse_volume("/tmp:/data") == ("/tmp", "/data", False)
    assert container.parse_volume("/tmp:/data/:ro") == ("/tmp", "/data", True)
    assert container.parse_volume("/tmp:/data:rw") == ("/tmp", "/data", False)
