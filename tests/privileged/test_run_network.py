"""`labcore run` on Docker's bridge network: an address of its own, published ports, nothing left after."""
import socket
import subprocess
import threading
import time

import pytest

from labcore.errors import BadInput
from labcore.runtime.container import Spec, run
from tests.conftest import privileged

pytestmark = privileged


def lab_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": lc" in line]


def test_bridge_gives_eth0_with_an_address_and_a_gateway(busybox_image):
    result = run(Spec("busybox", ["sh", "-c", "ip -4 -o addr show eth0; ping -c1 -W2 10.203.0.1"], rm=True))
    assert b"inet 10.203.0." in result.stdout and b"1 packets received" in result.stdout
    assert f"lc{result.id[:10]}h" not in lab_links()


def test_network_none_is_loopback_only_and_up(busybox_image):
    result = run(Spec("busybox", ["sh", "-c", "ls /sys/class/net; ping -c1 -W1 127.0.0.1"], rm=True,
                      network="none"))
    assert result.stdout.split(b"\n")[0] == b"lo" and b"1 packets received" in result.stdout


def test_published_port_reaches_the_container_from_the_hosts_loopback(busybox_image):
    port = 18000 + int(time.time()) % 1000
    spec = Spec("busybox", ["sh", "-c", "echo hello | nc -l -p 80"], rm=True, publish=[f"{port}:80"])
    runner = threading.Thread(target=run, args=(spec,))
    runner.start()
    try:
        reply, deadline = b"", time.monotonic() + 60
        while time.monotonic() < deadline:  # until nc listens: before, the proxy closes the connection (b"")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as client:
                    reply = client.recv(64)
                    if reply:
                        break
            except OSError:
                pass
            time.sleep(0.05)
        assert reply == b"hello\n"
    finally:
        runner.join(10)
    assert f"lc{spec.id[:10]}h" not in lab_links()


@pytest.mark.parametrize("value", ["0.0.0.0:80:80", "80:80/sctp", "high:80"])
def test_bad_publish_values_are_refused_before_anything_exists(value, labcore_home):
    from labcore.runtime.container import plan_for
    with pytest.raises(BadInput):
        plan_for(Spec("busybox", ["true"], publish=[value]))
    assert not (labcore_home / "containers").exists()
