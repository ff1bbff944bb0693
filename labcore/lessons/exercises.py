"""Exercises: the student writes the step, the kernel says whether it worked.

Each notebook from 02 to 09 has exercise cells: a function for the student to write (the reference solution
sits between nbgrader's ``### BEGIN SOLUTION`` and ``### END SOLUTION`` markers), then a check cell that calls
one ``check_*`` function below. A check never reads the student's source: it runs the function for real (in
a child when the step isolates, so the notebook's own process never changes) and reads the result back from
the kernel — /proc/self/uid_map, a cgroup's memory.events, the overlay's merged directory, the errno a
syscall returned, the exit code of a process the kernel killed.

A check returns a ``Check``: one ✓/✗ line per thing the kernel showed, and for the first ✗ a hint naming
the file, flag or order to fix. Its points are the share of those lines that passed, which nbgrader reads
as the cell's partial credit (``nbgrader autograde`` takes a number in the cell's text/plain output). Where
the host forbids the step (a confined pod, no cgroup delegation), the check says "refused here", with why
and the fix (``labcore.lessons.hosts``): no error cell, and no points claimed for what nobody could verify.

    02  check_create_and_start    a raw HTTP request on the daemon's socket creates and starts a container
    03  check_user_namespace      unshare(CLONE_NEWUSER), setgroups, uid_map and gid_map written by hand
        check_hostname            a UTS namespace of one's own and sethostname(2) in it
    04  check_memory_limit        the limit written into the cgroup's file; the OOM killer seen at work
        check_pids_limit          pids.max written; a fork past it fails with EAGAIN
    05  check_overlay_mount       mount -t overlay by hand from two lowerdirs and an upperdir
        check_whiteout            a whiteout (a 0/0 character device) made by hand hides a lower file
    06  check_pivot_root          the pivot_root sequence in the kernel's order
        check_read_only_root      a read-only bind mount: docker run --read-only
    07  check_shared_kernel       `uname -nr` in a container: another hostname, the host's kernel
        check_start_time          one container start timed, beside the VM's boot
    08  check_build_order         the steps of 08 in an order the kernel accepts, run for real
        check_root_propagation    runc's first mount: the root made MS_SLAVE|MS_REC (rslave)
    09  check_drop_capability     CAP_SYS_CHROOT dropped: the kernel refuses chroot(2)
        check_seccomp_filter      a seccomp filter makes mkdir(2) fail with EPERM

Next: ``tests/notebooks/test_nbgrader.py`` makes the student version and grades it.
"""
from __future__ import annotations

import errno
import html
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from labcore.errors import LabError, NeedsPrivilege, NotSupportedHere
from labcore.kernel import journal, procfs, syscalls, userns
from labcore.kernel.process import Child, run_in_child
from labcore.lessons import hosts

NOT_WRITTEN = ("your cell still raises NotImplementedError: write the step where it says YOUR CODE HERE, "
               "then run it and this check again")
_REFUSED = (NeedsPrivilege, NotSupportedHere)


# --- what a check returns ----------------------------------------------------------------------------------

@dataclass
class Criterion:
    what: str                   # what the kernel must show
    ok: bool
    seen: str                   # what it showed
    hint: str = ""              # what to change when it did not


@dataclass
class Check:
    """The verdict on one exercise: a ✓/✗ line per criterion, the hint for the first ✗, the points."""
    title: str
    criteria: list[Criterion] = field(default_factory=list)
    points: float = 1.0
    refused: str = ""           # the host forbids the step: why here, and the fix
    raised: str = ""            # what the student's code raised, if anything

    @property
    def passed(self) -> bool:
        return (not self.refused and self.raised != NOT_WRITTEN and bool(self.criteria)
                and all(c.ok for c in self.criteria))

    def score(self) -> float:
        if self.refused or not self.criteria or self.raised == NOT_WRITTEN:
            return 0.0                  # a blank answer earns nothing, whatever held without it
        return round(self.points * sum(c.ok for c in self.criteria) / len(self.criteria), 2)

    def hint(self) -> str:
        failed = next((c for c in self.criteria if not c.ok), None)
        return failed.hint if failed is not None else ""

    def lines(self) -> list[str]:
        if self.refused:
            return [f"– {self.title}: refused here, not graded", *self.refused.splitlines()]
        mark = "✓" if self.passed else "✗"
        lines = [f"{mark} {self.title} — {self.score():g}/{self.points:g} points"]
        lines += [f"  {'✓' if c.ok else '✗'} {c.what}: {c.seen}" for c in self.criteria]
        if self.raised:
            lines.append(f"  your code raised: {self.raised}")
        if self.hint():
            lines.append(f"  hint: {self.hint()}")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_pretty_(self, printer, cycle) -> None:
        # The text/plain nbgrader grades by (a number is the cell's partial credit); people see the HTML.
        printer.text(f"{self.score():g}")

    def _repr_html_(self) -> str:
        color = "#2a2" if self.passed else ("#888" if self.refused else "#c22")
        return (f"<pre style='white-space:pre-wrap;border-left:4px solid {color};padding-left:8px'>"
                f"{html.escape(str(self))}</pre>")


def refusal(title: str, error: Exception, points: float = 1.0) -> Check:
    return Check(title, points=points, refused=hosts.explain(error))


