"""`labcore ps [-a] [-q]`: the containers, in `docker ps`'s columns.

The rows come from the backend as the Engine API's container summaries (``GET /containers/json``), whether
labd sent them or the engine was called in this process; STATUS is the daemon's text ("Up 3 seconds",
"Exited (0) 2 seconds ago"), CREATED is worked out here, as the docker CLI does.
"""
from __future__ import annotations

import time

from labcore.api import client


def configure(parser):
    parser.add_argument("-a", "--all", action="store_true", help="show all containers (default: running ones)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only show container IDs")
    parser.add_argument("--no-trunc", action="store_true", help="do not truncate IDs and commands")


def run(args) -> int:
    summaries = client.connect(args).containers(args.all)
    if args.quiet:
        print("\n".join(s["Id"] if args.no_trunc else s["Id"][:12] for s in summaries))
    else:
        print(table([row(s, args.no_trunc) for s in summaries]))
    return 0


COLUMNS = ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")


def row(summary: dict, no_trunc: bool = False, now: float | None = None) -> list[str]:
    """One container as `docker ps` writes it: short id, quoted and cut command, ages in words."""
    from labcore.units import human_duration
    created = human_duration((now or time.time()) - summary["Created"]) + " ago"
    return [summary["Id"] if no_trunc else summary["Id"][:12], summary["Image"],
            quote(summary["Command"] if no_trunc else ellipsis(summary["Command"], 20)), created,
            summary["Status"], ports(summary.get("Ports") or []),
            ",".join(name.lstrip("/") for name in summary["Names"])]


def ellipsis(text: str, width: int) -> str:
    """The docker CLI's formatter.Ellipsis: at most ``width`` characters, the last one "…" when cut."""
    return text if len(text) <= width else text[:width - 1] + "…"


def quote(text: str) -> str:
    """Go's strconv.Quote, which `docker ps` applies to COMMAND: double quotes, \\ and " escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ports(entries: list[dict]) -> str:
    """Published ports as "127.0.0.1:8080->80/tcp"; exposed ones as "80/tcp"."""
    return ", ".join(f"{p['IP']}:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}" if p.get("PublicPort")
                     else f"{p['PrivatePort']}/{p['Type']}" for p in entries)


def table(rows: list[list[str]]) -> str:
    """Docker's tabwriter layout: each column at least 10 wide, 3 spaces of padding, the last one as is."""
    cells = [list(COLUMNS)] + rows
    widths = [max(10, max(len(line[i]) for line in cells) + 3) for i in range(len(COLUMNS) - 1)]
    return "\n".join("".join(c.ljust(w) for c, w in zip(line, widths)) + line[-1] for line in cells)
