"""Where the lab keeps its state: images, containers, and the undo journal.

Root uses /var/lib/labcore (as Docker uses /var/lib/docker); anyone else gets a per-user directory under
$XDG_STATE_HOME (default ~/.local/state/labcore). ``LABCORE_HOME`` overrides both, which is how tests and
several classroom users on one host keep apart.
"""
from __future__ import annotations

import os
from pathlib import Path

PREFIX = "labcore"          # every object the lab creates carries this name...
LINK_PREFIX = "lc"          # ...except network interfaces, whose names are limited to 15 bytes (IFNAMSIZ)


def home() -> Path:
    if os.environ.get("LABCORE_HOME"):
        return Path(os.environ["LABCORE_HOME"])
    if os.geteuid() == 0:
        return Path("/var/lib/labcore")
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "labcore"


def journal_dir() -> Path:
    return home() / "journal"


def images_dir() -> Path:
    return home() / "images"


def containers_dir() -> Path:
    return home() / "containers"


def scratch_dir() -> Path:
    """Working directories for steps (layer mounts, unpacked root filesystems)."""
    return home() / "tmp"


def is_ours(name: str) -> bool:
    """True for a name the lab could have given: ``labcore...`` (``lc...`` for interfaces)."""
    return name.startswith(PREFIX) or name.startswith(LINK_PREFIX)


def path_is_ours(path: str | os.PathLike) -> bool:
    """True for a path the lab could have made: one with a component it named (``labcore...``), or one below
    its state directory, which is the lab's whatever it is called (``LABCORE_HOME=/srv/class`` works as well
    as the default). The state directory itself is not: removing it is the user's call, not cleanup's."""
    absolute = Path(os.path.abspath(path))
    if any(part.startswith(PREFIX) for part in absolute.parts):
        return True
    state = Path(os.path.abspath(home()))
    return absolute != state and state in absolute.parents
