"""The VM harness without a VM: modules.dep and load order, .modinfo from a hand-made ELF, the initramfs's
files and cpio bytes, the /init scripts, qemu's arguments, reading the console, and cleanup on timeout."""
import lzma
import os
import shlex
import struct
import subprocess
import time

import pytest

from labcore.errors import BadInput, LabError, NotSupportedHere
from labcore.kernel.journal import Journal
from labcore.lessons import vm

MODULES_DEP = """\
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/virtio/virtio.ko kernel/net/9p/9pnet.ko kernel/virtio/ring.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/virtio/virtio.ko:
kernel/virtio/ring.ko:
kernel/net/can/can-raw.ko.xz: kernel/net/can/can.ko.xz
kernel/net/can/can.ko.xz:
"""


def elf_with_modinfo(fields: dict) -> bytes:
    """The smallest ELF64 that read_modinfo accepts: a header and three sections (null, .modinfo, names)."""
    modinfo = b"".join(f"{k}={v}".encode() + b"\0" for k, v in fields.items())
    names = b"\0.modinfo\0.shstrtab\0"
    body = modinfo + names
    shoff = 64 + len(body)
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    section = struct.Struct("<IIQQQQIIQQ")
    sections = (section.pack(*[0] * 10)
                + section.pack(1, 1, 0, 0, 64, len(modinfo), 0, 0, 1, 0)
                + section.pack(10, 3, 0, 0, 64 + len(modinfo), len(names), 0, 0, 1, 0))
    return bytes(header) + body + sections


