"""Users and groups inside a container: names are the container's, looked up in its own /etc/passwd.

`docker exec -u postgres` means the postgres of the *image*, not of the host: uid 70 in Alpine's /etc/passwd
may be nobody at all on the host. So the name is resolved after the process has entered the container's mount
namespace, where "/etc/passwd" is the container's file — as runc does (libcontainer/user, passwd(5),
group(5)). A user given by number needs no file: `-u 1000` works in an image without /etc/passwd.

Next: ``labcore.container`` calls ``lookup_user`` in the process about to become the command.
"""
from __future__ import annotations

from labcore.errors import BadInput


def read_table(path: str) -> list[list[str]]:
    """The colon-separated rows of passwd(5) or group(5); a missing file has none."""
    try:
        with open(path) as file:
            return [line.rstrip("\n").split(":") for line in file if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def lookup_user(user: str, extra_groups=()) -> tuple[int, int, list[int]]:
    """``USER[:GROUP]`` (names or numbers) -> (uid, gid, supplementary gids), Docker's rules: a named user's
    primary group from passwd, its other groups from group(5) membership, plus ``extra_groups``."""
    name, _, group = (user or "0").partition(":")
    passwd = read_table("/etc/passwd")
    row = next((r for r in passwd if len(r) > 3 and (r[0] == name or (name.isdigit() and r[2] == name))), None)
    if row is None and not name.isdigit():
        raise BadInput(f"unable to find user {name}: no matching entries in passwd file",
                       fix="use a numeric UID, or a user the image's /etc/passwd names")
    uid = int(name) if name.isdigit() else int(row[2])
    gid = int(row[3]) if row else 0
    groups = read_table("/etc/group")
    if group:
        gid = lookup_group(group, groups)
    member = [int(r[2]) for r in groups if len(r) > 3 and row and row[0] in r[3].split(",") and r[2].isdigit()]
    return uid, gid, sorted({*member, *(lookup_group(str(g), groups) for g in extra_groups)})


def lookup_group(group: str, groups: list[list[str]] | None = None) -> int:
    if group.isdigit():
        return int(group)
    for row in groups if groups is not None else read_table("/etc/group"):
        if len(row) > 2 and row[0] == group:
            return int(row[2])
    raise BadInput(f"unable to find group {group}: no matching entries in group file",
                   fix="use a numeric GID, or a group the image's /etc/group names")
