"""Each cgroup controller enforced for real, with what the kernel measured before and after.

Every step makes its own group(s) below ``labcore``, moves a small workload process in (``workloads.py``:
it waits for "go" so it is inside before it does anything), lets the kernel enforce the limit, reads the
group's interface files, and removes everything before it returns, even on error.

    detect_cgroups   which interface this host has (v1, v2, hybrid), from /proc/self/mountinfo
    limit_cpu        a busy loop held at a share of one core: CFS bandwidth (sched-bwc.rst)
    share_cpu        two busy loops on one CPU split it by cpu.shares / cpu.weight
    limit_memory     an allocation past the limit meets the OOM killer: exit 137 (try_memory: in MiB)
    limit_pids       a fork bomb stops at pids.max with EAGAIN; the host can still fork
    throttle_io      O_DIRECT reads and writes held to a number of bytes per second
    deny_device      open(2) of a device node refused with EPERM (v1 devices.deny)
    freeze_group     a counter stops while its group is frozen, and goes on after a thaw
    report_usage     what a running workload used, across controllers, sampled over time
    nest_groups      a child group is held by its parent's limit, whatever its own says
    no_net_controller  network bandwidth has no controller: net_cls/net_prio only tag packets (08 uses tc)
    tree_dot         the live tree under ``labcore`` as a graphviz diagram
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import select
import stat
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from labcore import paths
from labcore.errors import LabError, NeedsPrivilege, NotSupportedHere
from labcore.kernel import procfs
from labcore.kernel.cgroups import PARENT, Group, Manager, Stats, detect, open_manager, v1
from labcore.kernel.cgroups.limits import DeviceRule, Limits, Throttle, parse_run_limits, parse_size
from labcore.kernel.journal import Scope, process_start_time
from labcore.lessons import display, hosts
from labcore.lessons.evidence import Mode, Step, user_mode

WORKLOADS = str(Path(__file__).with_name("workloads.py"))
_REFUSED = (NeedsPrivilege, NotSupportedHere)      # the host forbids it: the step says so, with the fix
MiB = 1 << 20


# --- the machinery every step shares -----------------------------------------------------------------------

class Workload:
    """One workload process (``workloads.py NAME ARGS``), journaled, waiting for "go"."""

    def __init__(self, scope: Scope, name: str, *args):
        # -I -S: no site-packages, no environment: a small interpreter that starts fast.
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", WORKLOADS, name, *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pid = self.proc.pid
        scope.record("process", str(self.pid), "kill", pid=self.pid, start=process_start_time(self.pid))
        self.lines: list[str] = []

    def go(self) -> None:
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = 0.0) -> list[str]:
        """Lines printed so far (waiting up to ``timeout`` s for the first new one)."""
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], timeout)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.lines += chunk.decode().splitlines()    # the workload flushes whole lines
            timeout = 0.0
        return self.lines

    def result(self, timeout: float = 30.0) -> dict | None:
        """The workload's JSON report, or None if it died first."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None          # then the read below drains it to the end
            report = next((json.loads(line) for line in self.read(0.1) if line.startswith("{")), None)
            if report is not None or exited or time.monotonic() > deadline:
                return report

    def wait(self, timeout: float = 30.0) -> int:
        """Its exit status as a shell shows it: 128 + N when killed by signal N (137 = SIGKILL)."""
        code = self.proc.wait(timeout)
        return 128 - code if code < 0 else code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


class Run:
    """A step's groups and workloads, all removed when the ``with`` block ends, by any route."""

    def __init__(self, manager: Manager | None = None):
        self.manager = manager or open_manager()
        self.scope = Scope()
        self.workloads: list[Workload] = []

    def group(self, what: str, limits: Limits | None = None, parent: Group | None = None) -> Group:
        group = self.manager.create(f"{PARENT}-{what}-{secrets.token_hex(3)}", self.scope, parent)
        if limits is not None:
            self.manager.apply(group, limits)
        return group

    def start(self, group: Group, name: str, *args, cpu: int | None = None, go: bool = True) -> Workload:
        """Start a workload, move it into ``group`` (pinned to ``cpu``), then let it go (or call .go())."""
        workload = Workload(self.scope, name, *args)
        self.workloads.append(workload)
        self.manager.add(group, workload.pid)
        if cpu is not None:
            os.sched_setaffinity(workload.pid, {cpu})
        if go:
            workload.go()
        return workload

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        with self.scope:           # the groups go (killing what is inside) even if a workload hangs
            for workload in self.workloads:
                workload.stop()


