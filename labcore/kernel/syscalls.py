"""The syscall seam: the only door from the lab to the kernel's privileged calls.

A container is made of a handful of system calls. Each one here keeps its C name and C flags, so what you
read in this package is what you read in the man pages:

    unshare(2)      leave some namespaces and enter new, empty ones          man 2 unshare
    setns(2)        join an existing namespace through a /proc/PID/ns/* fd   man 2 setns
    mount(2)        attach a filesystem, or change a mount's propagation     man 2 mount
    umount2(2)      detach one                                               man 2 umount
    pivot_root(2)   swap the root mount for another one                      man 2 pivot_root
    chroot(2)       change where "/" resolves for this process               man 2 chroot
    sethostname(2)  set the UTS namespace's hostname                         man 2 sethostname
    mknod(2)        create a device node                                     man 2 mknod
    ioctl(2)        SIOCSIFFLAGS: bring a network interface up               man 7 netdevice
    prctl(2)        drop a capability from the bounding set, no_new_privs    man 2 prctl
    capset(2)       set the effective, permitted, inheritable capabilities    man 2 capset
    setgroups(2), setresgid(2), setresuid(2)   become the container's user   man 2 setresuid
    seccomp(2)      load a syscall filter (built by libseccomp)              man 2 seccomp
    bpf(2)          load and attach a cgroup v2 device program               man 2 bpf
    clone3(2)       fork, the child born in a cgroup (CLONE_INTO_CGROUP)     man 2 clone3

Python has ``os.unshare``/``os.setns`` from 3.12; on older versions they are called through ctypes. No other
module in the package uses ctypes for privileged work: everything goes through the functions below, which
delegate to the active backend. Tests swap in ``Recorder`` to check the order of calls without root::

    with syscalls.use(syscalls.Recorder()) as rec:
        make_container_root(...)
    assert rec.names() == ["mount", "pivot_root", "umount2"]

Every failure becomes a ``labcore.errors.LabError`` naming the call with its flags, the path and the fix.
Next: ``labcore.kernel.process`` runs these calls in a child, so the host process never changes.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import struct
import sys

from labcore.errors import from_oserror

# <linux/sched.h>: namespace flags for unshare(2), setns(2) and clone(2).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_INTO_CGROUP = 0x200000000     # clone3(2) only: the flag word is 64 bits there (Linux 5.7)

# <linux/mount.h>: mount(2) flags.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MNT_DETACH = 0x2

# <linux/prctl.h>: prctl(2) options; <linux/capability.h>: capset(2)'s header version (64-bit masks).
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
SECCOMP_MODE_FILTER = 2
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PRCTL_NAMES = {PR_SET_KEEPCAPS: "PR_SET_KEEPCAPS", PR_CAPBSET_DROP: "PR_CAPBSET_DROP",
                PR_SET_NO_NEW_PRIVS: "PR_SET_NO_NEW_PRIVS", PR_GET_NO_NEW_PRIVS: "PR_GET_NO_NEW_PRIVS",
                PR_CAP_AMBIENT: "PR_CAP_AMBIENT", PR_SET_CHILD_SUBREAPER: "PR_SET_CHILD_SUBREAPER"}
# <asm/unistd_64.h>, <asm-generic/unistd.h>: calls glibc has no wrapper for.
_SYSCALL_NUMBERS = {"x86_64": {"pivot_root": 155, "bpf": 321, "clone3": 435},
                    "aarch64": {"pivot_root": 41, "bpf": 280, "clone3": 435}}


def syscall_number(name: str) -> int:
    return _SYSCALL_NUMBERS.get(os.uname().machine, _SYSCALL_NUMBERS["x86_64"])[name]


def fd_path(fd: int) -> str | None:
    """What an fd opens, for an error message (/proc/self/fd's link); None if that cannot be read."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


# <linux/sockios.h>, <net/if.h>: interface flags.
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

NAMESPACE_FLAGS = {
    "mnt": CLONE_NEWNS, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC, "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID, "net": CLONE_NEWNET, "cgroup": CLONE_NEWCGROUP,
}
_MOUNT_FLAG_NAMES = {
    MS_RDONLY: "MS_RDONLY", MS_NOSUID: "MS_NOSUID", MS_NODEV: "MS_NODEV", MS_NOEXEC: "MS_NOEXEC",
    MS_REMOUNT: "MS_REMOUNT", MS_BIND: "MS_BIND", MS_MOVE: "MS_MOVE", MS_REC: "MS_REC",
    MS_PRIVATE: "MS_PRIVATE", MS_SLAVE: "MS_SLAVE", MS_SHARED: "MS_SHARED",
}
_CLONE_FLAG_NAMES = {flag: f"CLONE_NEW{'NS' if ns == 'mnt' else ns.upper()}"
                     for ns, flag in NAMESPACE_FLAGS.items()}


def flag_names(flags: int, names: dict[int, str]) -> str:
    """Spell a flag word the way C code does: ``CLONE_NEWNS|CLONE_NEWPID``."""
    parts = [name for bit, name in names.items() if flags & bit]
    rest = flags & ~sum(names)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or "0"


def clone_flag_names(flags: int) -> str:
    return flag_names(flags, _CLONE_FLAG_NAMES)


def mount_flag_names(flags: int) -> str:
    return flag_names(flags, _MOUNT_FLAG_NAMES)


class Kernel:
    """The real backend: each method is one system call."""

    def __init__(self):
        # dlopen(NULL): the symbols already loaded, libc's among them (dlopen(3)). ctypes.util.find_library
        # would run `ldconfig -p` in a subprocess, in every container's shim: a fork and exec a start.
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._python = None             # the same, called holding the GIL: for clone3 (clone_into_cgroup)
        self._clone3: bool | None = None  # clone3_allowed's answer: it does not change while a process lives

    def _check(self, result: int, syscall: str, path: str | None = None) -> None:
        if result != 0:
            code = ctypes.get_errno()
            raise from_oserror(OSError(code, os.strerror(code)), syscall, path)

    def unshare(self, flags: int) -> None:
        name = f"unshare({clone_flag_names(flags)})"
        if hasattr(os, "unshare"):
            try:
                os.unshare(flags)
            except OSError as err:
                raise from_oserror(err, name) from err
        else:
            self._check(self._libc.unshare(ctypes.c_int(flags)), name)

    def setns(self, fd: int, nstype: int = 0) -> None:
        name = f"setns(fd {fd}, {clone_flag_names(nstype)})"
        if hasattr(os, "setns"):
            try:
                os.setns(fd, nstype)
            except OSError as err:
                raise from_oserror(err, name) from err
        else:
            self._check(self._libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), name)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        encode = lambda s: s.encode() if s is not None else None  # noqa: E731 - C strings or NULL
        result = self._libc.mount(encode(source), encode(target), encode(fstype),
                                  ctypes.c_ulong(flags), encode(data))
        if result != 0:     # the call's name only for its error: pid 1 makes some forty mounts a start
            self._check(result, f"mount({source!r}, {fstype or 'none'}, {mount_flag_names(flags)})", target)

    def umount2(self, target: str, flags: int = 0) -> None:
        name = f"umount2({'MNT_DETACH' if flags & MNT_DETACH else flags})"
        self._check(self._libc.umount2(target.encode(), ctypes.c_int(flags)), name, target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        # glibc has no wrapper for pivot_root(2); call it by number (155 on x86_64, 41 on aarch64).
        result = self._libc.syscall(ctypes.c_long(syscall_number("pivot_root")), new_root.encode(),
                                    put_old.encode())
        self._check(result, f"pivot_root(new_root, put_old={put_old!r})", new_root)

    def chroot(self, path: str) -> None:
        try:
            os.chroot(path)
        except OSError as err:
            raise from_oserror(err, "chroot", path) from err

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        self._check(self._libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname", name)

    def mknod(self, path: str, mode: int, device: int) -> None:
        try:
            os.mknod(path, mode, device)
        except OSError as err:
            raise from_oserror(err, "mknod", path) from err

    def set_interface_up(self, name: str) -> None:
        """SIOCGIFFLAGS, add IFF_UP, SIOCSIFFLAGS, on any socket of the caller's network namespace (netdevice(7)):
        what `ip link set NAME up` does, without a process of its own."""
        import fcntl
        import socket
        import struct
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("16sH14x", name.encode(), 0)
            try:
                flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
                fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags | IFF_UP))
            except OSError as err:
                raise from_oserror(err, f"ioctl(SIOCSIFFLAGS, {name} up)", name) from err


    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        result = self._libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                                  ctypes.c_ulong(0), ctypes.c_ulong(0))
        if result < 0:
            self._check(result, f"prctl({_PRCTL_NAMES.get(option, option)}, {arg2})")
        return result

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        """capset(2) with version 3: two 32-bit words per set, low word first (capability.h)."""
        header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)       # pid 0: this thread
        data = (ctypes.c_uint32 * 6)(effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF,
                                     inheritable & 0xFFFFFFFF, effective >> 32, permitted >> 32,
                                     inheritable >> 32)
        self._check(self._libc.capset(header, data),
                    f"capset(effective={effective:#x}, permitted={permitted:#x}, inheritable={inheritable:#x})")

    def setgroups(self, groups: list[int]) -> None:
        try:
            os.setgroups(groups)
        except OSError as err:
            raise from_oserror(err, f"setgroups({groups})") from err

    def setresgid(self, gid: int) -> None:
        try:
            os.setresgid(gid, gid, gid)
        except OSError as err:
            raise from_oserror(err, f"setresgid({gid})") from err

    def setresuid(self, uid: int) -> None:
        try:
            os.setresuid(uid, uid, uid)
        except OSError as err:
            raise from_oserror(err, f"setresuid({uid})") from err

    def load_seccomp(self, seccomp_filter) -> None:
        """seccomp(SECCOMP_SET_MODE_FILTER): of a filter libseccomp compiled (``labcore.kernel.seccomp``), or of
        the BPF program it already wrote out (bytes, ``seccomp.program``). The program is handed to the kernel
        as is, by prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sock_fprog), which seccomp(2) says is the same
        call with no flags, as libseccomp makes it: pid 1 no longer spends milliseconds generating it."""
        if not isinstance(seccomp_filter, bytes):
            try:
                seccomp_filter.load()
            except OSError as err:
                raise from_oserror(err, "seccomp(SECCOMP_SET_MODE_FILTER)") from err
            return
        program = ctypes.create_string_buffer(seccomp_filter, len(seccomp_filter))
        # struct sock_fprog <linux/filter.h>: unsigned short len (in 8-byte instructions), struct sock_filter *
        fprog = ctypes.create_string_buffer(struct.pack("@HxxxxxxP", len(seccomp_filter) // 8,
                                                        ctypes.addressof(program)))
        result = self._libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                                  ctypes.c_void_p(ctypes.addressof(fprog)), ctypes.c_ulong(0), ctypes.c_ulong(0))
        if result < 0:
            self._check(result, "seccomp(SECCOMP_SET_MODE_FILTER)")

    def bpf(self, command: int, attr: bytes, name: str) -> int:
        """bpf(2): ``attr`` is the command's union bpf_attr, packed; returns what the call returns (an fd)."""
        buffer = ctypes.create_string_buffer(attr, len(attr))
        result = self._libc.syscall(ctypes.c_long(syscall_number("bpf")), ctypes.c_int(command), buffer,
                                    ctypes.c_uint(len(attr)))
        if result < 0:
            self._check(result, name)
        return result

    def clone_into_cgroup(self, cgroup_fd: int) -> int:
        """fork(2), the child born in the cgroup v2 group whose directory ``cgroup_fd`` opens: clone3(2) with
        CLONE_INTO_CGROUP and SIGCHLD, nothing shared. 0 in the child, its pid in the parent.

        Around the call, Python's own fork hooks, as os.fork runs them (Modules/posixmodule.c, os_fork_impl):
        the "os.fork" audit event, PyOS_BeforeFork, then PyOS_AfterFork_Child or _Parent (the import lock, the
        threading module's state, os.register_at_fork's callbacks). The call is made holding the GIL (a PyDLL
        function), as os.fork holds it, and nothing but the call runs between the hooks. What a bare clone3
        skips is glibc's own fork work (sysdeps/nptl/_Fork.c): the pthread_atfork handlers, the child's robust
        mutex list, its thread id in the thread's descriptor, and, with other threads, their locks (malloc's).
        None of that matters to a process with one thread, such as the shim, whose child execs soon."""
        if self._python is None:
            self._python = ctypes.PyDLL(None, use_errno=True)       # calls through it keep the GIL held
            for hook in ("PyOS_BeforeFork", "PyOS_AfterFork_Child", "PyOS_AfterFork_Parent"):
                getattr(self._python, hook).restype = None
        # struct clone_args <linux/sched.h>, CLONE_ARGS_SIZE_VER2: flags, pidfd, child_tid, parent_tid,
        # exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup.
        args = ctypes.create_string_buffer(struct.pack("=11Q", CLONE_INTO_CGROUP, 0, 0, 0, signal.SIGCHLD,
                                                       0, 0, 0, 0, 0, cgroup_fd), 88)
        number, size = ctypes.c_long(syscall_number("clone3")), ctypes.c_size_t(88)
        sys.audit("os.fork")
        self._python.PyOS_BeforeFork()
        try:
            pid = self._python.syscall(number, args, size)
        except BaseException:               # a signal's handler raised: no child; let go of the import lock
            self._python.PyOS_AfterFork_Parent()
            raise
        if pid == 0:
            self._python.PyOS_AfterFork_Child()
            return 0
        code = ctypes.get_errno()
        self._python.PyOS_AfterFork_Parent()
        if pid < 0:
            raise from_oserror(OSError(code, os.strerror(code)), "clone3(CLONE_INTO_CGROUP)", fd_path(cgroup_fd))
        return pid

    def clone3_allowed(self) -> bool:
        """clone3(NULL, 0) answers EINVAL (no arguments) where the kernel has the call and lets this process
        make it; ENOSYS before Linux 5.3, and where a seccomp filter answers for it, as Docker's default profile
        does so that glibc falls back to clone(2). Asked once per process."""
        if self._clone3 is None:
            result = self._libc.syscall(ctypes.c_long(syscall_number("clone3")), None, ctypes.c_size_t(0))
            self._clone3 = result < 0 and ctypes.get_errno() == errno.EINVAL
        return self._clone3


