"""Namespaces, shown one by one: what a container can see (notebook 03).

Each step makes a child in new namespaces of one kind (``labcore.kernel.namespaces`` lists the seven), changes
one thing in each, and compares what the child sees with what the host sees: the inode numbers of
/proc/PID/ns/KIND, and one or two facts per kind (the hostname, pid 1, a tmpfs only inside, a lonely `lo`).
Each step runs in a child (``labcore.kernel.process``), so the notebook itself never leaves the host's
namespaces; when you are not root, each child first enters a user namespace (``labcore.kernel.userns``), where
the kernel lets it create the others. ``join`` does what `docker exec` does: setns(2) into a running process's
namespaces. The facts are kept under plain names (``step.data["inside"]["pid"]``); ``LABELS`` says how the
table shows them.

Next: ``labcore.lessons.control_groups`` limits what the processes inside may use (notebook 04).
"""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time

from labcore import paths
from labcore.errors import BadInput, LabError, NeedsPrivilege, NotSupportedHere
from labcore.kernel import journal, procfs, syscalls, userns
from labcore.kernel.namespaces import (JOIN_ORDER, KINDS, cgroup_paths, check_hostname, check_kinds,
                                       enter_namespaces, flags_of, interfaces, link_state, make_mounts_private,
                                       message_queues, mounts, namespaces_of, nodename, ns_inode, nspids,
                                       propagation, ps, status_field, uid_map, visible_pids)
from labcore.kernel.process import Child
from labcore.lessons import hosts
from labcore.lessons.evidence import Step, current_mode, record

DEFAULT_HOSTNAME = "labcore-box"
TMPFS_SOURCE = "labcore-ns"            # the "device" of the demo tmpfs, as /proc/PID/mountinfo shows it
NOBODY = 65534                         # the outside uid that root inside a user namespace is mapped to
_REFUSED = (NeedsPrivilege, NotSupportedHere)
SHADOW = 'open("/etc/shadow")'
SETHOSTNAME = "sethostname (host's UTS ns)"


# --- reading the evidence: the same readers run on the host and inside -----------------------------------

def demo_mounts() -> list[str]:
    return [mount["point"] for mount in mounts() if mount["source"] == TMPFS_SOURCE]


def try_open(path: str) -> str:
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))
    return "allowed"


# One or two facts per kind, read the same way on the host and inside, each under a plain name.
PROBES = {
    "uts": lambda: {"hostname": nodename()},
    "pid": lambda: {"pid": os.getpid(), "processes": len(visible_pids())},
    "mnt": lambda: {"tmpfs_mounts": demo_mounts(), "propagation": propagation("/")},
    "net": lambda: {"interfaces": interfaces(), "lo": link_state("lo")},
    "ipc": lambda: {"message_queues": message_queues()},
    "user": lambda: {"euid": os.geteuid(), "uid_map": uid_map()},
    "cgroup": lambda: {"cgroups": cgroup_paths()},
}
# How the step's table names each fact (a name not here is shown as it is). Labels are for reading only:
# a cell looks facts up by their plain names, in step.data.
LABELS = {**{f"{kind}_ns": f"{kind} ns" for kind in KINDS},
          "pid": "pid (os.getpid())", "processes": "processes in /proc",
          "processes_before_remount": "processes in /proc before remounting it",
          "tmpfs_mounts": "labcore tmpfs mounts", "propagation": "propagation of /",
          "message_queues": "SysV message queues", "cap_eff": "CapEff", "shadow": SHADOW,
          "sethostname": SETHOSTNAME}


def look(kinds) -> dict:
    """Evidence about the calling process: for each kind, its namespace and what that namespace shows."""
    inodes, facts = {}, {}
    for kind in kinds:
        inodes[kind] = ns_inode(kind)
        facts[f"{kind}_ns"] = f"{kind}:[{inodes[kind]}]"
        facts.update(PROBES[kind]())
    return {"inodes": inodes, "facts": facts}


