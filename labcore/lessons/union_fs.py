"""The union filesystem, step by step: one image, many containers, each a layer of its own (notebook 05).

An image is a stack of read-only layers, unpacked once (``labcore.image.layers``); a container is an overlay
mount on them with an upperdir of its own (``labcore.kernel.overlay``). The steps here mount one by hand and
do to it what a container does, each shown before and after in the layers themselves:

    read_from_lower            the lower file answers; upperdir stays empty
    write_copies_up            copy-up: the whole file is copied into upperdir first
    delete_leaves_whiteout     a character device 0/0 in upperdir hides the lower name
    replace_dir_makes_opaque   the opaque marker hides the lower directory's files
    model_agrees               ``labcore.lessons.overlay_model`` predicts, the kernel agrees
    share_lower_layers         N overlays on one lower layer against N copies of it
    rootless_overlay           the same in a user namespace: userxattr, user.overlay.* markers

Then the same with real containers: a volume that outlives its container, `docker commit` and `docker build`
(``labcore.runtime.build``), and the live overlay of a running container, drawn (``layer_stack_dot``).
Layers are read back as ``overlay_model`` data (``read_layer``) and written from it (``write_layer``).

Next: ``labcore.lessons.root_fs`` pivots into such a merged tree (notebook 06).
"""
from __future__ import annotations

import collections
import re
import errno
import os
import shutil
import stat
import time
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, LabError, NeedsPrivilege, NotFound, NotSupportedHere
from labcore.image import layers, oci
from labcore.kernel import journal, procfs, syscalls, userns
from labcore.kernel.journal import Scope
from labcore.kernel.namespaces import make_mounts_private
from labcore.kernel.overlay import (OPAQUE, Overlay, check_lowers, is_opaque, make_scratch_dir, mount_overlay,
                                    overlay_options)
from labcore.kernel.process import run_in_child
from labcore.lessons import hosts, run_flow
from labcore.lessons.evidence import Mode, Step, current_mode, record, user_mode
from labcore.lessons.overlay_model import WHITEOUT, Dir, File, Layer, Model, Symlink
from labcore.runtime import build, container, engine

_REFUSED = (NeedsPrivilege, NotSupportedHere)


# --- an overlay, mounted by hand -----------------------------------------------------------------------------

def check_in_lowers(lowers: list, *names: str) -> None:
    """Each name is a relative path that some lower layer has."""
    for name in names:
        inside = not os.path.isabs(name) and ".." not in Path(name).parts
        if not (inside and any(os.path.lexists(Path(lower, name)) for lower in lowers)):
            raise BadInput(f"{name!r} is not a relative path found in a lower layer",
                           fix="name a path of the image, such as 'etc/hostname'")


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
                data={"lower_ino": low.st_ino, "merged_ino": seen.st_ino, "merged_dev": seen.st_dev,
                      "lower_dev": low.st_dev, "upperdir": after["upperdir"]})


def _kind(described: str) -> str:
    """What ``describe`` found, without inode and size: "file", "absent", "char device 0/0 = whiteout"."""
    return described.split(",")[0]


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
                note=note, mode=overlay_mode(overlay),
                data={"upper_size": up.st_size, "lower_size": low.st_size, "upper_ino": up.st_ino,
                      "lower_ino": low.st_ino, "upper_before": _kind(before["upper"]),
                      "upper_after": _kind(after["upper"]), "lower_unchanged": before["lower"] == after["lower"]})


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
                mode=overlay_mode(overlay), data={"whiteout": whiteout, "rdev": mark.st_rdev,
                                                  "merged_after": _kind(after["merged"]),
                                                  "upper_after": _kind(after["upper"])})


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
                data={"opaque": is_opaque(overlay.upper / path, overlay.xattr), "merged_dir": after["merged dir"],
                      "lower_dir": after["lower dir"]})


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
        try:
            overlay_seconds, overlays = _timed(
                lambda i: _overlay_root(lower, base / f"labcore-c{i}", scope, keeper), containers)
        except _REFUSED as err:             # a host that refuses the mount itself (AppArmor, a confined pod)
            return hosts.refuse(title, "mount -t overlay (x N)  vs  cp -a (x N)", err)
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
    make_mounts_private()
    upper, merged = base / "upper", base / "merged"
    syscalls.mount("overlay", str(merged), "overlay", 0,
                   overlay_options(lowers, upper, base / "work", userxattr=True))
    before = {"uid_map": procfs.id_map_text("uid_map"),
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
                before, after, mode=overlay_mode(overlay), key="overlay.model_agrees", columns=("model", "kernel"),
                note=f"the model's prediction beside the kernel's answer; they agree on the "
                                    f"results, the upperdir and all {len(merged)} merged paths: {agree}",
                data={"agree": agree, "predicted": predicted, "actual": actual})


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code)) if code else "ok"


