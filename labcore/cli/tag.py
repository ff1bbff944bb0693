"""`labcore tag`: give an image another name. Only index.json changes: a name is a pointer to a manifest's
digest, so no blob is copied and the IMAGE ID stays the same (`labcore images` shows both names)."""
from __future__ import annotations

from labcore.errors import BadInput


def configure(parser):
    parser.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    parser.add_argument("target", metavar="TARGET_IMAGE[:TAG]")


def run(args) -> int:
    from labcore.image.oci import Store
    name, tag = split_target(args.target)
    store = Store()
    image = store.resolve(args.source)
    store.point(store.descriptor(image), name, tag)
    return 0


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
