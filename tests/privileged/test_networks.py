"""User-defined networks on the real kernel, as root: containers find each other by name and alias through the
embedded DNS server, two networks cannot reach each other, a container on two networks has eth0 and eth1,
the DNS redirect is a NAT rule in the container's own namespace, UDP and kernel-chosen host ports are
published, and the docker SDK drives it all through labd. Each test leaves no bridge, veth or record."""
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from labcore.kernel import network
from tests.conftest import has, labcore, privileged

pytestmark = [privileged, pytest.mark.skipif(not has("nft"), reason="needs nft (nftables): `./lab test` installs it")]


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def inspect(ref: str) -> dict:
    return json.loads(labcore("inspect", ref).stdout)[0]


def web(name: str, network: str, *flags: str) -> str:
    """A detached httpd that says its name, on ``network``."""
    return labcore("run", "-d", "--name", name, "--network", network, *flags, "busybox", "sh", "-c",
                   f"mkdir /www; echo I am {name} > /www/index.html; exec httpd -f -p 80 -h /www").stdout.strip()


@pytest.fixture
def front(busybox_image):
    """A network named front; afterwards its containers and it are gone, and no bridge or veth of it is left."""
    network_id = labcore("network", "create", "front").stdout.strip()
    yield network_id
    boxes = labcore("ps", "-aq", "--no-trunc").stdout.split()
    for box in boxes:
        labcore("rm", "-f", box, check=False)
    labcore("network", "rm", "front", check=False)
    ours = {f"lcbr-{network_id[:10]}"} | {f"lc{box[:10]}{n}h" for box in boxes for n in ("", "1")}
    assert links() & ours == set(), "links left behind"       # (other labs' links on lcbr0 may come and go)


def test_containers_on_a_network_find_each_other_by_name_and_alias(front):
    web("web", "front", "--network-alias", "www")
    bridge = f"lcbr-{front[:10]}"
    assert bridge in links() and os.listdir(f"/sys/class/net/{bridge}/brif")          # made by the first one
    address = inspect("web")["NetworkSettings"]["Networks"]["front"]["IPAddress"]
    assert address.startswith("10.203.") and address != "10.203.0.2"
    client = labcore("run", "--rm", "--network", "front", "busybox", "sh", "-c",
                     "cat /etc/resolv.conf; for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://web/ && break; "
                     "sleep 0.2; done; wget -qO- http://www/; nslookup web").stdout
    assert "nameserver 127.0.0.11" in client and "options ndots:0" in client
    assert client.count("I am web") == 2 and f"Address: {address}" in client
    shown = json.loads(labcore("network", "inspect", "front").stdout)[0]
    assert [member["Name"] for member in shown["Containers"].values()] == ["web"]
    labcore("rm", "-f", "web")
    assert bridge not in links()                                                         # the last one out


def test_a_fresh_containers_first_lookup_finds_the_name(front):
    """The very first thing pid 1 does is ask: the answer is already there (Docker's resolver knows the sandbox's
    networks before the process starts). Ten fresh containers, one try each; before the DNS server took the
    networks from the container's owner, about one in three of these said NXDOMAIN."""
    web("web", "front", "--network-alias", "www")
    address = inspect("web")["NetworkSettings"]["Networks"]["front"]["IPAddress"]
    answers = [labcore("run", "--rm", "--network", "front", "busybox", "nslookup", "-type=a", "www",
                       check=False) for _ in range(10)]
    assert [a.returncode for a in answers] == [0] * 10, [a.stdout + a.stderr for a in answers]
    assert all(f"Address: {address}" in a.stdout for a in answers), [a.stdout for a in answers]


def test_two_networks_cannot_reach_each_other(front):
    labcore("network", "create", "back")
    try:
        web("web", "front")
        address = inspect("web")["NetworkSettings"]["IPAddress"]
        seen = labcore("run", "--rm", "--network", "back", "busybox", "sh", "-c",
                       f"wget -qO- -T 2 http://web/; echo name $?; wget -qO- -T 2 http://{address}/; echo address $?",
                       check=False).stdout
        assert "name 1" in seen and "address 1" in seen and "I am web" not in seen
    finally:
        labcore("rm", "-f", "web", check=False)
        labcore("network", "rm", "back")


