"""A container's log, as Docker's json-file driver keeps it: one JSON object per line of output.

The container writes bytes to a pipe (or a terminal) whenever it likes; `docker logs` shows *lines*, each with
the time it was written and the stream it came from. Docker's log copier (daemon/logger/copier.go) cuts the
bytes at each newline, keeps a line without its newline until the rest arrives (or the stream ends), and the
json-file driver (daemon/logger/jsonfilelog) writes each line as

    {"log":"hello\\n","stream":"stdout","time":"2024-05-01T12:00:00.123456789Z"}

which is what makes ``--tail 1`` (the last line), ``--since``/``--until`` (by time) and ``-t`` (timestamps)
possible. Output that is not UTF-8 is kept exactly: JSON carries it as escaped surrogates (PEP 383).

Next: ``labcore.runtime.engine`` writes this log from the container's monitor and reads it for `logs` and `attach`.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Iterator

STREAMS = {1: "stdout", 2: "stderr"}
NUMBERS = {name: number for number, name in STREAMS.items()}
MAX_LINE = 16 * 1024          # Docker's copier: a longer line is written in pieces of this size


class Writer:
    """Append each read's pieces (cut after each newline) as one JSON object each, with the time it arrived."""

    def __init__(self, path: str | os.PathLike):
        self.file = open(path, "ab", buffering=0)
        self.reads = 0

    def write(self, stream: int, data: bytes) -> None:
        self.reads += 1
        now = timestamp(time.time_ns())
        pieces = [piece + b"\n" for piece in data.split(b"\n")]
        pieces[-1] = pieces[-1][:-1]
        self.file.write(b"".join(json.dumps({
            "log": piece.decode("utf-8", "surrogateescape"), "stream": STREAMS[stream], "time": now,
            "c": self.reads, **({} if piece.endswith(b"\n") else {"partial": True})}).encode() + b"\n"
            for piece in pieces if piece))

    def flush(self) -> None:
        """Every piece is written when it is read: nothing waits here (kept for the callers' ordering)."""

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def timestamp(nanoseconds: int) -> str:
    """RFC 3339 with nanoseconds, in UTC, as Docker writes "time"."""
    seconds, fraction = divmod(nanoseconds, 10**9)
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"


def nanoseconds(text: str) -> int:
    """A "time" field back as nanoseconds since 1970."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(seconds) * 10**9 + int((fraction or "0").ljust(9, "0")[:9])


class Entry:
    __slots__ = ("stream", "data", "time", "read", "partial")

    def __init__(self, stream: int, data: bytes, time_ns: int, read: int = 0, partial: bool = False):
        self.stream, self.data, self.time, self.read, self.partial = stream, data, time_ns, read, partial


def read_entries(log) -> Iterator[Entry]:
    """The whole lines from the file's position on; a line the monitor is still writing is left for later."""
    while True:
        start = log.tell()
        line = log.readline()
        if not line.endswith(b"\n"):
            log.seek(start)
            return
        try:
            raw = json.loads(line)
            yield Entry(NUMBERS[raw["stream"]], raw["log"].encode("utf-8", "surrogateescape"),
                        nanoseconds(raw["time"]), raw.get("c", 0), bool(raw.get("partial")))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue                                  # a damaged line is skipped, as Docker skips it


def lines(entries, final: bool = True, pending: dict | None = None) -> Iterator[Entry]:
    """Pieces joined into lines, per stream (`docker logs`). With ``final``, a line still without its newline
    at the end is given as it is; otherwise it stays in ``pending`` for the rest to come (`logs -f`)."""
    pending = {} if pending is None else pending
    for entry in entries:
        if entry.stream in pending:
            first = pending.pop(entry.stream)
            entry = Entry(entry.stream, first.data + entry.data, first.time, entry.read, entry.partial)
        if entry.partial:
            pending[entry.stream] = entry
        else:
            yield entry
    if final:
        yield from sorted(pending.values(), key=lambda e: e.time)
        pending.clear()


def reads(entries) -> Iterator[Entry]:
    """Pieces joined back into the reads they came from (`docker attach`: one frame per read)."""
    current = None
    for entry in entries:
        if current is not None and (entry.read, entry.stream) == (current.read, current.stream) and entry.read:
            current = Entry(current.stream, current.data + entry.data, current.time, current.read)
            continue
        if current is not None:
            yield current
        current = entry
    if current is not None:
        yield current


def select(entries: list[Entry], tail: int | None = None, since: float = 0, until: float = 0) -> list[Entry]:
    """`docker logs --since --until --tail`: by time first, then the last ``tail`` lines of what is left."""
    chosen = [e for e in entries if (not since or e.time > since * 1e9) and (not until or e.time <= until * 1e9)]
    if tail is not None and tail >= 0:
        chosen = chosen[len(chosen) - tail:] if tail else []
    return chosen
