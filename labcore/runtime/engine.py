"""The engine: what a client may ask of containers that outlive the process that asked for them.

`labcore run --rm busybox echo hi` lives and dies with the command. `docker run -d` does not: the client
asks, the daemon starts the container and answers at once, and the container keeps running after the client
— even after the daemon — has gone. Docker gets there with one containerd-shim per container, its parent,
which holds its output and records how it ended. The lab keeps one *monitor* per state directory, as
containerd is one per daemon (``labcore.runtime.monitord``): a child subreaper (prctl(2)
PR_SET_CHILD_SUBREAPER) with one thread per container (``labcore.runtime.monitor``); it is spawned by the first
start that finds none, and leaves when no container and no client keeps it. The records both write are
``labcore.runtime.lifecycle``'s. Here, each request, as labd's routes and the CLI make it:

    create   check the spec and the image, write the record (state "created")
    start    ask the monitor over its Unix socket (spawning it when none answers), and return once it
             reports pid 1 "running" (or why it could not)
    wait     read the record until it says "exited"
    logs     read ``container.log``; with follow, keep reading until the container has exited
    attach   the same log from now on, and the container's stdin: a FIFO (fifo(7)) the monitor opened
             as the container's fd 0 (`docker run -i`), which the daemon writes what the client types into
    kill     signal pid 1 from the host; stop = SIGTERM, a grace period, then SIGKILL (`docker stop`)
    exec     a new process that joins pid 1's namespaces with setns(2), as `docker exec` does
    remove   undo what the journal holds for the container; remove its directory

Every step reads and writes the state on disk (``labcore.runtime.lifecycle``), so `labcore ps` in another terminal,
the daemon, or a restarted notebook kernel all see the same containers.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import secrets
import signal
import time
from typing import Iterator

from labcore import paths
from labcore.errors import BadInput, InvalidTransition, LabError, NotFound
from labcore.kernel import journal, procfs
from labcore.kernel.process import Channel
from labcore.runtime import jsonfile, lifecycle, monitor
from labcore.runtime.container import Spec
from labcore.runtime.lifecycle import Record, State

LOG, STDIN = monitor.LOG, monitor.STDIN     # the container's log, and its stdin FIFO, in its directory


# --- create and start -------------------------------------------------------------------------------------

def create(spec: Spec, options: dict | None = None) -> Record:
    """Refuse bad input and a missing image first, then write the record: nothing runs yet. ``options``: the
    HostConfig as the client sent it (labcore.api.routes), kept for `inspect`, `stop` and restart policies."""
    from labcore.runtime import container
    plan = container.plan_for(spec)
    spec.name = spec.name or f"labcore_{spec.id[:12]}"
    check_name_free(spec.name)
    record = Record(spec.id, spec.name, spec.image, config=container.describe(spec, plan))
    # Journaled before it is made: a crash between the two leaves a record cleanup can act on, not a stray dir.
    journal.Journal().record("directory", str(record.directory), "rmtree", path=str(record.directory))
    record.save()
    lifecycle.save_requested(spec.id, options or {})
    return record


def check_name_free(name: str) -> None:
    for other in lifecycle.all_records():
        if other.name == name:
            raise InvalidTransition(f'Conflict. The container name "/{name}" is already in use by container '
                                    f'"{other.id}". You have to remove (or rename) that container to be able '
                                    f'to reuse that name.')


def start(container_id: str) -> Record:
    """Ask the monitor to start the container; return once pid 1 runs the command (or raise why it could not)."""
    record = lifecycle.load(container_id)
    lifecycle.check("start", record.state, container_id)
    options = lifecycle.requested(container_id).get("HostConfig", {})
    with contextlib.suppress(FileNotFoundError):
        (record.directory / monitor.STOPPED).unlink()      # started again by the user: restart policies apply
    channel = connect_monitor()
    try:
        channel.send(("start", container_id, options))
        kind, value = channel.recv()
    except EOFError:
        raise LabError(f"the monitor closed the connection before container {container_id[:12]} started",
                       fix="see `labcore inspect` for the container's State.Error") from None
    finally:
        channel.close()
    if kind == "error":
        raise value
    return lifecycle.load(container_id)


# --- the monitor: one process per state directory (labcore.runtime.monitord) -------------------------------

MONITOR_MODULE = "labcore.runtime.monitord"         # by name: the entry module imports this one
SPAWN_SECONDS = 30.0


def connect_monitor(spawn: bool = True) -> Channel | None:
    """A connection to the state directory's monitor; with ``spawn``, one is started when none answers.
    Connected under the spawn lock: two clients never spawn two monitors, and the monitor never leaves while a
    client is between connect(2) and its request (it takes the same lock to leave, then accepts what waits).
    Requests are sent after the lock is let go: a monitor on its way out waits for the lock to accept them."""
    rehold = None
    with spawn_lock(), monitor.socket_address() as address:
        try:
            channel = connected(address)
        except (FileNotFoundError, ConnectionRefusedError):
            if not spawn:
                return None
            spawn_monitor()
            channel = connected(address)
            if _held is not None:                     # ours was killed: hold the new one as we held it
                rehold = connected(address)
    if rehold is not None:
        ask_to_hold(rehold)
    return channel


def connected(address: str) -> Channel:
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return Channel(sock)


def spawn_lock(seconds: float | None = None):
    """flock(2) on the state directory: clients connect (and spawn) one at a time, and the monitor leaves
    only while no client is between its connect(2) and its request. ``seconds``: ``journal.flocked``'s."""
    return journal.flocked(paths.home(), seconds)


