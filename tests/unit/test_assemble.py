"""The hand-built container's order, without root: every step refuses to run before its prerequisites, with a
message naming the step that must come first and why, and without making a single syscall."""
import os
import socket

import pytest

from labcore.errors import InvalidTransition
from labcore.kernel import syscalls
from labcore.lessons import build_your_own


class FakeImage:
    ref = "busybox:latest"
    config = {"Cmd": ["sh"]}


@pytest.fixture
def box():
    return build_your_own.Box(FakeImage())


def steps_with_prerequisites():
    return [(name, needs[0][0]) for name, (_, needs) in build_your_own.ORDER.items() if needs]


@pytest.mark.parametrize("name, first", steps_with_prerequisites())
def test_each_step_names_the_step_that_must_come_first(box, name, first):
    with syscalls.use(syscalls.Recorder()) as kernel, pytest.raises(InvalidTransition) as refused:
        getattr(box, name)(*({"set_hostname": ["box8"], "exec": [["true"]], "publish": [18808, 80]}.get(name, [])))
    assert f"{name}() needs {first}() first" in str(refused.value)
    assert refused.value.fix == f"call box.{first}()"
    assert kernel.calls == [], "a refused step must not reach the kernel"
    assert box.done == [] and not box.directory.exists()


def test_pivot_root_before_mount_overlay_says_why(box):
    with pytest.raises(InvalidTransition, match=r"pivot_root\(\) needs mount_overlay\(\) first: the new root is"):
        box.pivot_root()


def test_the_reasons_for_the_order_are_in_the_messages(box):
    box.done = ["start", "layers", "mount_overlay", "fork_child"]
    with pytest.raises(InvalidTransition, match=r"CLONE_NEWCGROUP\) makes the caller's cgroup the root"):
        box.unshare()
    with pytest.raises(InvalidTransition, match="network namespace, which unshare"):
        box.connect_network()
    box.done += ["join_cgroup", "unshare", "pivot_root"]
    with pytest.raises(InvalidTransition, match="first connect"):
        box.exec(["true"])


def test_a_step_runs_once(box):
    box.done = ["start", "layers"]
    with pytest.raises(InvalidTransition, match=r"layers\(\) was done already") as refused:
        box.layers()
    assert "box.mount_overlay()" in refused.value.fix and "box.fork_child()" in refused.value.fix


def test_pid1_takes_no_orders_after_exec(box):
    box.done = [*build_your_own.ORDER][:-2] + ["exec"]
    box.done.remove("pivot_root")
    with pytest.raises(InvalidTransition, match="it has become the command"):
        box.pivot_root()


def test_a_removed_box_refuses_everything(box):
    box.done = ["start", "remove"]
    for name in ("layers", "fork_child"):
        with pytest.raises(InvalidTransition, match="was removed"):
            getattr(box, name)()
    with pytest.raises(InvalidTransition, match="removed already"):
        box.remove()


def test_next_hint_lists_what_may_come_now(box):
    box.done = ["start"]
    assert box.next_hint() == "next: box.layers(), box.fork_child()"
    box.done = ["start", *build_your_own.ORDER][:-1]
    assert box.next_hint() == "next: box.wait()"
    box.done.append("wait")
    assert box.next_hint() == "box.remove()"


def test_compare_needs_a_finished_box(box):
    with pytest.raises(InvalidTransition, match=r"needs box.wait\(\) first"):
        build_your_own.compare_with_run(box)


def test_the_run_command_line_is_dockers():
    spec = build_your_own.container.Spec("busybox", cmd=["sh", "-c", "echo $$"], hostname="box8",
                                   limits={"memory": "64m", "pids_limit": "64"}, publish=["127.0.0.1:18809:80"])
    assert build_your_own.run_command_line(spec) == ("labcore run --rm --hostname box8 --memory 64m --pids-limit 64 "
                                               "-p 127.0.0.1:18809:80 busybox sh -c 'echo $$'")


def test_http_get_reports_a_failure_as_evidence():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]            # bound, not listening: the connection is refused
        assert build_your_own.http_get("127.0.0.1", port).startswith("failed: ConnectionRefusedError")


def test_listening_reads_ipv4_and_ipv6_sockets():
    with socket.create_server(("127.0.0.1", 0)) as v4, \
            socket.create_server(("::1", 0), family=socket.AF_INET6) as v6:
        assert build_your_own.listening(os.getpid(), v4.getsockname()[1]) == [f"127.0.0.1:{v4.getsockname()[1]}"]
        assert build_your_own.listening(os.getpid(), v6.getsockname()[1]) == [f"[::1]:{v6.getsockname()[1]}"]


def test_why_not_explains_without_raising(box):
    box.done = ["start"]
    assert box.why_not("pivot_root").startswith("pivot_root() needs mount_overlay() first")
    assert box.why_not("layers") == "allowed"


# --- steps the host refuses (issue 11): the box goes on without what it can do without, and says so --------

def test_a_refused_cgroup_lets_the_box_go_on_and_a_refused_overlay_refuses_what_needs_it(box):
    from labcore.lessons.evidence import Mode
    box.done += ["fork_child", "layers"]
    box.refused["join_cgroup"] = "mkdir /sys/fs/cgroup/labcore was refused: EACCES"
    box.refused["mount_overlay"] = "unshare(CLONE_NEWUSER) was refused: EPERM"
    assert box.refused_before("unshare") == "mount_overlay"           # join_cgroup it can do without
    with syscalls.use(syscalls.Recorder()) as kernel:
        step = box.unshare()
    assert step.mode is Mode.NOT_PERMITTED and kernel.calls == []
    assert "unshare() needs mount_overlay(), which this host refused" in step.reason
    assert "EPERM" in step.reason and "unshare" in box.refused
    assert box.pivot_root().mode is Mode.NOT_PERMITTED                   # and so on, down the order


def test_a_box_without_a_network_may_still_exec_but_not_publish(box):
    box.done += ["layers", "mount_overlay", "fork_child", "join_cgroup", "unshare", "pivot_root"]
    box.refused["connect_network"] = "ip link add was refused: EPERM"
    assert box.refusal("exec") is None and box.refused_before("exec") is None
    assert box.refused_before("publish") == "connect_network"


def test_the_limits_have_the_same_keys_on_cgroup_v1_and_v2():
    v1 = {"memory.limit_in_bytes": "67108864", "cpu.cfs_quota_us": "50000", "cpu.shares": "1024", "pids.max": "64"}
    v2 = {"memory.max": "67108864", "cpu.max": "50000 100000", "cpu.weight": "100", "pids.max": "64"}
    plain = build_your_own.plain_limits
    assert {key: value for key, value in plain(v1).items() if key.endswith("_limit")} == \
        {key: value for key, value in plain(v2).items() if key.endswith("_limit")} == \
        {"memory_limit": "67108864", "cpu_quota_limit": "50000", "pids_limit": "64"}
    assert plain(v1)["memory_file"] == "memory.limit_in_bytes" and plain(v2)["cpu_quota_file"] == "cpu.max"
