"""Security: what root in a container may still do, the escapes Docker's defaults stop, and the next defence.

The lesson of notebook 09, one step per cell. Each escape runs twice, for real, in two busybox containers: once
`--privileged` (before) and once with Docker's defaults (after), and shows what the kernel answered each time.
The mechanisms are ``labcore.kernel.capabilities``, ``labcore.kernel.seccomp``, ``labcore.kernel.confinement``
and the device
cgroup (``labcore.kernel.cgroups.devices``); this module only asks them and shows the evidence.

    escape("host-disk")        mknod the host's disk and mount it          EPERM (mount), EPERM (open)
    escape("core-pattern")     write /proc/sys/kernel/core_pattern         EROFS
    escape("remount-sys")      mount -o remount,rw /sys                    EPERM
    escape("cgroup-limit")     mount the memory cgroup, raise its limit    EPERM, EROFS

Where the host forbids a step (no root, no user namespaces) it returns a refused ``Step``, as every step does.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from labcore import paths
from labcore.errors import LabError, NeedsPrivilege, NotSupportedHere
from labcore.kernel import capabilities, confinement, journal, procfs, seccomp
from labcore.lessons import hosts
from labcore.lessons.evidence import Step, current_mode
from labcore.runtime import container

IMAGE = "busybox"
STATUS = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status"


def run(script: str, **flags) -> container.Result:
    """``sh -c script`` in a fresh busybox container with `docker run`'s flags as Spec fields."""
    return container.run(container.Spec(IMAGE, ["sh", "-c", script], rm=True, network="none", **flags))


def said(result: container.Result) -> str:
    """What the container printed (stdout and stderr), one line per line, and its exit code."""
    text = ((result.stdout or b"") + (result.stderr or b"")).decode(errors="replace").strip()
    return (text.replace("\n", " | ") or "(nothing)") + f"  [exit {result.exit_code}]"


def flag_text(flags: dict) -> str:
    """Spec fields as `docker run` flags: {"cap_add": ["NET_ADMIN"]} -> "--cap-add NET_ADMIN"."""
    words = []
    for name, value in flags.items():
        option = "--device" if name == "devices" else "--" + name.replace("_", "-")
        for item in (value if isinstance(value, list) else [value]):
            words.append(option if item is True else f"{option} {item}")
    return " ".join(words)


# --- what root in a container is ------------------------------------------------------------------------------

def capabilities_of(**flags) -> Step:
    """/proc/self/status of this process (before) and of a container's pid 1 (after), each set decoded."""
    action = f"docker run --rm {flag_text(flags)} busybox {STATUS}".replace("  ", " ")
    try:
        result = run(STATUS, **flags)
    except LabError as err:
        return hosts.refuse("Capabilities, decoded", action, err, key=f"security.capabilities_of({flag_text(flags)})")
    inside = procfs.parse_status(result.stdout.decode())
    here = capabilities.read_status()
    before, after = {}, {}
    for name in capabilities.STATUS_FIELDS:
        before[name] = f"{here[name]} ({len(capabilities.decode(here[name]))})"
        held = capabilities.decode(inside[name])
        after[name] = f"{inside[name]} ({len(held)}): {', '.join(n.removeprefix('CAP_') for n in held) or '-'}"
    before["Seccomp, NoNewPrivs"] = f"{here['Seccomp']}, {here['NoNewPrivs']}"
    after["Seccomp, NoNewPrivs"] = f"{inside['Seccomp']}, {inside['NoNewPrivs']}"
    return Step("Capabilities, decoded: this process (before) and the container's pid 1 (after)", action,
                before, after, current_mode(), key=f"security.capabilities_of({flag_text(flags)})",
                columns=("this process", "container's pid 1"),
                note="bit N of a mask is capability N of capabilities(7); CapEff is what the kernel checks",
                data={"inside": inside, "names": capabilities.decode(inside["CapEff"])})


