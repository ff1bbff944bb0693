"""Evidence: what a step did, what the kernel showed before and after, and in which mode it ran.

Every step in the lab returns a ``Step``. It is the lab's promise made concrete: a step never prints a story,
it shows values read back from the kernel (/proc, /sys, the filesystem) before and after the call. A step
that this host forbids still returns a ``Step``, in mode ``NOT_PERMITTED``, with the reason and the fix.

A ``Step`` renders as an HTML table in Jupyter and as aligned text in a terminal.
"""
from __future__ import annotations

import enum
import html
import os
import re
from dataclasses import dataclass, field
from typing import Any


class Mode(enum.Enum):
    ROOT = "real, as root"
    USERNS = "real, inside a user namespace"
    NOT_PERMITTED = "not permitted here"


def current_mode() -> Mode:
    """The mode a step runs in on this host, unless it is refused."""
    return Mode.ROOT if os.geteuid() == 0 else Mode.USERNS


@dataclass
class Step:
    title: str
    action: str                         # the syscall(s) or command, as C or the shell spells them
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    mode: Mode = Mode.ROOT
    reason: str = ""                    # for NOT_PERMITTED: why, and the fix
    note: str = ""                      # one sentence: what the evidence shows
    data: dict[str, Any] = field(default_factory=dict)   # raw values, for tests and later steps

    @property
    def permitted(self) -> bool:
        return self.mode is not Mode.NOT_PERMITTED

    @classmethod
    def refused(cls, title: str, action: str, error: Exception) -> "Step":
        """The honest result of a step this host forbids: the kernel's refusal and how to fix it."""
        return cls(title, action, mode=Mode.NOT_PERMITTED, reason=str(error))

    def rows(self) -> list[tuple[str, str, str]]:
        keys = list(dict.fromkeys([*self.before, *self.after]))
        return [(k, _text(self.before.get(k, "")), _text(self.after.get(k, ""))) for k in keys]

    def __str__(self) -> str:
        lines = [f"== {self.title}", f"   did:  {self.action}", f"   mode: {self.mode.value}"]
        if self.reason:
            lines += ["   why:  " + line for line in self.reason.splitlines()]
        rows = self.rows()
        if rows:
            width = max(len(k) for k, _, _ in rows)
            left = max(len("before"), *(len(b) for _, b, _ in rows))
            lines.append(f"   {'':{width}}  {'before':{left}}  after")
            lines += [f"   {k:{width}}  {b:{left}}  {a}" for k, b, a in rows]
        if self.note:
            lines.append(f"   => {self.note}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        head = (f"<b>{esc(self.title)}</b><br><code>{esc(self.action)}</code> "
                f"<i>({esc(self.mode.value)})</i>")
        if self.reason:
            head += f"{PRE}{esc(self.reason)}</pre>"
        table = ""
        if self.rows():
            body = "".join(f"<tr><th style='text-align:left'>{esc(k)}</th>{html_cell(b)}{html_cell(a)}</tr>"
                           for k, b, a in self.rows())
            table = f"<table><tr><th></th><th>before</th><th>after</th></tr>{body}</table>"
        note = f"<p>&rArr; {esc(self.note)}</p>" if self.note else ""
        return f"<div style='{WRAP}'>{head}{table}{note}</div>"


# Evidence is often one long line: a request, an unshare() with every flag, a digest, a path. In HTML it
# wraps at the page's edge instead of widening it. Only these spellings survive JupyterLab's sanitizer in an
# untrusted notebook (word-wrap, not overflow-wrap; tests/browser checks that nothing overflows).
WRAP = "word-wrap:break-word"
PRE = f"<pre style='white-space:pre-wrap;{WRAP}'>"


def html_cell(value: str) -> str:
    """A table cell; a value with a long unbroken run (a digest, a path) may break anywhere: a table grows to
    its widest word, and word-wrap does not shrink a table."""
    style = " style='word-break:break-all'" if re.search(r"\S{40,}", value) else ""
    return f"<td{style}><code>{html.escape(value)}</code></td>"


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
