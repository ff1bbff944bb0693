"""The lab VM: a clean, reproducible cgroup v2 Debian host that the stored notebook outputs come from.

    tools/labvm.py build                     build the image (cached; a second run with nothing to do is quick)
    tools/labvm.py lock                      pin its Python packages afresh (tools/labvm-constraints.txt)
    tools/labvm.py execute [NOTEBOOK...]     run notebooks inside it and store their outputs (`./lab execute --vm`)
    tools/labvm.py run COMMAND...            run a command inside it, with the checkout at /lab

Stored outputs are what a reader sees first, so they must not show the machine that made them (its paths,
its cgroup v1 tree, its kernel build, its root directory). The VM is Debian's own kernel (the one
``labcore.lessons.vm`` downloads and caches) booting a root filesystem built by mmdebstrap(1) from Debian's packages:

* the packages ``./lab`` installs (read from its RUN_PACKAGES and TEST_PACKAGES), Python, fonts for graphviz;
* /lab/.venv with the Python packages of pyproject.toml at the versions of tools/labvm-constraints.txt
  (wheels for Debian's Python downloaded on this host by pip, installed offline), labcore from /lab;
* the kernel's modules (so modprobe works) and the kernel itself in /var/cache/labcore-vm (for 07's VM).

The image is an ext4 file in ~/.cache/labcore-vm, named by a hash of everything that goes into it; it is
built once and never written to: qemu boots it with ``snapshot=on``, so every boot starts from the same disk.
The kernel command line carries ``cgroup_no_v1=all`` (a pure cgroup v2 host), the guest has no network but
its loopback, and it sees this checkout read-only over 9p; /init copies it to /lab (without .git and the venvs),
and the notebooks it executed come back through a second, writable 9p share.

See mmdebstrap(1), qemu-system-x86_64(1), mkfs.ext4(8) (-d), switch_root(8), and ``labcore.lessons.vm`` for the
initramfs and qemu.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labcore.errors import LabError, NotSupportedHere  # noqa: E402  (the checkout's labcore, also as a script)
from labcore.kernel import journal  # noqa: E402
from labcore.lessons import vm  # noqa: E402

RECIPE = 1                         # raise it when a change to build_image() should give a new image
SUITE = "bookworm"
MIRRORS = ["deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main"]
# Beyond what ./lab installs: Python for the venv, modprobe for the kernel's modules, ps and mkfs for the
# lessons, fonts so that graphviz measures text as it does on a desktop.
BASE_PACKAGES = ["python3", "python3-venv", "kmod", "procps", "e2fsprogs", "fonts-dejavu-core",
                 "ca-certificates", "busybox-static", "iproute2"]
# What ./lab installs for the build machine's own tests (the browser test, building this image), not the lab's.
BUILD_HOST_ONLY = {"chromium", "mmdebstrap"}
EXTRAS = "test"                    # what `./lab execute` installs: nbclient, ipykernel, the peers' SDKs
HOSTNAME = "lab"
GUEST_PROJECT = "/lab"             # where the checkout is in the guest, and the only path its outputs show
GUEST_KERNEL_CACHE = "/var/cache"   # XDG_CACHE_HOME: labcore.lessons.vm's cache, so 07 boots the same kernel offline
OUT_TAG = "out"
# Debian 12's Python is 3.11.2: some releases on PyPI want a newer 3.11.x, so the image has its own lock.
GUEST_PYTHON = "3.11.2"
LOCK = ROOT / "tools" / "labvm-constraints.txt"
SOURCE_DATE_EPOCH = "1700000000"    # mmdebstrap stamps files with it: the same recipe gives the same tree
IMAGE_SLACK_MB = 3072               # free space in the guest: images, containers, Docker's data-root
# What of the checkout the guest does not copy: this host's venvs, history, builds and bytecode.
NOT_COPIED = ["./.git", "./.venv", "./.venv-pythons", "./test-artifacts", "./_build", "./build", "./*.egg-info",
              "*/__pycache__"]


# --- what goes into the image, and its name ---------------------------------------------------------------

def lab_packages(lab_script: Path = ROOT / "lab") -> list[str]:
    """The Debian packages of ./lab's RUN_PACKAGES and TEST_PACKAGES ("package:/a/file/it/installs")."""
    text = lab_script.read_text()
    packages = []
    for name in ("RUN_PACKAGES", "TEST_PACKAGES"):
        block = re.search(rf"^{name}=\((.*?)^\)", text, re.DOTALL | re.MULTILINE)
        if block is None:
            raise LabError(f"{lab_script} has no {name}=( ... ) list", fix="keep ./lab's package lists")
        packages += [entry.split(":", 1)[0] for entry in re.findall(r'"([^"]+)"', block.group(1))]
    return packages


