"""Control groups: how much a container may use — cpu, memory, pids, io, devices — and freezing it.

A namespace limits what a process can *see*; a control group (man 7 cgroups) limits what it can *use*. A
cgroup is a directory in a pseudo-filesystem (cgroupfs): ``mkdir`` creates a group, writing a pid to its
``cgroup.procs`` moves that process in (its future children follow), writing to its interface files sets
limits, and ``rmdir`` deletes it once it is empty. The kernel enforces the limits at the moment of use: a
page fault past ``memory.max`` starts the OOM killer, a fork past ``pids.max`` fails with EAGAIN.

Two interfaces exist, and a host mounts one of three ways (Documentation/admin-guide/cgroup-v2.rst):

    v1       one hierarchy per controller: /sys/fs/cgroup/memory/..., /sys/fs/cgroup/cpu/...
             (Documentation/admin-guide/cgroup-v1/*.rst)
    v2       one unified tree, /sys/fs/cgroup/..., controllers switched on per subtree with
             cgroup.subtree_control; most current distributions
    hybrid   v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified: the lab uses the v1 side

``detect()`` reads /proc/self/mountinfo (proc(5)) to tell them apart; ``open_manager()`` returns the backend
(``labcore.kernel.cgroups.v1`` or ``.v2``) behind one interface, ``Manager``. Every group the lab makes sits under a
parent named ``labcore`` and is journaled the moment it exists. ``labcore.kernel.cgroups.limits`` parses Docker's
flags; ``labcore.lessons.control_groups`` enforces each controller for real and measures it.

Who may make groups: cgroupfs belongs to root, and root's ``labcore`` parent sits at the top of each
hierarchy. On cgroup v2 an administrator may *delegate* a subtree to a user (cgroup-v2.rst, "Delegation
Containment"): the directory and its ``cgroup.procs``, ``cgroup.subtree_control`` and ``cgroup.threads``
chowned to the user, as systemd does for user@UID.service and for a unit with ``Delegate=yes``. A user may then
make groups below it, switch controllers on for them and move its own processes in, which is how rootless
podman limits containers. ``find_delegation()`` finds the lowest ancestor of this process's own cgroup that
is delegated (not the own cgroup itself: it holds this process, and by the "no internal process" rule could
not pass controllers down); the user's ``labcore`` parent goes there. Moving a process between two groups
needs write access to ``cgroup.procs`` of their common ancestor, which that delegated ancestor is. On v1 the
lab, like rootless podman, delegates nothing.

Next: ``labcore.kernel.rootfs`` decides which files the container sees.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, LabError, NotSupportedHere, from_oserror
from labcore.kernel import procfs
from labcore.kernel.journal import Entry, Scope, refuse_foreign, register

PARENT = paths.PREFIX                     # /sys/fs/cgroup[/<controller>]/labcore/labcore-<id>
V1_CONTROLLERS = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "blkio",
                  "perf_event", "net_prio", "hugetlb", "pids", "rdma", "misc"}
ROOT_FIX = ("cgroupfs files belong to root: run as root (sudo), or get a delegated cgroup "
            "(cgroup-v2.rst, 'Delegation')")
WANTED_CONTROLLERS = ("cpu", "memory", "pids")
DELEGATE_FIX = (
    "an administrator delegates a cgroup v2 subtree to you (cgroup-v2.rst, 'Delegation'). With systemd, "
    "user@UID.service is delegated already: start the lab in a unit of its own, `systemd-run --user --scope "
    "-p Delegate=yes ./lab up`. Without systemd, as root: `mkdir -p /sys/fs/cgroup/USER/session; echo '+cpu "
    "+memory +pids' > /sys/fs/cgroup/cgroup.subtree_control; chown USER /sys/fs/cgroup/USER "
    "/sys/fs/cgroup/USER/cgroup.{procs,subtree_control,threads}; chown -R USER /sys/fs/cgroup/USER/session`, "
    "then start the lab from /sys/fs/cgroup/USER/session (`echo $$ > .../session/cgroup.procs`)")
V1_FIX = ("this host mounts cgroup v1 (or hybrid), where cgroups are not delegated to users: rootless podman and "
          "Docker refuse limits there too. Use a cgroup v2 host (boot with systemd.unified_cgroup_hierarchy=1), "
          "where an administrator can delegate a subtree to you, or a machine where you are root")


# --- which cgroups does this host have? -------------------------------------------------------------------

@dataclass
class Layout:
    """Where the cgroup hierarchies are mounted, as /proc/self/mountinfo says."""
    kind: str                                                   # "v1", "v2" or "hybrid"
    v1: dict[str, Path] = field(default_factory=dict)           # controller -> its hierarchy's mount point
    v2: Path | None = None                                      # the cgroup2 mount point


def parse_mountinfo(text: str, root: str | os.PathLike = "/") -> Layout:
    """The cgroup layout in a mountinfo text; mount points are placed below ``root`` (a fake tree in tests).

    A line is ``ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS``.
    A v1 hierarchy names its controllers in the super options (``rw,cpu,cpuacct``).
    """
    v1: dict[str, Path] = {}
    v2 = None
    for mount in procfs.parse_mountinfo(text):
        if mount.fstype == "cgroup2" and v2 is None:
            v2 = Path(root, mount.point.lstrip("/"))
        elif mount.fstype == "cgroup":
            point = Path(root, mount.point.lstrip("/"))
            for controller in V1_CONTROLLERS.intersection(mount.super_options.split(",")):
                v1.setdefault(controller, point)     # the first mount wins, as for /proc/self/cgroup
    if not v1 and v2 is None:
        raise NotSupportedHere("no cgroup filesystem is mounted", path="/proc/self/mountinfo",
                               fix="mount -t cgroup2 none /sys/fs/cgroup (cgroup-v2.rst, 'Mounting')")
    kind = "v1" if v2 is None else ("hybrid" if v1 else "v2")
    return Layout(kind, v1, v2)


def detect(mountinfo: str | os.PathLike | None = None, root: str | os.PathLike = "/") -> Layout:
    """The layout from ``mountinfo`` (text, or a file; default /proc/self/mountinfo)."""
    if mountinfo is None:
        mountinfo = Path(procfs.path("self", "mountinfo"))
    if isinstance(mountinfo, os.PathLike) or " - " not in mountinfo:
        mountinfo = Path(mountinfo).read_text()
    return parse_mountinfo(mountinfo, root)


# --- one group, and what it has used -----------------------------------------------------------------------

@dataclass
class Group:
    """A cgroup: its path below each hierarchy's root, and its directory in each hierarchy."""
    name: str                                   # e.g. "labcore/labcore-3f2a"
    dirs: dict[str, Path]                       # v1: controller -> directory; v2: {"unified": directory}
    entries: list[Entry] = field(default_factory=list, repr=False)   # its journal records

    def dir(self, controller: str) -> Path:
        found = self.dirs.get(controller) or self.dirs.get("unified")
        if found is None:
            raise NotSupportedHere(f"the {controller} controller is not mounted on this host",
                                   fix=f"mount it: mount -t cgroup -o {controller} cgroup "
                                       f"/sys/fs/cgroup/{controller} (cgroup-v1/cgroups.rst)")
        return found

    @property
    def path(self) -> Path:
        """The directory to show: the memory hierarchy's on v1, the only one on v2."""
        return self.dirs.get("memory") or next(iter(self.dirs.values()))


