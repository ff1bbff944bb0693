"""cgroup v1: one hierarchy per controller, each with its own copy of the group.

On v1 (Documentation/admin-guide/cgroup-v1/) every controller is a separate mount, so one container's group
is several directories with the same name: /sys/fs/cgroup/memory/labcore/labcore-<id>,
/sys/fs/cgroup/cpu/labcore/labcore-<id>, ... and its pid is written into each one's cgroup.procs, or the shim
writes "0" into each one's tasks to move itself (``labcore.kernel.cgroups.move_oneself``).

    cpu       cpu.cfs_quota_us / cfs_period_us (a share of a core), cpu.shares   scheduler/sched-bwc.rst
    cpuacct   cpuacct.usage: CPU time used, in ns                               cgroup-v1/cpuacct.rst
    memory    memory.limit_in_bytes, memory.memsw.limit_in_bytes (+ swap),      cgroup-v1/memory.rst
              memory.swappiness
    pids      pids.max, pids.current, pids.events                               cgroup-v1/pids.rst
    blkio     blkio.throttle.read_bps_device / write_bps_device                 cgroup-v1/blkio-controller.rst
    devices   devices.allow / devices.deny: "c 1:3 rwm"                         cgroup-v1/devices.rst
    freezer   freezer.state: THAWED, FREEZING, FROZEN                           cgroup-v1/freezer-subsystem.rst

cpuset is left alone: a new cpuset group is unusable until cpuset.cpus and cpuset.mems are filled in, and the
lab does not pin containers. Next: ``labcore.kernel.cgroups.v2``, the same interface in one tree.
"""
from __future__ import annotations

from pathlib import Path

from labcore.kernel import procfs
from labcore.kernel.cgroups import (Group, Manager, NotSupportedHere, Stats, read_device_counters, read_int,
                                    read_keyed, read_text, write)

# The hierarchies a container's group is made in. freezer comes last on purpose: the journal undoes newest
# first, and a frozen task ignores even SIGKILL until it is thawed, so the freezer group must go first.
CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer")


class V1Manager(Manager):
    version = "v1"

    def hierarchy_dirs(self, name: str, controllers=None) -> dict[str, Path]:
        return {c: self.layout.v1[c] / name for c in CONTROLLERS
                if c in self.layout.v1 and (controllers is None or c in controllers)}

    def files_to_move_oneself(self, group: Group) -> list[Path] | None:
        """Each hierarchy's tasks file, on a kernel that moves a thread writing "0" there without the global
        lock (``labcore.kernel.cgroups.move_oneself``, Linux 5.11); None before, where ``Move`` overlaps the
        wait instead of making the mover sit through it."""
        if procfs.kernel_version() < (5, 11):
            return None
        return [directory / "tasks" for directory in dict.fromkeys(group.dirs.values())]

    def controllers_for(self, limits):
        """Only the devices hierarchy for a container that has nothing but Docker's device list: one mkdir
        instead of seven per container start (bench/: a tenth of a second on this host)."""
        from dataclasses import replace
        return ("devices",) if limits.devices and replace(limits, devices=()) == type(limits)() else None

    def limit_writes(self, group: Group, limits) -> list[tuple[Path, str]]:
        return [*self._memory(group, limits), *self._cpu(group, limits), *self._pids(group, limits),
                *self._blkio(group, limits), *self._devices(group, limits)]

    def _memory(self, group, limits):
        swappiness = [] if limits.swappiness is None else [
            (group.dir("memory") / "memory.swappiness", str(limits.swappiness))]   # cgroup-v1/memory.rst 5.3
        if limits.memory is None:
            return swappiness
        memory = group.dir("memory")
        # memory.limit_in_bytes first: the kernel keeps memsw >= memory, so the lower one cannot go first.
        writes = [(memory / "memory.limit_in_bytes", str(limits.memory))]
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            # memsw counts memory + swap. Setting it to the memory limit means "no swap": the OOM killer
            # then fires at the limit on hosts with swap too (this one has none). Docker would allow as
            # much swap again as memory when --memory-swap is not given.
            writes.append((memsw, str(limits.memory_swap or limits.memory)))
        elif limits.memory_swap is not None:
            raise NotSupportedHere("this kernel does not account swap per cgroup (no memory.memsw.*)",
                                   path=str(memsw), fix="boot with swapaccount=1, or drop --memory-swap")
        return writes + swappiness

    def _cpu(self, group, limits):
        writes = []
        if limits.cpus is not None:
            cpu = group.dir("cpu")
            writes += [(cpu / "cpu.cfs_period_us", str(limits.cpu_period_us)),
                       (cpu / "cpu.cfs_quota_us", str(limits.cpu_quota_us))]
        if limits.cpu_shares is not None:
            writes.append((group.dir("cpu") / "cpu.shares", str(limits.cpu_shares)))
        return writes

    def _pids(self, group, limits):
        return [] if limits.pids is None else [(group.dir("pids") / "pids.max", str(limits.pids))]

    def _blkio(self, group, limits):
        writes = []
        for name, throttles in (("read", limits.read_bps), ("write", limits.write_bps)):
            for t in throttles:      # one "MAJ:MIN BYTES_PER_SECOND" per write, one device each
                writes.append((group.dir("blkio") / f"blkio.throttle.{name}_bps_device",
                               f"{t.major}:{t.minor} {t.bps}"))
        return writes

    def _devices(self, group, limits):
        return [(group.dir("devices") / ("devices.allow" if rule.allow else "devices.deny"), str(rule))
                for rule in limits.devices]

    def stats(self, group: Group) -> Stats:
        if "memory" not in group.dirs:
            return Stats()                    # a group for the device list alone measures nothing
        cpu = read_keyed(group.dir("cpu") / "cpu.stat")
        usage_ns = read_int(group.dir("cpuacct") / "cpuacct.usage")
        io = self._io_bytes(group.dir("blkio") / "blkio.throttle.io_service_bytes")
        memory = group.dir("memory")
        return Stats(
            cpu_usage_us=None if usage_ns is None else usage_ns // 1000,
            cpu_periods=cpu.get("nr_periods"), cpu_throttled=cpu.get("nr_throttled"),
            cpu_throttled_us=cpu["throttled_time"] // 1000 if "throttled_time" in cpu else None,
            memory_current=read_int(memory / "memory.usage_in_bytes"),
            memory_peak=read_int(memory / "memory.max_usage_in_bytes"),
            # oom_kill in memory.oom_control: since Linux 4.13
            oom_kills=read_keyed(memory / "memory.oom_control").get("oom_kill"),
            pids_current=read_int(group.dir("pids") / "pids.current"),
            pids_refused=read_keyed(group.dir("pids") / "pids.events").get("max"),
            io_read_bytes=io.get("Read"), io_write_bytes=io.get("Write"))

    @staticmethod
    def _io_bytes(path: Path) -> dict[str, int]:
        """blkio's "MAJ:MIN Read|Write|Sync|... BYTES" lines, summed over devices."""
        return read_device_counters(path, lambda fields: [fields] if len(fields) == 2 else [], ("Read", "Write"))

    def limits_of(self, group: Group) -> dict[str, str]:
        files = [("memory", "memory.limit_in_bytes"), ("cpu", "cpu.cfs_quota_us"), ("cpu", "cpu.shares"),
                 ("pids", "pids.max")]
        found = {}
        for controller, name in files:
            if controller in group.dirs:
                text = read_text(group.dirs[controller] / name)
                if text is not None:
                    found[name] = text.strip()
        return found

    def set_frozen(self, group: Group, frozen: bool) -> None:
        write(group.dir("freezer") / "freezer.state", "FROZEN" if frozen else "THAWED")

    def is_frozen(self, group: Group) -> bool:
        return (read_text(group.dir("freezer") / "freezer.state") or "").strip() == "FROZEN"