def packages() -> list[str]:
    return sorted(set(BASE_PACKAGES + lab_packages()) - BUILD_HOST_ONLY)


def constraints() -> str:
    """The Python packages' versions for the image: tools/labvm-constraints.txt (`tools/labvm.py lock`)."""
    return LOCK.read_text() if LOCK.exists() else ""


def image_key(kernel: vm.GuestKernel, pinned: str) -> str:
    """A name for the image from everything that goes into it: a change to any of them builds a new one."""
    recipe = "\n".join([str(RECIPE), SUITE, *MIRRORS, *packages(), pinned, kernel.release, EXTRAS,
                        GUEST_PROJECT, GUEST_KERNEL_CACHE, HOSTNAME, (ROOT / "pyproject.toml").read_text()])
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def image_path(key: str) -> Path:
    return vm.cache_dir() / f"labcore-lab-{key}.ext4"


# --- building it -------------------------------------------------------------------------------------------

def ensure_image(log=print) -> Path:
    """The cached image for today's recipe, else a new one (several minutes: packages are downloaded)."""
    kernel = vm.ensure_kernel()
    image = image_path(image_key(kernel, constraints()))
    if not image.exists():
        build_image(kernel, image, log)
    os.utime(image)                         # its last use: what forget_stale_images() goes by
    forget_stale_images(keep=image)
    return image


def forget_stale_images(keep: Path, days: float = 2) -> None:
    """Remove other recipes' images unused for ``days`` (about 2 GB each). Not at once: checkouts of
    other branches on this machine may use theirs."""
    for stale in vm.cache_dir().glob("labcore-lab-*.ext4"):
        if stale != keep and time.time() - stale.stat().st_mtime > days * 86400:
            stale.unlink(missing_ok=True)


def build_image(kernel: vm.GuestKernel, image: Path, log=print) -> None:
    """Wheels first (pip on this host), then the root filesystem (mmdebstrap), then the ext4 file."""
    for program, package in (("mmdebstrap", "mmdebstrap"), ("mkfs.ext4", "e2fsprogs")):
        if not shutil.which(program):
            raise NotSupportedHere(f"{program} not found: the lab VM's image is built with it",
                                   fix=f"apt-get install {package}")
    image.parent.mkdir(parents=True, exist_ok=True)
    with journal.Scope() as scope:
        work = Path(tempfile.mkdtemp(prefix="labcore-labvm-build-", dir=image.parent))
        scope.record("directory", str(work), "rmtree", path=str(work))
        started = time.monotonic()
        download_wheels(work / "wheels", constraints())
        log(f"labvm: wheels downloaded ({time.monotonic() - started:.0f} s)")
        make_rootfs(kernel, work, work / "rootfs")
        log(f"labvm: root filesystem built ({time.monotonic() - started:.0f} s)")
        make_ext4(work / "rootfs", work / "image.ext4")
        os.rename(work / "image.ext4", image)       # atomic: a half-built image is never seen in the cache
        log(f"labvm: {image} ({time.monotonic() - started:.0f} s)")


def download_wheels(wheels: Path, pinned: str = "") -> list[Path]:
    """pip download on this host (its registry settings and cache) of wheels for Debian 12's Python, the
    versions ``pinned`` (constraints) where given: the image's pip then installs offline, building nothing."""
    wheels.mkdir()
    (wheels / "constraints.txt").write_text(pinned)
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in (5, 12, 17, 28, 34, 36)]
    platforms += ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64", "linux_x86_64", "any"]
    requirements = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-c", _REQUIREMENTS, str(ROOT / "pyproject.toml"), EXTRAS],
        capture_output=True, text=True, check=True).stdout.split("\n")
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "download", "-q", "-d", str(wheels),
                    "--only-binary=:all:", "--python-version", GUEST_PYTHON, "--implementation", "cp",
                    *(f"--platform={platform}" for platform in platforms), "-c", str(wheels / "constraints.txt"),
                    "setuptools>=61", "wheel", "pip", *filter(None, requirements)], check=True)
    return sorted(wheels.glob("*.whl"))


