"""`python -m labcore.runtime.monitord`: the one monitor process of a state directory.

``labcore.runtime.engine.start`` connects to its socket, ``<state dir>/labcore-monitor.sock``, and spawns it
when nobody answers: a fresh interpreter (not a fork of labd), so that it holds only the runtime's modules.
It forks once more and the first process exits, so it is nobody's child (init's, as a daemon is); it is in a
session of its own with its stdio on /dev/null. Then, as containerd-shim does at its start, it becomes a child
subreaper (prctl(2) PR_SET_CHILD_SUBREAPER): each container's pid 1, left by its shim, is its child.

Each request is a connection, Channel's pickles (``labcore.kernel.process``):

    ("start", id, options)   a thread that runs ``labcore.runtime.monitor.run`` for that container; the
                             answer ("ok", owner) once pid 1 runs, or ("error", exception)
    ("hold",)                keep the monitor while this connection stays open (labd holds one)
    ("leave",)               `labcore cleanup`: leave now if nothing keeps the monitor

It lives while any thread does (a container's, a connection's); when none is left it takes the spawn lock,
so that no client is half-way through connecting, and exits. Orphans it did not ask for (a `--pid host`
container's, a daemon's grandchild) come to it too: those it reaps once they have been zombies for a tick.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import sys
import threading
import time

from labcore import paths
from labcore.kernel import journal, procfs
from labcore.kernel.process import Channel, become_subreaper
from labcore.runtime import engine, lifecycle, monitor
from labcore.runtime.spec import Spec

TICK = 1.0                  # seconds between looks for strays


class Monitor:
    def __init__(self, listener: socket.socket):
        self.listener = listener
        self.forking = threading.Lock()        # held around each create+start (monitor.run_once says why)
        self.threads: dict[threading.Thread, str | None] = {}     # live threads, and the container of each
        self.guard = threading.Lock()
        self.wake_read, self.wake_write = os.pipe()
        self.zombies: set[int] = set()           # our zombie children at the last look
        self.scanned = time.monotonic()
        self.channels: dict[threading.Thread, Channel] = {}  # each thread's connection

    def serve(self) -> None:
        """Accept until nothing keeps the monitor, then leave (``leave_if_idle``)."""
        while True:
            ready, _, _ = select.select([self.listener, self.wake_read], [], [], TICK)
            if self.wake_read in ready:
                os.read(self.wake_read, 512)
            if self.listener in ready:
                self.accept()
            if time.monotonic() - self.scanned >= TICK:   # a tick apart, however often a client wakes us
                self.reap_strays()
                self.scanned = time.monotonic()
            if not self.busy():
                self.leave_if_idle()

    def accept(self) -> bool:
        try:
            connection, _ = self.listener.accept()     # the listener does not block: False when none waits
        except (BlockingIOError, InterruptedError):
            return False
        connection.setblocking(True)
        self.begin(self.answer, Channel(connection))
        return True

    def begin(self, target, channel: Channel) -> None:
        thread = threading.Thread(target=self.finish_after, args=(target, channel), daemon=True)
        with self.guard:
            self.threads[thread], self.channels[thread] = None, channel
        thread.start()

    def finish_after(self, target, channel: Channel) -> None:
        try:
            target(channel)
        finally:
            with self.guard:
                self.threads.pop(threading.current_thread(), None)
                self.channels.pop(threading.current_thread(), None)
            os.write(self.wake_write, b".")            # the main loop looks again whether to stay

    def busy(self) -> bool:
        with self.guard:
            return bool(self.threads)

    def answer(self, channel: Channel) -> None:
        """One connection: a start (this thread then monitors the container), a hold, a leave."""
        try:
            request = channel.recv()
        except (EOFError, OSError):
            channel.close()
            return
        if request[0] == "start":
            self.monitor_container(channel, request[1], request[2] if len(request) > 2 else None)
        elif request[0] == "hold":
            channel.send(("ok", journal.owner_of()))
            with contextlib.suppress(EOFError, OSError):
                channel.recv()                         # until the holder closes (or dies: the kernel closes)
            channel.close()
        elif request[0] == "leave":
            channel.send(self.leaving())
            channel.close()
        else:
            channel.send(("error", ValueError(f"the monitor knows no request {request[0]!r}")))
            channel.close()

    def monitor_container(self, channel: Channel, container_id: str, options: dict | None) -> None:
        with self.guard:
            self.threads[threading.current_thread()] = container_id
        try:
            record = lifecycle.load(container_id)
            spec = Spec(**record.config["spec"])
            if options is None:
                options = lifecycle.requested(container_id).get("HostConfig", {})
        except BaseException as err:
            with contextlib.suppress(OSError):
                channel.send(("error", err))
            channel.close()
            return
        monitor.run(spec, channel, options, engine.remove, self.forking)

    def leaving(self) -> tuple:
        """For `labcore cleanup`: ("leaving", pid) when only threads of containers that have exited remain
        (they end in a moment: waited for here), else ("busy", how many hold the monitor)."""
        with self.guard:
            others = {t: c for t, c in self.threads.items() if t is not threading.current_thread()}
            channels = dict(self.channels)
        if any(running(c) if c else not closed(channels.get(t)) for t, c in others.items()):
            return ("busy", len(others))
        for thread in others:
            thread.join(5)
        return ("leaving", os.getpid())

    def leave_if_idle(self) -> None:
        """Exit, holding the spawn lock: no client connects meanwhile, and one that connected before is
        in the backlog, accepted here. The lock goes with the process."""
        lock = os.open(paths.home(), os.O_RDONLY | os.O_DIRECTORY)      # engine.spawn_lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        if self.accept():
            os.close(lock)
            return
        close_socket(self.listener)
        os._exit(0)

    def reap_strays(self) -> None:
        """Reap zombie children no thread will: zombies at the last look too, a tick ago, and no pid 1 of
        ours (a thread reaps its own with waitpid(2) of that pid, once the container's output has ended; a
        program or a step's child the monitor ran is reaped by whoever ran it, waiting for it already or
        within moments, which the tick leaves time for). Never while a thread creates and starts a container:
        its shim, and its pid 1 until ADOPTED has it, are that thread's to reap however long a busy machine
        makes the steps between (a stray reaped there leaves the thread's waitpid(2) an ECHILD). Both looks
        must fall outside a start, so a shim reaped by its own thread in between is never taken."""
        if not self.forking.acquire(blocking=False):
            self.zombies = set()
            return
        try:
            self.reap_zombies_seen_twice()
        finally:
            self.forking.release()

    def reap_zombies_seen_twice(self) -> None:
        try:
            exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)   # looks, reaps nothing
        except ChildProcessError:
            exited = None
        if exited is None:
            self.zombies = set()
            return                                     # no child has exited: nothing to look for
        me = os.getpid()
        now = set()
        for pid in procfs.pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if procfs.state(pid) == "Z" and procfs.ppid(pid) == me and pid not in monitor.ADOPTED:
                    now.add(pid)
        for pid in now & self.zombies:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        self.zombies = now - self.zombies


def closed(channel: Channel | None) -> bool:
    """A client that has gone (its end closed, nothing left unread: recv(2) would read end-of-file), before
    its thread saw it: a holder that let go, a client that connected and left. One with a request unread, or
    waiting for an answer, is not."""
    if channel is None:
        return False
    try:
        return channel.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def running(container_id: str) -> bool:
    try:
        return lifecycle.load(container_id).state in (lifecycle.State.RUNNING, lifecycle.State.PAUSED,
                                                      lifecycle.State.RESTARTING, lifecycle.State.CREATED)
    except Exception:                                  # noqa: BLE001 - removed, or unreadable: not running
        return False


def take_lifetime_lock() -> int | None:
    """flock(2) on ``containers/``, from before the socket is bound until exit: one monitor per state directory."""
    paths.containers_dir().mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.containers_dir(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def bind_socket() -> socket.socket:
    """The socket, journaled before it is made, owned by this process (so it is no orphan while it serves);
    a record left by a monitor that was killed names the same path: this one takes its place."""
    path = str(paths.home() / monitor.SOCKET)
    ledger = journal.Journal()
    for entry in ledger.entries():                     # a killed monitor's: we hold the lifetime lock, it is gone
        if not journal.owner_alive(entry.owner) and ((entry.undo == "unlink" and entry.args.get("path") == path)
                                                     or (entry.kind, entry.name) == ("process", "labcore-monitor")):
            ledger.forget(entry)
    me = journal.owner_of()
    ledger.record("process", "labcore-monitor", "kill", owner=me, pid=me["pid"], start=me["start"])
    ledger.record("file", path, "unlink", owner=me, path=path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)                                # a dead monitor's; binding needs the name free
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)                         # 0600: only the state directory's owner asks
    try:
        with monitor.socket_address() as address:
            listener.bind(address)
    finally:
        os.umask(old_mask)
    listener.listen(socket.SOMAXCONN)                 # labd's threads may all start at once (labd's backlog)
    listener.setblocking(False)                        # the main loop select(2)s, then accepts
    return listener


def close_socket(listener: socket.socket) -> None:
    """Unlink the socket and forget this process's records: it leaves nothing behind."""
    path = str(paths.home() / monitor.SOCKET)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener.close()
    ledger = journal.Journal()
    me = journal.owner_of()
    for entry in reversed(ledger.entries()):          # the process's own record last: while it is there,
        if entry.owner == me and entry.kind in ("process", "file") and entry.name in ("labcore-monitor", path):
            ledger.forget(entry)                       # `labcore cleanup` waits for this process to be gone


def detach() -> None:
    """Fork once more and let the first process go (the spawner reaps it at once): this one belongs to no
    one. Its stdio is already /dev/null and its session its own (the spawner's Popen gave them)."""
    if os.fork() != 0:
        os._exit(0)


def main(argv: list[str]) -> None:
    ready = int(argv[0]) if argv else None
    detach()
    try:
        lifetime = take_lifetime_lock()
        if lifetime is None:
            raise RuntimeError("another monitor holds the lifetime lock of this state directory")
        become_subreaper()
        listener = bind_socket()
    except BaseException as err:
        if ready is not None:
            os.write(ready, f"{type(err).__name__}: {err}".encode())
        os._exit(1)
    if ready is not None:
        os.write(ready, b"1")
        os.close(ready)
    Monitor(listener).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
