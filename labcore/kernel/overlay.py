"""overlayfs: many containers, one copy of the image.

A container's root filesystem is an overlay mount (man 8 mount, "Mount options for overlay";
Documentation/filesystems/overlayfs.rst): read-only *lower* directories, the image's layers, stacked under
one writable *upper* directory, the container's own layer, and shown as one *merged* tree:

    mount -t overlay overlay -o lowerdir=TOP:MIDDLE:BASE,upperdir=UPPER,workdir=WORK MERGED

``lowerdir`` lists the TOP layer first: a lookup searches the layers in the order written (upper, then
lowerdir from left to right) and the first match wins, as with $PATH. An image manifest lists its layers
base first, so docker reverses them for the mount, and so must you. ``workdir`` is an empty directory on
upperdir's filesystem where the kernel prepares each copy-up, then renames it into upperdir in one step.

What the container does, and what it leaves in upperdir:

    read                  served from the lower file; upperdir stays empty
    write                 copy-up: the whole file is copied into upperdir first; the lower file never changes
    delete                a whiteout: a character device 0/0 in upperdir hides the lower name
    rm -r, then mkdir     an opaque directory: xattr trusted.overlay.opaque=y hides the lower one's files
    rename a lower dir    EXDEV unless redirect_dir=on (mv then falls back to copying)

Without root, a user namespace may mount overlayfs (kernel >= 5.11) with the ``userxattr`` option: the
markers become ``user.overlay.*`` xattrs, which a user may set. That is how rootless podman does it, and how
this module does it for a user: the mount is made by a ``userns.MountKeeper``, a child in a user and mount
namespace of its own, and the steps reach the merged tree from outside as /proc/PID/root/MERGED
(``Overlay.view``). The host's mount table never shows it: it lives, and dies, with the keeper's namespace.

Notebook 05 does each of these for real (``labcore.lessons.union_fs``) and checks them against
``labcore.lessons.overlay_model``, which predicts all of this on paper.

Next: ``labcore.image.layers`` keeps an image's layers unpacked; ``labcore.kernel.rootfs`` pivots into MERGED.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, LabError, from_oserror
from labcore.kernel import syscalls, userns
from labcore.kernel.journal import Entry, Scope

OPAQUE = "overlay.opaque"         # after the "trusted." or "user." namespace
MAX_OPTIONS = 4095                # mount(2) copies at most one page of options


# --- the mount ----------------------------------------------------------------------------------------------

@dataclass
class Overlay:
    """A mounted overlay. Leaving the ``with`` block unmounts it and removes the directories it made."""
    lowers: list[Path]            # top layer first, as lowerdir= lists them
    upper: Path
    work: Path
    merged: Path
    options: str
    scope: Scope
    entries: list[Entry] = field(default_factory=list)
    xattr: str = "trusted"
    keeper: userns.MountKeeper | None = None      # rootless: the process whose mount namespace holds it
    owns_keeper: bool = False

    @property
    def view(self) -> Path:
        """Where this process reaches the merged tree: MERGED itself, or through the keeper's /proc/PID/root."""
        return Path(self.keeper.path(self.merged)) if self.keeper else self.merged

    def close(self) -> None:
        if self.keeper is not None and self.owns_keeper:
            self.keeper.close()                  # first: its mount namespace, and the overlay with it
        entries, self.entries = self.entries, []
        self.scope.entries = [e for e in self.scope.entries if e not in entries]
        failures = self.scope.journal.undo_many(entries)
        if failures:
            raise LabError("could not undo: " + "; ".join(failures), fix="run `labcore cleanup` to retry")

    def __enter__(self) -> "Overlay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def overlay_options(lowers: list[Path], upper: Path, work: Path, userxattr: bool = False) -> str:
    """The -o string of mount -t overlay; lowers top first."""
    options = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}"
    return options + (",userxattr" if userxattr else "")


def check_lowers(lowers: list) -> None:
    if not lowers or not all(Path(lower).is_dir() for lower in lowers):
        raise BadInput(f"lowers must be a non-empty list of existing directories, top layer first; "
                       f"got {lowers!r}")
    for path in lowers:
        _check_option_safe(path)


