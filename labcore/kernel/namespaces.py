"""Namespaces: what a container can see.

A namespace wraps one kind of global resource so that the processes inside get their own instance of it
(namespaces(7)). There are seven that a container uses, each made by one flag of unshare(2) or clone(2):

    uts     CLONE_NEWUTS     its hostname                                    uts_namespaces(7)
    pid     CLONE_NEWPID     its process ids: its first process is pid 1    pid_namespaces(7)
    mnt     CLONE_NEWNS      its mount table                                 mount_namespaces(7)
    net     CLONE_NEWNET     its interfaces, routes and ports: only `lo`     network_namespaces(7)
    ipc     CLONE_NEWIPC     its System V IPC objects and POSIX queues       ipc_namespaces(7)
    user    CLONE_NEWUSER    its user ids: root inside, nobody outside       user_namespaces(7)
    cgroup  CLONE_NEWCGROUP  its view of /proc/self/cgroup: it is at `/`     cgroup_namespaces(7)

A process's namespaces are the files /proc/PID/ns/KIND; two processes share a namespace when those files
have the same inode number. This module holds what the runtime needs: the readers of that evidence, the
flags, making a new mount namespace's mounts private, and ``enter_namespaces``, which does what `docker exec`
does: setns(2) into a running process's namespaces. Each namespace shown on its own, inside against the host,
is notebook 03's lesson: ``labcore.lessons.namespaces``.

Next: ``labcore.kernel.cgroups`` limits what the processes inside may use; ``labcore.kernel.rootfs`` gives them their
own files.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import struct

from labcore.errors import BadInput, from_oserror
from labcore.kernel import procfs, syscalls

KINDS = ("uts", "pid", "mnt", "net", "ipc", "user", "cgroup")
# nsenter(1)'s order. Joining the user namespace first gives the capabilities that the other setns calls
# need when you are not root; pid only matters for the children forked afterwards.
JOIN_ORDER = ("user", "cgroup", "ipc", "uts", "net", "pid", "mnt")
SIOCGIFFLAGS, IFF_UP = 0x8913, 0x1     # <linux/sockios.h>, <linux/if.h>
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,63}")


# --- reading the evidence: the same readers run on the host and inside a namespace ---------------------------

def ns_inode(kind: str, pid: int | str = "self") -> int:
    """The inode of /proc/PID/ns/KIND: two processes are in the same namespace when these are equal."""
    try:
        return procfs.ns_inode(kind, pid)
    except OSError as err:
        raise from_oserror(err, "readlink", procfs.path(pid, "ns", kind)) from err


def namespaces_of(pid: int | str = "self", kinds=KINDS) -> dict[str, int]:
    return {kind: ns_inode(kind, pid) for kind in kinds}


def nodename() -> str:
    return os.uname().nodename


def interfaces() -> list[str]:
    # if_nameindex(3) asks the kernel over netlink, in this process's network namespace. /sys/class/net
    # would not do: sysfs shows the network namespace of whoever mounted /sys, here the host's.
    return [name for _, name in socket.if_nameindex()]


def link_state(name: str = "lo") -> str:
    """UP or DOWN, from the SIOCGIFFLAGS ioctl in this process's network namespace (netdevice(7))."""
    request = struct.pack("16sH22x", name.encode(), 0)        # struct ifreq: a name, then the flags
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
    return "UP" if flags & IFF_UP else "DOWN"


def message_queues() -> list[str]:
    """The keys of the System V message queues this IPC namespace holds, as ipcs(1) prints them."""
    return [f"0x{int(row[0]) & 0xffffffff:08x}" for row in procfs.sysvipc("msg")]


def cgroup_paths() -> dict[str, str]:
    """/proc/self/cgroup as {hierarchy: path}: one line per v1 hierarchy, and "v2" for the unified one."""
    return {line.key: line.path for line in procfs.cgroups()}


def uid_map() -> str:
    return procfs.id_map_text("uid_map")


def status_field(name: str, pid: int | str = "self") -> str:
    return procfs.status_field(name, pid)


def nspids(pid: int | str) -> list[int]:
    """NSpid of /proc/PID/status: the process's pid in each pid namespace, from the reader's down."""
    return procfs.nspids(pid)


def visible_pids() -> list[int]:
    """The processes that ps(1) would list: the numbered directories of /proc."""
    return procfs.pids()


def ps() -> list[str]:
    found = []
    for pid in visible_pids():
        with contextlib.suppress(OSError):
            found.append(f"{pid} {procfs.comm(pid)}")
    return found


def mounts() -> list[dict]:
    """This mount namespace's table, from /proc/self/mountinfo (proc(5))."""
    return [{"point": m.point, "fstype": m.fstype, "source": m.source, "propagation": m.propagation}
            for m in procfs.mountinfo()]



def propagation(point: str = "/") -> str:
    """shared:N (peer group N), master:N, or private: the optional fields of the mount's line."""
    return [mount["propagation"] for mount in mounts() if mount["point"] == point][-1]


# --- the syscalls, in the order a runtime makes them -------------------------------------------------------

def flags_of(kinds) -> int:
    flags = 0
    for kind in kinds:
        flags |= syscalls.NAMESPACE_FLAGS[kind]
    return flags


def make_mounts_private() -> None:
    """Stop mount propagation both ways for every mount in this (new) mount namespace."""
    # systemd makes / shared (mount --make-rshared /), and a new mount namespace starts as a copy whose
    # mounts are peers of the host's: a mount made inside would propagate back out. MS_PRIVATE over the
    # whole tree cuts that link first (mount_namespaces(7), "Shared subtrees").
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)


def enter_namespaces(pid: int, kinds) -> None:
    """setns(2) into each of ``kinds`` of process ``pid``, as `docker exec` and nsenter(1) do."""
    # Open every file before the first setns: once in another mount or pid namespace, /proc/PID may name
    # another process, or none.
    fds = {}
    try:
        for kind in kinds:
            path = procfs.path(pid, "ns", kind)
            try:
                fds[kind] = os.open(path, os.O_RDONLY)
            except OSError as err:
                raise from_oserror(err, "open", path) from err
        for kind in sorted(kinds, key=JOIN_ORDER.index):
            syscalls.setns(fds[kind], syscalls.NAMESPACE_FLAGS[kind])
    finally:
        for fd in fds.values():
            os.close(fd)


def check_kinds(kinds) -> tuple[str, ...]:
    chosen = {kinds} if isinstance(kinds, str) else set(kinds)
    if not chosen or not chosen <= set(KINDS):
        raise BadInput(f"namespace kinds {sorted(chosen)!r}: choose one or more of {', '.join(KINDS)}")
    return tuple(kind for kind in KINDS if kind in chosen)


def check_hostname(name: str) -> str:
    if not isinstance(name, str) or not _HOSTNAME.fullmatch(name):
        raise BadInput(f"hostname {name!r}: give 1 to 64 letters, digits, '-' or '.', starting with a letter "
                       f"or digit (sethostname(2), HOST_NAME_MAX)")
    return name
