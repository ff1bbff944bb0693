"""labcore.kernel.network on the real kernel, as root: eth0 in the child's namespace only, traffic both ways over the
bridge, two servers on port 80, published ports, the shared bridge's last one out. Without root, the same
steps run on the user-mode network: tests/privileged/test_usernet.py."""
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from labcore.kernel import journal, network
from labcore.lessons import client_server
from labcore.lessons.evidence import Mode
from tests.conftest import eventually, privileged

pytestmark = privileged


def lab_links() -> list[str]:
    """Every interface of ours on the host, read back with `ip -j link`."""
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [link["ifname"] for link in json.loads(out) if link["ifname"].startswith("lc")]


def host_link(name: str) -> dict | None:
    done = subprocess.run(["ip", "-j", "-d", "link", "show", name], capture_output=True, text=True)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def neighbours(pid: int) -> dict[str, str]:
    """``pid``'s network namespace's neighbour table, as `ip -j neigh` reads it: address -> MAC."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "neigh"], capture_output=True, text=True,
                         check=True).stdout
    return {entry["dst"]: entry.get("lladdr", "") for entry in json.loads(out)}


def proxies() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"portproxy.py" in open(f"/proc/{pid}/cmdline", "rb").read():
                found.append(int(pid))
        except OSError:
            pass                      # it ended while we looked
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Beyond conftest's journal check: no link, bridge, proxy, named netns or child process of ours."""
    assert lab_links() == [], "lc links were there before the test"
    yield
    assert lab_links() == []
    assert "labcore" not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    assert eventually(lambda: proxies() == []), f"proxies left running: {proxies()}"
    children = f"/proc/{os.getpid()}/task/{os.getpid()}/children"
    assert eventually(lambda: open(children).read().split() == []), "child processes left running"


def test_eth0_is_in_the_childs_namespace_and_traffic_flows_both_ways():
    with journal.Scope() as scope, client_server.Server("probe", scope, port=8000) as server:
        endpoint = network.connect(server.pid, scope, short_id="ptest1")
        gateway = endpoint.network.gateway
        # the host end is on the bridge and carries the lease; the other end is not on the host at all
        host_end = host_link("lcptest1h")
        assert host_end["master"] == "lcbr0" and host_end["ifalias"] == endpoint.ip
        assert host_link("lcptest1c") is None
        assert open("/proc/sys/net/ipv4/conf/lcbr0/forwarding").read().strip() == "0"
        # inside: its own namespace, eth0 with the address, a default route via the bridge
        inside = network.in_netns(server.pid, network.read_interfaces)
        assert endpoint.netns == network.netns_inode(server.pid) != network.netns_inode("self")
        assert inside["net ns"] == f"net:[{endpoint.netns}]"
        assert inside["eth0"] == f"UP {endpoint.ip}/24"
        assert inside["default route"] == f"via {gateway} dev eth0"
        assert set(inside) == {"net ns", "lo", "eth0", "default route"}           # no host interface
        # the child reaches the host's bridge address: the host sees the connection come from the child's IP
        with socket.create_server((gateway, 0)) as listener:
            port = listener.getsockname()[1]
            local = network.in_netns(server.pid, lambda: socket.create_connection((gateway, port), 5).getsockname())
            conn, peer = listener.accept()
            conn.close()
        assert local[0] == peer[0] == endpoint.ip
        # the host reaches the child's server through the veth address
        assert network.ask(endpoint.ip, 8000) == server.inside["identity"]


def test_two_servers_on_port_80_answer_with_their_own_identity():
    step = client_server.two_servers_on_port_80(host_ports=(0, 0))      # free ports: never collide with a user's
    assert step.mode is Mode.ROOT, step.reason
    a, b = step.data["servers"]["server-a"], step.data["servers"]["server-b"]
    assert a["identity"] != b["identity"] and a["ip"] != b["ip"]
    assert len({a["net_ns"], b["net_ns"], step.before["net ns"]}) == 3
    for server in (a, b):
        assert "0.0.0.0:80" in server["listening"]
        assert server["second_bind"].startswith("EADDRINUSE")
        assert server["from_bridge"] == server["identity"]                    # from the host
        assert server["published"] == server["identity"]
    assert a["from_other"] == a["identity"] and b["from_other"] == b["identity"]     # one reaches the other
    second_bind = next(value for key, value in step.before.items() if key.startswith("second bind"))
    assert second_bind.startswith("EADDRINUSE")                   # the host refuses a port already taken
    assert step.data["links_left"] == []