# --- a hierarchy nobody mounted: net_cls and net_prio ------------------------------------------------------------
# Neither is a limit. net_cls.classid is a number each socket of the group's tasks carries, for a tc classifier
# (cls_cgroup) or a firewall rule to match; net_prio.ifpriomap sets SO_PRIORITY per interface, for a qdisc to
# order by (cgroup-v1/net_cls.rst, net_prio.rst). cgroup v2 has neither: the kernel leaves every controller
# without a v2 interface out of cgroup.controllers (cgroup_init: cgrp_dfl_inhibit_ss_mask), and a v2 group is
# matched by its path instead (nftables `socket cgroupv2`, BPF).

def read_hierarchy_root(controllers: str = "net_cls,net_prio") -> dict[str, str]:
    """The files of a v1 hierarchy's root group and their values, {name: text}: where the host has it mounted,
    read there; else mounted by a child in a mount namespace of its own, where it goes when the child exits.
    Nothing is written: a value written in the root would tag every socket on the host."""
    from labcore.kernel.process import run_in_child
    point = mounted_hierarchy(controllers)
    return _read_root(point) if point else run_in_child(_mount_and_read, controllers)


def mounted_hierarchy(controllers: str) -> str | None:
    """Where this mount namespace has a v1 hierarchy with all of ``controllers`` mounted, or None."""
    wanted = set(controllers.split(","))
    return next((mount.point for mount in procfs.mountinfo("self")
                 if mount.fstype == "cgroup" and wanted <= set(mount.super_options.split(","))), None)


def _mount_and_read(controllers: str) -> dict[str, str]:
    from labcore.kernel import syscalls
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)      # nothing reaches the host
    syscalls.mount("cgroup", "/sys/fs/cgroup", "cgroup", 0, controllers)        # covers it, in here only
    return _read_root("/sys/fs/cgroup")


def _read_root(point: str) -> dict[str, str]:
    """Every file of the root group; the values of the controllers' own (cgroup.procs would list every pid)."""
    files = {}
    for path in sorted(Path(point).iterdir()):
        if path.is_file():
            files[path.name] = path.read_text().strip() if path.name.startswith(("net_cls.", "net_prio.")) else ""
    return files

