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

Next: ``labcore.lessons.overlay_model`` predicts all of this on paper; ``labcore.kernel.rootfs`` pivots into MERGED.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, LabError, NeedsPrivilege, NotFound, NotSupportedHere, from_oserror
from labcore.kernel import syscalls, userns
from labcore.kernel.journal import Entry, Scope
from labcore.kernel.process import run_in_child
from labcore.lessons import hosts
from labcore.lessons.evidence import Mode, Step, user_mode
from labcore.lessons.overlay_model import WHITEOUT, Dir, File, Layer, Model, Symlink

OPAQUE = "overlay.opaque"         # after the "trusted." or "user." namespace
_REFUSED = (NeedsPrivilege, NotSupportedHere)
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
                           fix="use overlay.create_overlay(lowers), which makes them")
        _check_option_safe(path)


def check_in_lowers(lowers: list, *names: str) -> None:
    """Each name is a relative path that some lower layer has."""
    for name in names:
        inside = not os.path.isabs(name) and ".." not in Path(name).parts
        if not (inside and any(os.path.lexists(Path(lower, name)) for lower in lowers)):
            raise BadInput(f"{name!r} is not a relative path found in a lower layer",
                           fix="name a path of the image, such as 'etc/hostname'")


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
        else:
            syscalls.mount("overlay", str(merged), "overlay", 0, options)
    except BaseException as err:            # LabError, or Ctrl-C between mkdir and mount
        overlay.close()
        if isinstance(err, LabError):
            err.fix = err.fix or "the kernel says why in `dmesg | grep overlayfs`"
        raise
    if not rootless:                        # a rootless mount goes with its keeper's namespace
        overlay.entries.append(overlay.scope.record("mount", str(merged), "umount", target=str(merged)))
    return overlay


def _make_dir(directory: Path, overlay: Overlay) -> None:
    try:
        directory.mkdir()
    except OSError as err:
        raise from_oserror(err, "mkdir", str(directory)) from err
    overlay.entries.append(overlay.scope.record("directory", str(directory), "rmtree", path=str(directory)))


def make_scratch_dir(prefix: str, scope: Scope) -> tuple[Path, Entry]:
    """A fresh labcore-PREFIX-XXXX directory under the scratch dir, journaled for removal."""
    paths.scratch_dir().mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{paths.PREFIX}-{prefix}-", dir=paths.scratch_dir()))
    return directory, scope.record("directory", str(directory), "rmtree", path=str(directory))


def create_overlay(lowers: list, scope: Scope | None = None, name: str = "overlay") -> Overlay | Step:
    """A container's layer: a new labcore-NAME-XXXX/{upper,work,merged} over ``lowers`` (top first). Where
    this host refuses the mount, the refused Step, which stands in for the overlay in the steps after it."""
    scope = scope or Scope()
    check_lowers(lowers)
    base, entry = make_scratch_dir(name, scope)
    try:
        overlay = mount_overlay(lowers, base / "upper", base / "work", base / "merged", scope)
    except BaseException as err:
        scope.entries.remove(entry)
        scope.journal.undo(entry)
        if isinstance(err, _REFUSED):
            return hosts.refuse("mount an overlay: a container's layer", f"mount -t overlay -o lowerdir=... "
                                f"{base}/merged", err, key="overlay.create_overlay")
        raise
    overlay.entries.insert(0, entry)          # undone last: the mount goes first
    return overlay


# --- layers as data: read back from the filesystem, or written to it ---------------------------------

