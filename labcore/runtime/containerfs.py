"""A container's files from the host's side: what changed (`docker diff`), and copying in and out (`docker cp`).

What changed is in the container's upperdir alone (``labcore.kernel.overlay``): every file there was added or
modified, a 0/0 character device is a deletion (a whiteout). Whether "added" or "modified" is whether a
lower layer has the path. Docker's Kind: 0 modified, 1 added, 2 deleted.

Copying reads and writes *inside* the container's view of its files, never through the host's paths: an
image's symlink ``/data -> /etc`` must lead to the container's /etc, not the host's. So a child process
enters the container's filesystem first — a running container's mount namespace (setns(2)), or, for a
stopped one, a private mount namespace where the overlay and the volumes are mounted again and chrooted
into — and then works with plain paths, as `docker cp` does (daemon/archive.go).

Next: ``labcore.api.routes`` serves these as GET/HEAD/PUT /containers/{id}/archive and /changes.
"""
from __future__ import annotations

import base64
import json
import os
import stat
import tarfile

from labcore.errors import BadInput, NotFound
from labcore.image import layers
from labcore.kernel import syscalls
from labcore.kernel.process import Child
from labcore.runtime.jsonfile import timestamp

MODIFIED, ADDED, DELETED = 0, 1, 2


def changes(record) -> list[dict]:
    """`docker diff`: each path in the upperdir, with its Kind, sorted as Docker sorts them."""
    from labcore.runtime import engine
    upper = record.directory / "upper"
    if not upper.is_dir():
        return []
    lowers = layers.image_lowers(engine.image(record.config.get("image_id") or record.image))
    found = []
    for path in layers.walk(upper):
        inside = "/" + path.relative_to(upper).as_posix()
        info = os.lstat(path)
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
            kind = DELETED
        else:
            kind = MODIFIED if any(os.path.lexists(f"{lower}{inside}") for lower in lowers) else ADDED
        found.append({"Path": inside, "Kind": kind})
    return found


# --- entering the container's files --------------------------------------------------------------------

def enter(record) -> None:
    """In a child: make "/" the container's root, running or not."""
    if record.state.value in ("running", "paused"):
        from labcore.kernel.namespaces import enter_namespaces
        enter_namespaces(record.pid, ["mnt"])
        return
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)   # nothing propagates to the host
    root = str(record.directory / "rootfs")
    syscalls.mount("overlay", root, "overlay", 0, root_layers(record).options)
    from labcore.kernel.rootfs import mount_volumes
    from labcore.runtime.spec import parse_volume
    mount_volumes(root, [parse_volume(v) for v in record.config.get("spec", {}).get("volumes", [])])
    os.chdir(root)
    syscalls.chroot(".")
    os.chdir("/")


def root_layers(record):
    """The overlay of a stopped (or never started) container: its image's layers and its own upper dir,
    made now if it never ran (Docker makes the writable layer at create; labcore at the first start)."""
    from labcore.runtime import engine
    image = engine.image(record.config.get("image_id") or record.image)
    return layers.prepare_root(image, record.directory, rootless=False)


# --- out: GET and HEAD /containers/{id}/archive -----------------------------------------------------------

def path_stat(path: str) -> dict:
    """Docker's container path stat (api/types ContainerPathStat), mode in Go's os.FileMode bits."""
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    for test, bit in ((stat.S_ISDIR, 1 << 31), (stat.S_ISLNK, 1 << 27), (stat.S_ISFIFO, 1 << 25),
                      (stat.S_ISSOCK, 1 << 24), (stat.S_ISBLK, 1 << 26), (stat.S_ISCHR, (1 << 26) | (1 << 21))):
        if test(info.st_mode):
            mode |= bit
    return {"name": os.path.basename(path.rstrip("/")) or "/", "size": info.st_size, "mode": mode,
            "mtime": timestamp(int(info.st_mtime * 1e9)),
            "linkTarget": os.readlink(path) if stat.S_ISLNK(info.st_mode) else ""}


def stat_header(record, path: str) -> str:
    """X-Docker-Container-Path-Stat: the stat, JSON, base64."""
    def child(channel):
        enter(record)
        return _stat_or_missing(path)
    result = _in_child(child)
    if result is None:
        raise NotFound(f"Could not find the file {path} in container {record.name}")
    return base64.b64encode(json.dumps(result).encode()).decode()


def _stat_or_missing(path: str):
    try:
        return path_stat(path)
    except FileNotFoundError:
        return None


def read_archive(record, path: str):
    """(stat header, chunks of a tar of ``path``): the tar is written by the child into a pipe."""
    header = stat_header(record, path)
    read_end, write_end = os.pipe()

    def child(channel):
        enter(record)
        with os.fdopen(write_end, "wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
            tar.add(path, arcname=os.path.basename(path.rstrip("/")) or ".")
    worker = Child(child, keep=(write_end,))
    os.close(write_end)

    def chunks():
        with os.fdopen(read_end, "rb") as data:
            while chunk := data.read(65536):
                yield chunk
        worker.recv()
        worker.wait()
    return header, chunks()


# --- in: PUT /containers/{id}/archive ---------------------------------------------------------------------

def write_archive(record, path: str, tar_file: str, no_overwrite_dir_non_dir: bool = False) -> None:
    """Unpack the uploaded tar into ``path``, a directory inside the container (as `docker cp` wants it).
    Inside the container's root nothing can leave it: absolute names and ".." end at its "/"."""
    source = os.open(tar_file, os.O_RDONLY)

    def child(channel):
        enter(record)
        if not os.path.lexists(path):
            return "missing"
        if not os.path.isdir(path):
            return "not a directory"
        with os.fdopen(source, "rb") as data, tarfile.open(fileobj=data, mode="r|*") as tar:
            for member in tar:
                if no_overwrite_dir_non_dir and _would_replace_kind(path, member):
                    raise BadInput(f"cannot overwrite {member.name} with an entry of another kind")
                tar.extract(member, path, set_attrs=True, numeric_owner=True)
        return "ok"
    try:
        result = _in_child(child, keep=(source,))
    finally:
        os.close(source)
    if result == "missing":
        raise NotFound(f"Could not find the file {path} in container {record.name}")
    if result != "ok":
        raise BadInput(f"extraction point is not a directory: {path}", fix="PUT into an existing directory")


def _would_replace_kind(directory: str, member: tarfile.TarInfo) -> bool:
    target = os.path.join(directory, member.name)
    return os.path.lexists(target) and os.path.isdir(target) != member.isdir()


def _in_child(fn, keep=()):
    worker = Child(fn, keep=keep)
    try:
        return worker.recv()
    finally:
        worker.wait()

