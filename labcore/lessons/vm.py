"""Virtual machines: a guest that boots a kernel of its own.

A container is a group of host processes that the host's kernel fences in (namespaces, cgroups, another root):
`uname -r` inside it prints the host's kernel release. A virtual machine is a different thing. qemu, with KVM
(/dev/kvm, the hypervisor built into Linux), gives a guest virtual CPUs, memory and devices, and the guest
boots a whole kernel: its own `uname -r`, its own /proc/sys/kernel/random/boot_id, its own mounts and cgroup
hierarchy. The price is the boot: firmware, kernel decompression, device probing, then an init. Without KVM,
qemu translates every guest instruction in software (TCG): the same guest, several times slower.

The lab boots a real Debian kernel, downloaded once and unpacked (not installed), with an initramfs built at
run time from /bin/busybox, a few kernel modules and a shell script as /init (PID 1):

    boot_marker()    /init prints a marker and powers off: what a VM costs to start, next to `docker run`
    run_in_guest()   /init mounts the host's / read-only over 9p, mounts cgroup2 alone (no v1 at all),
                     chroots in and runs a command: how the lab tests cgroup v2 on a cgroup v1 host

See qemu-system-x86_64(1), and in the kernel's Documentation/: filesystems/ramfs-rootfs-initramfs.rst,
filesystems/9p.rst, admin-guide/cgroup-v2.rst.

Next: the containers-vs-VMs notebook times ``boot_marker()`` next to a container's start, and the tests of
``labcore.kernel.cgroups`` run again in here, on a cgroup v2 host.
"""
from __future__ import annotations

import gzip
import lzma
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, LabError, NotSupportedHere
from labcore.kernel import journal, procfs
from labcore.lessons import hosts
from labcore.lessons.evidence import Step

QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"
SHARE_TAG = "hostroot"
PROJECT_TAG = "project"                     # the project itself, wherever it is checked out
# The Debian kernel builds the virtio PCI transport and 9p as modules (CONFIG_VIRTIO_PCI=m, CONFIG_9P_FS=m);
# their dependencies (virtio_ring, netfs, fscache, ...) come from modules.dep.
SHARE_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
# A scratch disk for /tmp: ext4 asks the crypto API for crc32c, which only modprobe would load on demand.
DISK_MODULES = ("virtio_blk", "crc32c_generic", "ext4")
UP, EXIT, ERROR = "labcore-vm-up", "labcore-vm-exit=", "labcore-vm-error"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class GuestKernel:
    """The kernel the guest boots (the host's is reached through ``labcore.kernel.syscalls.Kernel``)."""
    release: str            # 6.1.0-56-amd64: what `uname -r` prints inside the guest
    image: Path             # what qemu boots: vmlinux (see unpack_vmlinux), else the package's vmlinuz
    modules: Path           # lib/modules/<release>, with a modules.dep


@dataclass
class GuestResult:
    exit_code: int
    output: str             # what the command printed (stdout and stderr share the serial console)
    boot_seconds: float     # qemu started -> the guest was ready to run the command
    accel: str              # "kvm" or "tcg"
    kernel_release: str
    accel_reason: str = ""  # why not kvm, when tcg
    console: str = ""       # the whole serial console, kernel messages included


@dataclass
class CpioEntry:
    name: str               # relative: "bin/busybox"
    mode: int               # file type and permissions, as stat(2) st_mode
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


# --- the kernel: Debian's package, unpacked into a cache --------------------------------------------------

SHARED_CACHE = Path("/var/cache/labcore-vm")     # root's downloads, which every user of the machine reads


def cache_dir() -> Path:
    """Where this user's download goes: root's to /var/cache/labcore-vm (FHS), so that on a shared lab VM one
    download serves every student; anyone else's to ~/.cache/labcore-vm. Outside LABCORE_HOME on purpose:
    every test has its own home, but one download serves them all."""
    if os.geteuid() == 0 and not os.environ.get("XDG_CACHE_HOME"):
        return SHARED_CACHE
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "labcore-vm"