def read_layer(directory, xattr: str | None = "trusted", contents: bool = True) -> Layer:
    """A directory as ``overlay_model`` sees it: whiteouts (char 0/0) and opaque dirs when ``xattr`` is set
    (``None`` reads a merged view, which has neither). It stays on the directory's filesystem, as find -xdev
    does: a live container's merged root has /proc, /dev and /sys mounted on it."""
    layer, root = {}, Path(directory)
    for path in _walk(root, os.stat(root).st_dev):
        relative = str(path.relative_to(root))
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            layer[relative] = Dir(opaque=bool(xattr) and is_opaque(path, xattr))
        elif stat.S_ISLNK(info.st_mode):
            layer[relative] = Symlink(os.readlink(path))
        elif xattr and stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
            layer[relative] = WHITEOUT
        else:
            layer[relative] = File(path.read_bytes() if contents and stat.S_ISREG(info.st_mode) else b"")
    return layer


def _walk(root: Path, device: int | None = None):
    # overlayfs gives every directory the overlay's st_dev (fs/overlayfs/inode.c, ovl_getattr), for find -xdev.
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            yield Path(entry.path)
            if entry.is_dir(follow_symlinks=False) and device in (None, entry.stat(follow_symlinks=False).st_dev):
                yield from _walk(Path(entry.path), device)


def is_opaque(path, xattr: str = "trusted") -> bool:
    try:
        return os.getxattr(path, f"{xattr}.{OPAQUE}", follow_symlinks=False) == b"y"
    except OSError:
        return False             # ENODATA: no marker (and unprivileged readers never see trusted.*)


def write_layer(directory, layer: Layer, xattr: str = "trusted") -> None:
    """Build a layer from the model's data, parents first: how an image's layer looks once unpacked."""
    for relative, entry in sorted(layer.items()):
        path = Path(directory, relative)
        if isinstance(entry, Dir):
            path.mkdir()
            if entry.opaque:
                os.setxattr(path, f"{xattr}.{OPAQUE}", b"y")
        elif isinstance(entry, Symlink):
            path.symlink_to(entry.target)
        elif entry is WHITEOUT:
            syscalls.mknod(str(path), stat.S_IFCHR, os.makedev(0, 0))
        else:
            path.write_bytes(entry.data)


def apply_op(root, op: tuple) -> int:
    """Run one ``overlay_model`` operation as system calls under ``root``; 0 or the errno."""
    name, path, *rest = op
    target = os.path.join(root, path)
    try:
        if name in ("create", "write"):
            flags = os.O_CREAT | os.O_EXCL if name == "create" else os.O_APPEND
            fd = os.open(target, os.O_WRONLY | flags, 0o644)
            try:
                os.write(fd, rest[0])
            finally:
                os.close(fd)
        elif name == "rename":
            os.rename(target, os.path.join(root, rest[0]))
        else:
            {"delete": os.unlink, "mkdir": os.mkdir, "rmdir": os.rmdir}[name](target)
    except OSError as err:
        return err.errno
    return 0


def run_ops(overlay: Overlay, ops: list[tuple]) -> list[int]:
    return [apply_op(overlay.view, op) for op in ops]


def overlay_mode(overlay: Overlay) -> Mode:
    """Steps on a rootless overlay work on a mount made inside a user namespace."""
    return Mode.USERNS if overlay.keeper else user_mode()


# --- evidence ---------------------------------------------------------------------------------------------