class Recorder:
    """A fake kernel that records each call, for unit tests of step order without root.

    ``fail`` maps a syscall name to an errno that the call raises, to test error paths.
    """

    def __init__(self, fail: dict[str, int] | None = None):
        self.calls: list[tuple[str, tuple]] = []
        self.fail = fail or {}

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def __getattr__(self, name: str):
        if name not in _SYSCALLS:
            raise AttributeError(name)

        def record(*args):
            self.calls.append((name, args))
            if name in self.fail:
                code = self.fail[name]
                raise from_oserror(OSError(code, os.strerror(code)), name)
            return 0                  # what a successful call returns (bpf's fd, prctl's value)
        return record


_SYSCALLS = ("unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "sethostname", "mknod",
             "set_interface_up", "prctl", "capset", "setgroups", "setresgid", "setresuid", "load_seccomp", "bpf",
             "clone3_allowed")          # not clone_into_cgroup: a fake fork would run the child's code here


class Seam:
    """Where one kind of kernel call goes: ``backend()`` is the real kernel (made on first use) unless a test
    has swapped in a fake with ``use(fake)`` for the duration of a block. ``labcore.kernel.netlink`` keeps its
    own, for rtnetlink's messages."""

    def __init__(self, make_real):
        self.make_real, self.active = make_real, None

    def backend(self):
        if self.active is None:
            self.active = self.make_real()
        return self.active

    @contextlib.contextmanager
    def use(self, fake):
        previous, self.active = self.active, fake
        try:
            yield fake
        finally:
            self.active = previous


