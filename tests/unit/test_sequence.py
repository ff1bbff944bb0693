"""One start sequence: `labcore run`, labd and notebook 08's box walk the same table, in the same order."""
import pytest

from labcore.errors import InvalidTransition
from labcore.lessons import build_your_own
from labcore.runtime import sequence


def test_every_step_is_refused_before_what_it_needs():
    progress = sequence.Progress("c0ffee" * 10)
    with pytest.raises(InvalidTransition, match=r"exec\(\) needs pivot_root\(\) first") as refused:
        progress.advance("exec")
    assert refused.value.fix == "pivot_root() first" and progress.done == []


def test_labcore_runs_order_is_allowed_by_the_table():
    """The order container.create, start and wait take: pid 1 mounts its overlay after unshare, in its own
    mount namespace; every step of the table is in it."""
    from labcore.runtime import container
    names = [name for name, _ in container.CREATE_STEPS] + ["exec", "wait"]
    assert sorted(names) == sorted(sequence.STEPS)
    progress = sequence.Progress("c0ffee" * 10)
    for name in names:
        progress.advance(name)
    with pytest.raises(InvalidTransition, match="was done already"):
        progress.advance("exec")


def test_the_box_walks_the_same_table_with_the_host_mount_first():
    assert build_your_own.ORDER["unshare"][1][0][0] == "mount_overlay"
    assert {name: needs[len(sequence.HOST_MOUNT.get(name, [])):] for name, (_, needs) in
            build_your_own.ORDER.items()} == {name: needs for name, (_, needs) in sequence.STEPS.items()}


def test_a_containers_state_changes_only_as_the_lifecycle_allows():
    from types import SimpleNamespace
    from labcore.runtime import container
    from labcore.runtime.lifecycle import State
    box = container.Container(container.Spec("busybox", ["true"]), SimpleNamespace(), scope=None)
    assert box.state is State.CREATED and box.progress.done == []
    container.advance(box, "start")
    assert box.state is State.RUNNING
    with pytest.raises(InvalidTransition, match="already running"):
        container.advance(box, "start")
    container.advance(box, "exit")
    assert box.state is State.EXITED
