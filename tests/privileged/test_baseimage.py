"""Unpacking as root: owners, set-user-ID bits and device nodes survive; umoci unpacks the busybox image to
the same tree; and that tree works as a root filesystem under chroot(8)."""
import io
import os
import stat
import subprocess
import tarfile

import pytest

from labcore.image.oci import Store
from tests.conftest import has, privileged

pytestmark = privileged


def test_root_keeps_owners_modes_and_device_nodes(tmp_path):
    entries = [("data", tarfile.DIRTYPE, 0o750), ("bin/su", tarfile.REGTYPE, 0o4755),
               ("dev/null", tarfile.CHRTYPE, 0o666)]
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        for name, kind, mode in entries:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = kind, mode, 1000, 1000
            info.devmajor, info.devminor = 1, 3
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    store = Store(tmp_path / "labcore-store")
    root = tmp_path / "labcore-rootfs"
    store.unpack(store.add_image([layer], {}, "labcore-owners"), root)
    seen = {name: os.lstat(root / name) for name, _, _ in entries}
    assert {name: (s.st_uid, s.st_gid) for name, s in seen.items()} == dict.fromkeys(seen, (1000, 1000))
    # chown(2) clears set-user-ID, so the mode must be set after the owner: 4755 is the evidence.
    assert [stat.S_IMODE(seen[name].st_mode) for name, _, _ in entries] == [0o750, 0o4755, 0o666]
    assert stat.S_ISCHR(seen["dev/null"].st_mode)
    assert (os.major(seen["dev/null"].st_rdev), os.minor(seen["dev/null"].st_rdev)) == (1, 3)


@pytest.mark.skipif(not has("umoci"), reason="needs umoci (apt-get install umoci)")
def test_umoci_unpacks_the_same_tree(busybox_image, tmp_path):
    ours = tmp_path / "labcore-rootfs"
    Store().unpack(busybox_image, ours)
    bundle = tmp_path / "labcore-bundle"
    # A layout of its own, so the ref "latest" can only mean busybox.
    layout = tmp_path / "labcore-layout"
    Store(layout).add_image([layer.path for layer in busybox_image.layers], busybox_image.config, "busybox")
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)], check=True,
                   capture_output=True)
    theirs = describe_tree(bundle / "rootfs")
    assert len(theirs) > 250 and describe_tree(ours) == theirs


def test_busybox_rootfs_runs_under_chroot(busybox_image, tmp_path):
    root = tmp_path / "labcore-rootfs"
    Store().unpack(busybox_image, root)
    shell = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "id -un; ls /; readlink /bin/ls"],
                           capture_output=True, text=True, env={"PATH": "/bin:/usr/bin:/sbin:/usr/sbin"})
    user, *listing, link = shell.stdout.split()
    assert (user, link) == ("root", "busybox")
    assert {"bin", "etc", "proc", "sys", "tmp", "dev", "usr"} <= set(listing)


def describe_tree(root):
    """(type and mode, owner, size or link target) of every path: what two unpackers must agree on."""
    described = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        detail = os.readlink(path) if path.is_symlink() else info.st_size if path.is_file() else None
        described[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, detail)
    return described
