"""Doctor: what this host lets the lab do, found out by trying.

Whether you may create a namespace, mount an overlay or make a cgroup is not written in one place: it
depends on your uid and capabilities (capabilities(7)), sysctls, a seccomp filter from a container runtime,
an AppArmor policy, the kernel version and who owns /sys/fs/cgroup. Reading all of those would still be
guessing. So the doctor asks the kernel the only reliable way — it tries each operation, in a throwaway
child process, and reads the answer back:

    unshare(2) of each namespace type, as you and inside a new user namespace    man 7 namespaces
    mount(2) of an overlay on a tmpfs, chroot(2), pivot_root(2)                   man 2 pivot_root
    mkdir(2) of a cgroup under each controller, then rmdir(2)                     man 7 cgroups
    a veth pair in a new network namespace, open(2) of /dev/kvm, `dot -V`
    what a rootless container's network needs: slirp4netns, nft, open(2) of /dev/net/tun

Sysctls are read only to explain a "no". From the answers follows the lab's mode: everything real as root,
rootless inside a user namespace, or read-only explanations.

Next: ``labcore.kernel.userns`` — how a user who is not root can still do most of this.
"""
from __future__ import annotations

import errno
import html
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from labcore.errors import LabError, NotSupportedHere, from_oserror
from labcore.kernel import journal, netlink, procfs, syscalls, userns
from labcore.kernel.capabilities import NAMES as CAPABILITY_NAMES, decode as decode_capabilities  # noqa: F401
from labcore.kernel.process import Child, exit_code

NAMESPACES = ("mnt", "uts", "ipc", "pid", "net", "user", "cgroup")
# The lab's rootless path needs these inside a user namespace (userns.unshare adds CLONE_NEWUSER).
ROOTLESS_NEEDS = ("mnt", "uts", "ipc", "pid", "net")
# Seconds for all children together: a bound on a probe that hangs, not a goal. They answer in well under a
# second on an idle host, but a loaded shared lab VM, or an emulated guest, takes seconds (pyroute2's import
# alone, for the veth probe: 0.16 s here, 10 times that under TCG), and a probe stopped for being slow would
# report as missing what the host has: the lab VM's notebook 00 once said "veth: no" for that reason alone.
TIMEOUT = 15

MODE_ROOT = "root: everything real"
MODE_ROOTLESS = "rootless: steps run inside a user namespace"
MODE_READ_ONLY = "read-only: explanations only"

# cgroups(7), "Cgroups version 1 controllers": the superblock options of a v1 mount that name one.
V1_CONTROLLERS = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls", "net_prio",
                  "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc"}
# Read only to explain a refusal, never to decide one.
EXPLAINING_SYSCTLS = ("kernel.unprivileged_userns_clone", "kernel.apparmor_restrict_unprivileged_userns",
                      *(f"user.max_{ns}_namespaces" for ns in NAMESPACES))
SCRATCH = "/tmp"            # covered by a tmpfs inside each probe's private mount namespace


@dataclass
class Capability:
    ok: bool
    detail: str