def test_a_container_on_two_networks_has_eth0_and_eth1_and_one_default_route(front):
    labcore("network", "create", "back")
    try:
        box = labcore("create", "--network", "front", "--mac-address", "02:42:00:00:00:2a", "busybox", "sh", "-c",
                      "ip -o -4 addr show; ip route; cat /sys/class/net/eth0/address /sys/class/net/eth1/address"
                      ).stdout.strip()
        labcore("network", "connect", "back", box)
        labcore("start", box)
        assert labcore("wait", box).stdout.strip() == "0"
        out = labcore("logs", box).stdout
        assert " eth0    inet 10.203." in out and " eth1    inet 10.203." in out
        assert [line for line in out.splitlines() if line.startswith("default")] == [
            line for line in out.splitlines() if line.startswith("default via") and line.endswith("dev eth0 ")]
        assert len([line for line in out.splitlines() if line.startswith("default")]) == 1
        eth1 = next(line.split()[3].split("/")[0] for line in out.splitlines() if " eth1 " in line)
        assert out.splitlines()[-2:] == ["02:42:00:00:00:2a", network.mac_for(eth1)]      # asked for; Docker's
    finally:
        labcore("rm", "-f", box, check=False)
        labcore("network", "rm", "back")


def test_the_dns_server_is_a_socket_of_the_monitor_in_the_containers_namespace(front):
    web("web", "front")
    pid = inspect("web")["State"]["Pid"]
    from labcore.kernel.network import in_netns
    table = in_netns(pid, lambda: subprocess.run(["nft", "list", "table", "ip", "labcore-dns"], capture_output=True,
                                                 text=True).stdout)
    assert "ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:" in table
    port = int(table.split("udp dport 53 dnat to 127.0.0.11:")[1].split()[0])
    rows = [row.split() for row in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]]
    assert f"0B00007F:{port:04X}" in [row[1] for row in rows]        # 127.0.0.11, little-endian (proc(5))
    assert "udp dport 53" not in subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout


UDP_ECHO = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5353)); "
            "print('listening', flush=True)\nwhile True: data, peer = s.recvfrom(512); s.sendto(data.upper(), peer)")


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="the UDP server is the host's python3")
def test_udp_and_a_kernel_chosen_host_port_are_published(busybox_image):
    """busybox has no UDP server: the container runs the host's python3, chrooted into a read-only bind of /."""
    box = labcore("run", "-d", "-p", "0:80", "-p", "127.0.0.1::5353/udp", "-v", "/:/host:ro", "busybox",
                  "chroot", "/host", "/usr/bin/python3", "-c", UDP_ECHO).stdout.strip()
    try:
        ports = inspect(box)["NetworkSettings"]["Ports"]
        tcp, udp = int(ports["80/tcp"][0]["HostPort"]), int(ports["5353/udp"][0]["HostPort"])
        assert tcp > 0 and udp > 0
        deadline = time.monotonic() + 20
        while "listening" not in labcore("logs", box).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"hello over udp", ("127.0.0.1", udp))
            assert client.recvfrom(512) == (b"HELLO OVER UDP", ("127.0.0.1", udp))
    finally:
        labcore("rm", "-f", box)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", udp))                # the proxy is gone, and its port free


def test_the_docker_sdk_runs_two_containers_that_talk_by_name_through_labd(busybox_image):
    docker = pytest.importorskip("docker")
    from labcore.api.labd import Labd
    with Labd(f"/tmp/labcore-test-{os.getpid()}-{time.monotonic_ns()}.sock") as labd:
        client = docker.DockerClient(base_url=f"unix://{labd.socket}", version="1.41")
        net = client.networks.create("talk", labels={"course": "08"})
        try:
            server = client.containers.run("busybox", ["sh", "-c", "echo pong > /tmp/index.html; "
                                                       "exec httpd -f -p 80 -h /tmp"], name="server",
                                           network="talk", detach=True)
            reply = client.containers.run("busybox", ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do "
                                                      "wget -qO- http://server/ && exit; sleep 0.2; done"],
                                          network="talk", remove=True)
            assert reply == b"pong\n"
            server.reload()
            assert list(server.attrs["NetworkSettings"]["Networks"]) == ["talk"]
            assert net.id in {n.id for n in client.networks.list(filters={"label": "course=08"})}
            net.reload()
            assert list(net.attrs["Containers"]) == [server.id]
            server.remove(force=True)
        finally:
            net.remove()
        assert "talk" not in [n.name for n in client.networks.list()]
