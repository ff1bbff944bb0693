"""The undo journal: every object the lab creates is written down with its inverse, before it exists.

Containers are made of kernel objects that outlive the process that made them: a mount in the host's mount
namespace, a cgroup directory, a named network namespace, a veth pair, a background process, a directory of
layers. If the notebook kernel is restarted half-way through a step, nothing else would remember them. So
the lab follows one rule, the way a database uses a write-ahead log:

    record {kind, name, how to undo it, who owns it}  ->  then create the object

A process killed between the two leaves a record of nothing, which an undo treats as done; killed the other
way round it would leave an object nobody knows about. So an object's name is chosen before it exists, and a
process that cannot be named ahead (a port proxy) waits until it is recorded before it does anything.

Each record is one small JSON file in ``<state dir>/journal``, ``ID.json``, written whole before it has a
name (``write_whole``; where the filesystem cannot, as ``.ID.tmp`` renamed into place); an undo first claims
it by renaming it to ``.ID.undoing.PID.START``, so two cleanups never undo one object twice. A process may
die at any of those instants: ``recover()`` puts a claim whose claimant is dead back, and a temporary record
whose writer is dead forward (or drops it, with a report, when it is not whole). Three ways to undo:

* ``with Scope() as scope:`` undoes what was recorded inside the block, in reverse order, on normal exit, on
  an exception and on KeyboardInterrupt (the CLI turns SIGTERM and SIGHUP into the same exit path);
* ``undo_orphans()`` (``labcore cleanup``) undoes records whose owner process has died;
* ``undo_all()`` (``labcore cleanup --all``, the notebooks' cleanup cells) undoes every record.

The inverse is data, not code (an operation name and its arguments), so a fresh process can replay it after a
crash. Each operation refuses a name the lab could not have given (``labcore...``, ``lc...`` for links), so
cleanup never touches an object the lab did not create. Objects that die with their namespace (a mount
inside a container's private mount namespace) need no record.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import LabError
from labcore.kernel import procfs, syscalls
from labcore.kernel.process import tied


@dataclass
class Entry:
    kind: str                       # mount, cgroup, netns, link, process, directory
    name: str                       # the object: a path, an interface name, a pid
    undo: str                       # an operation in UNDO
    args: dict = field(default_factory=dict)
    owner: dict = field(default_factory=dict)      # {"pid": ..., "start": ...}
    id: str = ""

    def describe(self) -> str:
        return f"{self.kind} {self.name}"

    def to_json(self) -> str:
        # The fields by name, not dataclasses.asdict, which deep-copies args and owner on every record.
        return json.dumps({"kind": self.kind, "name": self.name, "undo": self.undo, "args": self.args,
                           "owner": self.owner, "id": self.id})


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (proc(5)): with the pid, it names a process uniquely across pid reuse."""
    return procfs.start_time(pid)


_acting = threading.local()


def owner_of(pid: int | None = None) -> dict:
    """Who owns what this process records: its pid and start time, and, in a thread that works for one
    container (``acting_for``), that container's id, so that the records of one container of a process that
    monitors many can be told apart (``labcore.runtime.engine.remove`` of a dead one)."""
    if pid and pid != os.getpid():
        return {"pid": pid, "start": process_start_time(pid)}
    owner = dict(_own_owner())
    if not pid and getattr(_acting, "tag", None):
        owner["for"] = _acting.tag
    return owner


@contextlib.contextmanager
def acting_for(tag: str):
    """Records made by this thread in the block say whom they were made for (``owner_of``)."""
    _acting.tag = tag
    try:
        yield
    finally:
        _acting.tag = None


_OWN: dict = {}


def _own_owner() -> dict:
    # This process's start time never changes: read once, not at each record and undo (about a dozen reads
    # of /proc/self/stat a container). Keyed by pid, so a forked child reads its own.
    pid = os.getpid()
    if _OWN.get("pid") != pid:
        _OWN.clear()
        _OWN.update(pid=pid, start=process_start_time(pid))
    return _OWN


