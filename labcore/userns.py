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
to share one user namespace, as rootless Podman's do (``labcore.usernet`` says why the network needs it).

Next: ``labcore.namespaces`` makes the other six kinds, inside this one when you are not root.
"""
from __future__ import annotations

import os

from labcore import syscalls
from labcore.errors import from_oserror


def write_id_maps(pid: str | int = "self", uid: int | None = None, gid: int | None = None) -> None:
    """Map root inside the namespace of ``pid`` to ``uid``/``gid`` outside (default: the caller's own ids)."""
    uid = os.geteuid() if uid is None else uid
    gid = os.getegid() if gid is None else gid
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1\n"), ("gid_map", f"0 {gid} 1\n")):
        path = f"/proc/{pid}/{name}"
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
    path = f"/proc/{pid}/ns/user"
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
