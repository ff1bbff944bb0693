"""Displays: evidence a reader can read — tables, folded details, trimmed JSON.

The kernel answers in lines made for programs: a line of /proc/PID/mountinfo holds eleven fields and often
500 characters; an inspect answer is one line of JSON. A notebook cell shows such evidence through one of
these, in a terminal as aligned text and in Jupyter as HTML that wraps at the page's edge:

    Table(columns, rows)          rows of values under named columns
    mount_table(mountinfo)        mountinfo parsed (proc(5)), one row a mount, the fields that teach
    options_table(options)        an overlay's mount options, one a row, lowerdir one layer a row
    with_mount_table(step, key)   a Step whose value at ``key`` is mountinfo, shown as a mount_table
    Folded(summary, details)      a one-line summary, the details folded away (<details>)
    trimmed_json(value)           JSON indented, long lists and strings cut, saying how much was cut

Next: ``labcore.lessons.diagrams`` draws what a table cannot show: who points at what.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

from labcore.kernel import procfs
from labcore.lessons.evidence import PRE, WRAP

MOUNT_COLUMNS = ("mount point", "fstype", "source", "root", "propagation", "options", "fs options")
# The superblock's options that teach, shortened: an overlay's layers as a count and their last path
# component (a layer's 64-hex name cut to 12, as docker prints an ID); the rest as the kernel wrote them.
LAYER_OPTIONS = ("lowerdir", "upperdir", "workdir")
SHORT_ID = 12


@dataclass
class Table:
    """Rows of values under named columns: aligned text in a terminal, an HTML table in Jupyter."""
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    title: str = ""

    def __str__(self) -> str:
        cells = [tuple(map(str, self.columns))] + [tuple(map(str, row)) for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
        return "\n".join(([self.title] if self.title else []) + lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(str(c))}</th>" for c in self.columns)
        # A cell may break anywhere: a mount's options are long runs of commas, and the table must fit the page.
        # word-break, not overflow-wrap: JupyterLab's sanitizer keeps the one and drops the other in an untrusted
        # notebook (the browser test saw it).
        body = "".join("<tr>" + "".join(f"<td style='word-break:break-all'><code>{html.escape(str(value))}</code>"
                                        "</td>" for value in row) + "</tr>" for row in self.rows)
        title = f"<b>{html.escape(self.title)}</b>" if self.title else ""
        return f"<div style='{WRAP}'>{title}<table><tr>{head}</tr>{body}</table></div>"


def parse_mountinfo_line(line: str) -> dict[str, str]:
    """One line of /proc/PID/mountinfo (proc(5)): ids, device, root, mount point, options, the optional
    fields (shared:N, master:N) up to the "-", then fstype, source and the superblock's options."""
    (mount,) = procfs.parse_mountinfo(line.strip())
    return {"id": str(mount.id), "parent": str(mount.parent), "device": mount.device, "root": mount.root,
            "mount point": mount.point, "options": mount.options, "optional": " ".join(mount.optional),
            "propagation": _propagation(mount.optional), "fstype": mount.fstype, "source": mount.source,
            "super options": mount.super_options,
            "fs options": short_options(mount.super_options)}


def short_name(path: str) -> str:
    """A directory by its last component: ``.../layers/<64 hex>`` -> ``<12 hex>…``, ``.../upper`` -> ``upper``."""
    name = str(path).rstrip("/").rpartition("/")[2] or str(path)
    return name[:SHORT_ID] + "…" if re.fullmatch(r"[0-9a-f]{32,}", name) else name


def short_options(options: str) -> str:
    """An overlay's ``lowerdir=a:b,upperdir=u,workdir=w`` as ``lowerdir: 2 layers (a, b), upperdir: u, ...``;
    other options unchanged, long ones cut."""
    shown = []
    for option in options.split(","):
        name, _, value = option.partition("=")
        if name == "lowerdir":
            layers = value.split(":")
            shown.append(f"lowerdir: {len(layers)} layer{'s' * (len(layers) != 1)} "
                         f"({', '.join(map(short_name, layers))})")
        elif name in LAYER_OPTIONS:
            shown.append(f"{name}: {short_name(value)}")
        else:
            shown.append(option if len(option) <= 40 else option[:40] + "…")
    return ", ".join(shown)


