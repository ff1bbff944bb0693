"""The one monitor of a state directory (labcore.runtime.monitord), without containers: who owns what it records,
how it stays while a client holds it and leaves when none does, and what `rm` of a dead container undoes."""
import contextlib
import os
import signal
import socket
import threading
import time

import pytest

from labcore import paths
from labcore.kernel import journal, process, procfs
from labcore.runtime import engine, lifecycle, monitor, monitord


def test_a_thread_acting_for_a_container_tags_what_it_records_and_no_other_thread_does():
    with journal.acting_for("c1"):
        tagged = journal.owner_of()
    assert tagged["for"] == "c1" and "for" not in journal.owner_of()
    assert journal.owner_alive(tagged)                       # the tag does not change who is alive


def test_a_subreaper_for_life_stays_one_after_an_adoption_window(monkeypatch):
    calls = []
    monkeypatch.setattr(process.syscalls, "prctl", lambda option, value=0, *rest: calls.append((option, value)))
    monkeypatch.setattr(process, "_for_life", False)
    with process.adopting_orphans():
        pass
    assert calls == [(36, 1), (36, 0)]                       # an ordinary caller: on, then off
    calls.clear()
    process.become_subreaper()
    with process.adopting_orphans():
        pass
    assert calls == [(36, 1)]                                # the monitor: on, and never off


def test_strays_are_reaped_after_two_looks_but_never_while_a_start_forks():
    """A shim that has exited, waiting for its thread's waitpid(2) while a busy machine stalls that thread:
    a look during a start leaves it, and two looks outside one reap only what is still a zombie then."""
    with socket.socket(socket.AF_UNIX) as listener:
        watcher = monitord.Monitor(listener)
        shim = os.fork()
        if shim == 0:
            os._exit(7)
        try:
            while procfs.state(shim) != "Z":
                time.sleep(0.005)
            with watcher.forking:                           # a thread is creating a container
                for _ in range(3):
                    watcher.reap_strays()
            assert procfs.state(shim) == "Z" and shim not in watcher.zombies
            watcher.reap_strays()                            # first look outside a start: seen
            assert procfs.state(shim) == "Z" and shim in watcher.zombies
            watcher.reap_strays()                            # second look: a stray, reaped
            with pytest.raises(ChildProcessError):
                os.waitpid(shim, 0)
        finally:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(shim, 0)                          # a failed assertion leaves no zombie behind
            for fd in (watcher.wake_read, watcher.wake_write):
                os.close(fd)


def test_a_holder_that_closed_its_end_is_seen_gone_before_its_thread_reads_it():
    ours, theirs = socket.socketpair()
    channel = monitor.Channel(ours)
    assert not monitord.closed(channel)
    theirs.close()
    assert monitord.closed(channel) and not monitord.closed(None)
    ours.close()


def test_the_monitor_stays_while_held_serves_every_client_and_leaves_when_let_go(labcore_home):
    engine.hold_monitor()
    try:
        [pid] = engine.running_monitors()
        other = engine.connect_monitor(spawn=False)          # a second client reaches the same process
        other.send(("hold",))
        assert other.recv()[1]["pid"] == pid
        other.close()
        assert (labcore_home / monitor.SOCKET).exists() and journal.running(pid)
    finally:
        engine.release_monitor()
    deadline = time.monotonic() + 30
    while journal.running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not journal.running(pid)                          # no container, no holder: it left
    assert not (labcore_home / monitor.SOCKET).exists() and journal.Journal().entries() == []
    assert engine.connect_monitor(spawn=False) is None


def test_a_holder_whose_monitor_was_killed_holds_the_next_one_it_spawns(labcore_home):
    engine.hold_monitor()
    try:
        [first] = engine.running_monitors()
        os.kill(first, signal.SIGKILL)
        while os.path.exists(f"/proc/{first}"):          # every thread gone (a leader shows Z before the
            time.sleep(0.01)                             # others have closed the fds: its socket still answers)
        engine.connect_monitor().close()                     # finds none: spawns the next, and holds it
        [second] = engine.running_monitors()
        assert second != first
        assert engine.dismiss_monitor() == "" and journal.running(second)    # "busy": it is held
    finally:
        engine.release_monitor()
    engine.dismiss_monitor()
    assert not journal.running(second) and journal.Journal().entries() == []


def test_cleanup_dismisses_an_idle_monitor_and_waits_until_it_is_gone(labcore_home):
    engine.hold_monitor()
    engine.release_monitor()                                 # spawned, then let go at once
    pids = engine.running_monitors()
    engine.dismiss_monitor()
    assert not any(map(journal.running, pids)) and journal.Journal().entries() == []


def test_cleanup_waits_for_a_monitor_that_has_forgotten_its_record_but_not_yet_exited(labcore_home):
    """monitord.leave_if_idle takes the spawn lock, unlinks the socket, forgets its record and exits, and the
    lock goes with the process: here a child plays that last moment (the lock, no socket, no record) until the
    test lets it go. Seen on a busy machine: `cleanup` found nothing to wait for, and returned while the
    monitor still ran. The kernel's answer is the evidence: flock(2) with LOCK_NB fails while it is held."""
    (locked, took), (release, let_go) = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            lock = engine.spawn_lock()
            lock.__enter__()                              # never let go: the lock goes with the process
            os.write(took, b"1")
            os.read(release, 1)                           # on its way out, until the test says
        finally:
            os._exit(0)
    answers = []
    dismissing = threading.Thread(target=lambda: answers.append(engine.dismiss_monitor()))
    try:
        assert os.read(locked, 1) == b"1"
        with pytest.raises(TimeoutError):                # held: EWOULDBLOCK
            with engine.spawn_lock(0.05):
                pass
        dismissing.start()
        assert dismissing.is_alive(), "dismiss_monitor returned while the leaving monitor still held the lock"
    finally:
        os.write(let_go, b"1")
        if dismissing.ident is not None:              # started
            dismissing.join()
        os.waitpid(pid, 0)
        for fd in (locked, took, release, let_go):
            os.close(fd)
    assert answers == [""]
    with engine.spawn_lock(0):                            # free again: the "monitor" is gone
        pass


def test_rm_of_a_dead_container_undoes_its_own_and_its_dead_monitors_records_only(labcore_home):
    dead = {"pid": 2 ** 22 + 1, "start": 1}
    files = {}
    scratch = paths.scratch_dir()
    scratch.mkdir(parents=True)
    ledger = journal.Journal()
    for name, owner in (("socket", dead), ("mine", {**dead, "for": "a" * 64}), ("other", {**dead, "for": "b" * 64})):
        files[name] = scratch / f"labcore-{name}"
        files[name].touch()
        ledger.record("file", str(files[name]), "unlink", owner=owner, path=str(files[name]))
    record = lifecycle.Record("a" * 64, "mine", "busybox")
    record.save()
    lifecycle.transition(record.id, "start", pid=2 ** 22 + 2, monitor={**dead, "for": record.id})
    engine.remove(record.id)
    assert [name for name, path in files.items() if path.exists()] == ["other"]
    assert [entry.owner.get("for") for entry in ledger.entries()] == ["b" * 64]
    ledger.undo_all()