def in_child(title: str, points: float, evidence: Callable, *args) -> dict | Check:
    """``evidence(*args)`` run in a child, or a refused Check where the child's namespaces or mounts are
    refused (a host where user namespaces work but AppArmor refuses the mount: Ubuntu 24.04)."""
    try:
        return run_in_child(evidence, *args)
    except _REFUSED as err:
        return refusal(title, err, points)


def isolation_refused(title: str, points: float) -> Check | None:
    """A refused Check where nothing that isolates can run (a confined pod); None where it can."""
    if hosts.current().kind != hosts.CONFINED:
        return None
    return refusal(title, NeedsPrivilege("this exercise makes namespaces, which this host refuses"), points)


def attempt(fn: Callable, *args) -> tuple[Any, str]:
    """Run the student's function: (its value, "") or (None, what it raised, in the kernel's words)."""
    try:
        return fn(*args), ""
    except NotImplementedError:
        return None, NOT_WRITTEN
    except Exception as err:                       # the student's error is evidence, not a crash of the check
        return None, f"{type(err).__name__}: {err}"


def ns_inode(kind: str, pid: str | int = "self") -> int:
    return procfs.ns_inode(kind, pid)


def errno_of(call: Callable) -> str:
    """The errno name ``call`` fails with, or "ok"."""
    try:
        call()
        return "ok"
    except LabError as err:
        return errno.errorcode.get(err.errno or 0, str(err))
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err))


def scratch(prefix: str, scope: journal.Scope) -> Path:
    from labcore.kernel import overlay
    return overlay.make_scratch_dir(f"exercise-{prefix}", scope)[0]


def enter_mount_namespace() -> None:
    """In a child: a mount namespace of its own (inside a user namespace when not root)."""
    userns.unshare(syscalls.CLONE_NEWNS)


# --- 02: the Engine API by hand -----------------------------------------------------------------------------

def check_create_and_start(fn: Callable, stage, image: str | None = None, points: float = 2.0) -> Check:
    """``fn(socket_path, image)`` sends POST /containers/create and POST /containers/{id}/start itself and
    returns the id; the kernel must then show a process in namespaces of its own."""
    title = "POST /containers/create, then /start, written by hand"
    if hosts.was_refused(stage) or getattr(stage, "wire", None) is None:
        return refusal(title, NeedsPrivilege("the daemon did not start on this host (see the first cell)"), points)
    image = image or stage.reference
    stage.wire.exchange("POST", f"/images/create?fromImage={image}")     # pulled once, as `docker run` would
    container_id, raised = attempt(fn, stage.labd.socket, image)
    seen = _container_seen(stage, container_id)
    found, pid, alive = seen["status"], seen["pid"], seen["alive"]
    return Check(title, [
        Criterion("the daemon knows the container", found == 200,
                  f"GET /containers/{container_id}/json -> {found or 'not asked'}",
                  "return the Id from the create response's JSON body (201 Created, {\"Id\": ...}); send "
                  "Content-Type: application/json and a Content-Length that counts the body's bytes"),
        Criterion("it was started: a process the kernel runs", alive, f"State.Pid {pid}, /proc/{pid} "
                  f"{'exists' if alive else 'absent'}",
                  "after create, POST /containers/{id}/start (an empty body, Content-Length: 0); give the "
                  "container a command that lasts (sleep 30) so it is still running when checked"),
        Criterion("in a pid namespace of its own", seen["own pidns"],
                  "its /proc/PID/ns/pid differs from this notebook's" if seen["own pidns"] else "not shown",
                  "the daemon isolates what it starts: make sure the request reached labd's socket"),
    ], points, raised=raised)


def _container_seen(stage, container_id) -> dict:
    """What the daemon and the kernel show of the container, which is then removed (DELETE ?force=1)."""
    if not container_id:
        return {"status": None, "pid": 0, "alive": False, "own pidns": False}
    found = stage.wire.exchange("GET", f"/containers/{container_id}/json")
    pid = (found.json().get("State", {}).get("Pid") or 0) if found.status == 200 else 0
    try:
        alive = bool(pid) and os.path.exists(procfs.path(pid))
        return {"status": found.status, "pid": pid, "alive": alive,
                "own pidns": alive and ns_inode("pid", pid) != ns_inode("pid")}
    finally:
        stage.wire.exchange("DELETE", f"/containers/{container_id}?force=1")


# --- 03: namespaces ---------------------------------------------------------------------------------------

def _user_namespace_evidence(fn: Callable, uid: int, gid: int) -> dict:
    _, raised = attempt(fn, uid, gid)
    return {"raised": raised, "userns": ns_inode("user"), "uid_map": procfs.read("self", "uid_map").split(),
            "gid_map": procfs.read("self", "gid_map").split(), "euid": os.geteuid()}


