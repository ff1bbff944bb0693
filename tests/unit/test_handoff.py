"""`labcore run` handed to labd: which runs labd takes, how the client falls back, and the kill on hang-up."""
import contextlib
import os
import signal
import socket
import types

import pytest

from labcore.api import labd
from labcore.api.schema import ApiError
from labcore.cli import handoff


def request(*argv: str) -> labd.Request:
    return labd.Request("POST", handoff.ROUTE, {}, body="\0".join(argv).encode())


def test_a_run_that_means_the_same_in_labd_is_taken_parsed_as_labcore_run_parses_it():
    answer = handoff.serve_run(request("--rm", "--network", "none", "-e", "A=1", "busybox", "sh", "-c", "exit 3"))
    assert isinstance(answer, labd.Handoff)
    args = handoff.parse_run(["--rm", "--network", "none", "busybox", "ls", "--rm"])
    assert args.rm and args.network == "none" and args.command == ["ls", "--rm"]


@pytest.mark.parametrize("argv", [
    ["-t", "busybox", "sh"],                      # the terminal is the client's
    ["-i", "busybox", "cat"],                     # so is the input
    ["-d", "busybox", "sleep", "9"],              # without --host, the client's own engine keeps it
    ["-v", "/srv:/srv", "busybox", "ls"],         # a path of the client's
    ["-e", "HOME", "busybox", "env"],             # a value from the client's environment
    ["--bogus", "busybox"],                       # argparse's words are the client's to print
    ["--help"],
    [],
])
def test_any_other_run_is_left_to_the_client_with_409_before_anything_is_made(argv):
    with pytest.raises(ApiError) as refused:
        handoff.serve_run(request(*argv))
    assert refused.value.status == 409


def test_the_client_runs_it_itself_without_a_labd_or_with_another_daemon_named(monkeypatch, tmp_path):
    monkeypatch.setenv("LABCORE_HOME", str(tmp_path))
    assert handoff.hand_off(["busybox", "true"]) is None                 # no socket
    (tmp_path / "labd.sock").touch()
    assert handoff.hand_off(["busybox", "true"]) is None                 # a file, not a listening socket
    monkeypatch.setenv("LABCORE_HOST", "unix:///elsewhere.sock")
    assert handoff.hand_off(["busybox", "true"]) is None


def test_the_client_falls_back_when_labd_answers_anything_but_101(monkeypatch, tmp_path):
    monkeypatch.setenv("LABCORE_HOME", str(tmp_path))
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "labd.sock"))
        server.listen()
        pid = os.fork()
        if pid == 0:
            try:                                       # a stand-in labd: whatever happens, it never returns
                connection, _ = server.accept()        # into pytest (a forked copy would run the session on)
                connection.recv(4096)
                connection.sendall(b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}")
            finally:
                os._exit(0)
        try:
            assert handoff.hand_off(["-t", "busybox", "sh"]) is None
        finally:
            os.waitpid(pid, 0)


@pytest.fixture
def sleeper():
    """A child that sleeps until signalled, in for pid 1; killed and reaped afterwards whatever the test did."""
    pids = []

    def fork() -> int:
        pid = os.fork()
        if pid == 0:
            try:      # SIGTERM as by default: a CLI test before may have left labcore's exit-on-signal handler,
                signal.signal(signal.SIGTERM, signal.SIG_DFL)       # whose SystemExit would run pytest on here
                signal.pause()
            finally:
                os._exit(0)
        pids.append(pid)
        return pid
    yield fork
    for pid in pids:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_a_client_that_hangs_up_gets_its_container_killed(sleeper):
    pid = sleeper()                                    # first: a copy of the client's end would keep it open
    labd_end, client_end = socket.socketpair()
    hangup = handoff.Hangup(labd_end)
    hangup.started(types.SimpleNamespace(pid=pid, exit_code=None))
    client_end.close()                                 # the client's Ctrl-C
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    hangup.close()
    hangup.finish()
    labd_end.close()


def test_a_stopping_labd_waits_until_each_client_has_its_exit_code_not_only_until_the_run_closed():
    # A run closes its watch, then sends the code: labd must not exit in between (CI saw 125 for 137 once).
    import threading
    labd_end, client_end = socket.socketpair()
    hangup = handoff.Hangup(labd_end)
    hangup.close()                                     # the run has ended and closed its watch...
    stopping = threading.Thread(target=handoff.stop_runs, kwargs={"seconds": 30})
    stopping.start()
    stopping.join(0.2)
    assert stopping.is_alive()                         # ...but has not sent the code yet: labd waits
    hangup.finish()                                    # run_for's last step, after the code went out
    stopping.join(5)
    assert not stopping.is_alive()
    labd_end.close()
    client_end.close()


def test_a_run_that_ends_first_kills_nothing_even_when_the_client_leaves_afterwards(sleeper):
    pid = sleeper()
    labd_end, client_end = socket.socketpair()
    hangup = handoff.Hangup(labd_end)
    hangup.started(types.SimpleNamespace(pid=pid, exit_code=None))
    hangup.close()                                     # the run is over
    hangup.finish()
    client_end.close()
    assert os.waitpid(pid, os.WNOHANG) == (0, 0)       # still running: nobody signalled it
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    labd_end.close()


def test_a_client_gone_before_the_start_gets_the_container_killed_as_it_starts(sleeper):
    labd_end, client_end = socket.socketpair()
    client_end.close()
    hangup = handoff.Hangup(labd_end)
    hangup.thread.join()                               # it has seen the hang-up
    pid = sleeper()
    hangup.started(types.SimpleNamespace(pid=pid, exit_code=None))
    _, status = os.waitpid(pid, 0)
    assert os.WTERMSIG(status) == signal.SIGKILL
    hangup.close()
    hangup.finish()
    labd_end.close()


def test_without_pidfd_open_the_pid_of_a_run_not_yet_reaped_is_killed(sleeper, monkeypatch):
    """A kernel before 5.3, or a seccomp profile without pidfd_open: the pid, while the run has not reaped it."""
    def refused(pid):
        raise OSError(38, "Function not implemented")
    monkeypatch.setattr(os, "pidfd_open", refused)
    pid = sleeper()
    labd_end, client_end = socket.socketpair()
    hangup = handoff.Hangup(labd_end)
    hangup.started(types.SimpleNamespace(pid=pid, exit_code=None))
    client_end.close()
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    hangup.close()
    hangup.finish()
    labd_end.close()
