"""Confinement: what root inside a container may still do, and the layers Docker puts in its way.

Namespaces decide what a container sees, cgroups how much it uses. Neither stops its root from asking the
kernel for dangerous things: to mknod the host's disk and mount it, to write /proc/sys/kernel/core_pattern
(whose program the *host* kernel runs as root), to remount /sys writable, to mount a cgroup hierarchy and
lift its own memory limit. Docker stacks five more layers on every container, unless `--privileged`:

    capabilities   14 of ~40 pieces of root (``labcore.kernel.capabilities``)          --cap-add, --cap-drop
    seccomp        a filter on the system calls themselves (``labcore.kernel.seccomp``) --security-opt seccomp=
    masked paths   /proc/keys, /proc/kcore, /sys/firmware, ... covered with /dev/null or an empty tmpfs
    read-only      /proc/sys, /proc/sysrq-trigger, /proc/irq, /proc/bus, /proc/fs; /sys; the cgroupfs
    devices        only null, zero, full, random, urandom, tty; the device cgroup refuses every other node
    (no_new_privs: setuid files stop granting privileges; `--security-opt no-new-privileges`)

pid 1 applies them in runc's order (libcontainer/standard_init_linux.go, Init; rootfs_linux.go):

    mounts, devices, cgroupfs (ro)   prepareRootfs: built under the new root, before pivot_root
    pivot_root                      ``labcore.kernel.rootfs``
    read-only root (--read-only)    finalizeRootfs
    read-only paths, masked paths   after the pivot, on the container's own /proc and /sys
    no_new_privs                    before telling the parent it is ready
    seccomp, if no no_new_privs     loading a filter without no_new_privs needs CAP_SYS_ADMIN: before the drop
    bounding set, user, capabilities   finalizeNamespace
    seccomp, with no_new_privs      as late as possible: the fewest calls run under the filter
    execve

Without root (rootless, inside a user namespace) the same steps run, as rootless podman runs them: the
kernel already refuses mknod and the host's sysctls there, and there is no device cgroup to fill.

Next: ``labcore.lessons.security`` shows each escape working under --privileged and refused by default.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from labcore.errors import BadInput, LabError
from labcore.kernel import capabilities, syscalls
from labcore.kernel.syscalls import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT

# moby daemon/pkg/oci/defaults.go: DefaultLinuxSpec, defaultLinuxMaskedPaths.
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list", "/proc/timer_stats",
                "/sys/devices/virtual/powercap", "/sys/firmware")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICE_FORM = "use --device HOST[:CONTAINER[:PERMISSIONS]], e.g. --device /dev/fuse or --device /dev/sda:/dev/xvda:r"


@dataclass(frozen=True)
class Device:
    """A host device node given to the container (--device): its node in /dev, and its cgroup rule."""
    host: str
    target: str
    kind: str                       # "b" or "c"
    major: int
    minor: int
    permissions: str                # some of r, w, m
    mode: int = 0o666


@dataclass
class Confinement:
    """Docker's defaults with the flags applied: everything pid 1 needs to confine the command."""
    capabilities: tuple[str, ...] = capabilities.DEFAULT
    seccomp: object = None                      # a labcore.kernel.seccomp.Profile, or None: unconfined
    seccomp_filter: object = None               # ...its BPF program, by libseccomp on the host: pid 1 loads it
    no_new_privileges: bool = False
    privileged: bool = False
    read_only: bool = False                     # --read-only: the root filesystem
    masked_paths: tuple[str, ...] = MASKED_PATHS
    readonly_paths: tuple[str, ...] = READONLY_PATHS
    devices: tuple[Device, ...] = field(default_factory=tuple)


# --- from the user's flags, before anything exists -------------------------------------------------------------

def parse_security_opts(options) -> tuple[str | None, bool]:
    """--security-opt values -> (seccomp profile path, "unconfined" or None for the default; no_new_privs).
    Docker's spellings: ``seccomp=unconfined``, ``seccomp=PATH``, ``seccomp:PATH``, ``no-new-privileges``,
    ``no-new-privileges=true|false``. AppArmor, SELinux and the rest are refused, not ignored."""
    profile, no_new_privs = None, False
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            key, sep, value = option.partition(":")        # the older spelling, seccomp:PATH
        if key == "seccomp" and value:
            profile = value
        elif key == "no-new-privileges" and value in ("", "true", "false"):
            no_new_privs = value != "false"
        else:
            raise BadInput(f"invalid --security-opt: {option!r}",
                           fix="labcore implements seccomp=unconfined, seccomp=PROFILE.json and "
                               "no-new-privileges[=true|false] (no apparmor=, label=, systempaths=)")
    return profile, no_new_privs


def parse_device(text: str) -> Device:
    """``HOST[:CONTAINER[:PERMISSIONS]]`` (Docker's --device): HOST must be a device node of this host."""
    host, target, permissions = device_form(text)
    try:
        info = os.stat(host)
    except OSError as err:
        raise BadInput(f"error gathering device information while adding custom device {host!r}: "
                       f"{err.strerror}", path=host, fix=DEVICE_FORM) from err
    if not (stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)):
        raise BadInput(f"{host} is not a device node", path=host, fix=DEVICE_FORM)
    return Device(host, os.path.normpath(target), "c" if stat.S_ISCHR(info.st_mode) else "b",
                  os.major(info.st_rdev), os.minor(info.st_rdev), permissions, stat.S_IMODE(info.st_mode))


