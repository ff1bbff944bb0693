"""labcore.kernel.usernet without root, with fakes: the order in which the user-mode network is started and undone,
what is journaled and when (the use before the start, the link before it exists, the processes owned by the
holder), the last user out stopping it, slirp4netns's --ready-fd, the host's refusals with their fixes, and the
pieces it adds elsewhere: the port proxy entering the router namespace, setns into a user namespace, a zombie
owner counting as dead, a rootless container falling back to loopback only where nothing asked for ports."""
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import types

import pytest

from labcore.errors import LabError, NeedsPrivilege, NotSupportedHere
from labcore.kernel import journal, network, portproxy, syscalls, usernet, userns
from labcore.kernel.journal import Journal, Scope
from labcore.lessons import build_your_own
from labcore.lessons.evidence import Mode
from labcore.runtime import container


def dead_pid() -> int:
    """A pid whose process has exited and been reaped: nothing an undo may touch."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"])


def record_network(ledger: Journal, holder: subprocess.Popen, slirp: subprocess.Popen) -> None:
    """The records ``usernet.start`` makes: both processes, owned by the holder."""
    owner = journal.owner_of(holder.pid)
    ledger.record("usernet", "holder", "kill", owner=owner, **owner)
    ledger.record("usernet", "slirp4netns", "kill", owner=owner, pid=slirp.pid,
                  start=journal.process_start_time(slirp.pid))


@pytest.fixture
def fake_network():
    """Two real, harmless processes standing in for the holder and slirp4netns, killed by the test's undo."""
    holder, slirp = sleeper(), sleeper()
    record_network(Journal(), holder, slirp)
    yield holder, slirp
    for process in (holder, slirp):
        process.kill()
        process.wait()


def test_start_makes_the_holder_then_slirp_then_the_router(monkeypatch):
    calls = []
    monkeypatch.setattr(usernet, "check_host", lambda: calls.append("check the host"))
    monkeypatch.setattr(usernet, "start_holder", lambda ledger: calls.append("holder") or 101)
    monkeypatch.setattr(usernet, "start_slirp", lambda ledger, holder: calls.append(f"slirp4netns {holder}") or 102)
    monkeypatch.setattr(network, "in_netns", lambda pid, fn, *args: calls.append(f"{fn.__name__} in {pid}"))
    monkeypatch.setattr(usernet, "stop", lambda ledger: calls.append("stop"))
    started = usernet.start(Journal())
    assert calls == ["check the host", "holder", "slirp4netns 101", "make_router in 101"]
    assert (started.holder, started.slirp) == (101, 102)


def test_a_failed_start_stops_what_was_started(monkeypatch):
    calls = []
    monkeypatch.setattr(usernet, "check_host", lambda: None)
    monkeypatch.setattr(usernet, "start_holder", lambda ledger: calls.append("holder") or 101)

    def refused(ledger, holder):
        raise NotSupportedHere("slirp4netns did not start: no tap")
    monkeypatch.setattr(usernet, "start_slirp", refused)
    monkeypatch.setattr(usernet, "stop", lambda ledger: calls.append("stop"))
    with pytest.raises(NotSupportedHere, match="no tap"):
        usernet.start(Journal())
    assert calls == ["holder", "stop"]


def test_join_records_the_use_first_and_starts_under_the_journals_lock(monkeypatch):
    def start(ledger):
        uses = [entry for entry in ledger.entries() if entry.undo == "usernet"]
        assert len(uses) == 1 and uses[0].args == {"journal": str(ledger.directory)}    # recorded already
        fd = os.open(ledger.directory, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):                  # the lock is held while it starts
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        return usernet.Usernet(dead_pid(), dead_pid())
    monkeypatch.setattr(usernet, "start", start)
    with Scope() as scope:
        joined = usernet.join(scope)
        assert joined.use in scope.entries
        usernet.leave(joined, scope)
        assert scope.entries == [] and Journal().entries() == []


def test_a_running_network_is_found_in_the_journal_and_reused(fake_network, monkeypatch):
    holder, slirp = fake_network
    monkeypatch.setattr(usernet, "start", lambda ledger: pytest.fail("started a second network"))
    with Scope() as scope:
        joined = usernet.join(scope)
        assert (joined.holder, joined.slirp) == (holder.pid, slirp.pid)
        usernet.leave(joined, scope)                     # the last one out
    assert holder.wait(5) == -signal.SIGKILL and slirp.wait(5) == -signal.SIGKILL
    assert Journal().entries() == []


def test_the_last_user_out_stops_the_network_and_not_before(fake_network):
    holder, slirp = fake_network
    with Scope() as first, Scope() as second:
        one = usernet.join(first)
        two = usernet.join(second)
        usernet.leave(one, first)
        assert holder.poll() is None and slirp.poll() is None           # the second still uses it
        usernet.leave(two, second)
        assert holder.wait(5) == -signal.SIGKILL and slirp.wait(5) == -signal.SIGKILL
    assert Journal().entries() == []


