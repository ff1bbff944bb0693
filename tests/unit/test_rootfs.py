"""The root filesystem steps without root: the order of the mount/pivot_root sequence, recorded by
syscalls.Recorder in a child (pivot_to changes the working directory), and the /etc files."""
import errno
import os
import stat

from labcore.kernel import rootfs, syscalls
from labcore.kernel.process import run_in_child
from labcore.kernel.syscalls import MNT_DETACH, MS_BIND, MS_PRIVATE, MS_RDONLY, MS_REC
from labcore.lessons import root_fs
from labcore.lessons.evidence import Mode


def record_container_root(root: str, rootless: bool) -> list:
    def build():
        with syscalls.use(syscalls.Recorder()) as rec:
            rootfs.mount_container_root(root, rootless)
        return rec.calls
    return run_in_child(build)


def index(calls, predicate) -> int:
    return next(i for i, call in enumerate(calls) if predicate(*call))


def test_propagation_is_private_before_any_other_mount(tmp_path):
    calls = record_container_root(str(tmp_path), rootless=False)
    assert calls[0] == ("mount", (None, "/", None, MS_REC | MS_PRIVATE, None))


def test_new_root_is_bind_mounted_on_itself_before_pivot_root(tmp_path):
    root = str(tmp_path)
    calls = record_container_root(root, rootless=False)
    bind = index(calls, lambda name, args: name == "mount" and args[:2] == (root, root))
    assert calls[bind][1][3] == MS_BIND | MS_REC
    assert bind < index(calls, lambda name, args: name == "pivot_root")


def test_old_root_is_made_private_then_detached_after_pivot_root(tmp_path):
    calls = record_container_root(str(tmp_path), rootless=False)
    assert calls[-3:] == [("pivot_root", (".", ".")),
                          ("mount", (None, ".", None, MS_REC | MS_PRIVATE, None)),
                          ("umount2", (".", MNT_DETACH))]


def test_proc_dev_and_sys_are_mounted_under_the_new_root_before_the_pivot(tmp_path):
    root = str(tmp_path)
    calls = record_container_root(root, rootless=False)
    targets = [args[1] for name, args in calls if name == "mount"]
    for target in ("proc", "dev", "dev/pts", "dev/shm", "dev/mqueue", "sys"):
        assert f"{root}/{target}" in targets
    sysfs = next(args for name, args in calls if name == "mount" and args[2] == "sysfs")
    assert sysfs[3] & MS_RDONLY


def test_as_root_the_devices_are_made_with_mknod(tmp_path):
    calls = record_container_root(str(tmp_path), rootless=False)
    nodes = {os.path.basename(args[0]): args for name, args in calls if name == "mknod"}
    assert set(nodes) == set(rootfs.DEVICES)
    assert nodes["null"][1] == stat.S_IFCHR | 0o666 and nodes["null"][2] == os.makedev(1, 3)
    devpts = next(args for name, args in calls if name == "mount" and args[2] == "devpts")
    assert "newinstance" in devpts[4] and "ptmxmode=0666" in devpts[4] and "gid=5" in devpts[4]


def test_rootless_binds_the_hosts_device_nodes_instead(tmp_path):
    root = str(tmp_path)
    calls = record_container_root(root, rootless=True)
    assert "mknod" not in [name for name, _ in calls]
    binds = [args for name, args in calls if name == "mount" and args[0] == "/dev/null"]
    assert binds == [("/dev/null", f"{root}/dev/null", None, MS_BIND, None)]
    devpts = next(args for name, args in calls if name == "mount" and args[2] == "devpts")
    assert "gid=5" not in devpts[4]            # gid 5 is not mapped in a rootless user namespace


def test_dev_gets_the_usual_symlinks(tmp_path):
    record_container_root(str(tmp_path), rootless=False)
    assert os.readlink(tmp_path / "dev/fd") == "/proc/self/fd"
    assert os.readlink(tmp_path / "dev/ptmx") == "pts/ptmx"


def test_etc_files_name_the_container_and_never_follow_an_images_symlink(tmp_path):
    outside = tmp_path / "host-file"
    outside.write_text("host\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hostname").symlink_to(outside)
    rootfs.write_etc_files(tmp_path, "box1")
    assert (tmp_path / "etc/hostname").read_text() == "box1\n"
    assert "127.0.1.1\tbox1" in (tmp_path / "etc/hosts").read_text()
    assert outside.read_text() == "host\n"
    assert "nameserver 127." not in (tmp_path / "etc/resolv.conf").read_text()


def test_a_refused_chroot_is_a_refused_step_with_the_reason(tmp_path):
    with syscalls.use(syscalls.Recorder(fail={"chroot": errno.EPERM, "unshare": errno.EPERM})):
        step = root_fs.chroot_into(tmp_path)
    assert step.mode is Mode.NOT_PERMITTED
    assert "refused" in step.reason and "fix" in step.reason


# mountinfo of a host (its root, three more mounts, one holding the lab's state) and of a namespace after
# pivot_root: one mount, whose parent (88, the old root) was detached.
HOST_MOUNTINFO = ["27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
                  "28 27 0:5 / /proc rw,nosuid shared:2 - proc proc rw",
                  "29 27 0:6 / /sys rw,nosuid shared:3 - sysfs sysfs rw",
                  "30 27 0:7 / /dev rw,nosuid shared:4 - devtmpfs udev rw,size=4k",
                  "31 27 254:1 / /var/lib/labcore rw,relatime shared:5 - ext4 /dev/vdb rw"]
PIVOTED_MOUNTINFO = ["110 88 254:1 /tmp/labcore-rootfs-0123456789ab / rw,relatime - ext4 /dev/vdb rw"]
ROOT = "/var/lib/labcore/tmp/labcore-rootfs-0123456789ab"


def test_the_mount_tree_marks_the_root_folds_the_host_and_draws_the_old_root_gone():
    dot = root_fs.mount_tree_dot(HOST_MOUNTINFO, ROOT, PIVOTED_MOUNTINFO)
    assert '"before:27" [label="27  /\\next4 /dev/vda"' in dot and '"before:marker" -> "before:27"' in dot
    assert '3 more mounts\\n/proc, /sys, /dev, …' in dot
    assert '"chroot:27" -> "chroot:31"' in dot and '"chroot:31" -> "chroot:dir"' in dot      # where the dir lies
    assert '"chroot:marker" -> "chroot:dir"' in dot and "labcore-rootfs-0123456789ab/" in dot
    assert '"pivot:88" -> "pivot:110"' in dot and "88  the old root\\ngone: umount2(MNT_DETACH)" in dot
    assert '"pivot:marker" -> "pivot:110"' in dot


def test_the_cgroupfs_mounts_come_from_one_read_of_mountinfo(tmp_path, monkeypatch):
    from labcore.kernel import procfs
    reads = []
    real = procfs.read
    monkeypatch.setattr(procfs, "read", lambda pid, name, root=procfs.PROC:
                        (reads.append(name) if name == "mountinfo" else None) or real(pid, name, root))

    def build():
        with syscalls.use(syscalls.Recorder()) as rec:
            rootfs.mount_container_root(str(tmp_path), rootless=False)
        return rec.calls, reads
    calls, reads = run_in_child(build)
    assert reads == ["mountinfo"]
    cgroupfs = [args for name, args in calls if name == "mount" and args[2] in ("cgroup", "cgroup2")]
    assert cgroupfs and all(args[1].startswith(f"{tmp_path}/sys/fs/cgroup") for args in cgroupfs)
