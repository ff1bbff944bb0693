"""Each controller enforced by the real kernel, through the manager, so these run unchanged on v1, hybrid
and v2 hosts: the evidence is what the kernel measured and did, not what the lab wrote."""
import os
from pathlib import Path

import pytest

from labcore.errors import NotSupportedHere
from labcore.kernel import journal
from labcore.kernel.cgroups import can_limit, detect, open_manager
from labcore.kernel.cgroups.limits import parse_run_limits
from labcore.lessons import control_groups

# Root, or a user owning a delegated cgroup v2 subtree (tests/vm runs these as such a user in the guest).
pytestmark = pytest.mark.skipif(not can_limit(), reason=(
    f"needs root or a cgroup v2 subtree delegated to uid {os.geteuid()} (cgroup-v2.rst, 'Delegation'); "
    "see `labcore doctor`"))
# Decided at collection, not inside a test: a skipped test never reaches ``no_cgroup_left``, which would
# otherwise fail it for making no cgroup.
try:
    LAYOUT = detect().kind
except NotSupportedHere:
    LAYOUT = "none"
# The kernel charges memory to a cgroup MEMCG_CHARGE_BATCH (64) pages at a time (include/linux/memcontrol.h,
# since Linux 6.0). page_counter_try_charge (mm/page_counter.c) adds a batch to the child's counter and its
# high-water mark first, then to each parent; when a parent refuses, the batch is taken back but the child's
# peak keeps it. So a child's peak may pass its parent's limit by up to one batch (62 pages, seen in the
# cgroup v2 guest).
CHARGE_BATCH = 64 * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(autouse=True)
def no_cgroup_left(monkeypatch):
    """Every cgroup a test journals must be gone afterwards (only ours: other runs may share the host)."""
    made = []
    record = journal.Journal.record

    def spy(self, kind, name, undo, **args):
        if kind == "cgroup":
            made.append(name)
        return record(self, kind, name, undo, **args)
    monkeypatch.setattr(journal.Journal, "record", spy)
    yield made
    children = [path for path in made if Path(path).name != "labcore"]
    assert children, "the test made no cgroup"
    assert not [path for path in children if os.path.exists(path)], "cgroups left behind"


def test_memory_limit_oom_kills_the_allocation_and_nothing_else():
    step = control_groups.limit_memory("32m", allocate_mb=100)
    assert step.data["exit"] == 137 and step.data["killed"]
    assert step.data["oom_kills"] >= 1
    assert step.data["peak"] <= 32 << 20
    assert step.data["allocated_mb"] is None             # it never reached its report


def test_memory_under_the_limit_is_left_alone():
    step = control_groups.limit_memory("64m", allocate_mb=16)
    assert step.data["exit"] == 0 and step.data["oom_kills"] == 0 and step.data["allocated_mb"] == 16


def test_pids_limit_makes_fork_fail_inside_but_not_on_the_host():
    step = control_groups.limit_pids(10)
    assert step.data["fork_failed"] and step.data["errno"] == "EAGAIN"
    assert step.data["pids_current"] == 10 and step.data["forked"] == 9     # 9 children + the forker
    assert step.data["host_can_fork"]


# No timing thresholds here (they flake on a busy or emulated CPU): the mechanism, read from the kernel's own
# counters and files. How much CPU each group got is measured by `python -m bench cgroups`.

def test_cpu_quota_throttles_a_busy_loop():
    step = control_groups.limit_cpu(0.25, seconds=1.0)
    before, after = step.data["before"], step.data["after"]
    assert step.data["quota"] == "25000 100000" or step.data["quota"] == "25000", step   # cpu.max / cfs_quota_us
    assert after["cpu_periods"] > before["cpu_periods"] and after["cpu_throttled"] > before["cpu_throttled"]
    assert after["cpu_throttled_us"] > before["cpu_throttled_us"]


def test_cpu_shares_are_written_and_both_groups_run_on_one_cpu():
    step = control_groups.share_cpu((1024, 256), seconds=1.0)
    heavier, lighter = step.data["weights"]                  # cpu.shares 1024 and 256, or cpu.weight on v2
    assert heavier > lighter and all(used > 0 for used in step.data["used"])


def test_freezer_stops_a_counter_and_thaw_restarts_it():
    step = control_groups.freeze_group(0.5)
    running, at_freeze, later, resumed = step.data["counts"]
    assert step.data["frozen"] and step.data["thawed"]
    assert later == at_freeze and resumed > later


