"""Limits: `docker run`'s resource flags, read the way Docker reads them, before anything is created.

    --memory 64m                 bytes of RAM; suffix b, k, m, g (powers of 1024, as Docker's RAMInBytes)
    --cpus 0.5                   half a core: a CFS quota of 50000 us per 100000 us period
    --cpu-shares 512             relative weight under contention (1024 is the default)
    --pids-limit 10              most tasks (processes and threads) at once; -1 means unlimited
    --device-read-bps  /dev/sda:1mb     bytes per second from one block device
    --device-write-bps /dev/sda:1mb
    --device-cgroup-rule 'c 1:3 rwm'    which device nodes may be read, written, mknod-ed

A bad value is refused with ``BadInput`` naming the accepted form: `labcore run` parses every flag first,
so a typo never leaves half a container behind. The result is a ``Limits``, which both cgroup backends
(``labcore.kernel.cgroups.v1``, ``.v2``) turn into their own interface files.

Next: ``labcore.kernel.cgroups`` creates a group and writes these limits into it.
"""
from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass

from labcore.errors import BadInput

CPU_PERIOD_US = 100_000          # Docker's --cpu-period default: CFS checks the quota every 100 ms
MIN_MEMORY = 6 * 1024 * 1024     # Docker refuses less: the runtime itself would not start in it
MAX_SHARES = 262_144             # cpu.shares accepts 2..262144 (kernel/sched/sched.h, MIN/MAX_SHARES)

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$", re.IGNORECASE)
_RULE = re.compile(r"^([abc]) (\d+|\*):(\d+|\*) ([rwm]{1,3})$")


@dataclass(frozen=True)
class Throttle:
    """A bytes-per-second cap on one block device, named by its numbers as the kernel wants it."""
    device: str
    major: int
    minor: int
    bps: int


@dataclass(frozen=True)
class DeviceRule:
    """One devices-cgroup rule: type (a, b, c), major, minor ('*' = any), access (r, w, m)."""
    kind: str
    major: str
    minor: str
    access: str
    allow: bool = True

    def __str__(self) -> str:       # the v1 devices.allow/devices.deny syntax (cgroup-v1/devices.rst)
        return "a" if self.kind == "a" else f"{self.kind} {self.major}:{self.minor} {self.access}"


# What runc (libcontainer/specconv AllowedDevices) and Docker let every container use once all else is
# denied: mknod of anything, then null, zero, full, random, urandom, tty, console, ptmx, pts and tun.
DEFAULT_ALLOWED = tuple(DeviceRule(k, a, b, acc) for k, a, b, acc in [
    ("c", "*", "*", "m"), ("b", "*", "*", "m"), ("c", "1", "3", "rwm"), ("c", "1", "5", "rwm"),
    ("c", "1", "7", "rwm"), ("c", "1", "8", "rwm"), ("c", "1", "9", "rwm"), ("c", "5", "0", "rwm"),
    ("c", "5", "1", "rwm"), ("c", "5", "2", "rwm"), ("c", "136", "*", "rwm"), ("c", "10", "200", "rwm"),
])
DENY_ALL = DeviceRule("a", "*", "*", "rwm", allow=False)


@dataclass(frozen=True)
class Limits:
    """What a container may use; None (or empty) means "not limited"."""
    memory: int | None = None                 # bytes; swap is not allowed on top (see memory_swap)
    memory_swap: int | None = None            # memory + swap in bytes; None = same as memory: no swap
    cpus: float | None = None
    cpu_shares: int | None = None
    pids: int | None = None
    read_bps: tuple[Throttle, ...] = ()
    write_bps: tuple[Throttle, ...] = ()
    devices: tuple[DeviceRule, ...] = ()      # applied in order, as the kernel applies writes in order
    swappiness: int | None = None             # 0..100: how readily the group's pages go to swap (v1 only)

    @property
    def cpu_period_us(self) -> int:
        return CPU_PERIOD_US

    @property
    def cpu_quota_us(self) -> int | None:
        return None if self.cpus is None else round(self.cpus * CPU_PERIOD_US)

    @property
    def cpu_weight(self) -> int | None:
        """cgroup v2's cpu.weight (1..10000, default 100) for v1 shares, by runc's formula."""
        if self.cpu_shares is None:
            return None
        return 1 + ((self.cpu_shares - 2) * 9999) // (MAX_SHARES - 2)


def parse_size(text: str, flag: str) -> int:
    """Bytes from Docker's size syntax: ``64m``, ``1g``, ``512k``, ``1.5g``, ``1mb``, ``100``."""
    match = _SIZE.match(str(text).strip())
    if not match:
        raise BadInput(f"{flag} {text!r} is not a size", fix=f"write a number with an optional unit "
                       f"b, k, m or g (powers of 1024), e.g. {flag} 64m")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_memory(text: str) -> int:
    size = parse_size(text, "--memory")
    if size < MIN_MEMORY:
        raise BadInput(f"--memory {text!r} is below the minimum of 6m", fix="e.g. --memory 64m (at least 6m)")
    return size


