"""/proc: the kernel's own account of every process, read in one place.

Everything the lab shows as evidence — which namespaces a process is in, which cgroup, what is mounted
where, which capabilities it holds — the kernel prints as text files under /proc (man 5 proc). Each file has
its own small grammar, and this module is where each is parsed, once, as psutil keeps one platform module:

    /proc/PID/mountinfo   ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS;
                          a space, tab, newline or backslash in a path is written as an octal escape (\\040)
    /proc/PID/cgroup      HIERARCHY-ID:CONTROLLERS:PATH, one line per v1 hierarchy; "0::PATH" for v2 (cgroups(7))
    /proc/PID/status      "Name:\\tvalue" lines: Uid, CapEff, NoNewPrivs, Seccomp, NSpid...
    /proc/PID/stat        one line; the command name is in parentheses and may hold spaces or ")", so the
                          fields are counted from the last ")": state is field 3, ppid 4, start time 22
    /proc/PID/ns/KIND     a symlink "KIND:[INODE]": two processes share a namespace when the inodes are equal
    /proc/PID/uid_map     INSIDE OUTSIDE COUNT lines (user_namespaces(7)); gid_map the same
    /proc/filesystems     the filesystem types this kernel knows, "nodev" before those that need no device

Every reader takes ``root`` (default "/proc"), so the unit tests run them against a fixture tree
(tests/unit/fixtures/proc). ``pid`` is a number or "self". What /proc shows depends on who reads it: the
reader's pid namespace numbers the directories, and its mount namespace decides which /proc is mounted.

Next: ``labcore.kernel.namespaces``, which these files make visible.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

PROC = "/proc"
_OCTAL = re.compile(rb"\\([0-7]{3})")


def path(pid: int | str = "self", *names: str, root: str = PROC) -> str:
    """/proc/PID/NAME..., below ``root``."""
    return os.path.join(root, str(pid), *names)


def read(pid: int | str, name: str, root: str = PROC) -> str:
    """The text of /proc/PID/NAME (OSError when the process is gone or hidden)."""
    return Path(path(pid, name, root=root)).read_text()


# --- mountinfo ----------------------------------------------------------------------------------------------

def escape(path: str) -> str:
    """``path`` as mountinfo writes it: space, tab, newline and backslash as octal escapes (``unescape``)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def unescape(text: str) -> str:
    """A mountinfo path: the kernel writes space, tab, newline and backslash as octal escapes (seq_file's
    mangle_path: " \\t\\n\\\\"), so "/a b" reads "/a\\040b". The rest is raw bytes, UTF-8 here."""
    if "\\" not in text:
        return text                 # nearly every path: nothing escaped, nothing to encode and decode
    return _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), text.encode(errors="surrogateescape")).decode(
        errors="surrogateescape")


@dataclass(frozen=True)
class Mount:
    """One line of /proc/PID/mountinfo, paths unescaped."""
    id: int
    parent: int
    device: str                 # MAJ:MIN
    root: str                   # the directory of the filesystem shown at ``point`` (a bind mount's source)
    point: str
    options: str                # per-mount: rw, nosuid, relatime...
    optional: tuple[str, ...]   # shared:N, master:N, propagate_from:N, unbindable; none: private
    fstype: str
    source: str
    super_options: str          # per-filesystem: a v1 cgroup's controllers, an overlay's lowerdir...

    @property
    def propagation(self) -> str:
        return " ".join(self.optional) or "private"


def parse_mountinfo(text: str) -> list[Mount]:
    """Every line of a mountinfo text; the optional fields end at the lone "-" (proc(5))."""
    table = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        dash = fields.index("-")
        fstype, source, options = (fields[dash + 1:] + ["", "", ""])[:3]
        table.append(Mount(int(fields[0]), int(fields[1]), fields[2], unescape(fields[3]), unescape(fields[4]),
                           fields[5], tuple(fields[6:dash]), fstype, unescape(source), options))
    return table


def mountinfo(pid: int | str = "self", root: str = PROC) -> list[Mount]:
    return parse_mountinfo(read(pid, "mountinfo", root))


def mounts_under(point: str, pid: int | str = "self", root: str = PROC) -> list[str]:
    """Mount points at or below ``point``, deepest first; a point with mounts stacked on it comes once per
    mount, so unmounting each listed entry detaches them all."""
    point = os.path.abspath(point)
    text = read(pid, "mountinfo", root)
    if " " + escape(point) not in text:
        return []                   # not even as text: no need to parse the table
    found = [m.point for m in parse_mountinfo(text)
             if m.point == point or m.point.startswith(point.rstrip("/") + "/")]
    return sorted(found, key=len, reverse=True)


def mount_at(point: str, pid: int | str = "self", root: str = PROC) -> Mount | None:
    """The mount on top at ``point`` (the last one mounted there), or None."""
    return next((m for m in reversed(mountinfo(pid, root)) if m.point == point), None)