def check_user_namespace(fn: Callable, points: float = 2.0) -> Check:
    """``fn(uid, gid)``, run in a child: unshare a user namespace and map root inside to ``uid``/``gid``
    outside. Evidence: the child's /proc/self/ns/user, uid_map, gid_map and its euid afterwards."""
    title = "A user namespace, by hand"
    refused = isolation_refused(title, points)
    if refused:
        return refused
    uid, gid, host_ns = os.geteuid(), os.getegid(), ns_inode("user")
    seen = run_in_child(_user_namespace_evidence, fn, uid, gid)
    want_uid, want_gid = ["0", str(uid), "1"], ["0", str(gid), "1"]
    return Check(title, [
        Criterion("a new user namespace", seen["userns"] != host_ns,
                  f"user:[{seen['userns']}], the notebook's is user:[{host_ns}]",
                  "call syscalls.unshare(syscalls.CLONE_NEWUSER) first"),
        Criterion(f"uid_map maps 0 inside to {uid} outside", seen["uid_map"][:3] == want_uid,
                  " ".join(seen["uid_map"]) or "(empty)",
                  f"write '0 {uid} 1' to /proc/self/uid_map: inside-id, outside-id, count (user_namespaces(7))"),
        Criterion(f"gid_map maps 0 inside to {gid} outside", seen["gid_map"][:3] == want_gid,
                  " ".join(seen["gid_map"]) or "(empty)",
                  f"write 'deny' to /proc/self/setgroups, then '0 {gid} 1' to /proc/self/gid_map: without "
                  f"'deny' the kernel refuses gid_map to anyone without CAP_SETGID outside (EPERM)"),
        Criterion("the process is root inside", seen["euid"] == 0, f"euid {seen['euid']}",
                  "uid 0 exists inside only once uid_map maps it"),
    ], points, raised=seen["raised"])


def _hostname_evidence(fn: Callable, name: str) -> dict:
    _, raised = attempt(fn, name)
    return {"raised": raised, "uts": ns_inode("uts"), "hostname": os.uname().nodename}


def check_hostname(fn: Callable, name: str = "exercise3", points: float = 2.0) -> Check:
    """``fn(name)``, run in a child: a UTS namespace of its own, and ``name`` as its hostname; the host's
    hostname must stay as it was."""
    title = "A hostname of its own"
    refused = isolation_refused(title, points)
    if refused:
        return refused
    host_uts, host_name = ns_inode("uts"), os.uname().nodename
    seen = run_in_child(_hostname_evidence, fn, name)
    after = os.uname().nodename
    return Check(title, [
        Criterion("a new UTS namespace", seen["uts"] != host_uts, f"uts:[{seen['uts']}], host uts:[{host_uts}]",
                  "unshare(CLONE_NEWUTS); when not root, in the same call as a user namespace "
                  "(userns.unshare(syscalls.CLONE_NEWUTS) does both)"),
        Criterion(f"the hostname inside is {name!r}", seen["hostname"] == name, repr(seen["hostname"]),
                  "then syscalls.sethostname(name), in the new namespace"),
        Criterion("the host's hostname is unchanged", after == host_name,
                  "unchanged" if after == host_name else f"changed to {after!r}",
                  "sethostname before unshare renamed the host: unshare first"),
    ], points, raised=seen["raised"])


# --- 04: control groups ------------------------------------------------------------------------------------

def cgroups_refused(title: str, points: float) -> Check | None:
    """A refused Check where this process may not make cgroups (no root, no delegated subtree); else None."""
    from labcore.kernel.cgroups import can_limit
    if can_limit():
        return None
    return refusal(title, NeedsPrivilege("this process may not make cgroups here",
                                         why="no root, and no delegated cgroup v2 subtree"), points)


def run_in_group(controller: str, fn: Callable, limit: int, workload: Callable, prepare=None) -> dict:
    """A fresh group with ``controller``; the student's ``fn(group_dir, limit)``; then ``workload(channel)`` in a
    child moved into the group before it starts. Returns what fn raised, the group's dir, the workload's
    answer (None when the kernel killed it) and its exit code; the group goes when this returns."""
    from labcore.kernel.cgroups import PARENT, open_manager
    with journal.Scope() as scope:
        manager = open_manager()
        group = manager.create(f"{PARENT}-exercise-{controller}-{os.urandom(3).hex()}", scope,
                               controllers=[controller])
        directory = group.dir(controller)
        _, raised = attempt(fn, directory, limit)
        if prepare is not None:
            prepare(directory)
        child = Child(workload)
        manager.add(group, child.pid)          # moved in before it does anything: it waits for "go"
        child.send("go")
        try:
            answer = child.recv()
        except EOFError:                       # killed before it could answer
            answer = None
        return {"raised": raised, "answer": answer, "code": child.wait(), "files": read_group(directory)}


def read_group(directory: Path) -> dict:
    """The interface files the checks read, as the kernel shows them after the workload."""
    from labcore.kernel.cgroups import read_keyed, read_text
    names = ("memory.max", "memory.limit_in_bytes", "pids.max")
    files = {name: (read_text(directory / name) or "").strip() for name in names if (directory / name).exists()}
    for name in ("memory.events", "memory.oom_control", "pids.events"):
        files[name] = read_keyed(directory / name)
    return files


def _allocate(channel, size: int) -> int:
    """In a child: wait to be moved into the group, then touch ``size`` bytes, a MiB at a time."""
    channel.recv()
    held = [b"\1" * (1 << 20) for _ in range(size >> 20)]
    return len(held)