def describe(path) -> str:
    """One line of lstat(2): the kind, inode, device and size, or 'absent'."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    dev = f"{os.major(info.st_dev)}:{os.minor(info.st_dev)}"
    if stat.S_ISCHR(info.st_mode):
        return (f"char device {os.major(info.st_rdev)}/{os.minor(info.st_rdev)}"
                f"{' = whiteout' if info.st_rdev == 0 else ''}, inode {info.st_ino}, dev {dev}")
    kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
    return f"{kind}, inode {info.st_ino}, dev {dev}, {info.st_size} bytes"


def listing(directory, xattr: str = "trusted") -> list[str]:
    """The names in a layer, whiteouts and opaque directories marked."""
    if not os.path.isdir(directory):
        return ["(absent)"]
    names = []
    for relative, entry in read_layer(directory, xattr, contents=False).items():
        if entry is WHITEOUT:
            relative += " (whiteout)"
        elif isinstance(entry, Dir):
            relative += "/ (opaque)" if entry.opaque else "/"
        names.append(relative)
    return names or ["(empty)"]


def top_lower_with(overlay: Overlay, path: str) -> Path:
    for lower in overlay.lowers:
        if os.path.lexists(lower / path):
            return lower
    raise NotFound(f"no lower layer of this overlay has {path}", path=path,
                   fix="pick a path from one of overlay.lowers")


# --- steps ------------------------------------------------------------------------------------------------

def read_from_lower(overlay: Overlay, path: str) -> Step:
    """cat MERGED/path: the lower layer's file answers; nothing is copied."""
    missing = hosts.lacking("an overlay", f"read {path}: served from the lower layer", f"cat MERGED/{path}",
                            overlay)
    if missing:
        return missing
    lower = top_lower_with(overlay, path) / path
    before = {"lower file": describe(lower), "upperdir": listing(overlay.upper, overlay.xattr)}
    content = (overlay.view / path).read_bytes()
    low, seen = os.lstat(lower), os.lstat(overlay.view / path)
    after = {"merged file": describe(overlay.view / path), "content": content[:60],
             "upperdir": listing(overlay.upper, overlay.xattr)}
    # overlayfs.rst, "Inode properties": with every layer on one filesystem, st_ino is the real file's,
    # st_dev the overlay's, the same for every file in the mount ("uniform st_dev").
    same = "the same inode number as" if seen.st_ino == low.st_ino else "another inode number than"
    dev = "the overlay's own" if seen.st_dev != low.st_dev else "the lower file's"
    note = (f"the merged file has {same} the lower file; its st_dev is {dev} "
            f"({os.major(seen.st_dev)}:{os.minor(seen.st_dev)}); upperdir "
            f"{'is unchanged' if before['upperdir'] == after['upperdir'] else 'changed'}")
    return Step(f"read {path}: served from the lower layer", f"cat {overlay.merged / path}",
                before, after, note=note, mode=overlay_mode(overlay),
                data={"lower_ino": low.st_ino, "merged_ino": seen.st_ino,
                                                "merged_dev": seen.st_dev, "lower_dev": low.st_dev})


def _three_views(overlay: Overlay, path: str, lower: Path) -> dict:
    return {"lower": describe(lower / path), "upper": describe(overlay.upper / path),
            "merged": describe(overlay.view / path)}


def write_copies_up(overlay: Overlay, path: str, data: bytes = b"written by the container\n") -> Step:
    """echo >> MERGED/path: the first write copies the whole file into upperdir."""
    missing = hosts.lacking("an overlay", f"write {path}: copy-up", f"open({path!r}, O_WRONLY|O_APPEND)", overlay)
    if missing:
        return missing
    lower = top_lower_with(overlay, path)
    before = _three_views(overlay, path, lower)
    with open(overlay.view / path, "ab") as file:
        file.write(data)
    after = _three_views(overlay, path, lower)
    up, low = os.lstat(overlay.upper / path), os.lstat(lower / path)
    note = (f"copy-up: upperdir now holds its own copy (inode {up.st_ino}, {up.st_size} bytes); "
            f"the lower file is {'unchanged' if before['lower'] == after['lower'] else 'CHANGED'} "
            f"(inode {low.st_ino}, {low.st_size} bytes)")
    return Step(f"write {path}: copy-up", f"open({path!r}, O_WRONLY|O_APPEND); write(...)", before, after,
                note=note, mode=overlay_mode(overlay), data={"upper_size": up.st_size, "lower_size": low.st_size,
                                 "upper_ino": up.st_ino, "lower_ino": low.st_ino})