def kernel_package() -> str:
    """The versioned package that the meta-package linux-image-amd64 points at today (apt's local lists)."""
    if not shutil.which("apt-cache"):
        raise NotSupportedHere("apt-cache not found: the lab downloads Debian's kernel package with apt",
                               fix=f"run on Debian or Ubuntu, or unpack linux-image-*.deb in {cache_dir()}")
    found = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    names = re.findall(r"Depends: (linux-image-\S+-amd64)", found.stdout)
    if not names:
        reason = found.stderr.strip() or "no package lists"
        raise NotSupportedHere(f"apt knows no linux-image-amd64 package: {reason}", fix="apt-get update")
    return names[0]


def ensure_kernel() -> GuestKernel:
    """The cached kernel, else today's from apt, downloaded and unpacked (about 70 MB, a few seconds).

    The cache wins even when apt knows a newer kernel: asking apt costs a second, and any kernel will do.
    To refresh, remove the cache directory.
    """
    places = dict.fromkeys([cache_dir(), SHARED_CACHE])            # this user's, then root's for everyone
    cached = sorted((tree for place in places for tree in place.glob("linux-image-*")),
                    key=lambda tree: tree.stat().st_mtime)
    if cached:
        return kernel_in(cached[-1])
    package = kernel_package()
    download_kernel(package, cache_dir() / package)
    return kernel_in(cache_dir() / package)


def kernel_in(tree: Path) -> GuestKernel:
    vmlinuz = sorted(tree.glob("boot/vmlinuz-*"))
    if not vmlinuz:
        raise NotSupportedHere(f"no boot/vmlinuz-* in {tree}", path=str(tree),
                               fix=f"rm -r {tree}; the next boot downloads the kernel again")
    release = vmlinuz[-1].name.removeprefix("vmlinuz-")
    vmlinux = tree / "boot" / f"vmlinux-{release}"
    return GuestKernel(release, vmlinux if vmlinux.exists() else vmlinuz[-1], tree / "lib" / "modules" / release)


def download_kernel(package: str, tree: Path) -> None:
    """apt-get download + dpkg-deb -x: the files of the package, without installing it on this host."""
    tree.parent.mkdir(parents=True, exist_ok=True)
    with journal.Scope() as scope:
        work = Path(tempfile.mkdtemp(prefix="labcore-vm-unpack-", dir=tree.parent))
        scope.record("directory", str(work), "rmtree", path=str(work))
        fetched = subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True, text=True)
        debs = list(work.glob("*.deb"))
        if fetched.returncode != 0 or not debs:
            raise NotSupportedHere(f"could not download {package}: {fetched.stderr.strip()[-300:]}",
                                   fix="check the network and apt sources, then apt-get update")
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "tree")], check=True)
        kernel = kernel_in(work / "tree")
        write_modules_dep(kernel.modules)
        unpack_vmlinux(kernel)
        os.rename(work / "tree", tree)     # atomic: a half-unpacked kernel is never seen in the cache


def unpack_vmlinux(kernel: GuestKernel) -> None:
    """Save the kernel's ELF image from inside vmlinuz, when qemu can boot it directly.

    A vmlinuz (bzImage) is real-mode setup code plus a compressed vmlinux that it decompresses at boot. With
    CONFIG_PVH=y the ELF vmlinux has an entry point qemu can jump to in 32-bit mode; booting it skips the
    setup and the xz decompression, which without KVM (qemu emulating each instruction) takes seconds.
    """
    boot = kernel.image.parent
    data = kernel.image.read_bytes()
    # The boot protocol's setup header (Documentation/x86/boot.rst): setup_sects at 0x1f1 counts the setup
    # code's 512-byte sectors after the boot sector; payload_offset and _length at 0x248 locate the vmlinux.
    setup_sectors = data[0x1F1] or 4
    offset, length = struct.unpack_from("<II", data, 0x248)
    payload = data[(setup_sectors + 1) * 512 + offset:][:length]
    configured = (boot / f"config-{kernel.release}").read_text()
    if "CONFIG_PVH=y" not in configured or not payload.startswith(b"\xfd7zXZ\x00"):   # PVH entry, xz payload
        return                                    # qemu boots the vmlinuz as usual
    vmlinux = lzma.LZMADecompressor().decompress(payload)    # stops at the stream's end, before the size
    if vmlinux.startswith(b"\x7fELF"):
        (boot / f"vmlinux-{kernel.release}").write_bytes(vmlinux)


# --- kernel modules: which files, in which order ----------------------------------------------------------

