"""labcore.lessons.namespaces (notebook 03) on the real kernel: each namespace's evidence, joining, and the same
steps as nobody."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labcore.lessons import namespaces
from labcore.lessons.evidence import Mode
from tests.conftest import NOBODY, has, privileged

pytestmark = privileged
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Beyond the journal check of conftest: no mount of ours on the host and no child process alive."""
    yield
    assert namespaces.TMPFS_SOURCE not in Path("/proc/self/mountinfo").read_text()
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert not children, f"child processes left running: {children}"


def test_uts_hostname_changes_inside_only():
    host = os.uname().nodename
    step = namespaces.isolate_uts("labcore-test")
    assert step.mode is Mode.ROOT
    assert step.data["hostname_inside"] == "labcore-test"
    assert step.data["hostname_host_after"] == host == os.uname().nodename
    assert step.data["inodes_inside"]["uts"] != step.data["inodes_host"]["uts"]


def test_pid_child_is_pid_one_inside_and_has_two_pids():
    step = namespaces.isolate_pid()
    assert step.data["pid_inside"] == 1
    host_pid, inside_pid = step.data["nspid"]
    assert inside_pid == 1 and host_pid == step.data["host_pid"] != 1
    assert len(step.data["ps_inside"]) == 1 and step.data["ps_inside"][0].startswith("1 ")
    assert step.after["processes in /proc before remounting it"] > 1     # the host's /proc, until remounted
    assert "pid 1 inside" in step.data["tree_dot"]


def test_mount_inside_is_absent_from_the_hosts_mount_table():
    step = namespaces.isolate_mnt()
    (point,) = step.data["mounts_inside"]
    assert Path(point).name.startswith("labcore-mnt-")
    assert step.data["mounts_host"] == []
    assert step.after["propagation of /"] == "private"
    assert not Path(point).exists()                      # its directory was removed by the journal


def test_network_namespace_has_only_lo_and_it_is_down():
    step = namespaces.isolate_net()
    assert step.data["interfaces_inside"] == ["lo"]
    assert step.data["lo_inside"] == "DOWN"
    assert "lo" in step.data["host"]["interfaces"]


@pytest.mark.skipif(not has("ipcmk"), reason="ipcmk (util-linux) is not installed")
def test_message_queue_of_the_host_is_invisible_inside_and_removed_after():
    step = namespaces.isolate_ipc()
    key = step.data["queue_key"]
    assert key in step.data["host"]["message_queues"]
    assert step.data["queues_inside"] == []
    assert key not in namespaces.message_queues()


def message_queues_by_id() -> dict[int, int]:
    rows = [row.split() for row in Path("/proc/sysvipc/msg").read_text().splitlines()[1:]]
    return {int(row[1]): int(row[0]) for row in rows}


@pytest.mark.skipif(not has("ipcmk"), reason="ipcmk (util-linux) is not installed")
def test_ipcrm_undo_leaves_a_queue_whose_key_is_not_the_recorded_one():
    from labcore.kernel import journal
    msqid = int(subprocess.run(["ipcmk", "-Q"], capture_output=True, text=True, check=True).stdout.split(":")[-1])
    try:
        key = message_queues_by_id()[msqid]
        journal.undo_ipcrm(msqid, key + 1)                  # as if the id had been reused by someone else
        assert msqid in message_queues_by_id()
        journal.undo_ipcrm(msqid, key)
        assert msqid not in message_queues_by_id()
    finally:
        subprocess.run(["ipcrm", "-q", str(msqid)], capture_output=True)


def test_root_inside_a_user_namespace_is_nobody_outside():
    step = namespaces.isolate_user()
    assert step.data["euid_inside"] == 0
    assert step.data["uid_map_inside"] == "0 65534 1"
    assert step.data["shadow_inside"] == "EACCES"
    assert step.data["sethostname_inside"] == "EPERM"
    assert step.before['open("/etc/shadow")'] == "allowed"


def test_cgroup_namespace_puts_the_child_at_the_root():
    step = namespaces.isolate_cgroup()
    assert step.data["paths_inside"] == ["/"]
    assert step.data["inside"]["cgroups"]["v2"] == "/"


def test_all_seven_kinds_at_once():
    step = namespaces.isolate(namespaces.KINDS)
    assert all(step.data["inodes_inside"][kind] != step.data["inodes_host"][kind] for kind in namespaces.KINDS)
    assert step.data["inside"]["pid"] == 1 and step.data["inside"]["interfaces"] == ["lo"]


def test_join_sees_what_the_target_sees():
    with namespaces.start_sleeper({"uts", "pid", "mnt", "net", "ipc"}, "labcore-joined") as box:
        step = namespaces.join(box.pid)
        target = namespaces.namespaces_of(box.pid)
    assert step.mode is Mode.ROOT
    assert set(step.data["joined"]) == {"uts", "pid", "mnt", "net", "ipc"}
    assert all(step.data["inodes_inside"][kind] == target[kind] for kind in step.data["joined"])
    assert step.data["inside"]["hostname"] == "labcore-joined"
    assert step.data["inside"]["pid"] == 2            # pid 1 is the sleeper


def test_a_sleeper_left_running_is_killed_by_its_journal():
    from labcore.kernel import journal
    box = namespaces.start_sleeper({"pid", "uts"})
    kills = [entry for entry in journal.Journal().entries() if entry.undo == "kill"]
    assert {entry.args["pid"] for entry in kills} == {box.pid, box._child.pid}
    journal.Journal().undo_all()                                      # as `labcore cleanup --all` does
    assert box._child.wait() == 128 + 9                               # SIGKILL, from the journal
    box.stop()


STEPS_AS_NOBODY = """
import json
from labcore.lessons import namespaces as n
steps = {"uts": n.isolate_uts(), "pid": n.isolate_pid(), "mnt": n.isolate_mnt(), "net": n.isolate_net(),
         "ipc": n.isolate_ipc(), "user": n.isolate_user(), "cgroup": n.isolate_cgroup(), "all": n.isolate()}
with n.start_sleeper({"uts", "pid", "net"}) as box:
    steps["join"] = n.join(box.pid)
print(json.dumps({name: [step.mode.name, step.data.get("pid_inside"), step.reason] for name, step in steps.items()}))
"""


def test_every_step_runs_rootless_inside_a_user_namespace(nobody_home):
    result = subprocess.run([*NOBODY, sys.executable, "-c", STEPS_AS_NOBODY],
                            env={**os.environ, "LABCORE_HOME": f"{nobody_home}/home"}, cwd=nobody_home,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    modes = json.loads(result.stdout)
    assert {name: mode for name, (mode, _, _) in modes.items()} == dict.fromkeys(modes, "USERNS"), modes
    assert modes["pid"][1] == 1
    assert not os.listdir(f"{nobody_home}/home/journal")                # nobody's runs undid what they made