def limit_file(writes: list[tuple[Path, str]]) -> str:
    """``memory.limit_in_bytes = 33554432``: the files a step wrote, as evidence."""
    return "; ".join(f"{path.name} = {value}" for path, value in writes)


def mem_available() -> int:
    """The host's MemAvailable in bytes (proc(5), /proc/meminfo)."""
    return procfs.meminfo().get("MemAvailable", 0)


def proc_state(pid: int) -> str:
    """Field 3 of /proc/PID/stat (proc(5)): R running, S sleeping, D uninterruptible, T stopped..."""
    try:
        return procfs.state(pid)
    except OSError:
        return "?"


# --- where are the cgroups? --------------------------------------------------------------------------------

def own_cgroups() -> display.Table:
    """/proc/self/cgroup (cgroups(7)), one hierarchy a row: its id, its controllers (none: the v2 hierarchy, id 0)
    and this process's group in it."""
    return display.Table(("id", "controllers", "group"),
                         [(str(line.hierarchy), ",".join(line.controllers) or "(v2)", line.path)
                          for line in procfs.cgroups()])


def detect_cgroups(manager: Manager | None = None) -> Step:
    """Which cgroup interface this host mounts, and where the lab will put its groups: as root at the top of
    each hierarchy, as a user below the subtree delegated to it, or nowhere (and how to delegate one)."""
    layout = manager.layout if manager else detect()
    manager = manager or open_manager()
    mounts = {c: str(p) for c, p in sorted(layout.v1.items())}
    if layout.v2:
        mounts["cgroup2"] = str(layout.v2)
    delegation = manager.delegation
    where = ", ".join(map(str, dict.fromkeys(manager.hierarchy_dirs(PARENT).values())))
    after = {"layout": layout.kind, "backend": manager.version, **mounts,
             "labcore groups go in": where if delegation.allowed else f"nowhere: {delegation.why_not}"}
    if delegation.base:
        after["delegated to you"] = str(layout.v2 / delegation.base)
    return Step("cgroups: which interface this host has", "read /proc/self/mountinfo, /proc/self/cgroup",
                before={"this process's cgroups": own_cgroups()}, after=after,
                data={"layout": layout.kind, "version": manager.version, "may_limit": delegation.allowed,
                      "delegated": delegation.base, "cgroup_lines": procfs.read("self", "cgroup").split()},
                note=f"{layout.kind} layout: the lab drives the {manager.version} interface" + (
                    "" if delegation.allowed else "; no group may be made here by you, so the steps below "
                                                  "show the reference host's recordings"))


# --- cpu ---------------------------------------------------------------------------------------------------

def cpu_share(before: Stats, after: Stats, seconds: float) -> float:
    """CPU time used per second of wall-clock time: 1.0 is one whole core."""
    return (after.cpu_usage_us - before.cpu_usage_us) / (seconds * 1e6)


def measure(manager: Manager, groups: list[Group], seconds: float) -> tuple[list[Stats], list[Stats], float]:
    """Stats of ``groups`` now and ``seconds`` later, and the exact time between."""
    before, start = [manager.stats(g) for g in groups], time.monotonic()
    time.sleep(seconds)
    after, elapsed = [manager.stats(g) for g in groups], time.monotonic() - start
    return before, after, elapsed