def lock() -> str:
    """Resolve pyproject.toml's requirements for Debian 12's Python afresh and pin what was chosen."""
    with tempfile.TemporaryDirectory(prefix="labcore-labvm-lock-") as scratch:
        wheels = download_wheels(Path(scratch) / "wheels")
    pins = sorted({"{}=={}".format(*wheel.name.split("-")[:2]).replace("_", "-").lower() for wheel in wheels})
    LOCK.write_text("# tools/labvm.py lock: the Python packages of the lab VM's image, for Python "
                    f"{GUEST_PYTHON}\n" + "".join(pin + "\n" for pin in pins))
    return f"{LOCK}: {len(pins)} packages"


# The requirements of pyproject.toml with the given extras (tomllib: Python 3.11).
_REQUIREMENTS = """import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
wanted = project["dependencies"] + [r for extra in sys.argv[2].split(",")
                                    for r in project["optional-dependencies"][extra]]
print("\\n".join(wanted))"""


def make_rootfs(kernel: vm.GuestKernel, work: Path, rootfs: Path) -> None:
    """mmdebstrap as root into a directory; its hooks put in the kernel's modules and build /lab/.venv."""
    tree = kernel.modules.parents[2]                 # ~/.cache/labcore-vm/linux-image-...
    cached = f"{GUEST_KERNEL_CACHE}/labcore-vm/{tree.name}"
    hooks = {
        # The kernel once, in the guest's own labcore.lessons.vm cache, and its modules hard-linked from there.
        "kernel": f'mkdir -p "$1{GUEST_KERNEL_CACHE}/labcore-vm" && cp -a {shlex.quote(str(tree))} '
                  f'"$1{GUEST_KERNEL_CACHE}/labcore-vm/"',
        "modules": f'mkdir -p "$1/lib/modules" && cp -al "$1{cached}/lib/modules/{kernel.release}" '
                   f'"$1/lib/modules/" && chroot "$1" depmod {kernel.release}',
        "host": f'echo {HOSTNAME} > "$1/etc/hostname" && '
                f'printf "127.0.0.1 localhost\\n127.0.1.1 {HOSTNAME}\\n::1 localhost\\n" > "$1/etc/hosts"',
        "venv": venv_hook(work),
    }
    command = ["mmdebstrap", "--mode=root", "--variant=apt", "--format=directory", "-q",
               "--include=" + ",".join(packages()), "--aptopt=APT::Install-Recommends false",
               "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
               "--dpkgopt=path-exclude=/usr/share/locale/*",
               *(f"--customize-hook={hook}" for hook in hooks.values()), SUITE, str(rootfs), *MIRRORS]
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    subprocess.run(command, check=True, env=env)


def venv_hook(work: Path) -> str:
    """Shell for mmdebstrap: a venv at /lab/.venv, and labcore installed into it from a copy of the
    checkout's pyproject.toml, package and commands (bin/), the way ./lab does (a plain path entry to /lab)."""
    wheels = shlex.quote(str(work / "wheels"))
    # env -i: none of this host's pip settings (its PIP_* variables name its own wheel directories).
    pip = (f"env -i PATH=/usr/bin:/bin {GUEST_PROJECT}/.venv/bin/pip install -q --no-index "
           f"--find-links /tmp/wheels -c /tmp/wheels/constraints.txt")
    return " && ".join([
        f'mkdir -p "$1{GUEST_PROJECT}" && cp -a {wheels} "$1/tmp/wheels"',
        f'cp -a {shlex.quote(str(ROOT / "pyproject.toml"))} {shlex.quote(str(ROOT / "README.md"))} '
        f'{shlex.quote(str(ROOT / "labcore"))} {shlex.quote(str(ROOT / "bin"))} "$1{GUEST_PROJECT}/"',
        f'chroot "$1" python3 -m venv {GUEST_PROJECT}/.venv',
        f'chroot "$1" {pip} --upgrade pip setuptools wheel',
        f'chroot "$1" {pip} --no-build-isolation --config-settings editable_mode=compat '
        f'-e "{GUEST_PROJECT}[{EXTRAS}]"',
        # The checkout arrives at run time; what was copied in for the install goes again.
        f'rm -rf "$1/tmp/wheels" "$1{GUEST_PROJECT}/labcore" "$1{GUEST_PROJECT}/bin" '
        f'"$1{GUEST_PROJECT}/pyproject.toml" "$1{GUEST_PROJECT}/README.md" "$1{GUEST_PROJECT}"/*.egg-info',
    ])