def _no_swap(limit: int) -> Callable[[Path], None]:
    """Swap would let the hog live past the limit: none for the group (v2 memory.swap.max, v1 memsw)."""
    from labcore.kernel.cgroups import write

    def prepare(directory: Path) -> None:
        for name, value in (("memory.swap.max", "0"), ("memory.memsw.limit_in_bytes", str(limit))):
            if (directory / name).exists():
                try:
                    write(directory / name, value)
                except LabError:
                    pass                # memsw below limit_in_bytes is refused: the student's limit is off
    return prepare


def check_memory_limit(fn: Callable, limit: int = 32 << 20, points: float = 3.0) -> Check:
    """``fn(group_dir, limit)`` writes the memory limit into a fresh cgroup's file; then a process in the
    group touches four times as much, and the kernel must kill it (exit 137) and count an oom_kill."""
    title = "A memory limit, written by hand, and the OOM killer"
    refused = cgroups_refused(title, points)
    if refused:
        return refused
    try:
        seen = run_in_group("memory", fn, limit, lambda channel: _allocate(channel, 4 * limit), _no_swap(limit))
    except _REFUSED as err:
        return refusal(title, err, points)
    v2 = "memory.max" in seen["files"]
    name, events = ("memory.max", "memory.events") if v2 else ("memory.limit_in_bytes", "memory.oom_control")
    written, kills = seen["files"].get(name), seen["files"][events].get("oom_kill")
    return Check(title, [
        Criterion(f"{name} reads {limit}", written == str(limit), f"{name} = {written}",
                  f"write str(limit) ({limit}, in bytes) to group_dir / {name!r}: on this host's cgroup "
                  f"{'v2' if v2 else 'v1'} that is the limit's file"),
        Criterion("the kernel killed the process that went past it", seen["code"] == 137,
                  f"exit code {seen['code']} (137 = 128 + SIGKILL)",
                  "the process lived: no limit was in force when it allocated four times the limit"),
        Criterion("the group counts an OOM kill", bool(kills), f"oom_kill {kills} ({events})",
                  "the OOM killer acts inside the group only when the group's limit is reached"),
    ], points, raised=seen["raised"])


def _fork_until_refused(channel, most: int) -> dict:
    """In a child: wait to be moved in, then fork children that wait on a pipe until refused."""
    channel.recv()
    read_end, write_end = os.pipe()
    children, refused = [], "none"
    for _ in range(most):
        try:
            pid = os.fork()
        except OSError as err:
            refused = errno.errorcode.get(err.errno, str(err.errno))
            break
        if pid == 0:
            os.close(write_end)
            os.read(read_end, 1)
            os._exit(0)
        children.append(pid)
    os.close(write_end)                       # every child's read returns: they exit
    for pid in children:
        os.waitpid(pid, 0)
    return {"forked": len(children), "refused": refused}


def check_pids_limit(fn: Callable, limit: int = 8, points: float = 2.0) -> Check:
    """``fn(group_dir, limit)`` writes pids.max; then a process in the group forks until the kernel refuses."""
    title = "A pids limit: a fork bomb stopped"
    refused = cgroups_refused(title, points)
    if refused:
        return refused
    try:
        seen = run_in_group("pids", fn, limit, lambda channel: _fork_until_refused(channel, 4 * limit))
    except _REFUSED as err:
        return refusal(title, err, points)
    written, bomb = seen["files"].get("pids.max"), seen["answer"] or {"forked": 0, "refused": "none"}
    refusals = seen["files"]["pids.events"].get("max")
    return Check(title, [
        Criterion(f"pids.max reads {limit}", written == str(limit), f"pids.max = {written}",
                  "write str(limit) to group_dir / 'pids.max'"),
        Criterion("fork(2) failed with EAGAIN at the limit", bomb["refused"] == "EAGAIN",
                  f"{bomb['forked']} forks, then {bomb['refused']}",
                  "with no limit the forks all succeeded: the limit counts every task in the group, itself too"),
        Criterion(f"{limit} tasks at most: itself and {limit - 1} children", bomb["forked"] == limit - 1,
                  f"{bomb['forked']} children", "pids.max counts the group's tasks, the forking process included"),
        Criterion("pids.events counts the refusals", bool(refusals), f"max {refusals}",
                  "the kernel counts a refused fork in pids.events only when pids.max refused it"),
    ], points, raised=seen["raised"])


# --- 05: the union filesystem ------------------------------------------------------------------------------

def _layers(base: Path) -> tuple[list[Path], Path, Path, Path]:
    """Two lowers that share one file name, an empty upper, a work dir and a mount point."""
    lowers = [base / "lower1", base / "lower2"]
    for index, lower in enumerate(lowers, 1):
        lower.mkdir()
        (lower / f"only-in-lower{index}").write_text(f"lower{index}\n")
        (lower / "shared.txt").write_text(f"from lower{index}\n")
    upper, work, merged = base / "upper", base / "work", base / "merged"
    for directory in (upper, work, merged):
        directory.mkdir()
    return lowers, upper, work, merged


def _overlay_evidence(fn: Callable, lowers, upper, work, merged) -> dict:
    enter_mount_namespace()
    _, raised = attempt(fn, [str(p) for p in lowers], str(upper), str(work), str(merged))
    mount = procfs.mount_at(str(merged))
    fstype = mount.fstype if mount else "none"
    listing = sorted(os.listdir(merged))
    shared = (merged / "shared.txt").read_text().strip() if (merged / "shared.txt").exists() else "absent"
    if fstype == "overlay":
        (merged / "new.txt").write_text("written through the overlay\n")
    return {"raised": raised, "fstype": fstype, "listing": listing, "shared": shared,
            "in upper": sorted(os.listdir(upper))}


