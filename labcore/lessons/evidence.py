"""Evidence: what a step did, what the kernel showed before and after, and in which mode it ran.

Every step in the lab returns a ``Step``. It is the lab's promise made concrete: a step never prints a story,
it shows values read back from the kernel (/proc, /sys, the filesystem) before and after the call. A step
that this host forbids still returns a ``Step``, in mode ``NOT_PERMITTED``: what the kernel answered, why on
this kind of host, and the fix (``labcore.lessons.hosts.refuse`` writes those). Below that it shows the same step as
it ran on the reference host, a root VM, labelled with that host's kernel and date: a ``Recording``, made by
``tools/record_reference.py`` from a real run and kept as data in ``labcore/recordings/``. Nothing of it is
ever shown as if it had happened here.

A refused step has no measurements, but the notebook cell after it still reads ``step.data["..."]``: every
such value is ``NOT_RUN``, which prints as what it is and absorbs whatever the cell does with it, so the cell
runs and says "not run here" instead of failing. A refused step also stands in for the object its step would
have made (``box = union_fs.create_overlay(...)``): any attribute of it is ``NOT_RUN``, and a step given it
(or ``NOT_RUN``) is refused in turn, naming what it lacked (``labcore.lessons.hosts.lacking``).

A ``Step`` renders as an HTML table in Jupyter and as aligned text in a terminal.
"""
from __future__ import annotations

import enum
import functools
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).with_name("recordings")      # <notebook>.json, written by tools/record_reference.py
RECORD_TO = "LABCORE_RECORD"                            # set by that tool: where a run appends its steps


class Mode(enum.Enum):
    ROOT = "real, as root"
    USERNS = "real, inside a user namespace"
    USER = "real, as your own user"                     # nothing privileged was needed
    NOT_PERMITTED = "not permitted here"


def current_mode() -> Mode:
    """The mode of a step that isolates: as root, or (anyone else) inside a user namespace it made."""
    return Mode.ROOT if os.geteuid() == 0 else Mode.USERNS


def user_mode() -> Mode:
    """The mode of a step that needs no privilege: as root, or as the user you are."""
    return Mode.ROOT if os.geteuid() == 0 else Mode.USER


