"""labcore.kernel.network without root: -p parsing, interface names, address allocation, evidence parsers, the
order of syscalls, and the port proxy relaying between two loopback sockets (which needs no privilege)."""
import errno
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from labcore.errors import BadInput, LabError, NeedsPrivilege
from labcore.kernel import journal, netlink, network, portproxy, procfs, syscalls
from tests.conftest import eventually
from labcore.kernel.network import DEFAULT, PortMapping


@pytest.mark.parametrize("text, expected", [
    ("8080:80", PortMapping("127.0.0.1", 8080, 80)),
    ("127.0.0.1:8080:80", PortMapping("127.0.0.1", 8080, 80)),
    ("127.0.0.2:8080:80/tcp", PortMapping("127.0.0.2", 8080, 80)),
    ("80", PortMapping("127.0.0.1", 0, 80)),
    ("80/tcp", PortMapping("127.0.0.1", 0, 80)),
    ("127.0.0.1::80", PortMapping("127.0.0.1", 0, 80)),
    ("0:80", PortMapping("127.0.0.1", 0, 80)),                      # HostPort "0": the kernel's choice
    ("5353:53/udp", PortMapping("127.0.0.1", 5353, 53, "udp")),
])
def test_publish_accepts_dockers_forms_on_loopback(text, expected):
    assert network.parse_publish(text) == expected


@pytest.mark.parametrize("text, says", [
    ("0.0.0.0:8080:80", "loopback"), ("192.0.2.2:8080:80", "loopback"), ("[::1]:8080:80", "127.0.0.1 only"),
    ("8080:80/sctp", "TCP and UDP only"), ("8000-8010:80", "ranges"), ("80:http", "invalid port"),
    ("70000", "invalid port"), ("80:0", "invalid port"), ("1:2:3:4", "invalid port mapping"), ("", "invalid port"),
    ("localhost:80:80", "invalid"),
])
def test_publish_refuses_other_forms_naming_the_accepted_ones(text, says):
    with pytest.raises(BadInput) as caught:
        network.parse_publish(text)
    assert says in caught.value.message
    assert "127.0.0.1" in caught.value.fix


def test_interface_names_fit_ifnamsiz():
    host, peer = network.interface_names("0123456789ab")              # the longest id
    assert (host, peer) == ("lc0123456789abh", "lc0123456789abc")
    assert all(len(name.encode()) <= network.IFNAMSIZ - 1 for name in (host, peer))
    for bad in ("0123456789abc", "", "ABC", "a-b", "../x"):
        with pytest.raises(BadInput):
            network.interface_names(bad)


def test_taken_addresses_are_the_aliases_of_our_host_ends():
    links = [{"ifname": "lcaaah", "ifalias": "10.203.0.2"}, {"ifname": "lcbbbh", "ifalias": "10.203.0.4"},
             {"ifname": "lcbr0"}, {"ifname": "eth0", "ifalias": "10.203.0.9"}]      # not ours: ignored
    with netlink.use(netlink.Recorder(links=links)):
        assert network.taken_addresses() == {"10.203.0.2", "10.203.0.4"}


def inline_netns(monkeypatch, rec):
    """network.in_netns without the child: the calls inside are marked by an ("enter", pid) call."""
    def in_netns(pid, fn, *args):
        rec.calls.append(("enter", (pid,)))
        return fn(*args)
    monkeypatch.setattr(network, "in_netns", in_netns)
    monkeypatch.setattr(network, "check_own_netns", lambda pid: 4026532999)
    monkeypatch.setattr(network, "forbid_forwarding", lambda bridge: rec.calls.append(("forwarding=0", (bridge,))))


def made(rec) -> list[str]:
    """What was asked of the kernel, in order, as ip(8) commands; "enter PID" where the child setns'd."""
    return [f"enter {args[0]}" if name == "enter" else f"sysctl {args[0]} forwarding=0" if name == "forwarding=0"
            else netlink._COMMANDS[name](*args) for name, args in rec.calls if name not in netlink._QUERIES]


