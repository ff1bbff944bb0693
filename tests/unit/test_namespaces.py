"""labcore.lessons.namespaces (notebook 03) and labcore.kernel.namespaces without root: the order of the syscalls
(syscalls.Recorder), refusals, bad input, DOT, facts under plain names."""
import errno
import os
import subprocess

import pytest

from labcore.errors import BadInput
from labcore.kernel import namespaces as kernel_namespaces
from labcore.kernel import syscalls, userns
from labcore.lessons import diagrams, namespaces
from labcore.lessons.evidence import Mode


class Channel:
    """A parent that answers at once, and writes what the child sends into the recorder's log."""

    def __init__(self, log: list):
        self.log = log

    def send(self, message):
        self.log.append(("send", (message,)))

    def recv(self):
        self.log.append(("recv", ()))
        return "done"


@pytest.fixture
def rec(monkeypatch):
    recorder = syscalls.Recorder()
    # Not root, the child maps its own uid through /proc/self/uid_map: record that instead of writing it.
    monkeypatch.setattr(userns, "write_id_maps",
                        lambda pid="self", uid=None, gid=None: recorder.calls.append(("write_id_maps", (pid,))))
    with syscalls.use(recorder):
        yield recorder


def kernel_calls(recorder) -> list[str]:
    return [name for name in recorder.names() if name not in ("send", "recv", "write_id_maps")]


def test_uts_child_unshares_then_sets_the_hostname(rec):
    namespaces._isolated(Channel(rec.calls), ("uts",), "box1", None)
    assert kernel_calls(rec) == ["unshare", "sethostname"]
    assert rec.calls[0] == ("unshare", (userns.isolating_flags(syscalls.CLONE_NEWUTS),))
    assert ("sethostname", ("box1",)) in rec.calls
    assert rec.names()[-2:] == ["send", "recv"]          # reports, then holds until the parent has looked


def test_mnt_child_makes_mounts_private_before_mounting_its_tmpfs(rec):
    namespaces._isolated(Channel(rec.calls), ("mnt",), "box1", "/tmp/labcore-mnt-x")
    mounts = [args for name, args in rec.calls if name == "mount"]
    assert kernel_calls(rec) == ["unshare", "mount", "mount"]
    assert mounts[0] == (None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None)
    assert mounts[1][:3] == (namespaces.TMPFS_SOURCE, "/tmp/labcore-mnt-x", "tmpfs")


def test_pid_one_remounts_proc_only_in_its_own_mount_namespace(rec):
    namespaces._look_as_init(("pid", "mnt"))
    assert rec.calls == [("mount", ("proc", "/proc", "proc",
                                    syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC, None))]
    rec.calls.clear()
    namespaces._look_as_init(("pid",))          # without a mount namespace, /proc is the host's: leave it
    assert rec.calls == []


def test_user_child_unshares_and_waits_for_its_maps_before_setresuid(rec, monkeypatch):
    for name in ("setresuid", "setresgid", "setgroups"):
        monkeypatch.setattr(os, name, lambda *args, name=name: rec.calls.append((name, args)))
    namespaces._enter_user_namespace(Channel(rec.calls))
    order = [name for name in rec.names() if name != "setgroups"]     # setgroups([]) only when root
    assert order[:5] == ["unshare", "send", "recv", "setresgid", "setresuid"]
    assert ("unshare", (syscalls.CLONE_NEWUSER,)) in rec.calls
    assert ("sethostname", (os.uname().nodename,)) in rec.calls    # the name already set: never a change


def test_parent_writes_the_maps_only_after_the_child_unshared(monkeypatch):
    log = []

    class FakeChild:
        pid = 4242
        status = None

        def __init__(self, fn):
            log.append("fork")

        def recv(self):
            log.append("recv")
            return {"inodes": {}, "facts": {}} if "send mapped" in log else "unshared"

        def send(self, message):
            log.append(f"send {message}")

        def wait(self):
            return 0

    monkeypatch.setattr(namespaces, "Child", FakeChild)
    monkeypatch.setattr(namespaces, "membership_dot", lambda pids: "digraph {}")
    monkeypatch.setattr(userns, "write_id_maps", lambda pid, uid, gid: log.append(f"maps {pid} {uid} {gid}"))
    namespaces._as_mapped_root(65534, 65534)
    assert log == ["fork", "recv", "maps 4242 65534 65534", "send mapped", "recv", "send done"]