def rows(facts: dict) -> dict:
    """The facts as the step's table shows them: each under its label, one row per cgroup hierarchy."""
    shown = {}
    for key, value in facts.items():
        if key == "cgroups":
            shown.update({f"cgroup {hierarchy}": path for hierarchy, path in value.items()})
        else:
            shown[LABELS.get(key, key)] = value
    return shown


# --- what the children do to themselves --------------------------------------------------------------------

def mount_tmpfs(target: str) -> None:
    syscalls.mount(TMPFS_SOURCE, target, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=1m")


def remount_proc() -> None:
    # A proc mount shows the pid namespace of the process that mounted it: until pid 1 mounts a fresh
    # one, ps inside still lists the host's processes (pid_namespaces(7), "/proc and PID namespaces").
    syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)


# --- children: each changes itself, reports what it sees, and waits while the parent looks --------------

def _report(channel, evidence: dict) -> None:
    """Send evidence to the parent, then hold the namespaces alive until it has looked from the host."""
    channel.send(evidence)
    with contextlib.suppress(EOFError):      # the parent went away: nothing left to wait for
        channel.recv()


def _release(child: Child) -> None:
    with contextlib.suppress(OSError):
        child.send("done")
    child.wait()


def _relay(channel, init: Child) -> None:
    """Pass up the evidence of a child born in a new pid namespace, with its host pid; keep it alive."""
    try:
        seen = init.recv()
        _report(channel, {**seen, "host_pid": init.pid})
    finally:
        _release(init)


def _isolated(channel, kinds, name: str, mountpoint: str | None) -> None:
    """In the child: enter new namespaces of each kind, change one thing in each, report from inside."""
    userns.unshare(flags_of(kinds))
    if "mnt" in kinds:
        make_mounts_private()
        mount_tmpfs(mountpoint)
    if "uts" in kinds:
        syscalls.sethostname(name)
    if "pid" in kinds:
        # A process never changes its own pid namespace: only the children it forks next are born in the
        # new one. The first of them is pid 1 there (pid_namespaces(7)).
        _relay(channel, Child(lambda init_channel: _report(init_channel, _look_as_init(kinds))))
    else:
        _report(channel, {**look(kinds), "host_pid": os.getpid()})


def _look_as_init(kinds) -> dict:
    if "mnt" not in kinds:
        return look(kinds)                       # no mount namespace of its own: /proc must stay the host's
    before = len(visible_pids())
    remount_proc()
    seen = look(kinds)
    seen["facts"] = {"processes_before_remount": before, **seen["facts"], "ps": ps()}
    return seen


def _joined(channel, pid: int, kinds) -> None:
    enter_namespaces(pid, kinds)
    if "pid" in kinds:
        # setns(CLONE_NEWPID) only decides where this process's children are born: fork one to be inside.
        _relay(channel, Child(lambda inside: _report(inside, look(kinds))))
    else:
        _report(channel, {**look(kinds), "host_pid": os.getpid()})


def _observe(inside, outside):
    """Run ``inside(channel)`` in a child; while it holds its namespaces, read ``outside(seen)`` here."""
    child = Child(inside)
    try:
        seen = child.recv()
        return seen, outside(seen)
    finally:
        _release(child)


# --- a process left running in its namespaces ---------------------------------------------------------------

