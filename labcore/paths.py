"""Where the lab keeps its state: images, containers, and the undo journal.

Root uses /var/lib/labcore (as Docker uses /var/lib/docker); anyone else gets a per-user directory under
$XDG_STATE_HOME (default ~/.local/state/labcore). ``LABCORE_HOME`` overrides both, which is how tests and
several classroom users on one host keep apart.
"""
from __future__ import annotations

import os
# pathlib is imported where a Path is made, not here: `labcore run` handed to labd (labcore.cli.handoff) needs
# only home_dir(), and pathlib, with re, is 3 ms of that whole run. (Annotations are strings, never evaluated.)

PREFIX = "labcore"          # every object the lab creates carries this name...
LINK_PREFIX = "lc"          # ...except network interfaces, whose names are limited to 15 bytes (IFNAMSIZ)


HOME_MODE = 0o710             # Docker's for /var/lib/docker: the owner, and the group that may use the daemon
_private: set[str] = set()


def home() -> Path:
    from pathlib import Path
    path = Path(home_dir())
    if str(path) not in _private:
        make_private(path)
    return path


def home_dir() -> str:
    """The state directory's path, as a string, without making it."""
    if os.environ.get("LABCORE_HOME"):
        return os.environ["LABCORE_HOME"]
    if os.geteuid() == 0:
        return "/var/lib/labcore"
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "labcore")


def make_private(path: Path) -> None:
    """The state directory closed to other users, made so the first time it is asked for: below it are the
    image layers, whose setuid-root files and device nodes another local user must not reach, and each
    container's output and environment (the class of Docker's CVE-2021-41091, fixed by a 0710 data root)."""
    try:
        path.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
        info = path.stat()
        if info.st_uid == os.geteuid() and info.st_mode & 0o007:
            os.chmod(path, HOME_MODE)      # an older, open one: as Docker closes its data root at start
    except OSError:
        return                   # a read-only or foreign directory: the step that writes there will say so
    _private.add(str(path))


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
    from pathlib import Path
    absolute = Path(os.path.abspath(path))
    if any(part.startswith(PREFIX) for part in absolute.parts):
        return True
    state = Path(os.path.abspath(home()))
    return absolute != state and state in absolute.parents
