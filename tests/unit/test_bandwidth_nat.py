"""Bandwidth (a tbf qdisc on a veth's host end) and NAT (nftables DNAT and MASQUERADE) without root: the order of
calls through the netlink recorder and a recording nft, each object journaled before it is made and undone."""
import errno
import os
import shutil
from pathlib import Path

import pytest

from labcore.errors import BadInput, LabError, NotFound, NotSupportedHere, from_oserror
from labcore.kernel import journal, nat, netlink, network

HOST_END = {"ifname": "lcab12h", "operstate": "UP", "master": "lcbr0"}


def test_a_rate_limit_is_journaled_then_a_tbf_at_the_root_and_the_scope_removes_it():
    with netlink.use(netlink.Recorder(links=[dict(HOST_END)])) as rec:
        with journal.Scope() as scope:
            made = network.limit_rate("lcab12h", 16_000_000, scope)
            assert [(entry.kind, entry.undo, entry.args) for entry in scope.entries] == [
                ("qdisc", "qdisc", {"name": "lcab12h"})]
            assert rec.commands() == ["qdisc add dev lcab12h root tbf rate 16000000bit burst 65536 latency 50ms"]
            assert (made["kind"], made["rate"], made["burst"], made["root"]) == ("tbf", 16_000_000, 65536, True)
            rec.calls.clear()
        assert rec.commands() == ["qdisc del dev lcab12h root"]
        assert network.root_qdisc("lcab12h")["kind"] == "noqueue"          # a veth's default again


def test_the_burst_holds_ten_milliseconds_of_a_fast_rate():
    with netlink.use(netlink.Recorder(links=[dict(HOST_END)])) as rec:
        with journal.Scope() as scope:
            network.limit_rate("lcab12h", 1_000_000_000, scope)
            assert "burst 1250000 " in rec.commands()[0]


def test_a_rate_limit_on_a_link_not_ours_is_refused_before_anything():
    with netlink.use(netlink.Recorder(links=[{"ifname": "eth0"}])) as rec:
        with journal.Scope() as scope:
            with pytest.raises(BadInput, match="eth0"):
                network.limit_rate("eth0", 16_000_000, scope)
            assert scope.entries == [] and rec.commands() == []


def test_undoing_a_qdisc_whose_link_is_gone_does_nothing():
    with netlink.use(netlink.Recorder()) as rec:
        network.undo_qdisc("lcgoneh")
        assert rec.commands() == []
    with pytest.raises(LabError, match="refusing"):
        network.undo_qdisc("eth0")


def test_undoing_a_qdisc_whose_link_goes_between_the_look_and_the_query_is_done():
    # a veth goes when its namespace's teardown (a kernel worker) gets to it: here after link_exists looked
    with netlink.use(netlink.Recorder(links=[{"ifname": "lcab12h"}])) as rec:
        def gone(name):            # as the real backend's _index answers for a name no link has
            raise from_oserror(OSError(errno.ENODEV, os.strerror(errno.ENODEV)), f"netlink: no link {name}")
        rec.qdiscs = gone
        network.undo_qdisc("lcab12h")
        assert rec.commands() == []


def test_a_tbf_message_reads_as_tc_shows_it():
    message = {"TCA_KIND": "tbf", "parent": netlink.TC_H_ROOT, "handle": 0x10000,
               "TCA_OPTIONS": {"TCA_TBF_PARMS": {"rate": 2_000_000, "limit": 132768}},      # bytes per second
               "TCA_STATS": {"bytes": 2193592, "packets": 1458, "drop": 3, "overlimits": 40}}
    assert netlink._qdisc(message, "lcab12h") == {
        "dev": "lcab12h", "kind": "tbf", "root": True, "handle": "1:", "rate": 16_000_000, "bytes": 2193592,
        "packets": 1458, "drops": 3, "overlimits": 40}


@pytest.fixture
def recorded_nft(monkeypatch):
    """nft(8) replaced: what it is given to load, and whether the journal held the table at that moment."""
    loaded = []

    def load(rules, what):
        names = [entry.name for entry in journal.Journal().entries()]
        loaded.append((rules, what, names))
    monkeypatch.setattr(nat, "nft", load)
    return loaded


def test_a_dnat_table_is_journaled_before_nft_loads_it(recorded_nft, monkeypatch):
    with journal.Scope() as scope:
        nat.publish("labcore-dnat-ab12", 18810, "10.203.0.2", 8080, scope)
        rules, _, journaled = recorded_nft[0]
        assert journaled == ["labcore-dnat-ab12"]
        assert "table ip labcore-dnat-ab12" in rules and "type nat hook output" in rules
        assert "ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 18810 counter dnat to 10.203.0.2:8080" in rules
        assert "prerouting" not in rules                   # never from another machine
        deleted = []
        monkeypatch.setattr(nat, "_nft", lambda *argv: deleted.append(argv) or "")
    assert deleted[-1] == ("delete", "table", "ip", "labcore-dnat-ab12")


