"""The lifecycle table: allowed moves change the stored state; forbidden ones raise and change nothing."""
import pytest

from labcore.errors import InvalidTransition, NotFound
from labcore.runtime import lifecycle
from labcore.runtime.lifecycle import Record, State


def new(cid="a" * 64, name="labcore-test"):
    record = Record(cid, name, "busybox:latest")
    record.save()
    return record


def test_walk_through_the_lifecycle():
    record = new()
    assert lifecycle.transition(record.id, "start", pid=42).state is State.RUNNING
    assert lifecycle.transition(record.id, "pause").state is State.PAUSED
    assert lifecycle.transition(record.id, "unpause").state is State.RUNNING
    assert lifecycle.transition(record.id, "exit", exit_code=3).state is State.EXITED
    stored = lifecycle.load(record.id)
    assert (stored.state, stored.exit_code, stored.pid) == (State.EXITED, 3, 42)


@pytest.mark.parametrize("state,action,message", [
    (State.CREATED, "pause", "is not running"),
    (State.RUNNING, "remove", "Stop the container before attempting removal or force remove"),
    (State.RUNNING, "start", "is already running"),
    (State.EXITED, "exec", "is not running"),
    (State.PAUSED, "kill", "is not running"),
    (State.DEAD, "start", "it is dead"),
    (State.DEAD, "exec", "can only be removed"),
    (State.EXITED, "die", "cannot die"),
])
def test_forbidden_moves_raise_and_leave_the_record_unchanged(state, action, message):
    record = new()
    record.state = state
    record.save()
    with pytest.raises(InvalidTransition, match=message):
        lifecycle.transition(record.id, action)
    assert lifecycle.load(record.id).state is state


def test_find_by_name_prefix_and_unknown():
    one, two = new("ab" + "1" * 62, "first"), new("ac" + "2" * 62, "second")
    assert lifecycle.find("second").id == two.id
    assert lifecycle.find("ab").id == one.id
    with pytest.raises(NotFound, match="multiple containers"):
        lifecycle.find("a")
    with pytest.raises(NotFound, match="No such container: zzz"):
        lifecycle.find("zzz")


def test_a_damaged_record_is_no_container_and_never_breaks_the_list(labcore_home):
    good = Record("a" * 64, "good", "busybox")
    good.save()
    for name, text in (("b" * 64, '{"id": 1, "state": "exited", "bogus": true}'), ("c" * 64, "{not json"),
                       ("d" * 64, '{"id": "d", "name": "x", "image": "y", "state": "weird"}')):
        (labcore_home / "containers" / name).mkdir(parents=True)
        (labcore_home / "containers" / name / "state.json").write_text(text)
        with pytest.raises(NotFound, match="record is damaged"):
            lifecycle.load(name)
    assert [record.name for record in lifecycle.all_records()] == ["good"]


def test_a_rename_outlives_the_monitors_next_save(labcore_home):
    record = Record("e" * 64, "before", "busybox")
    record.save()
    lifecycle.rename(record.id, "after")
    record.save()                                   # the monitor saves with the name it started with
    assert lifecycle.load(record.id).name == "after"


def test_a_running_container_whose_monitor_is_gone_is_dead_and_may_be_removed(labcore_home):
    """engine.refresh: the process that was to record the exit has gone (a pid that is no one now)."""
    from labcore.runtime import engine
    record = new()
    lifecycle.transition(record.id, "start", pid=42, monitor={"pid": 2 ** 22 + 1, "start": 1})
    found = engine.refresh(lifecycle.load(record.id))
    assert (found.state, found.exit_code) == (State.DEAD, 255) and "monitor" in found.error
    assert engine.wait(record.id).state is State.DEAD                 # waiting ends, as for an exit
    assert lifecycle.check("remove", State.DEAD, record.id) is None