class Sleeper:
    """A process left running in new namespaces, as `docker run -d` leaves one, to look at and to join.

    ``pid`` is its pid on the host (pid 1 inside when it has a pid namespace) and ``inside`` the evidence
    it read about itself. ``stop()``, or the end of a ``with`` block, ends it; so does the end of the
    process that started it, whose closing socket wakes it. Each process is journaled with its start time.
    """

    def __init__(self, kinds=KINDS, hostname: str = DEFAULT_HOSTNAME):
        self.kinds = check_kinds(kinds)
        self.hostname = check_hostname(hostname) if "uts" in self.kinds else nodename()
        self._scope, self._child = journal.Scope(), None
        try:
            mountpoint = _make_mountpoint(self._scope) if "mnt" in self.kinds else None
            self._child = Child(lambda channel: _isolated(channel, self.kinds, hostname, mountpoint))
            self._record(self._child.pid)
            self.inside = self._child.recv()
            self.pid = self.inside.pop("host_pid")
            if self.pid != self._child.pid:
                self._record(self.pid)
        except BaseException:
            self.stop()
            raise

    def _record(self, pid: int) -> None:
        self._scope.record("process", str(pid), "kill", pid=pid, start=journal.process_start_time(pid))

    def stop(self) -> "Sleeper":
        if self._child is not None:
            _release(self._child)
        self._scope.close()
        return self

    def __enter__(self) -> "Sleeper":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._child is None or self._child.status is not None else "running"
        return f"<Sleeper pid {getattr(self, 'pid', '?')} in new {', '.join(self.kinds)} namespaces, {state}>"


def start_sleeper(kinds=KINDS, hostname: str = DEFAULT_HOSTNAME) -> Sleeper | Step:
    """A ``Sleeper``; where this host refuses its namespaces, the refused Step, which stands in for it."""
    kinds = check_kinds(kinds)
    title = f"a process left running in new {', '.join(kinds)} namespaces"
    try:
        sleeper = Sleeper(kinds, hostname)
    except _REFUSED as err:
        return hosts.refuse(title, isolate_action(kinds, hostname), err, key="namespaces.start_sleeper")
    # Recorded once, here (showing it must not write): the reference run's, for the refusals elsewhere.
    record(Step(title, "fork; unshare", key="namespaces.start_sleeper"), output=repr(sleeper))
    return sleeper


def _make_mountpoint(scope: journal.Scope) -> str:
    """An empty labcore-... directory for the mount-namespace demo, journaled so that it is removed."""
    path = paths.scratch_dir() / f"labcore-mnt-{os.getpid()}-{time.time_ns()}"
    scope.record("directory", str(path), "rmtree", path=str(path))       # journaled before it exists
    path.mkdir(parents=True, mode=0o755)
    return str(path)


# --- the steps ---------------------------------------------------------------------------------------------

def isolate_action(kinds, name: str = DEFAULT_HOSTNAME) -> str:
    """The syscalls ``isolate(kinds)`` makes, as C spells them, in the order it makes them."""
    flags = userns.isolating_flags(flags_of(kinds))
    calls = [f"unshare({syscalls.clone_flag_names(flags)})"]
    if flags & syscalls.CLONE_NEWUSER:
        calls.append(f'write /proc/self/uid_map "0 {os.geteuid()} 1"')
    if "mnt" in kinds:
        calls += ['mount(NULL, "/", NULL, MS_REC|MS_PRIVATE, NULL)',
                  f'mount("{TMPFS_SOURCE}", "labcore-mnt-...", "tmpfs", MS_NOSUID|MS_NODEV, "size=1m")']
    if "uts" in kinds:
        calls.append(f'sethostname("{name}")')
    if "pid" in kinds:
        calls.append("fork()" + ('; mount("proc", "/proc", "proc", ...)' if "mnt" in kinds else ""))
    return "; ".join(calls)