@dataclass
class Report:
    capabilities: dict[str, Capability]
    seconds: float = 0.0

    def mode(self) -> str:
        """What the lab will do here: all steps as root, in a user namespace, or only explain them."""
        ok = lambda name: name in self.capabilities and self.capabilities[name].ok   # noqa: E731
        if ok("euid") and ok("overlayfs") and all(ok(f"ns.{ns}") for ns in NAMESPACES):
            return MODE_ROOT
        if ok("ns.user") and all(ok(f"userns.{ns}") for ns in ROOTLESS_NEEDS):
            return MODE_ROOTLESS
        return MODE_READ_ONLY

    def in_one_line(self) -> str:
        """What this host gives you, in one line: the kind of host (``labcore.lessons.hosts``) and the cgroup limits."""
        from labcore.kernel.cgroups import detect, find_delegation
        from labcore.lessons import hosts
        host = hosts.current()
        if host.kind == hosts.ROOT:
            return "You are root here: every step of the course runs for real on this kernel."
        if host.kind == hosts.CONFINED:
            return (f"You are in a confined container ({host.describe()}): the daemon, its socket, images and "
                    f"diagrams are real here; every step that isolates says why not and shows the reference "
                    f"VM's recording of it.")
        try:
            delegation = find_delegation(detect())
        except NotSupportedHere as err:
            limits = f"no cgroup limits ({err.message})"
        else:
            limits = (f"cgroup limits too, in the subtree delegated to you (/{delegation.base})"
                      if delegation.allowed else f"but no cgroup limits: {delegation.why_not}")
        return (f"You are uid {host.euid}, not root, with user namespaces: every step runs for real inside one, "
                f"{limits}; a step that needs root on the host itself says why and shows the reference VM's "
                f"recording.")

    def to_json(self) -> dict:
        return {"mode": self.mode(), "in one line": self.in_one_line(),
                "capabilities": {name: {"ok": c.ok, "detail": c.detail}
                                 for name, c in self.capabilities.items()}}

    def __str__(self) -> str:
        width = max(len("capability"), *(len(name) for name in self.capabilities))
        lines = [f"mode: {self.mode()}   (probed in {self.seconds:.2f} s)", "",
                 f"{'capability':{width}}  ok   detail"]
        for name, cap in self.capabilities.items():
            first, *rest = cap.detail.splitlines() or [""]
            lines.append(f"{name:{width}}  {'yes' if cap.ok else 'no ':3}  {first}")
            lines += [f"{'':{width}}       {line.strip()}" for line in rest]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        """One line first, what the host gives you; the table folded under it, opened on a click (issue 14:
        a 35-row table is not how a course should open)."""
        esc = html.escape
        rows = "".join(
            f"<tr><td><code>{esc(name)}</code></td>"
            f"<td style='color:{'green' if c.ok else 'firebrick'};font-weight:bold'>{'yes' if c.ok else 'no'}"
            f"</td><td style='text-align:left;white-space:pre-wrap'>{esc(c.detail)}</td></tr>"
            for name, c in self.capabilities.items())
        allowed = sum(c.ok for c in self.capabilities.values())
        return (f"<div><b>{esc(self.in_one_line())}</b>"
                f"<details><summary>{allowed} of {len(self.capabilities)} capabilities allowed "
                f"(<b>mode:</b> {esc(self.mode())}; probed in {self.seconds:.2f} s): the details</summary>"
                f"<table><tr><th>capability</th><th>ok</th><th>detail</th></tr>{rows}</table></details></div>")


def check(timeout: float = TIMEOUT) -> Report:
    """Try everything this host might allow, and report what it did allow and why not."""
    started = time.monotonic()
    status = procfs.read("self", "status")
    mountinfo = procfs.read("self", "mountinfo")
    hierarchies = cgroup_hierarchies(mountinfo)
    # Fork every probe before waiting for any: they are independent, and one at a time would be too slow.
    children = {name: Child(_answer(probe)) for name, probe in
                probes(hierarchies, own_cgroups(procfs.read("self", "cgroup"))).items()}
    answers = collect(children, timeout, host_hints(status))
    # Facts about the host first, then the answers in the order the probes were listed.
    facts = {**identity(status), "python": python_version(), "cgroup.layout": layout_capability(hierarchies)}
    return Report({**facts, **answers}, time.monotonic() - started)


# --- reading who we are: /proc/self/status (proc(5)) --------------------------------------------------------

def status_fields(status_text: str) -> dict[str, str]:
    return procfs.parse_status(status_text)


def identity(status_text: str) -> dict[str, Capability]:
    """euid, effective capabilities, seccomp and no_new_privs of this process, as the kernel reports them."""
    fields = status_fields(status_text)
    euid = int(fields["Uid"].split()[1])
    seccomp, filters = fields.get("Seccomp", "0").strip(), fields.get("Seccomp_filters", "0").strip()
    return {
        "euid": Capability(euid == 0, f"{euid} ({_user_name(euid)})" + (
            "" if euid == 0 else ": not root; steps run inside a user namespace where you are root")),
        "capabilities": capabilities_capability(fields["CapEff"].strip()),
        "seccomp": Capability(seccomp == "0", {"0": "mode 0: no filter"}.get(seccomp, (
            f"mode {seccomp} ({filters} filters): a container runtime's filter may refuse unshare, mount "
            "or pivot_root\n  fix: run the container with --security-opt seccomp=unconfined, or use a VM"))),
        "no_new_privs": Capability(fields.get("NoNewPrivs", "0").strip() == "0", (
            "0: setuid helpers work" if fields.get("NoNewPrivs", "0").strip() == "0" else
            "1: setuid helpers such as newuidmap cannot raise privileges, so a user namespace maps only "
            "your own id (the lab needs no more)")),
    }