def test_join_opens_every_file_first_then_joins_user_first_and_mnt_last(rec):
    fds_before = len(os.listdir("/proc/self/fd"))
    kernel_namespaces.enter_namespaces(os.getpid(), ["mnt", "uts", "pid", "user"])
    flags = [args[1] for name, args in rec.calls if name == "setns"]
    assert flags == [syscalls.CLONE_NEWUSER, syscalls.CLONE_NEWUTS, syscalls.CLONE_NEWPID, syscalls.CLONE_NEWNS]
    assert len(os.listdir("/proc/self/fd")) == fds_before           # every namespace file closed again


def test_a_refused_unshare_is_a_refused_step_naming_the_call():
    with syscalls.use(syscalls.Recorder(fail={"unshare": errno.EPERM})):
        step = namespaces.isolate_uts("box1")            # the forked child inherits the failing recorder
    assert step.mode is Mode.NOT_PERMITTED
    assert "unshare" in step.reason and "fix:" in step.reason
    assert 'sethostname("box1")' in step.action


def test_bad_input_is_refused_before_anything_is_made():
    with pytest.raises(BadInput, match="letters, digits"):
        namespaces.isolate_uts("not a hostname!")
    with pytest.raises(BadInput, match="uts, pid, mnt"):
        namespaces.isolate({"uts", "time"})
    with pytest.raises(BadInput):
        namespaces.compose(uts=False, pid=False, mnt=False, net=False, ipc=False, user=False, cgroup=False)
    with pytest.raises(BadInput, match="nothing to join"):
        namespaces.join(os.getpid())


def test_the_action_names_the_user_namespace_when_not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    action = namespaces.isolate_action(("uts", "pid", "mnt"), "box1")
    assert action.startswith("unshare(CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWUSER|CLONE_NEWPID)")
    assert action.index("MS_PRIVATE") < action.index('"tmpfs"') < action.index("fork()") < action.index('"proc"')
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "CLONE_NEWUSER" not in namespaces.isolate_action(("uts",))


def test_membership_dot_draws_each_namespace_of_each_process_once():
    other = subprocess.Popen(["sleep", "30"])
    try:
        source = namespaces.membership_dot([os.getpid(), other.pid])
    finally:
        other.kill()
        other.wait()
    for kind, inode in namespaces.namespaces_of().items():
        assert source.count(f'"{kind}:[{inode}]" [') == 1      # shared: one node, with two lines
    assert source.count(" -> ") == 14                          # 2 processes x 7 kinds
    assert diagrams.render_svg(source) is None or "<svg" in diagrams.render_svg(source)


def test_process_tree_dot_boxes_processes_by_pid_namespace():
    source = namespaces.process_tree_dot(os.getpid(), ancestors=1)
    assert f'"{os.getpid()}" [label=' in source and f'"{os.getppid()}" -> "{os.getpid()}"' in source
    assert "the host's pid namespace pid:[" in source and "cluster_pidns0" in source
    assert diagrams.render_svg(source) is None or "<svg" in diagrams.render_svg(source)


def test_readers_see_this_process():
    assert "lo" in kernel_namespaces.interfaces()
    assert kernel_namespaces.nspids(os.getpid())[0] == os.getpid()
    assert os.getpid() in kernel_namespaces.visible_pids()
    assert set(kernel_namespaces.namespaces_of()) == set(kernel_namespaces.KINDS)
    assert kernel_namespaces.propagation("/").split(":")[0] in ("shared", "master", "private")


def test_facts_are_kept_under_plain_names_and_labelled_only_in_the_table():
    seen = namespaces.look(namespaces.KINDS)
    assert all(key.isidentifier() for key in seen["facts"])
    assert seen["facts"]["pid"] == os.getpid()
    shown = namespaces.rows(seen["facts"])
    assert shown["pid (os.getpid())"] == os.getpid() and "pid" not in shown
    assert all(f"cgroup {hierarchy}" in shown for hierarchy in seen["facts"]["cgroups"])
