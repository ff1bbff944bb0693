"""The doctor on the real kernel: as root everything here is allowed; as nobody the user namespace is, and
the root-owned cgroup v1 hierarchies are not. Each answer is checked against what /proc says."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labcore.lessons import doctor
from tests.conftest import NOBODY, has, privileged

pytestmark = privileged
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report():
    return doctor.check()


def test_check_leaves_no_probe_running(report):
    """Every probe child answered or was killed at the deadline, and reaped: how long that took is for
    bench/, not for a test on a busy machine."""
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    assert not children and report.seconds > 0, str(report)


def test_root_may_create_all_seven_namespaces_with_a_new_inode_each(report):
    for ns in doctor.NAMESPACES:
        for name in (f"ns.{ns}", f"userns.{ns}"):
            cap = report.capabilities[name]
            assert cap.ok, f"{name}: {cap.detail}"
            before, after = cap.detail.split(" -> ")
            assert before.startswith(f"{ns}:[") and before != after.split(";")[0]
    assert report.capabilities["ns.pid"].detail.endswith("sees itself as pid 1")
    assert report.mode() == doctor.MODE_ROOT


def test_identity_matches_proc_self_status(report):
    assert report.capabilities["euid"].detail.startswith("0 (root)")
    cap_eff = doctor.status_fields(Path("/proc/self/status").read_text())["CapEff"].strip()
    assert f"CapEff {cap_eff}" in report.capabilities["capabilities"].detail


def test_cgroup_layout_is_the_one_mountinfo_shows(report):
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    types = {line.split(" - ")[1].split()[0] for line in lines}
    expected = {frozenset({"cgroup", "cgroup2"}): "hybrid", frozenset({"cgroup"}): "v1",
                frozenset({"cgroup2"}): "v2"}[frozenset(types & {"cgroup", "cgroup2"})]
    assert report.capabilities["cgroup.layout"].detail.startswith(f"{expected}:")


def test_every_v1_controller_is_writable_by_root_and_no_group_is_left(report):
    for h in doctor.cgroup_hierarchies(Path("/proc/self/mountinfo").read_text()):
        for controller in h.controllers if h.version == 1 else []:
            cap = report.capabilities[f"cgroup.{controller}"]
            assert cap.ok and "removed at once" in cap.detail, cap.detail
            assert not list(Path(h.mountpoint).rglob("labcore-doctor-*"))


def test_mounts_and_links_stay_in_the_probes_namespaces(report):
    assert report.capabilities["overlayfs"].ok and report.capabilities["pivot_root"].ok
    assert "labcore-doctor" not in Path("/proc/self/mountinfo").read_text()   # the source of its mounts
    assert "lcdoc0" in report.capabilities["veth"].detail
    assert "lcdoc0" not in Path("/proc/self/net/dev").read_text()


def test_kvm_and_graphviz_as_the_host_has_them(report):
    from labcore.lessons.vm import accelerator
    assert report.capabilities["kvm"].ok == (accelerator()[0] == "kvm")     # /dev/kvm alone may be kvm_pvm's
    assert report.capabilities["graphviz"].ok == has("dot")


def test_as_nobody_the_user_namespace_works_and_cgroup_v1_is_refused_with_a_fix(nobody_home):
    done = subprocess.run([*NOBODY, sys.executable, "-m", "labcore", "doctor", "--json"], cwd=REPO,
                          env={**os.environ, "LABCORE_HOME": nobody_home}, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(f"{nobody_home}/journal") or os.listdir(f"{nobody_home}/journal") == []
    found = json.loads(done.stdout)
    caps = found["capabilities"]
    assert not caps["euid"]["ok"] and caps["euid"]["detail"].startswith("65534")
    assert caps["ns.user"]["ok"] and caps["userns.mnt"]["ok"] and caps["userns.overlayfs"]["ok"]
    assert not caps["ns.mnt"]["ok"] and "see userns.mnt" in caps["ns.mnt"]["detail"]
    assert found["mode"] == doctor.MODE_ROOTLESS
    memory = caps.get("cgroup.memory")
    if memory is not None:                   # a v1 memory hierarchy, owned by root as on this host
        assert not memory["ok"] and "Permission denied" in memory["detail"] and "fix:" in memory["detail"]
