"""Images: a root filesystem in layers, kept by digest in an OCI image layout.

An image is two small JSON documents and some tar files, each stored under the sha256 of its bytes
(OCI image-spec v1.1):

    index.json    the store's table of contents: one descriptor per name:tag           (image-layout.md)
    manifest      which config and which layers, by digest and size                     (manifest.md)
    config        Cmd, Env, WorkingDir, User; rootfs.diff_ids = sha256 of each *uncompressed* layer
                  (config.md). Its digest is the IMAGE ID that `docker images` shows.
    layers        tar(.gz) change sets applied in order; `.wh.NAME` deletes NAME        (layer.md)

A digest is a name *and* a checksum: the store re-hashes every blob it reads, so a flipped bit is an error
with the fix, not a strange container. Unpacking treats each layer as hostile, as a registry's content
must be: an entry may not leave the root by an absolute path, by "..", or through a symlink that an earlier
entry planted, and nothing outside the destination is ever written.

Docker keeps the same blobs in its own layout under /var/lib/docker; real OCI tools read this one directly:
``skopeo inspect oci:$LABCORE_HOME/images:latest``, ``umoci ls --layout $LABCORE_HOME/images``.
Next: ``labcore.image.baseimage`` builds busybox from the host; ``labcore.kernel.rootfs`` pivots into an unpacked image.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from labcore import paths
from labcore.errors import BadInput, LabError, NeedsPrivilege, NotFound, NotSupportedHere, from_oserror
from labcore.kernel import syscalls

# Media types (image-spec media-types.md); Docker's schema 2 names for the same documents are read too.
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER_TAR + "+gzip"
MANIFEST_TYPES = (MANIFEST, "application/vnd.docker.distribution.manifest.v2+json")
REF_NAME = "org.opencontainers.image.ref.name"      # annotations.md: the tag, on index.json entries
IMAGE_NAME = "io.containerd.image.name"             # the full name:tag, as containerd and buildkit write it
BASE_IMAGE = "busybox:latest"
UNTAGGED = ("<none>", "<none>")                     # an index entry with no name: Docker's dangling image

WHITEOUT = ".wh."                                   # layer.md "Whiteouts"
OPAQUE = ".wh..wh..opq"

_NAME = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+|/)[a-z0-9]+)*$")
_TAG = re.compile(r"^\w[\w.-]{0,127}$")            # both from distribution's reference grammar
_ID = re.compile(r"^(?:sha256:)?[0-9a-f]{1,64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REBUILD = ("rebuild it: for busybox call labcore.image.baseimage.ensure_base_image() (or `./lab up`), "
            "which rewrites the same bytes; for a pulled image, pull it again")


@dataclass
class Layer:
    digest: str                 # sha256 of the blob as stored (compressed or not): its file name
    media_type: str
    size: int
    path: Path
    diff_id: str = ""           # sha256 of the uncompressed tar: the config's rootfs.diff_ids entry


@dataclass
class Image:
    name: str
    tag: str
    digest: str                 # the manifest's digest: what a registry calls this image
    id: str                     # the config's digest: the IMAGE ID of `docker images`
    config: dict                # the config's "config" object: Cmd, Entrypoint, Env, WorkingDir, User
    layers: list[Layer]
    created: str                # RFC 3339, from the config
    size: int                   # bytes of the layer blobs as stored (Docker shows the unpacked size)
    history: list[dict] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]


def split_reference(ref: str) -> tuple[str, str]:
    """``name[:tag]`` -> (name, tag). The tag follows the last colon, if no slash comes after it
    (``localhost:5000/busybox`` has no tag); Docker Hub's ``docker.io/library/`` prefix is dropped."""
    head, colon, tail = ref.rpartition(":")
    name, tag = (head, tail) if colon and "/" not in tail else (ref, "latest")
    name = name.removeprefix("docker.io/").removeprefix("library/")
    if not _NAME.match(name) or not _TAG.match(tag):
        raise BadInput(f"invalid reference format: {ref!r}",
                       fix="use NAME, NAME:TAG or an image ID, e.g. busybox, busybox:latest, 3f57d9401f8d")
    return name, tag


def host_architecture() -> str:
    """The config's "architecture" uses Go's GOARCH names (config.md), not uname's."""
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


