"""The undo journal: recorded at creation, undone in reverse, orphans found after a crash, foreign names refused."""
import os
import subprocess
import sys

import pytest

from labcore import journal
from labcore.errors import LabError
from labcore.journal import Journal, Scope


def make_dir(scope, parent, name):
    path = parent / name
    path.mkdir()
    scope.record("directory", path, "rmtree", path=str(path))
    return path


def test_scope_undoes_in_reverse_order_on_exit(tmp_path):
    with Scope() as scope:
        outer = make_dir(scope, tmp_path, "labcore-outer")
        inner = make_dir(scope, outer, "labcore-inner")
        assert [e.name for e in Journal().entries()] == [str(outer), str(inner)]
    assert not outer.exists() and Journal().entries() == []


def test_scope_undoes_on_error_and_keyboard_interrupt(tmp_path):
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with Scope() as scope:
                path = make_dir(scope, tmp_path, f"labcore-{exc.__name__}")
                raise exc()
        assert not path.exists()


def test_released_objects_outlive_the_scope_until_cleanup(tmp_path):
    with Scope() as scope:
        path = make_dir(scope, tmp_path, "labcore-kept")
        scope.release()
    assert path.exists()
    assert "removed directory" in journal.cleanup()
    assert not path.exists()
    assert journal.cleanup() == "nothing left to clean up"


def test_orphans_of_a_dead_process_are_undone_and_live_ones_kept(tmp_path):
    code = ("import os, pathlib; from labcore.journal import Journal; p = pathlib.Path(os.environ['D']);"
            "p.mkdir(); Journal().record('directory', p, 'rmtree', path=str(p)); os._exit(9)")
    orphan = tmp_path / "labcore-crashed"
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "D": str(orphan)})
    with Scope() as scope:
        alive = make_dir(scope, tmp_path, "labcore-alive")
        undone, failures = Journal().undo_orphans()
        assert [e.name for e in undone] == [str(orphan)] and not failures
        assert not orphan.exists() and alive.exists()


def test_foreign_names_are_refused_and_kept(tmp_path):
    foreign = tmp_path / "precious"
    foreign.mkdir()
    entry = Journal().record("directory", foreign, "rmtree", path=str(foreign))
    with pytest.raises(LabError, match="did not create it"):
        Journal().undo(entry)
    assert foreign.exists()
    Journal().forget(entry)


def test_kill_only_touches_the_process_with_the_recorded_start_time():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        journal.undo_kill(sleeper.pid, start=12345)          # a different process once had this pid
        assert sleeper.poll() is None
        journal.undo_kill(sleeper.pid, start=journal.process_start_time(sleeper.pid))
        assert sleeper.wait(5) == -9
    finally:
        sleeper.kill()


def test_unknown_undo_operation_is_refused_at_record_time(tmp_path):
    with pytest.raises(LabError, match="no undo operation"):
        Journal().record("directory", tmp_path, "shred")


def test_a_notebooks_cleanup_leaves_other_live_processes_objects_alone(tmp_path):
    """Two notebooks share one state dir: one's cleanup cell must not pull the other's daemon away."""
    code = ("import os, pathlib, sys, time; from labcore.journal import Journal; p = pathlib.Path(os.environ['D']);"
            "p.mkdir(); Journal().record('directory', p, 'rmtree', path=str(p)); print('ready', flush=True);"
            "sys.stdin.read()")
    theirs = tmp_path / "labcore-other-notebook"
    other = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "D": str(theirs)},
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "ready\n"
        mine = tmp_path / "labcore-mine"
        mine.mkdir()
        Journal().record("directory", mine, "rmtree", path=str(mine))
        assert journal.cleanup() == f"removed directory {mine}"
        assert theirs.exists() and not mine.exists()
    finally:
        other.communicate("")
    assert journal.cleanup() == f"removed directory {theirs}"            # an orphan now