def make_ext4(rootfs: Path, image: Path) -> None:
    """An ext4 filesystem made from the directory (mkfs.ext4 -d): no mount, no loop device."""
    used = subprocess.run(["du", "-sm", "--apparent-size", str(rootfs)], capture_output=True, text=True,
                          check=True).stdout.split()[0]
    size_mb = int(used) * 5 // 4 + IMAGE_SLACK_MB
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "labcore-lab", "-E", "root_owner=0:0",
                    "-U", "clear", "-d", str(rootfs), str(image), f"{size_mb}M"],
                   check=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": SOURCE_DATE_EPOCH})


# --- booting it ------------------------------------------------------------------------------------------

def guest_init(command: str, modules: list[str]) -> str:
    """/init of the initramfs: mount the image as the new root, the checkout and the out share in it, the
    guest's own /proc, /sys, cgroup2, /dev; then switch_root, so that the kernel's modprobe finds the
    image's modules, and run ``command`` in /lab as PID 1's child."""
    loads = "".join(f"insmod /{path} || fail insmod {path}\n" for path in modules)
    excludes = " ".join(f"--exclude={shlex.quote(pattern)}" for pattern in NOT_COPIED)
    inner = f"""set -u
/bin/busybox hostname {HOSTNAME}
ip link set lo up
rm -rf {GUEST_PROJECT}/* && (cd /mnt/project && tar {excludes} -cf - .) | (cd {GUEST_PROJECT} && tar -xf -) \\
  || echo "{vm.ERROR} copy /lab"
cd {GUEST_PROJECT}
read -r uptime idle < /proc/uptime
echo "{vm.UP} uptime=$uptime release=$(uname -r) boot_id=$(cat /proc/sys/kernel/random/boot_id)"
env -i PATH={vm.GUEST_PATH} HOME=/root LANG=C.UTF-8 TERM=dumb XDG_CACHE_HOME={GUEST_KERNEL_CACHE} \\
  PYTHONDONTWRITEBYTECODE=1 sh -c {shlex.quote(command)}
echo "{vm.EXIT}$?"
sync
/bin/busybox poweroff -f
"""
    return f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {{ echo "{vm.ERROR} $*"; poweroff -f; }}
{loads}mkdir -p /newroot
mount -t ext4 /dev/vda /newroot || fail mount /dev/vda
cd /newroot
mkdir -p mnt/project mnt/out
mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=262144 {vm.PROJECT_TAG} mnt/project \\
  || fail mount 9p {vm.PROJECT_TAG}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 {OUT_TAG} mnt/out || fail mount 9p {OUT_TAG}
mount -t proc proc proc && mount -t sysfs sysfs sys || fail mount proc sys
mount -t cgroup2 cgroup2 sys/fs/cgroup || fail mount cgroup2
mount -t devtmpfs devtmpfs dev && mkdir -p dev/pts dev/shm && mount -t devpts devpts dev/pts \\
  && mount -t tmpfs tmpfs dev/shm && mount -t tmpfs tmpfs run || fail mount dev run
chmod 1777 tmp
cat > run/labcore-guest.sh <<'LABCORE_GUEST_EOF'
{inner}LABCORE_GUEST_EOF
exec switch_root /newroot /bin/sh /run/labcore-guest.sh
"""


def run(command: str, out: Path, timeout: float = 4 * 3600, memory_mb: int = 4096, cpus: int = 2,
        log=print) -> vm.GuestResult:
    """Boot the lab VM, run ``command`` (shell) in /lab, power off. ``out`` is the guest's /mnt/out."""
    image = ensure_image(log)
    kernel = vm.ensure_kernel()
    files = vm.module_files(kernel, vm.SHARE_MODULES + vm.DISK_MODULES)
    accel, why = vm.accelerator()
    log(f"labvm: booting Debian {kernel.release} on {image.name} ({accel}: {why})")
    extra = ["-drive", f"file={image},if=virtio,format=raw,snapshot=on,cache=unsafe",
             "-fsdev", f"local,id={OUT_TAG},path={out},security_model=none,multidevs=remap",
             "-device", f"virtio-9p-pci,fsdev={OUT_TAG},mount_tag={OUT_TAG}"]
    lines = vm.boot(kernel, guest_init(command, list(files)), accel, files=files, timeout=timeout,
                    memory_mb=memory_mb, cpus=cpus, project=str(ROOT), extra=extra)
    guest = vm.parse_console(lines)
    if guest["exit_code"] is None:
        raise LabError("the lab VM powered off without reporting the command's exit code",
                       fix="read the console: " + " | ".join(t for _, t in lines[-8:]))
    return vm.GuestResult(guest["exit_code"], guest["output"], guest["seconds"], accel, guest["release"],
                          why, "\n".join(t for _, t in lines))