def parse_cpus(text: str, on_this_host: bool = True) -> float:
    """A number of cores, at least 0.01 and, ``on_this_host``, at most the CPUs this host has (as Docker checks;
    a compose file may run on another host, so its check leaves the top out)."""
    try:
        cpus = float(text)
    except (TypeError, ValueError):
        raise BadInput(f"--cpus {text!r} is not a number", fix="a number of cores, a decimal point allowed: "
                       "e.g. --cpus 0.5 or --cpus 2") from None
    if not 0.01 <= cpus < math.inf:                # NaN compares false: refused here too
        raise BadInput(f"--cpus {text!r} is out of range", fix="at least 0.01 cores, e.g. --cpus 0.5")
    cores = os.cpu_count() or 1
    if on_this_host and cpus > cores:
        raise BadInput(f"--cpus {text!r} is out of range", fix=f"give a number of cores from 0.01 to "
                       f"{cores} (this host's CPUs), e.g. --cpus 0.5")
    return cpus


def parse_int(text: str, flag: str, low: int, high: int | None = None, example: str = "") -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        top = f" to {high}" if high is not None else " or more"
        raise BadInput(f"{flag} {text!r} is not a whole number from {low}{top}",
                       fix=f"e.g. {flag} {example or low}")
    return value


def parse_pids(text: str) -> int | None:
    # Docker's --pids-limit: a positive number, or 0 / -1 for "unlimited".
    value = parse_int(text, "--pids-limit", -1, example="10")
    return None if value <= 0 else value


def block_device_numbers(path: str) -> tuple[int, int]:
    """(major, minor) of a block device node; the throttle files want numbers, not names."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise BadInput(f"no device {path!r}", path=path, fix="name a block device, e.g. /dev/vda") from err
    if not stat.S_ISBLK(info.st_mode):
        raise BadInput(f"{path!r} is not a block device", path=path,
                       fix="name a disk such as /dev/sda (see `lsblk`)")
    return os.major(info.st_rdev), os.minor(info.st_rdev)


def parse_throttle(text: str, flag: str) -> Throttle:
    """``/dev/sda:1mb`` -> Throttle('/dev/sda', 8, 0, 1048576)."""
    device, sep, rate = str(text).rpartition(":")
    if not sep or not device.startswith("/"):
        raise BadInput(f"{flag} {text!r} is not DEVICE:RATE", fix=f"e.g. {flag} /dev/sda:1mb")
    bps = parse_size(rate, flag)
    if bps <= 0:
        raise BadInput(f"{flag} {text!r} has no rate", fix=f"e.g. {flag} /dev/sda:1mb")
    return Throttle(device, *block_device_numbers(device), bps)


def parse_device_rule(text: str) -> DeviceRule:
    """``'c 1:3 rwm'``: type a|b|c, MAJOR:MINOR (each a number or *), access from r, w, m."""
    match = _RULE.match(str(text).strip())
    if not match:
        raise BadInput(f"--device-cgroup-rule {text!r} is not 'TYPE MAJOR:MINOR ACCESS'",
                       fix="e.g. --device-cgroup-rule 'c 1:3 rwm' (type a, b or c; * for any number)")
    return DeviceRule(*match.groups())


def parse_run_limits(memory=None, cpus=None, cpu_shares=None, pids_limit=None, device_read_bps=(),
                     device_write_bps=(), device_cgroup_rule=(), memory_swap=None,
                     memory_swappiness=None) -> Limits:
    """The Limits for `labcore run`'s flags (strings as typed, or None); BadInput before anything exists.

    Device rules follow Docker: given any, the container gets "deny all", the default devices, then yours.
    """
    mem = parse_memory(memory) if memory is not None else None
    swap = parse_size(memory_swap, "--memory-swap") if memory_swap is not None else None
    if swap is not None and (mem is None or swap < mem):
        raise BadInput("--memory-swap is memory plus swap, so it needs --memory and must not be below it",
                       fix="e.g. --memory 64m --memory-swap 128m")
    rules = tuple(parse_device_rule(rule) for rule in device_cgroup_rule)
    return Limits(
        memory=mem, memory_swap=swap,
        cpus=parse_cpus(cpus) if cpus is not None else None,
        cpu_shares=parse_int(cpu_shares, "--cpu-shares", 2, MAX_SHARES, "512")
        if cpu_shares is not None else None,
        pids=parse_pids(pids_limit) if pids_limit is not None else None,
        read_bps=tuple(parse_throttle(t, "--device-read-bps") for t in device_read_bps),
        write_bps=tuple(parse_throttle(t, "--device-write-bps") for t in device_write_bps),
        devices=(DENY_ALL, *DEFAULT_ALLOWED, *rules) if rules else (),
        swappiness=parse_int(memory_swappiness, "--memory-swappiness", 0, 100, "60")
        if memory_swappiness is not None else None,
    )
