"""A class on this machine (issue 17): JupyterHub with ten student accounts, all at once, through the hub's REST
API and each server's kernel API (``tools.hub.loadtest``); then isolation between two students, a runaway
student held by their limits, and nothing left once the hub stops. Loopback only; about a minute and a half.

The wall time and memory are reported, not asserted (they belong to `python -m tools.hub.loadtest`, whose
numbers the README quotes); what is asserted is the mechanism: cells without errors, steps real, the
kernel's refusals, the cgroup's counters, what exists afterwards.
"""
import asyncio
import contextlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import privileged
from tools.hub import loadtest
from tools.hub.settings import proxy_command

ROOT = Path(__file__).resolve().parents[2]
STUDENTS = 10
ARTIFACTS = ROOT / "test-artifacts" / "hub"

pytestmark = [pytest.mark.hub, privileged,
              pytest.mark.skipif(importlib.util.find_spec("jupyterhub") is None,
                                 reason="jupyterhub is not installed: ./lab test installs it (pyproject's test)"),
              pytest.mark.skipif(not proxy_command(), reason="configurable-http-proxy not found: ./lab test "
                                                             "installs it with npm (apt-get install npm)"),
              pytest.mark.skipif(not Path("/proc/sys/user/max_user_namespaces").exists() or
                                 Path("/proc/sys/user/max_user_namespaces").read_text().strip() == "0",
                                 reason="user namespaces are off: the students' containers could not be rootless")]


@pytest.fixture(scope="module")
def the_class():
    with loadtest.Class(STUDENTS) as the_class:
        yield the_class


@pytest.fixture(scope="module")
def report():
    found = {}
    yield found
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(found, indent=1))


def run(the_class, coroutine):
    """``asyncio.run``; on failure, what the hub's log said of it (the students' servers and kernels log there
    too: a kernel that died, a websocket closed, a spawn that failed), printed with the test's failure."""
    try:
        return asyncio.run(coroutine)
    except BaseException:
        lines = []
        with contextlib.suppress(OSError):                  # no log: the failure itself says enough
            lines = the_class.log_path().read_text(errors="replace").splitlines()
        notable = [line for line in lines if re.search(r"\[[EWC] |died|restart|[Ee]rror|[Cc]losed|[Kk]illed", line)]
        print("JupyterHub's log, its warnings and errors (the last 60):", *notable[-60:], sep="\n", file=sys.stderr)
        raise


def show(capsys, text: str) -> None:
    with capsys.disabled():
        print(f"\n  [hub] {text}")


def test_ten_students_run_notebooks_03_and_05_at_once_every_cell_real(the_class, report, capsys):
    load = run(the_class, loadtest.everyone_at_once(the_class, loadtest.NOTEBOOKS))
    report["load"] = load
    peaks = [student["peak bytes"] for student in load["students"].values()]
    show(capsys, f"{STUDENTS} students, {' and '.join(loadtest.NOTEBOOKS)} at once: {load['wall s']} s wall, "
                 f"peak {load['peak PSS bytes'] / 2**20:.0f} MiB PSS for the class (hub, proxy, servers, "
                 f"kernels, containers); each student's cgroup peaked at {min(peaks) / 2**20:.0f}-"
                 f"{max(peaks) / 2**20:.0f} MiB")
    assert set(load["students"]) == set(the_class.names)
    for name, student in load["students"].items():
        for notebook, counted in student["notebooks"].items():
            assert counted["cells"] > 0, (name, notebook)
            assert counted["error cells"] == 0, (name, notebook, counted["errors"])
            assert counted["steps"].get("real", 0) > 0 and counted["refused"] == [], (name, notebook, counted)


def test_one_student_cannot_see_signal_or_reach_anothers_containers(the_class, report):
    found = run(the_class, loadtest.isolation(the_class))
    report["isolation"] = found
    for what in ("list their home", "read their state directory", "connect to their daemon's socket",
                 "read their container's environment", "look into their container's root"):
        assert found[what] == "PermissionError: Permission denied", (what, found)
    assert found["signal their container"] == "PermissionError: Operation not permitted"   # kill(2): EPERM
    assert found["my labcore ps lists theirs"] is False
    # Their kernels talk to their server on Unix sockets in their home, not on loopback TCP ports that anyone
    # may connect to (tools.hub.spawner.kernel_transport): the socket was there, and the prober's connect(2)
    # to it is refused (EACCES: no search permission on their home)
    assert found["their kernel's transport"] == "ipc" and found["their kernel's socket was there"] is True
    assert found["connect to their kernel's socket"] == "PermissionError: Permission denied"
    for verb in ("logs", "stop", "rm"):
        assert found[f"labcore -H their socket {verb}"].startswith("exit 1:"), found
        assert "Permission denied" in found[f"labcore -H their socket {verb}"], found


def test_a_runaway_student_is_held_by_their_limits_while_the_others_complete(the_class, report, capsys):
    found = run(the_class, loadtest.runaway(the_class, loadtest.NOTEBOOKS[0]))
    report["runaway"] = found
    show(capsys, f"memory hog: {found['hog']}, OOM kills in its student's group: {found['bomber oom kills']}; "
                 f"fork bomb: {found['bomber pids']} tasks (pids.max {loadtest.LIMITS['pids']}), "
                 f"{found['bomber forks refused']} forks refused; the other {STUDENTS - 1} ran "
                 f"{loadtest.NOTEBOOKS[0]} meanwhile in {found['others s']} s")
    assert found["hog"].startswith("hog exit 137"), found["hog"]          # SIGKILLed by the OOM killer
    assert found["bomber oom kills"] >= 1
    assert found["bomber forks refused"] > 0                              # pids.events "max"
    assert found["bomber pids"] <= int(loadtest.LIMITS["pids"])
    for name, counted in found["others"].items():
        assert counted["error cells"] == 0 and counted["refused"] == [], (name, counted)
    assert found["bomber server after stop"] is False


def test_nothing_is_left_once_the_hub_stops(the_class):
    run(the_class, loadtest.stop_everyone(the_class))
    the_class.close()
    assert the_class.left_behind() == []
    assert not any(path.name.startswith(f"labcore-hub-labcore-{the_class.tag}")
                   for path in Path("/sys/fs/cgroup").glob("*/labcore/*"))
    assert os.path.exists(f"/home/{the_class.names[0]}") is False