def delete_leaves_whiteout(overlay: Overlay, path: str) -> Step:
    """rm MERGED/path: upperdir gets a character device 0/0 with that name; the lower file stays."""
    missing = hosts.lacking("an overlay", f"delete {path}: a whiteout", f"unlink({path!r})", overlay)
    if missing:
        return missing
    lower = top_lower_with(overlay, path)
    before = _three_views(overlay, path, lower)
    if (overlay.view / path).is_dir():
        shutil.rmtree(overlay.view / path)
    else:
        os.unlink(overlay.view / path)
    after = _three_views(overlay, path, lower)
    mark = os.lstat(overlay.upper / path)
    whiteout = stat.S_ISCHR(mark.st_mode) and mark.st_rdev == 0
    note = (f"upperdir/{path} is {'a whiteout: S_ISCHR with rdev 0' if whiteout else 'not a whiteout'}; "
            f"the lower file is still there, hidden")
    return Step(f"delete {path}: a whiteout", f"unlink({path!r})", before, after, note=note,
                mode=overlay_mode(overlay), data={"whiteout": whiteout, "rdev": mark.st_rdev})


def replace_dir_makes_opaque(overlay: Overlay, path: str) -> Step:
    """rm -r MERGED/path; mkdir MERGED/path: the new directory is opaque, the old files stay hidden."""
    missing = hosts.lacking("an overlay", f"replace directory {path}: opaque", f"rm -r {path}; mkdir {path}",
                            overlay)
    if missing:
        return missing
    lower = top_lower_with(overlay, path)
    name = f"{overlay.xattr}.{OPAQUE}"
    before = {"lower dir": listing(lower / path), "merged dir": listing(overlay.view / path, None),
              f"upper {name}": _xattr(overlay.upper / path, name)}
    shutil.rmtree(overlay.view / path)
    os.mkdir(overlay.view / path)
    after = {"lower dir": listing(lower / path), "merged dir": listing(overlay.view / path, None),
             f"upper {name}": _xattr(overlay.upper / path, name)}
    return Step(f"replace directory {path}: opaque", f"rm -r {path}; mkdir {path}", before, after,
                mode=overlay_mode(overlay),
                note=f"{name} = {after[f'upper {name}']!r} on the new upper directory: lookups stop there, "
                     f"so the {len(after['lower dir'])} lower entries stay hidden",
                data={"opaque": is_opaque(overlay.upper / path, overlay.xattr)})


def _xattr(path, name: str) -> str:
    try:
        return os.getxattr(path, name, follow_symlinks=False).decode()
    except FileNotFoundError:
        return "(no such path)"
    except OSError as err:
        return f"(none: {os.strerror(err.errno)})"


def disk_usage(directory) -> int:
    """Bytes allocated to everything under ``directory`` (st_blocks * 512, hard links once), as du(1)."""
    seen, total = set(), 0
    for path in [Path(directory), *_walk(Path(directory))]:
        info = os.lstat(path)
        if (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count / 2**10:.0f} KiB"


def _timed(make, count: int) -> tuple[float, list]:
    start = time.perf_counter()
    made = [make(i) for i in range(count)]
    return time.perf_counter() - start, made