def module_name(path: str) -> str:
    """kernel/net/can/can-raw.ko.xz -> can_raw: the kernel treats - and _ in module names alike."""
    return re.sub(r"\.ko(\.xz)?$", "", os.path.basename(path)).replace("-", "_")


def read_modinfo(path: Path) -> dict[str, str]:
    """The .modinfo ELF section of a module, "key=value" strings separated by NUL, as modinfo(8) reads it."""
    data = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
    shoff, = struct.unpack_from("<Q", data, 0x28)                 # ELF64 header: section headers' offset,
    entsize, count, names_index = struct.unpack_from("<HHH", data, 0x3A)   # their size, number, name table
    sections = [struct.unpack_from("<I4xQ8xQQ", data, shoff + i * entsize) for i in range(count)]
    names_offset = sections[names_index][2]
    for name, _, offset, size in sections:
        if data[names_offset + name:].startswith(b".modinfo\0"):
            pairs = (item.split(b"=", 1) for item in data[offset:offset + size].split(b"\0") if b"=" in item)
            return {key.decode(): value.decode(errors="replace") for key, value in pairs}
    return {}


def write_modules_dep(modules: Path) -> None:
    """depmod's one job for us: Debian's postinst would run depmod(8), but the package is only unpacked."""
    files = sorted(p for p in modules.rglob("*") if p.name.endswith((".ko", ".ko.xz")))
    by_name = {module_name(str(p)): p.relative_to(modules).as_posix() for p in files}
    lines = []
    for path in files:
        depends = read_modinfo(path).get("depends", "")
        wanted = [by_name[name] for name in depends.split(",") if name in by_name]
        lines.append(f"{path.relative_to(modules).as_posix()}: {' '.join(wanted)}".rstrip())
    (modules / "modules.dep").write_text("\n".join(lines) + "\n")


def read_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep(5): "path: dependency-path ..." per line -> {module name: [its path, dependency paths]}."""
    table = {}
    for line in text.splitlines():
        if ":" in line:
            path, depends = line.split(":", 1)
            table[module_name(path)] = [path, *depends.split()]
    return table


def module_load_order(table: dict[str, list[str]], names: list[str] | tuple[str, ...]) -> list[str]:
    """Paths to insmod, each after everything it depends on (a depth-first topological sort)."""
    order: list[str] = []

    def visit(path: str, chain: tuple[str, ...]) -> None:
        name = module_name(path)
        if path in order:
            return
        if name in chain:
            raise LabError("modules.dep has a cycle: " + " -> ".join((*chain, name)))
        for dependency in table.get(name, [path])[1:]:
            visit(dependency, (*chain, name))
        order.append(path)

    for name in names:
        if name not in table:
            raise NotSupportedHere(f"kernel module {name} is not in modules.dep",
                                   fix="use a kernel that builds it, as a module or built in")
        visit(table[name][0], ())
    return order


# --- the initramfs: a cpio archive the kernel unpacks into its first root filesystem ----------------------

def marker_init() -> str:
    """PID 1 that only proves the guest is up: its own kernel release, boot id and uptime, then power off."""
    return _INIT_START + _INIT_UP + "poweroff -f\n"


def command_init(command: list[str], cwd: str = "/", modules: list[str] = (), env: dict | None = None,
                 disk: bool = False, project: str | None = None) -> str:
    """PID 1 that mounts the host's / (read-only, over 9p) with a pure cgroup v2 hierarchy, runs ``command``
    there and prints its exit status. /tmp is a tmpfs, or with ``disk`` the guest's ext4 disk /dev/vda."""
    variables = {"PATH": GUEST_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TERM": "dumb",
                 "PYTHONDONTWRITEBYTECODE": "1",            # the host's / is read-only: no __pycache__
                 "LABCORE_HOME": "/tmp/labcore-home", "LABCORE_IN_GUEST": "1", **(env or {})}
    loads = "".join(f"insmod /{path} || fail insmod {path}\n" for path in modules)
    # chroot(8) starts the program in the new /, so the host's own sh changes to ``cwd`` first.
    run = " ".join(["env -i", *(shlex.quote(f"{k}={v}") for k, v in variables.items()),
                    "chroot /host /bin/sh -c", shlex.quote('cd "$0" && exec "$@"'),
                    shlex.quote(cwd), *map(shlex.quote, command)])
    tmp = "mount -t ext4 /dev/vda /host/tmp" if disk else "mount -t tmpfs tmpfs /host/tmp"
    mounts = _INIT_MOUNT_HOST.replace("{tag}", SHARE_TAG).replace("{tmp}", tmp)
    if project:
        # Last: a project under /tmp or /run (a CI checkout, say) would be hidden by the tmpfs mounted there.
        target = shlex.quote(f"/host{project}")
        mounts += (f"mkdir -p {target} 2>/dev/null; mount -t 9p -o ro,trans=virtio,version=9p2000.L,"
                   f"cache=loose,msize=262144 {PROJECT_TAG} {target} || fail mount 9p {PROJECT_TAG}\n")
    return _INIT_START + loads + mounts + _INIT_UP + f'{run}\necho "{EXIT}$?"\npoweroff -f\n'


