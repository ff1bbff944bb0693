"""Children: where every isolating step happens, so the process that asked never changes.

unshare(2) and setns(2) change the *calling* process. If a notebook kernel called them itself it would end
up inside the container it was trying to show. So each step forks a child (fork(2), as docker's runc does
with clone(2)), the child changes itself, reads its evidence back from /proc, and sends it to its parent over
a socket pair; the parent stays on the host and can compare.

Two rules for code that runs in a child (man 2 fork, "async-signal-safe" in a threaded parent such as a
Jupyter kernel): it never prints (a Jupyter kernel's sys.stdout talks to a thread that the child does not
have), and it leaves with os._exit, never by returning into the parent's code.

Next: ``labcore.lessons.namespaces`` uses ``Child`` for one step per namespace type (notebook 03).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import threading
from typing import Any, Callable

from labcore.kernel import syscalls


MAX_MESSAGE = 1 << 24                   # 16 MiB: the channel's messages are steps, pids and exceptions


class Channel:
    """Length-prefixed pickles over one end of a socketpair: parent and child talk in steps."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def send(self, message: Any) -> None:
        data = pickle.dumps(message)
        self.sock.sendall(struct.pack("!I", len(data)) + data)

    def recv(self) -> Any:
        header = self._read(4)
        if header is None:
            raise EOFError("the other side closed the channel")
        (size,) = struct.unpack("!I", header)
        if size > MAX_MESSAGE:           # not a Channel speaking (an HTTP client at the monitor's socket, say):
            raise ConnectionError(f"not a channel message (a length of {size} bytes)")   # refuse, do not wait
        return pickle.loads(self._read(size) or b"")

    def _read(self, size: int) -> bytes | None:
        chunks, missing = [], size
        while missing:
            chunk = self.sock.recv(missing)
            if not chunk:
                return None
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()


class _ChildEnd(Channel):
    """The child's end: every message is tagged, so the parent can tell a result from an error."""

    def send(self, message: Any) -> None:
        super().send(("ok", message))

    def send_error(self, error: BaseException) -> None:
        super().send(("error", error))


class Child:
    """A forked child running ``fn(channel)``; the parent holds the other end of the channel.

    The child may ``channel.send`` any number of messages; its return value is sent last. An exception
    in the child is sent instead and re-raised by the parent's ``recv``.
    """

    def __init__(self, fn: Callable[[Channel], Any], keep: tuple[int, ...] = ()):
        parent_end, child_end = socket.socketpair()
        self.pid = os.fork()
        if self.pid == 0:                                        # in the child
            close_inherited_fds(keep=(child_end.fileno(), *keep))
            _run_and_exit(fn, _ChildEnd(child_end))
        child_end.close()
        self.channel = Channel(parent_end)
        self.status: int | None = None

    def send(self, message: Any) -> None:
        self.channel.send(message)

    def recv(self, timeout: float | None = None) -> Any:
        """The child's next message; a child's exception is re-raised here, in the parent.

        With ``timeout`` (seconds), raise TimeoutError when nothing has arrived by then.
        """
        self.channel.sock.settimeout(timeout)
        kind, value = self.channel.recv()
        if kind == "error":
            raise value
        return value

    def wait(self) -> int:
        """Reap the child; return its exit code (128+N when killed by signal N, as a shell reports it)."""
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = exit_code(status)
            self.channel.close()
        return self.status


_adopting = threading.Lock()
_windows = 0                # threads of this process between a shim's go-ahead and its exit
_for_life = False           # a subreaper from start to exit (the engine's monitor process)


@contextlib.contextmanager
def adopting_orphans():
    """prctl(PR_SET_CHILD_SUBREAPER) for the block: an orphaned descendant, a pid namespace's init too, is
    re-parented to this process instead of init (prctl(2)), and stays its child after the block. Only while
    a shim may leave its pid 1: the lab's daemons, forked twice to belong to no one (the engine's monitor,
    the user-mode network's holder), must still go to init. Counted, so that threads starting containers
    at once share one window. A process that is a subreaper for life (``become_subreaper``) stays one."""
    global _windows
    with _adopting:
        _windows += 1
        if _windows == 1 and not _for_life:
            syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    try:
        yield
    finally:
        with _adopting:
            _windows -= 1
            if _windows == 0 and not _for_life:
                syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 0)


