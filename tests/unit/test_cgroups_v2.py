"""The v2 backend against a fake unified tree that follows the kernel's top-down rule for controllers."""
import os
import struct
from pathlib import Path

import pytest

from labcore.errors import NotSupportedHere
from labcore.kernel import cgroups
from labcore.kernel.cgroups import limits as limits_module
from labcore.kernel.cgroups import open_manager
from labcore.kernel.cgroups.limits import Limits, parse_run_limits
from labcore.kernel.cgroups.v2 import V2Manager

V2_MOUNTINFO = "25 19 0:22 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
ROOT_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"

# Interface files per controller in a new group (cgroup-v2.rst); core files are always there.
CORE = {"cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.freeze": "0",
        "cgroup.events": "populated 0\nfrozen 0\n"}
V2_FILES = {
    "cpu": {"cpu.max": "max 100000", "cpu.weight": "100",
            "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\n"
                        "throttled_usec 0\n"},
    "memory": {"memory.max": "max", "memory.swap.max": "max", "memory.current": "0", "memory.peak": "0",
               "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"},
    "pids": {"pids.max": "max", "pids.current": "0", "pids.events": "max 0\n"},
    "io": {"io.max": "", "io.stat": ""},
}


class FakeV2:
    """A tmp dir as a cgroup2 mount: a new group gets the files of the controllers its parent enables;
    "+ctrl" writes to cgroup.subtree_control add up, as in the kernel. Every write is logged."""

    def __init__(self, root: Path, monkeypatch, root_enabled: str = ""):
        self.root, self.writes = root, []
        self.mount = root / "sys/fs/cgroup"
        self.mount.mkdir(parents=True)
        (self.mount / "cgroup.controllers").write_text(ROOT_CONTROLLERS + "\n")
        (self.mount / "cgroup.subtree_control").write_text(root_enabled)
        (self.mount / "cgroup.procs").write_text("1\n")
        self.manager = open_manager(root=root, mountinfo=V2_MOUNTINFO)
        real_mkdir, real_write = os.mkdir, cgroups.write

        def mkdir(path, *args, **kwargs):
            real_mkdir(path, *args, **kwargs)
            if self.mount in Path(path).parents:
                self.fill(Path(path))

        def write(path, value):
            path, value = Path(path), str(value)
            self.writes.append((str(path.relative_to(self.mount)), value))
            if path.name == "cgroup.subtree_control":
                value = " ".join(sorted(set(path.read_text().split()) | {value.lstrip("+")}))
            real_write(path, value)
            if path.name == "cgroup.subtree_control":      # existing children gain the files at once
                for child in filter(Path.is_dir, path.parent.iterdir()):
                    self.fill(child)

        monkeypatch.setattr(os, "mkdir", mkdir)
        for module in (cgroups, cgroups.v2):
            monkeypatch.setattr(module, "write", write)

    def fill(self, path: Path) -> None:
        enabled = (path.parent / "cgroup.subtree_control").read_text().split()
        (path / "cgroup.controllers").write_text(" ".join(enabled))
        for name, text in CORE.items():
            if not (path / name).exists():
                (path / name).write_text(text)
        for controller in enabled:
            for name, text in V2_FILES.get(controller, {}).items():
                if not (path / name).exists():
                    (path / name).write_text(text)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return FakeV2(tmp_path, monkeypatch)


def test_open_manager_on_a_unified_host_is_v2(fake):
    assert isinstance(fake.manager, V2Manager) and fake.manager.version == "v2"


def test_create_enables_controllers_top_down_and_journals_parent_and_group(fake, fake_tree_scope):
    group = fake.manager.create("labcore-c1", fake_tree_scope)
    assert group.dirs == {"unified": fake.mount / "labcore/labcore-c1"}
    assert fake.writes == [("cgroup.subtree_control", f"+{c}") for c in ("cpu", "memory", "pids", "io")] + [
        ("labcore/cgroup.subtree_control", f"+{c}") for c in ("cpu", "memory", "pids", "io")]
    assert (group.path / "memory.max").exists() and (group.path / "io.max").exists()
    assert [(e.kind, e.undo, e.args["path"]) for e in fake_tree_scope.entries] == [
        ("cgroup", "rmdir_cgroup", str(fake.mount / "labcore")),
        ("cgroup", "rmdir_cgroup", str(fake.mount / "labcore/labcore-c1"))]


def test_controllers_already_enabled_are_not_written_again(tmp_path, monkeypatch, fake_tree_scope):
    fake = FakeV2(tmp_path, monkeypatch, root_enabled="cpu io memory pids")
    fake.manager.create("labcore-a", fake_tree_scope)
    fake.writes.clear()
    fake.manager.create("labcore-b", fake_tree_scope)
    assert fake.writes == []            # the root and labcore already pass all four down


def test_the_labcore_parent_holds_no_processes(fake, fake_tree_scope):
    group = fake.manager.create("labcore-c1", fake_tree_scope)
    fake.manager.add(group, 4242)
    assert fake.writes[-1] == ("labcore/labcore-c1/cgroup.procs", "4242")
    assert (fake.mount / "labcore/cgroup.procs").read_text() == ""


