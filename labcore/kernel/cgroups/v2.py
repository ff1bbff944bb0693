"""cgroup v2: one tree, controllers switched on per subtree (Documentation/admin-guide/cgroup-v2.rst).

A container's group is one directory, /sys/fs/cgroup/labcore/labcore-<id>. A controller's files appear in
a group only when its parent lists the controller in ``cgroup.subtree_control`` ("Top-down constraint"),
and a group that passes controllers down may hold no processes itself ("No internal process constraint"):
so ``labcore`` stays empty and the processes live in its children.

    cpu       cpu.max "QUOTA PERIOD", cpu.weight (1..10000), cpu.stat usage_usec/nr_throttled/throttled_usec
    memory    memory.max, memory.swap.max, memory.current, memory.peak, memory.events oom_kill
    pids      pids.max, pids.current, pids.events
    io        io.max "MAJ:MIN rbps=N wbps=N", io.stat
    (core)    cgroup.freeze, cgroup.events "frozen 1"
    devices   no files: a BPF_PROG_TYPE_CGROUP_DEVICE program decides (``labcore.kernel.cgroups.devices``)

A process is put in a group by writing its pid to cgroup.procs, or born there: clone3(2)'s CLONE_INTO_CGROUP
takes an fd of the group's directory (Linux 5.7), with the same permission checks as the write, made with the
caller's credentials. The shim forks pid 1 that way (``directory_to_fork_into``).

Next: ``labcore.lessons.control_groups`` enforces each controller and measures it.
"""
from __future__ import annotations

from pathlib import Path

from labcore.kernel import procfs, syscalls
from labcore.kernel.cgroups import (Group, Manager, NotSupportedHere, Stats, read_device_counters, read_int,
                                    read_keyed, read_text, write)

WANTED = ("cpu", "memory", "pids", "io")


