"""Where a container's fds 0, 1 and 2 go, and how its output reaches whoever asked.

    inherit   the caller's own fds: `labcore run` in a terminal; stdin is /dev/null unless -i, as with Docker
    capture   pipes the parent reads: a Jupyter kernel's fd 1 is not the notebook, and labd logs them
    tty       a pseudo-terminal made inside the container (-t); its master is passed to the parent over a
              Unix socket (SCM_RIGHTS), as runc's "console socket" does, and the parent relays it

The child's ends are closed in the parent right after the fork, so that the parent's reads end exactly when
the last writer inside the container is gone (pipe(7)).
"""
from __future__ import annotations

import fcntl
import os
import select
import selectors
import socket
import termios

from labcore.errors import BadInput, LabError
from labcore.kernel.process import Channel


def attach_stdio(fds: tuple[int, int, int]) -> None:
    """Make ``fds`` the process's 0, 1 and 2."""
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)

def open_terminal() -> int:
    """A pty from the container's own /dev/pts, as its stdio and controlling terminal; returns the master.

    Made inside, after pivot_root: a pty of the host's devpts has no name in the container's newinstance
    devpts, so `tty` would say "not a tty" (runc, libcontainer/console_linux.go, does the same). Everything
    it uses is imported at the top of this module: after pivot_root the host's Python library is gone."""
    master, terminal = os.openpty()                 # /dev/ptmx -> pts/ptmx: the container's instance
    os.setsid()                                     # a session of its own, so the pty can be its terminal
    fcntl.ioctl(terminal, termios.TIOCSCTTY, 0)
    attach_stdio((terminal,) * 3)
    os.close(terminal)
    return master

def send_fd(channel: Channel, fd: int) -> None:
    """Pass an open file descriptor to the other end of the channel (SCM_RIGHTS, unix(7))."""
    socket.send_fds(channel.sock, [b"F"], [fd])

def receive_fd(channel: Channel) -> int:
    _, fds, _, _ = socket.recv_fds(channel.sock, 1, 1)
    if not fds:
        raise LabError("pid 1 did not send its terminal", fix="run without -t to see its error")
    return fds[0]


class Stdio:
    """Where the container's stdin, stdout and stderr go.

    inherit   the caller's own fds (the CLI); stdin is /dev/null unless interactive, as with `docker run`
    capture   pipes the parent reads to the end: in a Jupyter kernel fd 1 is not the notebook
    tty       a pseudo-terminal (-t); the parent copies between it and the user's terminal

    ``stdin``: an fd to give the container as its input instead of /dev/null (capture mode: a detached
    container's `-i`, labd's exec with stdin), or, in tty mode, an fd whose bytes are relayed to the terminal.
    ``outputs``: in inherit mode, the stdout and stderr to give instead of this process's 1 and 2 (those of a
    `labcore run` that handed its run to labd, ``labcore.cli.handoff``).
    """

    def __init__(self, mode: str = "capture", interactive: bool = False, stdin: int | None = None,
                 outputs: tuple[int, int] = (1, 2)):
        if mode not in ("inherit", "capture", "tty"):
            raise BadInput(f"unknown stdio mode {mode!r}", fix="use inherit, capture or tty")
        self.mode, self.interactive, self.stdin = mode, interactive, stdin
        self._child_ends: list[int] = []
        self._parent_ends: list[int] = []
        null = os.open(os.devnull, os.O_RDWR)
        if mode == "capture":
            (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
            self.child_fds = (null if stdin is None else stdin, out_w, err_w)
            self._child_ends, self._parent_ends = [out_w, err_w], [out_r, err_r]
        elif mode == "tty":
            self.child_fds = (null, null, null)        # until pid 1 has its terminal (take_terminal)
        else:
            self.child_fds = (0 if interactive else null, *outputs)
        self._child_ends.append(null)

    def after_fork(self) -> None:
        """Close the child's ends here, so that the parent's reads end when the container's writers do."""
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []

    def take_terminal(self, master: int) -> None:
        self._parent_ends = [master]
        if os.isatty(1):                            # the container's window is the size of ours
            termios.tcsetwinsize(master, termios.tcgetwinsize(1))

    def pump(self, sink=None) -> tuple[bytes | None, bytes | None]:
        """Until the container closes its ends: (stdout, stderr) in capture mode, (None, None) otherwise.

        With ``sink``, each chunk goes to ``sink(stream, data)`` as it arrives (1 stdout, 2 stderr, as in
        Docker's log frames) instead of being collected: how a detached container's log is written."""
        if self.mode == "capture":
            return _read_all(*self._parent_ends, sink=sink)
        if self.mode == "tty" and (sink or self.stdin is not None):
            _relay_terminal_to(self._parent_ends[0], sink, self.stdin)
        elif self.mode == "tty":
            _relay_terminal(self._parent_ends[0], self.interactive)
        return None, None

    def resize(self, rows: int, columns: int) -> None:
        """The terminal's window size (TIOCSWINSZ, tty_ioctl(4)): what `docker run -t` sends as ConsoleSize."""
        if self.mode == "tty" and self._parent_ends and rows and columns:
            termios.tcsetwinsize(self._parent_ends[0], (rows, columns))

    def __enter__(self) -> "Stdio":
        return self

    def __exit__(self, *exc) -> None:
        for fd in self._child_ends + self._parent_ends:
            os.close(fd)
        self._child_ends = self._parent_ends = []


def _read_all(*fds: int, sink=None) -> tuple[bytes, ...]:
    chunks = {fd: [] for fd in fds}
    streams = {fd: number for number, fd in enumerate(fds, start=1)}
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                data = os.read(key.fd, 65536)
                if data and sink:
                    sink(streams[key.fd], data)
                elif data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fd)
    return tuple(b"".join(chunks[fd]) for fd in fds)


def _relay_terminal(master: int, interactive: bool) -> None:
    """Copy the pty to our stdout, and our stdin to the pty, with our terminal in raw mode (as docker -it)."""
    import tty
    saved = termios.tcgetattr(0) if interactive and os.isatty(0) else None
    sources = [master] + ([0] if interactive else [])
    try:
        if saved:
            tty.setraw(0)
        while True:
            ready = select.select(sources, [], [])[0]
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:    # EIO: the last holder of the other end, the container, has gone
                    data = b""
                if not data:
                    return
                _write_all(1, data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    _write_all(master, data)
                else:
                    sources.remove(0)
    finally:
        if saved:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _relay_terminal_to(master: int, sink, source: int | None) -> None:
    """A detached container's terminal: its output to ``sink(1, data)`` (a terminal has one stream), the
    bytes of ``source`` (a FIFO labd's attach writes into) to its input."""
    sources = [master] + ([source] if source is not None else [])
    while True:
        for fd in select.select(sources, [], [])[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:        # EIO on the master: the last holder of the other end has gone
                data = b""
            if fd == master and not data:
                return
            if fd == master:
                sink(1, data) if sink else _write_all(1, data)
            elif data:
                _write_all(master, data)
            else:
                sources.remove(fd)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]