def _names(layer: Layer) -> list[str]:
    return [path + (" (whiteout)" if entry is WHITEOUT else "/ (opaque)" if getattr(entry, "opaque", False)
                    else "") for path, entry in sorted(layer.items())] or ["(empty)"]


# --- an image, and real containers on it ------------------------------------------------------------

def image_stack(image) -> Step:
    """An image is a stack of read-only layers: the manifest's blobs (before), and the directories they are
    unpacked to, once, for every container of the image to mount (after)."""
    lowers = layers.image_lowers(image)[::-1]            # base first, as the manifest lists them
    before, after = {}, {}
    for number, (layer, directory) in enumerate(zip(image.layers, lowers), start=1):
        before[f"layer {number}"] = f"{layer.digest}, {layer.media_type.rpartition('.')[2]}, {layer.size} bytes"
        after[f"layer {number}"] = f"{directory} ({sum(1 for _ in layers.walk(directory))} entries)"
    return Step(f"{image.ref}: a stack of {len(lowers)} read-only layer(s)",
                "read the manifest; unpack each layer once, into <images>/layers/<diff_id hex>",
                before, after, user_mode(), data={"digests": [layer.digest for layer in image.layers],
                                                     "directories": lowers},
                note="a container mounts these directories as its lowerdirs (the top layer first) and writes "
                     "only to an upperdir of its own")


def volume_outlives_container(image: str = "busybox") -> Step:
    """docker run --rm -v HOSTDIR:/data: what the container writes to /data is in the host's directory,
    and stays there; what it writes anywhere else was in its upperdir, and went with it."""
    volume, _ = make_scratch_dir("volume", journal.Journal())   # kept after the step, until cleanup
    script = "echo kept > /data/kept.txt; echo lost > /lost.txt; ls /lost.txt /data"
    spec = container.Spec(image, ["sh", "-c", script], volumes=[f"{volume}:/data"], rm=True, network="none")
    state = paths.containers_dir() / spec.id
    before = {"volume (host directory)": listing(volume), "container directory": "not created yet"}
    title, action = "a volume outlives its container", f"labcore run --rm -v {volume}:/data {image} sh -c '...'"
    run = run_flow.run_step(spec)
    if not run.permitted:               # the run's whole refusal (explained already), under this step's title
        return Step.refused(title, action, run.reason)
    result = run.data["result"]
    after = {"volume (host directory)": listing(volume), "inside: ls /lost.txt /data":
             result.stdout.decode().split(), "container directory": "exists" if state.exists() else "removed"}
    kept, left = (volume / "kept.txt").exists(), state.exists()
    return Step(title, action, before, after, current_mode(), data={"kept": kept, "container_left": left},
                note=volume_note(kept, left))


def volume_note(kept: bool, container_left: bool) -> str:
    """What the host's directory and the containers' directory show after the run, in those words."""
    volume = ("kept.txt went through the bind mount to the host's directory and is still there" if kept else
              "kept.txt is not in the host's directory: the bind mount did not take the write")
    upper = ("lost.txt was in the container's upperdir, removed with it" if not container_left else
             "the container's directory is still there, lost.txt with it: --rm did not remove it")
    return f"{volume}; {upper}"


def commit(container_ref: str, reference: str, comment: str = "") -> Step:
    """docker commit CONTAINER IMAGE[:TAG]: the container's upperdir (before) as a new layer on its image's
    layers (after), its whiteouts written as OCI ``.wh.`` files again (``labcore.runtime.build.commit``)."""
    name, tag = oci.split_reference(reference)     # refused before anything is written
    missing = hosts.lacking("a container that ran", f"commit as {name}:{tag}", f"tar UPPERDIR -> a layer of "
                            f"{name}:{tag}", container_ref, key="build.commit")
    if missing:
        return missing
    made = build.commit(container_ref, reference, comment)
    image = made.image
    return Step(f"commit {made.container[:12]} as {name}:{tag}", f"tar {made.upper} -> layer {len(image.layers)}",
                {"image": made.base.ref, "layers": len(made.base.layers), "upperdir": listing(made.upper, made.xattr)},
                {"image": image.ref, "layers": len(image.layers), "new layer": made.entries},
                note=f"the upperdir is now layer {len(image.layers)} of {name}:{tag} ({image.short_id}); "
                     f"its whiteouts are .wh. files again, as OCI layers spell them",
                data={"image": image, "entries": made.entries, "layers": len(image.layers)}, key="build.commit")


_BUILDS: collections.Counter = collections.Counter()       # builds of each tag so far, for their keys