def on_scratch_layers(title: str, points: float, name: str, evidence: Callable, fn: Callable, *extra):
    """``evidence(fn, lowers, upper, work, merged, *extra)`` in a child, on two fresh lower layers and an empty
    upper (removed afterwards); a refused Check where the host cannot isolate or the child is refused."""
    refused = isolation_refused(title, points)
    if refused:
        return refused
    with journal.Scope() as scope:
        lowers, upper, work, merged = _layers(scratch(name, scope))
        return in_child(title, points, evidence, fn, lowers, upper, work, merged, *extra)


def check_overlay_mount(fn: Callable, points: float = 2.0) -> Check:
    """``fn(lowers, upper, work, merged)`` mounts the overlay itself (in a child's mount namespace); the
    merged dir must show both lowers, the first lowerdir on top, and a write must land in the upperdir."""
    title = "An overlay mount, by hand"
    seen = on_scratch_layers(title, points, "overlay", _overlay_evidence, fn)
    if isinstance(seen, Check):
        return seen
    rootless = os.geteuid() != 0
    return Check(title, [
        Criterion("an overlay is mounted on merged", seen["fstype"] == "overlay",
                  f"mountinfo: {seen['fstype']} at merged",
                  "syscalls.mount('overlay', merged, 'overlay', 0, 'lowerdir=A:B,upperdir=U,workdir=W')"
                  + (" — not root: add ',userxattr' to the options (overlayfs.rst)" if rootless else "")),
        Criterion("both lowers show through", {"only-in-lower1", "only-in-lower2"} <= set(seen["listing"]),
                  ", ".join(seen["listing"]) or "(empty)", "lowerdir takes every lower, joined by ':'"),
        Criterion("the first lowerdir is on top", seen["shared"] == "from lower1", f"shared.txt: {seen['shared']}",
                  "lowerdir=lowers[0]:lowers[1]: the leftmost lowerdir is the top one (overlayfs.rst)"),
        Criterion("a write lands in the upperdir", "new.txt" in seen["in upper"],
                  f"upper: {', '.join(seen['in upper']) or '(empty)'}", "upperdir=upper, workdir=work"),
    ], points, raised=seen["raised"])


def _whiteout_evidence(fn: Callable, lowers, upper, work, merged, name: str, rootless: bool) -> dict:
    from labcore.kernel.overlay import overlay_options
    enter_mount_namespace()
    _, raised = attempt(fn, str(upper), name)
    made = os.lstat(upper / name) if os.path.lexists(upper / name) else None
    device = (os.major(made.st_rdev), os.minor(made.st_rdev)) if made and stat.S_ISCHR(made.st_mode) else None
    syscalls.mount("overlay", str(merged), "overlay", 0, overlay_options(lowers, upper, work, userxattr=rootless))
    return {"raised": raised, "device": device, "kind": "none" if made is None else stat.filemode(made.st_mode),
            "listing": sorted(os.listdir(merged))}


def check_whiteout(fn: Callable, name: str = "shared.txt", points: float = 2.0) -> Check:
    """``fn(upper, name)`` makes a whiteout by hand in an empty upperdir; the check then mounts the overlay
    and the lower's ``name`` must be gone from the merged view, the other files still there."""
    title = "A whiteout, by hand"
    seen = on_scratch_layers(title, points, "whiteout", _whiteout_evidence, fn, name, os.geteuid() != 0)
    if isinstance(seen, Check):
        return seen
    return Check(title, [
        Criterion(f"upper/{name} is a character device 0/0", seen["device"] == (0, 0),
                  f"{seen['kind']}, device {seen['device']}",
                  "syscalls.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0)): overlayfs reads a 0/0 "
                  "character device in an upper layer as 'deleted' (overlayfs.rst, 'whiteouts')"),
        Criterion(f"{name} is gone from the merged view", name not in seen["listing"],
                  ", ".join(seen["listing"]), "the whiteout must have exactly the lower file's name"),
        Criterion("the other lower files still show", {"only-in-lower1", "only-in-lower2"} <= set(seen["listing"]),
                  ", ".join(seen["listing"]), "make one whiteout, for that name only"),
    ], points, raised=seen["raised"])


# --- 06: the root filesystem --------------------------------------------------------------------------------

def _pivot_evidence(fn: Callable, root: Path) -> dict:
    enter_mount_namespace()
    proc = os.open("/proc/self", os.O_RDONLY | os.O_DIRECTORY)     # still readable after the old root goes
    _, raised = attempt(fn, str(root))
    here = os.stat("/")
    with open(os.open("mountinfo", os.O_RDONLY, dir_fd=proc)) as file:
        mounts = procfs.parse_mountinfo(file.read())
    return {"raised": raised, "root": (here.st_dev, here.st_ino), "cwd": os.getcwd(),
            "marker": os.path.exists("/labcore-new-root"), "mounts": [m.point for m in mounts],
            "shared": any(tag.startswith("shared:") for m in mounts for tag in m.optional)}


