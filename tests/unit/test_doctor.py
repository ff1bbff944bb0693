"""The doctor without root: decoding /proc text, classifying cgroup layouts, explaining refusals, the report's
shapes, and the order of syscalls in a probe (with the Recorder, in a child)."""
import errno
import json
import os
import time

import pytest

from labcore.errors import NotSupportedHere, from_oserror
from labcore.kernel import syscalls
from labcore.kernel.journal import Journal
from labcore.kernel.process import Child, run_in_child
from labcore.lessons import doctor
from labcore.lessons.doctor import Capability, Report

HYBRID = """\
25 1 0:23 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
HINTS = {"sysctl": {}, "euid": 1000, "container": None, "seccomp": "0", "kernel": "6.18.0"}
NOBODY_STATUS = ("Name:\tpython\nUid:\t65534\t65534\t65534\t65534\nNoNewPrivs:\t1\nSeccomp:\t2\n"
                 "Seccomp_filters:\t1\nCapEff:\t0000000000000000\n")


def fake_controllers(path):
    return {"/sys/fs/cgroup/unified/cgroup.controllers": "",
            "/sys/fs/cgroup/cgroup.controllers": "cpu memory pids\n"}[path]


# --- /proc/self/status -------------------------------------------------------------------------------------

def test_capeff_of_full_root_decodes_to_every_name():
    names = doctor.decode_capabilities("000001ffffffffff")
    assert names == list(doctor.CAPABILITY_NAMES) and names[21] == "CAP_SYS_ADMIN"


def test_capeff_with_one_bit_missing_names_what_is_missing():
    cap = doctor.capabilities_capability("000001fffeffffff")
    assert "CAP_SYS_RESOURCE" not in doctor.decode_capabilities("000001fffeffffff")
    assert cap.ok and "missing CAP_SYS_RESOURCE" in cap.detail


def test_capeff_small_and_unknown_bits():
    assert doctor.decode_capabilities("0000000000200000") == ["CAP_SYS_ADMIN"]
    assert doctor.decode_capabilities("0000200000000001") == ["CAP_CHOWN", "cap_45"]
    assert not doctor.capabilities_capability("0000000000000000").ok


def test_identity_of_a_confined_nobody():
    found = doctor.identity(NOBODY_STATUS)
    assert not found["euid"].ok and found["euid"].detail.startswith("65534")
    assert not found["capabilities"].ok and "none" in found["capabilities"].detail
    assert not found["seccomp"].ok and "seccomp=unconfined" in found["seccomp"].detail
    assert not found["no_new_privs"].ok


# --- cgroups -----------------------------------------------------------------------------------------------

def test_hybrid_layout_from_mountinfo():
    hierarchies = doctor.cgroup_hierarchies(HYBRID, read=fake_controllers)
    assert doctor.cgroup_layout(hierarchies) == "hybrid"
    assert [(h.version, h.mountpoint, h.controllers) for h in hierarchies] == [
        (1, "/sys/fs/cgroup/cpu,cpuacct", ["cpu", "cpuacct"]), (1, "/sys/fs/cgroup/memory", ["memory"]),
        (1, "/sys/fs/cgroup/systemd", []), (2, "/sys/fs/cgroup/unified", [])]
    assert doctor.layout_capability(hierarchies).detail.startswith("hybrid: v1 cpu, cpuacct, memory")


def test_v2_v1_and_none():
    assert doctor.cgroup_layout(doctor.cgroup_hierarchies(V2, read=fake_controllers)) == "v2"
    assert doctor.cgroup_hierarchies(V2, read=fake_controllers)[0].controllers == ["cpu", "memory", "pids"]
    v1_only = "\n".join(line for line in HYBRID.splitlines() if "cgroup2" not in line)
    assert doctor.cgroup_layout(doctor.cgroup_hierarchies(v1_only)) == "v1"
    assert not doctor.layout_capability(doctor.cgroup_hierarchies("")).ok


def test_a_new_group_goes_below_our_own_cgroup():
    own = doctor.own_cgroups("4:memory:/user.slice/session-1\n1:cpu,cpuacct:/\n0::/user.slice/u@1000\n")
    assert own == {"memory": "/user.slice/session-1", "cpu": "/", "cpuacct": "/", "": "/user.slice/u@1000"}
    memory = doctor.Hierarchy(1, "/sys/fs/cgroup/memory", "/")
    assert doctor.group_parent(memory, own["memory"]) == "/sys/fs/cgroup/memory/user.slice/session-1"
    # In a cgroup namespace the mount's root is our own group: the mountpoint itself is the parent.
    scoped = doctor.Hierarchy(2, "/sys/fs/cgroup", "/user.slice/u@1000")
    assert doctor.group_parent(scoped, own[""]) == "/sys/fs/cgroup"


def test_cgroup_probe_in_a_fake_tree_records_and_removes_its_group(tmp_path):
    tree = tmp_path / "memory"
    tree.mkdir()
    detail = doctor.try_cgroup(str(tree), "memory", 1)
    assert f"{tree}/labcore-doctor-{os.getpid()}" in detail and "removed at once" in detail
    assert os.listdir(tree) == [] and Journal().entries() == []


def test_as_root_a_controller_the_top_offers_is_one_the_lab_passes_down_itself(tmp_path, monkeypatch):
    # a v2 host without systemd: the root offers pids but passes nothing down; root's lab enables it there
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 0)
    assert [c for c in ("cpu", "io", "memory", "pids", "cpuset", "hugetlb", "rdma")
            if doctor.passed_down_by_the_lab(c, str(tmp_path))] == ["cpu", "io", "memory", "pids"]
    (tmp_path / "cgroup.type").write_text("domain\n")                # a cgroup namespace's top: not the root
    assert not doctor.passed_down_by_the_lab("pids", str(tmp_path))
    (tmp_path / "cgroup.type").unlink()
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 1000)          # a user: its subtree's owner enables them
    assert not doctor.passed_down_by_the_lab("pids", str(tmp_path))
    assert not doctor.passed_down_by_the_lab("pids", None)           # v1, or no top known


def test_a_group_that_cannot_be_journaled_is_removed_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCORE_HOME", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("a file, so the journal directory cannot be made in it")
    tree = tmp_path / "pids"
    tree.mkdir()
    with pytest.raises(OSError):
        doctor.try_cgroup(str(tree), "pids", 1)
    assert os.listdir(tree) == []


# --- explanations ------------------------------------------------------------------------------------------

def userns_refusal():
    return from_oserror(OSError(errno.EPERM, "Operation not permitted"), "unshare(CLONE_NEWUSER)")


def test_eperm_on_user_namespace_names_the_ubuntu_sysctl_when_it_is_set():
    hints = {**HINTS, "sysctl": {"kernel.apparmor_restrict_unprivileged_userns": "1"}}
    text = doctor.explain("ns.user", userns_refusal(), hints)
    assert text.startswith("unshare(CLONE_NEWUSER) was refused: Operation not permitted")
    assert "sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0" in text


def test_eperm_on_user_namespace_debian_and_container():
    hints = {**HINTS, "sysctl": {"kernel.unprivileged_userns_clone": "0"}, "container": "docker"}
    text = doctor.explain("userns.mnt", userns_refusal(), hints)
    assert "kernel.unprivileged_userns_clone=1" in text and "--privileged" in text


def test_eperm_on_user_namespace_without_a_known_cause_lists_every_knob():
    text = doctor.explain("ns.user", userns_refusal(), HINTS)
    for knob in ("kernel.unprivileged_userns_clone", "kernel.apparmor_restrict_unprivileged_userns",
                 "user.max_user_namespaces", "--privileged"):
        assert knob in text


def test_eperm_on_id_map_write_is_a_user_namespace_refusal_too():
    err = from_oserror(OSError(errno.EPERM, "x"), "write uid_map", "/proc/self/uid_map")
    assert "user.max_user_namespaces" in doctor.explain("userns.net", err, HINTS)


def test_other_refusals_point_at_their_own_fix():
    def why(name, code, syscall="mount", **hints):
        return doctor.explain(name, from_oserror(OSError(code, os.strerror(code)), syscall),
                              {**HINTS, **hints})
    assert "see userns.mnt" in why("ns.mnt", errno.EPERM, "unshare(CLONE_NEWNS)")
    assert "user.max_net_namespaces" in why("ns.net", errno.ENOSPC, "unshare(CLONE_NEWNET)")
    assert "see userns.overlayfs" in why("overlayfs", errno.EPERM)
    assert "5.11" in why("userns.overlayfs", errno.EINVAL)
    assert "Delegate=yes" in why("cgroup.memory", errno.EACCES, "mkdir")
    assert "read-only" in why("cgroup.memory", errno.EROFS, "mkdir", euid=0)
    assert "usermod -aG kvm" in why("kvm", errno.EACCES, "open(O_RDWR)")
    assert "modprobe kvm" in why("kvm", errno.ENOENT, "open(O_RDWR)")


def test_missing_dot_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(NotSupportedHere) as raised:
        doctor.try_dot()
    assert "apt-get install graphviz" in doctor.explain("graphviz", raised.value, HINTS)


# --- the report --------------------------------------------------------------------------------------------

def report_of(**oks) -> Report:
    return Report({name: Capability(ok, f"{name} detail") for name, ok in oks.items()})


def everything(ok_as_user: bool, ok_in_userns: bool) -> dict:
    caps = {"euid": ok_as_user, "overlayfs": ok_as_user}
    caps.update({f"ns.{ns}": ok_as_user or ns == "user" for ns in doctor.NAMESPACES})
    caps.update({f"userns.{ns}": ok_in_userns for ns in doctor.NAMESPACES})
    return caps


def test_mode_follows_from_the_capabilities():
    assert report_of(**everything(True, True)).mode() == doctor.MODE_ROOT
    assert report_of(**everything(False, True)).mode() == doctor.MODE_ROOTLESS
    assert report_of(**everything(False, False)).mode() == doctor.MODE_READ_ONLY
    assert report_of().mode() == doctor.MODE_READ_ONLY


def test_json_shape():
    report = Report({"ns.mnt": Capability(True, "mnt:[1] -> mnt:[2]"),
                     "kvm": Capability(False, "no\n  fix: x")})
    data = json.loads(json.dumps(report.to_json()))
    assert data["capabilities"] == {"ns.mnt": {"ok": True, "detail": "mnt:[1] -> mnt:[2]"},
                                    "kvm": {"ok": False, "detail": "no\n  fix: x"}}
    assert data["mode"] == doctor.MODE_READ_ONLY


def test_text_table_is_aligned_with_the_mode_on_top():
    report = Report({"ns.mnt": Capability(True, "a"), "userns.overlayfs": Capability(False, "b\n  fix: c")})
    lines = str(report).splitlines()
    assert lines[0].startswith("mode: read-only")
    assert lines[3] == "ns.mnt            yes  a"
    assert lines[4] == "userns.overlayfs  no   b"
    assert lines[5] == " " * 23 + "fix: c"


def test_html_table_colours_yes_and_no_and_escapes():
    page = Report({"a": Capability(True, "<ok>"), "b": Capability(False, "x")})._repr_html_()
    assert "color:green" in page and "color:firebrick" in page and "&lt;ok&gt;" in page


# --- children: order of calls, timeouts ---------------------------------------------------------------------

def test_pivot_root_probe_makes_mounts_private_before_it_mounts_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "SCRATCH", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)        # take the root path: no real user namespace

    def record():
        with syscalls.use(syscalls.Recorder()) as rec:
            doctor.try_pivot_root()
        return rec.calls
    calls = run_in_child(record)                           # the probe chdirs: keep the test process out of it
    assert [name for name, _ in calls] == ["unshare", "mount", "mount", "pivot_root", "umount2"]
    assert calls[1][1] == (None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
    assert calls[2][1][2] == "tmpfs" and calls[3][1] == (".", ".")


def test_a_probe_that_hangs_is_killed_at_the_deadline_and_one_that_fails_is_explained():
    def refuse(channel):
        raise from_oserror(OSError(errno.EACCES, "Permission denied"), "open(O_RDWR)", "/dev/kvm")
    children = {"slow": Child(lambda channel: time.sleep(30)), "kvm": Child(refuse),
                "fine": Child(lambda channel: "all good")}
    answers = doctor.collect(children, 0.3, HINTS)
    assert not answers["slow"].ok and "no answer within 0.3 s" in answers["slow"].detail
    assert children["slow"].status == 137
    assert not answers["kvm"].ok and "usermod -aG kvm" in answers["kvm"].detail
    assert answers["fine"] == Capability(True, "all good")


def test_kvm_from_kvm_pvm_is_a_no_that_says_why_and_that_vms_use_tcg(monkeypatch):
    from labcore.lessons import vm
    why = "/dev/kvm is served by kvm_pvm, not kvm_intel or kvm_amd"
    monkeypatch.setattr(vm, "accelerator", lambda: ("tcg", why))
    with pytest.raises(NotSupportedHere) as refused:
        doctor.try_kvm()
    detail = doctor.explain("kvm", refused.value, HINTS)
    assert detail.startswith(why + ", so it cannot boot a stock kernel") and "TCG" in detail
    assert "nested virtualization" in detail
    monkeypatch.setattr(vm, "accelerator", lambda: ("kvm", "/dev/kvm served by kvm_intel"))
    assert doctor.try_kvm().startswith("/dev/kvm served by kvm_intel")