def what_root_may_still_do() -> Step:
    """Root in a default container: what its 14 capabilities still allow, and what they no longer do."""
    checks = {"chown a file (CAP_CHOWN)": "touch /tmp/f && chown 1000 /tmp/f",
              "bind port 80 (CAP_NET_BIND_SERVICE)": "! (timeout 1 nc -l -p 80 2>&1 | grep -q bind)",
              "mknod a device node (CAP_MKNOD)": "mknod /tmp/null c 1 3",
              "chroot (CAP_SYS_CHROOT)": "chroot / true",
              "mount a tmpfs (CAP_SYS_ADMIN)": "mount -t tmpfs none /mnt",
              "set the clock (CAP_SYS_TIME)": "! (date -s \"$(date +%T)\" 2>&1 | grep -q \"can't\")",
              "read the kernel log (CAP_SYSLOG)": "dmesg >/dev/null",
              "raise its priority (CAP_SYS_NICE)": "nice -n -5 true"}
    script = "; ".join(f"if ({command}) 2>/dev/null; then echo 'yes'; else echo 'no'; fi"
                       for command in checks.values())
    action = "docker run --rm busybox sh -c '<each check>'"
    try:
        answers = run(script).stdout.decode().split()
    except LabError as err:
        return hosts.refuse("What root in a container may still do", action, err, key="security.what_root_may_still_do")
    after = dict(zip(checks, answers))
    return Step("What root in a container may still do", action, {}, after, current_mode(),
                key="security.what_root_may_still_do",
                note="uid 0 inside, with 14 of root's ~40 capabilities: enough to own and change its files, not "
                     "to mount, set the clock or read the host kernel's log",
                data={"allowed": [name for name, answer in after.items() if answer == "yes"]})


# --- the escapes ----------------------------------------------------------------------------------------------

def host_disk() -> tuple[str, str, int, int]:
    """The device and filesystem of the host's "/", from /proc/self/mountinfo (proc(5))."""
    for mount in procfs.mountinfo():
        if mount.point == "/":
            major, minor = (int(n) for n in mount.device.split(":"))
            return mount.source, mount.fstype, major, minor
    raise NotSupportedHere("no mount at / in /proc/self/mountinfo")


def host_refuses_its_own_disk() -> bool:
    """True when the host's root itself may not open the disk under "/" (EPERM): some cloud sandboxes filter
    devices below the VM, which makes the --privileged column fail for a reason that is not the container's."""
    import errno
    _, _, major, minor = host_disk()
    try:             # the node's name, from sysfs (sysfs-dev: /sys/dev/block/MAJ:MIN/uevent has DEVNAME)
        uevent = Path(f"/sys/dev/block/{major}:{minor}/uevent").read_text()
        name = next(line.split("=", 1)[1] for line in uevent.splitlines() if line.startswith("DEVNAME="))
        os.close(os.open(f"/dev/{name}", os.O_RDONLY))
    except (OSError, StopIteration) as err:
        return getattr(err, "errno", None) == errno.EPERM
    return False