class V2Manager(Manager):
    version = "v2"

    def hierarchy_dirs(self, name: str, controllers=None) -> dict[str, Path]:
        return {"unified": self.layout.v2 / self.base / name}

    def directory_to_fork_into(self, group: Group) -> Path | None:
        """The group's directory, for the shim to fork pid 1 straight into it (clone3's CLONE_INTO_CGROUP,
        ``labcore.kernel.syscalls.clone_into_cgroup``, as crun does): nobody writes cgroup.procs, so there is no
        grace period to wait for (``labcore.kernel.cgroups.Move``). None before Linux 5.7, and where clone3 is
        refused (Docker's default seccomp profile answers ENOSYS for it): there ``Move`` overlaps the wait."""
        if procfs.kernel_version() < (5, 7) or not syscalls.clone3_allowed():
            return None
        return group.path

    def prepare_parent(self, name: str) -> None:
        """Enable the controllers in ``cgroup.subtree_control`` of every group from the top down to ``name``.

        Like runc (libcontainer/cgroups/fs2), the root's subtree_control is written only when a controller is
        missing there, as on a host without systemd; the root is exempt from the no-internal-process rule.
        A user starts at its delegated subtree, whose subtree_control is its own to write.
        """
        directory = self.layout.v2 / self.base
        for part in ["", *name.split("/")]:
            directory = directory / part if part else directory
            available = set((read_text(directory / "cgroup.controllers") or "").split())
            enabled = set((read_text(directory / "cgroup.subtree_control") or "").split())
            for controller in WANTED:
                if controller in available and controller not in enabled:
                    write(directory / "cgroup.subtree_control", f"+{controller}")

    def check(self, limits) -> None:
        """Refuse, before any group exists, what v2 cannot do: a per-group swappiness, or a device list a BPF
        program here cannot express."""
        if limits.swappiness is not None:
            raise NotSupportedHere("cgroup v2 has no per-group swappiness (memory.swappiness is a v1 file; v2 "
                                   "keeps only the system-wide vm.swappiness)", fix="leave out --memory-swappiness")
        if limits.devices:
            from labcore.kernel.cgroups import devices
            devices.program(limits.devices)

    def apply(self, group: Group, limits) -> list[tuple[Path, str]]:
        """The files, then the device list as a BPF program (``labcore.kernel.cgroups.devices``): v2 has no
        devices.allow to write."""
        writes = super().apply(group, limits)
        if limits.devices:
            from labcore.kernel.cgroups import devices
            devices.attach(group.dir("unified"), limits.devices)
        return writes

    def limit_writes(self, group: Group, limits) -> list[tuple[Path, str]]:
        here = group.dir("unified")
        writes = []
        if limits.memory is not None:
            writes.append((here / "memory.max", str(limits.memory)))
            writes += self._swap(here, limits)
        if limits.cpus is not None:
            writes.append((here / "cpu.max", f"{limits.cpu_quota_us} {limits.cpu_period_us}"))
        if limits.cpu_weight is not None:
            writes.append((here / "cpu.weight", str(limits.cpu_weight)))
        if limits.pids is not None:
            writes.append((here / "pids.max", str(limits.pids)))
        return writes + self._io(here, limits)

    @staticmethod
    def _swap(here: Path, limits) -> list[tuple[Path, str]]:
        # v2 counts swap apart from memory: memory.swap.max 0 means "no swap", so the OOM killer fires
        # at memory.max on hosts with swap too; --memory-swap is memory + swap, as Docker spells it.
        swap = here / "memory.swap.max"
        if swap.exists():
            return [(swap, str((limits.memory_swap or limits.memory) - limits.memory))]
        if limits.memory_swap is not None:
            raise NotSupportedHere("this kernel does not account swap per cgroup (no memory.swap.max)",
                                   path=str(swap), fix="drop --memory-swap")
        return []

    @staticmethod
    def _io(here: Path, limits) -> list[tuple[Path, str]]:
        per_device: dict[tuple[int, int], list[str]] = {}
        for key, throttles in (("rbps", limits.read_bps), ("wbps", limits.write_bps)):
            for t in throttles:
                per_device.setdefault((t.major, t.minor), []).append(f"{key}={t.bps}")
        return [(here / "io.max", f"{major}:{minor} {' '.join(keys)}")
                for (major, minor), keys in per_device.items()]

    def stats(self, group: Group) -> Stats:
        here = group.dir("unified")
        cpu = read_keyed(here / "cpu.stat")
        io = self._io_bytes(here / "io.stat")
        return Stats(
            cpu_usage_us=cpu.get("usage_usec"), cpu_periods=cpu.get("nr_periods"),
            cpu_throttled=cpu.get("nr_throttled"), cpu_throttled_us=cpu.get("throttled_usec"),
            memory_current=read_int(here / "memory.current"),
            memory_peak=read_int(here / "memory.peak"),            # since Linux 5.19
            oom_kills=read_keyed(here / "memory.events").get("oom_kill"),
            pids_current=read_int(here / "pids.current"),
            pids_refused=read_keyed(here / "pids.events").get("max"),
            io_read_bytes=io.get("rbytes"), io_write_bytes=io.get("wbytes"))

    @staticmethod
    def _io_bytes(path: Path) -> dict[str, int]:
        """io.stat's "MAJ:MIN rbytes=N wbytes=N rios=N ..." lines, summed over devices."""
        return read_device_counters(path, lambda fields: [pair.split("=", 1) for pair in fields if "=" in pair],
                                    ("rbytes", "wbytes"))

    def limits_of(self, group: Group) -> dict[str, str]:
        found = {}
        for name in ("memory.max", "cpu.max", "cpu.weight", "pids.max"):
            text = read_text(group.dir("unified") / name)
            if text is not None:
                found[name] = text.strip()
        return found

    def set_frozen(self, group: Group, frozen: bool) -> None:
        write(group.dir("unified") / "cgroup.freeze", "1" if frozen else "0")

    def is_frozen(self, group: Group) -> bool:
        return read_keyed(group.dir("unified") / "cgroup.events").get("frozen") == 1
