"""The v1 backend and the detector against fake cgroupfs trees: which files get which values, in order."""
import errno
import os
import shutil
from pathlib import Path

import pytest

from labcore.errors import BadInput, LabError, NeedsPrivilege, NotFound, NotSupportedHere
from labcore.kernel import cgroups
from labcore.kernel.cgroups import limits as limits_module
from labcore.kernel.cgroups import open_manager, parse_mountinfo
from labcore.kernel.cgroups.limits import Limits, parse_run_limits
from labcore.kernel.cgroups.v1 import V1Manager
from labcore.kernel.cgroups.v2 import V2Manager

V1_MOUNTINFO = """\
22 1 0:21 / /proc rw,nosuid - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
"""
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTINFO = """\
25 19 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""

# What the kernel puts in a new v1 group, per hierarchy (the files the backend reads or writes).
V1_FILES = {
    "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1", "cpu.shares": "1024",
            "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"},
    "cpuacct": {"cpuacct.usage": "0"},
    "memory": {"memory.limit_in_bytes": "9223372036854771712", "memory.memsw.limit_in_bytes":
               "9223372036854771712", "memory.usage_in_bytes": "0", "memory.max_usage_in_bytes": "0",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"},
    "pids": {"pids.max": "max", "pids.current": "0", "pids.events": "max 0\n"},
    "blkio": {"blkio.throttle.read_bps_device": "", "blkio.throttle.write_bps_device": "",
              "blkio.throttle.io_service_bytes": ""},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED"},
}


class FakeV1:
    """A tmp dir as /sys/fs/cgroup with v1 hierarchies: mkdir fills in interface files, writes are logged."""

    def __init__(self, root: Path, monkeypatch, mountinfo: str = HYBRID_MOUNTINFO):
        self.root, self.writes = root, []
        self.manager = open_manager(root=root, mountinfo=mountinfo)
        for directory in set(self.manager.layout.v1.values()):
            directory.mkdir(parents=True)
        real_mkdir, real_write = os.mkdir, cgroups.write

        def mkdir(path, *args, **kwargs):
            real_mkdir(path, *args, **kwargs)
            self.fill(Path(path))

        def write(path, value):
            self.writes.append((str(Path(path).relative_to(root)), str(value)))
            real_write(path, value)

        monkeypatch.setattr(os, "mkdir", mkdir)
        for module in (cgroups, cgroups.v1):
            monkeypatch.setattr(module, "write", write)

    def fill(self, path: Path) -> None:
        for controller, mount in self.manager.layout.v1.items():
            if mount in path.parents:
                for name, text in V1_FILES.get(controller, {}).items():
                    (path / name).write_text(text)
                (path / "cgroup.procs").write_text("")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return FakeV1(tmp_path, monkeypatch)


# --- the detector ------------------------------------------------------------------------------------------

def test_detects_v1_with_cpu_and_cpuacct_mounted_together():
    layout = parse_mountinfo(V1_MOUNTINFO)
    assert layout.kind == "v1" and layout.v2 is None
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert "systemd" not in layout.v1 and "name=systemd" not in layout.v1


def test_detects_hybrid_and_picks_v1():
    layout = parse_mountinfo(HYBRID_MOUNTINFO)
    assert layout.kind == "hybrid"
    assert layout.v2 == Path("/sys/fs/cgroup/unified")
    assert layout.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert isinstance(open_manager(mountinfo=HYBRID_MOUNTINFO), V1Manager)


def test_detects_unified_v2():
    layout = parse_mountinfo(V2_MOUNTINFO)
    assert (layout.kind, layout.v1, layout.v2) == ("v2", {}, Path("/sys/fs/cgroup"))
    assert isinstance(open_manager(mountinfo=V2_MOUNTINFO), V2Manager)


def test_mountinfo_from_a_file_and_escaped_mount_points(tmp_path):
    text = r"35 31 0:32 / /srv/my\040cgroups/memory rw - cgroup cgroup rw,memory" + "\n"
    (tmp_path / "mountinfo").write_text(text)
    layout = cgroups.detect(tmp_path / "mountinfo", root=tmp_path)
    assert layout.v1["memory"] == tmp_path / "srv/my cgroups/memory"


def test_no_cgroups_mounted_is_not_supported_here():
    with pytest.raises(NotSupportedHere, match="no cgroup filesystem"):
        parse_mountinfo("22 1 0:21 / /proc rw - proc proc rw\n")


# --- creating groups ---------------------------------------------------------------------------------------

def test_create_makes_the_group_in_each_hierarchy_below_labcore_and_journals_it(fake, fake_tree_scope):
    group = fake.manager.create("labcore-test", fake_tree_scope)
    assert group.name == "labcore/labcore-test"
    for controller in ("cpu", "cpuacct", "memory", "pids", "blkio", "devices", "freezer"):
        assert group.dirs[controller] == fake.root / f"sys/fs/cgroup/{controller}/labcore/labcore-test"
        assert group.dirs[controller].is_dir()
    recorded = [(e.kind, e.undo, e.args["path"]) for e in fake_tree_scope.entries]
    parents = [str(fake.root / f"sys/fs/cgroup/{c}/labcore") for c in cgroups.v1.CONTROLLERS]
    children = [f"{p}/labcore-test" for p in parents]
    assert recorded == [("cgroup", "rmdir_cgroup", p) for p in parents + children]
    assert recorded[-1][2].endswith("freezer/labcore/labcore-test")     # undone first: thawed first
    assert group.entries == fake_tree_scope.entries


def test_create_makes_the_shared_parent_again_when_another_run_removed_it(fake, fake_tree_scope, monkeypatch):
    """Another run, ending, may find `labcore` empty and rmdir it between our mkdir of it and of our group."""
    freezer = fake.root / "sys/fs/cgroup/freezer/labcore"
    removed = []

    def another_run_ends(name):
        if not removed:
            shutil.rmtree(freezer)         # the fake tree's files; the kernel's rmdir needs none of this
            removed.append(name)
    monkeypatch.setattr(fake.manager, "prepare_parent", another_run_ends)
    group = fake.manager.create("labcore-test", fake_tree_scope)
    assert removed and group.dirs["freezer"].is_dir()
    assert [entry.args["path"] for entry in group.entries].count(str(freezer)) == 2   # journaled again


def test_cpu_and_cpuacct_mounted_together_make_one_directory(tmp_path, monkeypatch, fake_tree_scope):
    fake = FakeV1(tmp_path, monkeypatch, V1_MOUNTINFO)
    group = fake.manager.create("labcore-x", fake_tree_scope)
    assert group.dirs["cpu"] == group.dirs["cpuacct"]
    assert len(fake_tree_scope.entries) == 2 * 6


def test_nested_group_goes_below_its_parent(fake, fake_tree_scope):
    outer = fake.manager.create("labcore-outer", fake_tree_scope)
    inner = fake.manager.create("labcore-inner", fake_tree_scope, parent=outer)
    assert inner.name == "labcore/labcore-outer/labcore-inner"
    assert inner.dirs["memory"].parent == outer.dirs["memory"]
    assert [g.name for g in fake.manager.groups()] == [
        "labcore", "labcore/labcore-outer", "labcore/labcore-outer/labcore-inner"]


def test_a_name_without_the_prefix_is_refused_before_mkdir(fake, fake_tree_scope):
    with pytest.raises(BadInput):
        fake.manager.create("mine", fake_tree_scope)
    assert not fake_tree_scope.entries and not (fake.root / "sys/fs/cgroup/memory/labcore").exists()


# --- limits, processes, stats ------------------------------------------------------------------------------

def test_apply_writes_the_v1_files_in_order(fake, fake_tree_scope, monkeypatch):
    monkeypatch.setattr(limits_module, "block_device_numbers", lambda path: (254, 0))
    limits = parse_run_limits(memory="64m", cpus="0.5", cpu_shares="512", pids_limit="10",
                              device_read_bps=["/dev/vda:1mb"], device_write_bps=["/dev/vda:2mb"],
                              device_cgroup_rule=["c 1:3 rwm"])
    group = fake.manager.create("labcore-c1", fake_tree_scope)
    fake.writes.clear()
    fake.manager.apply(group, limits)
    g = "sys/fs/cgroup/{}/labcore/labcore-c1/{}"
    expected = [
        (g.format("memory", "memory.limit_in_bytes"), "67108864"),
        (g.format("memory", "memory.memsw.limit_in_bytes"), "67108864"),        # no swap on top
        (g.format("cpu", "cpu.cfs_period_us"), "100000"),
        (g.format("cpu", "cpu.cfs_quota_us"), "50000"),
        (g.format("cpu", "cpu.shares"), "512"),
        (g.format("pids", "pids.max"), "10"),
        (g.format("blkio", "blkio.throttle.read_bps_device"), "254:0 1048576"),
        (g.format("blkio", "blkio.throttle.write_bps_device"), "254:0 2097152"),
        (g.format("devices", "devices.deny"), "a"),
    ]
    assert fake.writes[:len(expected)] == expected
    rules = [value for path, value in fake.writes if path.endswith("devices.allow")]
    assert rules[:3] == ["c *:* m", "b *:* m", "c 1:3 rwm"] and rules[-1] == "c 1:3 rwm"
    assert (group.dirs["memory"] / "memory.limit_in_bytes").read_text() == "67108864"


def test_memory_swap_sets_memsw(fake, fake_tree_scope):
    group = fake.manager.create("labcore-s", fake_tree_scope)
    writes = fake.manager.apply(group, parse_run_limits(memory="64m", memory_swap="128m"))
    assert [(p.name, v) for p, v in writes] == [("memory.limit_in_bytes", "67108864"),
                                                ("memory.memsw.limit_in_bytes", "134217728")]


def test_memory_swap_without_swap_accounting_is_not_supported(fake, fake_tree_scope):
    group = fake.manager.create("labcore-s", fake_tree_scope)
    (group.dirs["memory"] / "memory.memsw.limit_in_bytes").unlink()
    assert [p.name for p, _ in fake.manager.apply(group, Limits(memory=64 << 20))] == ["memory.limit_in_bytes"]
    with pytest.raises(NotSupportedHere, match="swap"):
        fake.manager.apply(group, Limits(memory=64 << 20, memory_swap=128 << 20))


def test_add_writes_the_pid_to_every_hierarchy(fake, fake_tree_scope):
    group = fake.manager.create("labcore-p", fake_tree_scope)
    fake.writes.clear()
    fake.manager.add(group, 4242)
    assert sorted(path for path, _ in fake.writes) == sorted(
        f"sys/fs/cgroup/{c}/labcore/labcore-p/cgroup.procs" for c in cgroups.v1.CONTROLLERS)
    assert {value for _, value in fake.writes} == {"4242"}


def test_a_shim_moves_itself_through_the_tasks_file_of_each_hierarchy_of_its_group(fake, fake_tree_scope,
                                                                                   monkeypatch):
    group = fake.manager.create("labcore-p", fake_tree_scope)
    monkeypatch.setattr(cgroups.v1.procfs, "kernel_version", lambda: (5, 11))
    files = fake.manager.files_to_move_oneself(group)
    assert sorted(str(path.relative_to(fake.root)) for path in files) == sorted(
        f"sys/fs/cgroup/{c}/labcore/labcore-p/tasks" for c in cgroups.v1.CONTROLLERS)
    monkeypatch.setattr(cgroups.v1.procfs, "kernel_version", lambda: (5, 10))
    assert fake.manager.files_to_move_oneself(group) is None            # before 5.11: the overlapped Move
    assert fake.manager.directory_to_fork_into(group) is None           # clone3 takes only a v2 group


def test_stats_read_the_v1_files(fake, fake_tree_scope):
    group = fake.manager.create("labcore-st", fake_tree_scope)
    d = group.dirs
    (d["cpuacct"] / "cpuacct.usage").write_text("2500000000\n")
    (d["cpu"] / "cpu.stat").write_text("nr_periods 10\nnr_throttled 7\nthrottled_time 350000000\n")
    (d["memory"] / "memory.usage_in_bytes").write_text("1048576\n")
    (d["memory"] / "memory.max_usage_in_bytes").write_text("33554432\n")
    (d["memory"] / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (d["pids"] / "pids.current").write_text("3\n")
    (d["pids"] / "pids.events").write_text("max 5\n")
    (d["blkio"] / "blkio.throttle.io_service_bytes").write_text(
        "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 0\n254:0 Total 12288\n8:0 Read 4096\nTotal 16384\n")
    stats = fake.manager.stats(group)
    assert stats == cgroups.Stats(cpu_usage_us=2_500_000, cpu_periods=10, cpu_throttled=7,
                                  cpu_throttled_us=350_000, memory_current=1 << 20, memory_peak=32 << 20,
                                  oom_kills=2, pids_current=3, pids_refused=5, io_read_bytes=8192,
                                  io_write_bytes=8192)


def test_freeze_and_thaw_write_freezer_state(fake, fake_tree_scope):
    group = fake.manager.create("labcore-f", fake_tree_scope)
    assert fake.manager.freeze(group) is True
    assert (group.dirs["freezer"] / "freezer.state").read_text() == "FROZEN"
    assert fake.manager.thaw(group) is True
    assert (group.dirs["freezer"] / "freezer.state").read_text() == "THAWED"


# --- errors that teach -------------------------------------------------------------------------------------

def test_a_refused_write_is_needs_privilege_naming_the_file(fake, fake_tree_scope, monkeypatch):
    group = fake.manager.create("labcore-e", fake_tree_scope)
    refusal = PermissionError(errno.EACCES, "Permission denied")

    def refuse(*args):
        raise refusal
    with monkeypatch.context() as patched, pytest.raises(NeedsPrivilege) as caught:
        patched.setattr(os, "open", refuse)              # only for the write: the fixtures' teardown opens files
        cgroups.write(group.dirs["memory"] / "memory.limit_in_bytes", 1 << 20)
    assert caught.value.path.endswith("memory/labcore/labcore-e/memory.limit_in_bytes")
    assert caught.value.__cause__ is refusal and "root" in caught.value.fix


def test_a_missing_interface_file_is_not_supported_here(tmp_path):
    with pytest.raises(NotSupportedHere, match="no memory.peak") as caught:
        cgroups.write(tmp_path / "memory.peak", 1)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_undo_leaves_a_parent_that_still_holds_child_groups(tmp_path):
    from labcore.kernel.cgroups import undo_rmdir_cgroup
    parent = tmp_path / "labcore"
    (parent / "labcore-other-run").mkdir(parents=True)
    undo_rmdir_cgroup(str(parent))
    assert (parent / "labcore-other-run").is_dir()
    (parent / "labcore-other-run").rmdir()
    undo_rmdir_cgroup(str(parent))
    assert not parent.exists()


def test_a_busy_v1_hierarchy_is_not_a_privilege_refusal(monkeypatch):
    import errno

    from labcore.errors import LabError
    from labcore.kernel.cgroups import v1 as cgroup_v1
    from labcore.lessons import control_groups

    def busy(controllers):
        raise LabError("mount(cgroup, net_cls,net_prio) failed: Device or resource busy", errno=errno.EBUSY)

    monkeypatch.setattr(cgroup_v1, "read_hierarchy_root", busy)
    step = control_groups.no_net_controller()
    if step.permitted:      # a host with a cgroup2 tree: its answer stands, and the kernel's refusal is evidence
        assert "busy" in str(step.after["the hierarchy's files"]) and step.data["files"] == {}
    else:                   # no cgroup2 tree: nothing to show, refused, and not for want of privilege
        assert "busy" in step.reason and "needs privilege" not in step.reason.lower()
        assert "mounted with other options" in step.reason


def test_the_net_controller_note_follows_the_files_found():
    from labcore.lessons import control_groups
    assert control_groups.net_controller_note([]).startswith("no file takes a rate")
    assert "net_cls.rate_bps" in control_groups.net_controller_note(["net_cls.rate_bps"])


def test_an_exec_finds_only_its_containers_own_groups_and_needs_no_cgroupfs_where_there_are_none(monkeypatch):
    """From pid 1's /proc/PID/cgroup: the groups named labcore-<id> (cpu,cpuacct share one directory), not a
    labcore group pid 1 merely inherited; and where there is none, the mount table is never read (a hub's
    container may have no cgroupfs at all, and `labcore exec` must still work there)."""
    text = ("4:cpu,cpuacct:/labcore/labcore-abc\n3:devices:/labcore/labcore-pod\n2:pids:/labcore/labcore-abc\n"
            "0::/user.slice\n")
    monkeypatch.setattr(cgroups.procfs, "cgroups", lambda pid: cgroups.procfs.parse_cgroup(text))
    layout = cgroups.Layout("v1", {c: Path(f"/fake/{c}") for c in ("cpu", "cpuacct", "devices", "pids")})
    monkeypatch.setattr(cgroups, "detect", lambda: layout)
    group = cgroups.container_group_of(42, "abc")
    assert group.name == "labcore/labcore-abc" and group.dirs == {
        "cpu": Path("/fake/cpu/labcore/labcore-abc"), "cpuacct": Path("/fake/cpuacct/labcore/labcore-abc"),
        "pids": Path("/fake/pids/labcore/labcore-abc")}

    def no_cgroupfs():
        raise NotSupportedHere("no cgroup filesystem is mounted")
    monkeypatch.setattr(cgroups, "detect", no_cgroupfs)
    assert cgroups.container_group_of(42, "other") is None


def test_an_exec_into_a_pid_1_that_has_just_exited_is_a_lab_error_naming_its_proc_file():
    # the record still says running while the monitor reaps pid 1: the exec's joiner must say why it stopped
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    with pytest.raises(NotFound, match=f"/proc/{gone}/cgroup"):
        cgroups.container_group_of(gone, "abc")


def test_a_group_whose_tasks_never_leave_is_reported_after_the_deadline_and_a_refusal_at_once(tmp_path,
                                                                                               monkeypatch):
    from labcore.kernel.cgroups import undo_rmdir_cgroup
    group = tmp_path / "labcore-stuck"
    group.mkdir()
    tries = []

    def rmdir(path, code=errno.EBUSY):
        tries.append(path)
        raise OSError(code, os.strerror(code), path)
    monkeypatch.setattr(cgroups, "REMOVE_SECONDS", 0.05)
    monkeypatch.setattr(cgroups.os, "rmdir", rmdir)
    with pytest.raises(LabError, match=f"rmdir on {group}") as busy:
        undo_rmdir_cgroup(str(group))
    assert busy.value.errno == errno.EBUSY and len(tries) > 1          # retried while the tasks might leave
    tries.clear()
    monkeypatch.setattr(cgroups.os, "rmdir", lambda path: rmdir(path, errno.EACCES))
    with pytest.raises(NeedsPrivilege):
        undo_rmdir_cgroup(str(group))
    assert len(tries) == 1                                               # a refusal does not change by waiting