def isolate(kinds=KINDS, hostname: str = DEFAULT_HOSTNAME, *, title: str | None = None,
            while_alive=None) -> Step:
    """Compose your own container: a child in new namespaces of ``kinds``, compared with the host.

    ``while_alive(sleeper)`` may read more host-side evidence while the child still exists.
    """
    kinds = check_kinds(kinds)
    check_hostname(hostname)
    title = title or f"new {', '.join(kinds)} namespace{'s' if len(kinds) > 1 else ''}"
    action = isolate_action(kinds, hostname)
    try:
        with Sleeper(kinds, hostname) as box:
            host = look(kinds)
            extra = while_alive(box) if while_alive else {}
            dot = membership_dot([os.getpid(), box.pid])
    except _REFUSED as err:
        return hosts.refuse(title, action, err)
    differ = [kind for kind in kinds if box.inside["inodes"][kind] != host["inodes"][kind]]
    return Step(title, action, before=rows(host["facts"]), after=rows(box.inside["facts"]), mode=current_mode(),
                columns=("host", "inside"),
                note=f"inside is in new {', '.join(differ)} namespaces: other inode numbers, other views",
                data={"inside": box.inside["facts"], "host": host["facts"], "inodes_inside": box.inside["inodes"],
                      "inodes_host": host["inodes"], "host_pid": box.pid, "dot": dot, **extra})


def compose(uts: bool = True, pid: bool = True, mnt: bool = True, net: bool = True, ipc: bool = True,
            user: bool = False, cgroup: bool = True) -> Step:
    """``isolate`` with one switch per kind: for a row of checkboxes (``widgets.try_it``)."""
    chosen = {kind for kind, on in zip(KINDS, (uts, pid, mnt, net, ipc, user, cgroup)) if on}
    return isolate(chosen, title=f"your container: new {', '.join(check_kinds(chosen))} namespaces")


def lift(step: Step, **facts: tuple[str, str]) -> None:
    """Name the facts a check cell reads: ``name=(side, fact)`` copies ``step.data[side][fact]`` (side is
    "inside" or "host") to ``step.data[name]``."""
    for name, (side, fact) in facts.items():
        step.data[name] = step.data[side][fact]


def isolate_uts(hostname: str = DEFAULT_HOSTNAME) -> Step:
    """unshare(CLONE_NEWUTS), then sethostname: the name changes inside, and not on the host."""
    step = isolate({"uts"}, hostname, title="UTS namespace: a hostname of its own")
    if step.permitted:
        lift(step, hostname_inside=("inside", "hostname"))
        step.data["hostname_host_after"] = nodename()
        step.note = (f"inside, uname(2) says {step.data['hostname_inside']!r}; the host still says "
                     f"{step.data['hostname_host_after']!r}")
    return step


def isolate_pid() -> Step:
    """unshare(CLONE_NEWPID), fork: the child is pid 1 inside and has another pid on the host."""
    def from_the_host(box: Sleeper) -> dict:
        return {"nspid": nspids(box.pid), "tree_dot": process_tree_dot(box.pid)}

    step = isolate({"pid", "mnt"}, title="PID namespace: pid 1 inside, another pid outside",
                   while_alive=from_the_host)
    if step.permitted:
        for fact in ("mnt_ns", "tmpfs_mounts", "propagation"):   # mnt is there for /proc only
            step.before.pop(LABELS[fact])
            step.after.pop(LABELS[fact])
        step.before["NSpid of that process"] = " ".join(map(str, step.data["nspid"]))
        lift(step, pid_inside=("inside", "pid"), ps_inside=("inside", "ps"))
        step.data["pid_levels"] = len(step.data["nspid"])          # one pid per pid namespace, host first
        step.data["processes_inside"] = len(step.data["ps_inside"])
        step.note = (f"one process, two pids: {step.data['nspid'][0]} on the host, {step.data['pid_inside']} "
                     f"inside, where ps shows {len(step.data['ps_inside'])} process once /proc is remounted")
    return step


def isolate_mnt() -> Step:
    """unshare(CLONE_NEWNS), make / private, mount a tmpfs: the host's mount table does not show it."""
    step = isolate({"mnt"}, title="mount namespace: a mount table of its own")
    if step.permitted:
        lift(step, mounts_inside=("inside", "tmpfs_mounts"), mounts_host=("host", "tmpfs_mounts"))
        step.data["tmpfs_mounts_inside"] = len(step.data["mounts_inside"])
        step.note = (f"inside, /proc/self/mountinfo lists the tmpfs at {step.data['mounts_inside']}; "
                     f"the host's lists {step.data['mounts_host'] or 'no such mount'}")
    return step


