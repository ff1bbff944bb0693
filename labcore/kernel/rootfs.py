"""The root filesystem: which files a container sees, and why chroot(2) is not enough.

Every process has a root directory, where the kernel starts resolving a path that begins with "/"
(path_resolution(7)). chroot(2) changes it for the calling process and for nothing else: the mounts are still
the host's, the working directory stays where it was, and ".." stops at the root only when a walk *meets* it.
So a root process inside a chroot can leave (man 2 chroot, NOTES): chroot into a subdirectory, which leaves
the working directory above the new root; climb with ".." past the old one; chroot("."). It is home.

pivot_root(2) changes the root *mount* of a mount namespace instead: the new root becomes "/", the old one is
stacked on it, and once that is detached nothing in the namespace leads to the host's files any more. The
same escape climbs to the top and finds the image there (notebook 06 does both escapes for real:
``labcore.lessons.root_fs``). runc's order (libcontainer/rootfs_linux.go:
prepareRoot, mountToRootfs, createDevices, setupDevSymlinks, pivotRoot), done by ``mount_container_root``:

    mount(NULL, "/", MS_REC|MS_PRIVATE)      in a new mount namespace: nothing propagates to the host
    mount(root, root, MS_BIND|MS_REC)        pivot_root needs the new root to be a mount point
    proc, a tmpfs /dev, sysfs, under root    while the host's /dev and /sys are still reachable
    the cgroupfs, read-only                  runc mounts it as one of the spec's mounts (``mount_cgroupfs``)
    pivot_root(".", ".")                     the old root is now stacked on "/" ...
    mount(NULL, ".", MS_REC|MS_PRIVATE); umount2(".", MNT_DETACH)     ... and gone

Next: ``labcore.runtime.container`` starts a command as pid 1 on such a root.
"""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from labcore.errors import BadInput, NeedsPrivilege
from labcore.kernel import procfs, syscalls
from labcore.kernel.namespaces import make_mounts_private
from labcore.kernel.syscalls import (MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY,
                                     MS_REC, MS_REMOUNT)

# The device nodes every OCI container gets (runtime-spec config-linux.md, "Default Devices").
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
DEV_SYMLINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}


# --- the files Docker writes for each container --------------------------------------------------------