def become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER, 1) until this process exits, as containerd-shim sets it at its start
    (containerd: pkg/shim, ``subreaper.SetSubreaper(1)``): every orphan below it comes back to it, which
    must then reap what it did not fork (``labcore.runtime.monitord``)."""
    global _for_life
    with _adopting:
        _for_life = True
        syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)


def close_inherited_fds(keep: tuple[int, ...] = ()) -> None:
    """In a fresh child, close every fd above 2 but ``keep``, as subprocess's close_fds does for exec.

    A fork copies all of the parent's fds, including those another thread has just opened for *its* child:
    a channel, the pipes of a container's output. A copy held here would keep that other parent from ever
    seeing EOF (pipe(7)), and its container from ever being seen to start or end."""
    low = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def exit_code(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _run_and_exit(fn: Callable[[Channel], Any], channel: _ChildEnd) -> None:
    code = 0
    try:
        channel.send(fn(channel))
    except BaseException as err:                              # anything, even KeyboardInterrupt
        import traceback                # only when a child fails: the start path goes without the module
        err.child_traceback = traceback.format_exc()
        try:
            channel.send_error(err)
        except Exception:
            code = 1
    finally:
        os._exit(code)


# Debian puts nft(8) in /usr/sbin, which is not on an ordinary user's PATH (/etc/profile); a user may still
# run it, inside namespaces of their own.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_program(name: str) -> str | None:
    """The path of program ``name``: on PATH, else in the sbin directories an ordinary user's PATH lacks."""
    import shutil
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def tied(argv: list[str]) -> list[str]:
    """``argv`` made to die with this process: util-linux's setpriv sets PR_SET_PDEATHSIG (prctl(2)) to
    SIGKILL and execs it. For the short helpers that make or remove objects (nft(8), ipcrm(1)): killed with
    us, a helper can never finish making an object after `labcore cleanup` has removed its record, nor delete
    one that another process has taken over since. (Not for what must outlive us: a proxy, a container.) It narrows
    the window to setpriv's first instants: a parent killed before setpriv's prctl leaves it running."""
    import shutil
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)


def spawn(argv: list[str], pass_fds: tuple[int, ...] = (), stderr=None):
    """Start a program that outlives this step (a port proxy, slirp4netns): in a session of its own, so a ^C at
    the terminal is for labcore, which stops it itself; reaped by a thread of its own whoever kills it (the
    journal's undo, `labcore cleanup`), so no zombie stays behind."""
    import subprocess
    import threading
    process = subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=stderr if stderr is not None else subprocess.DEVNULL,
                               start_new_session=True)
    threading.Thread(target=process.wait, name=f"labcore-reap-{process.pid}", daemon=True).start()
    return process


# How long a service we started may take to answer: a bound on a hang, not a goal. A service that exits is
# seen at once (poll), so a long bound costs nothing; a loaded CI host or a class's VM needs seconds to start
# a Python with its imports.
READY_SECONDS = 60


def wait_until_ready(process, ready: Callable[[], bool], what: str, seconds: float = READY_SECONDS,
                     explain: Callable[[], str] = lambda: "") -> None:
    """Poll ``ready()`` until it holds, for a service we started (labd, a registry, dockerd); a service
    that exits first fails at once with its own words (``explain``), instead of after the whole wait."""
    import time
    from labcore.errors import LabError
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LabError(f"{what} exited with status {process.returncode}: {explain()}")
        if ready():
            return
        time.sleep(0.02)
    raise LabError(f"{what} did not answer within {seconds} s: {explain()}")


def run_in_child(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Run ``fn(*args, **kwargs)`` in a forked child and return its result (or raise its error)."""
    child = Child(lambda channel: fn(*args, **kwargs))
    try:
        return child.recv()
    finally:
        child.wait()
