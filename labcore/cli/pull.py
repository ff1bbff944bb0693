"""`labcore pull NAME[:TAG]`: download an image from a registry (``labcore.image.registry``), showing progress.

The registry module yields the same progress events Docker's daemon streams from ``POST /images/create``,
and this is how the docker CLI draws them (moby's pkg/jsonmessage): one line per layer, rewritten in place
on a terminal with ANSI cursor moves; on a pipe or file only the lines without a progress bar.
"""
from __future__ import annotations

import sys

from labcore.api import client
from labcore.errors import LabError
from labcore.units import human_size

BAR = 50        # the docker CLI's progress bar is 50 characters on a terminal at least 110 wide


def configure(parser):
    parser.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")


def run(args) -> int:
    screen = Screen(sys.stdout, sys.stdout.isatty())
    try:
        for event in client.connect(args).pull(args.reference):
            screen.show(event)
    except LabError as error:
        client.report(error)
        return 1
    return 0


def line(event: dict) -> str:
    """ "abc123def456: Downloading [====>     ]  1.2MB/3MB", or the status alone ("Digest: sha256:...")."""
    text = f"{event['id']}: {event['status']}" if event.get("id") else event["status"]
    detail = event.get("progressDetail") or {}
    if detail.get("total"):
        text += " " + bar(detail.get("current", 0), detail["total"])
    return text


def bar(current: int, total: int) -> str:
    filled = min(BAR, int(current / total * 100) // 2)
    return f"[{'=' * filled}>{' ' * (BAR - filled)}] {human_size(current, 4):>8}/{human_size(total, 4)}"


class Screen:
    """Where progress lines go. On a terminal each id keeps its line: the cursor goes up to it, the line is
    erased and rewritten, the cursor comes back down (ECMA-48: CUU "ESC[nA", EL "ESC[2K", CUD "ESC[nB")."""

    def __init__(self, out, tty: bool):
        self.out, self.tty = out, tty
        self.rows: dict[str, int] = {}          # id -> its line, counted from the first one printed
        self.count = 0

    def show(self, event: dict) -> None:
        if not self.tty and (event.get("progressDetail") or {}).get("total"):
            return                              # a pipe gets no bars, as with `docker pull | cat`
        text, ident = line(event), event.get("id")
        if self.tty and ident in self.rows:
            up = self.count - self.rows[ident]
            self.out.write(f"\x1b[{up}A\x1b[2K\r{text}\x1b[{up}B\r")
        else:
            if ident:
                self.rows[ident] = self.count
            self.count += 1
            self.out.write(text + "\n")
        self.out.flush()
