"""`labcore run` handed to this user's labd: the container starts in the warm daemon, on this process's own
stdout and stderr.

The docker CLI is a client of dockerd: it parses the flags, then asks over the socket (create, attach, start,
wait), and the daemon, warm, does the work. `labcore run` with --host does the same (``labcore.cli.run``).
Without --host, when this user's labd answers on ``<state dir>/labd.sock``, it does less still, before it
has imported anything of the runtime or even argparse:

    client                                           labd (``labcore daemon``)
    POST /labcore/run, the arguments, NUL-separated  parses them as `labcore run` does (``serve_run``)
                                                     101 UPGRADED    (or 409: "run it yourself", below)
    one byte carrying fds 1 and 2 (SCM_RIGHTS)       the container runs with them as its stdout and stderr
    reads until the end                              "<exit code>\\n", and closes

Passing the fds themselves (unix(7), SCM_RIGHTS: the receiver gets new fds to the same open files) means the
container writes straight to this process's terminal or pipe, as it does without a daemon: nothing is copied,
and `labcore run ... | head` sees the same bytes in the same order. This process imports only the C modules
_socket and _struct: the whole `labcore run` is Python's start, one request, and the container (bench row g2).

labd answers 409 when the run means something else in the daemon than here: -i (its input is here), -t (the
terminal is here), -v (paths relative to here), `-e NAME` (the value is in this environment), -d (without
--host, a detached container belongs to this user's engine, not to labd's) and any argument it cannot parse
(`labcore run` then says what is wrong, in argparse's words). Then `labcore run` runs as without a daemon.

Ctrl-C here ends this process and closes the connection; labd sees the hang-up and kills the container
(``Hangup``), as `labcore run` without a daemon does on Ctrl-C. labd stopping (SIGTERM) does the same to every
run it still has (``stop_runs``), and waits for each to clean up after itself and tell its client the exit code.
"""
from __future__ import annotations

import os

ROUTE = "/labcore/run"


# --- the client: `labcore run` ---------------------------------------------------------------------------

def hand_off(argv: list[str]) -> int | None:
    """`labcore run ARGV...` in this user's labd: the container's exit code, or None when it runs here (no
    labd answers, $LABCORE_HOST names another daemon, or labd answers that it means something else there)."""
    import _socket      # the C module: `socket` imports enum for its constants, a millisecond of this path
    from labcore import paths
    if os.environ.get("LABCORE_HOST"):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(os.path.join(paths.home_dir(), "labd.sock"))
            body = "\0".join(argv).encode(errors="surrogateescape")
            sock.sendall(b"POST %s HTTP/1.1\r\nHost: labd\r\nConnection: Upgrade\r\nUpgrade: labcore-run\r\n"
                         b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s"
                         % (ROUTE.encode(), len(body), body))
            if not read_head(sock).startswith(b"HTTP/1.1 101 "):
                return None                 # nothing was started: the run goes on here
        except OSError:
            return None                     # no labd (a socket file left by one that died refuses connect)
        return exit_code_from(sock)
    except KeyboardInterrupt:
        return 130                          # closing the socket (finally) is what tells labd to kill it
    finally:
        sock.close()