_INIT_START = f"""#!/bin/busybox sh
# PID 1 of the guest (rdinit=/init); its stdin, stdout and stderr are /dev/console, the serial port ttyS0.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {{ echo "{ERROR} $*"; poweroff -f; }}
"""
_INIT_UP = f"""read -r uptime idle < /proc/uptime
echo "{UP} uptime=$uptime release=$(uname -r) boot_id=$(cat /proc/sys/kernel/random/boot_id)"
"""
# cgroup_no_v1=all on the command line keeps every controller free for the one cgroup2 mount. tmpfs goes
# where programs write (the host's / stays read-only); /dev, /proc and /sys are the guest's own.
_INIT_MOUNT_HOST = """mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=262144 {tag} /host \
|| fail mount 9p {tag}
mount -t proc proc /host/proc || fail mount proc
mount -t sysfs sysfs /host/sys || fail mount sysfs
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup || fail mount cgroup2
mount -t devtmpfs devtmpfs /host/dev || fail mount devtmpfs
mkdir -p /host/dev/shm /host/dev/pts && mount -t devpts devpts /host/dev/pts || fail mount devpts
{tmp} || fail {tmp}
for dir in /host/run /host/dev/shm /host/var/lib/labcore; do
  [ -d $dir ] && { mount -t tmpfs tmpfs $dir || fail mount tmpfs $dir; }
done
chmod 1777 /host/tmp && mkdir -p /host/tmp/labcore-home
"""


def initramfs_entries(init: str, files: dict[str, Path] | None = None,
                      busybox: str | None = None) -> list[CpioEntry]:
    """The guest's first root: busybox, /init, /dev/console for init's stdio, and ``files`` (archive name ->
    host file; .xz modules are stored decompressed, so busybox's insmod needs no xz)."""
    entries = [CpioEntry(d, 0o40755) for d in ("bin", "dev", "proc", "sys", "host", "tmp")]
    entries.append(CpioEntry("dev/console", 0o20600, rdev=(5, 1)))   # devices.txt: char 5:1 is the console
    entries.append(CpioEntry("bin/busybox", 0o100755, read_static_busybox(busybox or BUSYBOX)))
    entries.append(CpioEntry("init", 0o100755, init.encode()))
    for name, source in (files or {}).items():
        known = {entry.name for entry in entries}
        parents = [str(d) for d in reversed(Path(name).parents[:-1])]
        entries += [CpioEntry(d, 0o40755) for d in parents if d not in known]
        data = source.read_bytes()
        entries.append(CpioEntry(name, 0o100644, lzma.decompress(data) if source.suffix == ".xz" else data))
    return entries


def read_static_busybox(path: str) -> bytes:
    """busybox runs before the guest has any C library, so it must be linked statically (no PT_INTERP)."""
    fix = "apt-get install busybox-static"
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise NotSupportedHere(f"{path}: {err.strerror}", path=path, fix=fix) from err
    if not data.startswith(b"\x7fELF\x02"):
        raise NotSupportedHere(f"{path} is not a 64-bit ELF program", path=path, fix=fix)
    phoff, = struct.unpack_from("<Q", data, 0x20)             # ELF64 header: program headers' offset,
    entsize, count = struct.unpack_from("<HH", data, 0x36)    # their size and number (elf(5))
    if any(struct.unpack_from("<I", data, phoff + i * entsize)[0] == 3 for i in range(count)):   # PT_INTERP
        raise NotSupportedHere(f"{path} is linked dynamically: the guest's initramfs has no C library",
                               path=path, fix=fix)
    return data


