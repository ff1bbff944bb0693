"""Image archives: `docker save` and `docker load`, and the OCI formats that other tools write.

An image travels between tools as one tar file. Three shapes are in use, and `labcore load` reads them all:

    docker-archive   what `docker save` writes (Docker's image spec v1.2, "Combined Image JSON + Filesystem
                     Changeset Format", moby/image/spec/v1.2.md): a manifest.json with one object per image,
                         [{"Config": "<hex>.json", "RepoTags": ["busybox:latest"], "Layers": ["<id>/layer.tar"]}]
                     Docker 25 and later store the same files as blobs/sha256/<hex> and add an OCI index.json
                     and oci-layout, so one archive is both formats at once.
    oci-archive      `podman save --format oci-archive`: a tar of an OCI image layout (image-spec
                     image-layout.md): oci-layout, index.json, blobs/sha256/<hex>.
    OCI layout       the same, not tarred: `skopeo copy docker://busybox oci:DIR:busybox:latest`.

Nothing is taken on trust. A blob named blobs/sha256/<hex> must hash to <hex>; a config hashes to the image
ID; each layer, uncompressed, must hash to the diff_id its config lists (config.md). Layers are stored as they
came, gzip or plain, so their digests stay the ones the other tool reported. The archive's own member names
are checked as a layer's are — no absolute paths, no "..", links only to files inside — and it is unpacked
only into a journaled ``labcore-load-*`` directory that is removed afterwards.

`labcore save` writes an OCI layout with Docker's manifest.json beside it, the shape Docker 25 writes, so
podman, skopeo, containerd and Docker 20.10 (which reads only manifest.json) can all load it.
Next: ``labcore.kernel.overlay`` stacks the same layers with a mount instead of copying them into one tree.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import posixpath
import re
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from labcore.errors import BadInput, LabError, from_oserror
from labcore.image.oci import (CONFIG, IMAGE_NAME, INDEX, LAYER_GZIP, LAYER_TAR, MANIFEST, REF_NAME, Image, Store,
                               canonical_json, hash_stream, host_architecture, split_reference)
from labcore.kernel.journal import Scope

ACCEPTED = ("a docker-archive (`docker save`), an OCI archive (`podman save --format oci-archive`), "
            "or an OCI layout directory (`skopeo copy ... oci:DIR:NAME:TAG`)")
_BLOB_NAME = re.compile(r"(?:^|/)([0-9a-f]{64})(?:\.json)?$")      # blobs/sha256/<hex>, or Docker's <hex>.json


@dataclass
class Found:
    """One image as an archive describes it, before anything is stored."""
    config: Path
    layers: list[Path]
    refs: list[str] = field(default_factory=list)      # name:tag as written there; none: untagged
    manifest: bytes | None = None                       # an OCI manifest, kept so its digest survives
    media_types: list[str] = field(default_factory=list)
    expect: dict = field(default_factory=dict)           # path -> the digest its name promises


# --- load ------------------------------------------------------------------------------------------------

def load(source, store: Store | None = None) -> list[str]:
    """Store every image in ``source`` (a path, or a binary stream such as stdin); Docker's output lines."""
    store = store or Store()
    with Scope() as scope:
        root = Path(source) if isinstance(source, (str, os.PathLike)) and os.path.isdir(source) \
            else extract_archive(source, scope)
        try:
            # Docker 25's archives have both tables; the OCI one keeps the manifests' own digests.
            found = read_oci_layout(root) if (root / "index.json").exists() else read_docker_manifest(root)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise BadInput(f"{source}: a manifest or config is malformed ({err!r})", fix=f"give {ACCEPTED}") from err
        if not found:
            raise BadInput(f"{source} holds no image", fix=f"give {ACCEPTED}")
        return [line for image in found for line in store_found(store, image)]


