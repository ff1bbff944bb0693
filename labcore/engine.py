"""The engine: containers that outlive the process that asked for them.

`labcore run --rm busybox echo hi` lives and dies with the command. `docker run -d` does not: the client
asks, the daemon starts the container and answers at once, and the container keeps running after the client
— even after the daemon — has gone. Docker gets there with one small process per container, the
containerd-shim: it is the container's parent, holds its output, and records how it ended.

The lab's engine does the same with a *monitor*, forked twice so that it belongs to no one (init adopts it)
and put in a session of its own so no terminal's hang-up reaches it:

    create   check the spec and the image, write the record (state "created")
    start    fork the monitor; it runs the container (``labcore.container``), reports "running", then
             copies the container's stdout and stderr into ``output.log`` as Docker's log frames, and at
             the exit writes the exit code into the record (state "exited")
    wait     read the record until it says "exited"
    logs     read ``output.log``; with follow, keep reading until the container has exited
    kill     signal pid 1 from the host; stop = SIGTERM, a grace period, then SIGKILL (`docker stop`)
    exec     a new process that joins pid 1's namespaces with setns(2), as `docker exec` does
    remove   undo what the journal holds for the container; remove its directory

Every step reads and writes the state on disk (``labcore.lifecycle``), so `labcore ps` in another terminal,
the daemon, or a restarted notebook kernel all see the same containers.
"""
from __future__ import annotations

import contextlib
import os
import platform
import secrets
import signal
import struct
import time
from typing import Iterator

from labcore import journal, lifecycle, paths
from labcore.container import Spec
from labcore.errors import InvalidTransition, LabError, NotFound
from labcore.lifecycle import Record, State
from labcore.process import Channel, close_inherited_fds

LOG = "output.log"
_FRAME = struct.Struct(">BxxxI")       # Docker's log frame header: stream, 3 zero bytes, payload length


# --- create and start -------------------------------------------------------------------------------------

def create(spec: Spec) -> Record:
    """Refuse bad input and a missing image first, then write the record: nothing runs yet."""
    from labcore import container
    plan = container.plan_for(spec)
    spec.name = spec.name or f"labcore_{spec.id[:12]}"
    check_name_free(spec.name)
    record = Record(spec.id, spec.name, spec.image, config=container.describe(spec, plan))
    record.save()
    journal.Journal().record("directory", str(record.directory), "rmtree", path=str(record.directory))
    return record


def check_name_free(name: str) -> None:
    for other in lifecycle.all_records():
        if other.name == name:
            raise InvalidTransition(f'Conflict. The container name "/{name}" is already in use by container '
                                    f'"{other.id}". You have to remove (or rename) that container to be able '
                                    f'to reuse that name.')


def start(container_id: str) -> Record:
    """Fork the monitor and return once pid 1 runs the command (or raise why it could not)."""
    record = lifecycle.load(container_id)
    lifecycle.check("start", record.state, container_id)
    spec = Spec(**record.config["spec"])
    import socket
    ours, theirs = socket.socketpair()
    middle = os.fork()
    if middle == 0:                                   # the middle child: fork the monitor, then leave
        close_inherited_fds(keep=(theirs.fileno(),))  # labd's other requests' fds are not the monitor's
        if os.fork() == 0:
            _monitor(spec, Channel(theirs))
        os._exit(0)
    theirs.close()
    os.waitpid(middle, 0)                             # reap the middle child at once: no zombie
    channel = Channel(ours)
    try:
        kind, value = channel.recv()
    finally:
        channel.close()
    if kind == "error":
        raise value
    hand_over_directory(container_id, owner=value)
    return lifecycle.load(container_id)


def hand_over_directory(container_id: str, owner: dict) -> None:
    """The container's directory now belongs to its monitor: it is no orphan while the monitor lives."""
    directory = str(paths.containers_dir() / container_id)
    ledger = journal.Journal()
    for entry in ledger.entries():
        if entry.args.get("path") == directory:
            ledger.set_owner(entry, owner)