def test_the_masquerade_is_dockers_rule_and_forwarding_is_confined_to_one_link(recorded_nft, monkeypatch):
    monkeypatch.setattr(nat, "_nft", lambda *argv: None)         # undone: no such table any more
    with journal.Scope() as scope:
        nat.forward_only("labcore-fwd-ab12", "lcbr0", "lcab12o", scope)
        nat.masquerade("labcore-masq-ab12", "10.203.0.0/24", "lcbr0", scope)
        (only, _, _), (masq, _, _) = recorded_nft
        assert 'ip saddr 10.203.0.0/24 oifname != "lcbr0" counter masquerade' in masq
        assert 'iifname "lcbr0" oifname != { "lcbr0", "lcab12o" } counter drop' in only
        assert 'ct state != { established, related } counter drop' in only


def test_nat_refuses_a_table_or_a_link_the_lab_could_not_have_made():
    with journal.Scope() as scope:
        for bad in ("docker-nat", "labcore-x;flush ruleset", "labcore x"):
            with pytest.raises(BadInput):
                nat.publish(bad, 18810, "10.203.0.2", 80, scope)
        with pytest.raises(BadInput):
            nat.allow_forwarding("eth0", scope)
        assert scope.entries == []
    with pytest.raises(LabError, match="refusing"):
        nat.undo_table("filter")
    with pytest.raises(LabError, match="refusing"):
        nat.undo_forwarding("eth0")


def test_the_peer_network_is_a_veth_pair_journaled_then_made_then_configured_inside(monkeypatch):
    with netlink.use(netlink.Recorder()) as rec:
        monkeypatch.setattr(network, "check_own_netns", lambda pid: 4026532999)
        inside = []
        monkeypatch.setattr(network, "in_netns", lambda pid, fn, *args: (inside.append(pid), fn(*args))[1])
        with journal.Scope() as scope:
            net = nat.wire_peer(4242, scope, "ab12", "10.204.0.0/30")
            assert [entry.undo for entry in scope.entries] == ["link"]
            assert (net.bridge, net.gateway, nat.peer_address(net)) == ("lcab12o", "10.204.0.1", "10.204.0.2")
            assert rec.commands() == [
                "link add lcab12o type veth peer name lcab12p", "addr add 10.204.0.1/30 dev lcab12o",
                "link set lcab12o up", "link set lcab12p netns 4242",
                "link set lo up",                                             # from here on, in pid 4242's
                "link set lcab12p name eth0 address 02:42:0a:cc:00:02", "addr add 10.204.0.2/30 dev eth0",
                "link set eth0 up", "route add default via 10.204.0.1 dev eth0"]
            assert inside == [4242]
            rec.calls.clear()
        assert rec.commands() == ["link delete lcab12o"]


def test_the_counters_are_read_from_nfts_json(monkeypatch):
    listing = ('{"nftables": [{"metainfo": {}}, {"table": {"name": "labcore-dnat-ab12"}}, {"rule": {"comment": '
               '"publish", "expr": [{"match": {}}, {"counter": {"packets": 1, "bytes": 60}}, {"dnat": {}}]}}]}')
    monkeypatch.setattr(nat, "_nft", lambda *argv: listing)
    assert nat.counters("labcore-dnat-ab12") == {"publish": {"packets": 1, "bytes": 60}}
    monkeypatch.setattr(nat, "_nft", lambda *argv: None)
    assert nat.counters("labcore-dnat-ab12") == {}


@pytest.mark.parametrize("name", ["limit_bandwidth", "publish_dnat", "masquerade_outbound"])
def test_a_box_refused_its_network_has_each_step_refused_naming_it(name):
    from types import SimpleNamespace

    from labcore.lessons import build_your_own
    from labcore.lessons.evidence import NOT_RUN
    box = build_your_own.Box(SimpleNamespace(ref="busybox:latest"))
    box.refused["connect_network"] = "unshare(CLONE_NEWUSER) was refused"
    step = getattr(build_your_own, name)(box)
    assert not step.permitted and "the box's network" in step.reason
    assert step.data["packets"] is NOT_RUN and step.key == f"box.{name}"