def isolate_net() -> Step:
    """unshare(CLONE_NEWNET): a network stack of its own, with only a loopback that is down."""
    step = isolate({"net"}, title="network namespace: only lo, and it is down")
    if step.permitted:
        lift(step, interfaces_inside=("inside", "interfaces"), lo_inside=("inside", "lo"))
        step.note = (f"inside there is only {step.data['interfaces_inside']} ({step.data['lo_inside']}); the "
                     f"host has {step.data['host']['interfaces']}")
    return step


def isolate_ipc() -> Step:
    """A message queue made on the host (ipcmk -Q) is not there inside a new IPC namespace."""
    with journal.Scope() as scope:
        try:
            key = make_message_queue(scope)
        except _REFUSED as err:
            return hosts.refuse("IPC namespace", "ipcmk -Q; unshare(CLONE_NEWIPC)", err)
        step = isolate({"ipc"}, title="IPC namespace: System V objects of its own")
    step.action = "ipcmk -Q (on the host); " + step.action
    if step.permitted:
        step.data["queue_key"] = key
        step.data["queues_inside"] = step.data["inside"]["message_queues"]
        step.note = (f"the host holds the queue {key}; inside, /proc/sysvipc/msg lists "
                     f"{step.data['queues_inside'] or 'none'}")
    return step