def test_network_none_is_lo_up_and_nothing_else():
    with journal.Scope() as scope, client_server.Server("alone", scope, port=8000) as server:
        network.in_netns(server.pid, network.bring_up, "lo")           # --network none: lo, up
        inside = network.in_netns(server.pid, network.read_interfaces)
        assert set(inside) == {"net ns", "lo", "default route"} and inside["default route"] == "none"
        assert network.in_netns(server.pid, network.ask, "127.0.0.1", 8000) == server.inside["identity"]


def test_a_published_port_forwards_until_disconnect():
    with journal.Scope() as scope, client_server.Server("web", scope, port=8000) as server:
        endpoint = network.connect(server.pid, scope)
        published = network.publish(endpoint, 0, 8000, scope)     # `-p 127.0.0.1::8000`: a port of the kernel's
        assert published.host_port != 0 and published.pid in proxies()
        assert network.ask("127.0.0.1", published.host_port) == server.inside["identity"]
        network.disconnect(endpoint, scope)
        assert eventually(lambda: published.pid not in proxies())
        assert lab_links() == [] and not [e for e in scope.entries if e.kind in ("bridge", "link")]
        with pytest.raises(ConnectionRefusedError):
            network.ask("127.0.0.1", published.host_port)


def test_the_bridge_is_shared_and_removed_by_the_last_one_out():
    with journal.Scope() as first_scope, client_server.Server("one", first_scope, port=8000) as one:
        with journal.Scope() as second_scope, client_server.Server("two", second_scope, port=8000) as two:
            first = network.connect(one.pid, first_scope)
            second = network.connect(two.pid, second_scope)
            assert first.ip != second.ip
            # containers on one bridge reach each other directly, with no routing (forwarding is off)
            assert network.in_netns(one.pid, network.ask, second.ip, 8000) == two.inside["identity"]
            network.disconnect(first, first_scope)
            assert host_link("lcbr0") is not None                 # still in use by the second one
            assert network.ask(second.ip, 8000) == two.inside["identity"]
        assert host_link("lcbr0") is None                         # the last one out removed it


def test_the_bridge_keeps_its_mac_while_containers_come_and_go():
    """A bridge without a MAC of its own takes its lowest port's (br_stp_recalculate_bridge_id), so it changed
    each time a container's veth came or went, and a container that had learnt the old MAC sent the host its
    packets into the void until its neighbour entry went stale, tens of seconds later. Docker gives docker0 a
    MAC of its own for that reason (moby, libnetwork/drivers/bridge/setup_device.go); so does labcore: the
    gateway's (network.bridge_mac)."""
    with journal.Scope() as scope, client_server.Server("stays", scope, port=8000) as stays, \
            socket.create_server(("0.0.0.0", 0)) as listener:
        endpoint = network.connect(stays.pid, scope)
        gateway, port = endpoint.network.gateway, listener.getsockname()[1]
        assert Path("/sys/class/net/lcbr0/addr_assign_type").read_text().strip() == "3"     # NET_ADDR_SET
        mac = host_link("lcbr0")["address"]
        assert mac == network.mac_for(gateway)
        for name in ("one", "two", "three", "four"):                  # veths with random MACs, plugged and gone
            with journal.Scope() as passing_scope, client_server.Server(name, passing_scope, port=8000) as passing:
                network.connect(passing.pid, passing_scope)
                assert host_link("lcbr0")["address"] == mac
                # the container speaks first, so it learns the gateway's MAC now, while the other is plugged in
                network.in_netns(stays.pid, lambda: socket.create_connection((gateway, port), 5).close())
                listener.accept()[0].close()
            assert host_link("lcbr0")["address"] == mac
            learnt = neighbours(stays.pid)
            assert learnt.get(gateway) == mac, learnt
            network.in_netns(stays.pid, lambda: socket.create_connection((gateway, port), 5).close())
            listener.accept()[0].close()