def share_lower_layers(lower, containers: int = 10) -> Step:
    """N containers of one image: N overlays on the same lower layer, against N copies of it (cp -a)."""
    check_lowers([lower])
    if not 1 <= containers <= 100:
        raise BadInput(f"containers must be 1..100, got {containers}")
    title = f"{containers} containers from one image"
    with Scope() as scope:
        base, _ = make_scratch_dir("share", scope)
        before = {"containers": 0, "lower layer": _size(disk_usage(lower))}
        # Without root, every overlay is mounted in one user namespace, as rootless podman mounts them all in
        # its pause process's: one keeper, made before the clock starts.
        try:
            keeper = userns.MountKeeper(scope) if os.geteuid() != 0 else None
        except _REFUSED as err:
            return hosts.refuse(title, "mount -t overlay (x N)  vs  cp -a (x N)", err)
        # The same work for both: make the container's root, then write its hostname in it.
        copy_seconds, copies = _timed(lambda i: _copy_root(lower, base / f"copy{i}"), containers)
        overlay_seconds, overlays = _timed(
            lambda i: _overlay_root(lower, base / f"labcore-c{i}", scope, keeper), containers)
        copy_disk = sum(disk_usage(root) for root in copies)
        upper_disk = sum(disk_usage(overlay.upper) for overlay in overlays)
    after = {"containers": containers,
             "copies: disk": _size(copy_disk), "copies: time": f"{copy_seconds * 1000:.0f} ms",
             "overlays: disk (upperdirs)": _size(upper_disk),
             "overlays: time": f"{overlay_seconds * 1000:.0f} ms"}
    note = (f"{containers} overlays share one lower layer: their upperdirs take "
            f"{copy_disk / max(upper_disk, 1):.0f}x less disk than {containers} copies, and were ready "
            f"{copy_seconds / max(overlay_seconds, 1e-9):.1f}x faster")
    return Step(title, "mount -t overlay (x N)  vs  cp -a (x N)",
                before, after, note=note, mode=Mode.USERNS if keeper else user_mode(),
                data={"copy_bytes": copy_disk, "upper_bytes": upper_disk,
                      "copy_seconds": copy_seconds, "overlay_seconds": overlay_seconds})


def _copy_root(lower, root: Path) -> Path:
    shutil.copytree(lower, root, symlinks=True)
    (root / "labcore-hostname").write_text(root.name + "\n")
    return root


def _overlay_root(lower, directory: Path, scope: Scope, keeper: userns.MountKeeper | None) -> Overlay:
    directory.mkdir()                    # inside the journaled scratch directory, removed with it
    overlay = mount_overlay([lower], directory / "upper", directory / "work", directory / "merged", scope,
                            keeper=keeper)
    (overlay.view / "labcore-hostname").write_text(directory.name + "\n")
    return overlay


def volume_outlives_container(lowers: list, target: str = "data") -> Step:
    """docker run -v HOSTDIR:/data: a bind mount over MERGED/data; removing the container keeps it."""
    check_lowers(lowers)
    if "/" in target or target in ("", ".", ".."):
        raise BadInput(f"target must be one directory name under the container's root, got {target!r}")
    with Scope() as scope:
        volume, _ = make_scratch_dir("volume", scope)
        overlay = create_overlay(lowers, scope, "container")
        if not isinstance(overlay, Overlay):
            return overlay                  # refused: the step that says why
        mountpoint = overlay.merged / target
        (overlay.view / target).mkdir(exist_ok=True)
        if overlay.keeper:                  # rootless: in the keeper's namespace, gone with it
            overlay.keeper.mount(str(volume), str(mountpoint), None, syscalls.MS_BIND)
        else:
            syscalls.mount(str(volume), str(mountpoint), None, syscalls.MS_BIND)
            bind = scope.record("mount", str(mountpoint), "umount", target=str(mountpoint))
        (overlay.view / target / "kept.txt").write_text("written to the volume\n")
        (overlay.view / "lost.txt").write_text("written to the container's layer\n")
        before = {"volume (host dir)": listing(volume), "upperdir": listing(overlay.upper, overlay.xattr)}
        # docker rm: the volume's bind mount goes first (it sits on the overlay), then the container.
        if not overlay.keeper:
            scope.entries.remove(bind)
            scope.journal.undo(bind)
        overlay.close()
        after = {"volume (host dir)": listing(volume), "upperdir": listing(overlay.upper, overlay.xattr)}
        kept = (volume / "kept.txt").read_text()
    return Step("a volume outlives its container", f"mount --bind {volume} {mountpoint}; ...; docker rm",
                before, after, data={"kept": kept}, mode=overlay_mode(overlay),
                note=f"kept.txt went straight to the host directory, never into upperdir, and is still "
                     f"there; the container's upperdir is {' '.join(after['upperdir'])} after docker rm")