def _propagation(optional) -> str:
    """shared:N -> shared, master:N -> slave, none -> private (mount_namespaces(7))."""
    kinds = [("shared" if tag.startswith("shared:") else "slave" if tag.startswith("master:") else tag)
             for tag in optional if not tag.startswith("propagate_from:")]
    return ", ".join(kinds) or "private"


def mount_table(mountinfo: str | list[str], columns: tuple[str, ...] = MOUNT_COLUMNS, title: str = "") -> Table:
    """Mountinfo as a table: one row a mount, in the kernel's order, only ``columns``."""
    lines = mountinfo.splitlines() if isinstance(mountinfo, str) else mountinfo
    mounts = [parse_mountinfo_line(line) for line in lines if line.strip()]
    return Table(tuple(columns), [tuple(mount[column] for column in columns) for mount in mounts], title)


def options_table(options: str, title: str = "") -> Table:
    """Mount options (``a=1,b=2``), one a row; an overlay's lowerdir one layer a row, the top layer first.
    What is not a string (a refused step's ``NOT_RUN``) is given back as it is."""
    if not isinstance(options, str):
        return options
    rows = []
    for option in options.split(","):
        name, _, value = option.partition("=")
        if name == "lowerdir":
            rows += [(f"lowerdir {number}", layer) for number, layer in enumerate(value.split(":"), 1)]
        else:
            rows.append((name, value))
    return Table(("option", "value"), rows, title)


def with_mount_table(step, key: str = "stdout", columns: tuple[str, ...] = MOUNT_COLUMNS):
    """``step`` with its after[``key``], lines of mountinfo (a container's ``cat /proc/self/mountinfo``), shown
    as a ``mount_table``; the lines themselves kept in step.data["mountinfo"] for the cells that check them.
    A refused step is given back as it is."""
    if not step.permitted:
        return step
    lines = [line for line in str(step.after[key]).splitlines() if " - " in line]
    step.data["mountinfo"] = lines
    step.after[key] = mount_table(lines, columns, title=f"{len(lines)} mount{'s' * (len(lines) != 1)}")
    return step


@dataclass
class Folded:
    """A summary line, and the details under it, folded (HTML <details>) until the reader opens them."""
    summary: str
    details: Any = None

    def __str__(self) -> str:
        body = "" if self.details is None else "\n" + "\n".join("   " + line
                                                                for line in str(self.details).splitlines())
        return self.summary + body

    def _repr_html_(self) -> str:
        inner = (self.details._repr_html_() if hasattr(self.details, "_repr_html_")
                 else f"{PRE}{html.escape(str(self.details))}</pre>")
        return (f"<details><summary>{html.escape(self.summary)}</summary>"
                f"<div style='{WRAP}'>{inner}</div></details>")


def trimmed_json(value: Any, max_items: int = 8, max_string: int = 80) -> str:
    """JSON indented by two, lists and objects cut to ``max_items`` and strings to ``max_string``, each cut
    saying how much it left out: a Docker inspect answer as a reader can take it in."""
    return json.dumps(_trim(value, max_items, max_string), indent=2, ensure_ascii=False)


def _trim(value: Any, max_items: int, max_string: int) -> Any:
    if isinstance(value, str) and len(value) > max_string:
        return value[:max_string] + f"… ({len(value) - max_string} more characters)"
    if isinstance(value, list):
        kept = [_trim(item, max_items, max_string) for item in value[:max_items]]
        return kept + ([f"… {len(value) - max_items} more"] if len(value) > max_items else [])
    if isinstance(value, dict):
        items = list(value.items())
        kept = {key: _trim(item, max_items, max_string) for key, item in items[:max_items]}
        if len(items) > max_items:
            kept["…"] = f"{len(items) - max_items} more keys"
        return kept
    return value