def test_a_half_dead_network_is_stopped_and_started_again(monkeypatch):
    slirp = sleeper()
    ledger = Journal()
    ledger.record("usernet", "holder", "kill", owner={"pid": dead_pid(), "start": None}, pid=dead_pid(), start=None)
    ledger.record("usernet", "slirp4netns", "kill", pid=slirp.pid, start=journal.process_start_time(slirp.pid))
    monkeypatch.setattr(usernet, "start", lambda ledger: usernet.Usernet(dead_pid(), dead_pid()))
    with Scope() as scope:
        usernet.join(scope)
        assert slirp.wait(5) == -signal.SIGKILL                 # stopped before a new one was started
        assert [entry.kind for entry in Journal().entries()] == ["network"]


def test_a_crashed_users_record_is_undone_by_cleanup_and_stops_the_network(fake_network):
    holder, slirp = fake_network
    code = ("from labcore.kernel import journal; journal.Scope().record('network', 'user-mode network', 'usernet', "
            "journal=str(journal.Journal().directory)); import os; os._exit(9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    report = journal.cleanup()
    assert "removed network user-mode network" in report
    assert holder.poll() == -signal.SIGKILL and slirp.poll() == -signal.SIGKILL   # cleanup waited for them


def test_connect_journals_the_link_before_it_exists(monkeypatch):
    router = usernet.Usernet(holder=dead_pid(), slirp=dead_pid())
    calls = []

    def in_netns(pid, fn, *args):
        calls.append((pid, fn.__name__))
        if fn is network.plug_in:
            assert [entry.undo for entry in Journal().entries()] == ["link_in"]      # recorded first
            assert args[1:4] == ("lcab12h", "lcab12c", "10.203.0.3")
        return {"10.203.0.2"} if fn is network.taken_addresses else None
    monkeypatch.setattr(network, "in_netns", in_netns)
    monkeypatch.setattr(network, "check_own_netns", lambda pid: 4026532999)
    with Scope() as scope:
        endpoint = usernet.connect(router, 4242, scope, short_id="ab12")
        assert calls == [(router.holder, "taken_addresses"), (router.holder, "plug_in"), (4242, "configure_inside")]
        assert (endpoint.ip, endpoint.via, endpoint.host_ifname, endpoint.netns) == (
            "10.203.0.3", router.holder, "lcab12h", 4026532999)
        assert endpoint.entries[0].args == {"name": "lcab12h", "pid": router.holder, "start": None}


def test_slirp4netns_is_ready_when_it_writes_to_its_ready_fd(tmp_path, monkeypatch):
    fake = tmp_path / "slirp4netns"
    fake.write_text(f"#!{sys.executable}\n"                 # writes its arguments down, then "1" to --ready-fd
                    "import os, sys, time\n"
                    "open(sys.argv[0] + '.args', 'w').write(' '.join(sys.argv[1:]))\n"
                    "os.write(int(sys.argv[5].split('=')[1]), b'1')\n"
                    "time.sleep(60)\n")
    fake.chmod(0o755)
    monkeypatch.setattr(usernet, "find_program", lambda name: str(fake))
    ledger = Journal()
    pid = usernet.start_slirp(ledger, os.getpid())
    args = (tmp_path / "slirp4netns.args").read_text().split()
    assert args[:4] == ["--configure", "--mtu=65520", "--enable-sandbox", "--enable-seccomp"]
    assert args[4].startswith("--ready-fd=") and args[5:] == [str(os.getpid()), "lctap0"]
    [entry] = ledger.entries()
    assert (entry.kind, entry.name, entry.args["pid"], entry.owner["pid"]) == ("usernet", "slirp4netns", pid,
                                                                               os.getpid())
    usernet.stop(ledger)
    assert not journal.running(pid) and ledger.entries() == []


def test_slirp4netns_that_dies_first_is_refused_with_its_own_words(tmp_path, monkeypatch):
    fake = tmp_path / "slirp4netns"
    fake.write_text("#!/bin/sh\necho 'open(\"/dev/net/tun\"): Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(usernet, "find_program", lambda name: str(fake))
    ledger = Journal()
    with pytest.raises(NotSupportedHere, match="slirp4netns did not start: open.*Permission denied"):
        usernet.start_slirp(ledger, os.getpid())
    usernet.stop(ledger)


def test_the_host_is_checked_before_anything_is_made(monkeypatch, tmp_path):
    real_find = usernet.find_program
    monkeypatch.setattr(usernet, "find_program", lambda name: None if name == "slirp4netns" else real_find(name))
    with pytest.raises(NotSupportedHere) as missing:
        usernet.check_host()
    assert "slirp4netns is not installed" in missing.value.message and "apt-get install slirp4netns" in \
        missing.value.fix
    monkeypatch.setattr(usernet, "find_program", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(usernet, "TUN", str(tmp_path / "no-tun"))
    with pytest.raises(NotSupportedHere) as no_driver:
        usernet.check_host()
    assert no_driver.value.errno == errno.ENOENT and "modprobe tun" in no_driver.value.fix
    real_open = os.open

    def refusing_open(path, *args):
        if path == usernet.TUN:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *args)
    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(NeedsPrivilege) as refused:
        usernet.check_host()
    assert "Permission denied" in refused.value.message and "chmod 0666 /dev/net/tun" in refused.value.fix


def test_the_routers_bridge_has_the_gateways_mac_from_its_creation(monkeypatch):
    from labcore.kernel import netlink
    loaded = []
    monkeypatch.setattr(network, "nft", lambda rules, what: loaded.append(what))
    with netlink.use(netlink.Recorder()) as rec:
        usernet.add_bridge(network.DEFAULT)
    assert rec.commands()[:3] == [f"link add {network.DEFAULT.bridge} address "
                                  f"{network.mac_for(network.DEFAULT.gateway)} type bridge",
                                  f"addr add {network.DEFAULT.gateway}/{network.DEFAULT.prefixlen} dev "
                                  f"{network.DEFAULT.bridge}", f"link set {network.DEFAULT.bridge} up"]
    assert loaded == [f"the rules of {network.DEFAULT.bridge}"]


def test_the_port_proxy_enters_the_router_namespace_with_the_listener_from_the_host(monkeypatch):
    started = {}
    monkeypatch.setattr("labcore.kernel.process.spawn",
                        lambda argv, pass_fds=(): started.update(argv=argv, fds=pass_fds))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        portproxy.start(listener, ("10.203.0.2", 80), inside=4242)
        assert started["fds"] == (listener.fileno(),)
    argv = started["argv"]
    assert argv[:6] == ["nsenter", "--target=4242", "--user", "--net", "--preserve-credentials", "--"]
    assert argv[6:8] == [sys.executable, "-I"] and argv[-1] == "10.203.0.2:80"


def test_joining_a_user_namespace_is_one_setns_with_clone_newuser():
    with syscalls.use(syscalls.Recorder()) as rec:
        userns.join(os.getpid())
    assert rec.names() == ["setns"] and rec.calls[0][1][1] == syscalls.CLONE_NEWUSER


def test_a_zombie_owner_counts_as_dead():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    owner = journal.owner_of(pid)
    try:
        for _ in range(500):                                 # until the exit is done and only the wait is left
            if not journal.running(pid):
                break
            time.sleep(0.01)
        assert journal.process_start_time(pid) == owner["start"]     # still in /proc, with its start time
        assert not journal.owner_alive(owner)
    finally:
        os.waitpid(pid, 0)


def test_a_link_in_a_namespace_is_deleted_there_only_while_its_holder_runs(monkeypatch):
    runs = []
    monkeypatch.setattr(network, "in_netns", lambda pid, fn, *args: runs.append((pid, fn.__name__, *args)))
    with pytest.raises(LabError, match="refusing"):
        network.undo_link_in("eth0", os.getpid(), journal.process_start_time(os.getpid()))
    network.undo_link_in("lcab12h", dead_pid(), None)
    assert runs == []                                       # gone with its namespace: nothing to do
    network.undo_link_in("lcab12h", os.getpid(), journal.process_start_time(os.getpid()))
    assert runs == [(os.getpid(), "delete_link", "lcab12h")]


def rootless_container(publish=(), network_name="bridge"):
    spec = container.Spec("busybox", ["true"], publish=list(publish), network=network_name)
    return types.SimpleNamespace(spec=spec, plan=types.SimpleNamespace(rootless=True), scope=Scope(),
                                 usernet=None)


def test_a_rootless_container_joins_the_user_mode_network(monkeypatch):
    monkeypatch.setattr(usernet, "join", lambda scope: usernet.Usernet(holder=4242, slirp=4343))
    box = rootless_container()
    assert container.prepare_network(box) == 4242 and box.usernet.slirp == 4343
    assert container.prepare_network(rootless_container(network_name="none")) is None


def test_where_the_host_refuses_it_only_a_container_asking_for_ports_fails(monkeypatch):
    def refused(scope):
        raise NotSupportedHere("slirp4netns is not installed", fix="apt-get install slirp4netns")
    monkeypatch.setattr(usernet, "join", refused)
    alone = rootless_container()
    assert container.prepare_network(alone) is None and alone.usernet is None       # loopback only
    with pytest.raises(NotSupportedHere, match="slirp4netns"):
        container.prepare_network(rootless_container(publish=["8080:80"]))


def test_a_refused_network_is_a_refused_step_and_publish_says_why(monkeypatch):
    box = build_your_own.Box(types.SimpleNamespace(ref="busybox:latest", config={}))
    box.done = ["start", "layers", "mount_overlay", "fork_child", "join_cgroup", "unshare"]
    box.network_refused = NotSupportedHere("slirp4netns is not installed", fix="apt-get install slirp4netns")
    monkeypatch.setattr(build_your_own.os, "geteuid", lambda: 1001)
    with syscalls.use(syscalls.Recorder()) as kernel:
        wired = box.connect_network()
        web = box.publish(18808, 80)
    assert wired.mode is Mode.NOT_PERMITTED and "slirp4netns is not installed" in wired.reason
    assert "connect_network" in box.refused                 # the box goes on, with loopback only
    assert web.mode is Mode.NOT_PERMITTED and "needs connect_network(), which this host refused" in web.reason
    assert "publish" in box.refused                         # so wait() stops a server nobody can reach
    assert kernel.calls == []