def capabilities_capability(hex_mask: str) -> Capability:
    held = decode_capabilities(hex_mask)
    missing = [name for name in CAPABILITY_NAMES if name not in held]
    if not held:
        summary = (f"none (CapEff {hex_mask}): the lab gains them inside a user namespace, over its objects"
                   "\n  fix: for everything real, run as root (sudo)")
    elif len(missing) <= len(held):
        summary = f"{len(held)} of {len(CAPABILITY_NAMES)}" + (
            f", missing {', '.join(missing)}" if missing else " (all)") + f" (CapEff {hex_mask})"
    else:
        summary = f"{len(held)} of {len(CAPABILITY_NAMES)}: {', '.join(held)} (CapEff {hex_mask})"
    return Capability("CAP_SYS_ADMIN" in held, summary)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "no name"


def python_version() -> Capability:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info >= (3, 10):
        return Capability(True, f"{version} ({sys.executable})")
    return Capability(False, f"{version} is older than 3.10\n  fix: run ./lab up, which makes a newer .venv")


# --- cgroups: which version is mounted where (/proc/self/mountinfo, proc(5)) --------------------------------

@dataclass
class Hierarchy:
    version: int                    # 1 or 2
    mountpoint: str
    root: str                       # the cgroup this mount shows as its top (not "/" in a cgroup namespace)
    controllers: list[str] = field(default_factory=list)


def cgroup_hierarchies(mountinfo_text: str, read=lambda path: Path(path).read_text()) -> list[Hierarchy]:
    """Each cgroup mount with its controllers: in the superblock options for v1, cgroup.controllers for v2."""
    found = []
    for mount in procfs.parse_mountinfo(mountinfo_text):
        if mount.fstype not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = mount.root, mount.point
        if mount.fstype == "cgroup":
            controllers = sorted(V1_CONTROLLERS & set(mount.super_options.split(",")))
            found.append(Hierarchy(1, mountpoint, root, controllers))
        else:
            try:
                controllers = read(f"{mountpoint}/cgroup.controllers").split()
            except OSError:
                controllers = []
            found.append(Hierarchy(2, mountpoint, root, controllers))
    return found


def cgroup_layout(hierarchies: list[Hierarchy]) -> str:
    """v1, v2, or hybrid (v1 controllers plus a v2 tree, as systemd mounts it at /sys/fs/cgroup/unified)."""
    versions = {h.version for h in hierarchies}
    return {frozenset({1}): "v1", frozenset({2}): "v2", frozenset({1, 2}): "hybrid"}.get(
        frozenset(versions), "none")


def layout_capability(hierarchies: list[Hierarchy]) -> Capability:
    layout = cgroup_layout(hierarchies)
    if layout == "none":
        return Capability(False, "no cgroup filesystem is mounted\n"
                                 "  fix: sudo mount -t cgroup2 none /sys/fs/cgroup")
    v1 = [h for h in hierarchies if h.version == 1 and h.controllers]
    parts = [f"v1 {', '.join(c for h in v1 for c in h.controllers)} under "
             f"{os.path.commonpath([h.mountpoint for h in v1])}"] if v1 else []
    parts += [f"v2 at {h.mountpoint} with {', '.join(h.controllers) or 'no controllers'}"
              for h in hierarchies if h.version == 2]
    return Capability(True, f"{layout}: " + "; ".join(parts))


def own_cgroups(proc_cgroup_text: str) -> dict[str, str]:
    """controller -> this process's cgroup path (cgroups(7), /proc/PID/cgroup); "" is the v2 tree."""
    return {controller: line.path for line in procfs.parse_cgroup(proc_cgroup_text)
            for controller in line.controllers or ("",)}


def group_parent(hierarchy: Hierarchy, own_path: str) -> str:
    """Where a new group would go: below our own cgroup, the only place a delegated user may write."""
    relative = own_path[len(hierarchy.root.rstrip("/")):] if own_path.startswith(hierarchy.root) else "/"
    return hierarchy.mountpoint.rstrip("/") + relative.rstrip("/")