def read_cpio(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """An independent reader of newc archives: (name, mode, data, rdev) per entry, checking 4-byte padding."""
    entries, at = [], 0
    while True:
        assert data[at:at + 6] == b"070701" and at % 4 == 0
        fields = [int(data[at + 6 + 8 * i: at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name = data[at + 110: at + 110 + namesize - 1].decode()
        at = (at + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries.append((name, mode, data[at:at + size], rdev))
        at = (at + size + 3) & ~3


@pytest.fixture
def static_busybox(tmp_path):
    """Stands in for /bin/busybox: an ELF64 with one program header, a PT_LOAD (1), and no PT_INTERP (3)."""
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, 64)
    struct.pack_into("<HH", header, 0x36, 56, 1)
    path = tmp_path / "busybox"
    path.write_bytes(bytes(header) + struct.pack("<I", 1) + bytes(52))
    return path


def test_module_names_treat_dash_and_underscore_alike():
    assert vm.module_name("kernel/net/can/can-raw.ko.xz") == "can_raw"
    assert vm.module_name("kernel/fs/9p/9p.ko") == "9p"


def test_load_order_puts_each_dependency_first_and_once():
    order = vm.module_load_order(vm.read_modules_dep(MODULES_DEP), ["9pnet_virtio", "9p"])
    assert order == ["kernel/virtio/virtio.ko", "kernel/net/9p/9pnet.ko",
                     "kernel/virtio/ring.ko", "kernel/net/9p/9pnet_virtio.ko",
                     "kernel/fs/netfs/netfs.ko", "kernel/fs/fscache/fscache.ko", "kernel/fs/9p/9p.ko"]
    assert vm.module_load_order(vm.read_modules_dep(MODULES_DEP), ["can_raw"]) == [
        "kernel/net/can/can.ko.xz", "kernel/net/can/can-raw.ko.xz"]


def test_load_order_refuses_unknown_modules_and_cycles():
    with pytest.raises(NotSupportedHere, match="overlay"):
        vm.module_load_order(vm.read_modules_dep(MODULES_DEP), ["overlay"])
    with pytest.raises(LabError, match="cycle"):
        vm.module_load_order(vm.read_modules_dep("a.ko: b.ko\nb.ko: a.ko\n"), ["a"])


def test_modules_dep_is_written_from_each_modules_modinfo(tmp_path):
    (tmp_path / "kernel/fs").mkdir(parents=True)
    (tmp_path / "kernel/fs/netfs.ko").write_bytes(elf_with_modinfo({"name": "netfs", "depends": ""}))
    (tmp_path / "kernel/fs/9p.ko.xz").write_bytes(
        lzma.compress(elf_with_modinfo({"license": "GPL", "depends": "netfs", "name": "9p"})))
    assert vm.read_modinfo(tmp_path / "kernel/fs/9p.ko.xz") == {"license": "GPL", "depends": "netfs",
                                                                "name": "9p"}
    vm.write_modules_dep(tmp_path)
    assert (tmp_path / "modules.dep").read_text().splitlines() == ["kernel/fs/9p.ko.xz: kernel/fs/netfs.ko",
                                                                   "kernel/fs/netfs.ko:"]


def test_initramfs_holds_busybox_init_console_and_modules_with_their_directories(tmp_path, static_busybox):
    module = tmp_path / "9p.ko.xz"
    module.write_bytes(lzma.compress(b"\x7fELF module"))
    entries = vm.initramfs_entries("#!/bin/busybox sh\n", {"lib/modules/6.1/kernel/9p.ko": module},
                                   busybox=str(static_busybox))
    assert [e.name for e in entries] == [
        "bin", "dev", "proc", "sys", "host", "tmp", "dev/console", "bin/busybox", "init",
        "lib", "lib/modules", "lib/modules/6.1", "lib/modules/6.1/kernel", "lib/modules/6.1/kernel/9p.ko"]
    archive = {name: (mode, data, rdev) for name, mode, data, rdev in read_cpio(vm.cpio_newc(entries))}
    assert archive["dev/console"] == (0o20600, b"", (5, 1))
    assert archive["init"] == (0o100755, b"#!/bin/busybox sh\n", (0, 0))
    assert archive["bin/busybox"][1] == static_busybox.read_bytes()
    assert archive["lib/modules/6.1/kernel/9p.ko"][1] == b"\x7fELF module"     # stored decompressed


def test_initramfs_refuses_a_missing_or_dynamic_busybox(tmp_path, static_busybox):
    with pytest.raises(NotSupportedHere, match="busybox-static"):
        vm.initramfs_entries("", busybox=str(tmp_path / "nothing"))
    dynamic = tmp_path / "dynamic"
    dynamic.write_bytes(static_busybox.read_bytes()[:64] + struct.pack("<I", 3) + bytes(52))
    with pytest.raises(NotSupportedHere, match="dynamically"):
        vm.initramfs_entries("", busybox=str(dynamic))


def test_marker_init_mounts_proc_prints_the_marker_and_powers_off():
    script = vm.marker_init()
    assert script.startswith("#!/bin/busybox sh\n")
    assert script.index("/bin/busybox mount -t proc proc /proc") < script.index("--install")
    assert f'echo "{vm.UP} uptime=$uptime release=$(uname -r) boot_id=' in script
    assert script.rstrip().endswith("poweroff -f")
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)        # valid shell


def test_command_init_loads_modules_mounts_the_host_and_runs_the_command_quoted():
    modules = ["lib/modules/6.1/kernel/net/9p/9pnet.ko", "lib/modules/6.1/kernel/fs/9p/9p.ko"]
    script = vm.command_init(["sh", "-c", "echo 'it works'"], "/work/main", modules, {"EXTRA": "a b"})
    lines = script.splitlines()
    assert lines.index(f"insmod /{modules[0]} || fail insmod {modules[0]}") < lines.index(
        f"insmod /{modules[1]} || fail insmod {modules[1]}")
    order = ["mount -t 9p -o ro,trans=virtio", "mount -t cgroup2 cgroup2 /host/sys/fs/cgroup",
             "mount -t tmpfs tmpfs /host/tmp", vm.UP, "chroot /host", vm.EXIT]
    assert [script.index(text) for text in order] == sorted(script.index(text) for text in order)
    assert lines[-1] == "poweroff -f"
    run = shlex.split(next(line for line in lines if "chroot /host" in line))
    assert run[:2] == ["env", "-i"] and "PYTHONDONTWRITEBYTECODE=1" in run and "EXTRA=a b" in run
    assert run[-4:] == ["/work/main", "sh", "-c", "echo 'it works'"]
    assert "mount -t ext4 /dev/vda /host/tmp" in vm.command_init(["true"], disk=True)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)


def test_qemu_command_shares_read_only_and_chooses_the_cpu_by_accelerator(tmp_path):
    kernel = vm.GuestKernel("6.1.0-56-amd64", tmp_path / "vmlinux", tmp_path)
    plain = vm.qemu_command(kernel, tmp_path / "initrd", "tcg")
    assert plain[plain.index("-cpu") + 1] == "max" and "-fsdev" not in plain and "-drive" not in plain
    assert "cgroup_no_v1=all" in plain[plain.index("-append") + 1]
    shared = vm.qemu_command(kernel, tmp_path / "initrd", "kvm", share="/", disk=tmp_path / "disk.img")
    assert shared[shared.index("-cpu") + 1] == "host"
    assert "path=/,security_model=none,readonly=on" in shared[shared.index("-fsdev") + 1]
    assert shared[shared.index("-drive") + 1].startswith(f"file={tmp_path / 'disk.img'},if=virtio")


def console(*texts):
    return [(0.5 * i, text) for i, text in enumerate(texts)]


def test_console_parsing_finds_the_markers_output_and_exit_code():
    report = vm.parse_console(console(
        "SeaBIOS noise", f"{vm.UP} uptime=1.25 release=6.1.0-56-amd64 boot_id=abc", "cgroup2fs",
        "", "last line without newline" + vm.EXIT + "3", "[    2.0] reboot: Power down"))
    assert report["seconds"] == 0.5 and report["uptime"] == "1.25" and report["release"] == "6.1.0-56-amd64"
    assert report["output"] == "cgroup2fs\n\nlast line without newline"
    assert report["exit_code"] == 3


def test_console_parsing_reports_failures_with_the_console():
    with pytest.raises(LabError, match="mount 9p hostroot"):
        vm.parse_console(console(f"{vm.ERROR} mount 9p hostroot"))
    with pytest.raises(LabError, match="never printed") as caught:
        vm.parse_console(console("Kernel panic - not syncing"))
    assert "Kernel panic" in caught.value.fix
    cut_short = vm.parse_console(console(f"{vm.UP} uptime=1 release=r boot_id=b", "output, then nothing"))
    assert cut_short["exit_code"] is None


def test_console_is_read_line_by_line_with_arrival_times():
    process = subprocess.Popen(["sh", "-c", "printf 'one\\r\\ntwo\\n'; sleep 0.3; printf three"],
                               stdout=subprocess.PIPE)
    lines = vm.read_console(process, time.monotonic(), timeout=10)
    process.wait()
    assert [text for _, text in lines] == ["one", "two", "three"]
    assert lines[2][0] - lines[0][0] >= 0.25


def test_a_guest_that_hangs_is_killed_and_its_files_removed(monkeypatch, tmp_path, static_busybox,
                                                            labcore_home):
    def hanging_qemu(*args, **kwargs):
        return ["sh", "-c", f"echo $$ > {tmp_path / 'pid'}; echo booting; exec sleep 60"]
    monkeypatch.setattr(vm, "QEMU", "sh")
    monkeypatch.setattr(vm, "BUSYBOX", str(static_busybox))
    monkeypatch.setattr(vm, "qemu_command", hanging_qemu)
    with pytest.raises(LabError, match="did not power off within 1 s") as caught:
        vm.boot(vm.GuestKernel("r", tmp_path / "vmlinux", tmp_path), vm.marker_init(), "tcg", timeout=1)
    assert "booting" in str(caught.value)
    pid = int((tmp_path / "pid").read_text())
    assert not os.path.exists(f"/proc/{pid}")                     # killed and reaped
    assert not list((labcore_home / "tmp").iterdir())             # its initramfs directory is gone
    assert not Journal(labcore_home / "journal").entries()


def test_run_in_guest_refuses_bad_input_before_booting():
    with pytest.raises(BadInput, match="list of strings"):
        vm.run_in_guest("cat /proc/mounts")
    with pytest.raises(BadInput, match="directory"):
        vm.run_in_guest(["true"], share="/no/such/labcore/dir")