class BuildLog:
    """A build as a notebook shows it: its log, which the reference run records under "build TAG #N" (the Nth
    build of TAG in this process); everything else is the build's (``labcore.runtime.build.Build``)."""

    def __init__(self, result: build.Build, key: str):
        self.result, self.key = result, key

    def __getattr__(self, name: str):
        return getattr(self.result, name)

    @property
    def data(self) -> dict:
        """What a check cell prints, the same on every machine and run; the ID is not: it digests the image's
        config, which holds the time of the build, and its layers, which hold the files' modification times."""
        image_id = self.result.image.id
        return {"image_id": image_id, "sha256_id": re.fullmatch(r"sha256:[0-9a-f]{64}", image_id) is not None,
                "layers": self.result.layers, "cached": self.result.cached}

    def __str__(self) -> str:
        return str(self.result)

    __repr__ = __str__


def build_image(context, labfile=None, tag: str | None = None) -> BuildLog | Step:
    """docker build -t TAG CONTEXT (``labcore.runtime.build.build``); where this host refuses the container a
    RUN step needs, the refused Step."""
    _BUILDS[tag] += 1
    key = f"build {tag} #{_BUILDS[tag]}"
    try:
        log = BuildLog(build.build(context, labfile, tag), key)
    except _REFUSED as err:
        return hosts.refuse(f"labcore build -t {tag} {context}", f"labcore build -t {tag} {context}", err, key=key)
    record(Step(key, "labcore build", mode=user_mode(), key=key), output=str(log))     # once, not on each show
    return log


def change_running_container(image: str, script: str) -> Step:
    """`docker run -d IMAGE sleep 600`, then `docker exec` of ``script`` in it: a running container whose
    upperdir holds what the script changed, for ``container_diagram``. Kept running until
    ``remove_container``."""
    title = f"a running {image} container, changed by docker exec"
    action = f"labcore run -d --network none {image} sleep 600; labcore exec ID sh -c '{script}'"
    made = None
    try:
        made = engine.create(container.Spec(image, ["sleep", "600"], network="none"))
        running = engine.start(made.id)
        output = list(engine.exec_start(engine.exec_create(running.id, ["sh", "-c", script])))
    except (NeedsPrivilege, NotSupportedHere) as err:
        if made is not None:                        # refused after create: leave no container behind
            engine.remove(made.id, force=True)
        return hosts.refuse(title, action, err, key="layers.change_running_container")
    upper = running.directory / "upper"
    return Step(title, action, before={"upperdir": "(empty)"},
                after={"state": running.state.value, "exec output": output or "(none)",
                       "upperdir": overlay_listing(upper, running.config.get("rootless"))},
                mode=current_mode(), key="layers.change_running_container",
                note="the exec's writes went to the container's upperdir; the image's layers did not change",
                data={"id": running.id, "directory": running.directory})


def remove_container(running: Step) -> Step:
    """`docker rm -f` of the container ``change_running_container`` started: its directory goes, the image's
    layers stay for the next container."""
    title, action = "docker rm -f: the container goes, the image stays", "labcore rm -f ID"
    missing = hosts.lacking("a running container", title, action, running, key="layers.remove_container")
    if missing:
        return missing
    image = engine.image(engine.find(running.data["id"]).image)
    lowers = layers.image_lowers(image)
    before = {"container directory": running.data["directory"].exists(), "image layer": lowers[0].exists()}
    engine.remove(running.data["id"], force=True)
    after = {"container directory": running.data["directory"].exists(), "image layer": lowers[0].exists()}
    return Step(title, action, before, after, user_mode(), key="layers.remove_container",
                note=("the container's upperdir and state went with it" if not after["container directory"] else
                      "the container's directory is still there")
                + ("; the image's layer is shared, and stays" if after["image layer"] else
                   "; the image's layer went too"),
                data={"container_left": after["container directory"], "layer_left": after["image layer"]})


def overlay_listing(upper: Path, rootless) -> list[str]:
    return listing(upper, layers.xattr_namespace(bool(rootless)))


def container_diagram(container_ref: str, max_paths: int = 12):
    """The live overlay of a RUNNING container: its lowers, upper and merged root (seen through
    /proc/PID/root), and which layer each visible path comes from. Copied-up files are orange, new ones
    green, whiteouts red."""
    from labcore.lessons import diagrams
    if hosts.was_refused(container_ref):
        return diagrams.NotDrawn("diagram")
    record = engine.find(container_ref)
    if record.state.value != "running":
        raise LabError(f"container {record.id[:12]} is {record.state.value}, not running",
                       fix="start it; a stopped container has no mount to read")
    text = layers.mounted_root(record.pid)
    options = dict(option.partition("=")[::2] for option in text.split(","))
    lowers = [Path(path) for path in options["lowerdir"].split(":")]
    live = Overlay(lowers, Path(options["upperdir"]), Path(options["workdir"]), Path(procfs.path(record.pid, "root")),
                   text, journal.Scope(), xattr=layers.xattr_namespace("userxattr" in options))
    names = ["init (/etc/hostname, hosts, resolv.conf)", *(f"layer {path.name[:12]}" for path in lowers[1:])]
    return diagrams.show(layer_stack_dot(live, max_paths, names=names))


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
