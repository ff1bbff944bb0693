"""Layers, unpacked once: what every container of an image shares.

`docker run` copies nothing. Each layer of an image is unpacked once, into a directory of its own (Docker's
/var/lib/docker/overlay2/<id>/diff), and every container mounts an overlay (``labcore.kernel.overlay``) on them:

    <images>/layers/<diff_id hex>/     one per layer: read-only lowerdirs, shared by every container
    <containers>/<id>/init/            /etc/hostname, hosts, resolv.conf: the top lowerdir (Docker's "-init")
    <containers>/<id>/upper, work      the container's own writable layer, removed with the container
    <containers>/<id>/rootfs           the merged view. pid 1 mounts it in its own mount namespace, so the
                                       mount ends with the container and the host has nothing to undo

The cache is keyed by diff_id, the sha256 of the uncompressed tar: two images with a layer in common share
its directory. Like the image store it is kept, not journaled; a layer is unpacked into a labcore-...
temporary directory and rename(2)d into place, so two containers starting at once never see half a layer.

A layer says "deleted" in OCI's words, and overlayfs in its own (image-spec layer.md, "Whiteouts";
Documentation/filesystems/overlayfs.rst, "whiteouts and opaque directories"):

    in the layer's tar (OCI)      in the layer's directory (overlayfs)
    DIR/.wh.NAME                  DIR/NAME, a character device 0/0
    DIR/.wh..wh..opq              DIR, with the xattr trusted.overlay.opaque=y

``unpack_layer`` converts one way when a layer enters the cache; ``layer_tar`` converts back when a
container's upperdir becomes a layer (``labcore.runtime.build``). Without root the xattr is user.overlay.opaque and
the mount takes the ``userxattr`` option; the state directory is per user, so a cache unpacked by root is
only ever used by root.

Notebook 05 shows them, and the containers on them: ``labcore.lessons.union_fs``.

Next: ``labcore.runtime.build`` makes images from containers: `labcore commit`, and `labcore build` from a Labfile.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from labcore import paths
from labcore.errors import BadInput, LabError, NotFound, from_oserror
from labcore.kernel import journal, procfs, syscalls
from labcore.kernel.overlay import MAX_OPTIONS, OPAQUE, is_opaque, overlay_options

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def xattr_namespace(rootless: bool | None = None) -> str:
    """trusted.* needs CAP_SYS_ADMIN in the host's user namespace; a user may write user.* (xattr(7))."""
    rootless = os.geteuid() != 0 if rootless is None else rootless
    return "user" if rootless else "trusted"


# --- the cache: one directory per layer -------------------------------------------------------------------

def layers_dir() -> Path:
    return paths.images_dir() / "layers"


def layer_dir(layer) -> Path:
    """Where a layer is unpacked: named by its diff_id (by the blob's digest if the config has none)."""
    digest = layer.diff_id or layer.digest
    if not _DIGEST.match(digest):
        raise BadInput(f"not a sha256 digest: {digest!r}", fix="a digest is sha256:<64 hex digits>")
    return layers_dir() / digest[7:]


def ensure_layer(store, layer) -> Path:
    """The layer's directory, unpacked (and its blob verified) the first time any container needs it."""
    target = layer_dir(layer)
    if target.is_dir():
        return target
    layers_dir().mkdir(parents=True, exist_ok=True)
    with journal.Scope() as scope:            # only the half-unpacked directory is journaled, never the cache
        temporary = layers_dir() / f"{paths.PREFIX}-unpacking-{os.urandom(8).hex()}"
        scope.record("directory", str(temporary), "rmtree", path=str(temporary))     # before it exists
        temporary.mkdir(mode=0o755)
        os.chmod(temporary, 0o755)                # whatever the umask
        unpack_layer(store.verify_blob(layer.digest), temporary, layer.media_type)
        try:
            os.rename(temporary, target)      # atomic; it fails when another process got there first
        except OSError as err:
            if not target.is_dir():
                raise from_oserror(err, "rename", str(target)) from err
    return target


def image_lowers(image) -> list[Path]:
    """The image's layer directories as lowerdir= lists them: the top layer first (a manifest lists the base
    first), each unpacked once."""
    from labcore.image import oci
    store = oci.Store()
    return [ensure_layer(store, layer) for layer in reversed(image.layers)]


# --- OCI whiteouts -> overlayfs whiteouts, on the way into the cache -------------------------------------

def unpack_layer(blob, dest, media_type: str, xattr: str | None = None) -> None:
    """Extract one layer alone into ``dest``, its whiteouts written as overlayfs's. Each entry passes the
    checks of ``oci.extract_layer``: names first, then every directory on its path, symlinks included."""
    from labcore.image import oci
    if "zstd" in media_type:
        raise LabError(f"layer {blob} is zstd-compressed ({media_type})",
                       fix="convert it: skopeo copy --dest-compress-format gzip ...")
    root, pending, added = os.path.realpath(dest), {}, set()
    with oci._open_tar(blob) as tar:
        members = tar.getmembers()
        for member in members:
            oci.check_entry(member)         # refused before this layer writes anything
        for member in members:
            try:
                _unpack_entry(tar, member, root, added, pending, xattr or xattr_namespace())
            except OSError as err:
                raise from_oserror(err, f"extracting {member.name!r}", os.path.join(root, member.name),
                                   fix=f"layer blob {blob} could not be unpacked") from err
    oci.set_directory_attributes(root, pending)