def check_own_dirs(**dirs) -> None:
    """upper, work and merged are the lab's: labcore... directories under the scratch dir."""
    scratch_dir = paths.scratch_dir().resolve()
    for role, path in dirs.items():
        if not (Path(path).resolve().is_relative_to(scratch_dir) and paths.path_is_ours(path)):
            raise BadInput(f"{role} must be a labcore... directory under {scratch_dir}, got {path}",
                           fix="make them with make_scratch_dir (union_fs.create_overlay does)")
        _check_option_safe(path)


def _check_option_safe(path) -> None:
    if set(str(path)) & {",", ":", "\\"}:
        raise BadInput(f"{path} contains ',', ':' or '\\', which the overlay option syntax reserves")


def mount_overlay(lowers: list, upper, work, merged, scope: Scope | None = None, *,
                  userxattr: bool = False, keeper: userns.MountKeeper | None = None) -> Overlay:
    """mount -t overlay: make upper, work and merged if missing (journaled), then mount (journaled).

    As root, on the host. Anyone else mounts in a user namespace, with userxattr: in ``keeper``'s mount
    namespace, or in that of a new keeper that the overlay owns and closes."""
    check_lowers(lowers)
    check_own_dirs(upper=upper, work=work, merged=merged)
    lowers = [Path(lower).resolve() for lower in lowers]
    upper, work, merged = (Path(p).resolve() for p in (upper, work, merged))
    rootless = os.geteuid() != 0
    options = overlay_options(lowers, upper, work, userxattr or rootless)
    if len(options) > MAX_OPTIONS:
        raise BadInput(f"{len(lowers)} layers make {len(options)} bytes of options; mount(2) takes "
                       f"{MAX_OPTIONS}", fix="use shorter paths or fewer layers")
    overlay = Overlay(lowers, upper, work, merged, options, scope or Scope(),
                      xattr="user" if userxattr or rootless else "trusted")
    try:
        for directory in (upper, work, merged):
            if not directory.exists():
                _make_dir(directory, overlay)
        if rootless:
            overlay.owns_keeper = keeper is None
            overlay.keeper = keeper or userns.MountKeeper(overlay.scope)
            overlay.keeper.mount("overlay", str(merged), "overlay", 0, options)
        else:                               # journaled first: undoing a mount not made yet does nothing
            overlay.entries.append(overlay.scope.record("mount", str(merged), "umount", target=str(merged)))
            syscalls.mount("overlay", str(merged), "overlay", 0, options)
    except BaseException as err:            # LabError, or Ctrl-C between mkdir and mount
        overlay.close()
        if isinstance(err, LabError):
            err.fix = err.fix or "the kernel says why in `dmesg | grep overlayfs`"
        raise
    return overlay


def _make_dir(directory: Path, overlay: Overlay) -> None:
    overlay.entries.append(overlay.scope.record("directory", str(directory), "rmtree", path=str(directory)))
    try:
        directory.mkdir()
    except OSError as err:
        raise from_oserror(err, "mkdir", str(directory)) from err


def make_scratch_dir(prefix: str, scope: Scope) -> tuple[Path, Entry]:
    """A fresh labcore-PREFIX-XXXX directory under the scratch dir, journaled for removal."""
    import tempfile             # here, not at the top: the run path imports this module only for its names
    paths.scratch_dir().mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{paths.PREFIX}-{prefix}-", dir=paths.scratch_dir()))
    return directory, scope.record("directory", str(directory), "rmtree", path=str(directory))


# --- the markers in an upperdir -----------------------------------------------------------------------------

def is_opaque(path, xattr: str = "trusted") -> bool:
    """Whether ``path`` carries the opaque marker: trusted.overlay.opaque=y as root, user.overlay.opaque=y when
    mounted with userxattr (xattr(7): a user may write user.* only)."""
    try:
        return os.getxattr(path, f"{xattr}.{OPAQUE}", follow_symlinks=False) == b"y"
    except OSError:
        return False             # ENODATA: no marker (and unprivileged readers never see trusted.*)