def store_found(store: Store, found: Found) -> list[str]:
    """Copy one image's blobs in, checking each, then point its names at it."""
    config = store.copy_blob(found.config, CONFIG, expect=found.expect.get(found.config))
    diff_ids = json.loads(store.read_blob(config["digest"])).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(found.layers):
        raise LabError(f"the config lists {len(diff_ids)} layers but the archive has {len(found.layers)}",
                       fix="the archive is damaged; save it again")
    layers = [store_layer(store, path, diff_id, found.expect.get(path), media)
              for path, diff_id, media in zip(found.layers, diff_ids, found.media_types or _sniff(found.layers))]
    manifest = found.manifest or canonical_json({"schemaVersion": 2, "mediaType": MANIFEST, "config": config,
                                             "layers": layers})
    descriptor = store.write_blob(manifest, json.loads(manifest).get("mediaType", MANIFEST))
    if not found.refs:
        store.point(descriptor)
        return [f"Loaded image ID: {config['digest']}"]
    names = [split_reference(ref) for ref in found.refs]
    return [f"Loaded image: {store.point(descriptor, name, tag).ref}" for name, tag in names]


def store_layer(store: Store, path: Path, diff_id: str, expect: str | None, media_type: str) -> dict:
    """Store a layer as it is; refuse it unless its uncompressed tar is the one the config names."""
    descriptor = store.copy_blob(path, media_type, expect=expect)
    with (gzip.open(path) if _is_gzip(path) else open(path, "rb")) as tar:
        actual = "sha256:" + hash_stream(tar)
    if actual != diff_id:
        raise LabError(f"layer {path.name} unpacks to {actual}, but the config says {diff_id}", path=str(path),
                       fix="the archive is damaged or was altered; save it again from its source")
    return descriptor


def read_docker_manifest(root: Path) -> list[Found]:
    """manifest.json's entries (Docker's image spec v1.2): Config, RepoTags and Layers, by path."""
    try:
        entries = json.loads((root / "manifest.json").read_text())
    except FileNotFoundError as err:
        raise BadInput("neither index.json nor manifest.json is in it: not an image archive",
                       fix=f"give {ACCEPTED}") from err
    except ValueError as err:
        raise BadInput(f"manifest.json is not JSON: {err}", fix=f"give {ACCEPTED}") from err
    found = []
    for entry in entries if isinstance(entries, list) else [None]:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise BadInput(f"manifest.json entry {entry!r} lacks Config or Layers",
                           fix='each entry is {"Config": PATH, "RepoTags": [NAME:TAG], "Layers": [PATH]}')
        config, layers = inside(root, entry["Config"]), [inside(root, name) for name in entry["Layers"]]
        expect = {path: "sha256:" + m.group(1) for path, name in [(config, entry["Config"]),
                  *zip(layers, entry["Layers"])] if (m := _BLOB_NAME.search(name))}
        found.append(Found(config, layers, list(entry.get("RepoTags") or []), expect=expect))
    return found


def read_oci_layout(root: Path) -> list[Found]:
    """index.json's manifests (image-layout.md), one Found per manifest, with every name it was given."""
    layout = Store(root)              # read-only here: a Store checks digests and reads blobs by them
    try:
        index = json.loads((root / "index.json").read_text())
    except ValueError as err:
        raise BadInput(f"index.json is not JSON: {err}", fix=f"give {ACCEPTED}") from err
    by_digest: dict[str, Found] = {}
    for entry in index.get("manifests", []):
        manifest, digest = choose_manifest(layout, entry["digest"])
        if digest not in by_digest:
            parsed = json.loads(manifest)
            config = layout.blob_path(parsed["config"]["digest"])
            layers = [layout.blob_path(layer["digest"]) for layer in parsed["layers"]]
            expect = {config: parsed["config"]["digest"], **{layout.blob_path(d["digest"]): d["digest"]
                                                             for d in parsed["layers"]}}
            by_digest[digest] = Found(config, layers, manifest=manifest, expect=expect,
                                      media_types=[layer["mediaType"] for layer in parsed["layers"]])
        if name := oci_name(entry.get("annotations") or {}):
            by_digest[digest].refs.append(name)
    return list(by_digest.values())


def choose_manifest(layout: Store, digest: str) -> tuple[bytes, str]:
    """A manifest's bytes (verified); from a nested index, the one for this host's platform."""
    data = layout.read_blob(digest)
    document = json.loads(data)
    if document.get("mediaType") != INDEX and "manifests" not in document:
        return data, digest
    wanted = {"os": "linux", "architecture": host_architecture()}
    for entry in document.get("manifests", []):
        if all(entry.get("platform", {}).get(key) == value for key, value in wanted.items()):
            return choose_manifest(layout, entry["digest"])
    raise LabError(f"index {digest} has no manifest for linux/{wanted['architecture']}",
                   fix="copy the image for this platform: skopeo copy --override-arch ...")