_seam = Seam(lambda: Kernel())
backend, use = _seam.backend, _seam.use         # every syscall below goes through backend()


def unshare(flags: int) -> None:
    backend().unshare(flags)


def setns(fd: int, nstype: int = 0) -> None:
    backend().setns(fd, nstype)


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    backend().mount(source, target, fstype, flags, data)


def umount2(target: str, flags: int = 0) -> None:
    backend().umount2(target, flags)


def pivot_root(new_root: str, put_old: str) -> None:
    backend().pivot_root(new_root, put_old)


def chroot(path: str) -> None:
    backend().chroot(path)


def sethostname(name: str) -> None:
    backend().sethostname(name)


def mknod(path: str, mode: int, device: int) -> None:
    backend().mknod(path, mode, device)


def set_interface_up(name: str) -> None:
    backend().set_interface_up(name)


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return backend().prctl(option, arg2, arg3)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    backend().capset(effective, permitted, inheritable)


def setgroups(groups: list[int]) -> None:
    backend().setgroups(groups)


def setresgid(gid: int) -> None:
    backend().setresgid(gid)


def setresuid(uid: int) -> None:
    backend().setresuid(uid)


def load_seccomp(seccomp_filter) -> None:
    backend().load_seccomp(seccomp_filter)


def bpf(command: int, attr: bytes, name: str = "bpf") -> int:
    return backend().bpf(command, attr, name)


def clone_into_cgroup(cgroup_fd: int) -> int:
    return backend().clone_into_cgroup(cgroup_fd)


def clone3_allowed() -> bool:
    return bool(backend().clone3_allowed())


def fork(cgroup_fd: int | None = None) -> int:
    """os.fork; with ``cgroup_fd``, the child born in that cgroup v2 group instead (``clone_into_cgroup``)."""
    return os.fork() if cgroup_fd is None else clone_into_cgroup(cgroup_fd)