def check_pivot_root(fn: Callable, points: float = 3.0) -> Check:
    """``fn(root)``, run in a child with a mount namespace of its own: make ``root`` the new / with
    pivot_root(2), and leave nothing of the old root mounted."""
    title = "pivot_root, in the kernel's order"
    refused = isolation_refused(title, points)
    if refused:
        return refused
    with journal.Scope() as scope:
        root = scratch("pivot", scope)
        (root / "labcore-new-root").write_text("the new root\n")
        identity = (root.stat().st_dev, root.stat().st_ino)
        seen = in_child(title, points, _pivot_evidence, fn, root)
    if isinstance(seen, Check):
        return seen
    pivoted = seen["root"] == identity or seen["marker"]
    return Check(title, [
        Criterion("/ is the new root", pivoted, "/labcore-new-root " + ("is there" if seen["marker"] else "absent"),
                  "pivot_root(2) refuses (EINVAL) unless: / does not propagate (mount(None, '/', None, "
                  "MS_REC|MS_SLAVE) or MS_PRIVATE), and new_root is a mount point (bind-mount root onto "
                  "itself, MS_BIND|MS_REC); then chdir(root) and syscalls.pivot_root('.', '.')"),
        Criterion("the old root is detached", pivoted and seen["mounts"] == ["/"],
                  f"{len(seen['mounts'])} mount(s): {', '.join(seen['mounts'][:4])}",
                  "after pivot_root('.', '.') the old root sits on top of the new one: "
                  "syscalls.umount2('.', syscalls.MNT_DETACH)"),
        Criterion("the working directory is /", seen["cwd"] == "/", seen["cwd"], "finish with os.chdir('/')"),
        Criterion("nothing propagates back to the host", not seen["shared"],
                  "a shared: peer group" if seen["shared"] else "no shared: tag in mountinfo",
                  "make / MS_REC|MS_SLAVE first, as runc does"),
    ], points, raised=seen["raised"])


def _read_only_evidence(fn: Callable, root: Path) -> dict:
    enter_mount_namespace()
    _, raised = attempt(fn, str(root))
    mount = procfs.mount_at(str(root))
    write = errno_of(lambda: (root / "written").write_text("x"))
    return {"raised": raised, "mounted": mount is not None, "options": mount.options if mount else "", "write": write}


def check_read_only_root(fn: Callable, points: float = 2.0) -> Check:
    """``fn(root)``, in a child's mount namespace: make ``root`` read-only there, as --read-only does; the
    host's view of the same directory must stay writable."""
    title = "A read-only root: docker run --read-only"
    refused = isolation_refused(title, points)
    if refused:
        return refused
    with journal.Scope() as scope:
        root = scratch("readonly", scope)
        seen = in_child(title, points, _read_only_evidence, fn, root)
        if isinstance(seen, Check):
            return seen
        host_write = errno_of(lambda: (root / "from-the-host").write_text("x"))
    return Check(title, [
        Criterion("root is a mount point", seen["mounted"], "in mountinfo" if seen["mounted"] else "not mounted",
                  "first syscalls.mount(root, root, None, syscalls.MS_BIND)"),
        Criterion("mounted read-only", seen["options"].split(",")[:1] == ["ro"], seen["options"] or "-",
                  "a bind mount takes MS_RDONLY only in a second call: mount(None, root, None, "
                  "MS_REMOUNT|MS_BIND|MS_RDONLY | the flags it has, os.statvfs(root).f_flag & "
                  "(MS_NOSUID|MS_NODEV|MS_NOEXEC)) — in a user namespace those are locked (EPERM without)"),
        Criterion("a write inside fails with EROFS", seen["write"] == "EROFS", seen["write"],
                  "the kernel refuses writes on a read-only mount with EROFS"),
        Criterion("the host can still write there", host_write == "ok", host_write,
                  "remount the bind mount, not the filesystem: MS_BIND with MS_REMOUNT"),
    ], points, raised=seen["raised"])


# --- 07: containers and VMs ---------------------------------------------------------------------------------

def _container_said(result) -> tuple[int | None, list[str]]:
    code = getattr(result, "exit_code", None)
    return code, (getattr(result, "stdout", None) or b"").decode(errors="replace").split()


def check_shared_kernel(fn: Callable, points: float = 2.0) -> Check:
    """``fn()`` runs `uname -nr` in a container and returns its ``Result``: the nodename must be the
    container's own, the release the host's."""
    title = "One kernel: uname -nr in a container"
    refused = isolation_refused(title, points)
    if refused:
        return refused
    result, raised = attempt(fn)
    if hosts.was_refused(result):
        return refusal(title, NeedsPrivilege("the container was refused here", why=result.reason[:200]), points)
    code, words = _container_said(result)
    host = os.uname()
    return Check(title, [
        Criterion("the container ran", code == 0, f"exit code {code}",
                  "container.run(container.Spec('busybox', ['uname', '-n', '-r'], network='none', rm=True))"),
        Criterion("its hostname is its own", bool(words) and words[0] != host.nodename, " ".join(words[:1]) or "-",
                  "uname -n prints the UTS namespace's hostname: the container's id, not the host's name"),
        Criterion("its kernel release is the host's", words[1:2] == [host.release], " ".join(words[1:2]) or "-",
                  "uname -r: ask for -n and -r, in that order"),
    ], points, raised=raised)