def read_head(sock) -> bytes:
    """The answer's status line and headers, up to the blank line; nothing after it is read."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)             # a byte at a time: what follows the head is not ours to read
        if not byte:
            break
        head += byte
    return head


def exit_code_from(sock) -> int:
    """Send fds 1 and 2, then wait for the exit code labd writes when the container has ended."""
    import _socket
    import _struct
    sock.sendmsg([b"F"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _struct.pack("2i", 1, 2))])
    answer = b""
    while chunk := sock.recv(64):
        answer += chunk
    if not answer.strip().isdigit():
        os.write(2, b"labcore: labd closed the connection before the container ended (see labd's log)\n")
        return 125
    return int(answer)


# --- the daemon: labd's route -----------------------------------------------------------------------------

def routes() -> list:
    """The route `labcore daemon` adds to labd's (``labcore.api.routes.table``): it is the CLI's, so it lives here."""
    from labcore.api import labd
    return [labd.compile_route("POST", ROUTE, serve_run)]


def serve_run(request):
    """The arguments of a `labcore run`, parsed as the command parses them; the 101 (``labd.Handoff``) when the
    run means the same here as in the client, else 409 and the client runs it itself."""
    from labcore.api import labd
    from labcore.api.schema import ApiError
    from labcore.cli import run
    argv = request.body.decode(errors="surrogateescape").split("\0") if request.body else []
    args = parse_run(argv)
    if args is None or args.detach or not run.self_contained(spec := run.spec_from_args(args)):
        raise ApiError(409, "this run means something else in labd than in the client: run it there")
    return labd.Handoff(lambda connection: run_for(connection, spec))


def parse_run(argv: list[str]):
    """`labcore run ARGV...` parsed, or None where argparse would print something (an error, --help)."""
    try:
        return quiet_parser().parse_args(argv)
    except ValueError:
        return None


_parser = None


def quiet_parser():
    """`labcore run`'s parser, made once per labd, which says nothing: its refusals are the client's to print."""
    global _parser
    if _parser is None:
        _parser = make_quiet_parser()
    return _parser


def make_quiet_parser():
    import argparse
    from labcore.cli import run

    class Quiet(argparse.ArgumentParser):
        def _print_message(self, message, file=None):
            pass

        def exit(self, status=0, message=None):
            raise ValueError(message)

    parser = Quiet(prog="labcore run")
    run.configure(parser)
    return parser


def run_for(connection, spec) -> None:
    """The client's stdout and stderr, the container on them, the exit code back; errors in the client's words."""
    import socket
    from labcore.cli import run
    from labcore.errors import LabError
    _, fds, _, _ = socket.recv_fds(connection, 1, 2)
    if len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return                              # not our client: it hangs up, nothing was started
    hangup = Hangup(connection)
    try:
        try:
            code = run.run_here(spec, outputs=(fds[0], fds[1]), on_start=hangup.started)
        except LabError as err:
            os.write(fds[1], f"labcore: {err}\n".encode())
            code = 125                      # as `labcore run` exits when labcore itself refuses or fails
        finally:
            hangup.close()
            for fd in fds:
                os.close(fd)
        connection.sendall(b"%d\n" % code)
    finally:
        hangup.finish()                     # last: a stopping labd (stop_runs) exits once the client has its code


_runs: set = set()           # the Hangup of each run labd is doing


def stop_runs(seconds: float = 10) -> None:
    """labd is stopping: kill the container of every run it still has, and wait until each has cleaned up
    after itself (its scope: directory, cgroup, journal), so that nothing is left for `labcore cleanup`, and has
    sent its client the exit code (137, as `docker run` reports a SIGKILL)."""
    runs = list(_runs)
    for run in runs:
        run.hang_up()
    for run in runs:
        run.done.wait(seconds)


class Hangup:
    """Kill the container when the client goes away (its Ctrl-C), as `labcore run` without a daemon does.

    A thread waits until the connection is readable: the client sends nothing more, so that is its end.
    pid 1 is signalled through a pidfd (pidfd_open(2)), taken while it is surely not yet reaped: a pid
    alone could name another process by the time the signal goes. Where pidfd_open is refused (a kernel
    before 5.3, a seccomp profile without it), the pid, while the run has not reaped it."""

    def __init__(self, connection):
        import threading
        self.connection, self.pidfd, self.container, self.gone = connection, None, None, False
        self.lock = threading.Lock()
        self.done = threading.Event()       # set by finish, once the client has its exit code
        self.wake_read, self.wake_write = os.pipe()
        self.thread = threading.Thread(target=self._watch, name="labcore run hangup", daemon=True)
        self.thread.start()
        _runs.add(self)

    def started(self, container) -> None:
        with self.lock:
            self.container = container
            try:
                self.pidfd = os.pidfd_open(container.pid)
            except OSError:
                pass                            # ENOSYS, EPERM: _kill falls back to the pid
            if self.gone:
                self._kill()

    def _watch(self) -> None:
        import select
        readable, _, _ = select.select([self.connection, self.wake_read], [], [])
        if self.wake_read not in readable:
            self.hang_up()

    def hang_up(self) -> None:
        with self.lock:
            self.gone = True
            self._kill()

    def _kill(self) -> None:
        import contextlib
        import signal
        with contextlib.suppress(ProcessLookupError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            elif self.container is not None and self.container.exit_code is None:
                os.kill(self.container.pid, signal.SIGKILL)

    def close(self) -> None:
        os.write(self.wake_write, b"x")
        self.thread.join()
        with self.lock:
            for fd in (self.wake_read, self.wake_write, *([self.pidfd] if self.pidfd is not None else [])):
                os.close(fd)
            self.pidfd = self.container = None

    def finish(self) -> None:
        """The run is over and its client has the exit code: nothing of it is left for stop_runs to wait on."""
        _runs.discard(self)
        self.done.set()
