"""A container built by hand on the real kernel: the evidence of each step, the order enforced, and nothing
left behind, after remove() and after a ^C in the middle of a step."""
import os
import socket

import pytest

from labcore.errors import InvalidTransition, LabError, NotFound
from labcore.kernel import journal, network
from labcore.lessons import build_your_own
from tests.conftest import has, privileged

pytestmark = [privileged, pytest.mark.skipif(not has("ip"), reason="needs ip(8): apt-get install iproute2")]

SERVE_ONCE = ("echo pid $$ on $(hostname); ls /sys/class/net; "
              "printf 'HTTP/1.0 200 OK\\r\\n\\r\\nhello from %s\\n' $(hostname) | nc -l -p 80 >/dev/null")


def assert_nothing_left(box):
    assert not any(box.leftovers().values()), box.leftovers()
    assert journal.Journal().entries() == []


def test_the_whole_sequence_by_hand(busybox_image):
    with build_your_own.start("busybox") as box:
        assert os.listdir(box.directory) == []

        stack = box.layers()
        assert len(box.stack.lowers) == 2 and stack.after["upperdir"] == ["(empty)"]

        mounted = box.mount_overlay()
        assert " - overlay overlay " in mounted.data["mountinfo"][0] and "bin" in mounted.data["names"]
        assert mounted.after["mountinfo"].rows[0][1] == "overlay"

        shim = box.fork_child()
        assert shim.data["shared"] == list(build_your_own.KINDS)

        group = box.join_cgroup(memory="64m", cpus="0.5", pids="64")
        assert group.data["procs"] == [box.shim.pid]
        assert group.data["memory_limit"] == str(64 << 20) and group.data["pids_limit"] == "64"     # v1 or v2
        assert group.data["cpu_quota_limit"] == "50000" and group.data["memory_file"] in group.after

        isolated = box.unshare()
        assert isolated.data["new"] == list(build_your_own.KINDS)
        assert isolated.data["inside"]["pid inside (getpid)"] == 1
        assert isolated.data["inside"]["cgroup inside (/proc/self/cgroup)"] == ["/"]

        wired = box.connect_network()
        assert wired.data["interfaces_inside"] == ["eth0", "lo"]
        assert wired.after["inside: eth0"] == f"UP {wired.data['ip']}/24"

        pivoted = box.pivot_root()
        assert pivoted.before["/ is"] == "the host's /"
        assert pivoted.data["root"] == pivoted.data["escape"] == build_your_own.OVERLAY_ROOT
        assert pivoted.data["host_mounts"] == ["rootfs"], "pid 1's /proc, /dev, /sys leaked to the host"

        named = box.set_hostname("box8")
        assert named.data["hostname"] == "box8" and named.data["host"] == os.uname().nodename
        assert named.after["/etc/hostname"] == "box8" and "etc/hostname" in named.after["upperdir"]

        started = box.exec(["sh", "-c", SERVE_ONCE])
        assert started.data["pid_inside"] == 1 and started.after["cmdline"][0] == "sh"

        served = box.publish(0, 80)
        assert served.data["reply"] == "200 OK: hello from box8"
        assert served.after["inside listening"]

        ended = box.wait()
        assert ended.data["exit_code"] == 0
        assert ended.data["stdout"] == ["pid 1 on box8", "eth0", "lo"]
        assert "digraph" in box.diagram()

        same = build_your_own.compare_with_run(box)
        assert same.data["same"], (same.before, same.after)

        removed = box.remove()
        assert removed.before["mounts (mountinfo)"] and removed.before["state dir"]
        assert removed.data["left"] == {}
    assert_nothing_left(box)


def test_out_of_order_is_refused_and_changes_nothing(busybox_image):
    with build_your_own.start("busybox") as box:
        box.layers()
        with pytest.raises(InvalidTransition, match=r"pivot_root\(\) needs mount_overlay\(\) first"):
            box.pivot_root()
        with pytest.raises(InvalidTransition, match=r"unshare\(\) needs mount_overlay\(\) first"):
            box.unshare()
        assert journal.mounts_under(box.directory) == [] and box.shim is None
        box.mount_overlay()
        box.fork_child()
        with pytest.raises(InvalidTransition, match=r"unshare\(\) needs join_cgroup\(\) first"):
            box.unshare()
        assert box.pid is None and build_your_own.process_state(box.shim.pid)[:1] in ("R", "S")   # alive, waiting
    assert_nothing_left(box)


def test_an_interrupt_mid_step_undoes_the_whole_box(busybox_image, monkeypatch):
    box = build_your_own.start("busybox")
    for name in ("layers", "mount_overlay", "fork_child", "join_cgroup", "unshare"):
        getattr(box, name)()

    def interrupted(*args):                   # ^C once the veth pair exists, before eth0 is configured
        raise KeyboardInterrupt
    monkeypatch.setattr(network, "configure_inside", interrupted)
    with pytest.raises(KeyboardInterrupt):
        box.connect_network()
    assert box.shim.status is not None, "the shim was not reaped"
    assert_nothing_left(box)
    with pytest.raises(InvalidTransition, match="was removed"):
        box.connect_network()


def test_a_busy_host_port_is_a_clear_error(busybox_image):
    with socket.create_server(("127.0.0.1", 0)) as taken, build_your_own.start("busybox") as box:
        for name in ("layers", "mount_overlay", "fork_child", "join_cgroup", "unshare", "connect_network"):
            getattr(box, name)()
        with pytest.raises(LabError, match="Address already in use") as busy:
            box.publish(taken.getsockname()[1], 80)
        assert "another host port" in busy.value.fix
        assert "publish" not in box.done


def test_a_failed_exec_is_the_kernels_error_and_pid1_takes_the_next_order(busybox_image):
    with build_your_own.start("busybox") as box:
        for name in ("layers", "mount_overlay", "fork_child", "join_cgroup", "unshare", "connect_network",
                     "pivot_root"):
            getattr(box, name)()
        with pytest.raises(NotFound, match="execve on labcore-no-such-program failed") as missing:
            box.exec(["labcore-no-such-program"])
        assert "in the image?" in missing.value.fix and "exec" not in box.done
        box.exec(["sh", "-c", "exit 3"])
        assert box.wait().data["exit_code"] == 3
        assert box.why_not("publish").startswith("publish(): the box's command has exited")