def spawn_monitor() -> None:
    """``python -m labcore.runtime.monitord``: a fresh interpreter, not a fork of this process (labd's threads,
    sockets and heap are not the monitor's), in a session of its own; it says "1" on a pipe once it listens,
    or why it could not."""
    import select
    import subprocess
    import sys
    from pathlib import Path
    ready, ready_end = os.pipe()
    package_root = str(Path(__file__).resolve().parents[2])          # this labcore, wherever it is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH")))),
           # One malloc arena, not one per thread (mallopt(3) M_ARENA_MAX; glibc's default allows 8 per core):
           # the monitor's threads run Python one at a time anyway (the GIL), and each arena costs pages.
           "MALLOC_ARENA_MAX": "1"}
    try:
        first = subprocess.Popen([sys.executable, "-m", MONITOR_MODULE, str(ready_end)], pass_fds=(ready_end,),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True, cwd="/", env=env)
    finally:
        os.close(ready_end)
    with os.fdopen(ready, "rb") as readiness:
        first.wait()                                  # it forks the monitor and leaves at once: no zombie
        said = b""
        while select.select([readiness], [], [], SPAWN_SECONDS)[0]:
            chunk = readiness.read1(4096)
            if not chunk:
                break
            said += chunk
    if said != b"1":
        raise LabError(f"the container monitor did not start: {said.decode(errors='replace') or 'no answer'}",
                       fix=f"run `{sys.executable} -m {MONITOR_MODULE}` to see its error")


_held: Channel | None = None         # this process's holding connection, once it asked for one (labd)


def hold_monitor() -> None:
    """Keep the monitor running while this process lives (labd, from its start to its end): the daemon's
    starts then never wait for a Python to start. Should that monitor be killed, the start that spawns the
    next one holds it too (``connect_monitor``)."""
    ask_to_hold(connect_monitor())


def ask_to_hold(channel: Channel) -> None:
    """Ask on ``channel`` to hold the monitor, and keep it open: the monitor stays while it is."""
    global _held
    channel.send(("hold",))
    kind, value = channel.recv()
    if kind == "error":
        channel.close()
        raise value
    release_monitor()                                 # a killed monitor's connection, if any
    _held = channel


def release_monitor() -> None:
    """Close this process's holding connection: the monitor may leave once no container keeps it."""
    global _held
    if _held is not None:
        _held.close()
    _held = None