# --- the probes: each runs in its own child, returns a detail (a "yes") or raises LabError (a "no") ---------

def probes(hierarchies: list[Hierarchy], own: dict[str, str]) -> dict[str, tuple]:
    """name -> (function, args), in the order the report lists them."""
    table: dict[str, tuple] = {}
    for ns in NAMESPACES:
        table[f"ns.{ns}"] = (try_namespace, ns, False)
    for ns in NAMESPACES:
        table[f"userns.{ns}"] = (try_namespace, ns, True)
    table["overlayfs"] = (try_overlayfs, False)
    table["userns.overlayfs"] = (try_overlayfs, True)
    table["chroot"] = (try_chroot,)
    table["pivot_root"] = (try_pivot_root,)
    for h in hierarchies:
        for controller in h.controllers:
            parent = group_parent(h, own.get(controller if h.version == 1 else "", "/"))
            table[f"cgroup.{controller}"] = (try_cgroup, parent, controller, h.version, h.mountpoint)
    table["veth"] = (try_veth,)
    table["usernet"] = (try_usernet,)
    table["graphviz"] = (try_dot,)
    table["kvm"] = (try_kvm,)
    return table


def _answer(probe: tuple):
    function, *args = probe
    return lambda channel: function(*args)


def try_namespace(ns: str, in_userns: bool) -> str:
    """unshare(2) one namespace type; the evidence is the new inode behind /proc/self/ns/<type>."""
    if in_userns:
        userns.enter()
    # A new pid namespace is for the children to come: only pid_for_children changes (pid_namespaces(7)).
    link = procfs.path("self", "ns", "pid_for_children" if ns == "pid" else ns)
    before = os.readlink(link)
    if ns == "user":
        userns.enter()              # in the userns variant: a user namespace nested in the first
    else:
        syscalls.unshare(syscalls.NAMESPACE_FLAGS[ns])
    if ns == "pid":
        # pid_for_children names the new namespace only once a first child lives in it (namespaces(7)).
        first = first_child_pid()
        return f"{before} -> {os.readlink(link)}; its first process sees itself as pid {first}"
    return f"{before} -> {os.readlink(link)}"


def first_child_pid() -> int:
    """Fork once into the new pid namespace; the child exits with its own pid there, which must be 1."""
    pid = os.fork()
    if pid == 0:
        os._exit(os.getpid())
    return exit_code(os.waitpid(pid, 0)[1])