def oci_name(annotations: dict) -> str:
    """containerd's full name wins (podman reads it first too); a bare ref.name is a tag with no
    repository (skopeo's oci:DIR:TAG), so the image loads untagged, as Docker loads one without RepoTags."""
    name = annotations.get(IMAGE_NAME) or annotations.get(REF_NAME, "")
    return name if ":" in name or "/" in name else ""


# --- the archive itself is untrusted input ------------------------------------------------------------------

def extract_archive(source, scope: Scope) -> Path:
    """Unpack the archive's files into a new journaled directory; links become hard links to files inside."""
    try:
        stream = _open_archive(source)
    except OSError as err:
        raise from_oserror(err, "open", str(source), fix=f"give {ACCEPTED}") from err
    except tarfile.TarError as err:
        raise BadInput(f"{source} is not a tar archive: {err}", fix=f"give {ACCEPTED}") from err
    directory = Path(make_directory(scope, "labcore-load-"))
    links: dict[str, str] = {}
    try:
        with stream as tar:
            for member in tar:
                name = archive_name(member.name, member.name)
                if member.issym() or member.islnk():
                    links[name] = link_target(member, name)
                elif member.isreg():
                    write_member(tar, member, directory / name)
                elif member.isdir():
                    (directory / name).mkdir(parents=True, exist_ok=True)
                else:
                    raise BadInput(f"refusing archive entry {member.name!r}: an image archive holds only files, "
                                   "directories and links", path=member.name, fix=f"give {ACCEPTED}")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as err:
        raise BadInput(f"{source} is not a tar archive: {err}", fix=f"give {ACCEPTED}") from err
    except OSError as err:
        raise from_oserror(err, "extracting the archive", str(directory)) from err
    make_links(directory, links)
    return directory


def archive_name(name: str, entry: str) -> str:
    """A member name (or link target) as a path relative to the archive's root; BadInput naming the entry
    when it would leave it, as an absolute path or through '..'."""
    if name.startswith("/") or ".." in name.split("/"):
        raise BadInput(f"refusing archive entry {entry!r}: {name!r} leaves the archive", path=entry,
                       fix="this archive is malformed or malicious; nothing was written outside a labcore-load- "
                           "directory, which is removed. Save the image again from a source you trust")
    return posixpath.normpath(name).removeprefix("./") if name.strip("./") else "."


def link_target(member: tarfile.TarInfo, name: str) -> str:
    # A symlink's target is relative to its own directory (docker save links a repeated layer.tar to
    # ../<id>/layer.tar); a hard link's is relative to the archive's root (tar(5)).
    target = posixpath.join(posixpath.dirname(name), member.linkname) if member.issym() else member.linkname
    return archive_name(posixpath.normpath(target), member.name)


def write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """One regular file. A later member of the same name replaces it, as tar(1) does on extraction."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    # O_EXCL|O_NOFOLLOW: no link is ever placed on disk, and nothing already there is written through.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, tar.extractfile(member) as data:
        while chunk := data.read(1 << 20):
            out.write(chunk)


def make_links(directory: Path, links: dict[str, str]) -> None:
    """Each link becomes a hard link to the regular file its chain ends at, which must be in the archive."""
    for name, target in links.items():
        for _ in range(40):                     # as the kernel gives up on a symlink loop (ELOOP)
            if target not in links:
                break
            target = links[target]
        source = directory / target
        if target in links or not source.is_file() or source.is_symlink():
            raise BadInput(f"refusing archive entry {name!r}: its link does not lead to a file in the archive",
                           path=name, fix=f"give {ACCEPTED}")
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        os.link(source, directory / name)


def inside(root: Path, name: str) -> Path:
    """A path named by the archive's JSON, which must stay inside its root (a layout dir may hold links)."""
    path = root / archive_name(name, name)
    real, top = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, top]) != top:
        raise BadInput(f"refusing {name!r}: it leads outside {root}", path=name, fix=f"give {ACCEPTED}")
    return path


