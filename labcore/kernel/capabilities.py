"""Capabilities: root's power, cut into pieces that a container keeps or loses one by one.

Since Linux 2.2 "root" is not one privilege but about forty (capabilities(7)): CAP_CHOWN lets a process
chown any file, CAP_NET_ADMIN configure the network, CAP_SYS_ADMIN mount filesystems and much more. The kernel
checks the one a call needs, not the uid. Each process has five sets, 64-bit masks shown in /proc/PID/status:

    CapBnd   bounding: the most the process and its children can ever have again (dropped with prctl(2))
    CapPrm   permitted: what it may switch on
    CapEff   effective: what the kernel checks right now
    CapInh   inheritable, CapAmb ambient: what survives an execve(2) of a file without file capabilities

Docker starts every container with 14 of them (moby oci/caps/defaults.go), CapEff 00000000a80425fb: enough
to chown, kill, bind port 80, mknod, chroot, change uid; not enough to mount, load a module, trace a process,
change the clock or the network. `--cap-add`/`--cap-drop` change the list, `--privileged` takes all of them.

How a container gets them, in runc's order (libcontainer/init_linux.go, finalizeNamespace): drop from the
bounding set every capability not on the list; keep the others across the change of user
(PR_SET_KEEPCAPS); become the user; set effective = permitted = the list, inheritable and ambient empty.
At execve(2) the kernel recomputes the sets (capabilities(7), "Transformation of capabilities during
execve()"): a root process gets its bounding set back as permitted and effective; any other uid gets none,
which is why `docker run --user 1000` shows CapEff 0.

Next: ``labcore.kernel.seccomp`` filters the system calls themselves.
"""
from __future__ import annotations


from labcore.errors import BadInput
from labcore.kernel import procfs, syscalls

# <linux/capability.h>, bit number = index. capabilities(7) documents each one.
NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
# Docker's default set, in moby's order (oci/caps/defaults.go).
DEFAULT = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
           "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
           "CAP_KILL", "CAP_AUDIT_WRITE")
STATUS_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def mask(names) -> int:
    """The 64-bit mask of a set of names, as /proc/PID/status prints it in hex."""
    return sum(1 << NAMES.index(name) for name in set(names))


def decode(hex_mask: str | int) -> list[str]:
    """A mask as names: bit N set means capability N; a bit this table does not know as ``cap_N``."""
    value = int(hex_mask, 16) if isinstance(hex_mask, str) else hex_mask
    return [NAMES[bit] if bit < len(NAMES) else f"cap_{bit}"
            for bit in range(value.bit_length()) if value >> bit & 1]


def canonical(name: str, flag: str) -> str:
    """``sys_admin``, ``SYS_ADMIN`` or ``CAP_SYS_ADMIN`` -> ``CAP_SYS_ADMIN``, as Docker accepts them."""
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in NAMES:
        raise BadInput(f"unknown capability: {name!r} ({flag})",
                       fix="use a name from capabilities(7) with or without CAP_, e.g. NET_ADMIN, or ALL")
    return full


def held_by_this_process() -> tuple[str, ...]:
    """The bounding set of the calling process: the most a container it starts may be given."""
    bounding = procfs.status_field("CapBnd")
    return tuple(decode(bounding)) if bounding else NAMES


def resolve(cap_add=(), cap_drop=(), privileged: bool = False) -> tuple[str, ...]:
    """The container's set, by Docker's rules (moby oci/caps/utils.go, TweakCapabilities): --privileged
    takes all; ``ALL`` in --cap-add takes all but the drops; ``ALL`` in --cap-drop keeps only the adds;
    otherwise the default list less the drops, plus the adds. "All" is what this process holds: a
    capability missing from its own bounding set cannot be given back (there Docker's --privileged fails
    with EPERM from capset)."""
    held = set(held_by_this_process())          # once: each call reads /proc/self/status
    everything = tuple(name for name in NAMES if name in held)
    adds = {canonical(name, "--cap-add") for name in cap_add if name.upper() != "ALL"}
    drops = {canonical(name, "--cap-drop") for name in cap_drop if name.upper() != "ALL"}
    if privileged:
        chosen = set(everything)
    elif any(name.upper() == "ALL" for name in cap_add):
        chosen = set(everything) - drops
    elif any(name.upper() == "ALL" for name in cap_drop):
        chosen = adds
    else:
        chosen = (set(DEFAULT) - drops) | adds
    return tuple(name for name in NAMES if name in chosen)


def last_capability() -> int:
    """The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    try:
        return int(procfs.sysctl("kernel.cap_last_cap"))
    except (OSError, ValueError):
        return len(NAMES) - 1


# --- in pid 1, just before the command: runc's finalizeNamespace ---------------------------------------------

def drop_bounding_set(keep) -> None:
    """prctl(PR_CAPBSET_DROP) for every capability not kept: neither this process nor anything it
    executes can ever regain it (capabilities(7), "Capability bounding set")."""
    kept = mask(keep)
    for bit in range(last_capability() + 1):
        if not kept >> bit & 1:
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, bit)


def keep_across_setuid(keep: bool) -> None:
    """PR_SET_KEEPCAPS: without it, setuid(2) away from 0 empties the permitted set (prctl(2))."""
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, int(keep))


def set_capabilities(keep) -> None:
    """Effective = permitted = the list; inheritable and ambient empty, as Docker leaves them since
    20.10.14 (CVE-2022-24769: a non-empty inheritable set handed capabilities to setuid-less programs)."""
    kept = mask(keep)
    syscalls.capset(effective=kept, permitted=kept, inheritable=0)
    syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)


def read_status(pid: int | str = "self") -> dict[str, str]:
    """The Cap*, NoNewPrivs and Seccomp lines of /proc/PID/status, as the kernel prints them."""
    wanted = (*STATUS_FIELDS, "NoNewPrivs", "Seccomp", "Seccomp_filters")
    fields = procfs.status(pid)
    return {name: fields[name] for name in wanted if name in fields}