def mount_private_tmpfs() -> str:
    """Cover SCRATCH with a tmpfs that only this child's new mount namespace can see."""
    # The new namespace's mounts may still share propagation with the host's (mount_namespaces(7)):
    # make them private first, or the tmpfs would appear on the host too.
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    syscalls.mount("labcore-doctor", SCRATCH, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=1m")
    return SCRATCH


def try_overlayfs(in_userns: bool) -> str:
    """Mount an overlay on a tmpfs and write through it: the write must land, copied up, in upperdir."""
    if in_userns:
        userns.enter(syscalls.CLONE_NEWNS)
    else:
        syscalls.unshare(syscalls.CLONE_NEWNS)
    top = mount_private_tmpfs()
    for name in ("lower", "upper", "work", "merged"):
        os.mkdir(f"{top}/{name}")
    Path(top, "lower", "labcore-doctor").write_text("from the lower layer\n")
    options = f"lowerdir={top}/lower,upperdir={top}/upper,workdir={top}/work"
    # In a user namespace overlayfs cannot write trusted.* xattrs; userxattr (Linux 5.11) uses user.*.
    syscalls.mount("labcore-doctor", f"{top}/merged", "overlay", 0,
                   options + (",userxattr" if in_userns else ""))
    Path(top, "merged", "labcore-doctor").write_text("changed\n")
    return f"wrote merged/labcore-doctor; upper/ now holds {os.listdir(f'{top}/upper')} (copy-up)"


def try_chroot() -> str:
    """chroot(2) into a fresh tmpfs, the way the lab does it: inside a user namespace unless root."""
    userns.unshare(syscalls.CLONE_NEWNS)
    top = mount_private_tmpfs()
    os.mkdir(f"{top}/labcore-doctor")
    syscalls.chroot(top)
    os.chdir("/")
    return f"chroot into a tmpfs: / now lists {os.listdir('/')}" + _how()


def try_pivot_root() -> str:
    """pivot_root(2) onto a fresh tmpfs and detach the old root, as runc does with pivot_root(".", ".")."""
    userns.unshare(syscalls.CLONE_NEWNS)
    top = mount_private_tmpfs()
    os.mkdir(f"{top}/labcore-doctor")
    os.chdir(top)
    # pivot_root(2) NOTES: with new_root == put_old the old root is stacked on top of the new one, and
    # one lazy unmount of "." takes it away; no directory for the old root is needed.
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")
    return f"pivot_root onto a tmpfs, old root detached: / now lists {os.listdir('/')}" + _how()


def _how() -> str:
    return "" if os.geteuid() == 0 else " (inside a user namespace)"


def try_cgroup(parent: str, controller: str, version: int, top: str | None = None) -> str | Capability:
    """mkdir(2) a group of ours below our own cgroup, and rmdir(2) it at once: mkdir is how cgroups are
    made (cgroups(7))."""
    path = f"{parent}/labcore-doctor-{os.getpid()}"
    with journal.Scope() as scope:
        make_cgroup(scope, path)
        files = sorted(os.listdir(path))
        if version == 2 and controller not in Path(path, "cgroup.controllers").read_text().split():
            if passed_down_by_the_lab(controller, top):
                return (f"mkdir {path} worked; {controller} is not passed down to new groups yet, and the lab "
                        f"passes it down itself when it makes its first group (echo +{controller} > "
                        f"{top}/cgroup.subtree_control), as runc does on a host without systemd")
            return Capability(False, (
                f"mkdir {path} worked, but {parent} does not pass {controller} down to new groups\n"
                f"  fix: echo +{controller} > {parent}/cgroup.subtree_control (as root or the owner of "
                "a delegated subtree)"))
    sample = next((f for f in files if f.startswith(controller + ".")), files[0] if files else "")
    return f"mkdir {path}: the kernel filled it with {len(files)} files ({sample}, ...); removed at once"


def passed_down_by_the_lab(controller: str, top: str | None) -> bool:
    """As root the lab makes its groups at the top of the v2 tree and enables the controllers it limits there
    when they are missing (``V2Manager.prepare_parent``): the root group is exempt from the rule that a group
    with processes passes nothing down (cgroup-v2.rst, "No Internal Process Constraint"). Only the real root:
    a cgroup namespace's top is a group like any other, with cgroup.type, which exists "on non-root cgroups"."""
    from labcore.kernel.cgroups.v2 import WANTED
    if top is None or os.geteuid() != 0 or controller not in WANTED or Path(top, "cgroup.type").exists():
        return False
    return controller in (Path(top, "cgroup.controllers").read_text().split())


def make_cgroup(scope: journal.Scope, path: str) -> None:
    try:
        os.mkdir(path)
    except OSError as err:
        raise from_oserror(err, "mkdir", path) from err
    try:
        scope.record("cgroup", path, "rmdir_cgroup", path=path)
    except BaseException:
        os.rmdir(path)              # not in the journal, so nothing else would remove it: do it now
        raise


def try_veth() -> str:
    """A veth pair in a new network namespace, asked of rtnetlink as `labcore run` asks it
    (``labcore.kernel.netlink``); the pair dies with this child's namespace."""
    userns.unshare(syscalls.CLONE_NEWNET)
    try:
        netlink.link_add("lcdoc0", "veth", "lcdoc1")
    except LabError as err:
        raise LabError(f"ip link add lcdoc0 type veth peer name lcdoc1 failed: {err.message}",
                       syscall="netlink: ip link add", errno=err.errno,
                       fix="modprobe veth (as root); in a container run it with --privileged") from err
    # /proc/self/net/dev lists the interfaces of the network namespace of the reader (proc(5)).
    names = list(procfs.net_dev())
    return f"ip link add lcdoc0 type veth peer name lcdoc1 in a new net namespace: it lists {names}" + _how()


def try_usernet() -> str:
    """What a rootless container's network needs (``labcore.kernel.usernet``): slirp4netns, nft, /dev/net/tun."""
    from labcore.kernel import usernet
    usernet.check_host()
    return ("slirp4netns, nft and /dev/net/tun usable: without root, containers get eth0 on a bridge in a "
            "namespace of yours, reach each other, and publish ports on 127.0.0.1")


def try_dot() -> str:
    dot = shutil.which("dot")
    if dot is None:
        raise NotSupportedHere("dot (graphviz) is not on PATH; the lab draws its diagrams with it",
                               syscall="execve dot", fix="apt-get install graphviz")
    done = subprocess.run([dot, "-V"], capture_output=True, text=True, timeout=TIMEOUT)
    return f"{dot}: {done.stderr.strip() or done.stdout.strip()}"


def try_kvm() -> str:
    """Can a VM here run on KVM? ``vm.accelerator()`` finds out as qemu would: open(2) /dev/kvm, then
    KVM_GET_API_VERSION and KVM_CREATE_VM (kernel Documentation virt/kvm/api.rst), then which module serves
    it. A /dev/kvm that opens is not enough: kvm_pvm serves one that boots only kernels built for it."""
    from labcore.lessons import vm
    accel, why = vm.accelerator()
    if accel == "kvm":
        return f"{why}: a guest's instructions run on the CPU itself"
    stock = ", so it cannot boot a stock kernel" if "served by" in why else ""
    raise NotSupportedHere(f"{why}{stock}: VMs run under TCG (qemu emulates each instruction, several times "
                           "slower)", syscall="open /dev/kvm; KVM_CREATE_VM")


# --- collecting answers, and explaining the "no"s -----------------------------------------------------------

def collect(children: dict[str, Child], timeout: float, hints: dict) -> dict[str, Capability]:
    """Each child's answer, all within one deadline; a child that has not answered by then is killed."""
    deadline, answers, killed = time.monotonic() + timeout, {}, []
    try:
        for name, child in children.items():
            try:
                answer = child.recv(timeout=max(0.01, deadline - time.monotonic()))
                answers[name] = answer if isinstance(answer, Capability) else Capability(True, answer)
            except TimeoutError:
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)
                answers[name] = Capability(False, f"no answer within {timeout} s, so the probe was stopped")
            except EOFError:
                answers[name] = Capability(False, f"the probe's child died (exit {child.wait()})")
            except Exception as err:                       # noqa: BLE001 - every failure is an answer
                answers[name] = Capability(False, explain(name, err, hints))
            finally:
                child.wait()
    finally:
        for child in children.values():                    # on KeyboardInterrupt: stop and reap the rest
            if child.status is None:
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)
                child.wait()
        undo_left_by(killed)
    return answers


