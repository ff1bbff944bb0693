"""User namespaces: being root inside without being root outside.

A user namespace has its own table of user and group ids. Its first process may map exactly one id of the
outside world — its own — to any id inside, by writing one line to /proc/self/uid_map (user_namespaces(7)):

    0  1000  1      "uid 0 in here is uid 1000 out there; one id long"

Inside, that process holds every capability, but only over objects that belong to its namespace: it may
create the other namespaces, mount a tmpfs or an overlay, set the hostname — and it still cannot read a
file that uid 1000 could not read, because the kernel checks the *outside* uid. That is how rootless
containers (podman, `docker --rootless`, bubblewrap) work.

gid_map may only be written after /proc/self/setgroups says "deny": otherwise the process could drop a
supplementary group that was denying it access (CVE-2014-8989).

A process may also *join* a user namespace that another process made, with setns(2), as `nsenter -U` does:
the kernel lets it when its uid owns that namespace. That is how all of one user's rootless containers come
to share one user namespace, as rootless Podman's do (``labcore.kernel.usernet`` says why the network needs it).

Next: ``labcore.kernel.namespaces`` makes the other six kinds, inside this one when you are not root.
"""
from __future__ import annotations

import os

from labcore.errors import from_oserror
from labcore.kernel import procfs, syscalls
from labcore.kernel.journal import process_start_time
from labcore.kernel.process import Child


def write_id_maps(pid: str | int = "self", uid: int | None = None, gid: int | None = None) -> None:
    """Map root inside the namespace of ``pid`` to ``uid``/``gid`` outside (default: the caller's own ids)."""
    uid = os.geteuid() if uid is None else uid
    gid = os.getegid() if gid is None else gid
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1\n"), ("gid_map", f"0 {gid} 1\n")):
        path = procfs.path(pid, name)
        try:
            with open(path, "w") as file:
                file.write(text)
        except OSError as err:
            raise from_oserror(err, f"write {name}", path,
                               fix="check `labcore doctor`: user namespaces may be restricted on this "
                                   "host (sysctl kernel.unprivileged_userns_clone or "
                                   "kernel.apparmor_restrict_unprivileged_userns)") from err


def enter(flags: int = 0) -> None:
    """unshare(CLONE_NEWUSER | flags) and become root inside; to be called in a child process."""
    uid, gid = os.geteuid(), os.getegid()
    syscalls.unshare(syscalls.CLONE_NEWUSER | flags)
    write_id_maps("self", uid, gid)


def join(pid: int) -> None:
    """setns(2) into the user namespace of ``pid``; to be called in a single-threaded child.

    Its owner (the uid that created it) may join without any capability outside. Afterwards this process is
    uid 0 there, with every capability over the namespaces that user namespace owns, so ``unshare`` below
    needs no user namespace of its own any more."""
    path = procfs.path(pid, "ns", "user")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise from_oserror(err, "open", path) from err
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWUSER)
    finally:
        os.close(fd)


def isolating_flags(flags: int) -> int:
    """``flags`` as given when root; with CLONE_NEWUSER added otherwise, so the kernel lets a non-root user
    create the other namespaces (it checks CAP_SYS_ADMIN in the *new* user namespace)."""
    return flags if os.geteuid() == 0 else flags | syscalls.CLONE_NEWUSER


def unshare(flags: int) -> None:
    """unshare(2) as root, or through a new user namespace when not root."""
    flags = isolating_flags(flags)
    if flags & syscalls.CLONE_NEWUSER:
        enter(flags & ~syscalls.CLONE_NEWUSER)
    else:
        syscalls.unshare(flags)


class MountKeeper:
    """A child that keeps a user namespace and a mount namespace of its own, and mounts in them on request:
    rootless podman's "pause process" is the same idea. A user may not mount on the host, but may inside
    these (overlay with ``userxattr``, tmpfs, bind mounts of what it can read), and

      * the notebook reaches the mounted files from outside, as /proc/PID/root/PATH (proc(5)): the kernel
        resolves the rest of the path in that process's mount namespace, with the caller's own permissions;
      * a container started later joins these namespaces (``join``) and finds the mounts there;
      * every mount goes when the keeper exits: a namespace's mounts die with its last process, so only the
        process is journaled (``scope``), not each mount.

    ``userns_of``: keep the mount namespace inside the user namespace of that process instead of a new one —
    the user-mode network's (``labcore.kernel.usernet``), so that a container joining the keeper may also be given
    a veth from the network's router namespace: both namespaces then belong to one user namespace.
    """

    def __init__(self, scope, userns_of: int | None = None):
        self.child = Child(lambda channel: _keep_mounts(channel, userns_of))
        entry = scope.record("process", str(self.child.pid), "kill", pid=self.child.pid,
                             start=process_start_time(self.child.pid))
        self.pid = self.child.pid
        try:
            self.child.recv()                # "ready": its namespaces exist, its id maps are written
        except BaseException:                # refused: the child has exited, with nothing to undo
            self.child.wait()
            scope.entries.remove(entry)
            scope.journal.forget(entry)
            raise

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        """mount(2) in the keeper's mount namespace; the kernel's refusal is raised here."""
        self.child.send(("mount", (source, str(target), fstype, flags, data)))
        self.child.recv(timeout=30)

    def path(self, inside) -> str:
        """Where this process reaches ``inside`` (an absolute path in the keeper's namespace)."""
        return procfs.path(self.pid, "root") + os.path.abspath(inside)

    def join(self) -> None:
        self.join_pid(self.pid)

    @staticmethod
    def join_pid(pid: int) -> None:
        """setns(2) the calling process (a child) into keeper ``pid``'s user and mount namespaces. Its euid
        owns that user namespace, which gives it the CAP_SYS_ADMIN there that setns asks for
        (user_namespaces(7)); the process must have one thread (setns(2))."""
        fds = [os.open(procfs.path(pid, "ns", kind), os.O_RDONLY) for kind in ("user", "mnt")]
        try:           # both opened first: after the first setns, /proc/PID may name another process
            syscalls.setns(fds[0], syscalls.CLONE_NEWUSER)
            syscalls.setns(fds[1], syscalls.CLONE_NEWNS)
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        if self.child.status is None:
            self.child.channel.close()       # EOF: the keeper leaves, and its mounts with it
            self.child.wait()


def _keep_mounts(channel, userns_of: int | None) -> None:
    if userns_of is None:
        enter(syscalls.CLONE_NEWNS)
    else:
        join(userns_of)                      # root there: it may make a mount namespace of its own
        syscalls.unshare(syscalls.CLONE_NEWNS)
    # Private first: no mount made here may propagate anywhere (mount_namespaces(7), "Shared subtrees").
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    channel.send("ready")
    while True:
        try:
            request, args = channel.recv()
        except EOFError:
            return
        try:
            if request == "mount":
                syscalls.mount(*args)
            channel.send("done")
        except Exception as err:             # noqa: BLE001 - the parent raises it; the keeper goes on
            channel.send_error(err)
