"""The monitor: one process per state directory, the parent of every detached container, as containerd is.

Docker keeps one containerd-shim per container (about 13 MiB of RSS each); containerd itself is one process per
daemon. The lab keeps one process in all, ``labcore.runtime.monitord``: a child subreaper (prctl(2)
PR_SET_CHILD_SUBREAPER), so each pid 1 whose shim leaves becomes its child, and each container is one *thread*
of it, running ``run`` below. A thread costs a stack and a few objects; a process of its own cost a whole
Python. For each run of the container (a restart policy may ask for more):

    run_once     create and start the container (``labcore.runtime.container``: the start sequence), report
                 "running" to whoever asked for the start, copy its stdout and stderr into ``container.log`` a
                 line at a time (``labcore.runtime.jsonfile``), and at the exit reap pid 1 in this thread
                 (waitpid(2) of that pid only) and record the exit code (state "exited")
    restart      Docker's restart policies: no, on-failure[:N], always, unless-stopped; never after a stop
    --rm         remove the container once every waiter has read its exit code

The price of one process: when it dies, every container it watched goes "dead" (``labcore.runtime.engine``),
as all of a daemon's containers would without live-restore. It never prints. The records it writes are
``labcore.runtime.lifecycle``'s; everything a client asks of a container is ``labcore.runtime.engine``'s.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Callable

from labcore import paths
from labcore.errors import InvalidTransition
from labcore.kernel import journal
from labcore.kernel.process import Channel
from labcore.runtime import jsonfile, lifecycle
from labcore.runtime.spec import Spec

LOG = "container.log"
STDIN = "stdin"                        # the FIFO that is a `-i` container's fd 0
STOPPED = "stopped"                    # present: the user stopped it, and no restart policy brings it back
# The monitor's socket, in the state directory. Two locks, flock(2) on directories that outlive every monitor
# (a lock file would stay behind in the state directory, and one removed while another process holds it open
# locks nothing the next one sees): the state directory itself, held by a client to connect or to spawn the
# monitor when none answers, and by the monitor to leave; ``containers/``, held by the monitor for its life.
SOCKET = "labcore-monitor.sock"


@contextlib.contextmanager
def socket_address():
    """The socket's address: its path, or, where that is longer than sun_path holds (108 bytes, unix(7)),
    the same file reached through /proc/self/fd/N, N the state directory (a LABCORE_HOME may be long)."""
    path = str(paths.home() / SOCKET)
    if len(path.encode()) < 100:
        yield path
        return
    directory = os.open(paths.home(), os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{SOCKET}"
    finally:
        os.close(directory)


def take_over_directory(container_id: str) -> None:
    """The monitor's first step: the container's directory belongs to it from now on, so it is no orphan
    while the monitor lives, whatever becomes of the process that asked for the start."""
    directory = str(paths.containers_dir() / container_id)
    ledger = journal.Journal()
    for entry in ledger.entries():
        if entry.args.get("path") == directory:
            ledger.set_owner(entry, journal.owner_of())


def run(spec: Spec, channel: Channel, options: dict, remove: Callable[[str], None], forking) -> None:
    """One container's thread of the monitor, for its whole life (and its restarts); errors go to the record
    (and to the client, if it still waits). ``remove``: how the engine removes a container (`--rm`), given so
    that this module imports no engine. ``forking``: the lock held around create and start (``run_once``)."""
    with journal.acting_for(spec.id):
        try:
            take_over_directory(spec.id)
            runs = 0
            while True:
                code = run_once(spec, channel if runs == 0 else None, options, forking)
                runs += 1
                if not restart_wanted(spec.id, code, runs):
                    break
                time.sleep(min(0.1 * 2 ** (runs - 1), 1.0))   # Docker's back-off starts at 100 ms and doubles
                if stopped_by_user(spec.id):
                    lifecycle.transition(spec.id, "stop")
                    break
            if spec.rm:
                remove_when_waiters_done(spec.id, remove)
        except BaseException as err:
            with contextlib.suppress(OSError):
                channel.send(("error", err))
            record_failure(spec.id, err)
        finally:
            with contextlib.suppress(OSError):
                channel.close()


def record_failure(container_id: str, err: BaseException) -> None:
    """The monitor failed after the start: say so in the record (`inspect` shows State.Error), as an exit."""
    import traceback
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    with contextlib.suppress(Exception):
        lifecycle.transition(container_id, "exit", exit_code=255, finished=time.time(), error=text)


ADOPTED: set[int] = set()              # pid 1 of each container a thread will reap: no stray to reap for it


def run_once(spec: Spec, channel: Channel | None, options: dict, forking) -> int:
    """One run: create and start the container, copy its output to the log, reap pid 1, record its exit.

    Only one thread forks at a time (``forking`` is held around create and start, the steps that fork).
    fork(2) copies only the calling thread, with every fd and every lock the others hold at that instant
    (fork(2), NOTES): a shim forked while another thread is half-way through its own start sequence would
    carry that sequence's channel and pipe ends until it closes them (``close_inherited_fds``), and would
    find any lock that thread held (a journal write's, a buffered file's) held forever. One start sequence at
    a time leaves each fork a quiet process to copy: the other threads only read pipes and write logs."""
    from labcore.runtime import container
    directory = paths.containers_dir() / spec.id
    stdin = open_stdin(directory) if spec.interactive else None
    try:
        with journal.Scope() as scope, container.Stdio("tty" if spec.tty else "capture", stdin=stdin) as stdio, \
                jsonfile.Writer(directory / LOG) as log:
            box = None
            try:
                with forking:
                    box = container.create(spec, scope, stdio)
                    ADOPTED.add(box.pid)
                    stdio.resize(*(options.get("ConsoleSize") or (0, 0)))
                    container.start(box)
                if channel is not None:
                    channel.send(("ok", journal.owner_of()))
                    channel.close()
                stdio.pump(sink=log.write)
                log.flush()                           # before the exit is recorded: a reader that sees
                code = container.wait(box)            # "exited" finds every line already written
            except BaseException:
                if box is not None:
                    container.stop_if_running(box)    # pid 1 is this thread's to reap, whatever failed
                raise
            finally:
                if box is not None:
                    ADOPTED.discard(box.pid)
            scope.release()                           # the files stay until `rm`, as Docker keeps them
    finally:
        if stdin is not None:
            os.close(stdin)
    return code


def open_stdin(directory) -> int:
    """The container's fd 0 for `-i`: a FIFO, opened read-write so that it never reads end-of-file while the
    container lives (Docker keeps an -i container's stdin open until it exits), and attach can write to it."""
    path = directory / STDIN
    if not path.exists():
        os.mkfifo(path, 0o600)
    return os.open(path, os.O_RDWR)


def restart_wanted(container_id: str, code: int, runs: int) -> bool:
    """Docker's restart policies (docs: "Start containers automatically"): no, on-failure[:N], always,
    unless-stopped; never after `docker stop` or `kill`. A restart is recorded as state "restarting".
    The policy is read now, not at the start: `docker update --restart` changes it for a running container."""
    policy = lifecycle.requested(container_id).get("HostConfig", {}).get("RestartPolicy") or {}
    name, most = policy.get("Name") or "no", policy.get("MaximumRetryCount") or 0
    wanted = name in ("always", "unless-stopped") or (name == "on-failure" and code != 0
                                                      and (not most or runs <= most))
    if not wanted or stopped_by_user(container_id):
        return False
    with contextlib.suppress(InvalidTransition):
        lifecycle.transition(container_id, "restart")
        return True
    return False


def stopped_by_user(container_id: str) -> bool:
    return (paths.containers_dir() / container_id / STOPPED).exists()


def remove_when_waiters_done(container_id: str, remove: Callable[[str], None]) -> None:
    """--rm: remove, but only once every `wait` that came before has read the exit code (Docker's waiters are
    told before the removal). Each waiter holds a shared lock on ``waiters``; this takes it exclusively."""
    import fcntl
    with open(paths.containers_dir() / container_id / "waiters", "a") as waiters:
        fcntl.flock(waiters, fcntl.LOCK_EX)
        remove(container_id)
