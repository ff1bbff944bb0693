"""Run by tests/vm/test_hub_guest.py inside the cgroup v2 guest, as root: what the hub does for one student
(``tools.hub.fairness``), then that student's session inside the group, then the hub's stop. Prints one JSON
line of what the kernel answered at each step.

The student is uid 1001 (the host's ``student``), HOME /tmp/student: the guest's / is the host's, read-only.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from labcore.kernel.cgroups import read_keyed, read_text  # noqa: E402
from tools.hub.fairness import Fairness, class_limits  # noqa: E402

UID = 1001
PIDS = 64


def as_student(fairness, student, script: str) -> subprocess.CompletedProcess:
    """``script`` in a shell of the student's, started in their group as the hub starts their server."""
    environment = ["HOME=/tmp/student", "LABCORE_HOME=/tmp/student/state", "LANG=C.UTF-8",
                   f"PATH={ROOT / '.venv' / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"]
    return subprocess.run(["setpriv", f"--reuid={UID}", f"--regid={UID}", "--init-groups", "env", "-i",
                           *environment, "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: fairness.enter(student, os.getpid()))


def exit_and_error(done: subprocess.CompletedProcess) -> str:
    """The exit status the script echoed, and labcore's error when it was the lab that failed (125)."""
    status = done.stdout.strip()
    return status if status != "125" else f"125: {done.stderr.strip()[-400:]}"


def load_overlay() -> None:
    """overlayfs is a module in Debian's kernel (CONFIG_OVERLAY_FS=m), and the guest loads only what its 9p
    share and disk need: the module from the same unpacked package, decompressed, insmod'ed by busybox."""
    import lzma
    from labcore.lessons import vm
    if "overlay" in Path("/proc/filesystems").read_text():
        return
    module = next(vm.ensure_kernel().modules.glob("kernel/fs/overlayfs/overlay.ko*"))
    data = lzma.decompress(module.read_bytes()) if module.suffix == ".xz" else module.read_bytes()
    Path("/tmp/overlay.ko").write_bytes(data)
    subprocess.run(["busybox", "insmod", "/tmp/overlay.ko"], check=True)


def main() -> None:
    load_overlay()
    os.makedirs("/tmp/student", exist_ok=True)
    os.chown("/tmp/student", UID, UID)
    fairness = Fairness(Path("/tmp/hub"), class_limits("256m", "1", str(PIDS)))
    student = fairness.make("student", UID, UID)
    top = student.group.dir("unified")
    found = {"group": str(top), "leaf": str(student.home.dir("unified"))}
    found["delegation seen by the student"] = as_student(fairness, student, (
        "python3 -c 'from labcore.kernel.cgroups import detect, find_delegation; print(find_delegation(detect()).base)'"
        .replace("python3", str(ROOT / ".venv" / "bin" / "python")))).stdout.strip()
    found["raise own memory.max"] = as_student(fairness, student, f"echo max > {top}/memory.max").stderr.strip()
    found["container -m 32m, 100M written"] = exit_and_error(as_student(fairness, student, (
        "labcore run --rm -m 32m --network none busybox dd if=/dev/zero of=/dev/null bs=100M count=1 "
        ">/dev/null; echo $?")))
    found["container groups made by the student"] = sorted(
        p.name for p in top.glob("labcore/labcore-*"))    # removed by then: the container was --rm
    found["container, 400M written, no -m"] = exit_and_error(as_student(fairness, student, (
        "labcore run --rm --network none busybox dd if=/dev/zero of=/dev/null bs=400M count=1 >/dev/null;"
        " echo $?")))
    found["fork bomb"] = exit_and_error(as_student(fairness, student, (
        "labcore run --rm --network none busybox sh -c 'b() { b | b & }; b; exec sleep 3' >/dev/null 2>&1;"
        " echo $?")))
    found["memory.events"] = read_keyed(top / "memory.events")
    # A refused fork is counted in the forking task's own group before Linux 6.2 (here: the leaf, where a
    # container without limits stays), in the group whose limit it hit after: both are read.
    found["pids.events"] = read_keyed(top / "pids.events")
    found["pids.events in the leaf"] = read_keyed(student.home.dir("unified") / "pids.events")
    found["pids.peak"] = (read_text(top / "pids.peak") or "").strip()          # Linux 6.1 and later
    leftover = as_student(fairness, student, "sleep 600 >/dev/null 2>&1 & labcore run -d --network none "
                                                     "busybox sleep 600 >/dev/null 2>&1")
    found["detached before stop"] = leftover.returncode
    fairness.remove(student)
    found["group after stop"] = top.exists()
    found["student processes after stop"] = subprocess.run(["pgrep", "-U", str(UID)],
                                                           capture_output=True, text=True).stdout.split()
    print("HUB-GUEST " + json.dumps(found))


def reroot() -> None:
    """Re-run this script where the host's / is the root of its mount namespace, as a booted system has it.

    The guest's /init runs the command with chroot(8) into /host, and the kernel refuses a user namespace to
    a chrooted process (user_namespaces(7), EPERM: "the caller's root directory does not match the root
    directory of the mount namespace"), so no student could run a rootless container there. switch_root(8)
    is how an initramfs hands over instead: in a mount namespace of our own, move /host onto / and chroot
    into it. nsenter --root reaches the initramfs's / through PID 1 (its busybox does the rest)."""
    script = f"cd /host && /bin/busybox mount --move . / && exec /bin/busybox chroot . " \
             f"env HUB_GUEST_REROOTED=1 {sys.executable} {Path(__file__).resolve()}"
    os.execvp("nsenter", ["nsenter", "--target", "1", "--root", "/bin/busybox", "unshare", "-m",
                          "/bin/busybox", "sh", "-c", script])


if __name__ == "__main__":
    reroot() if not os.environ.get("HUB_GUEST_REROOTED") else main()
