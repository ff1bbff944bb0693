"""Fairness: each student's server, kernels and containers in one control group with the class's limits.

The hub (root) makes, for each student it spawns, a group ``labcore/labcore-hub-<name>`` with the lab's own
cgroup manager (``labcore.kernel.cgroups``: the same v1 and v2 backends as a container's group), writes the limits
into it, and starts the single-user server inside it. Everything the student starts afterwards — kernels,
``labcore run``, a fork bomb — is born inside (a child inherits its parent's cgroup, cgroups(7)), so the
student's whole use is held to the limits and the class shares the CPU by group, not by process:

    memory   memory.max (v2) / memory.limit_in_bytes (v1): past it the OOM killer picks inside the group
    cpu      cpu.max / cpu.cfs_quota_us: at most this many CPUs; groups at one level share the rest equally
    pids     pids.max: forks past it fail with EAGAIN, in that group only (cgroup-v1/pids.rst)

On cgroup v2 the group is also *delegated* to the student (cgroup-v2.rst, "Delegation"): its directory and its
cgroup.procs, cgroup.subtree_control and cgroup.threads are chowned to them, and the server starts in a leaf
below it, ``labcore-session``, because a group that passes controllers down may hold no process itself. The
lab running as that student then finds the delegation (``labcore.kernel.cgroups.find_delegation``) and gives each
container a group of its own below it, with per-container limits, all within the student's; the limits of
the student's group itself stay root's. On v1 nothing can be delegated to a user: the student's limits hold
all the same, but a container's own ``-m`` is refused, as notebook 04 explains.

Every group is journaled in the hub's state directory before it is made, so `labcore cleanup` with the hub's
LABCORE_HOME removes what a crashed hub left.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from labcore.kernel.cgroups import Group, Manager, open_manager, read_keyed, read_text
from labcore.kernel.cgroups.limits import Limits, parse_run_limits
from labcore.errors import LabError
from labcore.kernel.journal import Journal, Scope

V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
LEAF = "labcore-session"
DELEGATED_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")


def class_limits(memory: str | None = "1g", cpus: str | None = "1", pids: str | None = "512") -> Limits:
    """Each student's limits, in Docker's syntax (``--memory 1g --cpus 1 --pids-limit 512``); a bad value is
    refused with the accepted form before any student is spawned (``labcore.kernel.cgroups.limits``)."""
    return parse_run_limits(memory=memory, cpus=cpus, pids_limit=pids)


@dataclass
class StudentGroup:
    """One student's group, where their server starts (``home``: the leaf on v2), and its journal records."""
    user: str
    group: Group
    home: Group
    scope: Scope
    delegated: bool


class Fairness:
    """Makes, limits, delegates, measures and removes the students' groups; the hub holds one."""

    def __init__(self, state: Path, limits: Limits, manager: Manager | None = None):
        self.limits = limits
        self.manager = manager or open_manager()
        self.journal = Journal(Path(state) / "journal")

    @property
    def delegates(self) -> bool:
        """cgroup v2 only: v1 has no delegation to a user (see the module's docstring)."""
        return self.manager.version == "v2"

    def make(self, user: str, uid: int, gid: int) -> StudentGroup:
        """The student's group with the limits in force, delegated on v2; undone whole if a step fails."""
        scope = Scope(self.journal)
        try:
            controllers = None if self.delegates else V1_CONTROLLERS
            group = self.manager.create(f"labcore-hub-{user}", scope, controllers=controllers)
            self.manager.apply(group, self.limits)
            home = group
            if self.delegates:
                home = self.manager.create(LEAF, scope, parent=group)
                delegate(group, home, uid, gid)
            return StudentGroup(user, group, home, scope, self.delegates)
        except BaseException:
            scope.close()
            raise

    def enter(self, student: StudentGroup, pid: int) -> None:
        """Move ``pid`` (the server, before it execs) into the student's group: all it starts follows."""
        self.manager.add(student.home, pid)

    def usage(self, student: StudentGroup):
        """What the student's whole group has used (``labcore.kernel.cgroups.Stats``): memory peak, OOM kills,
        forks refused at pids.max."""
        return self.manager.stats(student.group)

    def kill(self, student: StudentGroup) -> None:
        """Kill every process left in the student's groups, the ones the student made below too: a stopped
        server leaves no process behind, detached containers included."""
        for directory in dict.fromkeys(student.group.dirs.values()):
            kill_subtree(directory)

    def remove(self, student: StudentGroup) -> None:
        """Kill what is left, then remove the groups, the student's own below theirs first."""
        self.kill(student)
        for directory in dict.fromkeys(student.group.dirs.values()):
            for below in sorted(descendants(directory), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(below)           # empty now; a student may have named theirs anything
        failures = student.scope.close()
        if failures:
            raise LabError("could not remove the student's cgroup: " + "; ".join(failures),
                           fix="run `labcore cleanup` with the hub's LABCORE_HOME")


def delegate(group: Group, leaf: Group, uid: int, gid: int) -> None:
    """Hand the group to the student as an administrator (or systemd's Delegate=yes) does: the directory and
    the three files that let them make groups and move their processes; the leaf entirely. The limits
    (memory.max, cpu.max, pids.max) stay root's: a student cannot raise their own."""
    top = group.dir("unified")
    for path in (top, *(top / name for name in DELEGATED_FILES)):
        os.chown(path, uid, gid)
    bottom = leaf.dir("unified")
    for path in (bottom, *bottom.iterdir()):
        os.chown(path, uid, gid)


def descendants(directory: Path) -> list[Path]:
    return [Path(here, sub) for here, subdirs, _ in os.walk(directory) for sub in subdirs]


def kill_subtree(directory: Path, seconds: float = 10.0) -> None:
    """SIGKILL every process in the group and the groups below it, until none is left. cgroup.kill (Linux
    5.14, v2) does it in one write, racing no fork; elsewhere the pids are read and killed again until a read
    finds none (a fork bomb's children appear between a read and the kills).

    "None left" is v2's ``populated 0`` in cgroup.events where there is one, not an empty cgroup.procs: a
    threaded process whose leader has exited drops out of cgroup.procs while its last thread is still on its
    way out (cgroup.procs lists leaders only, a dying one only while ``signal->live`` is non-zero, and that
    count falls early in do_exit: kernel/cgroup/cgroup.c, css_task_iter_advance), and until that thread is
    gone rmdir(2) answers EBUSY (Documentation/admin-guide/cgroup-v2.rst, "populated")."""
    if (directory / "cgroup.kill").exists():
        (directory / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pids = [pid for here in [directory, *descendants(directory)]
                for pid in (read_text(here / "cgroup.procs") or "").split()]
        if not pids and not read_keyed(directory / "cgroup.events").get("populated"):    # v1: no such file
            return
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)