def device_form(text: str) -> tuple[str, str, str]:
    """--device's words, checked for form only: (HOST, CONTAINER, PERMISSIONS)."""
    parts = text.split(":")
    host, target, permissions = parts[0], parts[0], "rwm"
    if len(parts) == 2 and parts[1] and set(parts[1]) <= set("rwm"):
        permissions = parts[1]                               # HOST:PERMISSIONS
    elif len(parts) == 2:
        target = parts[1]
    elif len(parts) == 3:
        target, permissions = parts[1], parts[2]
    if len(parts) > 3 or not os.path.isabs(host) or not os.path.isabs(target) \
            or not permissions or not set(permissions) <= set("rwm"):
        raise BadInput(f"invalid device specification: {text!r}", fix=DEVICE_FORM)
    return host, target, permissions


def confinement_for(spec) -> "Confinement":
    """The container's confinement from its ``labcore.runtime.spec.Spec``; BadInput for a malformed flag."""
    from labcore.kernel import seccomp
    profile_path, no_new_privs = parse_security_opts(spec.security_opt)
    caps = capabilities.resolve(spec.cap_add, spec.cap_drop, spec.privileged)
    profile = None if spec.privileged or profile_path == "unconfined" else seccomp.load_profile(profile_path)
    # Compiled here, before pid 1 pivots into an image that has neither libseccomp nor its Python binding.
    compiled = None if profile is None else seccomp.compiled_for(profile, caps)
    return Confinement(
        capabilities=caps, seccomp=profile, seccomp_filter=compiled,
        no_new_privileges=no_new_privs, privileged=spec.privileged, read_only=spec.read_only,
        masked_paths=() if spec.privileged else MASKED_PATHS,
        readonly_paths=() if spec.privileged else READONLY_PATHS,
        devices=tuple(parse_device(text) for text in spec.devices))


def device_rules(confinement: Confinement):
    """The device cgroup's list: Docker's and runc's defaults, then one rule per --device; none when
    privileged (every device is allowed)."""
    from labcore.kernel.cgroups.limits import DEFAULT_ALLOWED, DENY_ALL, DeviceRule
    if confinement.privileged:
        return ()
    extra = tuple(DeviceRule(d.kind, str(d.major), str(d.minor), d.permissions) for d in confinement.devices)
    return (DENY_ALL, *DEFAULT_ALLOWED, *extra)


# --- in pid 1, after pivot_root ------------------------------------------------------------------------------

def finalize_root(confinement: Confinement) -> None:
    """runc's finalizeRootfs and the paths after it: the root read-only, then read-only and masked paths."""
    if confinement.read_only:
        remount_read_only("/")
    for path in confinement.readonly_paths:
        make_read_only(path)
    for path in confinement.masked_paths:
        mask(path)


def remount_read_only(path: str) -> None:
    """A bind remount changes this mount's flags only. In a user namespace the flags the host locked
    (nosuid, nodev, noexec) must be kept, or the kernel refuses the remount (mount_namespaces(7))."""
    kept = os.statvfs(path).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
    syscalls.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


def make_read_only(path: str) -> None:
    """runc's readonlyPath: bind the path onto itself, then remount that bind read-only."""
    try:
        syscalls.mount(path, path, None, MS_BIND | MS_REC)
    except LabError as err:
        if err.errno == errno.ENOENT:
            return                  # this kernel has no such file: nothing to protect
        raise
    remount_read_only(path)


def mask(path: str) -> None:
    """runc's maskPath: /dev/null bound over a file, an empty read-only tmpfs over a directory."""
    try:
        syscalls.mount("/dev/null", path, None, MS_BIND)
    except LabError as err:
        if err.errno == errno.ENOENT:
            return
        if err.errno != errno.ENOTDIR:
            raise
        syscalls.mount("tmpfs", path, "tmpfs", MS_RDONLY)


def forbid_new_privileges(confinement: Confinement) -> None:
    """PR_SET_NO_NEW_PRIVS: from now on execve(2) never grants more than the caller has: a setuid-root
    file runs with the caller's uid, file capabilities are ignored (prctl(2); kernel no_new_privs.rst)."""
    if confinement.no_new_privileges:
        syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)


# --- in pid 1 (and in `exec`), just before execve -----------------------------------------------------------------

def drop_privileges(confinement: Confinement, identity, rootless: bool) -> None:
    """seccomp, the bounding set, the user, the capabilities: runc's order (see the module's docstring)."""
    if confinement.seccomp_filter is not None and not confinement.no_new_privileges:
        load_filter(confinement)            # still holding CAP_SYS_ADMIN, which a filter without nnp needs
    capabilities.drop_bounding_set(confinement.capabilities)
    capabilities.keep_across_setuid(True)
    become(identity, rootless)
    capabilities.keep_across_setuid(False)
    capabilities.set_capabilities(confinement.capabilities)
    if confinement.seccomp_filter is not None and confinement.no_new_privileges:
        load_filter(confinement)            # as late as possible: everything after it runs filtered


def load_filter(confinement: Confinement) -> None:
    syscalls.load_seccomp(confinement.seccomp_filter)


def become(identity, rootless: bool) -> None:
    """setgroups, setresgid, setresuid. In a user namespace setgroups is denied (user_namespaces(7)): runc
    silently keeps the groups there, and so does this."""
    try:
        if not rootless:
            syscalls.setgroups(list(identity.groups))
        syscalls.setresgid(identity.gid)
        syscalls.setresuid(identity.uid)
    except LabError as err:
        if rootless and err.errno in (errno.EINVAL, errno.EPERM):
            err.fix = "a rootless container maps only uid 0 (your own uid): run without --user"
        raise
