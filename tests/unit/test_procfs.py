"""labcore.kernel.procfs against a fixture /proc tree (tests/unit/fixtures/proc): pid 1 is a process on a
cgroup v2 host inside user, pid and net namespaces of its own; pid 4242 a zombie on a cgroup v1 host. The
files are this lab's hosts' own, with ids, sizes and devices replaced."""
from pathlib import Path

import pytest

from labcore.kernel import procfs

ROOT = str(Path(__file__).parent / "fixtures" / "proc")


def test_mountinfo_unescapes_paths_and_keeps_optional_fields():
    table = procfs.mountinfo(1, root=ROOT)
    spaced = next(m for m in table if m.id == 27)
    assert spaced.point == "/home/student/my lab" and spaced.source == "labcore tmp"
    assert spaced.optional == ("shared:300", "master:1") and spaced.propagation == "shared:300 master:1"
    odd = next(m for m in table if m.id == 29)
    assert (odd.root, odd.point, odd.propagation) == ("/sub\\dir", "/home/student/my lab/in\ttab", "unbindable")
    overlay = next(m for m in table if m.fstype == "overlay")
    assert overlay.propagation == "private" and "lowerdir=/var/lib/labcore/layers/l1" in overlay.super_options


def test_mounts_under_and_mount_at():
    assert procfs.mounts_under("/home/student/my lab", root=ROOT) == [
        "/home/student/my lab/in\ttab", "/home/student/my lab"]
    assert procfs.mount_at("/sys/fs/cgroup", root=ROOT).fstype == "cgroup2"     # self -> 1
    assert procfs.mount_at("/nowhere", root=ROOT) is None


def test_unescape_leaves_utf8_alone():
    assert procfs.unescape("/caf\u00e9\\040x") == "/caf\u00e9 x"


def test_cgroup_v2_and_v1():
    assert procfs.cgroups(1, root=ROOT) == [procfs.CgroupLine(0, (), "/user.slice/user-1000.slice/session-3.scope")]
    assert procfs.own_cgroup(1, root=ROOT) == "/user.slice/user-1000.slice/session-3.scope"
    v1 = procfs.cgroups(4242, root=ROOT)
    assert [line.key for line in v1] == ["name=systemd", "freezer", "memory", "cpu,cpuacct", "v2"]
    assert procfs.cgroup_of("cpuacct", 4242, root=ROOT) == "/"
    assert procfs.cgroup_of("freezer", 4242, root=ROOT) == "/labcore/labcore-3f2a"
    assert procfs.own_cgroup(4242, root=ROOT) == "/"           # the v2 line comes first, even when it is "/"
    assert procfs.cgroup_of("pids", 4242, root=ROOT) is None


def test_status_fields():
    fields = procfs.status(1, root=ROOT)
    assert fields["CapEff"] == "00000000a80425fb" and fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "1"
    assert procfs.nspids(1, root=ROOT) == [4321, 1]
    assert procfs.ids("Uid", 1, root=ROOT) == (1000, 1000, 1000, 1000)
    assert procfs.status_field("Name", 4242, root=ROOT) == "a (weird) name"
    assert procfs.status_field("Missing", 1, root=ROOT) == ""


def test_stat_counts_fields_after_the_last_parenthesis():
    assert procfs.state(4242, root=ROOT) == "Z" and procfs.ppid(4242, root=ROOT) == 17
    assert procfs.start_time(4242, root=ROOT) == 98765 and procfs.start_time(1, root=ROOT) == 31043
    assert procfs.start_time(99999, root=ROOT) is None


def test_namespaces_and_id_maps():
    assert procfs.ns_link("net", 1, root=ROOT) == "net:[4026532204]"
    assert procfs.ns_inode("user", 1, root=ROOT) == 4026532198
    assert procfs.ns_inode("net", 4242, root=ROOT) == 4026531840
    assert procfs.id_map("uid_map", 1, root=ROOT) == [(0, 1000, 1)]
    assert procfs.id_map_text("uid_map", 4242, root=ROOT) == "0 0 4294967295"


def test_process_files_and_kernel_files():
    assert procfs.cmdline(1, root=ROOT) == ["sleep", "infinity"] and procfs.cmdline(4242, root=ROOT) == []
    assert procfs.comm(1, root=ROOT) == "sleep"
    assert procfs.pids(root=ROOT) == [1, 4242]
    assert {"overlay", "ext4", "cgroup2"} <= procfs.filesystems(root=ROOT)
    assert procfs.sysctl("kernel.cap_last_cap", root=ROOT) == "40"


def test_the_real_proc_agrees_with_os():
    import os
    assert procfs.ns_inode("net") == os.stat("/proc/self/ns/net").st_ino
    assert procfs.ids("Uid")[1] == os.geteuid()
    assert procfs.ppid() == os.getppid()
    with pytest.raises(OSError):
        procfs.read(2 ** 22 + 1, "status")


def test_counters_and_network_tables():
    assert procfs.meminfo(root=ROOT)["MemAvailable"] == 8000000 * 1024
    assert procfs.meminfo(root=ROOT)["HugePages_Total"] == 0
    assert procfs.system_cpu_ticks(root=ROOT) == 100 + 2 + 30 + 4000 + 5 + 6 + 7
    assert procfs.net_dev(1, root=ROOT)["eth0"][:2] == [1306, 15]
    assert procfs.net_table("tcp", 1, root=ROOT)[0][1:4] == ["00000000:0050", "00000000:0000", "0A"]
    assert [row[:2] for row in procfs.sysvipc("msg", root=ROOT)] == [["1280262737", "0"]]
    forwarding = procfs.sysctl_path("net.ipv4.conf.lcbr0.forwarding", root=ROOT)
    assert forwarding == f"{ROOT}/sys/net/ipv4/conf/lcbr0/forwarding"


def test_open_files():
    assert procfs.fds(1, root=ROOT) == {0: "/dev/null", 3: "socket:[31337]"}


def test_cgroup_controllers_names_each_with_its_v1_hierarchy():
    # /proc/cgroups of a hybrid host: net_cls and net_prio are built in, on no hierarchy (0), as on every v2 host
    found = procfs.cgroup_controllers(root=ROOT)
    assert found["memory"] == {"hierarchy": 4, "groups": 90, "enabled": 1}
    assert found["net_cls"]["hierarchy"] == 0 and found["net_prio"]["enabled"] == 1
    assert "#subsys_name" not in found


def test_tcp_listeners_read_both_tables_and_only_listening_rows():
    found = procfs.tcp_listeners(1, root=ROOT)
    assert [str(listener) for listener in found] == ["0.0.0.0:80", "127.0.0.1:18080", "*:8080", "[::1]:22"]
    assert [listener.inode for listener in found] == [31337, 31338, 31340, 31341]       # the connected row is not


@pytest.mark.parametrize("release, version", [("6.1.0-57-amd64", (6, 1)), ("5.11.0", (5, 11)),
                                              ("4.18.0-553.el8_10.x86_64", (4, 18)), ("4.8", (4, 8)), ("weird", ())])
def test_a_kernel_release_is_read_as_major_and_minor(release, version):
    # Compared as tuples: () is older than any (seccomp's minKernel, the shim's own cgroup move from 5.11).
    assert procfs.kernel_version(release) == version