def escape_script(name: str) -> tuple[str, str, dict]:
    """(title, shell script, extra flags) of one escape."""
    if name == "host-disk":
        source, fstype, major, minor = host_disk()
        if major == 0:
            raise NotSupportedHere(f"this host's / is {fstype} on {source}, not a block device: no disk to mount",
                                   fix="run the lab on a VM whose / is a disk (e.g. /dev/vda)")
        return (f"Mount the host's disk ({source}, {major}:{minor})",
                f"mknod /tmp/disk b {major} {minor}; head -c 1 /tmp/disk >/dev/null && echo 'read the raw disk'; "
                f"mount -t {fstype} -o ro /tmp/disk /mnt && echo \"mounted: $(ls /mnt | head -6 | tr '\\n' ' ')\"",
                {})
    if name == "core-pattern":
        return ("Write /proc/sys/kernel/core_pattern (the host's, not namespaced)",
                "p=$(cat /proc/sys/kernel/core_pattern); echo \"$p\" > /proc/sys/kernel/core_pattern && "
                "echo \"wrote back: $p\"", {})
    if name == "remount-sys":
        return ("Remount /sys read-write",
                "mount -o remount,rw /sys && echo \"/sys: $(grep ' /sys ' /proc/self/mountinfo | cut -d' ' -f6)\"",
                {})
    if name == "cgroup-limit":
        from labcore.kernel.cgroups import detect
        v2 = detect().kind == "v2"
        # v1 keeps memory+swap >= memory: the memsw limit is raised first (cgroup-v1/memory.rst).
        knobs, value = (["memory.max"], "max") if v2 else (["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"],
                                                            "1073741824")
        mount = "mount -t cgroup2 none /tmp/cg" if v2 else "mount -t cgroup -o memory cgroup /tmp/cg"
        direct = "/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory"
        writes = " ".join(knobs)
        return ("Lift its own memory limit (--memory 32m)",
                f"cd {direct} && for f in {writes}; do echo {value} > $f; done; "
                f"mkdir -p /tmp/cg; {mount} && cd /tmp/cg && for f in {writes}; do echo {value} > $f; done && "
                f"echo \"the limit is now $(cat {knobs[-1]})\"", {"limits": {"memory": "32m"}})
    raise LabError(f"no escape named {name!r}", fix="host-disk, core-pattern, remount-sys or cgroup-limit")


def escape(name: str) -> Step:
    """One escape, run --privileged (before) and with Docker's defaults (after): the kernel's answers."""
    try:
        title, script, flags = escape_script(name)
    except LabError as err:
        return hosts.refuse(f"Escape: {name}", name, err, key=f"security.escape({name})")
    action = f"docker run [--privileged] busybox sh -c '{script}'"
    try:
        privileged, default = run(script, privileged=True, **flags), run(script, **flags)
    except LabError as err:
        return hosts.refuse(f"Escape: {title}", action, err, key=f"security.escape({name})")
    worked = lambda result: result.exit_code == 0        # noqa: E731 - the script's last command succeeded
    note = ("works with --privileged, refused by default" if worked(privileged) and not worked(default) else
            "refused both times: see what the kernel answered in each column")
    if name == "host-disk" and not worked(privileged) and host_refuses_its_own_disk():
        note = ("refused by default; with --privileged refused too, but only because this host refuses even its "
                "own root to open its disk (a device filter of the machine under this one): on an ordinary VM "
                "--privileged mounts it")
    return Step(f"Escape: {title}", action, {"--privileged": said(privileged)}, {"default": said(default)},
                current_mode(), key=f"security.escape({name})", note=note, columns=("--privileged", "default"),
                data={"privileged_worked": worked(privileged), "default_worked": worked(default),
                      "default_said": said(default)})


# --- seccomp ---------------------------------------------------------------------------------------------------

# busybox commands whose first refused system call is the one named, and whether a capability is also needed.
SECCOMP_PROBES = {"unshare (a user namespace)": ("unshare", "unshare -U true"),
                  "unshare (a mount namespace)": ("unshare", "unshare -m true"),
                  "mount": ("mount", "mount -t tmpfs none /mnt"),
                  "sethostname": ("sethostname", "hostname other"),
                  "syslog (dmesg)": ("syslog", "dmesg"),
                  "swapon": ("swapon", "swapon /dev/null")}


def seccomp_filter() -> Step:
    """The same capabilities, with the filter (after) and without it (before, seccomp=unconfined); and what the
    profile says of each call (``labcore.kernel.seccomp.verdict``)."""
    script = "; ".join(f"if {command} >/dev/null 2>&1; then echo ok; else echo refused; fi"
                       for _, command in SECCOMP_PROBES.values())
    action = "docker run [--security-opt seccomp=unconfined] busybox sh -c '<each call>'"
    try:
        unconfined = run(script, security_opt=["seccomp=unconfined"]).stdout.decode().split()
        default = run(script).stdout.decode().split()
    except LabError as err:
        return hosts.refuse("seccomp: which calls are refused, and why", action, err, key="security.seccomp_filter")
    profile = seccomp.load_profile()
    before = dict(zip(SECCOMP_PROBES, unconfined))
    after = {name: f"{answer}: the profile says {seccomp.verdict(profile, capabilities.DEFAULT, call)}"
             for (name, (call, _)), answer in zip(SECCOMP_PROBES.items(), default)}
    for call in ("keyctl", "add_key", "kexec_load", "open_by_handle_at", "bpf", "clone3", "io_uring_setup"):
        after[call] = f"the profile says {seccomp.verdict(profile, capabilities.DEFAULT, call)}"
    return Step("seccomp: which calls are refused, and why", action, before, after, current_mode(),
                key="security.seccomp_filter",
                note="unshare -U needs no capability at all: only the filter refuses it by default",
                data={"unconfined": before, "default": dict(zip(SECCOMP_PROBES, default))})