def owner_alive(owner: dict) -> bool:
    """The owner still runs: the same pid with the same start time, and not exited."""
    pid = owner.get("pid")
    return pid is not None and process_start_time(pid) == owner.get("start") and running(pid)


def running(pid: int) -> bool:
    """The process exists and is no zombie: field 3 of /proc/PID/stat is Z for one that has exited and waits
    only for its parent's wait(2), which after a crash may take a while."""
    try:
        return procfs.state(pid) != "Z"
    except OSError:
        return False


class Journal:
    """The records in one state directory."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else paths.journal_dir()

    def record(self, kind: str, name: str, undo: str, /, *, owner: dict | None = None, **args) -> Entry:
        # Positional-only, so that an undo operation's own arguments may be called ``name`` (undo_link).
        try:
            operation(undo)
        except KeyError:
            raise LabError(f"no undo operation {undo!r}; known: {', '.join(sorted(UNDO))}") from None
        entry = Entry(kind, str(name), undo, args, owner or owner_of())
        entry.id = f"{time.time_ns():020d}-{os.getpid()}-{kind}"
        try:
            write_whole(self.directory / f"{entry.id}.json", entry.to_json())     # never half a record
        except FileNotFoundError:           # no journal directory yet: made the first time, not at each record
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_whole(self.directory / f"{entry.id}.json", entry.to_json())
        return entry

    def forget(self, entry: Entry) -> None:
        """Drop a record whose object was removed the normal way."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / f"{entry.id}.json").unlink()

    def entries(self) -> list[Entry]:
        return self.read_entries()[0]

    def read_entries(self) -> tuple[list[Entry], list[str]]:
        """The records, and what could not be read of them (a damaged file is reported, never fatal)."""
        if not self.directory.is_dir():
            return [], []
        found, unreadable = [], []
        for file in sorted(self.directory.glob("*.json")):
            try:
                found.append(read_entry(file))
            except FileNotFoundError:
                continue                                     # undone by another process meanwhile
            except (OSError, ValueError, TypeError) as err:
                unreadable.append(f"record {file.name}: cannot be read ({err}); it stays for you to look at")
        return found, unreadable

    def undo(self, entry: Entry) -> bool:
        """Run the inverse of ``entry`` once, then drop the record. False if another process took it."""
        me = owner_of()
        claimed = self.directory / f".{entry.id}.undoing.{me['pid']}.{me['start']}"
        try:
            (self.directory / f"{entry.id}.json").rename(claimed)   # claim it: two cleanups never race
        except FileNotFoundError:
            return False
        try:
            operation(entry.undo)(**entry.args)
        except BaseException:
            claimed.rename(self.directory / f"{entry.id}.json")   # keep it for `labcore cleanup`
            raise
        claimed.unlink()
        return True

    def recover(self) -> list[str]:
        """Finish what processes that died mid-write or mid-undo left in the journal; report what it could not.

        ``.ID.undoing.PID.START``: the claimant died during the undo, so the object may still exist: the
        record goes back to ``ID.json``, to be undone again (every undo treats "already gone" as done).
        ``.ID.tmp``: the writer died between writing and renaming, after the object existed: a whole record
        is renamed into place; a partial one names no object that can be found, so it is dropped, and said."""
        if not self.directory.is_dir():
            return []
        notes = []
        for claim in self.directory.glob(".*.undoing*"):
            identifier, _, claimant = claim.name[1:].partition(".undoing")
            pid, _, start = claimant.lstrip(".").partition(".")
            if pid.isdigit() and start.isdigit() and owner_alive({"pid": int(pid), "start": int(start)}):
                continue                                     # a live cleanup is undoing it right now
            with contextlib.suppress(FileNotFoundError):
                claim.rename(self.directory / f"{identifier}.json")
        for temporary in self.directory.glob(".*.tmp"):
            identifier = temporary.name[1:-len(".tmp")]
            writer = identifier.split("-")[1] if identifier.count("-") >= 2 else ""
            if writer.isdigit() and process_start_time(int(writer)) is not None and int(writer) != os.getpid():
                continue                                     # its writer may still rename it
            try:
                temporary.rename(self.directory / f"{read_entry(temporary).id or identifier}.json")
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError):
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
                notes.append(f"record {identifier}: half-written when its process died, so it names no "
                             f"object to undo; dropped")
        return notes

    def set_owner(self, entry: Entry, owner: dict) -> None:
        """Hand an object to another process (a detached container's monitor), so it is not an orphan."""
        entry.owner = owner
        # A whole temporary record renamed over the old one: killed in between, ``recover`` puts it in place.
        temporary = self.directory / f".{entry.id}.tmp"
        temporary.unlink(missing_ok=True)
        write_whole(temporary, entry.to_json())
        temporary.rename(self.directory / f"{entry.id}.json")

    def undo_many(self, entries: list[Entry]) -> list[str]:
        """Undo in reverse creation order (children before parents); report what could not be undone.

        Any error of one undo is reported and the next is tried: a record whose undo fails stays in the
        journal, and cleanup itself never stops half-way."""
        failures = []
        for entry in reversed(entries):
            try:
                self.undo(entry)
            except Exception as err:                 # noqa: BLE001 - one bad record must not stop the rest
                import subprocess                    # here: only a failure is worded with it
                failures.append(f"{entry.describe()}: {type(err).__name__}: {err}" if not isinstance(
                    err, (OSError, LabError, subprocess.SubprocessError)) else f"{entry.describe()}: {err}")
        return failures

    def undo_orphans(self, also_mine: bool = False) -> tuple[list[Entry], list[str]]:
        """Undo what dead processes left; with ``also_mine``, what this process made too."""
        notes = self.recover()
        me = owner_of()
        entries, unreadable = self.read_entries()
        chosen = [e for e in entries if not owner_alive(e.owner) or (also_mine and e.owner == me)]
        return chosen, notes + unreadable + self.undo_many(chosen)

    def undo_all(self) -> tuple[list[Entry], list[str]]:
        notes = self.recover()
        everything, unreadable = self.read_entries()
        return everything, notes + unreadable + self.undo_many(everything)