def _unpack_entry(tar, member, root: str, added: set, pending: dict, xattr: str) -> None:
    from labcore.image import oci
    name = PurePosixPath(member.name)
    if not name.parts:
        return                                 # "./": the layer's root, which the caller made
    directory = oci.resolve_inside(root, name.parent, member)
    if name.name == oci.OPAQUE:
        os.setxattr(directory, f"{xattr}.{OPAQUE}", b"y", follow_symlinks=False)
    elif name.name.startswith(oci.WHITEOUT):
        hidden = name.name[len(oci.WHITEOUT):]
        if (name.parent / hidden).as_posix() not in added:    # a whiteout hides only the layers below
            make_whiteout(os.path.join(directory, hidden))
    else:
        oci.create_entry(tar, member, os.path.join(directory, name.name), root, pending)
        added.update(p.as_posix() for p in [name, *name.parents] if p.parts)


def make_whiteout(path: str) -> None:
    """overlayfs's whiteout: a character device 0/0. mknod(2) allows this one device without CAP_MKNOD
    (fs/namei.c, vfs_mknod, since Linux 5.8), so a rootless user unpacks whiteouts too."""
    if not os.path.lexists(path):
        syscalls.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


# --- a container's overlay ----------------------------------------------------------------------------

@dataclass
class RootLayers:
    """What pid 1 mounts at its root: the lowers (top first), its upper and work dirs, the merged root."""
    lowers: list[Path]
    upper: Path
    work: Path
    merged: Path
    userxattr: bool = False

    @property
    def init(self) -> Path:
        return self.lowers[0]

    @property
    def options(self) -> str:
        return overlay_options(self.lowers, self.upper, self.work, self.userxattr)


def prepare_root(image, directory: Path, rootless: bool) -> RootLayers:
    """The image's cached layers, and this container's init, upper, work and rootfs directories in its state
    directory (which is journaled, so they go with it). A restart finds them and keeps the container's files."""
    stack = RootLayers([directory / "init", *image_lowers(image)], directory / "upper", directory / "work",
                       directory / "rootfs", userxattr=rootless)
    for path in (stack.init, stack.upper, stack.work, stack.merged):
        path.mkdir(exist_ok=True)
    check_options(stack)
    return stack


def check_options(stack: RootLayers) -> None:
    """The overlay option syntax reserves ',' ':' and '\\'; mount(2) takes at most a page of options."""
    for path in [*stack.lowers, stack.upper, stack.work]:
        if set(str(path)) & {",", ":", "\\"}:
            raise BadInput(f"{path} contains ',', ':' or '\\', which overlay mount options reserve",
                           fix="set LABCORE_HOME to a path without them")
    if len(stack.options) > MAX_OPTIONS:
        raise BadInput(f"{len(stack.lowers)} layers make {len(stack.options)} bytes of mount options; "
                       f"mount(2) takes {MAX_OPTIONS}", fix="use a shorter LABCORE_HOME, or fewer layers")


# --- overlayfs whiteouts -> OCI whiteouts, on the way out: an upperdir becomes a layer ------------------

def layer_tar(upper, xattr: str = "trusted") -> bytes:
    """An upperdir as an OCI layer tar, as Docker's overlay2 driver writes one (pkg/archive/archive_linux.go):
    a 0/0 device becomes an empty ``.wh.NAME``; an opaque directory gains ``.wh..wh..opq``. Entries sorted,
    numeric owners, whole-second times: the same tree always gives the same bytes."""
    import io
    import tarfile
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in walk(Path(upper)):
            add_to_layer(tar, path, path.relative_to(upper).as_posix(), xattr)
    return buffer.getvalue()


def add_to_layer(tar, path: Path, name: str, xattr: str) -> None:
    import tarfile
    info = tar.gettarinfo(str(path), name)    # a second name for an inode already added becomes a hard link
    info.uname = info.gname = ""
    info.mtime = int(info.mtime)
    if info.ischr() and info.devmajor == info.devminor == 0:
        parent, _, base = name.rpartition("/")
        info.name = "/".join(filter(None, [parent, ".wh." + base]))
        info.type, info.mode, info.size = tarfile.REGTYPE, 0o600, 0
        tar.addfile(info)
    elif info.isreg():
        with open(path, "rb") as data:
            tar.addfile(info, data)
    else:
        tar.addfile(info)
    if info.isdir() and is_opaque(path, xattr):
        marker = tarfile.TarInfo(f"{name}/.wh..wh..opq")
        marker.mode, marker.uid, marker.gid, marker.mtime = info.mode & 0o777, info.uid, info.gid, info.mtime
        tar.addfile(marker)


def walk(root: Path):
    """Every path below ``root``, sorted, each directory before what it holds."""
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            yield Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                yield from walk(Path(entry.path))


# --- a running container's overlay, read back from /proc ----------------------------------------------

def mounted_root(pid: int) -> str:
    """The options of the overlay mounted at pid's "/", from /proc/PID/mountinfo (proc(5): the super options
    are the last field)."""
    for mount in procfs.mountinfo(pid):
        if mount.point == "/" and mount.fstype == "overlay":
            return mount.super_options
    raise NotFound(f"process {pid} has no overlay at its root", fix="is it a running labcore container?")