def dismiss_monitor(seconds: float = 10.0) -> str:
    """`labcore cleanup`: ask the monitor to leave if nothing keeps it; wait until it is gone. One already
    on its way out (its socket closed, its process not yet gone) is waited for too."""
    pids = running_monitors()
    if not (paths.home() / monitor.SOCKET).exists() and not pids:
        # None, or one that has unlinked its socket and forgotten its record and is about to exit: it holds
        # the spawn lock until it is gone (monitord.leave_if_idle), so the lock coming free is its going. Not
        # where the home is a file (a mistaken LABCORE_HOME). Within ``seconds``: a client may hold it too.
        if paths.home().is_dir():
            with contextlib.suppress(TimeoutError), spawn_lock(seconds):
                pass
        return ""
    channel = connect_monitor(spawn=False)
    pids = sorted(set(pids + running_monitors()))
    if channel is not None:
        try:
            channel.send(("leave",))
            kind, value = channel.recv()
        except (EOFError, OSError):
            kind = "leaving"
        finally:
            channel.close()
        if kind != "leaving":
            return ""
    deadline = time.monotonic() + seconds
    while any(map(journal.running, pids)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return f"stopped the idle container monitor (pid {', '.join(map(str, pids))})" if pids else ""


def running_monitors() -> list[int]:
    """The monitor's pid, from its own record in the journal (``labcore.runtime.monitord``), while it runs."""
    return [entry.owner["pid"] for entry in journal.Journal().entries()
            if entry.kind == "process" and entry.name == "labcore-monitor" and journal.owner_alive(entry.owner)]


# --- watching ---------------------------------------------------------------------------------------------

def refresh(record: Record) -> Record:
    """A record that says running while its monitor is gone will never be updated: the container is dead,
    as Docker calls one it lost (its processes may still run; `rm` removes them and all it had)."""
    if record.state in (State.RUNNING, State.PAUSED, State.RESTARTING) and not lifecycle.monitor_alive(record):
        why = (f"its monitor (pid {record.monitor.get('pid')}) died, so nothing records how it ends; its "
               "processes may still run: `labcore rm` removes them and everything it had")
        try:
            record = lifecycle.transition(record.id, "die", exit_code=255, finished=time.time(), error=why)
        except InvalidTransition:
            record = lifecycle.load(record.id)        # the monitor recorded the exit just now
    return record


def wait(container_id: str, timeout: float | None = None) -> Record:
    """Until the container has exited; polls the record, faster at first (most commands are short)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        record = refresh(lifecycle.load(container_id))
        if record.state in (State.EXITED, State.CREATED, State.DEAD):
            return record
        if deadline is not None and time.monotonic() > deadline:
            raise LabError(f"container {container_id[:12]} still running after {timeout} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def wait_for(container_id: str, condition: str = "not-running") -> int:
    """The exit code once Docker's wait ``condition`` holds: "not-running" (a created container counts),
    "next-exit" (sent before start: the run about to begin) or "removed" (--rm: the exit, then the removal).

    The waiter holds a shared lock on the container's ``waiters`` file while it waits: a --rm container's
    monitor removes the container only once every waiter has read the exit code (flock(2))."""
    import fcntl
    try:
        waiters = open(paths.containers_dir() / container_id / "waiters", "a")
    except FileNotFoundError:
        raise NotFound(f"No such container: {container_id}") from None
    with waiters:
        fcntl.flock(waiters, fcntl.LOCK_SH)
        return _poll_exit(container_id, condition, release=lambda: fcntl.flock(waiters, fcntl.LOCK_UN))


def _poll_exit(container_id: str, condition: str, release) -> int:
    code, pause = None, 0.001
    while True:
        try:
            record = refresh(lifecycle.load(container_id))
        except NotFound:
            if code is not None:
                return code
            raise LabError(f"container {container_id[:12]} was removed before its exit code was read")
        exited = record.state in (State.EXITED, State.RESTARTING, State.DEAD)
        if exited and code is None:
            code = record.exit_code
            release()                                 # read: the monitor may remove it now
        if exited and condition != "removed":
            return record.exit_code
        if record.state is State.CREATED and condition == "not-running":
            return record.exit_code
        if exited and condition == "removed" and not record.config.get("spec", {}).get("rm"):
            time.sleep(0.02)                          # nobody will remove it but a client: keep waiting
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def logs(container_id: str, follow: bool = False, tail: int | None = None, since: float = 0,
         until: float = 0, timestamps: bool = False) -> Iterator[tuple[int, bytes]]:
    """(stream, line) as the container wrote them: 1 stdout, 2 stderr; `docker logs` --tail, --since,
    --until, -t. With follow, until the container exits.

    The file is opened once and read through that descriptor: `docker run --rm`, and the docker SDK's
    ``run(remove=True)``, remove the container while a client may still be reading its output, and an open
    file outlives its name (unlink(2))."""
    try:
        log = open(paths.containers_dir() / container_id / LOG, "rb")
    except FileNotFoundError:
        return                                        # it never started: no output yet
    if follow and until and until < time.time():
        follow = False
    with log:
        pending: dict = {}
        past = list(jsonfile.lines(jsonfile.read_entries(log), final=not follow, pending=pending))
        entries = iter(jsonfile.select(past, tail, since, until))
        if follow:
            entries = _chain(entries, jsonfile.lines(read_until_exit(log, container_id), pending=pending))
        for entry in entries:
            if until and entry.time > until * 1e9:
                return
            stamp = (jsonfile.timestamp(entry.time) + " ").encode() if timestamps else b""
            yield entry.stream, stamp + entry.data


def _chain(first, then):
    yield from first
    yield from then


def read_until_exit(log, container_id: str, stop=None) -> Iterator[jsonfile.Entry]:
    for batch in _batches(log, container_id, stop):
        yield from batch


def attach(container_id: str, past: bool = False, follow: bool = True, stop=None) -> Iterator[tuple[int, bytes]]:
    """`docker attach`: the output from now on (with ``past``, from the start: `docker run` attaches before
    it starts); without ``follow``, only what is there already. ``stop`` (a threading.Event) ends it early:
    the client detached. "Now" is the call, not the first read: the log of a running container is opened
    here, before the daemon answers 101 and the client starts typing."""
    path = paths.containers_dir() / container_id / LOG
    log = None
    with contextlib.suppress(FileNotFoundError):
        log = open(path, "rb")
        if not past:
            log.seek(0, os.SEEK_END)
    return _attached(log, path, container_id, follow, stop)


def _attached(log, path, container_id: str, follow: bool, stop) -> Iterator[tuple[int, bytes]]:
    while log is None and follow:                     # not started yet: `docker run` attaches first
        if gone_or_exited(container_id) or (stop is not None and stop.is_set()):
            return                                    # it ran before, or was removed before it ran
        with contextlib.suppress(FileNotFoundError):
            log = open(path, "rb")
        time.sleep(0 if log else 0.005)
    if log is None:
        return
    with log:
        batches = _batches(log, container_id, stop) if follow else [list(jsonfile.read_entries(log))]
        for batch in batches:
            for entry in jsonfile.reads(batch):       # one frame per read(2) of the container's output
                yield entry.stream, entry.data


def _batches(log, container_id: str, stop) -> Iterator[list]:
    """What the log holds from its position on, read again and again until the container exits (or ``stop``).
    The state is read *before* the file: the monitor writes all output before it records the exit, so once
    a read of the state says "exited" (or the container is gone), the read after it gets everything.
    The pause starts at 1 ms and doubles to 10 ms, as ``wait``'s: most commands of a lesson end at once, and
    `docker run`'s answer should not wait out a pause that began just before the exit."""
    pause = 0.001
    while True:
        finished = gone_or_exited(container_id)
        yield list(jsonfile.read_entries(log))
        if finished or (stop is not None and stop.is_set()):
            return
        time.sleep(pause)
        pause = min(pause * 2, 0.01)


def gone_or_exited(container_id: str) -> bool:
    try:
        return refresh(lifecycle.load(container_id)).state in (State.EXITED, State.RESTARTING, State.DEAD)
    except NotFound:
        return True


def write_stdin(container_id: str):
    """The container's stdin for writing (attach with stdin=1), or None when it was created without -i."""
    try:
        return os.open(paths.containers_dir() / container_id / STDIN, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None


# --- signals and removal ----------------------------------------------------------------------------------

def kill(container_id: str, signum: int = signal.SIGKILL) -> None:
    """Signal pid 1 from the host. SIGKILL cannot be refused, so Docker waits for the exit before it answers:
    `docker kill` then `docker inspect` never shows a container still running."""
    record = refresh(lifecycle.load(container_id))
    lifecycle.check("kill", record.state, container_id)
    if signum == signal.SIGKILL:
        mark_stopped(container_id)                # `docker kill`; another signal is a message, not a stop
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signum)
    if signum == signal.SIGKILL:
        wait(container_id, timeout=30)


def mark_stopped(container_id: str) -> None:
    """The user stopped it: no restart policy brings it back (Docker's HasBeenManuallyStopped)."""
    with contextlib.suppress(FileNotFoundError):
        (paths.containers_dir() / container_id / monitor.STOPPED).touch()


def stop(container_id: str, timeout: float | None = None) -> Record:
    """`docker stop`: the stop signal (SIGTERM unless the container says otherwise), then SIGKILL after
    ``timeout`` s (default: the container's StopTimeout, else 10). pid 1 ignores a signal it has no handler
    for (pid_namespaces(7)), which is why `docker stop` on `sleep` takes the full ten seconds."""
    record = refresh(lifecycle.load(container_id))
    config = lifecycle.requested(container_id).get("Config", {})
    if timeout is None:
        timeout = config.get("StopTimeout") if config.get("StopTimeout") is not None else 10
    mark_stopped(container_id)
    if record.state is State.RESTARTING:
        return wait(container_id)                 # the monitor sees the mark and records the stop
    if record.state is State.PAUSED:
        unpause(container_id)
    if record.state not in (State.RUNNING, State.PAUSED):
        return record
    from labcore.runtime.spec import parse_signal
    with contextlib.suppress(InvalidTransition):
        kill(container_id, parse_signal(config.get("StopSignal") or "SIGTERM"))
    try:
        return wait(container_id, max(timeout, 0))
    except LabError:
        with contextlib.suppress(InvalidTransition):
            kill(container_id, signal.SIGKILL)
        return wait(container_id)


def restart(container_id: str, timeout: float | None = None) -> Record:
    """`docker restart`: stop, then start again; the container keeps its files (its upperdir)."""
    stop(container_id, timeout)
    return start(container_id)


def remove(container_id: str, force: bool = False) -> None:
    """Undo what the journal holds for the container, then remove its directory."""
    record = refresh(lifecycle.load(container_id))
    if force and record.state in (State.RUNNING, State.PAUSED, State.RESTARTING):
        mark_stopped(container_id)
        if record.state is State.PAUSED:
            unpause(container_id)
        if record.state is not State.RESTARTING:
            with contextlib.suppress(InvalidTransition):
                kill(container_id)
        record = wait(container_id)
    lifecycle.check("remove", record.state, container_id)
    directory = str(record.directory)
    ledger = journal.Journal()
    # Its files; and when it is dead, everything its monitor made for it and could not undo: pid 1 and the
    # shim, the port proxies, the veth, the cgroup (journal entries are owned by the process that made them,
    # and the monitor's thread of each container tags its own: journal.acting_for).
    dead = record.monitor if record.state is State.DEAD else None
    mine = [e for e in ledger.entries() if str(e.args.get("path", "")).startswith(directory)
            or (dead and e.owner == dead)]
    if dead:                                      # and the dead monitor's own: its socket, its process
        itself = {"pid": dead.get("pid"), "start": dead.get("start")}
        mine = [e for e in ledger.entries() if e.owner == itself] + mine
    with spawn_lock() if dead else contextlib.nullcontext():     # no monitor binds the socket meanwhile
        failures = ledger.undo_many(mine)
    if failures:
        raise LabError(f"could not remove container {container_id[:12]}: " + "; ".join(failures),
                       fix="run `labcore cleanup`")
    journal.undo_rmtree(directory)


def rename(container_id: str, name: str) -> None:
    name = name.lstrip("/")
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", name):      # the rule labcore.runtime.spec applies at create
        raise BadInput(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    check_name_free(name)
    lifecycle.rename(container_id, name)


# --- pause, update: the container's cgroup ----------------------------------------------------------------

def cgroup_of(container_id: str):
    """The container's own cgroup, when it has one (labcore makes one only for a container with limits)."""
    from labcore.kernel.cgroups import Group, open_manager
    manager = open_manager()
    name = f"labcore/labcore-{container_id}"
    group = Group(name, manager.hierarchy_dirs(name))
    return (manager, group) if group.path.is_dir() else (manager, None)


def pause(container_id: str) -> None:
    """`docker pause`: the freezer stops every task of the container where it stands (cgroup-v1/freezer,
    cgroup.freeze on v2). A container without a cgroup of its own is stopped with SIGSTOP instead, sent to
    every process of its pid namespace until no new one appears (a stopped process cannot fork)."""
    set_paused(container_id, True)


def unpause(container_id: str) -> None:
    set_paused(container_id, False)


def set_paused(container_id: str, paused: bool) -> None:
    action = "pause" if paused else "unpause"
    record = refresh(lifecycle.load(container_id))
    lifecycle.check(action, record.state, container_id)
    manager, group = cgroup_of(container_id)
    if group is not None:
        manager.freeze(group, paused)
    else:
        _signal_all(record.pid, signal.SIGSTOP if paused else signal.SIGCONT)
    lifecycle.transition(container_id, action)


def processes(pid1: int) -> list[int]:
    """Every process of the container, as the host numbers them: those in pid 1's pid namespace (the same
    /proc/PID/ns/pid link), or, for a `--pid host` container, which shares the host's, pid 1's descendants."""
    try:
        namespace = procfs.ns_link("pid", pid1)
    except OSError:
        return []
    if namespace == procfs.ns_link("pid"):
        return descendants(pid1)
    found = []
    for pid in procfs.pids():
        with contextlib.suppress(OSError):
            if procfs.ns_link("pid", pid) == namespace:
                found.append(pid)
    return found


def descendants(pid: int) -> list[int]:
    """pid and its children's children..., from the parent pid in /proc/PID/stat (field 4, proc(5))."""
    parents = {}
    for entry in procfs.pids():
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[entry] = procfs.ppid(entry)
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return sorted(found) if pid in parents else []


def _signal_all(pid1: int, signum: int) -> None:
    done: set[int] = set()
    while pending := set(processes(pid1)) - done:
        for pid in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        done |= pending


def update(container_id: str, changes: dict) -> list[str]:
    """`docker update`: new limits into the running container's cgroup, a new restart policy; the stored
    HostConfig says so too. A container created without limits has no cgroup to write into: refused."""
    from labcore.kernel.cgroups.limits import parse_run_limits
    record = refresh(lifecycle.load(container_id))
    stored = lifecycle.requested(container_id)
    current = stored.get("HostConfig", {})
    merged = {**current, **{k: v for k, v in changes.items() if v is not None}}
    wanted = limits_from_host_config(merged)
    limits = parse_run_limits(**wanted)
    if record.state in (State.RUNNING, State.PAUSED) and wanted != limits_from_host_config(current):
        manager, group = cgroup_of(container_id)
        if group is None:
            raise InvalidTransition(f"container {container_id[:12]} was started without a cgroup (it had no "
                                    "limits), so there is nothing to update", fix="stop it, update, start it")
        manager.apply(group, limits)
    lifecycle.save_requested(container_id, {**stored, "HostConfig": merged})
    spec = record.config.get("spec", {})
    record.config["spec"] = {**spec, "limits": wanted}
    with lifecycle.locked(container_id):
        fresh = lifecycle.load(container_id)
        fresh.config["spec"] = {**fresh.config.get("spec", {}), "limits": wanted}
        fresh.save()
    return []


# --- what the client asked for: Docker's hostconfig.json ---------------------------------------------------



# --- exec -------------------------------------------------------------------------------------------------

def exec_create(container_id: str, cmd: list[str], env=(), workdir=None, user=None, tty: bool = False,
                stdin: bool = False, detach_keys: str | None = None) -> str:
    record = refresh(lifecycle.load(container_id))
    lifecycle.check("exec", record.state, container_id)
    exec_id = secrets.token_hex(32)
    _save_exec(exec_id, {"container": container_id, "cmd": list(cmd), "env": list(env), "workdir": workdir,
                         "user": user, "tty": tty, "stdin": stdin, "detach_keys": detach_keys,
                         "running": False, "exit_code": None})
    return exec_id


def exec_start(exec_id: str, interactive: bool = False) -> Iterator[tuple[int, bytes]]:
    """Run the exec's command in the container's namespaces; yield its output as it comes, record its exit
    code. ``interactive`` (`labcore exec -i`, in-process only) gives the command this process's own stdin,
    stdout and stderr instead of pipes: nothing is yielded, the output is already where the user sees it."""
    session = ExecSession(exec_id, inherit=interactive)
    return session.output()


class ExecSession:
    """One `docker exec` run: checked and started at once (so a refusal is an HTTP answer, before labd
    upgrades the connection), its output read as it comes, its input written by whoever attached."""

    def __init__(self, exec_id: str, inherit: bool = False, console: tuple = ()):
        import threading
        self.exec_id, self.state = exec_id, exec_inspect(exec_id)
        self.inherit, self.console, self.child = inherit, console, None
        self.started = threading.Event()          # what the client types waits for the process
        if self.state["running"] or self.state["exit_code"] is not None:
            raise InvalidTransition(f"Exec command {exec_id} has already run")
        self.record = refresh(lifecycle.load(self.state["container"]))
        if self.record.state is not State.RUNNING:
            raise InvalidTransition(f"Container {self.record.id} is not running")

    def start(self) -> None:
        from labcore.runtime import container
        inherit, console, record = self.inherit, self.console, self.record
        self.input = None
        stdin = None
        if self.state.get("stdin") and not self.state.get("tty") and not inherit:
            stdin, self.input = os.pipe()
        mode = "inherit" if inherit else "tty" if self.state.get("tty") else "capture"
        self.stdio = container.Stdio(mode, interactive=inherit, stdin=stdin)
        try:
            self.child = container.exec_in(record, self.state, self.stdio)
        finally:
            if stdin is not None:
                os.close(stdin)
        if mode == "tty":
            self.input = os.dup(self.stdio._parent_ends[0])
            self.stdio.resize(*(console or (0, 0)))
        _save_exec(self.exec_id, {**self.state, "running": True, "pid": self.child.pid})
        self.started.set()

    def output(self) -> Iterator[tuple[int, bytes]]:
        """(stream, data) as the command writes; the exit code is recorded when it ends (or the reader
        leaves: the generator's close)."""
        import queue
        import threading
        if self.child is None:
            self.start()
        chunks: queue.Queue = queue.Queue()
        pump = threading.Thread(target=self._pump, args=(chunks,), daemon=True)
        pump.start()
        try:
            while (item := chunks.get()) is not None:
                yield item
        finally:
            pump.join()
            self.finish()

    def _pump(self, chunks) -> None:
        try:
            self.stdio.pump(sink=lambda stream, data: chunks.put((stream, data)))
        finally:
            chunks.put(None)

    input = None

    def write(self, data: bytes) -> None:
        self.started.wait(10)
        if self.input is not None:
            with contextlib.suppress(OSError):
                os.write(self.input, data)

    def close_input(self) -> None:
        self.started.wait(10)
        if self.input is not None:
            with contextlib.suppress(OSError):
                os.close(self.input)
            self.input = None

    def finish(self) -> None:
        try:
            self.child.recv()                         # an error joining the namespaces arrives here...
        except EOFError:
            pass                                      # ...and silence means the command ran
        except LabError:
            pass                                      # it could not join: its exit code (127) says so
        finally:
            self.close_input()
            code = self.child.wait()
            self.stdio.__exit__()
            _save_exec(self.exec_id, {**self.state, "running": False, "exit_code": code})


def exec_inspect(exec_id: str) -> dict:
    import json
    if not exec_id.isalnum():
        raise NotFound(f"No such exec instance: {exec_id}")          # and no path made of it
    for path in paths.containers_dir().glob(f"*/exec/{exec_id}.json"):
        return json.loads(path.read_text())
    raise NotFound(f"No such exec instance: {exec_id}")


def _save_exec(exec_id: str, state: dict) -> None:
    """An exec's record lives in its container's directory: removing the container forgets its execs."""
    import json
    directory = paths.containers_dir() / state["container"] / "exec"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{exec_id}.json").write_text(json.dumps(state))


# --- what the daemon reports --------------------------------------------------------------------------------

def containers(everything: bool = False) -> list[Record]:
    records = [refresh(record) for record in lifecycle.all_records()]
    return records if everything else [r for r in records if r.state in (State.RUNNING, State.PAUSED)]


def find(ref: str) -> Record:
    return refresh(lifecycle.find(ref))


def images():
    from labcore.image.oci import Store
    return Store().list()


def image(ref: str):
    from labcore.runtime.container import find_image
    return find_image(ref)


def pull(ref: str):
    from labcore.image import registry
    return registry.pull(ref)


def home():
    return paths.home()


def architecture() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def cgroup_version() -> str:
    from labcore.kernel.cgroups import detect
    return "2" if detect().kind == "v2" else "1"


def limits_from_host_config(host: dict) -> dict:
    """Docker's HostConfig resource fields as `labcore run`'s flag values."""
    limits = {}
    for field, flag in (("Memory", "memory"), ("CpuShares", "cpu_shares"), ("PidsLimit", "pids_limit")):
        if host.get(field) and host[field] > 0:
            limits[flag] = str(host[field])
    if host.get("MemorySwap") and host["MemorySwap"] > 0:          # -1: unlimited swap, labcore's default
        limits["memory_swap"] = str(host["MemorySwap"])
    if host.get("NanoCpus"):
        limits["cpus"] = str(host["NanoCpus"] / 1e9)
    if host.get("MemorySwappiness") is not None and host["MemorySwappiness"] >= 0:   # -1: the default
        limits["memory_swappiness"] = str(host["MemorySwappiness"])
    for field, flag in (("BlkioDeviceReadBps", "device_read_bps"), ("BlkioDeviceWriteBps", "device_write_bps")):
        if host.get(field):
            limits[flag] = [f"{device['Path']}:{device['Rate']}" for device in host[field]]
    if host.get("DeviceCgroupRules"):
        limits["device_cgroup_rule"] = list(host["DeviceCgroupRules"])
    return limits


# --- top, stats, prune ------------------------------------------------------------------------------------

def top(container_id: str, ps_args: str = "-ef") -> dict:
    """`docker top`: the host's ps(1), run with the client's arguments, keeping the rows of the container's
    processes (daemon/top_unix.go does the same): the container's pids are read from /proc."""
    import shlex
    import subprocess
    record = refresh(lifecycle.load(container_id))
    if record.state not in (State.RUNNING, State.PAUSED):
        raise InvalidTransition(f"Container {container_id} is not running")
    pids = set(processes(record.pid))
    result = subprocess.run(["ps", *shlex.split(ps_args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BadInput(f"ps {ps_args}: {result.stderr.strip()}", fix="pass arguments ps(1) accepts, e.g. -ef")
    lines = result.stdout.splitlines()
    titles = lines[0].split()
    if "PID" not in titles:
        raise BadInput(f"ps {ps_args}: its output has no PID column", fix="keep the PID column, e.g. -eo pid,comm")
    column = titles.index("PID")
    rows = [line.split(None, len(titles) - 1) for line in lines[1:]]
    return {"Titles": titles, "Processes": [row for row in rows if len(row) > column and row[column].isdigit()
                                            and int(row[column]) in pids]}


def stats(container_id: str) -> dict:
    """One sample of `docker stats`, Docker's shape: from the container's cgroup when it has one, else
    summed over its processes from /proc/PID/stat and status (proc(5))."""
    from labcore.runtime.jsonfile import timestamp
    record = refresh(lifecycle.load(container_id))
    running = record.state in (State.RUNNING, State.PAUSED)
    pids = processes(record.pid) if running else []
    manager, group = cgroup_of(container_id) if running else (None, None)
    usage = manager.stats(group) if group is not None else None
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_ns = (usage.cpu_usage_us * 1000 if usage and usage.cpu_usage_us is not None
              else sum(_proc_cpu_ticks(pid) for pid in pids) * 10**9 // ticks)
    memory = usage.memory_current if usage and usage.memory_current is not None else sum(map(_proc_rss, pids))
    cpu = {"cpu_usage": {"total_usage": cpu_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
           "system_cpu_usage": _system_cpu_ns(), "online_cpus": os.cpu_count(), "throttling_data": {
               "periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    return {"read": timestamp(time.time_ns()), "preread": "0001-01-01T00:00:00Z", "name": f"/{record.name}",
            "id": record.id, "pids_stats": {"current": len(pids)}, "cpu_stats": cpu,
            "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
            "memory_stats": {"usage": memory or 0, "limit": _memory_limit(record)},
            "blkio_stats": {"io_service_bytes_recursive": None}, "num_procs": 0, "storage_stats": {},
            "networks": _networks(record.pid) if running else {}}


def _proc_cpu_ticks(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = procfs.stat(pid)
        return int(fields[11]) + int(fields[12])               # utime + stime (proc(5), fields 14, 15)
    return 0


def _proc_rss(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(procfs.status_field("VmRSS", pid).split()[0]) * 1024
    return 0


def _system_cpu_ns() -> int:
    return procfs.system_cpu_ticks() * 10**9 // os.sysconf("SC_CLK_TCK")


def _memory_limit(record: Record) -> int:
    limit = record.config.get("spec", {}).get("limits", {}).get("memory")
    if limit:
        from labcore.kernel.cgroups.limits import parse_memory
        return parse_memory(limit)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _networks(pid: int) -> dict:
    """The container's interfaces and their counters, from /proc/PID/net/dev (its network namespace's)."""
    found = {}
    with contextlib.suppress(OSError):
        for name, values in procfs.net_dev(pid).items():
            if name != "lo":
                found[name] = {"rx_bytes": values[0], "rx_packets": values[1], "rx_errors": values[2],
                                       "rx_dropped": values[3], "tx_bytes": values[8], "tx_packets": values[9],
                                       "tx_errors": values[10], "tx_dropped": values[11]}
    return found


def prune() -> tuple[list[str], int]:
    """`docker container prune`: remove every stopped container; the ids, and the bytes their files held."""
    removed, reclaimed = [], 0
    for record in containers(everything=True):
        if record.state in (State.EXITED, State.CREATED, State.DEAD):
            size = disk_usage(record.directory / "upper")
            with contextlib.suppress(LabError):
                remove(record.id)
                removed.append(record.id)
                reclaimed += size
    return removed, reclaimed


def disk_usage(path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