def read_entry(file: Path) -> Entry:
    fields = json.loads(file.read_text())
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    return Entry(**fields)


class Scope:
    """Undo, on leaving the block by any route, what was recorded through this scope."""

    def __init__(self, journal: Journal | None = None):
        self.journal = journal or Journal()
        self.entries: list[Entry] = []

    def record(self, kind: str, name: str, undo: str, /, **args) -> Entry:
        entry = self.journal.record(kind, name, undo, **args)
        self.entries.append(entry)
        return entry

    def release(self) -> list[Entry]:
        """Keep the objects after the block (a detached container); the journal still holds them."""
        kept, self.entries = self.entries, []
        return kept

    def close(self) -> list[str]:
        entries, self.entries = self.entries, []
        return self.journal.undo_many(entries)

    def __enter__(self) -> "Scope":
        return self

    def __exit__(self, *exc) -> None:
        failures = self.close()
        if failures and exc[0] is None:
            raise LabError("could not undo: " + "; ".join(failures),
                           fix="run `labcore cleanup` to retry")


# --- the inverse operations -----------------------------------------------------------------------------
# Each checks that the object carries the lab's name before touching it, and treats "already gone" as done.
# A record names its inverse by a word ("rmtree", "link"); each mechanism registers the inverses of what it
# makes under those words (``register``), so this module knows how to remove files, mounts and processes,
# and nothing of cgroups or links. A fresh `labcore cleanup` has imported none of the mechanisms: it finds
# an inverse it has not met by importing the modules in MECHANISMS, which register theirs when imported.

UNDO: dict = {}
MECHANISMS = ("labcore.kernel.cgroups", "labcore.kernel.network", "labcore.kernel.usernet", "labcore.kernel.nat")


