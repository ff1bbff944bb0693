"""The container lifecycle: a state machine, kept on disk.

A container is not a process; it is a record that outlives its processes. runc and Docker walk each container
through the same states (OCI runtime-spec "Lifecycle"; Docker adds `paused` and names `stopped` `exited`):

    create ──► created ──start──► running ──(process exits / stop / kill)──► exited ──rm──► (gone)
                  │                 │  ▲  │                                    │
                  rm              pause│unpause                             start
                  ▼                 ▼  │  └──(its monitor died)──► dead ──rm──► (gone)
                (gone)             paused                                   running

"dead" is Docker's word for a container the daemon lost track of. Here: the process that was to record its
exit (its monitor, or `labcore run`) was killed, so nothing will; its processes may still run. It can only be
removed, and `rm` removes everything its monitor had made (``labcore.runtime.engine.remove``).

Every action checks the current state first and refuses a move the table does not allow with
``InvalidTransition`` (the daemon answers 409 Conflict, as Docker does). The record lives in
``<state dir>/containers/<id>/state.json``, written atomically under a lock, so another process — `labcore ps`,
the daemon, a restarted notebook kernel — sees the same containers. Beside it, ``hostconfig.json``: what the
client asked for (``requested``), as Docker keeps hostconfig.json and config.v2.json.
"""
from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import InvalidTransition, NotFound


class State(str, enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    EXITED = "exited"
    DEAD = "dead"


# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[set[State], State | None]] = {
    "start": ({State.CREATED, State.EXITED, State.RESTARTING}, State.RUNNING),
    "pause": ({State.RUNNING}, State.PAUSED),
    "unpause": ({State.PAUSED}, State.RUNNING),
    "kill": ({State.RUNNING}, State.RUNNING),            # the process's exit moves it to EXITED
    "stop": ({State.RUNNING, State.EXITED, State.CREATED, State.RESTARTING}, State.EXITED),
    "restart": ({State.EXITED}, State.RESTARTING),         # the monitor, under a restart policy
    "exit": ({State.RUNNING, State.PAUSED}, State.EXITED),
    "die": ({State.RUNNING, State.PAUSED, State.RESTARTING}, State.DEAD),   # its monitor is gone
    "exec": ({State.RUNNING}, State.RUNNING),
    "remove": ({State.CREATED, State.EXITED, State.DEAD}, None),
}

_REFUSALS = {
    "start": "container {id} is already {state}",
    "pause": "container {id} is not running",
    "unpause": "container {id} is not paused",
    "kill": "cannot kill container {id}: container {id} is not running",
    "exec": "container {id} is not running",
    "remove": "You cannot remove a {state} container {id}. Stop the container before attempting removal or "
              "force remove",
    "rename": "cannot rename container {id}: it is {state}",
}


def check(action: str, state: State, container_id: str) -> State | None:
    """The state ``action`` leads to from ``state``; InvalidTransition if the table forbids it."""
    allowed, target = TRANSITIONS[action]
    if state not in allowed:
        message = _REFUSALS.get(action, "cannot {action} container {id}: it is {state}")
        if state is State.DEAD:
            message = "cannot {action} container {id}: it is dead (its monitor died); it can only be removed"
        raise InvalidTransition(message.format(id=container_id[:12], state=state.value, action=action),
                                state=state.value, action=action)
    return target


@dataclass
class Record:
    """What `docker inspect` reports about a container's state, and how to find its pieces."""
    id: str
    name: str
    image: str
    config: dict = field(default_factory=dict)       # the spec it was created from
    state: State = State.CREATED
    pid: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    created: float = field(default_factory=time.time)
    started: float = 0.0
    finished: float = 0.0
    monitor: dict = field(default_factory=dict)       # the process that will record the exit {pid, start}
    error: str = ""                                   # why its monitor failed, when it did (State.Error)

    @property
    def directory(self) -> Path:
        return paths.containers_dir() / self.id

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f".state.json.{os.getpid()}.{threading.get_ident()}"
        temporary.write_text(json.dumps({**vars(self), "state": self.state.value}))
        temporary.rename(self.directory / "state.json")       # readers never see half a record


def load(container_id: str) -> Record:
    """The record; a stored record that is not one (a hand-edited or half-migrated file) is NotFound, never a
    TypeError that would break `docker ps -a` for every container."""
    directory = paths.containers_dir() / container_id
    try:
        raw = json.loads((directory / "state.json").read_text())
        record = Record(**{**raw, "state": State(raw["state"])})
    except FileNotFoundError as err:
        raise NotFound(f"No such container: {container_id}") from err
    except (ValueError, TypeError, KeyError) as err:
        raise NotFound(f"No such container: {container_id} (its record is damaged: {err})") from err
    with contextlib.suppress(FileNotFoundError):
        record.name = (directory / "name").read_text()      # `docker rename` writes it; it outlives saves
    return record


def rename(container_id: str, name: str) -> None:
    """The name lives in a file of its own: the monitor rewrites state.json at each step from the spec it
    started with, which still holds the old name."""
    with locked(container_id):
        temporary = paths.containers_dir() / container_id / f".name.{os.getpid()}.{threading.get_ident()}"
        temporary.write_text(name)
        temporary.rename(paths.containers_dir() / container_id / "name")


def all_records() -> list[Record]:
    found = []
    root = paths.containers_dir()
    for state_file in sorted(root.glob("*/state.json")) if root.is_dir() else []:
        with contextlib.suppress(NotFound, ValueError, TypeError):
            found.append(load(state_file.parent.name))
    return sorted(found, key=lambda record: record.created, reverse=True)


def find(ref: str) -> Record:
    """A container by full id, unique id prefix or name, as Docker resolves them."""
    records = all_records()
    for record in records:
        if ref in (record.id, record.name):
            return record
    matches = [record for record in records if record.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise NotFound(f"multiple containers match the prefix {ref!r}: use more of the id")
    raise NotFound(f"No such container: {ref}")


@contextlib.contextmanager
def locked(container_id: str):
    """Hold the container's lock while reading, checking and changing its state (flock(2))."""
    directory = paths.containers_dir() / container_id
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def transition(container_id: str, action: str, **changes) -> Record:
    """Check ``action`` against the stored state, apply it and ``changes``, save: one atomic step."""
    with locked(container_id):
        record = load(container_id)
        target = check(action, record.state, container_id)
        if target is not None:
            record.state = target
        for name, value in changes.items():
            setattr(record, name, value)
        record.save()
        return record


def monitor_alive(record: Record) -> bool:
    """A record says running; is the process that will record its exit still there? (A SIGKILLed monitor
    or a reboot leaves a record that says running forever.) Pid and start time, so a reused pid is no one."""
    from labcore.kernel.journal import owner_alive
    return owner_alive(record.monitor) if record.monitor else True


# --- what the client asked for, kept beside the record ----------------------------------------------------

OPTIONS = "hostconfig.json"


def requested(container_id: str) -> dict:
    """What the client sent, kept beside the record as Docker keeps hostconfig.json and config.v2.json:
    {"HostConfig": ..., "Config": ..., "AnonymousVolumes": [...]}. `inspect` echoes it; `stop`, restart
    policies and `rm -v` read it."""
    try:
        return json.loads((paths.containers_dir() / container_id / OPTIONS).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def save_requested(container_id: str, values: dict) -> None:
    directory = paths.containers_dir() / container_id
    temporary = directory / f".{OPTIONS}.{os.getpid()}"
    temporary.write_text(json.dumps(values))
    temporary.rename(directory / OPTIONS)