def test_connect_makes_the_bridge_then_the_veth_pair_then_configures_the_inside(monkeypatch):
    with netlink.use(netlink.Recorder()) as rec:
        inline_netns(monkeypatch, rec)
        with journal.Scope() as scope:
            endpoint = network.connect(4242, scope, short_id="ab12")
            assert [entry.undo for entry in scope.entries] == ["bridge", "link"]    # journaled before made
            assert made(rec) == [
                "link add lcbr0 address 02:42:0a:cb:00:01 type bridge",        # the gateway's MAC: bridge_mac
                "addr add 10.203.0.1/24 dev lcbr0", "link set lcbr0 up",
                "sysctl lcbr0 forwarding=0",
                "link add lcab12h type veth peer name lcab12c", "link set lcab12h alias 10.203.0.2 master lcbr0 up",
                "link set lcab12c netns 4242", "neigh flush to 10.203.0.2 dev lcbr0",
                "enter 4242", "link set lo up", "link set lcab12c name eth0 address 02:42:0a:cb:00:02",
                "addr add 10.203.0.2/24 dev eth0", "link set eth0 up", "route add default via 10.203.0.1 dev eth0"]
            assert (endpoint.ip, endpoint.host_ifname, endpoint.mac) == ("10.203.0.2", "lcab12h", "02:42:0a:cb:00:02")
            rec.calls.clear()
        # Leaving the scope deletes the pair; the bridge goes with its last port.
        assert made(rec) == ["link delete lcab12h", "link delete lcbr0"]


def test_a_second_container_plugs_into_the_bridge_there_is_and_takes_the_next_address(monkeypatch):
    bridge = {"ifname": "lcbr0", "operstate": "UP", "addr_info": [{"family": "inet", "local": "10.203.0.1",
                                                                     "prefixlen": 24}]}
    first = {"ifname": "lcfirsth", "ifalias": "10.203.0.2", "master": "lcbr0"}
    with netlink.use(netlink.Recorder(links=[bridge, first])) as rec:
        inline_netns(monkeypatch, rec)
        with journal.Scope() as scope:
            network.connect(4243, scope, short_id="cd34", default_route=False, ifname="eth1")
            assert made(rec)[:3] == ["link set lcbr0 up", "sysctl lcbr0 forwarding=0",
                                     "link add lccd34h type veth peer name lccd34c"]
            assert "addr add 10.203.0.3/24 dev eth1" in made(rec) and not any("route" in c for c in made(rec))
            rec.calls.clear()
        assert made(rec) == ["link delete lccd34h"]            # another port is still on the bridge


def test_a_refused_netlink_call_is_a_lab_error_with_the_errno_and_nothing_is_left(monkeypatch):
    with netlink.use(netlink.Recorder(fail={"link_add": errno.EPERM})) as rec:
        inline_netns(monkeypatch, rec)
        with journal.Scope() as scope:
            with pytest.raises(NeedsPrivilege, match="link_add"):
                network.connect(4242, scope, short_id="ab12")
            assert [entry.undo for entry in scope.entries] == ["bridge"]
        assert journal.Journal().entries() == []


def test_free_address_is_the_lowest_after_the_gateway():
    assert DEFAULT.gateway == "10.203.0.1" and DEFAULT.prefixlen == 24
    assert network.free_address(DEFAULT, set()) == "10.203.0.2"
    assert network.free_address(DEFAULT, {"10.203.0.2", "10.203.0.4"}) == "10.203.0.3"
    tiny = network.Network("lctest", "10.203.0.0/30")                 # .1 the gateway, .2 the only container
    with pytest.raises(LabError, match="no free address"):
        network.free_address(tiny, {"10.203.0.2"})


def test_the_lock_serializes_allocations(labcore_home):
    """A second holder of the bridge's host-wide lock waits until the first lets go."""
    path = network.lock_path(DEFAULT)
    assert path.parent == Path("/run/lock") and path.name.startswith("labcore-")
    held = threading.Event()
    order = []

    def other():
        with network.locked(path):
            order.append("other")

    with network.locked(path):
        thread = threading.Thread(target=lambda: (held.set(), other()))
        thread.start()
        held.wait()
        thread.join(0.2)
        order.append("first")       # flock(2) locks belong to an open file: the other open waits for us
    thread.join()
    assert order == ["first", "other"]


def test_connect_refuses_the_callers_own_namespace_before_making_anything():
    with journal.Scope() as scope:
        with pytest.raises(BadInput, match="unshare"):
            network.connect(os.getpid(), scope)
        assert scope.entries == []


