"""Named volumes: directories the daemon keeps for containers, outliving each of them.

`docker run -v data:/var/lib/data` bind-mounts a directory that Docker made and named ("data") instead of one
of yours: /var/lib/docker/volumes/data/_data, with the volume's metadata beside it. The container's writes go
there, not into its upperdir, so they survive `docker rm` and the next container sees them. `-v /data`
(a path alone, or an image's VOLUME) makes an *anonymous* volume: the same, named by 64 random hex digits, and
removed with its container by `docker rm -v`. Here each volume is ``<state dir>/volumes/NAME/_data``.

Next: ``labcore.kernel.rootfs.mount_volumes`` bind-mounts it, like any -v HOST:CONTAINER.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, InvalidTransition, NotFound

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")        # Docker's volume names (volume/local)


def volumes_dir() -> Path:
    return paths.home() / "volumes"


def describe(name: str) -> dict:
    """Docker's Volume object."""
    try:
        meta = json.loads((volumes_dir() / name / "meta.json").read_text())
    except (FileNotFoundError, ValueError, OSError):
        raise NotFound(f"get {name}: no such volume") from None
    return {"Name": name, "Driver": "local", "Mountpoint": str(volumes_dir() / name / "_data"),
            "CreatedAt": meta.get("CreatedAt", ""), "Labels": meta.get("Labels") or {}, "Scope": "local",
            "Options": meta.get("Options") or {}}


def create(name: str | None = None, labels: dict | None = None, driver: str = "local",
           options: dict | None = None) -> dict:
    """Make the volume (a second create of the same name returns the first, as Docker's does)."""
    name = name or secrets.token_hex(32)
    if not _NAME.match(name) or len(name) > 255:
        raise BadInput(f'create {name}: "{name}" includes invalid characters for a local volume name, only '
                       '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed')
    if driver not in ("", "local"):
        raise NotFound(f'error looking up volume plugin {driver}: plugin "{driver}" not found',
                       fix="labd has the local driver only")
    if options:
        raise BadInput("labd's local volumes take no driver options (type, device, o: mounting a device or "
                       "NFS share as a volume is not implemented)", fix="leave DriverOpts out")
    directory = volumes_dir() / name
    if not (directory / "meta.json").exists():
        (directory / "_data").mkdir(parents=True, exist_ok=True)
        from labcore.runtime.jsonfile import timestamp
        (directory / "meta.json").write_text(json.dumps({"CreatedAt": timestamp(time.time_ns()),
                                                         "Labels": labels or {}}))
    return describe(name)


def path_of(name: str, create_missing: bool = True) -> str:
    if create_missing:
        create(name)
    return describe(name)["Mountpoint"]


def listing() -> list[dict]:
    root = volumes_dir()
    return [describe(d.name) for d in sorted(root.iterdir()) if (d / "meta.json").exists()] if root.is_dir() else []


def users(name: str) -> list[str]:
    """Containers whose bind mounts use the volume's directory."""
    from labcore.runtime import lifecycle
    where = describe(name)["Mountpoint"]
    return [r.id for r in lifecycle.all_records()
            if any(v.split(":")[0] == where for v in r.config.get("spec", {}).get("volumes", []))]


def remove(name: str, force: bool = False) -> None:
    from labcore.kernel.journal import undo_rmtree
    describe(name)
    if users(name) and not force:
        raise InvalidTransition(f"remove {name}: volume is in use - [{', '.join(users(name))}]")
    undo_rmtree(str(volumes_dir() / name))


def prune() -> tuple[list[str], int]:
    """`docker volume prune`: the volumes no container uses (Docker 23+ prunes anonymous ones only unless
    all=true; the 1.41 API, which docker-py speaks, prunes every unused one)."""
    from labcore.runtime.engine import disk_usage
    removed, space = [], 0
    for volume in listing():
        if not users(volume["Name"]):
            space += disk_usage(volume["Mountpoint"])
            remove(volume["Name"])
            removed.append(volume["Name"])
    return removed, space
