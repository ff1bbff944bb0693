"""cgroup v2 for real on a cgroup v1 host: the privileged cgroup tests, run again inside a qemu guest that
boots its own kernel with only the unified hierarchy mounted (``labcore.lessons.vm.run_in_guest``); then, as an
ordinary user owning a subtree an administrator delegated (cgroup-v2.rst, "Delegation"), the same tests and
notebook 04's limits, for real, without root.

The guest sees this host's / read-only over 9p, so it runs this very checkout with this very .venv. The first
run downloads Debian's kernel package once (about 70 MB) into ~/.cache/labcore-vm.
"""
import json
import os
import re
import sys
from pathlib import Path

import pytest

from labcore.errors import NotSupportedHere
from labcore.lessons import vm
from tests.conftest import has, privileged

ROOT = Path(__file__).resolve().parents[2]
CGROUP_TESTS = ROOT / "tests" / "privileged" / "test_cgroups.py"
EXEC_TEST = ROOT / "tests" / "privileged" / "test_exec_cgroup.py"     # `labcore exec` into a limited container
STUDENT = 1001
# What an administrator does to delegate (no systemd in the guest; systemd's Delegate= does the same): a
# subtree with the controllers passed down, its directory and interface files chowned to the user, and the
# user's shell started in a leaf below it (the "no internal process" rule keeps the subtree's top empty).
DELEGATE = f"""set -e
ip link set lo up
D=/sys/fs/cgroup/lab-student
mkdir -p $D/session /tmp/student
echo '+cpu +memory +pids +io' > /sys/fs/cgroup/cgroup.subtree_control
chown {STUDENT}:{STUDENT} $D $D/cgroup.procs $D/cgroup.subtree_control $D/cgroup.threads /tmp/student
chown -R {STUDENT}:{STUDENT} $D/session
echo $$ > $D/session/cgroup.procs
as_student() {{ setpriv --reuid={STUDENT} --regid={STUDENT} --init-groups env HOME=/tmp/student "$@"; }}
"""

# Root, because the guest reads the host's files as qemu's user does, and the tests in it read what only root
# may (/etc/shadow's mode, the host's /root). Not inside a guest already: a VM in a VM without KVM would take
# minutes.
pytestmark = [pytest.mark.vm, privileged,
              pytest.mark.skipif(bool(os.environ.get("LABCORE_IN_GUEST")), reason="already inside a guest")]


@pytest.fixture
def kernel():
    if not has(vm.QEMU):
        pytest.skip(f"{vm.QEMU} not found: apt-get install qemu-system-x86")
    try:
        return vm.ensure_kernel()
    except NotSupportedHere as err:
        pytest.skip(f"no kernel to boot: {err}")


def report(capsys, text: str) -> None:
    """Show a line from the guest in the test run's output, captured or not."""
    with capsys.disabled():
        print(f"\n  [guest] {text}")


def summary_line(output: str) -> str:
    """pytest's last line: "== 12 passed in 40.1s ==" (or its -q form, "12 passed in 40.1s")."""
    lines = [line.strip("= ") for line in output.splitlines() if re.search(r"\b(passed|failed|error)", line)]
    return lines[-1] if lines else "(no pytest summary)"


def test_guest_mounts_only_cgroup2_with_every_controller(kernel, capsys):
    script = ("stat -f -c %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.controllers;"
              " grep -c ' cgroup ' /proc/mounts; uname -r")
    result = vm.run_in_guest(["sh", "-c", script], timeout=300)
    fstype, controllers, v1_mounts, release = result.output.split("\n")[:4]
    report(capsys, f"{fstype}: {controllers} (booted {release} in {result.boot_seconds:.1f} s, "
                   f"{result.accel} {result.accel_reason})")
    assert result.exit_code == 0, result.console
    assert fstype == "cgroup2fs"
    assert {"cpu", "memory", "pids", "io"} <= set(controllers.split())
    assert v1_mounts == "0"                                   # cgroup_no_v1=all: no v1 hierarchy at all
    assert release == kernel.release != os.uname().release     # its own kernel, not the host's


@pytest.mark.skipif(not CGROUP_TESTS.exists(), reason=f"{CGROUP_TESTS.relative_to(ROOT)} not written yet")
def test_privileged_cgroup_tests_pass_on_cgroup_v2(kernel, capsys):
    command = [sys.executable, "-m", "pytest", str(CGROUP_TESTS), str(EXEC_TEST), "-p", "no:cacheprovider", "-q",
               "-rfEs"]
    # A disk for /tmp (where pytest's tmp_path lives), so the io controller has a device to throttle.
    result = vm.run_in_guest(command, cwd=str(ROOT), disk_mb=512, timeout=900, project=str(ROOT),
                             modules=("overlay",))      # a container's root: pid 1 born in its group
    report(capsys, f"{summary_line(result.output)} (pytest in a {result.accel} guest, "
                   f"booted in {result.boot_seconds:.1f} s)")
    assert result.exit_code == 0, result.output
    assert " passed" in summary_line(result.output)


def test_a_user_with_a_delegated_subtree_runs_the_cgroup_tests_and_notebook_04_for_real(kernel, capsys):
    tests = f"{sys.executable} -m pytest {CGROUP_TESTS} -p no:cacheprovider -q -rfEs"
    notebook = (f"LABCORE_HOME=/tmp/student/notebook {sys.executable} {ROOT}/tools/host_matrix.py here --json "
                f"{ROOT}/notebooks/04-control-groups.ipynb")
    script = DELEGATE + f"as_student {tests}; echo TESTS-EXIT $?; as_student sh -c '{notebook}'"
    result = vm.run_in_guest(["sh", "-c", script], cwd=str(ROOT), disk_mb=512, timeout=1500, project=str(ROOT))
    tests_output, _, notebook_output = result.output.partition("TESTS-EXIT ")
    report(capsys, f"as uid {STUDENT} in a delegated subtree: {summary_line(tests_output)}")
    assert notebook_output.startswith("0"), result.output
    assert " passed" in summary_line(tests_output) and " failed" not in summary_line(tests_output)
    counted = json.loads(notebook_output.strip().splitlines()[-1])["04-control-groups.ipynb"]
    report(capsys, f"notebook 04 as uid {STUDENT}: {counted['steps']}, {counted['error cells']} error cells")
    assert counted["error cells"] == 0, counted["errors"]
    # Every limit real: only the device rule is refused, as on any v2 host (a BPF program, not a file).
    assert counted["steps"].get("real", 0) >= 9 and counted["steps"].get("refused, no recording", 0) + \
        counted["steps"].get("refused, recording shown", 0) == 1, counted