class Store:
    """An OCI image layout (image-layout.md): ``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else paths.images_dir()

    # --- reading ---------------------------------------------------------------------------------------

    def list(self) -> list[Image]:
        return [self._load(entry) for entry in self._entries()]

    def resolve(self, ref: str) -> Image:
        """``name``, ``name:tag`` or an image ID prefix -> the image, with Docker's error if there is none.

        A name wins over an ID prefix, as in Docker: ``cafe`` is first looked up as ``cafe:latest``."""
        looks_like_id = bool(_ID.match(ref))
        key = None if ref.startswith("sha256:") else split_reference(ref)
        entry = next((e for e in self._entries() if key and _name_tag(e) == key), None)
        if entry is not None:
            return self._load(entry)
        if looks_like_id and (image := self._find_by_id(ref)):
            return image
        raise NotFound(f"No such image: {ref if looks_like_id or not key else ':'.join(key)}",
                       fix="`labcore images` lists what is here; busybox is built by "
                           "labcore.image.baseimage.ensure_base_image() (or `./lab up`)")

    def _find_by_id(self, prefix: str) -> Image | None:
        hexes = prefix.removeprefix("sha256:")
        found = {}
        for image in self.list():
            if image.id[7:].startswith(hexes) or image.digest[7:].startswith(hexes):
                found.setdefault(image.id, image)
        if len(found) > 1:
            raise BadInput(f"image ID prefix {prefix!r} matches {len(found)} images",
                           fix="give more digits of the IMAGE ID (`labcore images --no-trunc`)")
        return next(iter(found.values()), None)

    def _entries(self) -> list[dict]:
        # A nested index (a multi-platform image copied with `skopeo copy --all`) is not runnable as is.
        return [e for e in self._index()["manifests"] if e.get("mediaType", MANIFEST) in MANIFEST_TYPES]

    def _index(self) -> dict:
        path = self.root / "index.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}      # no store yet: empty
        except OSError as err:
            raise from_oserror(err, "open", str(path)) from err
        except ValueError as err:
            raise LabError(f"{path} is not valid JSON: {err}", path=str(path),
                           fix=f"move {self.root} aside and rebuild the images") from err

    def _load(self, entry: dict) -> Image:
        """An index entry -> Image, reading (and verifying) its manifest and config."""
        manifest = json.loads(self.read_blob(entry["digest"]))
        config = json.loads(self.read_blob(manifest["config"]["digest"]))
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        layers = [Layer(d["digest"], d["mediaType"], d["size"], self.blob_path(d["digest"]),
                        diff_ids[i] if i < len(diff_ids) else "")
                  for i, d in enumerate(manifest["layers"])]
        name, tag = _name_tag(entry)
        return Image(name=name, tag=tag, digest=entry["digest"], id=manifest["config"]["digest"],
                     config=config.get("config") or {}, layers=layers, created=config.get("created", ""),
                     size=sum(layer.size for layer in layers), history=config.get("history", []))

    # --- blobs ------------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        # Checked before use: a digest taken from a manifest must not become a path like ../../etc.
        if not _DIGEST.match(digest):
            raise BadInput(f"not a sha256 digest: {digest!r}", fix="a digest is sha256:<64 hex digits>")
        return self.root / "blobs" / "sha256" / digest[7:]

    def read_blob(self, digest: str) -> bytes:
        """A (small) blob's bytes, after checking that they still hash to its name."""
        path = self.blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise LabError(f"blob {digest} is missing from the store", path=str(path), fix=_REBUILD) from err
        _check_digest(digest, hashlib.sha256(data).hexdigest(), path)
        return data

    def verify_blob(self, digest: str) -> Path:
        """Re-hash a (large) blob in chunks; its path if intact, else a LabError naming the digest."""
        path = self.blob_path(digest)
        try:
            actual = _hash_file(path)
        except FileNotFoundError as err:
            raise LabError(f"blob {digest} is missing from the store", path=str(path), fix=_REBUILD) from err
        _check_digest(digest, actual, path)
        return path

    def write_blob(self, data: bytes, media_type: str) -> dict:
        """Store bytes under their digest; return the descriptor that points at them (descriptor.md)."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self._intact(digest):
            self._install(digest, lambda out: out.write(data))
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def copy_blob(self, source: str | os.PathLike, media_type: str, expect: str | None = None) -> dict:
        """Store a file under its digest, refusing it if it is not the ``expect``-ed content."""
        digest = "sha256:" + _hash_file(source)
        if expect and digest != expect:
            raise LabError(f"{source} should be {expect} but hashes to {digest}", path=str(source),
                           fix="the download was corrupted or replaced; pull again")
        if not self._intact(digest):
            with open(source, "rb") as data:
                self._install(digest, lambda out: shutil.copyfileobj(data, out))
        return {"mediaType": media_type, "digest": digest, "size": os.path.getsize(source)}

    def _intact(self, digest: str) -> bool:
        path = self.blob_path(digest)
        return path.exists() and "sha256:" + _hash_file(path) == digest

    def _install(self, digest: str, write) -> None:
        """Write into a temporary file beside the blob, then rename(2): readers never see half a blob."""
        self._create_layout()
        import tempfile        # here, not at the top: writing a blob is a pull's or a load's work, not a run's
        target = self.blob_path(digest)
        fd, temporary = tempfile.mkstemp(prefix=".labcore-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.chmod(temporary, 0o644)          # content, not a secret: other tools may read the store
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    # --- writing images ---------------------------------------------------------------------------------

    def add_image(self, layers: list, config: dict, name: str | None, tag: str = "latest") -> Image:
        """Store layer files (tar or tar.gz) and a config as an image, and point ``name:tag`` at it (with no
        name, an untagged ``<none>:<none>`` entry, as `docker build` leaves its intermediate images).

        ``config`` is either the whole OCI config or just its "config" object (Cmd, Env, ...); rootfs is
        always computed here from the stored layers, so diff_ids cannot disagree with the blobs."""
        if name:
            split_reference(f"{name}:{tag}")       # refuse a bad name before anything is written
        descriptors, diff_ids = [], []
        for layer in layers:
            descriptor, diff_id = self._add_layer(layer)
            descriptors.append(descriptor)
            diff_ids.append(diff_id)
        config_blob = self.write_blob(canonical_json(_full_config(config, diff_ids)), CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config_blob, "layers": descriptors}
        return self._point(self.write_blob(canonical_json(manifest), MANIFEST), name, tag)

    def import_manifest(self, manifest: bytes, directory: str | os.PathLike, name: str,
                        tag: str = "latest") -> Image:
        """Store a pulled image: blobs already in ``directory/<hex>`` (each re-checked), then its manifest."""
        split_reference(f"{name}:{tag}")
        parsed = json.loads(manifest)
        for blob in [parsed["config"], *parsed["layers"]]:
            self.blob_path(blob["digest"])          # validates the digest before it becomes a file name
            self.copy_blob(Path(directory) / blob["digest"][7:], blob["mediaType"], expect=blob["digest"])
        return self._point(self.write_blob(manifest, parsed.get("mediaType", MANIFEST)), name, tag)

    def _add_layer(self, path: str | os.PathLike) -> tuple[dict, str]:
        """Copy one layer in. Its digest names the file as stored; its diff_id names the tar inside."""
        try:
            with open(path, "rb") as file:
                compressed = file.read(2) == b"\x1f\x8b"        # gzip's magic number (RFC 1952)
        except OSError as err:
            raise from_oserror(err, "open", str(path),
                               fix="pass the path of a .tar or .tar.gz layer") from err
        import gzip            # here, not at the top: as tempfile above
        descriptor = self.copy_blob(path, LAYER_GZIP if compressed else LAYER_TAR)
        with (gzip.open(path) if compressed else open(path, "rb")) as tar:
            return descriptor, "sha256:" + hash_stream(tar)

    def _point(self, manifest: dict, name: str | None, tag: str = "latest") -> Image:
        """Add the index.json entry for name:tag, dropping the one it had (a re-tag moves the name).

        With no name the entry carries no annotations: Docker's ``<none>:<none>``, added only if no entry
        holds that manifest yet; naming a manifest drops its untagged entry."""
        entry = {**manifest, "annotations": {REF_NAME: tag, IMAGE_NAME: f"{name}:{tag}"}} if name else manifest
        self._create_layout()
        with self._locked():
            index = self._index()
            if name or all(e["digest"] != entry["digest"] for e in index["manifests"]):
                index["manifests"] = [e for e in index["manifests"] if not _replaced_by(e, entry)] + [entry]
                _write_atomically(self.root / "index.json", canonical_json(index))
        return self._load(entry)

    # --- names and removal: `labcore load`, `tag`, `rmi` -----------------------------------------------

    def point(self, manifest: dict, name: str | None = None, tag: str = "latest") -> Image:
        """Name a stored manifest (a descriptor: mediaType, digest, size); with no name, keep it untagged."""
        if name:
            split_reference(f"{name}:{tag}")
        self.read_blob(manifest["digest"])         # it must be here, and intact, before a name points at it
        return self._point(manifest, name, tag)

    def descriptor(self, image: Image) -> dict:
        """The descriptor of an image's manifest, as an index entry holds it (descriptor.md)."""
        data = self.read_blob(image.digest)
        return {"mediaType": json.loads(data).get("mediaType", MANIFEST), "digest": image.digest,
                "size": len(data)}

    def untag(self, name: str, tag: str) -> bool:
        """Drop the index entry for name:tag (its blobs stay); False if there was none."""
        return self._drop(lambda entry: _name_tag(entry) == (name, tag))

    def forget(self, digest: str) -> bool:
        """Drop every index entry, named or not, that points at this manifest (its blobs stay)."""
        return self._drop(lambda entry: entry["digest"] == digest)

    def _drop(self, matches) -> bool:
        with self._locked():
            index = self._index()
            kept = [entry for entry in index["manifests"] if not matches(entry)]
            if len(kept) == len(index["manifests"]):
                return False
            index["manifests"] = kept
            _write_atomically(self.root / "index.json", canonical_json(index))
        return True

    def remove_unreferenced(self, digests: list[str]) -> list[str]:
        """Delete those of ``digests`` that no index entry still reaches; the ones deleted, in order.

        Only the blobs asked about are candidates, never the whole store: a pull in another process
        copies its blobs in before it points a name at them, and must not lose them meanwhile."""
        removed = []
        with self._locked():
            used = self._reachable()
            for digest in dict.fromkeys(digests):
                if digest not in used and self.blob_path(digest).exists():
                    self.blob_path(digest).unlink()
                    removed.append(digest)
        return removed

    def _reachable(self) -> set[str]:
        """Every digest reachable from index.json: manifests (and nested indexes), configs, layers."""
        seen: set[str] = set()
        pending = [entry["digest"] for entry in self._index()["manifests"]]
        while pending:
            digest = pending.pop()
            if digest in seen or not self.blob_path(digest).exists():
                continue
            seen.add(digest)
            document = json.loads(self.blob_path(digest).read_bytes())
            seen.update(blob["digest"] for blob in [document.get("config"), *document.get("layers", [])] if blob)
            pending += [child["digest"] for child in document.get("manifests", [])]   # a nested index
        return seen

    def _create_layout(self) -> None:
        """The two files image-layout.md requires, and the blobs directory (idempotent)."""
        try:
            (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                _write_atomically(self.root / "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
            if not (self.root / "index.json").exists():
                _write_atomically(self.root / "index.json", canonical_json(self._index()))
        except OSError as err:
            raise from_oserror(err, "mkdir", str(self.root),
                               fix="set LABCORE_HOME to a directory you can write") from err

    @contextlib.contextmanager
    def _locked(self):
        # flock(2) on the store directory: two processes tagging at once must not lose an index entry.
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- unpacking --------------------------------------------------------------------------------------

    def unpack(self, image: Image, dest: str | os.PathLike) -> None:
        """Extract the layers in order into ``dest``: the plain-directory root filesystem that a chroot or
        pivot_root step uses. Whiteouts delete from the layers below; directory modes are set last, so a
        0555 directory from one layer can still receive files from the next."""
        try:
            os.makedirs(dest, exist_ok=True)
        except OSError as err:
            raise from_oserror(err, "mkdir", str(dest)) from err
        directories: dict[str, tarfile.TarInfo] = {}
        for layer in image.layers:
            extract_layer(self.verify_blob(layer.digest), dest, layer.media_type, directories)
        set_directory_attributes(dest, directories)


# --- extracting one layer, as hostile input ----------------------------------------------------------------

def extract_layer(blob: str | os.PathLike, dest: str | os.PathLike, media_type: str = LAYER_GZIP,
                  directories: dict | None = None) -> None:
    """Apply one layer (layer.md "Applying Changesets") to the tree at ``dest``.

    ``directories`` collects directory entries whose mode is set afterwards (``set_directory_attributes``)."""
    if "zstd" in media_type:
        raise NotSupportedHere(f"layer {blob} is zstd-compressed ({media_type})",
                               fix="convert it: skopeo copy --dest-compress-format gzip ...")
    root = os.path.realpath(dest)
    pending = {} if directories is None else directories
    added: set[str] = set()     # this layer's paths: its whiteouts hide only the layers below (layer.md)
    with _open_tar(blob) as tar:
        members = tar.getmembers()
        for member in members:
            check_entry(member)             # names alone: refused before this layer writes anything
        for member in members:
            try:
                _apply_entry(tar, member, root, added, pending)
            except OSError as err:
                raise from_oserror(err, f"extracting {member.name!r}", os.path.join(root, member.name),
                                   fix=f"layer blob {blob} could not be applied; remove {dest}") from err
    if directories is None:
        set_directory_attributes(dest, pending)


def check_entry(member: tarfile.TarInfo) -> None:
    """Refuse what leaves the root whatever is on disk: absolute names, '..', empty whiteouts, odd types."""
    for name in (member.name, member.linkname if member.islnk() else ""):
        if name.startswith("/") or ".." in PurePosixPath(name).parts:
            raise _hostile(member, f"{name!r} leaves the root filesystem")
    base = PurePosixPath(member.name).name
    if base.startswith(WHITEOUT) and base[len(WHITEOUT):] in ("", ".", ".."):
        raise _hostile(member, "a whiteout must name a file in its own directory")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk() or member.isdev()):
        raise _hostile(member, f"tar type {member.type!r} is not one a layer may hold")


def _apply_entry(tar: tarfile.TarFile, member: tarfile.TarInfo, root: str, added: set, pending: dict) -> None:
    name = PurePosixPath(member.name)
    if not name.parts:
        return                                  # "./": the root itself, which the caller made
    directory = resolve_inside(root, name.parent, member)
    if name.name == OPAQUE:
        empty_directory(directory, name.parent, added)
    elif name.name.startswith(WHITEOUT):
        if (name.parent / name.name[len(WHITEOUT):]).as_posix() not in added:
            remove_path(os.path.join(directory, name.name[len(WHITEOUT):]))
    else:
        create_entry(tar, member, os.path.join(directory, name.name), root, pending)
        added.update(p.as_posix() for p in [name, *name.parents] if p.parts)


def resolve_inside(root: str, directory: PurePosixPath, member: tarfile.TarInfo) -> str:
    """The host path of an entry's directory, following symlinks only while they stay inside ``root``.

    This is the check that matters: an earlier entry or layer may have planted ``link -> /etc`` (or a chain
    ``a -> b -> ../..``); then ``link/passwd`` would overwrite the host's file. realpath(3) follows the
    whole chain, and the result must still be below the root. Missing directories are created."""
    current = root
    for part in directory.parts:
        step = os.path.join(current, part)
        if os.path.islink(step):
            step = os.path.realpath(step)
            if os.path.commonpath([root, step]) != root:
                raise _hostile(member, f"{part!r} is a symlink that leads outside the root filesystem")
        if not os.path.lexists(step):
            os.mkdir(step, 0o755)
        elif not os.path.isdir(step):
            raise _hostile(member, f"{part!r} is not a directory")
        current = step
    return current


def create_entry(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str, root: str,
                 pending: dict) -> None:
    """Make one file, directory, link or node at ``target``, replacing what the layers below had there."""
    if member.isdir():
        if os.path.islink(target) or not os.path.isdir(target):
            remove_path(target)
            os.mkdir(target, 0o700)             # owner-writable until set_directory_attributes
        pending[target] = member
        return
    remove_path(target)                         # never write through what is there: it may be a symlink
    if member.isreg():
        _write_file(tar, member, target)
    elif member.issym():
        os.symlink(member.linkname, target)     # pointing anywhere is fine; writing through it is not
    elif member.islnk():
        os.link(_link_source(root, member), target, follow_symlinks=False)
        return                                  # shares the inode (and metadata) of its source
    elif not make_node(member, target):
        return
    set_attributes(member, target)


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    # O_EXCL|O_NOFOLLOW: create a new file here or fail; never open something already in place.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, tar.extractfile(member) as data:
        shutil.copyfileobj(data, out)


def _link_source(root: str, member: tarfile.TarInfo) -> str:
    """A hard link's target, which must already be inside the root (resolved like any entry's path)."""
    link = PurePosixPath(member.linkname)
    source = os.path.join(resolve_inside(root, link.parent, member), link.name)
    if not link.parts or not os.path.lexists(source):
        raise _hostile(member, f"hard link target {member.linkname!r} is not in the layers so far")
    return source


def make_node(member: tarfile.TarInfo, target: str) -> bool:
    """A FIFO, or a device node through mknod(2) — only root may make devices, so others skip them (the
    runtime gives a container its /dev anyway). False when skipped."""
    if member.isfifo():
        os.mkfifo(target, 0o600)
        return True
    if os.geteuid() != 0:
        return False
    kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
    try:
        syscalls.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
    except NeedsPrivilege:                      # root inside a user namespace: still not allowed
        return False
    return True


def set_attributes(member: tarfile.TarInfo, path: str) -> None:
    """Owner (only root may give files away), then mode (chown(2) clears set-user-ID bits), then mtime."""
    if os.geteuid() == 0:
        os.chown(path, member.uid, member.gid, follow_symlinks=False)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)


