"""Journal before create (CONTRIBUTING, "Leave nothing behind"): each directory the lessons make is in the
journal at the instant mkdir(2) is called, so a crash between the two leaves a record, never an orphan."""
import os
from pathlib import Path

import pytest

from labcore.kernel import journal


@pytest.fixture
def journaled_at_mkdir(monkeypatch):
    """mkdir, os.mkdir and Path.mkdir, each first noting whether the journal already names the path."""
    seen = {}
    real_os_mkdir, real_path_mkdir = os.mkdir, Path.mkdir

    def note(path):
        if not seen.get("reading"):                    # reading the journal may make its directory: not noted
            seen["reading"] = True
            seen[str(path)] = str(path) in [entry.name for entry in journal.Journal().entries()]
            seen["reading"] = False

    monkeypatch.setattr(os, "mkdir", lambda path, *args, **kw: (note(path), real_os_mkdir(path, *args, **kw))[1])
    monkeypatch.setattr(Path, "mkdir", lambda self, *args, **kw: (note(self), real_path_mkdir(self, *args, **kw))[1])
    return seen


def test_the_namespace_demos_mountpoint_is_journaled_before_it_is_made(journaled_at_mkdir):
    from labcore.lessons import namespaces
    with journal.Scope() as scope:
        path = namespaces._make_mountpoint(scope)
        assert journaled_at_mkdir[path] is True and os.path.isdir(path)
    assert not os.path.exists(path)


def test_the_flows_home_and_a_short_socket_directory_are_journaled_before_they_are_made(journaled_at_mkdir):
    from labcore.lessons import run_flow
    with journal.Scope() as scope:
        home = run_flow.make_daemon_home(scope)
        socket = run_flow.socket_in("/" + "x" * 120, "d.sock", scope)       # too long for sun_path
        assert journaled_at_mkdir[home] is True and journaled_at_mkdir[os.path.dirname(socket)] is True
    assert not os.path.exists(home) and not os.path.exists(os.path.dirname(socket))


def test_an_overlays_directories_are_journaled_before_they_are_made(journaled_at_mkdir, monkeypatch):
    from labcore.kernel import overlay
    monkeypatch.setattr(overlay.syscalls, "mount", lambda *args: None)      # the directories are the point here
    with journal.Scope() as scope:
        base = Path(journal.make_scratch(scope, "labcore-ovl-"))
        made = overlay.mount_overlay([base], base / "upper", base / "work", base / "merged", scope, userxattr=True)
        assert [journaled_at_mkdir[str(base / name)] for name in ("upper", "work", "merged")] == [True] * 3
        assert [entry.undo for entry in made.entries] == ["rmtree"] * 3 + ["umount"]
