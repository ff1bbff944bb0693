"""Children: results and errors come back to the parent; exit codes read as a shell reports them."""
import os
import signal

import pytest

from labcore.errors import BadInput
from labcore.process import Child, run_in_child


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