def rootless_overlay(lowers: list, file: str, directory: str) -> Step:
    """The same overlay without root: a user namespace, the userxattr option, user.overlay.* markers."""
    check_lowers(lowers)
    action = ("unshare(CLONE_NEWUSER|CLONE_NEWNS); mount -t overlay -o ...,userxattr; "
              f"rm {file}; rm -r {directory}; mkdir {directory}")
    title = "overlay in a user namespace (rootless)"
    check_in_lowers(lowers, file, directory)
    with Scope() as scope:
        base, _ = make_scratch_dir("rootless", scope)
        for name in ("upper", "work", "merged"):
            (base / name).mkdir()
        try:
            before, after = run_in_child(_rootless_child, [Path(p).resolve() for p in lowers], base,
                                         file, directory)
        except LabError as err:
            return hosts.refuse(title, action, err)
    opaque = after["user.overlay.opaque"] == "y"
    return Step(title, action, before, after, mode=Mode.USERNS, data={"opaque": opaque},
                note=f"root only inside the namespace; the whiteout is a 0/0 device as before, and the "
                     f"opaque marker is user.overlay.opaque={after['user.overlay.opaque']!r}")


def _rootless_child(lowers: list[Path], base: Path, file: str, directory: str) -> tuple[dict, dict]:
    userns.enter(syscalls.CLONE_NEWNS)
    # A private mount tree: the overlay dies with this child's mount namespace, nothing to journal.
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    upper, merged = base / "upper", base / "merged"
    syscalls.mount("overlay", str(merged), "overlay", 0,
                   overlay_options(lowers, upper, base / "work", userxattr=True))
    before = {"uid_map": " ".join(Path("/proc/self/uid_map").read_text().split()),
              "upperdir": listing(upper, "user")}
    os.unlink(merged / file)
    shutil.rmtree(merged / directory)
    os.mkdir(merged / directory)
    after = {"upperdir": listing(upper, "user"), f"upper/{file}": describe(upper / file),
             "user.overlay.opaque": _xattr(upper / directory, f"user.{OPAQUE}"),
             "trusted.overlay.opaque": _xattr(upper / directory, f"trusted.{OPAQUE}")}
    return before, after


def model_agrees(overlay: Overlay, ops: list[tuple]) -> Step:
    """``overlay_model`` predicts, then the kernel does: the same operations on paper (before) and on the
    mount (after), compared by errno, upperdir (whiteouts and opaque marks included) and merged view."""
    missing = hosts.lacking("an overlay", "the model predicts, the kernel agrees", "the same system calls on the "
                            "mount", overlay, key="overlay.model_agrees")
    if missing:
        return missing
    model = Model([read_layer(lower, overlay.xattr) for lower in overlay.lowers],
                  read_layer(overlay.upper, overlay.xattr))
    predicted = [errno_name(model.apply(op)) for op in ops]
    actual = [errno_name(code) for code in run_ops(overlay, ops)]
    upper, merged = read_layer(overlay.upper, overlay.xattr), read_layer(overlay.view, None)
    agree = predicted == actual and model.upper == upper and model.merged() == merged
    operations = [" ".join(map(str, op[:2])) for op in ops]
    before = {"operations": operations, "results": predicted, "upperdir": _names(model.upper)}
    after = {"operations": operations, "results": actual, "upperdir": _names(upper)}
    return Step("the model predicts, the kernel agrees" if agree else "the model and the kernel DISAGREE",
                "overlay_model.Model(lowers, upper).apply(op)  vs  the same system calls on the mount",
                before, after, mode=overlay_mode(overlay), key="overlay.model_agrees",
                note=f"before = the model's prediction, after = the kernel's; they agree on the "
                                    f"results, the upperdir and all {len(merged)} merged paths: {agree}",
                data={"agree": agree, "predicted": predicted, "actual": actual})


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code)) if code else "ok"