def module_files(kernel: GuestKernel, names: tuple[str, ...]) -> dict[str, Path]:
    """The modules ``names`` need, dependencies first: initramfs name -> file in the unpacked package."""
    table = read_modules_dep((kernel.modules / "modules.dep").read_text())
    return {f"lib/modules/{kernel.release}/{path.removesuffix('.xz')}": kernel.modules / path
            for path in module_load_order(table, names)}


def cpio_newc(entries: list[CpioEntry]) -> bytes:
    """The "newc" cpio format, as the kernel unpacks it
    (Documentation/driver-api/early-userspace/buffer-format.rst)."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, entry in enumerate([*entries, CpioEntry("TRAILER!!!", 0)], start=1):
        name = entry.name.encode() + b"\0"
        fields = (ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, *entry.rdev, len(name), 0)
        out += b"070701" + b"".join(b"%08X" % value for value in fields) + name
        pad()
        out += entry.data
        pad()
    return bytes(out)


def write_initramfs(entries: list[CpioEntry], path: Path) -> Path:
    path.write_bytes(gzip.compress(cpio_newc(entries), compresslevel=1))   # CONFIG_RD_GZIP=y; speed over size
    return path


# --- qemu ---------------------------------------------------------------------------------------------------

def accelerator() -> tuple[str, str]:
    """("kvm", why) when this process may run a guest on KVM, else ("tcg", why not): qemu then translates
    every guest instruction in software, several times slower but the same guest."""
    import fcntl
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return "tcg", f"/dev/kvm: {err.strerror}"
    try:
        if fcntl.ioctl(fd, 0xAE00) != 12:               # KVM_GET_API_VERSION, stable at 12 since 2.6.22
            return "tcg", "/dev/kvm speaks an unknown KVM API version"
        os.close(fcntl.ioctl(fd, 0xAE01, 0))            # KVM_CREATE_VM
    except OSError as err:
        return "tcg", f"KVM_CREATE_VM: {err.strerror}"
    finally:
        os.close(fd)
    # Some clouds offer /dev/kvm without hardware virtualization (kvm_pvm, for instance), which boots only
    # kernels built for it: a stock kernel needs the VT-x or AMD-V back end, kvm_intel or kvm_amd.
    vendors = [name for name in ("kvm_intel", "kvm_amd") if os.path.isdir(f"/sys/module/{name}")]
    if not vendors:
        others = sorted(p.name for p in Path("/sys/module").glob("kvm_*")) or ["no vendor module"]
        return "tcg", f"/dev/kvm is served by {', '.join(others)}, not kvm_intel or kvm_amd"
    return "kvm", f"/dev/kvm served by {vendors[0]}"


def qemu_command(kernel: GuestKernel, initrd: Path, accel: str, share: str | None = None, disk: Path | None = None,
                 memory_mb: int = 2048, cpus: int = 2, project: str | None = None) -> list[str]:
    """No screen, no network: a serial console on stdout and, if asked, 9p shares and one disk."""
    command = [QEMU, "-name", "labcore-vm,process=labcore-vm", "-nodefaults", "-no-user-config",
               "-display", "none", "-serial", "stdio", "-no-reboot",
               "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
               "-smp", str(cpus), "-m", str(memory_mb), "-kernel", str(kernel.image), "-initrd", str(initrd),
               # panic=-1 and -no-reboot: if /init dies the kernel panics, reboots at once, and qemu exits.
               "-append", "console=ttyS0 quiet loglevel=1 panic=-1 cgroup_no_v1=all"]
    if share:
        # security_model=none: the guest's root reads the files as qemu's user does; multidevs=remap keeps
        # inode numbers unique across the host's mounts below ``share``.
        command += ["-fsdev", f"local,id={SHARE_TAG},path={share},security_model=none,readonly=on,"
                              "multidevs=remap",
                    "-device", f"virtio-9p-pci,fsdev={SHARE_TAG},mount_tag={SHARE_TAG}"]
    if project:
        command += ["-fsdev", f"local,id={PROJECT_TAG},path={project},security_model=none,readonly=on,"
                              "multidevs=remap",
                    "-device", f"virtio-9p-pci,fsdev={PROJECT_TAG},mount_tag={PROJECT_TAG}"]
    if disk:     # cache=unsafe: the disk is thrown away after the run, so flushing it to the host is wasted
        command += ["-drive", f"file={disk},if=virtio,format=raw,cache=unsafe"]
    return command


def boot(kernel: GuestKernel, init: str, accel: str, *, files: dict[str, Path] | None = None,
         share: str | None = None, disk_mb: int = 0, timeout: float = 120, memory_mb: int = 2048,
         cpus: int = 2, project: str | None = None, extra: list[str] = ()) -> list[tuple[float, str]]:
    """Build the initramfs, run qemu until the guest powers off, and return its console lines with their
    arrival times (seconds since qemu started). qemu is killed on timeout, error and interrupt. ``extra``
    is more qemu arguments (the lab VM's disk and shares: tools/labvm.py)."""
    if not shutil.which(QEMU):
        raise NotSupportedHere(f"{QEMU} not found", fix="apt-get install qemu-system-x86")
    scratch = paths.scratch_dir()
    scratch.mkdir(parents=True, exist_ok=True)
    with journal.Scope() as scope:
        work = Path(tempfile.mkdtemp(prefix="labcore-vm-", dir=scratch))
        scope.record("directory", str(work), "rmtree", path=str(work))
        initrd = write_initramfs(initramfs_entries(init, files), work / "labcore-initrd.gz")
        disk = make_disk(work / "labcore-disk.img", disk_mb) if disk_mb else None
        command = qemu_command(kernel, initrd, accel, share, disk, memory_mb, cpus, project) + list(extra)
        started = time.monotonic()
        qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        scope.record("process", str(qemu.pid), "kill", pid=qemu.pid,
                     start=journal.process_start_time(qemu.pid))
        try:
            lines = read_console(qemu, started, timeout)
            qemu.wait(timeout=30)                      # the console closes as qemu exits
        finally:
            scope.close()                              # kills qemu if it is still running
            qemu.wait()
    return lines


def make_disk(path: Path, size_mb: int) -> Path:
    """An empty ext4 filesystem in a sparse file: a real block device for the guest (blk-throttle and io.max
    act on disks; a tmpfs has none)."""
    if not shutil.which("mkfs.ext4"):
        raise NotSupportedHere("mkfs.ext4 not found", fix="apt-get install e2fsprogs")
    with open(path, "wb") as image:
        image.truncate(size_mb << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "labcore-tmp", str(path)], check=True, capture_output=True)
    return path