def test_hierarchy_parent_limit_caps_the_child():
    step = control_groups.nest_groups("64m", "128m", allocate_mb=100)
    assert step.data["exit"] == 137
    assert step.data["peak"] <= (64 << 20) + CHARGE_BATCH          # see CHARGE_BATCH
    assert "labcore-inner" in step.data["dot"] and "->" in step.data["dot"]


def test_io_throttle_is_written_and_the_group_is_charged_for_the_bytes():
    step = control_groups.throttle_io("2mb", megabytes=2)
    if not step.permitted:
        pytest.skip(step.reason)
    assert all(f"{step.data['bps']}" in value for _, value in step.data["writes"]), step
    assert step.data["read_bytes"] >= 2 << 20 and step.data["write_bytes"] >= 2 << 20


def test_device_rule_makes_open_fail_with_eperm():
    """v1: a line in devices.deny; v2: a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the group."""
    step = control_groups.deny_device("/dev/null")
    if not step.permitted:          # v2 as a user: bpf(BPF_PROG_LOAD) of a device program needs root (bpf(2))
        pytest.skip(step.reason)
    assert step.data["before"]["opened"] and step.data["after"]["errno"] == "EPERM"
    assert step.data["host_opens"]


@pytest.mark.skipif(LAYOUT != "v2", reason=f"this host is {LAYOUT}: it has devices.deny files (test above)")
@pytest.mark.skipif(os.geteuid() != 0, reason="loading a BPF_PROG_TYPE_CGROUP_DEVICE program needs root (bpf(2))")
def test_on_v2_a_group_has_no_device_files_and_dockers_list_is_a_bpf_program():
    from labcore.kernel.cgroups.limits import DEFAULT_ALLOWED, DENY_ALL, Limits
    with control_groups.Run() as run:                  # the kernel's own answer: no file to write a rule to
        group = run.group("devices")
        assert (group.path / "cgroup.procs").exists() and not list(group.path.glob("devices.*"))
        run.manager.apply(group, Limits(devices=(DENY_ALL, *DEFAULT_ALLOWED)))
        null = run.start(group, "open_device", "/dev/null").result() or {}
        other = next(path for path in ("/dev/kmsg", "/dev/mem", "/dev/loop-control") if os.path.exists(path))
        refused = run.start(group, "open_device", other).result() or {}
    assert null.get("opened") and refused.get("errno") == "EPERM"


def test_usage_report_accounts_cpu_memory_and_pids():
    step = control_groups.report_usage(seconds=1.0)
    last = step.data["samples"][-1][1]
    assert last["cpu_usage_us"] > 0 and last["pids_current"] == 2
    assert 40 << 20 <= last["memory_current"] <= 128 << 20


def test_container_group_is_made_limited_joined_and_removed():
    """The `labcore run` path: create_for_container, add the child's pid, then the scope removes it all."""
    manager = open_manager()
    with journal.Scope() as scope:
        group = manager.create_for_container("labcore-test-run", parse_run_limits(memory="64m", pids_limit="20"),
                                             scope)
        child = control_groups.Workload(scope, "alloc", 0, 30)
        manager.add(group, child.pid)
        assert manager.procs(group) == [child.pid]
        assert "/labcore/labcore-test-run" in Path(f"/proc/{child.pid}/cgroup").read_text()
        assert manager.limits_of(group)["pids.max"] == "20"
        manager.remove(group, scope)                      # as `docker rm` would, before the scope ends
        assert not group.path.exists() and [e.kind for e in scope.entries] == ["process"]
    assert child.proc.wait(5) == -9                       # removing the group killed what was inside
    child.stop()