def check_start_time(fn: Callable, guest=None, points: float = 2.0) -> Check:
    """``fn()`` starts one container and returns (seconds it measured, the Result). The check times the
    same call from outside, and sets it beside the VM's boot (``guest``, 07's boot step)."""
    title = "A container's start, timed, beside a VM's boot"
    refused = isolation_refused(title, points)
    if refused:
        return refused
    started = time.perf_counter()
    answer, raised = attempt(fn)
    wall = time.perf_counter() - started
    seconds, result = answer if isinstance(answer, tuple) and len(answer) == 2 else (None, None)
    if hosts.was_refused(result):
        return refusal(title, NeedsPrivilege("the container was refused here", why=result.reason[:200]), points)
    code, _ = _container_said(result)
    boot = getattr(guest, "data", {}).get("seconds") if guest is not None else None
    measured = isinstance(seconds, (int, float)) and 0 < seconds <= wall
    return Check(title, [
        Criterion("a container ran", code == 0, f"exit code {code}",
                  "return (seconds, container.run(container.Spec('busybox', ['true'], network='none', rm=True)))"),
        Criterion("the time is a measurement of that start", measured,
                  f"{seconds:.3f} s measured by you, {wall:.3f} s around the call" if measured else
                  f"{seconds!r} measured by you, {wall:.3f} s around the call",
                  "time.perf_counter() just before container.run and just after it; return the difference"),
    ] + [c for c in [beside_the_vm(seconds if measured else None, boot)] if c is not None], points, raised=raised)


def beside_the_vm(seconds: float | None, boot) -> Criterion | None:
    """The container's start against the VM's boot measured in 07; None where no VM booted (nothing to grade)."""
    if not isinstance(boot, (int, float)):          # nothing to compare with: no criterion to award
        return None
    faster = seconds is not None and seconds < boot
    return Criterion("faster than the VM's boot", faster,
                     f"VM boot {boot:.2f} s: {boot / seconds:.0f}× the container's" if faster else
                     f"VM boot {boot} s",
                     "a container starts processes on the running kernel; a VM boots a kernel first")


# --- 08: build your own -------------------------------------------------------------------------------------

BOX_ARGS = {"join_cgroup": {"memory": "64m"}, "set_hostname": {"name": "box8"},
            "exec": {"argv": ["hostname"]}}
BOX_STEPS = ("layers", "mount_overlay", "fork_child", "join_cgroup", "unshare", "connect_network",
             "pivot_root", "set_hostname", "exec", "wait")


def _run_box(order: list[str]) -> tuple[list[str], str, Any]:
    """Each step of ``order`` on a fresh box, for real: the steps done, the first refusal, the last Step."""
    from labcore.errors import InvalidTransition
    from labcore.lessons import build_your_own        # same layer: the box is 08's own
    unknown = [name for name in order if name not in BOX_STEPS]
    if unknown:                                       # refused before anything is made
        return [], f"{unknown[0]!r} is not one of the steps: {', '.join(BOX_STEPS)}", None
    done, why, last = [], "", None
    with build_your_own.start("busybox") as box:
        for name in order:
            try:
                last = getattr(box, name)(**BOX_ARGS.get(name, {}))
            except InvalidTransition as err:
                return done, f"{name}: {err}", last
            if hosts.was_refused(last):               # this host refused it: not the order's fault
                return done, "", last
            done.append(name)
    return done, why, last


def check_build_order(order, points: float = 3.0) -> Check:
    """``order``, a list of 08's step names, is run for real on a fresh box; the box refuses a step whose
    prerequisites have not been done (``build_your_own.ORDER``), and pid 1 must print its hostname."""
    title = "docker run, assembled in your order"
    refused = isolation_refused(title, points)
    if refused:
        return refused
    if callable(order):
        order, raised = attempt(order)
    else:
        raised = ""
    order = list(order or [])
    done, why, last = _run_box(order)
    if hosts.was_refused(last):
        return refusal(title, NeedsPrivilege(f"08's step {last.title!r} was refused here", why=last.reason[:200]),
                       points)
    data = getattr(last, "data", {}) if last is not None else {}
    stdout = data.get("stdout", []) if isinstance(data, dict) else []
    return Check(title, [
        Criterion("every step accepted in this order", not why and bool(done),
                  f"{len(done)} of {len(order)} done" + (f"; refused: {why}" if why else ""),
                  why or f"list the steps: {', '.join(sorted(BOX_STEPS))}"),
        Criterion("all ten steps, up to wait", set(BOX_STEPS) <= set(done),
                  ", ".join(done) or "-", "every step is needed: the list ends with 'exec', then 'wait'"),
        Criterion("pid 1 ran the command: it printed box8", stdout == ["box8"], " ".join(map(str, stdout)) or "-",
                  "set_hostname comes after pivot_root and before exec"),
    ], points, raised=raised)


def _propagation_evidence(fn: Callable) -> dict:
    enter_mount_namespace()
    _, raised = attempt(fn)
    mounts = procfs.mountinfo()
    tags = next((list(m.optional) for m in reversed(mounts) if m.point == "/"), [])
    shared = [m.point for m in mounts if any(tag.startswith("shared:") for tag in m.optional)]
    return {"raised": raised, "root tags": tags, "shared": shared}


