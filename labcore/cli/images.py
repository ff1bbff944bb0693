"""`labcore images`: the local store in `docker images`' columns, newest first.

CREATED and SIZE are written the way Docker's go-units package writes them ("2 minutes ago", "1.2MB").
SIZE here is the layers as stored (compressed); Docker shows the unpacked size, so its number is larger.
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime

from labcore.units import human_duration, human_size


def configure(parser):
    parser.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]", help="only images of this name")
    parser.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    parser.add_argument("--no-trunc", action="store_true", help="show whole image IDs")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="json: one object per line, as `docker images --format json`")


def run(args) -> int:
    from labcore.image.oci import Store
    images = select(Store().list(), args.reference)
    rows = [describe(image, args.no_trunc) for image in images]
    if args.quiet:
        print("\n".join(row["ID"] for row in rows))
    elif args.format == "json":
        print("\n".join(json.dumps(row) for row in rows))
    else:
        print(table(rows))
    return 0


def select(images: list, reference: str | None) -> list:
    """Newest first, as Docker lists them; only ``reference``'s repository (and tag) when given."""
    if reference:
        from labcore.image.oci import split_reference
        name, tag = split_reference(reference)
        images = [i for i in images if i.name == name and (":" not in reference or i.tag == tag)]
    return sorted(images, key=lambda image: created_at(image.created) or 0, reverse=True)


def describe(image, no_trunc: bool = False) -> dict:
    created = created_at(image.created)
    since = human_duration(time.time() - created) + " ago" if created is not None else "N/A"
    return {"Repository": image.name, "Tag": image.tag, "ID": image.id if no_trunc else image.short_id,
            "CreatedSince": since, "CreatedAt": image.created, "Size": human_size(image.size),
            "Digest": image.digest}


def table(rows: list[dict]) -> str:
    """Columns as Docker's tabwriter lays them out: at least 10 wide, 3 spaces of padding."""
    columns = [("REPOSITORY", "Repository"), ("TAG", "Tag"), ("IMAGE ID", "ID"),
               ("CREATED", "CreatedSince"), ("SIZE", "Size")]
    cells = [[title for title, _ in columns]] + [[row[key] for _, key in columns] for row in rows]
    widths = [max(10, max(len(line[i]) for line in cells) + 3) for i in range(len(columns) - 1)]
    return "\n".join("".join(c.ljust(w) for c, w in zip(line, widths)) + line[-1] for line in cells)


def created_at(text: str) -> float | None:
    """Seconds since the epoch from RFC 3339 ("2024-05-01T12:00:00.123456789Z"); None if absent."""
    try:
        # Go writes nanoseconds; Python reads at most microseconds, and "Z" only from 3.11.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