def write_etc_files(root: str | os.PathLike, hostname: str, resolv_conf: str | None = None) -> None:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf for this container (Docker bind-mounts its copies).
    ``resolv_conf``: the file's text when not the host's (a user-defined network's, ``labcore.runtime.dns``)."""
    etc = Path(root, "etc")
    etc.mkdir(exist_ok=True)
    hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    resolv = _host_resolv_conf() if resolv_conf is None else resolv_conf
    for name, text in (("hostname", hostname + "\n"), ("hosts", hosts), ("resolv.conf", resolv)):
        target = etc / name
        if target.is_symlink():      # an image's symlink must not make us write a file of the host's
            target.unlink()
        target.write_text(text)


def _host_resolv_conf() -> str:
    # Docker copies the host's file, leaving out loopback nameservers that mean nothing in another netns.
    with contextlib.suppress(OSError):
        lines = Path("/etc/resolv.conf").read_text().splitlines()
        return "".join(line + "\n" for line in lines if not line.startswith("nameserver 127."))
    return ""


# --- the container's root, in runc's order ----------------------------------------------------------------

def mount_container_root(root: str, rootless: bool, layers: str | None = None, volumes=(),
                         confinement=None, tmpfs=(), cgroupfs: bool = True) -> None:
    """Build the container's mounts under ``root`` and pivot into it. Runs in pid 1, in new mnt+pid namespaces.

    ``layers``: the overlay's options (``labcore.image.layers``); ``volumes``: (host, target, read_only) bind mounts;
    ``confinement``: which devices it gets and whether /sys and the cgroupfs are read-only
    (``labcore.kernel.confinement``; default: Docker's); ``tmpfs``: (target, options) memory filesystems (--tmpfs).
    ``cgroupfs=False``: all but the cgroupfs, which the caller mounts itself, from inside, once it is in its
    cgroup namespace (a container's pid 1: ``labcore.runtime.container``)."""
    privileged = bool(confinement and confinement.privileged)
    make_mounts_private()          # first: a mount made before this would propagate to the host's namespace
    if layers:
        mount_layers(root, layers)  # the image's layers and the container's upperdir, merged at root
    bind_root(root)                # pivot_root(2) requires new_root to be a mount point
    mount_proc(root)               # proc shows the pid namespace of whoever mounts it: pid 1's, here
    mount_dev(root, rootless, confinement)   # before the pivot: rootless binds the host's device nodes
    mount_sys(root, rootless, read_only=not privileged)   # a rootless fallback binds the host's /sys
    if cgroupfs:
        mount_cgroupfs(root, rootless, read_only=not privileged)
    mount_volumes(root, volumes)   # after the defaults, as runc mounts the user's; binds need the host's tree
    mount_tmpfs(root, tmpfs)
    pivot_to(root)                 # last: afterwards nothing of the host's tree is reachable


def below_cgroupfs(volumes=(), tmpfs=()) -> bool:
    """Whether a -v or --tmpfs goes at or below /sys/fs/cgroup: then the cgroupfs must be mounted before it."""
    targets = [target for _, target, _ in volumes] + [target for target, _ in tmpfs]
    return any(os.path.normpath(t) == "/sys/fs/cgroup" or os.path.normpath(t).startswith("/sys/fs/cgroup/")
               for t in targets)


def mount_layers(root: str, options: str) -> None:
    """mount -t overlay -o lowerdir=...,upperdir=...,workdir=... overlay ROOT, in pid 1's own mount namespace:
    the mount ends with the container, so the host has nothing to unmount (``labcore.kernel.overlay`` explains it)."""
    syscalls.mount("overlay", root, "overlay", 0, options)


def mount_volumes(root: str, volumes) -> None:
    """-v HOST:CONTAINER[:ro]: the host's directory (or file) bind-mounted over CONTAINER in the new root.
    The files are the host's: they never enter the upperdir, and outlive the container."""
    for host, target, read_only in volumes:
        inside = make_mountpoint(root, target, os.path.isdir(host))
        syscalls.mount(host, inside, None, MS_BIND | MS_REC)
        if read_only:
            # A bind mount is made read-only by a remount of that bind alone. In a user namespace the host
            # mount's nosuid, nodev and noexec are locked (mount_namespaces(7)): keep them, as runc does.
            # statvfs's ST_NOSUID, ST_NODEV, ST_NOEXEC have the values of the MS_ flags (statvfs(3)).
            kept = os.statvfs(inside).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            syscalls.mount(None, inside, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


def mount_tmpfs(root: str, tmpfs) -> None:
    """--tmpfs PATH[:OPTIONS]: a filesystem in memory at PATH (tmpfs(5)), gone with the container. Docker's
    defaults: nosuid, nodev, noexec."""
    switches = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
    for target, options in tmpfs:
        words = [word for word in options.split(",") if word]
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        for word in words:
            flags = flags | switches.get(word, 0)
            flags = flags & ~{"rw": MS_RDONLY, "suid": MS_NOSUID, "dev": MS_NODEV, "exec": MS_NOEXEC}.get(word, 0)
        data = ",".join(word for word in words if "=" in word) or None     # size=, mode=, uid=, ...
        syscalls.mount("tmpfs", make_mountpoint(root, target, True), "tmpfs", flags, data)


def make_mountpoint(root: str, target: str, directory: bool) -> str:
    """``root``/``target``, made if missing, never through a symlink: an image's ``/data -> /etc`` would
    otherwise send the bind mount outside the new root, onto /etc as this namespace still sees the host's
    tree (runc resolves mount targets with securejoin for the same reason)."""
    path, parts = root, Path(target).parts[1:]
    for depth, part in enumerate(parts, start=1):
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise BadInput(f"volume target {target}: /{'/'.join(parts[:depth])} is a symlink in the image",
                           fix="mount the volume on a path without symlinks")
        if not os.path.lexists(path):
            if depth == len(parts) and not directory:
                Path(path).touch()     # a file is bind-mounted onto a file
            else:
                os.mkdir(path, 0o755)
    return path


def bind_root(root: str) -> None:
    syscalls.mount(root, root, None, MS_BIND | MS_REC)


def pivot_to(root: str) -> None:
    """pivot_root(".", ".") as runc does: no put_old directory needed, the old root is stacked on "/"."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY)
    new_root = os.open(root, os.O_DIRECTORY | os.O_RDONLY)
    try:
        os.fchdir(new_root)
        syscalls.pivot_root(".", ".")
        os.fchdir(old_root)        # runc: the kernel does not promise where "." is after pivot_root
        syscalls.mount(None, ".", None, MS_REC | MS_PRIVATE)   # so the detach cannot propagate anywhere
        syscalls.umount2(".", MNT_DETACH)                      # detach, even though we are standing in it
    finally:
        os.close(old_root)
        os.close(new_root)
    os.chdir("/")


def _mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    os.makedirs(target, exist_ok=True)
    syscalls.mount(source, target, fstype, flags, data)


def mount_proc(root: str) -> None:
    _mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_dev(root: str, rootless: bool, confinement=None) -> None:
    """A small tmpfs /dev with the default devices (all of the host's with --privileged, and those of
    --device), its own ptys, shm and mqueue, and the usual symlinks."""
    dev = f"{root}/dev"
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    make_device_nodes(dev, rootless)
    if confinement is not None:
        add_devices(dev, rootless, confinement)
    # newinstance: this /dev/pts numbers its own ptys; gid=5 (tty) exists only when root maps all gids.
    pts_options = "newinstance,ptmxmode=0666,mode=0620" + ("" if rootless else ",gid=5")
    _mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts_options)
    _mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    _mount("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name, target in DEV_SYMLINKS.items():
        if not os.path.lexists(f"{dev}/{name}"):
            os.symlink(target, f"{dev}/{name}")


def make_device_nodes(dev: str, rootless: bool) -> None:
    if rootless:
        # mknod(2) of a device is refused in a user namespace: bind the host's nodes, as runc rootless does.
        for name in DEVICES:
            Path(dev, name).touch()
            syscalls.mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
        return
    umask = os.umask(0)            # the mode below is meant exactly: rw for everyone
    try:
        for name, (major, minor) in DEVICES.items():
            syscalls.mknod(f"{dev}/{name}", stat.S_IFCHR | 0o666, os.makedev(major, minor))
    finally:
        os.umask(umask)


# Not devices: the host's own /dev/pts, shm and mqueue are replaced by the container's (runc, HostDevices).
_NOT_HOST_DEVICES = {"pts", "shm", "mqueue", "fd", "stdin", "stdout", "stderr", "ptmx", "console"}


def host_devices() -> list:
    """Every device node below the host's /dev, as ``labcore.kernel.confinement.Device`` (--privileged's list)."""
    from labcore.kernel.confinement import Device
    found = []
    for here, subdirs, names in os.walk("/dev"):
        subdirs[:] = [d for d in subdirs if not (here == "/dev" and d in _NOT_HOST_DEVICES)]
        for name in names:
            path = os.path.join(here, name)
            info = os.lstat(path)
            if (stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)) and not \
                    (here == "/dev" and name in _NOT_HOST_DEVICES | set(DEVICES)):
                found.append(Device(path, path, "c" if stat.S_ISCHR(info.st_mode) else "b",
                                    os.major(info.st_rdev), os.minor(info.st_rdev), "rwm", stat.S_IMODE(info.st_mode)))
    return found


def add_devices(dev: str, rootless: bool, confinement) -> None:
    """--device nodes, and every host device with --privileged: mknod as root, a bind mount rootless."""
    extra = [*confinement.devices, *(host_devices() if confinement.privileged else [])]
    umask = os.umask(0)
    try:
        for device in extra:
            inside = make_mountpoint(os.path.dirname(dev), device.target, directory=False) if rootless \
                else _device_path(dev, device.target)
            if rootless:
                syscalls.mount(device.host, inside, None, MS_BIND)
            elif not os.path.lexists(inside):
                kind = stat.S_IFBLK if device.kind == "b" else stat.S_IFCHR
                syscalls.mknod(inside, kind | device.mode, os.makedev(device.major, device.minor))
    finally:
        os.umask(umask)


def _device_path(dev: str, target: str) -> str:
    """Where a device node goes under the container's /dev tmpfs (a --device target outside /dev is made
    there too, as Docker allows: /dev is the usual place)."""
    relative = os.path.relpath(target, "/dev") if target.startswith("/dev/") else target.lstrip("/")
    path = os.path.join(dev, relative) if target.startswith("/dev/") else os.path.join(os.path.dirname(dev),
                                                                                        relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def mount_sys(root: str, rootless: bool, read_only: bool = True) -> None:
    """sysfs, read-only unless privileged; rootless, where the kernel refuses sysfs, the host's /sys bound
    read-only (runc)."""
    target = f"{root}/sys"
    flags = (MS_RDONLY if read_only else 0) | MS_NOSUID | MS_NODEV | MS_NOEXEC
    try:
        _mount("sysfs", target, "sysfs", flags)
    except NeedsPrivilege:
        if not rootless:
            raise
        syscalls.mount("/sys", target, None, MS_BIND | MS_REC)
        syscalls.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)


def mount_cgroupfs(root: str, rootless: bool, read_only: bool = True, mountinfo: str | None = None) -> None:
    """The container's own cgroups at /sys/fs/cgroup, read-only unless privileged, as Docker mounts them.

    pid 1 is in a cgroup namespace (cgroup_namespaces(7)) whose root is the container's group: a cgroupfs
    mounted here shows that group as its top, and nothing above. Read-only, its root cannot write the
    limits it lives under. v2: one cgroup2 mount. v1: a tmpfs holding one mount per hierarchy, named as on
    the host. A user namespace may mount cgroup2 but not v1 hierarchies (only the initial user namespace
    may): rootless on v1 keeps sysfs's empty /sys/fs/cgroup. ``mountinfo``: the host's mount table, read
    before the pivot by a caller that mounts this after it (the hierarchies are named after the host's)."""
    from labcore.kernel.cgroups import detect
    target = f"{root}/sys/fs/cgroup"
    flags = (MS_RDONLY if read_only else 0) | MS_NOSUID | MS_NODEV | MS_NOEXEC
    mountinfo = mountinfo or procfs.read("self", "mountinfo")      # once, for both questions
    if detect(mountinfo).kind == "v2":
        syscalls.mount("cgroup2", target, "cgroup2", flags)
        return
    if rootless:
        return
    syscalls.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
    for name, options in v1_hierarchies(procfs.parse_mountinfo(mountinfo)):
        _mount("cgroup", f"{target}/{name}", "cgroup", flags, options)


def v1_hierarchies(mounts: list | None = None) -> list[tuple[str, str]]:
    """(directory name under /sys/fs/cgroup, the controllers or name= as mount options) of each v1 hierarchy
    mounted on the host, from /proc/self/mountinfo (proc(5)), or from ``mounts`` read from it already."""
    found = []
    for mount in procfs.mountinfo() if mounts is None else mounts:
        if mount.fstype == "cgroup" and mount.point.startswith("/sys/fs/cgroup/"):
            wanted = [o for o in mount.super_options.split(",")
                      if o not in ("rw", "ro") and not o.startswith("release_agent")]
            found.append((os.path.basename(mount.point), ",".join(wanted)))
    return found