def check_root_propagation(fn: Callable, points: float = 2.0) -> Check:
    """``fn()``, in a child's new mount namespace: runc's first mount call. Afterwards no mount may be shared
    (nothing mounted inside reaches the host) and / receives the host's mounts if the host's / is shared."""
    title = "runc's first mount: / made rslave"
    refused = isolation_refused(title, points)
    if refused:
        return refused
    host_root = procfs.mount_at("/")
    host_shared = any(tag.startswith("shared:") for tag in host_root.optional) if host_root else False
    seen = in_child(title, points, _propagation_evidence, fn)
    if isinstance(seen, Check):
        return seen
    slave = any(tag.startswith("master:") for tag in seen["root tags"])
    return Check(title, [
        Criterion("no mount in the namespace is shared", not seen["shared"],
                  f"{len(seen['shared'])} shared, e.g. {', '.join(seen['shared'][:3])}" if seen["shared"]
                  else "none shared", "mount(None, '/', None, MS_SLAVE|MS_REC): MS_REC takes every mount below /"),
        Criterion("/ still receives the host's mounts (a slave, not private)", slave or not host_shared,
                  " ".join(seen["root tags"]) or "no propagation tag (private)",
                  "MS_SLAVE, not MS_PRIVATE: runc's default (rootfsPropagation unset) is rslave, so a mount the "
                  "host makes later still shows inside"),
    ], points, raised=seen["raised"])


# --- 09: security -------------------------------------------------------------------------------------------

def _capability_evidence(fn: Callable) -> dict:
    from labcore.kernel import capabilities
    if os.geteuid() != 0:
        userns.enter()                          # root in a user namespace: a full set to drop from
    _, raised = attempt(fn)
    status = capabilities.read_status()
    return {"raised": raised, "effective": capabilities.decode(status["CapEff"]),
            "bounding": capabilities.decode(status["CapBnd"]), "chroot": errno_of(lambda: syscalls.chroot("."))}


def check_drop_capability(fn: Callable, name: str = "CAP_SYS_CHROOT", points: float = 2.0) -> Check:
    """``fn()``, in a child that is root (in a user namespace when you are not): drop ``name`` from the
    effective, permitted and bounding sets and keep the others; chroot(2) must then fail with EPERM."""
    title = f"{name} dropped"
    refused = isolation_refused(title, points)
    if refused:
        return refused
    seen = in_child(title, points, _capability_evidence, fn)
    if isinstance(seen, Check):
        return seen
    return Check(title, [
        Criterion(f"{name} is not effective", name not in seen["effective"], f"CapEff: {len(seen['effective'])} "
                  "capabilities", "capabilities.set_capabilities(keep): capset(2) with every held one but it"),
        Criterion(f"{name} is out of the bounding set", name not in seen["bounding"],
                  f"CapBnd: {len(seen['bounding'])} capabilities",
                  "capabilities.drop_bounding_set(keep) too (prctl PR_CAPBSET_DROP): else a setuid program "
                  "could get it back"),
        Criterion("the others are kept", "CAP_CHOWN" in seen["effective"], "CAP_CHOWN " +
                  ("kept" if "CAP_CHOWN" in seen["effective"] else "gone"),
                  "keep = every capability the process holds (capabilities.held_by_this_process()) except it"),
        Criterion("chroot(2) fails with EPERM", seen["chroot"] == "EPERM", f"chroot('.') -> {seen['chroot']}",
                  "the kernel checks CAP_SYS_CHROOT in the effective set"),
    ], points, raised=seen["raised"])


def _seccomp_evidence(fn: Callable, directory: Path) -> dict:
    _, raised = attempt(fn)
    mode = procfs.status_field("Seccomp") or "?"
    return {"raised": raised, "mode": mode, "mkdir": errno_of(lambda: os.mkdir(directory / "refused")),
            "create": errno_of(lambda: (directory / "allowed").write_text("x"))}


def check_seccomp_filter(fn: Callable, points: float = 2.0) -> Check:
    """``fn()``, in a child: load a seccomp filter that makes mkdir(2) and mkdirat(2) fail with EPERM and
    allows the rest; the child then tries both kinds of call."""
    title = "A seccomp filter: mkdir refused"
    with journal.Scope() as scope:
        directory = scratch("seccomp", scope)
        seen = run_in_child(_seccomp_evidence, fn, directory)
    return Check(title, [
        Criterion("a filter is loaded", seen["mode"] == "2", f"Seccomp: {seen['mode']} (2 = filter)",
                  "build it with seccomp.binding().SyscallFilter(defaction=ALLOW), then "
                  "syscalls.load_seccomp(the_filter)"),
        Criterion("mkdir fails with EPERM", seen["mkdir"] == "EPERM", f"mkdir -> {seen['mkdir']}",
                  "add_rule(ERRNO(errno.EPERM), 'mkdir') and the same for 'mkdirat': Python's os.mkdir calls "
                  "mkdirat on newer C libraries"),
        Criterion("other calls still work", seen["create"] == "ok", f"open(O_CREAT) -> {seen['create']}",
                  "the default action must be ALLOW: refuse only mkdir"),
    ], points, raised=seen["raised"])