def test_apply_writes_the_v2_files(fake, fake_tree_scope, monkeypatch):
    monkeypatch.setattr(limits_module, "block_device_numbers", lambda path: (254, 0))
    limits = parse_run_limits(memory="64m", cpus="0.5", cpu_shares="512", pids_limit="10",
                              device_read_bps=["/dev/vda:1mb"], device_write_bps=["/dev/vda:2mb"])
    group = fake.manager.create("labcore-c1", fake_tree_scope)
    fake.writes.clear()
    fake.manager.apply(group, limits)
    g = "labcore/labcore-c1/"
    assert fake.writes == [
        (g + "memory.max", "67108864"),
        (g + "memory.swap.max", "0"),                   # no swap on top of the memory limit
        (g + "cpu.max", "50000 100000"),
        (g + "cpu.weight", "20"),                       # runc: 1 + (512 - 2) * 9999 / 262142
        (g + "pids.max", "10"),
        (g + "io.max", "254:0 rbps=1048576 wbps=2097152"),
    ]


def test_memory_swap_is_swap_max_on_v2(fake, fake_tree_scope):
    group = fake.manager.create("labcore-s", fake_tree_scope)
    writes = fake.manager.apply(group, parse_run_limits(memory="64m", memory_swap="96m"))
    assert [(p.name, v) for p, v in writes] == [("memory.max", "67108864"), ("memory.swap.max", "33554432")]