def read_console(qemu: subprocess.Popen, started: float, timeout: float) -> list[tuple[float, str]]:
    """Lines from the serial console until qemu exits, each stamped on arrival (for the boot time)."""
    import selectors
    lines, pending = [], b""
    with selectors.DefaultSelector() as selector:
        selector.register(qemu.stdout, selectors.EVENT_READ)
        while True:
            left = started + timeout - time.monotonic()
            if left <= 0 or not selector.select(left):
                tail = "\n".join(text for _, text in lines[-20:])
                raise LabError(f"the guest did not power off within {timeout:.0f} s; console ends:\n{tail}",
                               fix="give it a longer timeout (tcg is much slower than kvm)")
            chunk = os.read(qemu.stdout.fileno(), 65536)
            now = time.monotonic() - started
            pending += chunk
            *complete, pending = pending.split(b"\n")
            lines += [(now, line.decode(errors="replace").rstrip("\r")) for line in complete]
            if not chunk:
                if pending:
                    lines.append((now, pending.decode(errors="replace")))
                return lines


# --- reading the console ------------------------------------------------------------------------------------

def parse_console(lines: list[tuple[float, str]]) -> dict:
    """The markers /init printed: {"seconds", "uptime", "release", "boot_id", "output", "exit_code"}."""
    report: dict = {"output": [], "exit_code": None}
    for seconds, text in lines:
        if text.startswith(ERROR):
            raise LabError("the guest's /init failed: " + text[len(ERROR):].strip(),
                           fix="read the console: " + " | ".join(t for _, t in lines[-8:]))
        if text.startswith(UP + " ") and "seconds" not in report:
            report.update(item.split("=", 1) for item in text.split()[1:] if "=" in item)
            report["seconds"] = seconds
        elif "seconds" in report and report["exit_code"] is None:
            before, marker, code = text.rpartition(EXIT)
            if marker and code.isdigit():
                report["exit_code"] = int(code)
                text = before                      # output that did not end with a newline
            if text or not marker:
                report["output"].append(text)
    if "seconds" not in report:
        raise LabError("the guest never printed " + UP,
                       fix="read the console: " + " | ".join(t for _, t in lines[-8:]))
    report["output"] = "\n".join(report["output"])
    return report