def test_netlink_refusals_become_lab_errors_with_the_errno():
    from pyroute2.netlink.exceptions import NetlinkError
    with pytest.raises(NeedsPrivilege) as refused:
        with netlink.Kernel()._socket("link add lcbr0 type bridge"):
            raise NetlinkError(errno.EPERM, "Operation not permitted")
    assert refused.value.errno == errno.EPERM and "labcore.kernel.usernet" in refused.value.fix
    assert "ip link add lcbr0 type bridge" in refused.value.message
    with pytest.raises(LabError) as exists:
        with netlink.Kernel()._socket("link add lcx type veth"):
            raise NetlinkError(errno.EEXIST, "File exists")
    assert exists.value.errno == errno.EEXIST


def test_enter_netns_is_one_setns_with_clone_newnet():
    with syscalls.use(syscalls.Recorder()) as rec:
        network.enter_netns(os.getpid())
    assert rec.names() == ["setns"]
    assert rec.calls[0][1][1] == syscalls.CLONE_NEWNET


def test_ipv4_addresses_summarise_ip_json():
    dump = [{"ifname": "lo", "operstate": "UNKNOWN", "addr_info": [
                {"family": "inet", "local": "127.0.0.1", "prefixlen": 8},
                {"family": "inet6", "local": "::1", "prefixlen": 128}]},
            {"ifname": "eth0", "operstate": "DOWN", "addr_info": []}]
    assert network.ipv4_addresses(dump) == {"lo": "UNKNOWN 127.0.0.1/8", "eth0": "DOWN"}


def test_publish_refuses_a_non_loopback_host_address_before_binding():
    endpoint = network.Endpoint(pid=1, ip="10.203.0.2", network=DEFAULT, host_ifname="lcxh")
    with journal.Scope() as scope:
        for host_ip in ("0.0.0.0", "192.0.2.2"):
            with pytest.raises(BadInput, match="loopback"):
                network.publish(endpoint, 8080, 80, scope, host_ip=host_ip)
        with pytest.raises(BadInput):
            network.publish(endpoint, 8080, 0, scope)
        assert scope.entries == []


@pytest.mark.skipif(not os.access(os.path.realpath(sys.executable), os.X_OK),
                    reason=f"this user may not execute {sys.executable}, which runs the proxy")
def test_the_proxy_relays_both_ways_and_passes_the_eof_on():
    """portproxy between two loopback sockets: unprivileged, and the same code as for a container."""
    with socket.create_server(("127.0.0.1", 0)) as upstream, socket.create_server(("127.0.0.1", 0)) as front:
        def echo_once():
            conn, _ = upstream.accept()
            with conn:
                data = b""
                while chunk := conn.recv(4096):          # until the proxy passes the client's EOF on
                    data += chunk
                conn.sendall(data.upper())
        server = threading.Thread(target=echo_once)
        server.start()
        process = portproxy.start(front, upstream.getsockname())
        try:
            with socket.create_connection(front.getsockname(), timeout=5) as client:
                client.sendall(b"hello through the proxy")
                client.shutdown(socket.SHUT_WR)
                assert client.recv(4096) == b"HELLO THROUGH THE PROXY"
        finally:
            journal.undo_kill(process.pid, journal.process_start_time(process.pid))
            server.join(5)
        assert process.wait(5) == -9                     # killed, and reaped by its waiter thread


@pytest.mark.skipif(not os.access(os.path.realpath(sys.executable), os.X_OK),
                    reason=f"this user may not execute {sys.executable}, which runs the proxy")
