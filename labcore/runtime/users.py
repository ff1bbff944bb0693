"""Users and groups inside the image: who `--user` names, and which supplementary groups come with it.

A container's /etc/passwd and /etc/group are the image's, not the host's: `--user nobody` means the nobody of
the image. Docker reads them from the container's root filesystem (moby daemon/oci_linux.go, getUser, with
runc's libcontainer/user): the uid and primary gid from passwd (a number is taken as it is), then the
supplementary groups: the primary gid itself, and every group of /etc/group that lists the user's name.
That is why `id` in a busybox container says ``groups=0(root),10(wheel)`` where wheel lists root.
`--group-add` (HostConfig.GroupAdd) appends more groups, by number or by the image's group name.

Read in pid 1 after pivot_root, so the files are the image's (a symlink cannot lead to the host's).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from labcore.errors import BadInput

USER_FORM = re.compile(r"^([A-Za-z0-9_.][A-Za-z0-9_.-]*)(?::([A-Za-z0-9_.][A-Za-z0-9_.-]*))?$")


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]


def check_user(text: str) -> None:
    """``USER[:GROUP]``, each a name or a number: refused before anything is created when malformed."""
    if not USER_FORM.match(text):
        raise BadInput(f"invalid user {text!r}", fix="use --user NAME|UID[:GROUP|GID], e.g. --user 1000:1000 "
                                                       "or --user nobody")


def _entries(path: Path) -> list[list[str]]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.split(":") for line in lines if line and not line.startswith("#")]


def resolve(text: str, root: str | Path = "/", extra_groups=()) -> Identity:
    """The identity ``text`` names in the image whose root is ``root``, as runc's GetExecUser finds it;
    ``extra_groups`` (--group-add) are added after the user's own."""
    name, _, group = text.partition(":")
    passwd, groups = _entries(Path(root, "etc/passwd")), _entries(Path(root, "etc/group"))
    entry = next((e for e in passwd if len(e) >= 4 and (e[0] == name or e[2] == name)), None)
    if entry is None and not name.isdigit():
        raise BadInput(f"unable to find user {name}: no matching entries in passwd file",
                       fix="use a numeric uid, or a user of the image's /etc/passwd")
    uid = int(entry[2]) if entry else int(name)
    gid = int(entry[3]) if entry else 0
    if group:
        gid = find_group(group, groups)
    member_of = () if entry is None else tuple(
        int(g[2]) for g in groups if len(g) >= 4 and g[2].isdigit() and entry[0] in g[3].split(","))
    added = tuple(find_group(str(extra), groups) for extra in extra_groups)
    # Docker: the primary gid first, then the groups that list the user (daemon/oci_linux.go getUser).
    return Identity(uid, gid, tuple(dict.fromkeys((gid, *member_of, *added))))


def find_group(group: str, groups: list[list[str]]) -> int:
    """A group by name or number in the image's /etc/group; a number needs no entry."""
    found = next((g for g in groups if len(g) >= 3 and (g[0] == group or g[2] == group)), None)
    if found is None and not group.isdigit():
        raise BadInput(f"unable to find group {group}: no matching entries in group file",
                       fix="use a numeric gid, or a group of the image's /etc/group")
    return int(found[2]) if found else int(group)
