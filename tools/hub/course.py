"""The course in a student's home: copied on first login, brought up to date at every login after, and never
over a file the student changed.

    course.py --course DIR --into NAME [--] COMMAND [ARGS...]

Runs as the student (the single-user server's command starts with it: see ``tools.hub.spawner``), so every
file it writes is the student's own and a link a student planted cannot lead a root process anywhere. Then
it execs COMMAND (jupyterhub-singleuser) with the arguments the spawner added.

What nbgitpuller does for a git repository, for a directory (nbgitpuller's docs, "Merging behavior"): a
manifest, ``.labcore-course.json`` in the course folder, holds the SHA-256 of each file as it was last
delivered. At each login, for every file of the course:

    not in the home               copied (a new notebook, or one the student deleted: restored)
    as delivered last time        replaced by the new version (the student never touched it)
    changed by the student        kept; the new version goes beside it as NAME.updated.EXT, and the
                                  student's notebook is never overwritten

Standard library only: it runs before anything else of the lab, in whatever Python the hub names.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

MANIFEST = ".labcore-course.json"
SKIP = {".ipynb_checkpoints", "__pycache__"}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def course_files(course: Path) -> list[Path]:
    """Every file of the course, relative to it, checkpoints and caches left out."""
    found = []
    for here, subdirs, files in os.walk(course):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP)
        found += [Path(here, name).relative_to(course) for name in sorted(files)]
    return found


def beside(path: Path) -> Path:
    """03-namespaces.ipynb -> 03-namespaces.updated.ipynb: the new version, next to the student's own."""
    return path.with_name(f"{path.stem}.updated{path.suffix}")


def sync(course: Path, target: Path) -> dict[str, list[str]]:
    """Bring ``target`` up to date with ``course`` (the table above); return what was done to which file."""
    target.mkdir(parents=True, exist_ok=True)
    manifest = target / MANIFEST
    delivered = json.loads(manifest.read_text()) if manifest.exists() else {}
    done: dict[str, list[str]] = {"copied": [], "updated": [], "kept": [], "unchanged": []}
    for relative in course_files(course):
        source, mine, name = course / relative, target / relative, str(relative)
        new = digest(source)
        if mine.is_symlink() or (mine.exists() and not mine.is_file()):
            done["kept"].append(name)                  # not a file we delivered: the student's, left alone
            continue
        if not mine.exists():
            action = "copied"
        elif digest(mine) == new:
            action = "unchanged"
        elif digest(mine) == delivered.get(name):
            action = "updated"
        else:
            action = "kept"
            if delivered.get(name) != new:             # a newer version than the one the student changed
                copy(source, beside(mine))
        if action in ("copied", "updated"):
            copy(source, mine)
        if action != "kept":
            delivered[name] = new
        done[action].append(name)
    write_manifest(manifest, delivered)
    return done


def copy(source: Path, destination: Path) -> None:
    """Through a temporary name and a rename: a crash never leaves half a notebook."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    shutil.copyfile(source, partial)
    os.chmod(partial, 0o644)
    os.replace(partial, destination)


def write_manifest(manifest: Path, delivered: dict[str, str]) -> None:
    partial = manifest.with_name(f"{manifest.name}.partial")
    partial.write_text(json.dumps(delivered, indent=1, sort_keys=True))
    os.replace(partial, manifest)


def main(argv: list[str]) -> int:
    """Parse ``--course DIR --into NAME [--] COMMAND...``, sync into ~/NAME, then exec COMMAND."""
    options = {}
    while argv and argv[0] in ("--course", "--into"):
        options[argv[0][2:]] = argv[1]
        argv = argv[2:]
    argv = argv[1:] if argv[:1] == ["--"] else argv
    if set(options) != {"course", "into"}:
        print("usage: course.py --course DIR --into NAME [--] COMMAND [ARGS...]", file=sys.stderr)
        return 2
    target = Path.home() / options["into"]
    try:
        done = sync(Path(options["course"]), target)
        print(f"labcore course in {target}: " + ", ".join(f"{len(v)} {k}" for k, v in done.items()),
              file=sys.stderr)
    except OSError as err:                             # a full disk must not keep the student out
        print(f"labcore course: could not update {target}: {err}", file=sys.stderr)
    if argv:
        os.execvp(argv[0], argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