def _monitor(spec: Spec, channel: Channel) -> None:
    """The container's parent for its whole life. It never prints and leaves by os._exit."""
    from labcore import container
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)                             # hold no terminal or pipe of the caller's
    try:
        with journal.Scope() as scope, container.Stdio("capture") as stdio, \
                open(paths.containers_dir() / spec.id / LOG, "ab", buffering=0) as log:
            box = container.create(spec, scope, stdio)
            container.start(box)
            channel.send(("ok", journal.owner_of()))
            channel.close()
            stdio.pump(sink=lambda stream, data: log.write(_FRAME.pack(stream, len(data)) + data))
            container.wait(box)
            scope.release()                           # the files stay until `rm`, as Docker keeps them
        if spec.rm:
            remove(spec.id)
    except BaseException as err:
        with contextlib.suppress(OSError):
            channel.send(("error", err))
    os._exit(0)


# --- watching ---------------------------------------------------------------------------------------------

def refresh(record: Record) -> Record:
    """A record that says running while its monitor is gone will never be updated: it has exited."""
    if record.state in (State.RUNNING, State.PAUSED) and not lifecycle.monitor_alive(record):
        try:
            record = lifecycle.transition(record.id, "exit", exit_code=255, finished=time.time())
        except InvalidTransition:
            record = lifecycle.load(record.id)        # the monitor recorded the exit just now
    return record


def wait(container_id: str, timeout: float | None = None) -> Record:
    """Until the container has exited; polls the record, faster at first (most commands are short)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        record = refresh(lifecycle.load(container_id))
        if record.state in (State.EXITED, State.CREATED):
            return record
        if deadline is not None and time.monotonic() > deadline:
            raise LabError(f"container {container_id[:12]} still running after {timeout} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def wait_for(container_id: str, condition: str = "not-running") -> int:
    """The exit code once Docker's wait ``condition`` holds: "not-running" (a created container counts),
    "next-exit" (sent before start: the run about to begin) or "removed" (--rm: the exit, then the removal).

    With "removed" the code is read on the way, between the exit and the monitor's removal, so the polls
    stay short (2 ms); an exit missed between two polls is reported, never guessed."""
    code, pause = None, 0.001
    while True:
        try:
            record = refresh(lifecycle.load(container_id))
        except NotFound:
            if condition == "removed" and code is not None:
                return code
            raise LabError(f"container {container_id[:12]} was removed before its exit code was read")
        if record.state is State.EXITED and condition != "removed":
            return record.exit_code
        if record.state is State.EXITED:
            code = record.exit_code
        if record.state is State.CREATED and condition == "not-running":
            return record.exit_code
        time.sleep(pause)
        pause = min(pause * 2, 0.002 if condition == "removed" else 0.02)


def logs(container_id: str, follow: bool = False) -> Iterator[tuple[int, bytes]]:
    """(stream, data) as the container wrote them: 1 stdout, 2 stderr. With follow, until it exits.

    The file is opened once and read through that descriptor: `docker run --rm`, and the docker SDK's
    ``run(remove=True)``, remove the container while a client may still be reading its output, and an open
    file outlives its name (unlink(2))."""
    try:
        log = open(paths.containers_dir() / container_id / LOG, "rb")
    except FileNotFoundError:
        return                                        # it never started: no output yet
    with log:
        yield from read_until_exit(log, container_id) if follow else read_frames(log)


def read_until_exit(log, container_id: str) -> Iterator[tuple[int, bytes]]:
    """The state is read *before* the file: the monitor writes all output before it records the exit, so
    once a read of the state says "exited" (or the container is gone), the read after it gets everything."""
    while True:
        finished = gone_or_exited(container_id)
        yield from read_frames(log)
        if finished:
            return
        time.sleep(0.01)


def read_frames(log) -> Iterator[tuple[int, bytes]]:
    """The whole frames from the file's position on; a frame the monitor is still writing is left for later."""
    while len(header := log.read(_FRAME.size)) == _FRAME.size:
        stream, size = _FRAME.unpack(header)
        data = log.read(size)
        if len(data) < size:
            log.seek(-(_FRAME.size + len(data)), os.SEEK_CUR)
            return
        yield stream, data


def attach(container_id: str) -> Iterator[tuple[int, bytes]]:
    """`docker run` attaches before it starts: the output of the run about to begin, until the exit.

    The log is opened as soon as the monitor has made it, and read as ``logs(follow=True)`` reads it."""
    path = paths.containers_dir() / container_id / LOG
    while not path.exists():
        if gone_or_exited(container_id):
            return                                    # it ran before, or was removed before it ran
        time.sleep(0.005)
    with open(path, "rb") as log:
        yield from read_until_exit(log, container_id)