# --- masked and read-only paths, no_new_privs --------------------------------------------------------------------

PATH_PROBES = {"/proc/keys": "cat /proc/keys | wc -l", "/proc/timer_list": "cat /proc/timer_list | wc -l",
               "/proc/acpi": "ls /proc/acpi | wc -l", "/sys/firmware": "ls /sys/firmware | wc -l",
               "/proc/sys (write)": "v=$(cat /proc/sys/vm/overcommit_memory); echo $v > /proc/sys/vm/overcommit_memory "
                                    "&& echo written",
               "/proc/sysrq-trigger (write)": "echo h > /proc/sysrq-trigger && echo written",
               "/sys (write)": "v=$(cat /sys/kernel/mm/ksm/run); echo $v > /sys/kernel/mm/ksm/run && echo written"}


def masked_paths() -> Step:
    """What a container reads in the masked paths and may write in the read-only ones: --privileged (before)
    and by default (after). Masked: /dev/null or an empty tmpfs on top; read-only: a read-only bind. A write
    puts back the value it read: a host-wide setting, unchanged."""
    script = "; ".join(f"echo \"$( ({command}) 2>&1 | tail -1)\"" for command in PATH_PROBES.values())
    action = "docker run [--privileged] busybox sh -c '<each path>'"
    try:
        privileged = run(script, privileged=True).stdout.decode().splitlines()
        default = run(script).stdout.decode().splitlines()
        mounts = run("grep -E ' /(proc|sys)/' /proc/self/mountinfo | cut -d' ' -f4,5,6").stdout.decode()
    except LabError as err:
        return hosts.refuse("Masked and read-only paths", action, err, key="security.masked_paths")
    return Step("Masked and read-only paths", action, dict(zip(PATH_PROBES, privileged)),
                dict(zip(PATH_PROBES, default)), current_mode(), key="security.masked_paths",
                columns=("--privileged", "default"),
                note="lines counted: 0 where the file is masked; 'Read-only file system' where a bind is read-only",
                data={"mounts": mounts.splitlines(), "masked": list(confinement.MASKED_PATHS),
                      "read_only": list(confinement.READONLY_PATHS)})


SETUID_SCRIPT = ("cp /bin/busybox /tmp/busybox && chmod 4755 /tmp/busybox && "
                 "su -s /bin/sh nobody -c '/tmp/busybox su root -c true </dev/null' 2>&1 | tail -1; "
                 "grep NoNewPrivs /proc/self/status")


def no_new_privs() -> Step:
    """A setuid-root copy of busybox run by nobody: without no_new_privs the kernel makes it euid 0 (busybox's su
    then asks root's password); with it the setuid bit is ignored (su: must be suid)."""
    action = f"docker run [--security-opt no-new-privileges] busybox sh -c \"{SETUID_SCRIPT}\""
    try:
        default, nnp = run(SETUID_SCRIPT), run(SETUID_SCRIPT, security_opt=["no-new-privileges"])
    except LabError as err:
        return hosts.refuse("no_new_privs and setuid", action, err, key="security.no_new_privs")
    return Step("no_new_privs and setuid", action, {"default": said(default)},
                {"--security-opt no-new-privileges": said(nnp)}, current_mode(), key="security.no_new_privs",
                note="no_new_privs: execve(2) never raises privileges again, not even for a setuid-root file",
                data={"default": said(default), "no_new_privs": said(nnp)})