class NotRun:
    """What a refused step measured: nothing. Printed as such; any use (an index, an attribute, a call, a
    comparison, arithmetic) gives itself back, so the cell written for a real result runs and says so."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "(not run here)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return False

    def __iter__(self):
        return iter(())

    def __contains__(self, item) -> bool:
        return False

    def __getattr__(self, name: str):
        if name.startswith("_"):                  # IPython and pickle probe for _repr_*_ and __reduce__
            raise AttributeError(name)
        return self

    def __hash__(self) -> int:
        return 0

    def _absorb(self, *args, **kwargs) -> "NotRun":
        return self

    __getitem__ = __call__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _absorb
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _absorb
    __floordiv__ = __rfloordiv__ = __mod__ = __neg__ = __abs__ = _absorb


NOT_RUN = NotRun()


class NotMeasured(dict):
    """The before, after and data of a refused step: empty, and ``NOT_RUN`` for any key a cell asks for, or
    for any comparison (two empty dicts would otherwise be "equal", a fact nobody measured)."""

    def __missing__(self, key) -> NotRun:
        return NOT_RUN

    def __eq__(self, other) -> NotRun:
        return NOT_RUN

    __ne__ = __eq__
    __hash__ = None


@dataclass
class Step:
    title: str
    action: str                         # the syscall(s) or command, as C or the shell spells them
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    mode: Mode = field(default_factory=user_mode)
    reason: str = ""                    # for NOT_PERMITTED: what the kernel answered, why here, the fix
    note: str = ""                      # one sentence: what the evidence shows
    data: dict[str, Any] = field(default_factory=dict)   # raw values, for tests and later steps
    recording: "Recording | None" = None   # for NOT_PERMITTED: the step as it ran on the reference host
    key: str = ""                       # what its recording is kept under; by default its title
    # What the two columns hold, as the table's header names them: a moment (before, after) by default, or two
    # sides of one comparison ("host", "inside"; "model", "kernel"; "--privileged", "default").
    columns: tuple[str, str] = ("before", "after")

    @property
    def permitted(self) -> bool:
        return self.mode is not Mode.NOT_PERMITTED

    def __getattr__(self, name: str):
        # Called only for an attribute a Step does not have: a refused step stands in for the object its
        # step would have made (a container, an overlay, a build), and every attribute of that is NOT_RUN.
        if not name.startswith("_") and self.__dict__.get("mode") is Mode.NOT_PERMITTED:
            return NOT_RUN
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def refused(cls, title: str, action: str, error: Exception | str, key: str = "") -> "Step":
        """The honest result of a step this host forbids: the refusal, and the reference host's recording
        (found by ``key``, else by the title). ``labcore.lessons.hosts.refuse`` adds why on this kind of host and the
        fix this user can act on."""
        return cls(title, action, NotMeasured(), NotMeasured(), mode=Mode.NOT_PERMITTED, reason=str(error),
                   data=NotMeasured(), recording=find_recording(key or title), key=key)

    def rows(self) -> list[tuple[str, str, str]]:
        keys = list(dict.fromkeys([*self.before, *self.after]))
        return [(k, _text(self.before.get(k, "")), _text(self.after.get(k, ""))) for k in keys]

    def wire(self) -> list[str]:
        """What a subclass shows above the table (``flow.FlowStep``: the HTTP exchanges), as text."""
        return []

    def __str__(self) -> str:
        record(self)
        text = "\n\n".join([*self.wire(), self._text()])
        if self.recording is not None:
            text += "\n" + self.recording.text()
        return text

    def _text(self) -> str:
        lines = [f"== {self.title}", f"   did:  {self.action}", f"   mode: {self.mode.value}"]
        if self.reason:
            lines += ["   " + line for line in self.reason.splitlines()]
        rows = self.rows()
        if rows:
            width = max(len(k) for k, _, _ in rows)
            first, second = self.columns
            left = max(len(first), *(len(line) for _, b, _ in rows for line in b.split("\n")))
            lines.append(f"   {'':{width}}  {first:{left}}  {second}")
            for k, b, a in rows:      # a value of several lines (a table) stays in its column
                befores, afters = b.split("\n"), a.split("\n")
                for i in range(max(len(befores), len(afters))):
                    lines.append(f"   {k if i == 0 else '':{width}}  {befores[i] if i < len(befores) else '':{left}}"
                                 f"  {afters[i] if i < len(afters) else ''}")
        if self.note:
            lines.append(f"   => {self.note}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        record(self)
        wire = "".join(f"{PRE}{html.escape(text)}</pre>" for text in self.wire())
        recorded = self.recording.html() if self.recording is not None else ""
        return wire + self._html() + recorded

    def _html(self) -> str:
        esc = html.escape
        head = (f"<b>{esc(self.title)}</b><br><code>{esc(self.action)}</code> "
                f"<i>({esc(self.mode.value)})</i>")
        if self.reason:
            head += f"{PRE}{esc(self.reason)}</pre>"
        table = ""
        keys = list(dict.fromkeys([*self.before, *self.after]))
        if keys:
            body = "".join(f"<tr><th style='text-align:left'>{esc(k)}</th>{_html_value(self.before.get(k, ''))}"
                           f"{_html_value(self.after.get(k, ''))}</tr>" for k in keys)
            first, second = map(esc, self.columns)
            table = f"<table><tr><th></th><th>{first}</th><th>{second}</th></tr>{body}</table>"
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


def _html_value(value: Any) -> str:
    """A value that draws itself in HTML (a ``display.Table`` of parsed mountinfo) as itself; the rest as text."""
    if hasattr(value, "_repr_html_") and not isinstance(value, NotRun):
        return f"<td>{value._repr_html_()}</td>"
    return html_cell(_text(value))


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


# --- recordings: the same step, as it ran on the reference host ---------------------------------------------

@dataclass
class Recording:
    """A step as it really ran on the reference host (``host``: who, kernel, cgroups, date), kept as data."""
    key: str
    title: str
    action: str
    mode: str
    rows: list[list[str]]                # [name, before, after], as Step.rows() gave them
    note: str
    wire: list[str]
    host: dict
    output: str = ""                     # what a step that is not a Step printed (a build's log), verbatim
    columns: tuple[str, str] = ("before", "after")     # the table's header, as the Step named them

    def label(self) -> str:
        host = self.host
        return (f"recorded on the reference host ({host.get('who', '?')} on a {host.get('machine', 'VM')}, "
                f"Linux {host.get('kernel', '?')}, cgroup {host.get('cgroup', '?')}, {host.get('date', '?')}); "
                f"not run here")

    def as_step(self) -> Step:
        step = Step(self.title, self.action, note=self.note, mode=Mode(self.mode), columns=tuple(self.columns))
        step.before = {name: before for name, before, _ in self.rows}
        step.after = {name: after for name, _, after in self.rows}
        return step

    def text(self) -> str:
        body = self.output or "\n\n".join([*self.wire, self.as_step()._text()])
        return f"   --- {self.label()} ---\n" + "\n".join("   | " + line for line in body.splitlines())

    def html(self) -> str:
        wire = "".join(f"<pre>{html.escape(text)}</pre>" for text in self.wire)
        body = f"<pre>{html.escape(self.output)}</pre>" if self.output else wire + self.as_step()._html()
        return (f"<div style='border-left:4px solid #bbb;padding-left:8px;margin-top:6px;opacity:0.85'>"
                f"<i>{html.escape(self.label())}</i>{body}</div>")


def recording_key(title: str) -> str:
    """A title with what differs between two runs of the same step masked: ids, pids, ports."""
    title = re.sub(r"\b[0-9a-f]{12,64}\b", "ID", title)
    return re.sub(r"\b\d{3,}\b", "N", title)


@functools.lru_cache(maxsize=1)
def recordings() -> dict[str, Recording]:
    """Every recording kept in the package, by ``recording_key`` of its title."""
    found = {}
    for file in sorted(RECORDINGS.glob("*.json")):
        kept = json.loads(file.read_text())
        for entry in kept["steps"]:
            found[entry["key"]] = Recording(**entry, host=kept["host"])
    return found


def find_recording(key_or_title: str) -> Recording | None:
    return recordings().get(recording_key(key_or_title))


def record(step: Step, output: str = "") -> None:
    """While ``tools/record_reference.py`` runs the notebooks, append each real step shown to its file
    (``output``: the text of a result that prints itself rather than as a Step, such as a build's log)."""
    target = os.environ.get(RECORD_TO)
    if not target or not step.permitted:
        return
    entry = {"key": recording_key(step.key or step.title), "title": step.title, "action": step.action,
             "mode": step.mode.value, "rows": [] if output else [list(row) for row in step.rows()],
             "note": step.note, "wire": step.wire(), "output": output, "columns": list(step.columns)}
    with open(target, "a") as file:
        file.write(json.dumps(entry) + "\n")
