"""The root filesystem, shown: an image is a directory, chroot(2) can be escaped, pivot_root(2) cannot (notebook 06).

``make_rootfs`` unpacks the busybox image into a directory; ``look_inside`` compares it with the host's "/".
Then the escape of man 2 chroot (NOTES), done for real by a root child: chroot into a subdirectory, which
leaves the working directory above the new root; climb with ".." past the old one; chroot("."). After chroot
the climb ends on the host's "/"; after pivot_root in a new mount namespace (``labcore.kernel.rootfs``, runc's
order) it ends at the image's root, since nothing in that namespace leads to the host's files any more.

Next: ``labcore.runtime.container`` starts a command as pid 1 on such a root.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from labcore import paths
from labcore.errors import LabError, NeedsPrivilege, NotSupportedHere
from labcore.image import baseimage, oci
from labcore.kernel import journal, process, syscalls, userns
from labcore.kernel.namespaces import make_mounts_private
from labcore.kernel.rootfs import bind_root, pivot_to
from labcore.lessons import hosts
from labcore.lessons.evidence import Step, current_mode

ESCAPE_DIR = "labcore-escape"
_REFUSED = (NeedsPrivilege, NotSupportedHere)      # the host forbids it: the step says so
HOST_ROOT, IMAGE_ROOT = "the host's /", "the image's root"


# --- the image's files in a directory -------------------------------------------------------------------

def unpack(image, destination: str | os.PathLike, undo: journal.Scope | journal.Journal) -> Path:
    """Extract ``image``'s layers into a new directory, recorded for removal before the first file lands."""
    destination = Path(destination)
    if os.path.lexists(destination):              # not ours: never journaled for removal
        raise LabError(f"{destination} exists already: the image is unpacked into a new directory",
                       syscall="mkdir", path=str(destination), fix="give a path that does not exist yet")
    undo.record("directory", str(destination), "rmtree", path=str(destination))      # before it exists
    destination.mkdir(parents=True)
    oci.Store().unpack(image, destination)
    return destination


def make_rootfs(image=None) -> Path:
    """The busybox image (or ``image``) unpacked into ``labcore-rootfs-<id>`` under the scratch directory."""
    if image is None:
        image = baseimage.ensure_base_image()
    directory = paths.scratch_dir() / f"{paths.PREFIX}-rootfs-{secrets.token_hex(6)}"
    return unpack(image, directory, journal.Journal())


# --- evidence: where "/" is -----------------------------------------------------------------------------

def _identity(path: str | os.PathLike) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def view_of_root(known: dict[tuple[int, int], str]) -> dict[str, object]:
    """What this process sees at "/": which directory it is (by device and inode), its names, the OS."""
    where = known.get(_identity("/"), "device %d, inode %d" % _identity("/"))
    names = sorted(os.listdir("/"))
    try:
        release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines()
                       if "=" in line).get("PRETTY_NAME", "?").strip('"')
    except OSError:
        release = "absent"
    shown = names if len(names) <= 14 else names[:10] + [f"... {len(names)} names"]
    return {"/ is": where, "ls /": shown, "/etc/os-release": release}


def _landmarks(root: str | os.PathLike) -> dict[tuple[int, int], str]:
    return {_identity("/"): HOST_ROOT, _identity(root): IMAGE_ROOT}


def look_inside(root: str | os.PathLike) -> Step:
    """The host's "/" beside the image's root filesystem: what a container will see instead."""
    known = _landmarks(root)
    before = view_of_root(known)
    try:
        after = process.run_in_child(_chrooted_view, str(root), known)
    except _REFUSED as err:
        return hosts.refuse("What is in the image", f"ls {root}", err)
    files = sum(len(names) for _, _, names in os.walk(root))
    after["files"] = files
    return Step("What is in the image", f"ls {root}", before, after, current_mode(), columns=("host", "image"),
                note="an image is a directory of files: no kernel, no init, no host",
                data={"path": str(root), "files": files, "inside": after["/ is"] == IMAGE_ROOT})


def _chrooted_view(root: str, known: dict) -> dict:
    _gain_chroot_privilege()
    syscalls.chroot(root)
    os.chdir("/")
    return view_of_root(known)