def _names(layer: Layer) -> list[str]:
    return [path + (" (whiteout)" if entry is WHITEOUT else "/ (opaque)" if getattr(entry, "opaque", False)
                    else "") for path, entry in sorted(layer.items())] or ["(empty)"]


# --- the picture ------------------------------------------------------------------------------------------

def layer_stack_dot(overlay: Overlay, max_paths: int = 30, names: list[str] | None = None) -> str:
    """DOT of the live mount: merged paths, each pointing at the layer that serves it; copied-up files
    (orange), new files (green) and whiteouts (red) in upperdir. Draw with ``labcore.lessons.diagrams.show``.
    ``names`` labels the lowers (top first); by default their directory names."""
    from labcore.lessons.diagrams import Graph
    upper = read_layer(overlay.upper, overlay.xattr, contents=False)
    model = Model([read_layer(lower, overlay.xattr, contents=False) for lower in overlay.lowers], upper)
    visible = read_layer(overlay.view, None, contents=False)
    shown = _paths_to_show(upper, visible, max_paths)
    names = ["upperdir", *(f"lowerdir {i + 1}{' (top)' if i == 0 else ''}: {name}"
                           for i, name in enumerate(names or [lower.name for lower in overlay.lowers]))]
    graph = Graph("overlay layer stack", rankdir="TB", fontname="Helvetica", newrank="true")
    graph.defaults("node", fontname="Helvetica", fontsize="10", shape="box", style="rounded,filled",
                   fillcolor="white")
    members: dict[int, list[str]] = {i: [] for i in range(len(names))}
    merged_nodes = []
    for path in shown:
        if path in visible:
            merged_nodes.append(_draw_visible(graph, model, path, members))
        elif upper.get(path) is WHITEOUT:
            _draw_whiteout(graph, model, path, members)
    hidden = len(visible) - sum(path in visible for path in shown)
    if hidden:
        graph.node("M:...", f"... {hidden} more paths", shape="plaintext", style="")
        merged_nodes.append("M:...")
    graph.cluster("merged", f"merged: {overlay.merged}", merged_nodes, style="rounded", color="blue")
    for index, nodes in members.items():
        graph.cluster(f"layer{index}", names[index], nodes, style="rounded")
    return graph.source()


def _paths_to_show(upper: Layer, visible: Layer, limit: int) -> list[str]:
    """What changed first (upperdir and its parents), then the rest of the merged tree, up to ``limit``."""
    changed = {path for changed in upper for path in _with_parents(changed)}
    rest = [path for path in visible if path not in changed]
    return sorted(changed)[:limit] + sorted(rest)[:max(0, limit - len(changed))]


def _with_parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]


def _draw_visible(graph, model: Model, path: str, members: dict[int, list[str]]) -> str:
    layers = model.source(path)
    entry = model.layers[layers[0]][path]
    label = "/" + path + ("/" if isinstance(entry, Dir) else "")
    graph.node(f"M:{path}", label)
    for index in layers:
        node = f"L{index}:{path}"
        color = "white"
        if index == 0:
            color = "orange" if model.lower_positive(path) else "palegreen"
        opaque = " (opaque)" if index == 0 and getattr(entry, "opaque", False) else ""
        graph.node(node, label + opaque, fillcolor=color)
        graph.edge(f"M:{path}", node, color="gray40")
        members[index].append(node)
    return f"M:{path}"


def _draw_whiteout(graph, model: Model, path: str, members: dict[int, list[str]]) -> None:
    node = f"L0:{path}"
    graph.node(node, f"/{path} (whiteout 0/0)", fillcolor="salmon")
    members[0].append(node)
    for index, layer in enumerate(model.lowers, start=1):
        if path in layer:                # the lower entry it hides, drawn crossed out
            graph.node(f"L{index}:{path}", f"/{path}", fillcolor="gray90", fontcolor="gray50")
            graph.edge(node, f"L{index}:{path}", style="dashed", color="red", label="hides")
            members[index].append(f"L{index}:{path}")
            break