def make_directory(scope: Scope, prefix: str) -> str:
    from labcore.kernel.journal import make_scratch
    return make_scratch(scope, prefix)


# --- save ------------------------------------------------------------------------------------------------

def save(refs: list[str], output, store: Store | None = None) -> None:
    """Write the images ``refs`` name as one OCI layout tar (with Docker's manifest.json) to ``output``,
    a path (written beside, then renamed into place: never half a file) or a binary stream."""
    store = store or Store()
    chosen = [(ref, store.resolve(ref)) for ref in refs]        # every name checked before a byte is written
    if not isinstance(output, (str, os.PathLike)):
        return write_layout(store, chosen, output)
    fd, temporary = tempfile.mkstemp(prefix=".labcore-save-", dir=os.path.dirname(os.path.abspath(output)))
    try:
        with os.fdopen(fd, "wb") as stream:
            write_layout(store, chosen, stream)
        os.chmod(temporary, 0o644)
        os.replace(temporary, output)
    except BaseException:
        os.unlink(temporary)
        raise


def write_layout(store: Store, chosen: list[tuple[str, Image]], stream) -> None:
    """oci-layout, the blobs (each once, re-verified), index.json and manifest.json, as a stream tar."""
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}
    docker: dict[str, dict] = {}
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        _add(tar, "blobs/", None)
        _add(tar, "blobs/sha256/", None)
        written: set[str] = set()
        for ref, image in chosen:
            for digest in [image.digest, image.id, *(layer.digest for layer in image.layers)]:
                if digest not in written:
                    written.add(digest)
                    _add_file(tar, f"blobs/sha256/{digest[7:]}", store.verify_blob(digest))
            named = _named(ref, image)
            index["manifests"].append({**store.descriptor(image), **({"annotations": {
                REF_NAME: image.tag, IMAGE_NAME: full_name(image)}} if named else {})})
            entry = docker.setdefault(image.digest, {"Config": f"blobs/sha256/{image.id[7:]}", "RepoTags": [],
                                                     "Layers": [f"blobs/sha256/{layer.digest[7:]}"
                                                                for layer in image.layers]})
            entry["RepoTags"] += [image.ref] if named and image.ref not in entry["RepoTags"] else []
        _add(tar, "index.json", canonical_json(index))
        _add(tar, "manifest.json", canonical_json(list(docker.values())))


def full_name(image: Image) -> str:
    """containerd's form of a name: the registry spelled out, Docker Hub's official images under library/
    (``busybox:latest`` -> ``docker.io/library/busybox:latest``), as Docker 25 writes it."""
    first = image.name.split("/")[0]
    if "/" in image.name and ("." in first or ":" in first or first == "localhost"):
        return image.ref
    return f"docker.io/{'' if '/' in image.name else 'library/'}{image.ref}"


def _named(ref: str, image: Image) -> bool:
    """Was the image asked for by its name (saved with it) rather than by ID (saved untagged, as Docker)?"""
    try:
        return split_reference(ref) == (image.name, image.tag)
    except BadInput:
        return False


# --- small helpers -----------------------------------------------------------------------------------------

def _open_archive(source) -> tarfile.TarFile:
    # "r|*": a stream, read once front to back, gzip detected: a file or stdin, as `docker load` takes them.
    if isinstance(source, (str, os.PathLike)):
        return tarfile.open(source, "r|*")
    return tarfile.open(fileobj=source, mode="r|*")


def _add(tar: tarfile.TarFile, name: str, data: bytes | None) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.type = (0o644, tarfile.REGTYPE) if data is not None else (0o755, tarfile.DIRTYPE)
    info.size = len(data or b"")
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    # Owner 0, date 0: the same images give the same archive bytes.
    info = tarfile.TarInfo(name)
    info.mode, info.size = 0o644, path.stat().st_size
    with open(path, "rb") as data:
        tar.addfile(info, data)


def _sniff(layers: list[Path]) -> list[str]:
    return [LAYER_GZIP if _is_gzip(path) else LAYER_TAR for path in layers]


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(2) == b"\x1f\x8b"          # gzip's magic number (RFC 1952)