# --- the two ways to use a guest ----------------------------------------------------------------------------

# How long a marker boot may take: about a second under KVM; under TCG, emulating every instruction (a guest
# inside the lab VM has no KVM of its own), a minute and a half was measured on a 2-CPU host, more when busy.
BOOT_TIMEOUT = {"kvm": 120, "tcg": 900}


def boot_marker(timeout: float | None = None) -> Step:
    """Boot a kernel that prints a marker and powers off; show that it is not the host's kernel."""
    title = "Boot a virtual machine: a kernel of its own"
    try:
        kernel = ensure_kernel()
        accel, why = accelerator()
        lines = boot(kernel, marker_init(), accel, timeout=timeout or BOOT_TIMEOUT[accel], memory_mb=256, cpus=1)
    except NotSupportedHere as err:                # no qemu, no kernel to boot, no way to download one
        return hosts.refuse(title, f"{QEMU} -accel ACCEL -kernel vmlinuz -initrd busybox+/init", err)
    guest = parse_console(lines)
    host = {"kernel release": os.uname().release,
            "boot_id": procfs.sysctl("kernel.random.boot_id")}
    return Step(
        title=title,
        action=f"{QEMU} -accel {accel} -kernel {kernel.image.name} -initrd busybox+/init",
        before=host,
        columns=("host", "guest VM"),
        after={"kernel release": guest["release"], "boot_id": guest["boot_id"]},
        note=(f"the guest booted its own kernel: its marker arrived {guest['seconds']:.2f} s after qemu "
              f"started ({guest['uptime']} s of it in the guest's kernel; {accel}: {why})"),
        data={"seconds": guest["seconds"], "guest_uptime": float(guest["uptime"]), "accel": accel,
              "kernel_release": guest["release"], "boot_id": guest["boot_id"],
              "console": "\n".join(t for _, t in lines)})


def run_in_guest(command: list[str], share: str = "/", cwd: str = "/", env: dict | None = None,
                 disk_mb: int = 0, timeout: float = 600, memory_mb: int = 2048, cpus: int = 2,
                 project: str | None = None, modules: tuple[str, ...] = ()) -> GuestResult:
    """Run ``command`` as root in a guest that sees ``share`` (read-only) as / and has only cgroup v2.

    Its /tmp is a tmpfs, or with ``disk_mb`` a fresh ext4 disk of that size (for block-I/O limits).
    ``project``, a directory of the host, is shared too, at the same path: visible even below /tmp.
    ``modules``: kernel modules to load as well, e.g. ("overlay",) for a container's root.
    """
    if not isinstance(command, list) or not command or not all(isinstance(w, str) for w in command):
        raise BadInput(f"command must be a non-empty list of strings, like [\"cat\", \"/proc/mounts\"], "
                       f"not {command!r}")
    if not os.path.isdir(share):
        raise BadInput(f"share must be a directory on this host, like \"/\", not {share!r}")
    kernel = ensure_kernel()
    files = module_files(kernel, SHARE_MODULES + (DISK_MODULES if disk_mb else ()) + tuple(modules))
    init = command_init(command, cwd, list(files), env, disk=bool(disk_mb), project=project)
    accel, why = accelerator()
    lines = boot(kernel, init, accel, files=files, share=share, disk_mb=disk_mb, timeout=timeout,
                 memory_mb=memory_mb, cpus=cpus, project=project)
    guest = parse_console(lines)
    if guest["exit_code"] is None:
        raise LabError("the guest powered off without reporting the command's exit code",
                       fix="read the console: " + " | ".join(t for _, t in lines[-8:]))
    return GuestResult(guest["exit_code"], guest["output"], guest["seconds"], accel, guest["release"],
                       why, "\n".join(t for _, t in lines))