def gone_or_exited(container_id: str) -> bool:
    try:
        return refresh(lifecycle.load(container_id)).state is State.EXITED
    except NotFound:
        return True


# --- signals and removal ----------------------------------------------------------------------------------

def kill(container_id: str, signum: int = signal.SIGKILL) -> None:
    record = refresh(lifecycle.load(container_id))
    lifecycle.check("kill", record.state, container_id)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signum)


def stop(container_id: str, timeout: float = 10) -> Record:
    """`docker stop`: SIGTERM, then SIGKILL after ``timeout`` s. pid 1 ignores a SIGTERM it has no handler
    for (pid_namespaces(7)), which is why `docker stop` on `sleep` takes the full ten seconds."""
    kill(container_id, signal.SIGTERM)
    try:
        return wait(container_id, timeout)
    except LabError:
        kill(container_id, signal.SIGKILL)
        return wait(container_id)


def remove(container_id: str, force: bool = False) -> None:
    """Undo what the journal holds for the container, then remove its directory."""
    record = refresh(lifecycle.load(container_id))
    if record.state is State.RUNNING and force:
        kill(container_id)
        record = wait(container_id)
    lifecycle.check("remove", record.state, container_id)
    directory = str(record.directory)
    ledger = journal.Journal()
    mine = [e for e in ledger.entries() if str(e.args.get("path", "")).startswith(directory)]
    failures = ledger.undo_many(mine)
    if failures:
        raise LabError(f"could not remove container {container_id[:12]}: " + "; ".join(failures),
                       fix="run `labcore cleanup`")
    journal.undo_rmtree(directory)


# --- exec -------------------------------------------------------------------------------------------------

def exec_create(container_id: str, cmd: list[str], env=(), workdir=None, user=None) -> str:
    record = refresh(lifecycle.load(container_id))
    lifecycle.check("exec", record.state, container_id)
    exec_id = secrets.token_hex(32)
    _save_exec(exec_id, {"container": container_id, "cmd": list(cmd), "env": list(env), "workdir": workdir,
                         "user": user, "running": False, "exit_code": None})
    return exec_id


def exec_start(exec_id: str, interactive: bool = False) -> Iterator[tuple[int, bytes]]:
    """Run the exec's command in the container's namespaces; yield its output, record its exit code.

    ``interactive`` (`labcore exec -i`, in-process only) gives the command this process's own stdin, stdout
    and stderr instead of pipes: nothing is yielded, the output is already where the user sees it."""
    from labcore import container
    state = exec_inspect(exec_id)
    record = lifecycle.load(state["container"])
    with container.Stdio("inherit", interactive=True) if interactive else container.Stdio("capture") as stdio:
        child = container.exec_in(record, state, stdio)
        _save_exec(exec_id, {**state, "running": True, "pid": child.pid})
        chunks: list[tuple[int, bytes]] = []
        stdio.pump(sink=lambda stream, data: chunks.append((stream, data)))
        try:
            child.recv()                              # an error joining the namespaces arrives here...
        except EOFError:
            pass                                      # ...and silence means the command ran
        finally:
            code = child.wait()
            _save_exec(exec_id, {**state, "running": False, "exit_code": code})
    yield from chunks


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
    from labcore.images import Store
    return Store().list()


def image(ref: str):
    from labcore.container import find_image
    return find_image(ref)


def pull(ref: str):
    from labcore import registry
    return registry.pull(ref)


def home():
    return paths.home()


def architecture() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def cgroup_version() -> str:
    from labcore.cgroups import detect
    return "2" if detect().kind == "v2" else "1"


def limits_from_host_config(host: dict) -> dict:
    """Docker's HostConfig resource fields as `labcore run`'s flag values."""
    limits = {}
    if host.get("Memory"):
        limits["memory"] = str(host["Memory"])
    if host.get("NanoCpus"):
        limits["cpus"] = str(host["NanoCpus"] / 1e9)
    if host.get("CpuShares"):
        limits["cpu_shares"] = str(host["CpuShares"])
    if host.get("PidsLimit"):
        limits["pids_limit"] = str(host["PidsLimit"])
    return limits
