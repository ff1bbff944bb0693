"""labcore.lessons.exercises without the kernel: the verdict's points, lines and hint, what nbgrader reads,
and refusals on a host that forbids the step (the kernel checks themselves: tests/privileged/test_exercises.py)."""
import time
from types import SimpleNamespace

import pytest

from labcore.lessons import exercises, hosts
from labcore.lessons.exercises import NOT_WRITTEN, Check, Criterion

POD = hosts.Host(euid=1000, capable=False, userns_refused="EPERM", seccomp=True, container="Docker")


def verdict(*oks, raised=""):
    return Check("an exercise", [Criterion(f"line {i}", ok, "seen", f"fix {i}") for i, ok in enumerate(oks)],
                 points=2, raised=raised)


def test_points_are_the_share_of_lines_that_held():
    assert verdict(True, True).score() == 2 and verdict(True, True).passed
    assert verdict(True, False, True, False).score() == 1 and not verdict(True, False).passed
    assert verdict(False, False).score() == 0


def test_a_blank_answer_earns_nothing_whatever_held_without_it():
    blank = verdict(True, False, raised=NOT_WRITTEN)
    assert blank.score() == 0 and not blank.passed and "NotImplementedError" in str(blank)


def test_the_first_failed_line_gives_the_hint():
    text = str(verdict(True, False, False))
    assert text.splitlines()[0] == "✗ an exercise — 0.67/2 points"
    assert "  ✓ line 0: seen" in text and "  ✗ line 1: seen" in text
    assert text.splitlines()[-1] == "  hint: fix 1"


def test_nbgrader_reads_a_number_people_read_the_lines():
    from IPython.lib.pretty import pretty
    check = verdict(True, False)
    assert float(pretty(check)) == 1.0                 # text/plain: nbgrader's partial credit
    assert "✗ an exercise" in check._repr_html_() and "hint: fix 1" in check._repr_html_()


def test_attempt_turns_the_students_error_into_evidence():
    def blank():
        raise NotImplementedError()

    def wrong():
        raise PermissionError(1, "Operation not permitted")

    assert exercises.attempt(blank) == (None, NOT_WRITTEN)
    assert exercises.attempt(wrong)[1].startswith("PermissionError: [Errno 1]")
    assert exercises.attempt(lambda x: x + 1, 1) == (2, "")


@pytest.mark.parametrize("check", [exercises.check_user_namespace, exercises.check_hostname,
                                   exercises.check_overlay_mount, exercises.check_whiteout,
                                   exercises.check_pivot_root, exercises.check_read_only_root,
                                   exercises.check_root_propagation, exercises.check_drop_capability,
                                   exercises.check_shared_kernel, exercises.check_start_time,
                                   exercises.check_build_order])
def test_on_a_confined_host_an_isolating_exercise_is_refused_not_an_error(monkeypatch, check):
    monkeypatch.setattr(hosts, "current", lambda: POD)
    ran = []
    result = check(lambda *args: ran.append(args))
    assert result.refused and not ran and result.score() == 0
    assert str(result).startswith("– ") and "refused here, not graded" in str(result)
    assert "JupyterHub" in str(result)                  # why, on this kind of host


def test_without_cgroup_delegation_the_limits_are_refused(monkeypatch):
    from labcore.kernel import cgroups
    monkeypatch.setattr(cgroups, "can_limit", lambda: False)
    for check in (exercises.check_memory_limit, exercises.check_pids_limit):
        result = check(lambda *args: None)
        assert result.refused and result.score() == 0 and "may not make cgroups" in result.refused


def fake_result(stdout: bytes, code: int = 0):
    return SimpleNamespace(exit_code=code, stdout=stdout)


def test_the_shared_kernel_is_read_from_what_the_container_printed(monkeypatch):
    import os
    monkeypatch.setattr(hosts, "current", lambda: hosts.Host(0, True, None, False, None))
    release = os.uname().release
    right = exercises.check_shared_kernel(lambda: fake_result(f"3f2a1b\n{release}\n".encode()))
    assert right.passed
    host_side = exercises.check_shared_kernel(lambda: fake_result(f"{os.uname().nodename} {release}".encode()))
    assert [c.ok for c in host_side.criteria] == [True, False, True]
    assert "UTS namespace" in host_side.hint()


def test_a_start_time_must_measure_the_call_and_is_set_beside_the_vms_boot(monkeypatch):
    monkeypatch.setattr(hosts, "current", lambda: hosts.Host(0, True, None, False, None))
    guest = SimpleNamespace(data={"seconds": 2.5})

    def started():          # a start that takes a millisecond, and says it took half of one
        time.sleep(0.001)
        return 0.0005, fake_result(b"")

    timed = exercises.check_start_time(started, guest)
    assert timed.passed and "VM boot 2.50 s" in str(timed)
    made_up = exercises.check_start_time(lambda: (5.0, fake_result(b"")), guest)
    assert [c.ok for c in made_up.criteria] == [True, False, False]
    no_vm = exercises.check_start_time(started, None)
    assert no_vm.passed and len(no_vm.criteria) == 2       # no VM booted: nothing to be faster than, no point given


def test_a_step_name_the_box_does_not_have_is_refused_before_a_box_is_made(monkeypatch):
    monkeypatch.setattr(hosts, "current", lambda: hosts.Host(0, True, None, False, None))
    from labcore.lessons import build_your_own

    def no_box(image):
        raise AssertionError("no box may be made for an order with an unknown step")

    monkeypatch.setattr(build_your_own, "start", no_box)
    result = exercises.check_build_order(["layers", "docker_magic"])
    assert result.score() == 0 and "'docker_magic' is not one of the steps: layers, mount_overlay" in result.hint()


def test_without_the_daemon_the_raw_request_is_refused():
    from labcore.lessons.evidence import Step
    stage = Step.refused("the stage", "labd", "refused: no daemon here")
    result = exercises.check_create_and_start(lambda *args: "id", stage)
    assert result.refused and "daemon did not start" in result.refused


@pytest.mark.parametrize("check", ["check_overlay_mount", "check_whiteout", "check_pivot_root",
                                   "check_read_only_root", "check_root_propagation", "check_drop_capability"])
def test_a_child_refused_its_mount_is_a_refused_check_not_a_traceback(monkeypatch, check):
    # Ubuntu 24.04: user namespaces work, AppArmor refuses the mount the child makes in its own namespace.
    from labcore.errors import NeedsPrivilege
    monkeypatch.setattr(hosts, "current", lambda: hosts.Host(0, True, None, False, None))

    def refused(*args):
        raise NeedsPrivilege("mount: EACCES (AppArmor)")

    monkeypatch.setattr(exercises, "run_in_child", refused)
    result = getattr(exercises, check)(lambda *args: None)
    assert result.refused and "AppArmor" in result.refused and result.score() == 0


def test_a_box_step_this_host_refused_makes_the_order_check_refused(monkeypatch):
    monkeypatch.setattr(hosts, "current", lambda: hosts.Host(0, True, None, False, None))
    from contextlib import contextmanager

    from labcore.lessons import build_your_own
    from labcore.lessons.evidence import Step

    class Box:
        def __getattr__(self, name):
            return lambda **kwargs: Step.refused(name, name, "refused: mount: EACCES")

    @contextmanager
    def box(image):
        yield Box()

    monkeypatch.setattr(build_your_own, "start", box)
    result = exercises.check_build_order(list(exercises.BOX_STEPS))
    assert result.refused and "'layers' was refused" in result.refused and result.score() == 0