# --- the daemon's socket, and user namespaces ---------------------------------------------------------------------

def socket_is_root() -> Step:
    """What anyone who may talk to the daemon can ask for: `docker run -v /:/host`, the host's / in a container
    run by root. No escape is needed: the daemon does it on request."""
    script = "ls -ld /host/root | cut -c1-10; ls -l /host/etc/shadow | cut -c1-10; wc -l < /host/etc/shadow"
    action = f"docker run --rm -v /:/host busybox sh -c \"{script}\""
    try:
        result = run(script, volumes=["/:/host"])
    except LabError as err:
        return hosts.refuse("Why the daemon's socket is root", action, err, key="security.socket_is_root")
    lines = result.stdout.decode().splitlines() + ["", "", ""]
    socket = paths.home() / "labd.sock"
    return Step("Why the daemon's socket is root", action,
                {"who may ask": f"whoever may write {socket} (mode 0660) or /var/run/docker.sock"},
                {"/host/root (root's home)": f"{lines[0]}: entered", "/host/etc/shadow (the password hashes)":
                 f"{lines[1]}: {lines[2].strip()} lines read"},
                current_mode(), key="security.socket_is_root",
                note="a client of the socket gets root's files without any escape: treat the "
                                     "docker group as root (Docker's docs, 'Docker daemon attack surface')",
                data={"read_shadow": result.exit_code == 0 and lines[2].strip().isdigit()})


USERNS_SCRIPT = ("echo uid_map $(cat /proc/self/uid_map); grep CapEff /proc/self/status; "
                 "p=$(cat /proc/sys/kernel/core_pattern); echo \"$p\" > /proc/sys/kernel/core_pattern 2>&1 "
                 "&& echo core_pattern written; mknod /tmp/disk b 7 0 2>&1 && echo mknod worked")


def user_namespace() -> Step:
    """The next defence: root inside a user namespace is an ordinary user outside. The same --privileged
    container, run by root (before) and by user nobody, rootless (after): every capability, over nothing of the
    host's."""
    action = "labcore run --privileged busybox: as root, then as nobody (rootless: inside a user namespace)"
    try:
        as_root = run(USERNS_SCRIPT, privileged=True) if os.geteuid() == 0 else None
        rootless = run_as_nobody(USERNS_SCRIPT) if os.geteuid() == 0 else run(USERNS_SCRIPT, privileged=True)
    except LabError as err:
        return hosts.refuse("User namespaces: root inside, nobody outside", action, err, key="security.user_namespace")
    before = (by_check(said(as_root)) if as_root
              else {"uid_map": "(you are not root: only the rootless run is possible)"})
    if not isinstance(rootless, str):         # not root: the rootless run is this user's own `labcore run`
        rootless = said(rootless)
    return Step("User namespaces: root inside, nobody outside", action, before, by_check(rootless),
                current_mode(), key="security.user_namespace",
                note="uid_map '0 65534 1': uid 0 inside is 65534 outside; the kernel checks the "
                                     "host's sysctls and devices against the outside uid (user_namespaces(7))",
                data={"rootless": rootless})


# USERNS_SCRIPT's lines, each under the check it answers (an error names its file): a row each, root beside
# nobody, instead of one line of everything each printed.
USERNS_CHECKS = {"uid_map": "uid_map", "CapEff": "CapEff", "core_pattern": "core_pattern", "mknod": "/tmp/disk"}


def by_check(output: str) -> dict[str, str]:
    """``said``'s one line (``uid_map 0 0 1 | CapEff: ... | mknod worked  [exit 0]``) as a row per check."""
    text, _, code = output.rpartition("  [exit ")
    rows = {check: "" for check in USERNS_CHECKS}
    for line in text.split(" | "):
        check = next((name for name, word in USERNS_CHECKS.items() if word in line or name in line), "output")
        rows[check] = "; ".join(filter(None, [rows.get(check, ""), line.replace("\t", " ")]))
    return {**rows, "exit code": code.rstrip("]")}


