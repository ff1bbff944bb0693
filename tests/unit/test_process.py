"""Children: results and errors come back to the parent; exit codes read as a shell reports them."""
import os
import signal

import pytest

from labcore.errors import BadInput
from labcore.kernel.process import Channel, Child, run_in_child


def test_result_comes_back_from_a_different_process():
    assert run_in_child(os.getpid) != os.getpid()


def test_child_error_is_raised_in_the_parent_with_its_traceback():
    def fail():
        raise BadInput("no", fix="yes")
    with pytest.raises(BadInput) as raised:
        run_in_child(fail)
    assert "fail" in raised.value.child_traceback


def test_messages_go_both_ways():
    def echo(channel):
        return channel.recv() * 2
    child = Child(echo)
    child.send(21)
    assert child.recv() == 42
    assert child.wait() == 0


def test_killed_child_reports_128_plus_signal():
    child = Child(lambda channel: channel.recv())
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == 137


def test_child_can_send_progress_before_its_result():
    def count(channel):
        channel.send("first")
        channel.send("second")
        return "done"
    child = Child(count)
    assert [child.recv(), child.recv(), child.recv()] == ["first", "second", "done"]
    child.wait()


def test_a_tied_helper_dies_with_the_process_that_started_it():
    """process.tied: SIGKILL the parent of `sleep`, and the kernel kills the sleep too (PR_SET_PDEATHSIG)."""
    import shutil
    import subprocess
    import sys
    import time
    from labcore.kernel import process
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv (util-linux)")
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
                               "print(p.pid, flush=True); p.wait()", *process.tied(["sleep", "60"])],
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    while open(f"/proc/{child}/cmdline", "rb").read().split(b"\0")[0] != b"sleep":
        time.sleep(0.001)                             # setpriv has set the signal once it has become sleep
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        if open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
            break                                     # killed; waiting only for init to reap it
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{child}") or \
        open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_channel_refuses_what_is_no_channel_message_instead_of_waiting_for_a_gigabyte():
    """An HTTP client at the monitor's socket sends "GET ": read as a length, 1.2 GB. Refused at once."""
    import socket
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"GET /v1.45/containers/json HTTP/1.1\r\n\r\n")
        with pytest.raises(ConnectionError, match="not a channel message"):
            Channel(ours).recv()