@dataclass
class Stats:
    """What a group has used, read from its interface files; None where this host does not report it."""
    cpu_usage_us: int | None = None           # CPU time used by all its tasks
    cpu_periods: int | None = None            # CFS periods with a quota in force...
    cpu_throttled: int | None = None          # ...how many ended with the group throttled...
    cpu_throttled_us: int | None = None       # ...and for how long in total
    memory_current: int | None = None
    memory_peak: int | None = None
    oom_kills: int | None = None
    pids_current: int | None = None
    pids_refused: int | None = None           # forks refused at pids.max ("max" in pids.events)
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None


# --- reading and writing interface files -------------------------------------------------------------------

def read_text(path: Path) -> str | None:
    """An interface file's content, or None if this kernel does not have the file."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def read_keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (``key value`` per line: cpu.stat, memory.events, memory.oom_control)."""
    pairs = (line.split() for line in (read_text(path) or "").splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


def read_device_counters(path: Path, pairs, keys: tuple[str, ...]) -> dict[str, int]:
    """Per-device counters summed over devices: ``pairs(fields)`` gives a line's (key, value) pairs after its
    "MAJ:MIN". ``keys`` start at 0 once the file exists (an empty file: nothing done yet); none if it is missing."""
    text = read_text(path)
    total = {} if text is None else dict.fromkeys(keys, 0)
    for line in (text or "").splitlines():
        for key, value in pairs(line.split()[1:]):
            if value.isdigit():
                total[key] = total.get(key, 0) + int(value)
    return total


def read_int(path: Path) -> int | None:
    text = read_text(path)
    return int(text) if text and text.strip().lstrip("-").isdigit() else None


def write(path: Path, value) -> None:
    """One write(2) of ``value`` to an interface file: the kernel acts on each write as a whole."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except FileNotFoundError as err:
        raise NotSupportedHere(f"this kernel has no {path.name} in {path.parent}", path=str(path),
                               fix="its controller is not enabled for this group, or the kernel is too old "
                                   "(see `labcore doctor`)", errno=err.errno) from err
    except OSError as err:
        fix = ROOT_FIX if err.errno in (errno.EPERM, errno.EACCES) else None
        raise from_oserror(err, f"write({str(value)!r})", str(path), fix=fix) from err


# --- who may make groups: root, or the owner of a delegated subtree -------------------------------------

@dataclass
class Delegation:
    """Where this process may make cgroups: ``base`` (a path below the cgroup2 mount) or, as root, the top."""
    base: str | None                    # "" is the root of the hierarchy; None: nowhere
    own: str                            # this process's cgroup, as /proc/self/cgroup says
    why_not: str = ""                   # when base is None: why, from what the files show...
    fix: str = ROOT_FIX                 # ...and what to do about it

    @property
    def allowed(self) -> bool:
        return self.base is not None


def own_cgroup(proc_cgroup: str) -> str:
    """The v2 line of /proc/self/cgroup ("0::/PATH"), else the memory hierarchy's (cgroups(7))."""
    lines = procfs.parse_cgroup(proc_cgroup)
    return next((line.path for line in lines if line.hierarchy == 0 and not line.controllers),
                next((line.path for line in lines if "memory" in line.controllers), "/"))


def may_delegate(directory: Path) -> bool:
    """The files a delegating administrator (or systemd) hands over: the directory, cgroup.procs and
    cgroup.subtree_control, all writable by us (access(2) with our uid)."""
    return all(os.access(path, os.W_OK) for path in
               (directory, directory / "cgroup.procs", directory / "cgroup.subtree_control"))


def find_delegation(layout: Layout, proc_cgroup: str | None = None, euid: int | None = None) -> Delegation:
    """Root makes groups at the top; anyone else below the lowest delegated ancestor of its own cgroup."""
    proc_cgroup = procfs.read("self", "cgroup") if proc_cgroup is None else proc_cgroup
    own = own_cgroup(proc_cgroup)
    if (os.geteuid() if euid is None else euid) == 0:
        return Delegation("", own)
    if layout.kind != "v2":
        return Delegation(None, own, f"no cgroup is delegated to you on a {layout.kind} host", V1_FIX)
    parts = Path(own).parts[1:]
    for depth in range(len(parts) - 1, 0, -1):          # own's parent first, up to the top (never the root)
        relative = "/".join(parts[:depth])
        if may_delegate(layout.v2 / relative):
            return check_controllers(layout, Delegation(relative, own))
    return Delegation(None, own, f"your cgroup {own} and every group above it belong to root: nothing is "
                                 f"delegated to uid {os.geteuid() if euid is None else euid}", DELEGATE_FIX)


def check_controllers(layout: Layout, delegation: Delegation) -> Delegation:
    """A delegated subtree is only useful with controllers: its parent must have passed them down."""
    offered = set((read_text(layout.v2 / delegation.base / "cgroup.controllers") or "").split())
    missing = [name for name in WANTED_CONTROLLERS if name not in offered]
    if not missing:
        return delegation
    return Delegation(None, delegation.own,
                      f"/{delegation.base} is delegated to you, but its parent does not pass down "
                      f"{', '.join(missing)}",
                      f"as root, echo '{' '.join('+' + name for name in missing)}' > "
                      f"{layout.v2 / Path(delegation.base).parent}/cgroup.subtree_control")


# --- the interface both backends share ---------------------------------------------------------------------

class Manager:
    """Create, limit, watch, freeze and remove cgroups under ``labcore``; v1 and v2 fill in the files.

    ``delegation`` says where: root's groups go at the top of each hierarchy, a user's below its delegated
    subtree; where nothing is delegated, making a group is refused with the fix."""

    version = ""

    def __init__(self, layout: Layout, delegation: Delegation | None = None):
        self.layout = layout
        self.delegation = delegation or Delegation("", "/")
        self.base = self.delegation.base or ""

    def refusal(self) -> dict:
        """Why a mkdir here is refused and the fix (``from_oserror``'s why and fix): nothing delegated."""
        if self.delegation.allowed:
            return {"fix": ROOT_FIX}
        return {"why": self.delegation.why_not, "fix": self.delegation.fix}

    # Backend hooks: where a group lives, and which files say what.
    def hierarchy_dirs(self, name: str, controllers=None) -> dict[str, Path]:
        """The group's directory in each hierarchy (v1: only ``controllers``' when given)."""
        raise NotImplementedError

    def controllers_for(self, limits):
        """The hierarchies a container with ``limits`` needs; None: all of them."""
        return None

    def prepare_parent(self, name: str) -> None:
        """Make the group ``name`` ready to hold child groups (v2: switch its controllers on)."""

    def check(self, limits) -> None:
        """Refuse, before anything is created, limits this backend cannot enforce."""

    def limit_writes(self, group: Group, limits) -> list[tuple[Path, str]]:
        raise NotImplementedError

    def stats(self, group: Group) -> Stats:
        raise NotImplementedError

    def limits_of(self, group: Group) -> dict[str, str]:
        """The limits in force, as the interface files spell them (for diagrams and evidence)."""
        raise NotImplementedError

    def set_frozen(self, group: Group, frozen: bool) -> None:
        raise NotImplementedError

    def is_frozen(self, group: Group) -> bool:
        raise NotImplementedError

    # Shared steps.
    def create(self, name: str, scope: Scope, parent: Group | None = None, controllers=None) -> Group:
        """mkdir(2) the group ``name`` below ``parent`` (default: the shared ``labcore`` group), journaled.

        Groups go below the root of each hierarchy, not below our own cgroup: this host puts the lab's
        process in memory:/process_api/<hash>, a group its supervisor owns and may limit or remove; Docker
        does the same (/sys/fs/cgroup/.../docker/<id>). On v2 our own group also holds processes, so by the
        "no internal processes" rule it could not pass controllers down to children (cgroup-v2.rst).
        """
        if not name.startswith(PARENT + "-") or "/" in name:
            raise BadInput(f"cgroup name {name!r} is not ours", fix=f"name it {PARENT}-<something>, no '/'")
        entries = []
        if parent is None:
            # Each group journals the shared parent too: whichever run ends last finds it empty and
            # removes it; the others leave it, since it still holds their siblings (undo_rmdir_cgroup).
            entries += self._make(PARENT, scope, shared=True, controllers=controllers)
        base = parent.name if parent else PARENT
        self.prepare_parent(base)
        entries += self._make(f"{base}/{name}", scope, controllers=controllers)
        return Group(f"{base}/{name}", self.hierarchy_dirs(f"{base}/{name}", controllers), entries)

    def _make(self, name: str, scope: Scope, shared: bool = False, controllers=None) -> list[Entry]:
        entries = []
        for directory in dict.fromkeys(self.hierarchy_dirs(name, controllers).values()):   # cpu,cpuacct share one
            # Journaled before mkdir: a crash in between leaves a record of nothing, never a stray group.
            entry = scope.record("cgroup", str(directory), "rmdir_cgroup", path=str(directory))
            try:
                os.mkdir(directory)
            except FileNotFoundError as err:
                if shared or directory.parent.name != PARENT:
                    raise from_oserror(err, "mkdir", str(directory), **self.refusal()) from err
                # Another run, ending, found the shared parent empty and removed it after we made sure it
                # existed: make it again (journaled once more, so the last run out still removes it).
                entries += self._make(PARENT, scope, shared=True, controllers=controllers)
                self.prepare_parent(PARENT)
                os.mkdir(directory)
            except FileExistsError as err:
                if not shared:
                    scope.entries.remove(entry)
                    scope.journal.forget(entry)          # not ours to remove
                    raise LabError(f"a cgroup {directory} exists already", path=str(directory),
                                   fix="pick another name, or run `labcore cleanup`") from err
            except OSError as err:
                raise from_oserror(err, "mkdir", str(directory), **self.refusal()) from err
            entries.append(entry)
        return entries

    def remove(self, group: Group, scope: Scope) -> None:
        """Undo the group's journal records, newest first: the group, then the parent if now empty."""
        failures = scope.journal.undo_many(group.entries)
        scope.entries = [e for e in scope.entries if e not in group.entries]
        if failures:
            raise LabError("could not remove cgroup: " + "; ".join(failures), fix="run `labcore cleanup`")

    def add(self, group: Group, pid: int) -> None:
        """Move ``pid`` into the group in every hierarchy; its future children are born inside."""
        for directory in dict.fromkeys(group.dirs.values()):
            write(directory / "cgroup.procs", pid)

    def start_adding(self, group: Group, pid: int) -> "Move":
        """``add``, in a thread of its own (``Move``): the caller goes on while the kernel waits."""
        return Move(self, group, pid)

    def files_to_move_oneself(self, group: Group) -> list[Path] | None:
        """The files through which a process with one thread moves itself into ``group`` without the wait
        (``move_oneself``); None where it cannot (v2: a thread moves on its own only within its domain)."""
        return None

    def directory_to_fork_into(self, group: Group) -> Path | None:
        """The directory of ``group`` for a fork to be born in without the wait (v2, ``V2Manager``); None
        where there is none (v1: no clone3 into its hierarchies)."""
        return None

    def procs(self, group: Group) -> list[int]:
        return [int(pid) for pid in (read_text(group.path / "cgroup.procs") or "").split()]

    def apply(self, group: Group, limits) -> list[tuple[Path, str]]:
        """Write ``limits`` into the group's files, in order; return each (file, value) written."""
        writes = self.limit_writes(group, limits)
        for path, value in writes:
            write(path, value)
        return writes

    def create_for_container(self, container_id: str, limits, scope: Scope) -> Group:
        """The group of one container, `labcore-<id>`, with its limits in force; add its pid next."""
        self.check(limits)
        group = self.create(container_group_name(container_id), scope, controllers=self.controllers_for(limits))
        self.apply(group, limits)
        return group

    def freeze(self, group: Group, frozen: bool = True, timeout: float = 5.0) -> bool:
        """Freeze (or thaw) every task in the group; wait until the kernel reports it done."""
        self.set_frozen(group, frozen)
        deadline = time.monotonic() + timeout
        while self.is_frozen(group) != frozen and time.monotonic() < deadline:
            time.sleep(0.01)        # v1 passes through FREEZING; v2 sets "frozen 1" in cgroup.events
        return self.is_frozen(group)

    def thaw(self, group: Group) -> bool:
        return not self.freeze(group, False)

    def groups(self) -> list[Group]:
        """Every group below ``labcore`` now, parents before children, read from the live tree."""
        top = self.hierarchy_dirs(PARENT)
        first = next(iter(top.values()))
        if not first.is_dir():
            return []
        found = [Group(PARENT, top)]
        for here, subdirs, _ in os.walk(first):
            subdirs.sort()
            for sub in subdirs:
                name = str(Path(here, sub).relative_to(first.parent))
                found.append(Group(name, self.hierarchy_dirs(name)))
        return found


class Move:
    """A process being moved into a group, in a thread. The first move after a quiet spell is slow, and not
    for work: writing cgroup.procs takes the threadgroup lock for writing, ``percpu_down_write(
    &cgroup_threadgroup_rwsem)`` (kernel/cgroup/cgroup.c, cgroup_attach_lock), which first waits for an RCU
    grace period (rcu_sync_enter, kernel/rcu/sync.c): 13 to 30 ms asleep on this machine, 0.2 ms when another
    move came just before (bench/). A container start gives that wait work to overlap: the layers, the shim's
    unshare and pid 1's whole root (``labcore.runtime.container.join_cgroup``); where the process can move
    itself (``move_oneself``, v1) or be born in the group (``V2Manager.directory_to_fork_into``), there is no
    wait at all. ``wait()`` joins the thread and raises what the write raised."""

    def __init__(self, manager: "Manager", group: Group, pid: int):
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._add, args=(manager, group, pid), name=f"cgroup.procs {pid}",
                                       daemon=True)
        self.thread.start()

    def _add(self, manager: "Manager", group: Group, pid: int) -> None:
        try:
            manager.add(group, pid)
        except BaseException as err:          # handed to the waiting thread, which raises it
            self.error = err

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def move_oneself(files: list[Path]) -> None:
    """Move the calling process, which has one thread, into a group: "0" written to v1's tasks file moves the
    writer's own thread, and for that the kernel skips the global threadgroup lock ("we can skip the global
    lock", cgroup_procs_write_start in kernel/cgroup/cgroup.c, since "cgroup: Optimize single thread
    migration", Linux 5.11), so there is no grace period to wait for (``Move``): 0.1 ms here. A process with
    one thread is all of it; what it forks next is born in the group."""
    for path in files:
        write(path, 0)


