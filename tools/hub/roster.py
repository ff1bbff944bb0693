"""The class's students as local Linux users: read from a roster, created once, removed when asked.

A roster is a text file, one student a line, ``#`` starts a comment:

    alice               a new account gets a random password, written for the instructor to hand out
    bob  s3cret-pass    or the one given (any text after the first space)

Each student gets what a shared lab VM needs to keep them apart (useradd(8)): a group of their own (``-U``:
their files are not readable through a shared primary group), a home of mode 0700 (Debian's useradd makes
0755 homes unless told), and membership of the class group, which the hub lets in. Accounts that exist
already join the class group and keep their password. System accounts (uid below 1000) and root are
refused: the hub would start a server as them.

    roster.py add [--group G] NAME...      what the first-use authenticator calls for a self-made account
    roster.py remove NAME...               userdel -r, after killing every process of the user
"""
from __future__ import annotations

import pwd
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
FIRST_UID = 1000               # login.defs UID_MIN: below it, system accounts
CLASS_GROUP = "labcore-class"


class RosterError(ValueError):
    """A roster line the hub refuses, with the accepted form."""


@dataclass
class Student:
    name: str
    password: str | None = None        # None: an account that exists keeps its own


def parse(text: str) -> list[Student]:
    """The students of a roster; a bad line is refused with its number and the accepted form."""
    students, seen = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, password = line.partition(" ")
        check_name(name, f"line {number}")
        if name in seen:
            raise RosterError(f"line {number}: {name!r} is listed twice")
        seen.add(name)
        students.append(Student(name, password.strip() or None))
    return students


def check_name(name: str, where: str = "") -> None:
    prefix = f"{where}: " if where else ""
    if not NAME.fullmatch(name):
        raise RosterError(f"{prefix}{name!r} is not a user name this hub accepts: lowercase letters, digits, "
                          "'_' and '-', starting with a letter or '_', at most 32 characters (useradd(8))")
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    if uid < FIRST_UID:
        raise RosterError(f"{prefix}{name!r} is a system account (uid {uid}): the hub never starts a "
                          "server as one; pick another name")


def ensure_group(group: str = CLASS_GROUP) -> None:
    if subprocess.run(["getent", "group", group], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", group], check=True)


def add(student: Student, group: str = CLASS_GROUP, login_password: bool = True) -> str | None:
    """Create the account (or let an existing one join the class); return the password a new account got.
    Without ``login_password`` the account's password stays locked: the first-use authenticator keeps the
    password the student chose in its own database, and no other login (ssh, su) opens the account."""
    check_name(student.name)
    ensure_group(group)
    if exists(student.name):
        subprocess.run(["usermod", "-aG", group, student.name], check=True)
        return None
    subprocess.run(["useradd", "--create-home", "--user-group", "--groups", group, "--shell", "/bin/bash",
                    student.name], check=True)
    Path(pwd.getpwnam(student.name).pw_dir).chmod(0o700)
    if not login_password:
        return None
    password = student.password or secrets.token_urlsafe(9)
    subprocess.run(["chpasswd"], input=f"{student.name}:{password}\n", text=True, check=True)
    return password


def exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def remove(name: str) -> None:
    """Kill every process of the user, then ``userdel --remove`` (the home and mail spool go with it)."""
    check_name(name)
    if not exists(name):
        return
    uid = pwd.getpwnam(name).pw_uid
    for _ in range(100):
        if subprocess.run(["pkill", "-KILL", "-U", str(uid)]).returncode == 1:   # 1: no process matched
            break
        time.sleep(0.05)
    subprocess.run(["userdel", "--remove", name], check=True, capture_output=True)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("add", "remove"):
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 2
    verb, names, group = argv[0], argv[1:], CLASS_GROUP
    if names[:1] == ["--group"]:
        group, names = names[1], names[2:]
    for name in names:
        add(Student(name), group, login_password=False) if verb == "add" else remove(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