# --- executing notebooks in it -------------------------------------------------------------------------

def execute(notebooks: list[Path], log=print) -> int:
    """Run each notebook in the lab VM with tools/execute_notebooks.py; store those that ran whole."""
    names = [path.resolve().relative_to(ROOT).as_posix() for path in notebooks]
    scratch = vm.cache_dir() / "labcore-labvm-out"
    with journal.Scope() as scope:
        scratch.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="labcore-labvm-out-", dir=scratch))
        scope.record("directory", str(out), "rmtree", path=str(out))
        # The notebooks and diagrams/ go back (07 redraws diagrams/stacks.* with what it measured).
        busybox = "from labcore.image.baseimage import ensure_base_image; ensure_base_image()"
        command = (f"{{ .venv/bin/python -c '{busybox}' "
                   f"&& .venv/bin/python tools/execute_notebooks.py {shlex.join(names)}; }} >/mnt/out/log 2>&1; "
                   f"status=$?; cp --parents {shlex.join(names)} diagrams/* /mnt/out/; exit $status")
        started = time.monotonic()
        with follow(out / "log", log):
            result = run(command, out, log=log)
        log(f"labvm: {len(names)} notebook(s) in {time.monotonic() - started:.0f} s "
            f"(booted in {result.boot_seconds:.1f} s, {result.accel})")
        stored = store_results(names, out)
        log(f"labvm: stored {', '.join(stored) or 'nothing'}")
        return 0 if result.exit_code == 0 and len(stored) == len(names) else 1


def store_results(names: list[str], out: Path) -> list[str]:
    """Copy back what the guest changed: the notebooks that ran (one that failed was left as it was) and
    the diagrams they redrew."""
    stored = []
    for name in [*names, *(f"diagrams/{path.name}" for path in sorted((out / "diagrams").glob("*")))]:
        result = out / name
        if result.exists() and (not (ROOT / name).exists() or result.read_bytes() != (ROOT / name).read_bytes()):
            shutil.copyfile(result, ROOT / name)
            stored.append(name)
    return stored


class follow:
    """Print the lines a file gains while the ``with`` block runs: the guest's progress, live."""

    def __init__(self, path: Path, log):
        self.path, self.log, self.done = path, log, threading.Event()

    def __enter__(self) -> "follow":
        self.thread = threading.Thread(target=self.tail, daemon=True)
        self.thread.start()
        return self

    def tail(self) -> None:
        offset = 0
        while not self.done.wait(2):
            if self.path.exists():
                with open(self.path, "rb") as file:
                    file.seek(offset)
                    chunk = file.read()
                offset += len(chunk)
                for line in chunk.decode(errors="replace").splitlines():
                    self.log(f"  [lab vm] {line}")

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/labvm.py", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("build", help="build the image, or say where the cached one is")
    verbs.add_parser("lock", help="pin the image's Python packages afresh (tools/labvm-constraints.txt)")
    execute_parser = verbs.add_parser("execute", help="execute notebooks in the VM and store their outputs")
    execute_parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    run_parser = verbs.add_parser("run", help="run a shell command in /lab in the VM")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    log = lambda text: print(text, file=sys.stderr, flush=True)     # noqa: E731
    if args.verb == "build":
        print(ensure_image(log))
        return 0
    if args.verb == "lock":
        print(lock())
        return 0
    if args.verb == "execute":
        return execute(args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb")), log)
    with journal.Scope() as scope:
        out = Path(tempfile.mkdtemp(prefix="labcore-labvm-out-"))
        scope.record("directory", str(out), "rmtree", path=str(out))
        result = run(shlex.join(args.command) if len(args.command) > 1 else " ".join(args.command), out,
                     log=log)
    print(result.output)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