# --- cgroup -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CgroupLine:
    """One line of /proc/PID/cgroup: a v1 hierarchy with its controllers, or the v2 tree (id 0, none)."""
    hierarchy: int
    controllers: tuple[str, ...]      # ("cpu", "cpuacct"), ("name=systemd",), () for v2
    path: str                         # relative to the reader's cgroup namespace root

    @property
    def key(self) -> str:
        """"v2", or the controllers as the kernel prints them ("cpu,cpuacct")."""
        return ",".join(self.controllers) or "v2"


def parse_cgroup(text: str) -> list[CgroupLine]:
    found = []
    for line in text.splitlines():
        if line.count(":") >= 2:
            hierarchy, controllers, group = line.split(":", 2)
            found.append(CgroupLine(int(hierarchy), tuple(filter(None, controllers.split(","))), group))
    return found


def cgroups(pid: int | str = "self", root: str = PROC) -> list[CgroupLine]:
    return parse_cgroup(read(pid, "cgroup", root))


def cgroup_of(controller: str = "", pid: int | str = "self", root: str = PROC) -> str | None:
    """The group of ``pid`` in the hierarchy holding ``controller`` ("" or "v2": the unified tree)."""
    for line in cgroups(pid, root):
        if (controller in ("", "v2") and line.hierarchy == 0 and not line.controllers) or \
                controller in line.controllers:
            return line.path
    return None


def own_cgroup(pid: int | str = "self", root: str = PROC) -> str:
    """The v2 group, else the memory hierarchy's, else "/" (where a lab's cgroups are placed below)."""
    return cgroup_of("v2", pid, root) or cgroup_of("memory", pid, root) or "/"


# --- status and stat ----------------------------------------------------------------------------------------

def status(pid: int | str = "self", root: str = PROC) -> dict[str, str]:
    """/proc/PID/status as {name: value}, the value's tabs and padding stripped to single spaces."""
    return parse_status(read(pid, "status", root))


def parse_status(text: str) -> dict[str, str]:
    return {name: " ".join(value.split()) for name, sep, value in
            (line.partition(":") for line in text.splitlines()) if sep}


def status_field(name: str, pid: int | str = "self", root: str = PROC) -> str:
    return status(pid, root).get(name, "")


def nspids(pid: int | str = "self", root: str = PROC) -> list[int]:
    """NSpid: the process's pid in each pid namespace, from the reader's down to its own."""
    return [int(value) for value in status_field("NSpid", pid, root).split()]


def ids(name: str = "Uid", pid: int | str = "self", root: str = PROC) -> tuple[int, ...]:
    """Uid or Gid: real, effective, saved, filesystem."""
    return tuple(int(value) for value in status_field(name, pid, root).split())


def stat(pid: int | str = "self", root: str = PROC) -> list[str]:
    """The fields of /proc/PID/stat after the command name: [0] is field 3 (state), [1] field 4 (ppid),
    [19] field 22 (start time, in clock ticks since boot)."""
    return read(pid, "stat", root).rsplit(")", 1)[1].split()


def state(pid: int | str = "self", root: str = PROC) -> str:
    """R running, S sleeping, D uninterruptible, T stopped, Z zombie..."""
    return stat(pid, root)[0]


def ppid(pid: int | str = "self", root: str = PROC) -> int:
    return int(stat(pid, root)[1])


def start_time(pid: int | str = "self", root: str = PROC) -> int | None:
    """Field 22: with the pid, it names a process uniquely across pid reuse; None once it is gone."""
    try:
        return int(stat(pid, root)[19])
    except OSError:
        return None


def comm(pid: int | str = "self", root: str = PROC) -> str:
    return read(pid, "comm", root).strip()


def cmdline(pid: int | str = "self", root: str = PROC) -> list[str]:
    """argv, as the process set it; [] once it has exited (or for a kernel thread)."""
    try:
        return Path(path(pid, "cmdline", root=root)).read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def fds(pid: int | str = "self", root: str = PROC) -> dict[int, str]:
    """The open files of a process: fd -> what its link names ("/dev/null", "socket:[INODE]", "pipe:[...]")."""
    found = {}
    for fd in os.listdir(path(pid, "fd", root=root)):
        try:
            found[int(fd)] = os.readlink(path(pid, "fd", fd, root=root))
        except OSError:
            continue                  # closed between the listing and the look
    return found


def pids(root: str = PROC) -> list[int]:
    """The processes that ps(1) would list: the numbered directories of /proc."""
    return sorted(int(name) for name in os.listdir(root) if name.isdigit())


# --- namespaces and id maps ---------------------------------------------------------------------------------

def ns_link(kind: str, pid: int | str = "self", root: str = PROC) -> str:
    """"net:[4026531840]": the namespace's type and inode (namespaces(7))."""
    return os.readlink(path(pid, "ns", kind, root=root))


def ns_inode(kind: str, pid: int | str = "self", root: str = PROC) -> int:
    return int(ns_link(kind, pid, root).rpartition("[")[2].rstrip("]"))


def id_map(name: str = "uid_map", pid: int | str = "self", root: str = PROC) -> list[tuple[int, int, int]]:
    """(first id inside, first id outside, count) per line of uid_map or gid_map."""
    return [tuple(int(field) for field in line.split()) for line in read(pid, name, root).splitlines()
            if line.strip()]