def limit_cpu(cpus: float | str = 0.25, seconds: float = 1.0, manager: Manager | None = None) -> Step:
    """A busy loop under --cpus: CFS lets it run ``quota`` us per ``period`` us, then throttles it."""
    limits = parse_run_limits(cpus=cpus)
    title = f"cpu: --cpus {limits.cpus} holds a busy loop"
    try:
        with Run(manager) as run:
            group = run.group("cpu")
            writes = run.manager.apply(group, limits)
            run.start(group, "hog")
            time.sleep(0.2)                          # past the interpreter's start-up
            (before,), (after,), elapsed = measure(run.manager, [group], seconds)
    except _REFUSED as err:
        return hosts.refuse(title, "cpu.cfs_quota_us / cpu.max; spin", err)
    share = cpu_share(before, after, elapsed)
    return Step(title, f"write {limit_file(writes)}; spin",
                before={"cpu time used (us)": before.cpu_usage_us, "periods": before.cpu_periods,
                        "throttled periods": before.cpu_throttled, "throttled time (us)": before.cpu_throttled_us},
                after={"cpu time used (us)": after.cpu_usage_us, "periods": after.cpu_periods,
                       "throttled periods": after.cpu_throttled, "throttled time (us)": after.cpu_throttled_us,
                       "share of one core": f"{share:.2f}"},
                note=f"over {elapsed:.2f} s the busy loop used {share:.2f} of a core; the limit is "
                     f"{limits.cpus}. It spent the rest of each period throttled.",
                data={"share": share, "limit": limits.cpus, "before": asdict(before), "after": asdict(after),
                      "quota": writes[-1][1], "throttled": after.cpu_throttled > before.cpu_throttled,
                      # what was asked, the same on v1 (cpu.cfs_quota_us, cpu.cfs_period_us) and v2 (cpu.max)
                      "quota_us": limits.cpu_quota_us, "period_us": limits.cpu_period_us})


def share_cpu(shares: tuple[int, int] = (1024, 512), seconds: float = 1.0,
              manager: Manager | None = None) -> Step:
    """Two busy loops pinned to one CPU, in groups weighted ``shares``: the CPU is split in that ratio."""
    cpu = max(os.sched_getaffinity(0))
    title = f"cpu: shares {shares[0]} vs {shares[1]} on CPU {cpu}"
    key = f"cpu: shares {shares[0]} vs {shares[1]}"        # which CPU is this machine's business
    try:
        with Run(manager) as run:
            groups = [run.group("share", parse_run_limits(cpu_shares=s)) for s in shares]
            weights = [run.manager.limits_of(g) for g in groups]
            for group in groups:
                run.start(group, "hog", cpu=cpu)
            time.sleep(0.2)
            before, after, elapsed = measure(run.manager, groups, seconds)
    except _REFUSED as err:
        return hosts.refuse(title, "cpu.shares / cpu.weight; two busy loops on one CPU", err, key=key)
    used = [cpu_share(b, a, elapsed) for b, a in zip(before, after)]
    ratio = used[0] / used[1] if used[1] else float("inf")
    # cpu.shares on v1, cpu.weight on v2 (runc's formula): other numbers, the same ratio
    written = [int(next(v for k, v in w.items() if "shares" in k or "weight" in k)) for w in weights]
    return Step(title,
                "write cpu.shares (v1) or cpu.weight (v2); two busy loops, sched_setaffinity to one CPU",
                before={f"group {i + 1} weight": ", ".join(f"{k}={v}" for k, v in w.items() if "shares" in k
                                                           or "weight" in k) for i, w in enumerate(weights)},
                after={**{f"group {i + 1} share of CPU {cpu}": f"{u:.2f}" for i, u in enumerate(used)},
                       "ratio": f"{ratio:.2f}"},
                note=f"asked for {shares[0] / shares[1]:.2f} : 1, measured {ratio:.2f} : 1 over {elapsed:.2f} s",
                key=key, data={"used": used, "ratio": ratio, "expected": shares[0] / shares[1], "cpu": cpu,
                               "weights": written, "weight_ratio": round(written[0] / written[1])})


# --- memory ------------------------------------------------------------------------------------------------

