"""The hub's per-student cgroup on cgroup v2, for real: in the qemu guest (``labcore.lessons.vm``, pure cgroup v2, no
systemd), root makes a student's group as ``./lab hub`` does (``tools.hub.fairness``), delegated to uid 1001,
and starts a shell of that student's in its leaf (tests/vm/hub_guest.py). This machine is cgroup v1, where
the limits hold (tests/hub) but nothing is delegated; here the student also limits their own containers
below their group, cannot raise the group's limits, and a memory hog and a fork bomb stop at them.
"""
import json
import os
import sys
from pathlib import Path

import pytest

from labcore.lessons import vm
from tests.vm.test_cgroup_v2_guest import kernel, report  # noqa: F401 -- the fixture, and its reporter
from tests.conftest import privileged

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.vm, pytest.mark.hub, privileged,
              pytest.mark.skipif(bool(os.environ.get("LABCORE_IN_GUEST")), reason="already inside a guest")]


def test_a_students_delegated_group_holds_their_containers_and_their_runaways(kernel, capsys):  # noqa: F811
    result = vm.run_in_guest(["sh", "-c", f"ip link set lo up; {sys.executable} {ROOT}/tests/vm/hub_guest.py"],
                             cwd=str(ROOT), timeout=1500, project=str(ROOT))
    lines = [line for line in result.output.splitlines() if line.startswith("HUB-GUEST ")]
    assert result.exit_code == 0 and lines, result.output
    found = json.loads(lines[-1].removeprefix("HUB-GUEST "))
    report(capsys, f"uid 1001 in {found['group']}: memory.events {found['memory.events']}, pids.events "
                   f"{found['pids.events']} (its leaf: {found['pids.events in the leaf']})")
    # The lab, as the student, finds the group delegated to them and limits a container below it.
    assert found["delegation seen by the student"] == "labcore/labcore-hub-student"
    assert found["container -m 32m, 100M written"] == "137"
    # Their own group's limits are root's.
    assert "Permission denied" in found["raise own memory.max"]
    # A container without -m still stops at the student's 256 MiB; a fork bomb at their 64 tasks.
    assert found["container, 400M written, no -m"] == "137"
    assert found["memory.events"]["oom_kill"] >= 2
    assert found["pids.events"]["max"] + found["pids.events in the leaf"]["max"] > 0
    assert found["fork bomb"] == "0"                  # its pid 1 exec'd sleep and ended: the bomb went with it
    # The hub's stop leaves nothing: the group and every process of the student, detached ones too.
    assert found["group after stop"] is False and found["student processes after stop"] == []