def test_a_fresh_cleanup_finds_every_new_undo():
    """`labcore cleanup` after a crash has imported no mechanism: journal.MECHANISMS must lead to each undo."""
    import subprocess
    import sys
    from pathlib import Path
    code = ("from labcore.kernel import journal; "
            "print(all(callable(journal.operation(n)) for n in ('qdisc', 'nft_table', 'forwarding_off')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2])              # this checkout's labcore, not an installed one
    assert done.stdout.strip() == "True", done.stderr


@pytest.mark.parametrize("mbit", [0, 0.5, -3])
def test_a_rate_below_one_mbit_is_refused_before_the_box_is_looked_at(mbit):
    from labcore.lessons import build_your_own
    with pytest.raises(BadInput, match="at least 1 Mbit/s"):
        build_your_own.limit_bandwidth(None, mbit=mbit)


def test_the_notes_say_what_was_measured_not_what_was_expected():
    from types import SimpleNamespace

    from labcore.lessons import build_your_own as byo
    held = byo.bandwidth_note(2, 16, 900.0, 15.8)
    assert "900.0 Mbit/s free and 15.8 Mbit/s under a 16 Mbit/s limit" in held and "not held" not in held
    assert "not held" in byo.bandwidth_note(2, 16, 900.0, 850.0)
    assert "then the host's 10.204.0.1" not in byo.masquerade_note(["10.203.0.2", "10.204.0.1"], "10.203.0.2",
                                                                   "10.204.0.1")
    assert "not the box's" in byo.masquerade_note(["10.203.0.2", "10.203.0.2"], "10.203.0.2", "10.204.0.1")
    ok, bad = SimpleNamespace(returncode=0), SimpleNamespace(returncode=1)
    assert "read the file back" in byo.composerize_note(ok, ok)
    assert "refused the file" in byo.composerize_note(ok, bad) and "not installed" in byo.composerize_note(ok, None)


@pytest.fixture
def forwarding_files(tmp_path, monkeypatch):
    """The sysctls as plain files, and the holders and the lock in tmp_path: no host setting is touched."""
    conf = tmp_path / "conf"
    for link in ("lcbr0", "lcab12o"):
        (conf / link).mkdir(parents=True)
        (conf / link / "forwarding").write_text("0")
    monkeypatch.setattr(nat.procfs, "sysctl_path", lambda name: str(conf / name.split(".")[3] / "forwarding"))
    monkeypatch.setattr(network, "FORWARDING_HOLDERS", tmp_path / "holders")
    monkeypatch.setattr(network, "lock_path", lambda net: tmp_path / "bridge.lock")
    return lambda link: (conf / link / "forwarding").read_text()


def test_the_shared_bridge_forwards_until_its_last_holder_is_undone(forwarding_files):
    with journal.Scope() as first:
        nat.allow_forwarding("lcbr0", first)
        with journal.Scope() as second:                 # another lab's masquerade step, at the same time
            nat.allow_forwarding("lcbr0", second)
            nat.allow_forwarding("lcab12o", second)
        assert forwarding_files("lcbr0") == "1"         # the first step still routes through it
        assert forwarding_files("lcab12o") == "0"
        network.forbid_forwarding("lcbr0")              # a container connecting meanwhile leaves it on
        assert forwarding_files("lcbr0") == "1"
    assert forwarding_files("lcbr0") == "0" and not network.FORWARDING_HOLDERS.exists()


def test_a_link_gone_before_its_undo_took_its_setting_with_it(forwarding_files, monkeypatch):
    """The outside end of the masquerade's peer network goes when the outside child's namespace does, in a
    kernel worker, possibly while the scope undoes: the write's ENOENT is the setting gone, not a failure."""
    conf = Path(nat.procfs.sysctl_path("net.ipv4.conf.lcab12o.forwarding")).parents[1]
    with journal.Scope() as scope:
        nat.allow_forwarding("lcab12o", scope)
        assert forwarding_files("lcab12o") == "1"
        shutil.rmtree(conf / "lcab12o")                  # the namespace went, and the veth pair with it
    assert scope.entries == [] and not network.FORWARDING_HOLDERS.exists()
    with pytest.raises(NotFound):                        # only the undo takes ENOENT as done
        network.set_forwarding("lcab12o", "0")


def test_the_other_network_takes_a_free_slash_30(monkeypatch):
    held = [{"ifname": "lcx1o", "addr_info": [{"family": "inet", "local": "10.204.0.1"}]}]
    with netlink.use(netlink.Recorder(links=held)):
        assert nat.free_peer_subnet("10.204.0.0/28") == "10.204.0.4/30"
    every = [{"ifname": f"lcx{i}o", "addr_info": [{"family": "inet", "local": f"10.204.0.{4 * i + 1}"}]}
             for i in range(4)]
    with netlink.use(netlink.Recorder(links=every)):
        with pytest.raises(NotSupportedHere, match="every /30 of 10.204.0.0/28"):
            nat.free_peer_subnet("10.204.0.0/28")