def test_the_proxy_relays_udp_datagrams_back_to_the_client_that_sent_them():
    """`-p 5353:53/udp`: each client's datagrams leave from a socket of its own, the replies come back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as front:
        upstream.bind(("127.0.0.1", 0))
        front.bind(("127.0.0.1", 0))

        def echo(times):
            for _ in range(times):
                data, sender = upstream.recvfrom(512)
                upstream.sendto(data.upper(), sender)
        server = threading.Thread(target=echo, args=(2,))
        server.start()
        process = portproxy.start(front, upstream.getsockname())
        try:
            clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            for number, client in enumerate(clients):
                client.settimeout(5)
                client.sendto(f"datagram {number}".encode(), front.getsockname())
                assert client.recvfrom(512) == (f"DATAGRAM {number}".encode(), front.getsockname())
                client.close()
        finally:
            journal.undo_kill(process.pid, journal.process_start_time(process.pid))
            server.join(5)


@pytest.mark.skipif(not os.access(os.path.realpath(sys.executable), os.X_OK),
                    reason=f"this user may not execute {sys.executable}, which runs the proxy")
def test_a_proxy_whose_parent_dies_before_journaling_it_exits_and_frees_the_port():
    """The go-ahead pipe: end-of-file instead of the byte, and the proxy leaves with the port it held."""
    front = socket.create_server(("127.0.0.1", 0))
    inode = os.fstat(front.fileno()).st_ino
    go, go_ahead = os.pipe()
    process = portproxy.start(front, ("127.0.0.1", 9), go=go)
    os.close(go)
    front.close()
    os.close(go_ahead)                                   # as the parent's death would close it
    assert process.wait(10) == 0
    # That socket listens no more (/proc/net/tcp). Not its port: on a busy machine another process may take
    # the freed port for a listener of its own, or for an outgoing connection (and a bind to prove it fails).
    # Eventually: a fork made meanwhile by another thread of this test run holds the fd until it execs or exits
    # (a full run once saw the socket still listed); the message names whoever still holds it.
    assert eventually(lambda: inode not in [listener.inode for listener in procfs.tcp_listeners()]), \
        f"socket:[{inode}] still listens, held by {socket_holders(inode)}"


def socket_holders(inode: int) -> list[str]:
    """Each process with an fd open on socket ``inode``: its pid and command line, from /proc."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            if f"socket:[{inode}]" in links:
                found.append(f"{pid} {Path(f'/proc/{pid}/cmdline').read_bytes().replace(bytes(1), b' ').decode()}")
        except OSError:
            continue                                    # gone meanwhile, or not ours to read
    return found


def test_publish_journals_the_proxy_before_it_serves(monkeypatch):
    """The record exists before the go-ahead byte is written: a crash in between leaves nothing unrecorded."""
    order = []
    proxy = subprocess.Popen(["sleep", "60"])          # stands in for the proxy: the journal's undo kills it

    kept = []

    def start(listener, target, inside=None, go=None):
        order.append(("start", listener.type, target, len(journal.Journal().entries())))
        kept.append(os.dup(go))                        # the proxy's end of the go-ahead pipe
        return proxy
    monkeypatch.setattr(portproxy, "start", start)
    endpoint = network.Endpoint(pid=1, ip="10.203.0.2", network=DEFAULT, host_ifname="lcxh")
    scope = journal.Scope()
    published = network.publish(endpoint, 0, 53, scope, protocol="udp")
    assert order == [("start", socket.SOCK_DGRAM, ("10.203.0.2", 53), 0)]
    assert len(scope.entries) == 1 and os.read(kept[0], 2) == b"1"   # recorded, then told to serve; then EOF
    os.close(kept[0])
    assert published.protocol == "udp" and published.host_port > 0 and str(published).startswith("53/udp -> ")
    scope.close()
    assert proxy.wait(5) == -9


def test_a_containers_mac_address_is_made_of_its_ip_address_as_dockers_is():
    assert network.mac_for("10.203.0.2") == "02:42:0a:cb:00:02"
    assert network.mac_for("172.17.0.10") == "02:42:ac:11:00:0a"        # what docker-py's test expects of Docker


def test_a_bad_mac_address_is_refused_before_anything_exists():
    from labcore.runtime.spec import Spec, check_spec
    with pytest.raises(BadInput, match="MAC"):
        check_spec(Spec("busybox", mac_address="02:42:zz:00:00:01"))


def test_netlink_works_from_a_running_event_loop_as_in_a_jupyter_kernel():
    """pyroute2 drives an asyncio loop of its own: from inside a running one (ipykernel's) the call moves to a
    thread of its own, and the answer is the same namespace's."""
    import asyncio

    async def inside_a_loop():
        return netlink.Kernel().links()                # asyncio refused this before: "loop is already running"
    assert "lo" in [link["ifname"] for link in asyncio.run(inside_a_loop())]


def test_link_set_passes_false_and_zero_and_leaves_out_only_none():
    with netlink.use(netlink.Recorder(links=[{"ifname": "lcab12h", "operstate": "UP"}])) as rec:
        netlink.link_set("lcab12h", up=False)
        assert netlink.backend().links()[0]["operstate"] == "DOWN"
        netlink.link_set("lcab12h", netns=0)
        netlink.link_set("lcx", new_name="eth0")
    assert rec.commands() == ["link set lcab12h down", "link set lcab12h netns 0", "link set lcx name eth0"]