def run_as_nobody(script: str) -> str:
    """`labcore run --privileged` as user nobody, in a state directory of its own (journaled, removed after)."""
    python = next((p for p in (sys.executable, "/usr/bin/python3") if _runnable_by_nobody(p)), None)
    if python is None or not shutil.which("setpriv"):
        raise NotSupportedHere("no Python that user nobody may run, or no setpriv",
                               fix="apt-get install python3 util-linux")
    command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-m", "labcore", "run",
               "--rm", "--privileged", IMAGE, "sh", "-c", script]
    with journal.Scope() as scope:
        home = tempfile.mkdtemp(prefix=f"{paths.PREFIX}-userns-", dir="/tmp")
        scope.record("directory", home, "rmtree", path=home)     # removed when the scope ends
        os.chown(home, 65534, 65534)
        env = {**os.environ, "LABCORE_HOME": f"{home}/home", "PYTHONPATH": str(Path(__file__).parents[2])}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd="/")
    return (done.stdout + done.stderr).strip().replace("\n", " | ") + f"  [exit {done.returncode}]"


def _runnable_by_nobody(python: str) -> bool:
    check = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", "pass"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(check, capture_output=True, timeout=30, cwd="/").returncode == 0
    return False


# --- exercises -----------------------------------------------------------------------------------------------------

def check_capabilities(flags: dict, wanted: set[str]) -> Step:
    """Exercise check: run with ``flags`` and compare pid 1's CapEff with the set asked for."""
    step = capabilities_of(**flags)
    if not step.permitted:
        return step
    held = set(step.data["names"])
    wanted = {capabilities.canonical(name, "exercise") for name in wanted}
    step.title = "Exercise: " + ("solved" if held == wanted else "not yet")
    step.note = (f"CapEff holds exactly {sorted(wanted)}" if held == wanted else
                 f"missing {sorted(wanted - held) or '-'}, extra {sorted(held - wanted) or '-'}")
    step.data["solved"] = held == wanted
    return step


def check_unshare(flags: dict) -> Step:
    """Exercise check: does `unshare -U true` (a user namespace) work with ``flags``, without --privileged and
    with Docker's 14 capabilities?"""
    action = " ".join(["docker run --rm", flag_text(flags), "busybox unshare -U true"]).replace("  ", " ")
    if flags.get("privileged") or flags.get("cap_add"):
        return Step("Exercise: not that way", action, mode=current_mode(),
                    note="keep the capabilities as they are: no --privileged, no --cap-add", data={"solved": False})
    try:
        result = run("unshare -U true && echo 'a user namespace'", **flags)
    except LabError as err:
        return hosts.refuse("Exercise: unshare -U", action, err, key=f"security.check_unshare({flag_text(flags)})")
    solved = result.exit_code == 0
    return Step("Exercise: " + ("solved" if solved else "not yet"), action, {}, {"said": said(result)},
                current_mode(), key=f"security.check_unshare({flag_text(flags)})",
                note="only seccomp stood in the way" if solved else "the filter still refuses it",
                data={"solved": solved})


# --- the layers of defence, drawn from a running container -----------------------------------------------------------

def defence_layers(container_ref: str) -> Step:
    """The layers around a RUNNING container's pid 1, each with its live state read from /proc/PID (status,
    ns, mountinfo, cgroup) and the device cgroup; ``data["dot"]`` draws them, outermost first."""
    from labcore.runtime import engine
    title, action = "the layers of defence", "cat /proc/PID/{status,uid_map,mountinfo,cgroup}; ls -l /proc/PID/ns"
    missing = hosts.lacking("a running container", title, action, container_ref, key="security.defence_layers")
    if missing is not None:
        return missing
    record = engine.find(container_ref)
    if record.state.value != "running":
        raise LabError(f"container {record.id[:12]} is {record.state.value}, not running", fix="start it first")
    layers = live_layers(record.pid)
    return Step(f"{title} around {record.name}", action, {}, dict(layers), current_mode(),
                key="security.defence_layers", note="from the host's kernel inwards: what stands between the "
                                                    "container's root and the host, read live",
                data={"layers": layers, "dot": defence_dot(record.pid, record.name, layers)})