def register(name: str):
    """``@register("link")`` above an inverse operation: records may name it from now on."""
    def add(operation):
        UNDO[name] = operation
        return operation
    return add


def operation(name: str):
    """The inverse registered as ``name``, importing the mechanisms that register theirs if need be;
    KeyError for a name no module registers (a damaged record: it stays, and is reported)."""
    if name not in UNDO:
        for module in MECHANISMS:
            importlib.import_module(module)
    return UNDO[name]


def refuse_foreign(name: str, ok: bool) -> None:
    if not ok:
        raise LabError(f"refusing to remove {name!r}: its name does not carry the prefix "
                       f"{paths.PREFIX!r}, so the lab did not create it")


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path``, deepest first (from /proc/self/mountinfo, proc(5))."""
    return procfs.mounts_under(path)


@register("umount")
def undo_umount(target: str) -> None:
    refuse_foreign(target, paths.path_is_ours(target))
    for point in mounts_under(target):
        if point == os.path.abspath(target):
            syscalls.umount2(point, syscalls.MNT_DETACH)


@register("rmtree")
def undo_rmtree(path: str) -> None:
    """Remove a directory tree, first detaching mounts below it so no bind-mounted host file is deleted."""
    refuse_foreign(path, paths.path_is_ours(path))
    points = mounts_under(path)
    for point in points:
        syscalls.umount2(point, syscalls.MNT_DETACH)
    if points and mounts_under(path):           # read again only when there was something to detach
        raise LabError(f"mounts remain below {path}; not deleting it", path=path)
    if os.path.islink(path):
        os.unlink(path)                   # the link itself, never what it points to
    elif os.path.lexists(path):
        _make_writable(path)
        for attempt in range(3):
            try:
                shutil.rmtree(path)
                return
            except OSError as err:
                # A process still writing into it (a detached container's monitor saving its last state, a
                # temporary file renamed over state.json, as `cleanup --all` removes the dir) put a file back
                # between rmtree's unlinks and its rmdir (ENOTEMPTY), or took one away between rmtree's listing
                # and its unlink (ENOENT; Python before 3.13 does not let that pass). Look again.
                if err.errno not in (errno.ENOTEMPTY, errno.ENOENT) or attempt == 2:
                    raise
                time.sleep(0.05)
            if not os.path.lexists(path):
                return


def _make_writable(path: str) -> None:
    # Image layers hold read-only directories (e.g. /proc mode 0555): unwritable as a non-root user.
    # os.walk lists a symlink to a directory among the directories; a link has no mode of its own to change
    # (chmod(2) follows it, and Linux has no lchmod: Python raises NotImplementedError), so it is skipped.
    if os.geteuid() != 0:
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                child = os.path.join(root, name)
                if not os.path.islink(child):
                    with contextlib.suppress(OSError):
                        os.chmod(child, 0o700)


@register("kill")
def undo_kill(pid: int, start: int | None) -> None:
    """SIGKILL a process, but only the one we started: the pid must still have the same start time."""
    if start is not None and process_start_time(pid) == start:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(entries: list[Entry], seconds: float = 5.0) -> None:
    """Until the processes of these ``kill`` records have exited: kill(2) sends SIGKILL and returns before it
    is delivered. Then their namespaces are gone too, and whoever looks next sees what is really left."""
    deadline = time.monotonic() + seconds
    killed = [entry.args for entry in entries if entry.undo == "kill"]
    while any(owner_alive(args) for args in killed) and time.monotonic() < deadline:
        time.sleep(0.005)


def make_scratch(scope: "Scope", prefix: str, directory: bool = True) -> str:
    """A new directory (or empty file) in the state dir's scratch space: named first, journaled, then made,
    so a crash at any instant leaves a record of it or nothing (``tempfile.mkdtemp`` would make it first)."""
    paths.scratch_dir().mkdir(parents=True, exist_ok=True)
    path = str(paths.scratch_dir() / f"{prefix}{os.urandom(8).hex()}")
    scope.record("directory" if directory else "file", path, "rmtree" if directory else "unlink", path=path)
    if directory:
        os.mkdir(path, 0o700)
    else:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return path


def write_whole(path: str | os.PathLike, text: str | bytes) -> None:
    """Create the file ``path`` whole or not at all, leaving nothing if this process dies half-way: the data
    goes into a file with no name yet (open(2) O_TMPFILE, in the directory it will live in), which gets its
    name only once it is complete (linkat(2) of /proc/self/fd/N, open(2)'s own example). Killed before that,
    the kernel frees the nameless file with the process. A filesystem without O_TMPFILE gets a temporary
    name renamed into place (rename(2) is atomic), which a crash at that instant may leave."""
    path = Path(path)
    try:
        fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY, 0o644)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(text) if isinstance(text, bytes) else temporary.write_text(text)
        temporary.rename(path)
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        # write(2) itself, not a file object: no buffer, no fstat, ioctl and lseeks a record (several a start).
        data = memoryview(text if isinstance(text, bytes) else text.encode())
        while data:
            data = data[os.write(fd, data):]
        # A directory fd makes Python call linkat(2) with AT_SYMLINK_FOLLOW (link(2) would refuse: EXDEV).
        os.link(procfs.path("self", "fd", str(fd)), path.name, dst_dir_fd=directory)
    finally:
        os.close(fd)
        os.close(directory)


@contextlib.contextmanager
def flocked(path: str | os.PathLike, seconds: float | None = None):
    """flock(2) ``path`` until the block ends: a lock file (made if missing) or a directory. With ``seconds``,
    TimeoutError once that long has passed without it, so that a holder that never lets go costs ``seconds``,
    not forever."""
    flags = os.O_RDONLY if os.path.isdir(path) else os.O_RDONLY | os.O_CREAT
    # Read-only is enough for flock(2), so a user who cannot write root's lock file still gets as far as
    # the kernel's own answer to whatever the lock guards, instead of an error about a lock file.
    fd = os.open(path, flags, 0o644)
    try:
        take_flock(fd, seconds)
        yield
    finally:
        os.close(fd)                                    # closing the file releases the lock


def take_flock(fd: int, seconds: float | None) -> None:
    """LOCK_EX on ``fd``: blocking, or within ``seconds``, asking with LOCK_NB every 10 ms (flock(2) itself has
    no timeout; a signal to interrupt it would reach the whole process)."""
    if seconds is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"flock(2): still held by another after {seconds:g} s") from None
            time.sleep(0.01)


@register("unlink")
def undo_unlink(path: str) -> None:
    refuse_foreign(path, paths.path_is_ours(path))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@register("ipcrm")
def undo_ipcrm(msqid: int, key: int) -> None:
    """Remove a System V message queue, but only ours: a queue has no name, so its id must still carry the
    key it was created with (as a pid must keep its start time), read from /proc/sysvipc/msg (proc(5))."""
    for fields in procfs.sysvipc("msg"):
        if int(fields[1]) == msqid and int(fields[0]) == key:
            import subprocess
            subprocess.run(tied(["ipcrm", "-q", str(msqid)]), capture_output=True, check=True)


def cleanup(everything: bool = False) -> str:
    """Undo what this process made and what crashed processes left; the last cell of every notebook.

    Objects of other live processes — another notebook's daemon, a running detached container — are not
    this notebook's to remove: ``everything=True`` (`labcore cleanup --all`) removes them too.
    Idempotent: a second call finds nothing and says so.
    """
    journal = Journal()
    tried, failures = journal.undo_all() if everything else journal.undo_orphans(also_mine=True)
    wait_gone(tried)
    kept = {entry.id for entry in journal.entries()}         # a record whose undo failed stays
    lines = [f"removed {entry.describe()}" for entry in tried if entry.id not in kept]
    lines += [f"could not remove {failure}" for failure in failures]
    return "\n".join(lines) or "nothing left to clean up"