def limit_memory(limit: str = "32m", allocate_mb: int = 100, manager: Manager | None = None) -> Step:
    """Allocate ``allocate_mb`` MiB under --memory ``limit``: past it, the OOM killer sends SIGKILL."""
    limits = parse_run_limits(memory=limit)
    title = f"memory: --memory {limit}, then allocate {allocate_mb} MiB"
    try:
        with Run(manager) as run:
            group = run.group("memory")
            host_before, before = mem_available(), run.manager.stats(group)
            writes = run.manager.apply(group, limits)
            worker = run.start(group, "alloc", allocate_mb)
            code, report = worker.wait(), worker.result(0)
            after, host_after = run.manager.stats(group), mem_available()
    except _REFUSED as err:
        return hosts.refuse(title, "memory.limit_in_bytes / memory.max; allocate", err)
    killed = code == 137
    return Step(title,
                f"write {limit_file(writes)}; allocate and touch 1 MiB at a time",
                before={"usage (bytes)": before.memory_current, "peak (bytes)": before.memory_peak,
                        "oom_kill": before.oom_kills, "child exit status": "-",
                        "host MemAvailable (MiB)": host_before // MiB},
                after={"usage (bytes)": after.memory_current, "peak (bytes)": after.memory_peak,
                       "oom_kill": after.oom_kills, "child exit status": code,
                       "host MemAvailable (MiB)": host_after // MiB},
                note=(f"killed by the OOM killer: exit {code} (128 + SIGKILL), peak {after.memory_peak} "
                      f"bytes ≤ limit {limits.memory}" if killed else
                      f"the allocation fit: exit {code}, peak {after.memory_peak} bytes"),
                data={"exit": code, "killed": killed, "oom_kills": after.oom_kills, "peak": after.memory_peak,
                      "limit": limits.memory, "allocated_mb": (report or {}).get("allocated_mb")})


def try_memory(limit_mb: int = 64, allocate_mb: int = 32, manager: Manager | None = None) -> Step:
    """``limit_memory`` in whole MiB, for sliders: does the OOM killer fire?"""
    return limit_memory(f"{limit_mb}m", allocate_mb, manager)


# --- pids --------------------------------------------------------------------------------------------------

def host_can_fork() -> bool:
    return subprocess.run(["true"]).returncode == 0


def limit_pids(limit: int = 10, manager: Manager | None = None) -> Step:
    """A process forks until refused: at pids.max the kernel's fork(2) returns EAGAIN, in that group only."""
    limits = parse_run_limits(pids_limit=limit)
    title = f"pids: --pids-limit {limit} against a fork bomb"
    try:
        with Run(manager) as run:
            group = run.group("pids")
            before = run.manager.stats(group)
            writes = run.manager.apply(group, limits)
            report = run.start(group, "forks").result() or {}
            after, host = run.manager.stats(group), host_can_fork()
    except _REFUSED as err:
        return hosts.refuse(title, "pids.max; fork until refused", err)
    failed = report.get("errno") == "EAGAIN"
    refused = "forks refused (pids.events max)"
    return Step(title,
                f"write {limit_file(writes)}; fork until refused",
                before={"pids.current": before.pids_current, refused: before.pids_refused},
                after={"pids.current": after.pids_current, refused: after.pids_refused,
                       "forked inside": report.get("forked"), "fork error inside": report.get("errno"),
                       "host can still fork": host},
                note=f"fork failed inside with {report.get('errno')} after {report.get('forked')} children; "
                     f"the host forked fine: {host}",
                data={"fork_failed": failed, "errno": report.get("errno"), "forked": report.get("forked"),
                      "pids_current": after.pids_current, "host_can_fork": host})


# --- io ----------------------------------------------------------------------------------------------------

def disk_of(path: Path) -> tuple[int, int]:
    """(major, minor) of the whole disk holding ``path``: blk-throttle takes disks, not partitions."""
    device = os.stat(path).st_dev
    major, minor = os.major(device), os.minor(device)
    if major == 0:
        raise NotSupportedHere(f"{path} is on a filesystem with no block device (tmpfs, overlay, btrfs...), "
                               "so there is no disk to throttle", path=str(path),
                               fix="set LABCORE_HOME to a directory on a disk (ext4, xfs)")
    sysfs = Path(f"/sys/dev/block/{major}:{minor}")
    if (sysfs / "partition").exists():           # a partition: its parent directory in sysfs is the disk
        major, minor = map(int, (sysfs.resolve().parent / "dev").read_text().split(":"))
    return major, minor


def run_direct_io(run: Run, group: Group, file: Path, megabytes: int) -> dict:
    report = run.start(group, "direct_io", file, megabytes).result(60)
    if report is None:
        raise NotSupportedHere(f"O_DIRECT I/O failed on {file} (EINVAL: the filesystem does not support it)",
                               path=str(file), fix="set LABCORE_HOME to a directory on ext4 or xfs")
    return report


def throttle_io(rate: str = "2mb", megabytes: int = 2, manager: Manager | None = None) -> Step:
    """O_DIRECT I/O, first free then under --device-read-bps/--device-write-bps on the state dir's disk."""
    title = f"io: --device-read-bps/--device-write-bps {rate} on the lab's disk"
    directory = paths.scratch_dir()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        major, minor = disk_of(directory)
    except NotSupportedHere as err:
        return hosts.refuse(title, "blkio.throttle.*_bps_device / io.max", err)
    bps = parse_size(rate, "--device-read-bps")          # as the flag is read: BadInput on "10XB"
    throttle = Throttle(f"{major}:{minor}", major, minor, bps)
    file = directory / f"{PARENT}-io-{secrets.token_hex(3)}"
    try:
        with Run(manager) as run:
            run.scope.record("file", str(file), "unlink", path=str(file))
            group = run.group("io")
            free = run_direct_io(run, group, file, megabytes)
            writes = run.manager.apply(group, Limits(read_bps=(throttle,), write_bps=(throttle,)))
            held = run_direct_io(run, group, file, megabytes)
            stats = run.manager.stats(group)
    except _REFUSED as err:
        return hosts.refuse(title, "open(O_DIRECT)", err)
    rate_of = lambda r, mode: r["bytes"] / r[f"{mode}_seconds"] / MiB      # noqa: E731 - MiB/s
    measured = {f"{mode} MiB/s": (f"{rate_of(free, mode):.1f}", f"{rate_of(held, mode):.2f}")
                for mode in ("write", "read")}
    return Step(title, f"write {limit_file(writes)}; O_DIRECT write then read {megabytes} MiB",
                columns=("limit off", "limit on"), before={k: v[0] for k, v in measured.items()},
                after={**{k: v[1] for k, v in measured.items()}, "limit MiB/s": f"{bps / MiB:.2f}",
                       "bytes counted (read/write)": f"{stats.io_read_bytes}/{stats.io_write_bytes}"},
                note="before: no limit; after: held near the limit. O_DIRECT bypasses the page cache, so "
                     "each byte goes to the disk while the group is charged for it (buffered writes would "
                     "be written back later by the kernel, outside the group on v1)",
                data={"free": free, "held": held, "bps": bps, "writes": [(str(f), v) for f, v in writes],
                      "read_bytes": stats.io_read_bytes, "write_bytes": stats.io_write_bytes,
                      "read_rate": held["bytes"] / held["read_seconds"],
                      "write_rate": held["bytes"] / held["write_seconds"]})


# --- devices -----------------------------------------------------------------------------------------------

def device_rule(device: str, allow: bool = False) -> DeviceRule:
    """The rule naming one device node by type and numbers: /dev/null -> c 1:3 rwm."""
    info = os.stat(device)
    kind = "c" if stat.S_ISCHR(info.st_mode) else "b"
    return DeviceRule(kind, str(os.major(info.st_rdev)), str(os.minor(info.st_rdev)), "rwm", allow)


def deny_device(device: str = "/dev/null", manager: Manager | None = None) -> Step:
    """open(2) of ``device`` inside a group, before and after a devices.deny rule for it."""
    rule = device_rule(device)
    limits = Limits(devices=(rule,))
    title, action = f"devices: deny {device} ({rule})", f"deny '{rule}' (v1: devices.deny); open({device}, O_RDWR)"
    manager = manager or open_manager()
    try:
        manager.check(limits)
    except NotSupportedHere as err:
        return hosts.refuse(title, action, err)
    try:
        with Run(manager) as run:
            group = run.group("devices")
            first, host_first = run.start(group, "open_device", device).result() or {}, _opens(device)
            run.manager.apply(group, limits)
            second, host = run.start(group, "open_device", device).result() or {}, _opens(device)
    except _REFUSED as err:
        return hosts.refuse(title, action, err)
    said = lambda opened: "ok" if opened else "failed"      # noqa: E731
    return Step(title, action, columns=("device allowed", "device denied"),
                before={"open inside": first.get("errno") or "ok", "open on the host": said(host_first)},
                after={"open inside": second.get("errno") or "ok", "open on the host": said(host)},
                note=f"inside, open({device}) now fails with {second.get('errno')}; the host still opens it",
                data={"before": first, "after": second, "host_opens": host})


def _opens(device: str) -> bool:
    try:
        os.close(os.open(device, os.O_RDWR))
        return True
    except OSError:
        return False


# --- freezer -----------------------------------------------------------------------------------------------

def freeze_group(seconds: float = 0.5, manager: Manager | None = None) -> Step:
    """Freeze a group running a counter: the count stands still, then goes on after the thaw."""
    title = f"freezer: freeze a counting process for {seconds} s"
    try:
        with Run(manager) as run:
            group = run.group("freezer")
            worker = run.start(group, "counter")
            running, was_frozen = int(worker.read(10.0)[-1]), run.manager.is_frozen(group)   # its first count
            running_state = proc_state(worker.pid)
            frozen = run.manager.freeze(group)
            at_freeze, state = int(worker.read(0.05)[-1]), proc_state(worker.pid)
            time.sleep(seconds)
            later = int(worker.read(0.0)[-1])
            thawed = run.manager.thaw(group)
            time.sleep(seconds)
            resumed = int(worker.read(0.1)[-1])
    except _REFUSED as err:
        return hosts.refuse(title, "freezer.state FROZEN / cgroup.freeze 1", err)
    stood_still = later == at_freeze and resumed > later
    return Step(title,
                f"write {'freezer.state FROZEN' if run.manager.version == 'v1' else 'cgroup.freeze 1'}, "
                f"wait {seconds} s, then thaw", columns=("running", "frozen, then thawed"),
                before={"group frozen": was_frozen, "counter": running, "/proc/PID/stat state": running_state},
                after={"group frozen": frozen, "counter": f"{at_freeze} -> {later} ({seconds} s later)",
                       "/proc/PID/stat state": state, f"counter {seconds} s after thaw": resumed},
                note=f"the counter stood still while frozen: {stood_still}; a frozen task is not stopped "
                     "(no 'T'): it waits inside the kernel, so it cannot even see it was frozen",
                data={"stood_still": stood_still, "frozen": frozen, "thawed": thawed,
                      "counts": [running, at_freeze, later, resumed], "state": state})


# --- accounting --------------------------------------------------------------------------------------------

def sample(manager: Manager, group: Group, seconds: float, interval: float = 0.1) -> list[tuple[float, Stats]]:
    """The group's stats every ``interval`` s for ``seconds`` s, timed from the first sample."""
    start, samples = time.monotonic(), []
    while True:
        now = time.monotonic() - start
        samples.append((now, manager.stats(group)))
        if now >= seconds:
            return samples
        time.sleep(interval)


def report_usage(seconds: float = 2.0, manager: Manager | None = None) -> Step:
    """A container-like group (--cpus 0.5 --memory 128m --pids-limit 32) running a busy loop and a 48 MiB
    allocation: what every controller accounted, at the start and at the end."""
    limits = parse_run_limits(memory="128m", cpus="0.5", pids_limit="32")
    title = "accounting: one group's usage across controllers"
    try:
        with Run(manager) as run:
            group = run.group("usage", limits)
            run.start(group, "hog")
            # Sampling starts once the allocation reports it is done (and holds it for ``seconds`` + 1 s): how
            # long touching 48 MiB takes depends on the machine, and under an emulated CPU it is seconds.
            run.start(group, "alloc", 48, seconds + 1).result()
            samples = sample(run.manager, group, seconds)
    except _REFUSED as err:
        return hosts.refuse(title, "read cpu, memory, pids, io stats every 0.1 s", err)
    (t0, first), (t1, last) = samples[0], samples[-1]
    return Step(title,
                "read cpu.stat/cpuacct.usage, memory.*, pids.current, io stats every 0.1 s",
                before={k: v for k, v in asdict(first).items()}, after={k: v for k, v in asdict(last).items()},
                note=f"{len(samples)} samples over {t1 - t0:.1f} s; draw them with plot_usage(step)",
                data={"samples": [(t, asdict(s)) for t, s in samples], "cpus": limits.cpus,
                      "memory": limits.memory})


def plot_usage(step: Step):
    """CPU share and memory over time from ``report_usage``, each against its limit (a matplotlib figure)."""
    if not step.permitted:
        from labcore.lessons.diagrams import NotDrawn
        return NotDrawn("plot")
    import matplotlib.pyplot as plt
    samples = step.data["samples"]
    times = [t for t, _ in samples]
    cpu = [(b["cpu_usage_us"] - a["cpu_usage_us"]) / ((tb - ta) * 1e6)
           for (ta, a), (tb, b) in zip(samples, samples[1:])]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
    left.plot(times[1:], cpu, label="used")
    left.axhline(step.data["cpus"], linestyle="--", color="gray", label="--cpus")
    left.set(title="CPU (cores)", xlabel="seconds", ylim=(0, 1.05))
    right.plot(times, [s["memory_current"] / MiB for _, s in samples], label="used")
    right.axhline(step.data["memory"] / MiB, linestyle="--", color="gray", label="--memory")
    right.set(title="memory (MiB)", xlabel="seconds")
    for axes in (left, right):
        axes.legend(loc="lower right")
    figure.tight_layout()
    plt.close(figure)                # shown once, as the cell's result
    return figure


# --- network: no controller ------------------------------------------------------------------------------------

RATE_WORDS = ("bps", "rate", "limit", "max", "bandwidth")      # how every limit file of the lab is named


V1_REFUSED = {
    errno.EBUSY: "net_cls and net_prio are bound to a v1 hierarchy mounted with other options: see "
                 "`grep cgroup /proc/self/mountinfo`",
    errno.ENODEV: "this kernel has no net_cls/net_prio for v1 (booted with cgroup_no_v1=, or built without "
                  "CONFIG_CGROUP_NET_CLASSID): /proc/cgroups lists what it has",
}


def net_controller_note(rates: list[str], read_v1: bool = True) -> str:
    if not read_v1:
        return ("cgroup v2 has no network controller; v1's net_cls and net_prio, which only tag packets for tc and "
                "firewalls, could not be mounted here. A limit is a qdisc on an interface: notebook 08 puts one on "
                "a container's veth")
    if rates:                            # a kernel the lab has not met: say what it found, not what it expected
        return (f"files whose names speak of a rate: {', '.join(rates)}; read their values above before "
                "concluding. A limit is a qdisc on an interface: notebook 08 puts one on a container's veth")
    return ("no file takes a rate: net_cls.classid is a tag (0xAAAABBBB, tc class AAAA:BBBB) that a tc filter "
            "(cls_cgroup) may match, net_prio.ifpriomap a priority per interface; v2 has neither. A limit is a "
            "qdisc on an interface: notebook 08 puts one on a container's veth")


def no_net_controller() -> Step:
    """Docker's docs and many articles list bandwidth among the limits: the kernel has no cgroup controller for
    it. What it has (v1 only) tags a group's sockets: a class id (net_cls) or a priority (net_prio) that a qdisc
    or a firewall may act on. The v2 controllers, /proc/cgroups, and the v1 hierarchy's own files show it."""
    title = "network bandwidth: is there a cgroup controller for it?"
    action = ("read cgroup.controllers (v2), /proc/cgroups; mount -t cgroup -o net_cls,net_prio (v1, in a child's "
              "own mount namespace) and list its files")
    layout = detect()
    built = {name: found for name, found in procfs.cgroup_controllers().items() if name.startswith("net")}
    on_v2 = (layout.v2 / "cgroup.controllers").read_text().split() if layout.v2 else None
    controllers = ",".join(built) or "net_cls,net_prio"
    # Read where the host mounted it (anyone may), else mounted by a child in its own mount namespace: root only.
    mode = user_mode() if v1.mounted_hierarchy(controllers) else Mode.ROOT
    v1_answer = ""
    try:
        files = v1.read_hierarchy_root(controllers)
    except (NeedsPrivilege, LabError) as err:
        if on_v2 is None:                 # nothing to show: no v2 tree, and the v1 one refused
            return refuse_net_controller(title, action, err)
        # cgroup v2's own answer stands alone; the kernel's refusal of the v1 hierarchy is part of the evidence
        files, v1_answer, mode = {}, f"not mounted here: {err.message}", user_mode()
    rates = [name for name in files if any(word in name for word in RATE_WORDS)]
    return Step(title, action, columns=("cgroup v2", "cgroup v1: net_cls, net_prio"),
                before={"controllers": on_v2 if on_v2 is not None else "no cgroup2 mounted",
                        "a network controller": [c for c in on_v2 or () if c.startswith("net")] or "none"},
                after={"controllers": [f"{name} (hierarchy {found['hierarchy']})" for name, found in built.items()],
                       "the hierarchy's files": list(files) or v1_answer,
                       **{name: value for name, value in files.items() if value},
                       "a file that takes a rate": rates or "none"},
                mode=mode, note=net_controller_note(rates, read_v1=not v1_answer),
                data={"v2_controllers": on_v2, "built": built, "files": files, "rate_files": rates,
                      "v2_network_controllers": [c for c in on_v2 or () if c.startswith("net")]})


def refuse_net_controller(title: str, action: str, err: LabError) -> Step:
    if isinstance(err, NeedsPrivilege):
        return hosts.refuse(title, action, NeedsPrivilege(err.message, why=(
            "a v1 hierarchy is mounted by root of the host only: the kernel makes none for a user namespace's root "
            "(cgroup1_get_tree)") if os.geteuid() else None, fix=err.fix))
    # EBUSY: bound to another v1 hierarchy; ENODEV: cgroup_no_v1=, no CONFIG_
    return hosts.refuse(title, action, NotSupportedHere(err.message, fix=err.fix or V1_REFUSED.get(
        err.errno, "the kernel's answer is above; `grep net_ /proc/cgroups` shows what it has")))


# --- hierarchy ---------------------------------------------------------------------------------------------

def nest_groups(parent_memory: str = "64m", child_memory: str = "128m", allocate_mb: int = 100,
                manager: Manager | None = None) -> Step:
    """A child group with a higher memory limit than its parent: the parent's limit is the one that holds."""
    title = f"hierarchy: parent --memory {parent_memory}, child --memory {child_memory}"
    try:
        with Run(manager) as run:
            outer = run.group("outer", parse_run_limits(memory=parent_memory))
            inner = run.group("inner", parse_run_limits(memory=child_memory), parent=outer)
            worker = run.start(inner, "alloc", allocate_mb, go=False)
            dot, files = tree_dot(run.manager), run.manager.limits_of(inner)      # the child is in, waiting
            before = run.manager.stats(inner)
            worker.go()
            code = worker.wait()
            after, outer_after = run.manager.stats(inner), run.manager.stats(outer)
    except _REFUSED as err:
        return hosts.refuse(title, "mkdir a group in a group; allocate in the child", err)
    limit_name = next(name for name in files if name.startswith("memory"))
    parent_limit = parse_run_limits(memory=parent_memory).memory
    return Step(title,
                f"mkdir {outer.name}, {inner.name}; allocate {allocate_mb} MiB in the child",
                before={f"child {limit_name}": files[limit_name], "child peak": before.memory_peak,
                        "child exit status": "-"},
                after={f"child {limit_name}": files[limit_name], "child peak": after.memory_peak,
                       "child exit status": code, "child oom_kill": after.oom_kills,
                       "parent oom_kill": outer_after.oom_kills},
                note=f"the child was killed at its parent's {parent_memory}, below its own {child_memory}: "
                     f"exit {code}, peak {after.memory_peak} bytes",
                data={"exit": code, "peak": after.memory_peak, "dot": dot, "parent_limit": parent_limit,
                      "peak_of_parent_limit": round(after.memory_peak / parent_limit, 1)})


def _unlimited(name: str, value: str) -> bool:
    # "max" (v2), -1 or PAGE_COUNTER_MAX (v1), or the default weight: nothing to draw.
    default = {"cpu.shares": "1024", "cpu.weight": "100"}.get(name)
    return value.startswith("max") or value == "-1" or value == default or (
        value.isdigit() and int(value) >= 1 << 62)


def tree_dot(manager: Manager | None = None) -> str:
    """The live tree under ``labcore`` as DOT: each group with its limits and how many processes it holds."""
    from labcore.lessons.diagrams import Graph
    manager = manager or open_manager()
    root = Group("", manager.hierarchy_dirs("")).path
    graph = Graph("cgroups under labcore", rankdir="TB", fontname="Helvetica")
    graph.defaults("node", shape="box", style="rounded", fontname="Helvetica", fontsize="10")
    graph.node("/", f"{root}\n(root of the {manager.version} hierarchy)", style="dashed")
    for group in manager.groups():
        lines = [group.name.rsplit("/", 1)[-1]]
        lines += [f"{name} = {value}" for name, value in manager.limits_of(group).items()
                  if not _unlimited(name, value)]
        count = len(manager.procs(group))
        lines.append(f"{count} process{'' if count == 1 else 'es'}")
        graph.node(group.name, "\n".join(lines))
        graph.edge(group.name.rpartition("/")[0] or "/", group.name)
    return graph.source()