def prepare_fork_into(files: list[Path], directory: Path | None) -> int | None:
    """What a process with one thread does before it forks into a group without the wait, as the manager
    answered (``files_to_move_oneself``, ``directory_to_fork_into``): on v1 it moves itself through ``files``,
    and what it forks next is born inside; on v2 it opens ``directory`` and returns the fd, for
    ``syscalls.fork`` to clone the child into. Done while the host's mounts are the process's own."""
    if files:
        move_oneself(files)
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY) if directory else None     # closed at execve


def container_group_name(container_id: str) -> str:
    """`labcore-<id>`: the name of a container's group, in every hierarchy."""
    return container_id if container_id.startswith(PARENT + "-") else f"{PARENT}-{container_id}"


def container_group_of(pid: int, container_id: str) -> Group | None:
    """The groups of container ``container_id`` that its pid 1, ``pid``, is in, one directory per hierarchy;
    None where it has none of its own (pid 1 is then in its creator's groups). `docker exec` puts its process
    there too, so that it counts against the container's limits and its device list. /proc/PID/cgroup names
    each group from the reader's cgroup namespace, the host's here (cgroups(7))."""
    try:
        listed = procfs.cgroups(pid)
    except OSError as err:                            # pid 1 has exited since its record said running
        raise from_oserror(err, "open", procfs.path(pid, "cgroup")) from err
    lines = [line for line in listed if os.path.basename(line.path) == container_group_name(container_id)]
    if not lines:
        return None                                   # first: where the lab made none, no cgroupfs need be mounted
    layout, name, dirs = detect(), None, {}
    for line in lines:
        name = line.path.lstrip("/")
        if not line.controllers:
            dirs["unified"] = layout.v2 / name
        for controller in line.controllers:
            if controller in layout.v1:
                dirs[controller] = layout.v1[controller] / name
    return Group(name, dirs) if dirs else None