def managers_to_start_in():
    """This host's manager; on a hybrid host also the v2 backend on its controller-less cgroup2 mount, where
    clone3's CLONE_INTO_CGROUP works as on a v2 host (the device list is a BPF program there too). Each is
    skipped here, at collection, where it cannot start a container whose pid 1 is born in its group: a test
    skipped from inside would fail ``no_cgroup_left``."""
    from labcore.kernel.cgroups import Group, Layout
    from labcore.kernel.cgroups.v2 import V2Manager
    from labcore.lessons import hosts
    if LAYOUT == "none" or not can_limit():
        return []
    found = [(LAYOUT, open_manager)]
    if LAYOUT == "hybrid" and os.geteuid() == 0:
        found.append(("v2-on-hybrid", lambda: V2Manager(Layout("v2", {}, detect().v2))))
    userns_refused = os.geteuid() != 0 and hosts.try_user_namespace()
    params = []
    for name, make_manager in found:
        manager = make_manager()
        probe = Group("labcore-probe", manager.hierarchy_dirs("labcore-probe"))
        why = None
        if userns_refused:
            why = (f"a rootless container needs a user namespace: unshare(CLONE_NEWUSER) gives {userns_refused} "
                   f"here (tests/vm's guest runs this in a chroot)")
        elif not (manager.files_to_move_oneself(probe) or manager.directory_to_fork_into(probe)):
            why = (f"pid 1 is born in its group on v1 from Linux 5.11 and on v2 from 5.7 where clone3 is allowed; "
                   f"this host: {manager.version}, {os.uname().release}")
        params.append(pytest.param(make_manager, id=name, marks=[pytest.mark.skip(reason=why)] if why else []))
    return params


@pytest.mark.parametrize("make_manager", managers_to_start_in())
def test_pid_1_is_born_in_its_group_and_the_caller_writes_no_cgroup_procs(monkeypatch, busybox_image,
                                                                          make_manager):
    """No pid written to cgroup.procs (the wait it costs, labcore.kernel.cgroups.Move): on v1 the shim writes
    "0" to its group's tasks files itself; on v2 it forks pid 1 straight into the group (clone3,
    CLONE_INTO_CGROUP). Either way pid 1 is in the group from its birth, as the host's /proc/PID/cgroup says,
    and inside, its cgroup namespace shows that group as "/"."""
    from labcore.kernel import cgroups
    from labcore.runtime import container
    manager = make_manager()
    monkeypatch.setattr(cgroups, "open_manager", lambda: manager)
    written, real_write = [], cgroups.write
    monkeypatch.setattr(cgroups, "write", lambda path, value: (written.append(path.name), real_write(path, value)))
    # As root Docker's device list makes the group; rootless (a delegated v2 subtree) a limit has to.
    spec = container.Spec("busybox", ["sh", "-c", "cat /proc/self/cgroup && sleep 1"], rm=True, network="none",
                          limits={} if os.geteuid() == 0 else {"pids_limit": "64"})
    seen = []
    result = container.run(spec, on_start=lambda box: seen.append(Path(f"/proc/{box.pid}/cgroup").read_text()))
    assert result.exit_code == 0 and "cgroup.procs" not in written, written
    group_line = [line for line in seen[0].splitlines() if line.endswith(f"/labcore-{spec.id}")]
    inside = result.stdout.decode().split()
    assert group_line and inside and all(line.endswith(":/") for line in inside), (seen, result)


@pytest.mark.skipif(LAYOUT != "hybrid", reason=f"this host is {LAYOUT}: the tests above drive its own backend")
def test_v2_backend_core_files_on_a_hybrid_hosts_cgroup2_mount():
    """A hybrid host's cgroup2 tree has no controllers, but mkdir, cgroup.procs, cgroup.freeze and
    cgroup.events are real v2 interface files: the v2 backend freezes a group there for real."""
    from labcore.kernel.cgroups import Layout
    from labcore.kernel.cgroups.v2 import V2Manager
    layout = detect()
    step = control_groups.freeze_group(0.3, manager=V2Manager(Layout("v2", {}, layout.v2)))
    _, at_freeze, later, resumed = step.data["counts"]
    assert step.data["frozen"] and later == at_freeze and resumed > later


def test_the_shared_parent_goes_with_the_last_group_and_frozen_groups_are_removed():
    """Two runs share `labcore`: the first to end leaves it, the last removes it. A frozen group's tasks
    ignore SIGKILL until thawed (v1), so the journal's undo thaws before it kills."""
    manager = open_manager()
    with journal.Scope() as first:
        with journal.Scope() as second:
            a = manager.create("labcore-test-a", first)
            b = manager.create("labcore-test-b", second)
            child = control_groups.Workload(second, "counter")
            manager.add(b, child.pid)
            child.go()
            assert manager.freeze(b)
            parent = a.path.parent
        assert not b.path.exists() and parent.exists()       # second ended first: a still needs the parent
        assert child.proc.wait(5) == -9
        child.stop()
    # The last one out removes the parent, unless another run on this host still has a group in it.
    others = [path.name for path in parent.iterdir() if path.is_dir()] if parent.exists() else []
    assert not a.path.exists() and (not parent.exists() or others)