def make_message_queue(scope: journal.Scope) -> str:
    """ipcmk -Q: a System V message queue in the host's IPC namespace, journaled by its id and key."""
    try:
        out = subprocess.run(["ipcmk", "-Q"], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError as err:
        raise NotSupportedHere("ipcmk is not installed", syscall="msgget",
                               fix="apt-get install util-linux") from err
    except subprocess.CalledProcessError as err:
        raise LabError(f"ipcmk -Q failed: {err.stderr.strip()}", syscall="msgget") from err
    msqid = int(out.split(":")[-1])
    key = next(int(row[0]) for row in procfs.sysvipc("msg") if int(row[1]) == msqid)
    scope.record("ipc", f"message queue {msqid}", "ipcrm", msqid=msqid, key=key)
    return f"0x{key & 0xffffffff:08x}"


def isolate_cgroup() -> Step:
    """unshare(CLONE_NEWCGROUP): the child's own cgroup becomes the root of what it sees."""
    step = isolate({"cgroup"}, title="cgroup namespace: its cgroup looks like /")
    if step.permitted:
        inside = step.data["inside"]
        step.data["paths_inside"] = sorted(set(inside["cgroups"].values()))
        step.note = (f"inside, /proc/self/cgroup shows {', '.join(step.data['paths_inside'])} for every "
                     f"hierarchy: the cgroup the child was in has become its root")
    return step


def isolate_user(outside_uid: int | None = None) -> Step:
    """unshare(CLONE_NEWUSER); the parent writes uid_map: uid 0 inside, an unprivileged uid outside."""
    uid = outside_uid if outside_uid is not None else (NOBODY if os.geteuid() == 0 else os.geteuid())
    gid = NOBODY if os.geteuid() == 0 else os.getegid()
    title = f"user namespace: uid 0 inside is uid {uid} outside"
    action = (f'unshare(CLONE_NEWUSER); the parent writes /proc/PID/uid_map "0 {uid} 1"; setresuid(0, 0, 0); '
              f'{SHADOW}; sethostname()')
    try:
        inside = _as_mapped_root(uid, gid)
    except _REFUSED as err:
        return hosts.refuse(title, action, err)
    host = look(["user"])
    host["facts"].update({"cap_eff": status_field("CapEff"), "shadow": try_open("/etc/shadow")})
    facts = inside["facts"]
    return Step(title, action, before=rows(host["facts"]), after=rows(facts), mode=current_mode(),
                columns=("host", "inside"),
                note=(f"root inside holds every capability (CapEff), yet open gives {facts['shadow']} and "
                      f"sethostname {facts['sethostname']}: the kernel checks uid {uid} and the host's namespaces"),
                data={"euid_inside": facts["euid"], "uid_map_inside": facts["uid_map"], "outside_uid": uid,
                      "shadow_inside": facts["shadow"], "sethostname_inside": facts["sethostname"],
                      "inodes_inside": inside["inodes"], "inodes_host": host["inodes"], "dot": inside["dot"]})


def _as_mapped_root(uid: int, gid: int) -> dict:
    """The parent writes the child's maps, as newuidmap(1) does for rootless runtimes."""
    child = Child(_enter_user_namespace)
    try:
        child.recv()                          # it has unshared; until its maps are written it has no uid
        userns.write_id_maps(child.pid, uid, gid)
        child.send("mapped")
        inside = child.recv()
        inside["dot"] = membership_dot([os.getpid(), child.pid])
        return inside
    finally:
        _release(child)


def _enter_user_namespace(channel) -> None:
    if os.geteuid() == 0:
        os.setgroups([])    # as `setpriv --clear-groups`: gid_map cannot hide root's supplementary groups
    syscalls.unshare(syscalls.CLONE_NEWUSER)
    channel.send("unshared")
    channel.recv()
    # A map says who uid 0 inside is; becoming uid 0 takes setresuid, which the kernel records as the
    # outside uid of the map. That uid, not "root", is what file permissions are checked against.
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    seen = look(["user"])
    seen["facts"].update({"cap_eff": status_field("CapEff"), "shadow": try_open("/etc/shadow"),
                          "sethostname": _try_sethostname()})
    _report(channel, seen)


def _try_sethostname() -> str:
    # The host's UTS namespace belongs to the host's user namespace, where this process has no
    # capabilities: EPERM. It asks for the name already set, so even a success would change nothing.
    try:
        syscalls.sethostname(nodename())
    except LabError as err:
        return errno.errorcode.get(err.errno, str(err.errno))
    return "allowed"


def join(pid: int, kinds=None) -> Step:
    """setns(2) a child into the namespaces of process ``pid``, as `docker exec` does."""
    wanted = check_kinds(kinds if kinds is not None else KINDS)
    title = f"setns: join the namespaces of pid {pid}, as docker exec does"
    missing = hosts.lacking("a process to join", title, "setns(open(/proc/PID/ns/KIND), ...)", pid,
                            key="namespaces.join")
    if missing:
        return missing
    try:
        target, mine = namespaces_of(pid, wanted), namespaces_of("self", wanted)
    except NeedsPrivilege as err:
        return hosts.refuse(title, f"open(/proc/{pid}/ns/*)", err)
    kinds = [kind for kind in JOIN_ORDER if kind in wanted and target[kind] != mine[kind]]
    if not kinds:          # and setns into the user namespace you are already in fails with EINVAL
        raise BadInput(f"pid {pid} is in this process's own {', '.join(wanted)} namespaces: nothing to join; "
                       f"give the pid of a process in other namespaces (start_sleeper)")
    action = join_action(pid, kinds)
    try:
        seen, (host, dot) = _observe(lambda channel: _joined(channel, pid, kinds),
                                     lambda seen: _look_beside(pid, seen["host_pid"], kinds))
    except _REFUSED as err:
        return hosts.refuse(title, action, err)
    same = all(seen["inodes"][kind] == target[kind] for kind in kinds)
    return Step(title, action, before=rows(host["facts"]), after=rows(seen["facts"]), mode=current_mode(),
                columns=("host", "inside"),
                key="namespaces.join",
                note=f"after setns the child's {', '.join(kinds)} inodes {'equal' if same else 'differ from'} "
                     f"those of pid {pid}: it sees what that process sees",
                data={"target": target, "joined": kinds, "same_as_target": same, "inside": seen["facts"],
                      "inodes_inside": seen["inodes"], "host_pid": seen["host_pid"], "dot": dot})


def _look_beside(target: int, joined: int, kinds) -> tuple[dict, str]:
    """The host's view of ``kinds``, and who shares what, while the joined child is still alive."""
    return look(kinds), membership_dot([os.getpid(), target, joined])


def join_action(pid: int, kinds) -> str:
    calls = [f'setns(open("/proc/{pid}/ns/{kind}"), {syscalls.clone_flag_names(syscalls.NAMESPACE_FLAGS[kind])})'
             for kind in kinds]
    return "; ".join(calls + (["fork()"] if "pid" in kinds else []))


# --- diagrams from live state --------------------------------------------------------------------------------

def membership_dot(pids, kinds=KINDS) -> str:
    """DOT: which processes share which namespaces, each namespace drawn once with its inode number.

    The first process sits above the row of namespaces and the others below, so a namespace with lines
    both up and down is shared, and one with a line on one side only belongs to that side alone.
    """
    from labcore.lessons.diagrams import Graph
    graph = Graph("namespace membership", rankdir="TB", fontname="Helvetica", nodesep="0.1")
    graph.defaults("node", fontname="Helvetica", fontsize="10")
    members: dict[str, list[int]] = {}
    for pid in pids:
        for kind, inode in namespaces_of(pid, kinds).items():
            members.setdefault(f"{kind}:[{inode}]", []).append(pid)
    for pid in pids:
        name = "this notebook" if pid == os.getpid() else _comm(pid)
        graph.node(f"pid {pid}", f"{name}\npid {pid}", shape="box", style="rounded,bold")
    for namespace, holders in sorted(members.items(), key=lambda item: KINDS.index(item[0].split(":")[0])):
        graph.node(namespace, namespace.replace(":", "\n"), shape="ellipse", style="filled",
                   fillcolor="lightgrey" if len(holders) > 1 else "lightyellow")
        for pid in holders:
            if pid == pids[0]:
                graph.edge(f"pid {pid}", namespace)
            else:                                       # drawn from below: an arrow towards the process
                graph.edge(namespace, f"pid {pid}", dir="back")
    return graph.source()


def process_tree_dot(pid: int, ancestors: int = 2) -> str:
    """DOT: the process tree around ``pid`` as the host sees it, boxed by pid namespace, with both pids."""
    import psutil
    from labcore.lessons.diagrams import Graph
    proc = psutil.Process(pid)
    family = [*reversed(proc.parents()[:ancestors]), proc, *proc.children(recursive=True)]
    graph = Graph(f"process tree of pid {pid}", rankdir="TB", fontname="Helvetica")
    graph.defaults("node", fontname="Helvetica", fontsize="11", shape="box", style="rounded")
    boxes: dict[str, list[str]] = {}
    for member in family:
        levels = nspids(member.pid)
        inside = f"\npid {levels[-1]} inside" if len(levels) > 1 else ""
        graph.node(str(member.pid), f"{member.name()}\nhost pid {levels[0]}{inside}")
        boxes.setdefault(_pid_namespace_label(member.pid, len(levels)), []).append(str(member.pid))
        if member is not family[0]:
            graph.edge(str(member.ppid()), str(member.pid))
    for index, (label, nodes) in enumerate(boxes.items()):
        graph.cluster(f"pidns{index}", label, nodes, style="dashed")
    return graph.source()


def _pid_namespace_label(pid: int, depth: int) -> str:
    if depth == 1:                 # one pid in NSpid: the process is in the reader's own pid namespace
        return f"the host's pid namespace pid:[{ns_inode('pid')}]"
    try:
        return f"a new pid namespace pid:[{ns_inode('pid', pid)}]"
    except LabError:               # another user's process: its ns files are not ours to read
        return f"a pid namespace {depth - 1} level(s) below the host's"


def _comm(pid: int) -> str:
    try:
        return procfs.comm(pid)
    except OSError:
        return "?"