# This process's manager for the host, and what it was made from: /proc/self/mountinfo and /proc/self/cgroup,
# and the euid. Reading both again is cheap, parsing the mount table is not (bench/breakdown: 0.6 ms a start).
_host_manager: tuple[tuple, "Manager"] | None = None


def open_manager(root: str | os.PathLike = "/", mountinfo: str | os.PathLike | None = None,
                 delegation: Delegation | None = None) -> Manager:
    """The backend for this host (or for the fake tree at ``root`` described by ``mountinfo``), making its
    groups where this user may (``find_delegation``; a fake tree is the caller's to delegate). The host's is
    made again only when the mount table, this process's cgroup or its euid have changed."""
    global _host_manager
    if Path(root) != Path("/") or mountinfo is not None or delegation is not None:
        return _open_manager(root, mountinfo, delegation)
    key = (procfs.read("self", "mountinfo"), procfs.read("self", "cgroup"), os.geteuid())
    if _host_manager is None or _host_manager[0] != key:
        layout = detect(key[0])
        _host_manager = key, _open_manager(root, key[0], find_delegation(layout, key[1], key[2]), layout)
    return _host_manager[1]


def _open_manager(root, mountinfo, delegation: Delegation | None, layout: Layout | None = None) -> Manager:
    layout = layout or detect(mountinfo, root)
    if delegation is None:
        delegation = find_delegation(layout) if Path(root) == Path("/") else Delegation("", "/")
    if layout.kind == "v2":
        from labcore.kernel.cgroups.v2 import V2Manager
        return V2Manager(layout, delegation)
    # Hybrid hosts bind the controllers to the v1 hierarchies; their cgroup2 tree has none to offer.
    from labcore.kernel.cgroups.v1 import V1Manager
    return V1Manager(layout, delegation)


