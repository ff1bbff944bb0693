"""Image names and removal, as `docker rmi`, `docker tag` and `docker image prune` do them.

As in Docker: removing ``busybox:latest`` removes that name (``Untagged: busybox:latest``); when it was the last,
the image goes too (``Deleted: sha256:<image id>``), then each layer blob that no other image shares. Docker
names its layers by chain ID in those lines; the lab names the blobs it deletes. An image ID with several
names, or an image a container was created from, is refused unless forced; and even forced, an image a
container still uses only loses its names (it stays, as ``<none>``): its blobs are that container's files.

A container is using an image when its state.json records that image's ID (``config.image_id``), or a
reference (``image``) that resolves to it now. That is why this is the runtime's, not the image store's:
the store knows blobs and names, the runtime knows which containers stand on them.

A new name is a pointer to a manifest's digest (index.json): no blob is copied and the IMAGE ID stays the same.
`labcore rmi`, `labcore tag` and labd's DELETE /images, POST /images/{name}/tag, /images/prune all call these.
"""
from __future__ import annotations

import contextlib
import json

from labcore.errors import BadInput, LabError


def remove(store, ref: str, force: bool = False) -> list[str]:
    """Untag ``ref``; delete the image and its unshared blobs if no name is left. Docker's output lines."""
    image = store.resolve(ref)
    named = [other for other in store.list() if other.id == image.id and other.name != "<none>"]
    by_name = any(ref_matches(ref, other) for other in named)
    if by_name and len(named) > 1:
        store.untag(*split(ref))
        return [f"Untagged: {':'.join(split(ref))}"]
    if len(named) > 1 and not force:
        raise LabError(f"conflict: unable to delete {image.short_id} (must be forced) - image is referenced in "
                       "multiple repositories", fix=f"remove the names one by one, or `labcore rmi -f {ref}`")
    users = containers_using(store, image)
    if users and not force:
        raise LabError(f'conflict: unable to remove repository reference "{ref}" (must force) - container '
                       f"{users[0][:12]} is using its referenced image {image.short_id}",
                       fix=f"remove the container first (`labcore rm {users[0][:12]}`), or `labcore rmi -f {ref}`")
    if users:
        return untag_only(store, image, named if not by_name else [o for o in named if ref_matches(ref, o)])
    return delete(store, image, named)


def untag_only(store, image, names: list) -> list[str]:
    """`rmi -f` of an image a container uses: the names go, the image stays untagged (Docker's <none>)."""
    descriptor = store.descriptor(image)
    lines = [f"Untagged: {other.ref}" for other in names if store.untag(other.name, other.tag)]
    store.point(descriptor)                   # an unnamed index entry keeps its blobs reachable
    return lines


def delete(store, image, named: list) -> list[str]:
    """Every name, then every index entry of the image's manifests, then the blobs nothing else reaches."""
    same = [other for other in store.list() if other.id == image.id]     # gzip and plain copies share an ID
    lines = [f"Untagged: {other.ref}" for other in named if store.untag(other.name, other.tag)]
    manifests = sorted({other.digest for other in same})
    for digest in manifests:
        store.forget(digest)
    layers = [layer.digest for other in same for layer in other.layers]
    removed = store.remove_unreferenced([image.id, *layers, *manifests])
    return lines + [f"Deleted: {digest}" for digest in removed if digest not in manifests]


def containers_using(store, image) -> list[str]:
    """Ids of containers whose state.json records this image's ID, or a reference that resolves to it now."""
    from labcore import paths
    found = []
    for state in sorted(paths.containers_dir().glob("*/state.json")):
        try:
            record = json.loads(state.read_text())
            if record.get("config", {}).get("image_id") == image.id or \
                    store.resolve(record["image"]).id == image.id:
                found.append(state.parent.name)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, LabError):
            continue                            # a record being written, or a name that no longer resolves
    return found


def split(ref: str) -> tuple[str, str]:
    from labcore.image.oci import split_reference
    return split_reference(ref)


def ref_matches(ref: str, image) -> bool:
    try:
        return split(ref) == (image.name, image.tag)
    except LabError:
        return False                            # an image ID is not a name


def split_target(target: str) -> tuple[str, str]:
    """The new name, refused before anything changes; in Docker's words for the commonest mistake."""
    from labcore.image.oci import split_reference
    name = target.rpartition(":")[0] if ":" in target.rpartition("/")[2] else target
    first, _, rest = name.partition("/")
    repository = rest if rest and ("." in first or ":" in first or first == "localhost") else name
    if repository != repository.lower():        # a registry's host name may have capitals; a repository not
        raise BadInput(f"invalid reference format: repository name ({repository}) must be lowercase",
                       fix="use NAME or NAME:TAG in lowercase, e.g. `labcore tag busybox mybox:v1`")
    return split_reference(target)


def tag(store, source: str, target: str) -> None:
    """`docker tag SOURCE TARGET`: index.json gains a name for the manifest ``source`` names."""
    name, version = split_target(target)
    store.point(store.descriptor(store.resolve(source)), name, version)


def prune(store, used: set, only_dangling: bool = True) -> tuple[list[str], int]:
    """`docker image prune`: untagged images no container uses (with ``only_dangling=False``, every image no
    container uses); Docker's lines, and the bytes freed. ``used``: the image IDs containers were made from."""
    deleted, space = [], 0
    for image in {i.id: i for i in store.list()}.values():
        named = [other for other in store.list() if other.id == image.id and other.name != "<none>"]
        if image.id in used or (only_dangling and named):
            continue
        with contextlib.suppress(LabError):     # one that could not go frees nothing: counted only once gone
            deleted += delete(store, image, named)
            space += image.size
    return deleted, space