def undo_left_by(pids: list[int]) -> None:
    """A child killed before it could leave its Scope cannot undo its cgroup: undo its records for it."""
    if pids:
        log = journal.Journal()
        log.undo_many([entry for entry in log.entries() if entry.owner.get("pid") in pids])


def host_hints(status_text: str) -> dict:
    """Facts that explain refusals: sysctls, who we are, and whether we are in a container."""
    sysctls = {}
    for name in EXPLAINING_SYSCTLS:
        try:
            sysctls[name] = procfs.sysctl(name)
        except OSError:
            pass                    # absent on this kernel: it cannot be the reason
    fields = status_fields(status_text)
    container = next((kind for kind, marker in (("docker", "/.dockerenv"), ("podman", "/run/.containerenv"))
                      if os.path.exists(marker)), None)
    return {"sysctl": sysctls, "euid": int(fields["Uid"].split()[1]), "container": container,
            "seccomp": fields.get("Seccomp", "0").strip(), "kernel": os.uname().release}


def explain(name: str, err: BaseException, hints: dict) -> str:
    """The detail for a "no": what the kernel said, then the fix that fits this host."""
    message = getattr(err, "message", None) or str(err) or type(err).__name__
    fix = fix_for(name, err, hints) or getattr(err, "fix", None)
    return f"{message}\n  fix: {fix}" if fix else message


