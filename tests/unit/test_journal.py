"""The undo journal: recorded at creation, undone in reverse, orphans found after a crash, foreign names refused."""
import errno
import os
import shutil
import subprocess
import sys

import pytest

from labcore.errors import LabError
from labcore.kernel import journal
from labcore.kernel.journal import Journal, Scope


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
    code = ("import os, pathlib; from labcore.kernel.journal import Journal; p = pathlib.Path(os.environ['D']);"
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
    code = ("import os, pathlib, sys, time; from labcore.kernel.journal import Journal; "
            "p = pathlib.Path(os.environ['D']); p.mkdir(); Journal().record('directory', p, 'rmtree', path=str(p)); print('ready', flush=True);"
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


# --- every state a crash can leave the journal in (issue 11): cleanup reports, and never crashes ----------

def dead_owner() -> dict:
    """The owner fields of a process that has exited: its records are orphans."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return {"pid": child.pid, "start": 1}


def test_rmtree_of_a_tree_with_symlinks_as_a_user_removes_the_links_not_their_targets(tmp_path, monkeypatch):
    target = tmp_path / "outside"
    target.mkdir()
    (target / "keep.txt").write_text("not ours\n")
    tree = tmp_path / "labcore-tree"
    (tree / "sub").mkdir(parents=True)
    os.symlink(target, tree / "sub" / "link-to-dir")           # os.walk lists it among the directories
    os.symlink(tree / "missing", tree / "dangling")
    monkeypatch.setattr(os, "geteuid", lambda: 1001)          # _make_writable's path for a user
    journal.undo_rmtree(str(tree))
    assert not tree.exists() and (target / "keep.txt").exists()


def test_rmtree_looks_again_when_a_file_goes_between_its_listing_and_its_unlink(tmp_path, monkeypatch):
    # a monitor renaming its temporary file over state.json while `cleanup --all` removes the directory
    tree = tmp_path / "labcore-tree"
    tree.mkdir()
    (tree / ".state.json.1.2").write_text("{}")
    real, tries = shutil.rmtree, []

    def renamed_meanwhile(path, *args, **kwargs):
        tries.append(path)
        if len(tries) == 1:
            os.rename(tree / ".state.json.1.2", tree / "state.json")
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(tree / ".state.json.1.2"))
        real(path, *args, **kwargs)
    monkeypatch.setattr(journal.shutil, "rmtree", renamed_meanwhile)
    journal.undo_rmtree(str(tree))
    assert not tree.exists() and len(tries) == 2


def test_rmtree_of_a_recorded_path_that_is_now_a_symlink_removes_only_the_link(tmp_path):
    target = tmp_path / "outside"
    target.mkdir()
    link = tmp_path / "labcore-link"
    os.symlink(target, link)
    journal.undo_rmtree(str(link))
    assert not os.path.lexists(link) and target.is_dir()


def test_an_interrupted_undo_is_tried_again(tmp_path):
    log = Journal(tmp_path / "journal")
    path = tmp_path / "labcore-half-undone"
    path.mkdir()
    entry = log.record("directory", path, "rmtree", owner=dead_owner(), path=str(path))
    (log.directory / f"{entry.id}.json").rename(log.directory / f".{entry.id}.undoing.{dead_owner()['pid']}.1")
    tried, failures = log.undo_orphans()
    assert failures == [] and [e.id for e in tried] == [entry.id]
    assert not path.exists() and list(log.directory.iterdir()) == []


def test_a_claim_from_the_old_format_or_a_live_cleanup(tmp_path):
    log = Journal(tmp_path / "journal")
    path = tmp_path / "labcore-claimed"
    path.mkdir()
    old = log.record("directory", path, "rmtree", owner=dead_owner(), path=str(path))
    (log.directory / f"{old.id}.json").rename(log.directory / f".{old.id}.undoing")    # no claimant named
    me = journal.owner_of()
    live = log.record("directory", tmp_path / "labcore-live", "rmtree", owner=dead_owner(),
                      path=str(tmp_path / "labcore-live"))
    claim = log.directory / f".{live.id}.undoing.{me['pid']}.{me['start']}"
    (log.directory / f"{live.id}.json").rename(claim)
    tried, failures = log.undo_all()
    assert [e.id for e in tried] == [old.id] and failures == [] and not path.exists()
    assert claim.exists()                                     # a live claimant's: left to it


def test_a_whole_temporary_record_is_kept_and_a_half_written_one_reported(tmp_path):
    log = Journal(tmp_path / "journal")
    path = tmp_path / "labcore-unrenamed"
    path.mkdir()
    entry = log.record("directory", path, "rmtree", owner=dead_owner(), path=str(path))
    dead = dead_owner()["pid"]
    whole = log.directory / f".{entry.id.replace(f'-{os.getpid()}-', f'-{dead}-')}.tmp"
    (log.directory / f"{entry.id}.json").rename(whole)
    (log.directory / f".1-{dead}-mount.tmp").write_text('{"kind": "mou')
    tried, failures = log.undo_all()
    assert [str(path)] == [e.name for e in tried] and not path.exists()
    assert len(failures) == 1 and "half-written" in failures[0]
    assert list(log.directory.iterdir()) == []


def test_a_temporary_record_of_a_live_writer_is_left_alone(tmp_path):
    log = Journal(tmp_path / "journal")
    log.directory.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                             text=True)
    try:
        pending = log.directory / f".1-{other.pid}-mount.tmp"
        pending.write_text('{"kind": "mou')
        assert log.undo_all() == ([], []) and pending.exists()
    finally:
        other.communicate("")


def test_an_undo_that_raises_anything_is_reported_and_the_rest_still_undone(tmp_path, monkeypatch):
    log = Journal()                                           # the one `labcore cleanup` reads
    first = tmp_path / "labcore-first"
    first.mkdir()
    log.record("directory", first, "rmtree", owner=dead_owner(), path=str(first))
    broken = log.record("directory", tmp_path / "labcore-x", "rmtree", owner=dead_owner(), path=str(tmp_path))
    (log.directory / f"{broken.id}.json").write_text(
        '{"kind": "directory", "name": "x", "undo": "no-such-op", "args": {}, "owner": {}, "id": "%s"}' % broken.id)
    odd = log.record("directory", tmp_path / "labcore-y", "rmtree", owner=dead_owner(), path=str(tmp_path))
    (log.directory / f"{odd.id}.json").write_text('{"kind": "directory", "surprise": 1}')
    monkeypatch.setitem(journal.UNDO, "boom", lambda: (_ for _ in ()).throw(NotImplementedError("lchmod")))
    log.record("thing", "labcore-boom", "boom", owner=dead_owner())
    report = journal.cleanup(everything=True)
    assert f"removed directory {first}" in report and not first.exists()
    assert "could not remove thing labcore-boom: NotImplementedError: lchmod" in report
    assert "could not remove directory x: KeyError" in report
    assert f"record {odd.id}.json: cannot be read" in report
    assert "removed thing" not in report and "removed directory x" not in report
    for record in log.directory.iterdir():                     # what could not be undone stays, as it should
        record.unlink()


def test_a_fresh_cleanup_finds_each_mechanisms_undo_by_the_name_in_the_record():
    """Records name their inverse by a word; a process that imported only the journal (a `labcore cleanup` after
    a crash) still finds the ones cgroups, network and usernet register, under the names older records use."""
    code = ("from labcore.kernel import journal; before = set(journal.UNDO); "
            "found = {name: journal.operation(name).__module__ for name in "
            "('rmdir_cgroup', 'link', 'link_in', 'bridge', 'netns', 'usernet', 'rmtree', 'kill')}; "
            "print(sorted(before)); print(sorted(found.items()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, found = done.stdout.splitlines()
    assert before == str(["ipcrm", "kill", "rmtree", "umount", "unlink"])
    assert found == str(sorted({"rmdir_cgroup": "labcore.kernel.cgroups", "link": "labcore.kernel.network",
                                "link_in": "labcore.kernel.network", "bridge": "labcore.kernel.network",
                                "netns": "labcore.kernel.network", "usernet": "labcore.kernel.usernet",
                                "rmtree": "labcore.kernel.journal", "kill": "labcore.kernel.journal"}.items()))
    with pytest.raises(KeyError):
        journal.operation("no-such-op")


def test_this_processs_start_time_is_read_once_and_a_forked_child_reads_its_own(tmp_path, monkeypatch):
    from labcore.kernel import procfs
    from labcore.kernel.process import run_in_child
    journal._OWN.clear()
    reads = []
    real = journal.process_start_time
    monkeypatch.setattr(journal, "process_start_time", lambda pid: reads.append(pid) or real(pid))
    ledger = Journal(tmp_path / "journal")
    owners = [ledger.record("process", "1", "kill", pid=1, start=None).owner for _ in range(3)]
    assert reads == [os.getpid()]                          # one read of /proc/self/stat for three records
    assert owners == [{"pid": os.getpid(), "start": procfs.start_time(os.getpid())}] * 3
    owners[0]["pid"] = 0                                   # each record has its own copy
    assert journal.owner_of()["pid"] == os.getpid()
    child, pid, start = run_in_child(lambda: (journal.owner_of(), os.getpid(), procfs.start_time("self")))
    assert child == {"pid": pid, "start": start} and pid != os.getpid()
    for entry in ledger.entries():
        ledger.forget(entry)


def test_rmtree_reads_the_mount_table_a_second_time_only_after_detaching_something(tmp_path, monkeypatch):
    reads = []
    monkeypatch.setattr(journal, "mounts_under", lambda path: reads.append(path) or [])
    tree = tmp_path / "labcore-tree"
    (tree / "sub").mkdir(parents=True)
    journal.undo_rmtree(str(tree))
    assert not tree.exists() and reads == [str(tree)]


def test_a_lock_with_a_deadline_gives_up_while_another_holds_it_and_is_taken_once_it_is_free(tmp_path):
    """flock(2) locks belong to open files: a second open of the same directory is another holder. While the
    first holds it, the kernel answers LOCK_NB with EWOULDBLOCK until the deadline (TimeoutError); then it is
    taken at once."""
    import fcntl
    with journal.flocked(tmp_path):
        with pytest.raises(TimeoutError, match="still held"):
            with journal.flocked(tmp_path, seconds=0.05):
                pass
    with journal.flocked(tmp_path, seconds=0):
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):              # held by the block above: the kernel says so
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
