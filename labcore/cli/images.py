"""`labcore images`: the local store in `docker images`' columns, newest first.

CREATED and SIZE are written the way Docker's go-units package writes them ("2 minutes ago", "1.2MB").
SIZE here is the layers as stored (compressed); Docker shows the unpacked size, so its number is larger.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from labcore.units import human_duration, human_size


def configure(parser):
    parser.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]", help="only images of this name")
    parser.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    parser.add_argument("--no-trunc", action="store_true", help="show whole image IDs")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="json: one object per line, as `docker images --format json`")


def run(args) -> int:
    from labcore.api import client
    rows = [describe(row, args.no_trunc) for row in select(client.connect(args).images(), args.reference)]
    if args.quiet:
        print("\n".join(row["ID"] for row in rows))
    elif args.format == "json":
        print("\n".join(json.dumps(row) for row in rows))
    else:
        print(table(rows))
    return 0


def select(summaries: list[dict], reference: str | None) -> list[dict]:
    """One row per name (an image without one is <none>:<none>), newest first, as Docker lists them; only
    ``reference``'s repository (and tag) when given. ``summaries``: GET /images/json's answer."""
    rows = [{**summary, "Ref": ref} for summary in summaries for ref in summary["RepoTags"] or ["<none>:<none>"]]
    if reference:
        from labcore.image.oci import split_reference
        name, tag = split_reference(reference)
        rows = [row for row in rows if row["Ref"].rpartition(":")[0] == name and
                (":" not in reference.rpartition("/")[2] or row["Ref"].rpartition(":")[2] == tag)]
    return sorted(rows, key=lambda row: row["Created"], reverse=True)


def describe(row: dict, no_trunc: bool = False) -> dict:
    """The columns of `docker images --format json`."""
    repository, _, tag = row["Ref"].rpartition(":")
    digests = [d.partition("@")[2] for d in row["RepoDigests"] if d.partition("@")[0] == repository]
    created = row["Created"]                    # 0: the config says nothing (Docker's zero time)
    at = datetime.fromtimestamp(created, timezone.utc).strftime("%Y-%m-%d %H:%M:%S +0000 UTC") if created else "N/A"
    return {"Repository": repository, "Tag": tag, "ID": row["Id"] if no_trunc else row["Id"][7:19],
            "CreatedSince": human_duration(time.time() - created) + " ago" if created else "N/A", "CreatedAt": at,
            "Size": human_size(row["Size"]), "Digest": digests[0] if digests else "<none>"}


def table(rows: list[dict]) -> str:
    """Columns as Docker's tabwriter lays them out: at least 10 wide, 3 spaces of padding."""
    columns = [("REPOSITORY", "Repository"), ("TAG", "Tag"), ("IMAGE ID", "ID"),
               ("CREATED", "CreatedSince"), ("SIZE", "Size")]
    cells = [[title for title, _ in columns]] + [[row[key] for _, key in columns] for row in rows]
    widths = [max(10, max(len(line[i]) for line in cells) + 3) for i in range(len(columns) - 1)]
    return "\n".join("".join(c.ljust(w) for c, w in zip(line, widths)) + line[-1] for line in cells)