def live_layers(pid: int) -> list[tuple[str, str]]:
    """(layer, what it holds now) for pid, outermost first."""
    status = capabilities.read_status(pid)
    ns = [kind for kind in ("mnt", "uts", "ipc", "pid", "net", "cgroup", "user")
          if procfs.ns_link(kind, pid) != procfs.ns_link(kind)]
    mounts = procfs.mountinfo(pid)
    masked = [m.point for m in mounts if m.root == "/null" or
              (m.point in confinement.MASKED_PATHS and m.fstype == "tmpfs")]
    read_only = [m.point for m in mounts if m.point in confinement.READONLY_PATHS]
    uid_map = " ".join(" ".join(map(str, row)) for row in procfs.id_map("uid_map", pid))
    held = capabilities.decode(status["CapEff"])
    return [("user namespace", f"uid_map {uid_map}" + (" (root is root)" if uid_map.startswith("0 0 ") else "")),
            ("namespaces", ", ".join(ns) or "none"),
            ("device cgroup", devices_of(pid)),
            ("capabilities", f"CapEff {status['CapEff']}: {len(held)} of {len(capabilities.NAMES)}"),
            ("seccomp", {"0": "none", "2": "filter"}.get(status["Seccomp"], status["Seccomp"])
             + f", NoNewPrivs {status['NoNewPrivs']}"),
            ("masked paths", f"{len(masked)}: " + ", ".join(masked)),
            ("read-only paths", f"{len(read_only)}: " + ", ".join(read_only))]


def devices_of(pid: int) -> str:
    """The device rules of pid's cgroup: v1's devices.list; v2 says a BPF program decides."""
    from labcore.kernel.cgroups import detect
    layout = detect()
    path = procfs.cgroup_of("devices", pid)
    if path is not None and "devices" in layout.v1:
        rules = (layout.v1["devices"] / path.lstrip("/") / "devices.list").read_text().split("\n")
        return f"{len([r for r in rules if r])} rules: " + ", ".join(r for r in rules[:4] if r) + ", ..."
    return "v2: a BPF_CGROUP_DEVICE program" if layout.kind == "v2" else "none"


def defence_dot(pid: int, name: str, layers: list[tuple[str, str]]) -> str:
    from labcore.lessons.diagrams import Graph
    graph = Graph("layers of defence", rankdir="TB", fontname="Helvetica")
    graph.defaults("node", fontname="Helvetica", fontsize="10", shape="box", style="rounded,filled",
                   fillcolor="lightyellow")
    previous = "host kernel"
    graph.node(previous, "the host's kernel (shared)", fillcolor="lightblue")
    for layer, state in layers:
        graph.node(layer, f"{layer}\n{state[:90]}")
        graph.edge(previous, layer)
        previous = layer
    graph.node("pid 1", f"{name}: pid {pid} on the host", fillcolor="palegreen")
    graph.edge(previous, "pid 1")
    return graph.source()


def start_container(name: str = "labcore-defence") -> object:
    """`docker run -d --name NAME busybox sleep 600`, with Docker's defaults: a live container to look at."""
    from labcore.runtime import engine
    try:
        record = engine.create(container.Spec(IMAGE, ["sleep", "600"], name=name, network="none"))
        return engine.start(record.id)
    except (NeedsPrivilege, NotSupportedHere) as err:      # it stands in for the container: see hosts.lacking
        return hosts.refuse("a container to look at", f"docker run -d --name {name} busybox sleep 600", err,
                            key="security.start_container")


def remove_container(record) -> str:
    """`docker rm -f`: the container and everything it held."""
    from labcore.runtime import engine
    if hosts.was_refused(record):
        return "nothing to remove: this host refused the container"
    engine.remove(record.id, force=True)
    return f"removed {record.name}"