def fix_for(name: str, err: BaseException, hints: dict) -> str | None:
    code, syscall = getattr(err, "errno", None), getattr(err, "syscall", None) or ""
    ns = name.rsplit(".", 1)[-1]
    refused = code in (errno.EPERM, errno.EACCES)
    if code == errno.ENOSPC and ns in NAMESPACES:
        limit = "user.max_user_namespaces" if "CLONE_NEWUSER" in syscall else f"user.max_{ns}_namespaces"
        return (f"the limit {limit} = {hints['sysctl'].get(limit, '?')} is reached: "
                f"sudo sysctl {limit}=15000")
    if refused and refused_user_namespace(syscall):
        return userns_fix(hints)
    if refused and name.startswith("ns."):
        return (f"a new {ns} namespace needs CAP_SYS_ADMIN: run as root (sudo), or rootless, where the "
                f"lab makes it inside a user namespace (see userns.{ns})")
    if refused and name == "overlayfs":
        return ("mounting needs CAP_SYS_ADMIN: run as root (sudo), or rootless, where the lab mounts it "
                "inside a user namespace (see userns.overlayfs)")
    if code == errno.EINVAL and ns in NAMESPACES:
        return f"this kernel was built without {ns} namespaces (CONFIG_*_NS): use a distribution kernel"
    if name == "userns.overlayfs" and code in (errno.EPERM, errno.EINVAL):
        return (f"overlayfs in a user namespace needs Linux 5.11 or later (this is {hints['kernel']}): "
                "upgrade the kernel, or run as root")
    if name.endswith("overlayfs") and code == errno.ENODEV:
        return "the overlay module is not loaded: sudo modprobe overlay"
    if name == "pivot_root" and code == errno.EINVAL:
        return ("the current root is not a mount point, or is the initramfs (rootfs): boot from a real "
                "root filesystem, or run in a VM")
    if name.startswith("cgroup.") and (refused or code == errno.EROFS):
        return cgroup_fix(hints, code)
    if name == "kvm":
        return kvm_fix(code, str(err))
    return None


def refused_user_namespace(syscall: str) -> bool:
    """Was it the user namespace itself (unshare CLONE_NEWUSER, or writing its id maps) that was refused?"""
    return "CLONE_NEWUSER" in syscall or syscall in ("write setgroups", "write uid_map", "write gid_map")


def userns_fix(hints: dict) -> str:
    """Why unprivileged user namespaces are off, from the knobs that turn them off (user_namespaces(7))."""
    sysctl, fixes = hints["sysctl"], []
    if sysctl.get("kernel.unprivileged_userns_clone") == "0":
        fixes.append("Debian: sudo sysctl kernel.unprivileged_userns_clone=1")
    if sysctl.get("kernel.apparmor_restrict_unprivileged_userns") == "1":
        fixes.append("Ubuntu 24.04: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0, "
                     "or an AppArmor profile that allows `userns,` for python")
    if sysctl.get("user.max_user_namespaces") == "0":
        fixes.append("sudo sysctl user.max_user_namespaces=15000")
    if hints.get("container") or hints.get("seccomp") == "2":
        fixes.append(f"inside a container ({hints.get('container') or 'seccomp filter'}): run it with "
                     "--privileged, or use a VM")
    return "; ".join(fixes) or (
        "check sysctl kernel.unprivileged_userns_clone (Debian), "
        "kernel.apparmor_restrict_unprivileged_userns (Ubuntu 24.04) and user.max_user_namespaces; "
        "inside a container run it with --privileged, or use a VM")


def cgroup_fix(hints: dict, code: int | None) -> str:
    if code == errno.EROFS:
        return ("/sys/fs/cgroup is mounted read-only (a container): run it with --privileged, or use a VM")
    if hints["euid"] != 0:
        return ("cgroups belong to root unless delegated: run as root (sudo), or on a cgroup v2 host ask "
                "systemd for a subtree of your own: systemd-run --user --scope -p Delegate=yes labcore ...")
    return "this cgroup directory is not writable even by root: in a container, run it with --privileged"


def kvm_fix(code: int | None, reason: str = "") -> str:
    if code == errno.ENOENT or "No such file" in reason:
        return ("no /dev/kvm: enable VT-x/AMD-V in the firmware and sudo modprobe kvm_intel (or kvm_amd); "
                "in a VM, turn on nested virtualization; the VM notebook needs it")
    if "served by" in reason:
        return ("this /dev/kvm has no VT-x/AMD-V behind it: use a machine (or a cloud instance with nested "
                "virtualization) where kvm_intel or kvm_amd loads; until then the lab's VMs run under TCG")
    return "add yourself to the kvm group: sudo usermod -aG kvm $USER (then log in again), or run as root"