def can_limit() -> bool:
    """Whether this process may hold a container to limits here: as root, or in a delegated subtree."""
    try:
        return find_delegation(detect()).allowed
    except NotSupportedHere:                     # no cgroup filesystem at all
        return False


# --- the inverse the journal replays -------------------------------------------------------------------

REMOVE_SECONDS = 20        # how long undo_rmdir_cgroup waits for the tasks it killed to be gone


@register("rmdir_cgroup")
def undo_rmdir_cgroup(path: str) -> None:
    """Kill what is left inside a cgroup of ours, then remove it (rmdir is how cgroups are deleted): the
    journal's ``rmdir_cgroup``, which ``labcore cleanup`` replays after a crash."""
    refuse_foreign(path, Path(path).name.startswith(paths.PREFIX))
    if not os.path.isdir(path):
        return
    # A deadline, not a count of tries: killed tasks leave the group only once do_exit has freed what they held,
    # a few ms for busybox, far longer for a class's notebook servers exiting at once on a loaded host.
    deadline, pause = time.monotonic() + REMOVE_SECONDS, 0.01
    while True:
        if _holds_child_groups(path):
            return    # a shared parent still in use by another run: the last one out removes it
        # A frozen task ignores even SIGKILL until thawed (cgroup-v1/freezer-subsystem.rst): thaw first.
        for name, thawed in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            with contextlib.suppress(OSError), open(os.path.join(path, name), "r+") as file:
                file.write(thawed)
        with contextlib.suppress(OSError):      # ENOENT, or ENODEV: another undo removed it since the look
            for pid in Path(path, "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise from_oserror(err, "rmdir", path) from err
            time.sleep(pause)     # EBUSY while the killed processes are still exiting
            pause = min(pause * 2, 0.2)


def _holds_child_groups(path: str) -> bool:
    # rmdir(2) of a cgroup with child groups fails with EBUSY; its child groups are its subdirectories.
    with contextlib.suppress(FileNotFoundError):
        return any(entry.is_dir() for entry in os.scandir(path))
    return False