def id_map_text(name: str = "uid_map", pid: int | str = "self", root: str = PROC) -> str:
    """The map as one line, "0 1000 1", the way the notebooks print it."""
    return "; ".join(" ".join(map(str, row)) for row in id_map(name, pid, root))


# --- the kernel as a whole ----------------------------------------------------------------------------------

def filesystems(root: str = PROC) -> set[str]:
    """The filesystem types this kernel can mount now (a module not yet loaded is missing)."""
    return {line.split()[-1] for line in Path(root, "filesystems").read_text().splitlines() if line.strip()}


def kernel_version(release: str | None = None) -> tuple[int, ...]:
    """(major, minor) of a kernel release, "6.1.0-57-amd64" -> (6, 1); by default the running kernel's
    (kernel.osrelease, as uname(2) gives it). () where it names no version: older than any."""
    return tuple(int(part) for part in re.findall(r"\d+", release or os.uname().release)[:2])


def sysctl_path(name: str, root: str = PROC) -> str:
    """/proc/sys/a/b/c for the sysctl a.b.c (sysctl(8)); per network namespace under net/."""
    return os.path.join(root, "sys", *name.split("."))


def sysctl(name: str, root: str = PROC) -> str:
    return Path(sysctl_path(name, root)).read_text().strip()


def meminfo(root: str = PROC) -> dict[str, int]:
    """/proc/meminfo in bytes: MemTotal, MemAvailable..."""
    found = {}
    for line in Path(root, "meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        number, _, unit = value.split(" ", 1)[-1].strip().partition(" ")
        found[name] = int(number) * (1024 if unit == "kB" else 1)
    return found


def cgroup_controllers(root: str = PROC) -> dict[str, dict[str, int]]:
    """/proc/cgroups (cgroups(7)): every controller built into this kernel, with the id of the v1 hierarchy it
    is mounted on (0: none, or the v2 hierarchy), its number of groups and whether it is enabled."""
    found = {}
    for line in Path(root, "cgroups").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, hierarchy, groups, enabled = line.split()[:4]
        found[name] = {"hierarchy": int(hierarchy), "groups": int(groups), "enabled": int(enabled)}
    return found


def system_cpu_ticks(root: str = PROC) -> int:
    """user+nice+system+idle+iowait+irq+softirq of every CPU, the first line of /proc/stat, in clock ticks."""
    return sum(int(field) for field in Path(root, "stat").read_text().splitlines()[0].split()[1:8])


# --- a network namespace's tables, as its member ``pid`` sees them ------------------------------------------

def net_dev(pid: int | str = "self", root: str = PROC) -> dict[str, list[int]]:
    """/proc/PID/net/dev: per interface, 8 receive counters (bytes, packets, errs, drop...) then 8 transmit."""
    found = {}
    for line in read(pid, "net/dev", root).splitlines()[2:]:
        name, _, numbers = line.partition(":")
        found[name.strip()] = [int(number) for number in numbers.split()]
    return found


def sysvipc(kind: str = "msg", root: str = PROC) -> list[list[str]]:
    """The rows of /proc/sysvipc/KIND (msg, sem, shm) of the reader's IPC namespace, the header left out."""
    return [row.split() for row in Path(root, "sysvipc", kind).read_text().splitlines()[1:]]


def net_table(table: str, pid: int | str = "self", root: str = PROC) -> list[list[str]]:
    """The rows of /proc/PID/net/TABLE (tcp, tcp6, udp, unix...), split on blanks, the header left out."""
    return [row.split() for row in read(pid, f"net/{table}", root).splitlines()[1:]]


TCP_LISTEN = "0A"                     # the st column: TCP_LISTEN in include/net/tcp_states.h


@dataclass(frozen=True)
class TcpListener:
    """A listening TCP socket of a network namespace, as ss -ltn shows it: ``str()`` is ADDRESS:PORT."""
    address: str                      # 0.0.0.0, 127.0.0.1, [::1]; * is any IPv6 address (and IPv4, unless V6ONLY)
    port: int
    inode: int                        # the socket's: /proc/PID/fd/N links to socket:[INODE]

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


def tcp_listeners(pid: int | str = "self", root: str = PROC) -> list[TcpListener]:
    """The listening sockets of ``pid``'s network namespace, IPv4 (net/tcp) then IPv6 (net/tcp6), proc(5)."""
    found = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):          # a kernel without IPv6 has no tcp6
            found += [TcpListener(tcp_address(row[1].split(":")[0]), int(row[1].split(":")[1], 16), int(row[9]))
                      for row in net_table(table, pid, root) if row[3] == TCP_LISTEN]
    return found


def tcp_address(hex_address: str) -> str:
    """net/tcp's address: 32-bit words, each in the host's byte order; IPv6's all zeros is "any" (*)."""
    raw = bytes.fromhex(hex_address)
    step = -1 if sys.byteorder == "little" else 1
    words = b"".join(raw[i:i + 4][::step] for i in range(0, len(raw), 4))
    if len(raw) == 4:
        return socket.inet_ntoa(words)
    return "*" if not any(raw) else f"[{socket.inet_ntop(socket.AF_INET6, words)}]"