def test_device_rules_become_a_bpf_program_loaded_and_attached_to_the_group(fake, fake_tree_scope):
    from labcore.kernel import syscalls
    from labcore.kernel.cgroups import devices
    limits = parse_run_limits(device_cgroup_rule=["c 1:3 rwm"])
    with syscalls.use(syscalls.Recorder()) as kernel:
        fake.manager.create_for_container("abc123", limits, fake_tree_scope)
    assert kernel.names() == ["bpf", "bpf"]
    (load_command, load_attr, _), (attach_command, attach_attr, _) = (args for _, args in kernel.calls)
    assert (load_command, attach_command) == (devices.BPF_PROG_LOAD, devices.BPF_PROG_ATTACH)
    assert struct.unpack_from("<II", load_attr) == (devices.BPF_PROG_TYPE_CGROUP_DEVICE,
                                                    len(devices.program(limits.devices)) // 8)
    assert struct.unpack_from("<III", attach_attr)[2] == devices.BPF_CGROUP_DEVICE


def test_a_device_list_bpf_cannot_express_is_refused_before_anything_is_created(fake, fake_tree_scope):
    from labcore.kernel.cgroups.limits import DENY_ALL, DeviceRule
    rules = (DENY_ALL, DeviceRule("c", "1", "3", "rwm"), DeviceRule("c", "1", "3", "r", False))
    with pytest.raises(NotSupportedHere, match="deny all"):
        fake.manager.create_for_container("abc123", Limits(devices=rules), fake_tree_scope)
    assert not fake_tree_scope.entries and not (fake.mount / "labcore").exists()


def test_create_for_container_names_limits_and_journals(fake, fake_tree_scope):
    group = fake.manager.create_for_container("abc123", Limits(pids=5), fake_tree_scope)
    assert group.name == "labcore/labcore-abc123"
    assert (group.path / "pids.max").read_text() == "5"
    assert len(fake_tree_scope.entries) == 2


def test_stats_read_the_v2_files(fake, fake_tree_scope):
    group = fake.manager.create("labcore-st", fake_tree_scope)
    d = group.path
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2400000\nsystem_usec 100000\n"
                                "nr_periods 10\nnr_throttled 7\nthrottled_usec 350000\n")
    (d / "memory.current").write_text("1048576\n")
    (d / "memory.peak").write_text("33554432\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
    (d / "pids.current").write_text("3\n")
    (d / "pids.events").write_text("max 5\n")
    (d / "io.stat").write_text("254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n"
                               "8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n")
    assert fake.manager.stats(group) == cgroups.Stats(
        cpu_usage_us=2_500_000, cpu_periods=10, cpu_throttled=7, cpu_throttled_us=350_000,
        memory_current=1 << 20, memory_peak=32 << 20, oom_kills=1, pids_current=3, pids_refused=5,
        io_read_bytes=8192, io_write_bytes=8192)


def test_freeze_writes_cgroup_freeze_and_reads_cgroup_events(fake, fake_tree_scope):
    group = fake.manager.create("labcore-f", fake_tree_scope)
    fake.manager.set_frozen(group, True)
    assert (group.path / "cgroup.freeze").read_text() == "1"
    assert fake.manager.is_frozen(group) is False         # until the kernel reports it in cgroup.events
    (group.path / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert fake.manager.is_frozen(group) is True
    (group.path / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert fake.manager.thaw(group) is True
    assert (group.path / "cgroup.freeze").read_text() == "0"


def test_limits_of_and_tree_dot_read_the_live_tree(fake, fake_tree_scope):
    from labcore.lessons.control_groups import tree_dot
    outer = fake.manager.create("labcore-outer", fake_tree_scope)
    inner = fake.manager.create("labcore-inner", fake_tree_scope, parent=outer)
    fake.manager.apply(outer, Limits(memory=64 << 20))
    fake.manager.apply(inner, Limits(memory=128 << 20))
    assert fake.manager.limits_of(inner)["memory.max"] == "134217728"
    dot = tree_dot(fake.manager)
    assert '"labcore/labcore-outer" -> "labcore/labcore-outer/labcore-inner"' in dot
    assert "memory.max = 67108864" in dot and "cpu.max" not in dot       # unlimited values are not drawn


# --- a user's groups: below the subtree an administrator delegated (cgroup-v2.rst, "Delegation") ----------

def delegated_tree(fake, monkeypatch, passed_down: str = "cpu io memory pids"):
    """/lab-student, delegated to the user (its files theirs), the user's shell in /lab-student/session."""
    (fake.mount / "cgroup.subtree_control").write_text(passed_down)
    for path in (fake.mount / "lab-student", fake.mount / "lab-student/session"):
        os.mkdir(path)
    monkeypatch.setattr(cgroups, "may_delegate", lambda directory: directory.name in ("lab-student", "session"))
    return cgroups.detect(V2_MOUNTINFO, fake.root)


def test_a_user_gets_the_delegated_parent_of_its_own_cgroup_and_makes_groups_there(fake, monkeypatch,
                                                                                 fake_tree_scope):
    layout = delegated_tree(fake, monkeypatch)
    delegation = cgroups.find_delegation(layout, "0::/lab-student/session\n", euid=1001)
    assert delegation.allowed and delegation.base == "lab-student"       # not session: it holds the shell
    manager = open_manager(root=fake.root, mountinfo=V2_MOUNTINFO, delegation=delegation)
    fake.writes.clear()
    group = manager.create("labcore-c1", fake_tree_scope)
    assert group.path == fake.mount / "lab-student/labcore/labcore-c1"
    assert all(path.startswith("lab-student/") for path, _ in fake.writes)   # never the root's files


def test_nothing_delegated_says_so_and_how_an_administrator_delegates(fake, monkeypatch):
    layout = cgroups.detect(V2_MOUNTINFO, fake.root)
    monkeypatch.setattr(cgroups, "may_delegate", lambda directory: False)
    found = cgroups.find_delegation(layout, "0::/user.slice/session-3.scope\n", euid=1001)
    assert not found.allowed and "belong to root" in found.why_not
    assert "systemd-run --user --scope -p Delegate=yes" in found.fix and "cgroup.subtree_control" in found.fix
    manager = open_manager(root=fake.root, mountinfo=V2_MOUNTINFO, delegation=found)
    assert manager.refusal() == {"why": found.why_not, "fix": found.fix}


def test_a_delegated_subtree_without_controllers_is_no_use_and_says_which_are_missing(fake, monkeypatch):
    layout = delegated_tree(fake, monkeypatch)
    (fake.mount / "lab-student/cgroup.controllers").write_text("pids\n")
    found = cgroups.find_delegation(layout, "0::/lab-student/session\n", euid=1001)
    assert not found.allowed and "cpu, memory" in found.why_not and "+cpu +memory" in found.fix


def test_root_makes_its_groups_at_the_top_and_v1_delegates_nothing():
    v1 = cgroups.Layout("v1", {"memory": cgroups.Path("/sys/fs/cgroup/memory")}, None)
    assert cgroups.find_delegation(v1, "4:memory:/user.slice\n", euid=0).base == ""
    found = cgroups.find_delegation(v1, "4:memory:/user.slice\n", euid=1001)
    assert not found.allowed and "cgroup v1" in found.fix


def test_pid_1_is_forked_into_the_groups_directory_where_clone3_takes_a_cgroup(fake, fake_tree_scope, monkeypatch):
    """CLONE_INTO_CGROUP came in Linux 5.7; Docker's default seccomp profile answers ENOSYS for clone3. Where
    either rules it out, None: the overlapped Move. v1 has no such directory, and v2 no tasks file."""
    group = fake.manager.create("labcore-f", fake_tree_scope)
    monkeypatch.setattr(cgroups.v2.procfs, "kernel_version", lambda: (5, 7))
    monkeypatch.setattr(cgroups.v2.syscalls, "clone3_allowed", lambda: True)
    assert fake.manager.directory_to_fork_into(group) == fake.mount / "labcore/labcore-f"
    assert fake.manager.files_to_move_oneself(group) is None
    monkeypatch.setattr(cgroups.v2.syscalls, "clone3_allowed", lambda: False)
    assert fake.manager.directory_to_fork_into(group) is None
    monkeypatch.setattr(cgroups.v2.syscalls, "clone3_allowed", lambda: True)
    monkeypatch.setattr(cgroups.v2.procfs, "kernel_version", lambda: (5, 6))
    assert fake.manager.directory_to_fork_into(group) is None