def _gain_chroot_privilege() -> None:
    # chroot(2) needs CAP_SYS_CHROOT; a user namespace grants it to a non-root user (user_namespaces(7)).
    if os.geteuid() != 0:
        userns.enter()


# --- chroot, its escape, and pivot_root -------------------------------------------------------------------

def chroot_into(root: str | os.PathLike) -> Step:
    """chroot(2) in a child: "/" now resolves to the image's directory."""
    known = _landmarks(root)
    action = f'chroot("{root}"); chdir("/")'
    try:
        after = process.run_in_child(_chrooted_view, str(root), known)
    except LabError as err:
        return hosts.refuse("chroot into the image", action, err)
    return Step("chroot into the image", action, view_of_root(known), after, current_mode(),
                note='the child\'s "/" is the image\'s directory; the mounts are still the host\'s',
                data={"inside": after["/ is"] == IMAGE_ROOT})


def try_escape(known: dict) -> dict:
    """The classic escape (man 2 chroot): move the root below the working directory, then climb past it."""
    os.makedirs(ESCAPE_DIR, exist_ok=True)
    syscalls.chroot(ESCAPE_DIR)        # the root moves down; the working directory stays above it
    for _ in range(64):                # ".." stops only at the root, and this walk never meets it
        os.chdir("..")
    syscalls.chroot(".")               # wherever the climb ended becomes "/"
    os.chdir("/")
    return view_of_root(known)


def escape_chroot(root: str | os.PathLike) -> Step:
    """A root process leaves its chroot, for real: before = inside the chroot, after = after the escape."""
    action = f'chroot("{root}"); mkdir("{ESCAPE_DIR}"); chroot("{ESCAPE_DIR}"); chdir("..") x64; chroot(".")'
    return _escape_step("Escape from a chroot", action, _chroot_then_escape, root,
                        "chroot changed where / starts, not what can be reached: the climb ends on the host")


def escape_pivot_root(root: str | os.PathLike) -> Step:
    """The same escape after pivot_root in a new mount namespace: the climb ends at the image's root."""
    action = (f'unshare(CLONE_NEWNS); bind "{root}"; pivot_root(".", "."); umount2(old root, MNT_DETACH); '
              f'then the same escape')
    return _escape_step("Escape after pivot_root", action, _pivot_then_escape, root,
                        "the host's root is no longer in this mount namespace: there is nowhere to climb to")


def compare_escapes(root: str | os.PathLike) -> Step:
    """The escape side by side: before = after chroot, after = after pivot_root."""
    chrooted, pivoted = escape_chroot(root), escape_pivot_root(root)
    title, action = "The escape: chroot vs pivot_root", "try_escape() after chroot / after pivot_root"
    for step in (chrooted, pivoted):
        if not step.permitted:
            return Step.refused(title, action, step.reason)     # its reason, already explained
    return Step(title, action,
                chrooted.after, pivoted.after, current_mode(), columns=("after chroot", "after pivot_root"),
                note="chroot is a change of directory; pivot_root changes the mount namespace's root",
                data={"escaped_chroot": chrooted.data["escaped"], "escaped_pivot_root": pivoted.data["escaped"]})


def _escape_step(title: str, action: str, attempt, root, note: str) -> Step:
    try:
        before, after = process.run_in_child(attempt, str(root), _landmarks(root))
    except LabError as err:
        return hosts.refuse(title, action, err)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(Path(root, ESCAPE_DIR))
    return Step(title, action, before, after, current_mode(), note=note,
                data={"escaped": after["/ is"] == HOST_ROOT})


def _chroot_then_escape(root: str, known: dict) -> tuple[dict, dict]:
    _gain_chroot_privilege()
    syscalls.chroot(root)
    os.chdir("/")
    return view_of_root(known), try_escape(known)


def _pivot_then_escape(root: str, known: dict) -> tuple[dict, dict]:
    userns.unshare(syscalls.CLONE_NEWNS)
    make_mounts_private()
    bind_root(root)
    pivot_to(root)
    return view_of_root(known), try_escape(known)