def set_directory_attributes(dest: str | os.PathLike, pending: dict) -> None:
    """Directory modes and owners, deepest first, once every layer is in. A path that a later entry turned
    into (or put under) a symlink is skipped: its realpath(3) is no longer itself."""
    root = os.path.realpath(dest)
    for path in sorted(pending, key=lambda p: p.count(os.sep), reverse=True):
        unmoved = os.path.realpath(path) == path and os.path.commonpath([root, path]) == root
        if unmoved and os.path.isdir(path):
            set_attributes(pending[path], path)


def empty_directory(directory: str, name: PurePosixPath, added: set) -> None:
    """An opaque whiteout: remove what the layers below put in ``directory``, keep this layer's entries."""
    for child in os.listdir(directory):
        if (name / child).as_posix() not in added:
            remove_path(os.path.join(directory, child))


def remove_path(path: str) -> None:
    """Delete what is at ``path`` without following it: a symlink goes, never what it points at."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)                     # rmtree does not follow symlinks inside the tree either
    elif os.path.lexists(path):
        os.unlink(path)


# --- small helpers -----------------------------------------------------------------------------------------

def _open_tar(blob: str | os.PathLike) -> tarfile.TarFile:
    try:
        return tarfile.open(blob, "r:*")        # r:* detects gzip, bzip2 and xz from the first bytes
    except tarfile.TarError as err:
        raise BadInput(f"layer {blob} is not a tar archive: {err}", path=str(blob),
                       fix="a layer is a tar or tar.gz file (image-spec layer.md)") from err


def _hostile(member: tarfile.TarInfo, why: str) -> BadInput:
    return BadInput(f"refusing layer entry {member.name!r}: {why}", path=member.name,
                    fix="this layer is malformed or malicious; nothing was written outside the destination. "
                        "Remove the destination and use an image from a source you trust")


def _name_tag(entry: dict) -> tuple[str, str]:
    """An index entry's name and tag: containerd's full name if present, else ref.name, which is a bare tag
    (buildkit, umoci) or ``name:tag`` (``skopeo copy ... oci:DIR:name:tag``)."""
    notes = entry.get("annotations", {})
    text = notes.get(IMAGE_NAME) or notes.get(REF_NAME, "")
    if not text:
        return UNTAGGED
    head, colon, tail = text.rpartition(":")
    if colon and "/" not in tail:
        return head, tail
    return ("<none>", text) if REF_NAME in notes and IMAGE_NAME not in notes else (text, "latest")


def _replaced_by(old: dict, new: dict) -> bool:
    """Does ``new`` take ``old``'s place in the index: the same name:tag, or an untagged entry now named."""
    if _name_tag(old) == UNTAGGED:
        return old["digest"] == new["digest"]
    return _name_tag(old) == _name_tag(new)


def _full_config(config: dict, diff_ids: list[str]) -> dict:
    full = dict(config) if {"architecture", "os", "config"} & config.keys() else {"config": dict(config)}
    full.setdefault("created", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    full.setdefault("architecture", host_architecture())
    full.setdefault("os", "linux")
    full["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    return full


def config_document(config: dict, diff_ids: list[str]) -> bytes:
    """The config blob ``add_image`` stores for ``config`` over layers ``diff_ids``: its sha256 is the image ID."""
    return canonical_json(_full_config(config, diff_ids))


def canonical_json(document) -> bytes:
    """Sorted keys, no spaces: the same document always has the same bytes, hence the same digest."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".labcore-{path.name}.{os.getpid()}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def hash_stream(stream) -> str:
    """The sha256 of what ``stream`` holds, read a MiB at a time (a layer may be GBs)."""
    hasher = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        hasher.update(chunk)
    return hasher.hexdigest()


def _hash_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as file:
        return hash_stream(file)


def _check_digest(digest: str, actual: str, path: Path) -> None:
    if digest != "sha256:" + actual:
        raise LabError(f"blob {digest} is corrupted: its content hashes to sha256:{actual}",
                       path=str(path), digest=digest, fix=_REBUILD)
