"""Network limits and NAT on the real kernel: no cgroup controller for bandwidth (04), a tbf qdisc on a box's veth,
DNAT publishing and MASQUERADE (08). The mechanism is asserted (the qdisc and its rate in the kernel's answer,
bytes through it, the rules' counters, the addresses seen), never the throughput: that is a timing."""
import pytest

from labcore.kernel import nat, network
from labcore.lessons import build_your_own, control_groups
from tests.conftest import has, privileged

pytestmark = [privileged, pytest.mark.skipif(not has("nft"), reason="needs nft(8): apt-get install nftables")]
MiB = 1 << 20


def test_no_cgroup_controller_takes_a_rate():
    step = control_groups.no_net_controller()
    assert step.permitted, step.reason
    assert step.data["rate_files"] == []
    assert {"net_cls.classid", "net_prio.ifpriomap", "net_prio.prioidx"} <= set(step.data["files"])
    assert step.data["files"]["net_cls.classid"] == "0"                 # the root group's tag: none
    assert not any(name.startswith("net") for name in step.data["v2_controllers"] or ())
    assert set(step.data["built"]) <= {"net_cls", "net_prio"}


@pytest.fixture
def wired_box(busybox_image):
    with build_your_own.start("busybox") as box:
        for name in ("layers", "mount_overlay", "fork_child", "join_cgroup", "unshare", "connect_network"):
            assert getattr(box, name)().permitted, name
        yield box


def test_a_tbf_on_the_host_end_carries_the_bytes_at_its_rate_and_goes(wired_box):
    step = build_your_own.limit_bandwidth(wired_box, mbit=16, megabytes=1)
    assert step.permitted, step.reason
    qdisc = step.data["qdisc"]
    assert (qdisc["kind"], qdisc["rate"], qdisc["root"], qdisc["dev"]) == ("tbf", 16_000_000, True,
                                                                           wired_box.endpoint.host_ifname)
    assert step.data["free"]["bytes"] == step.data["held"]["bytes"] == MiB
    assert qdisc["bytes"] >= MiB and qdisc["packets"] > 0               # what went through the tbf
    assert network.root_qdisc(wired_box.endpoint.host_ifname)["kind"] != "tbf"


def test_dnat_publishes_a_port_with_no_process_and_counts_the_connection(wired_box):
    step = build_your_own.publish_dnat(wired_box, host_port=18820, container_port=8080)
    assert step.permitted, step.reason
    assert "ECONNREFUSED" in step.data["refused_before"]                 # nothing on the host's port itself
    # the answer came from the box's network namespace, and the box saw the host's own address as the client
    assert step.data["reply"] == f"hello from net:[{wired_box.endpoint.netns}], to {wired_box.endpoint.network.gateway}"
    assert step.data["packets"] == (0, 1)
    assert step.data["seen"] == wired_box.endpoint.network.gateway
    assert nat.rules(step.data["table"]) == []                          # the table went with the step


def test_masquerade_gives_the_box_the_hosts_address_beyond_it(wired_box):
    step = build_your_own.masquerade_outbound(wired_box, port=8091)
    assert step.permitted, step.reason
    assert step.data["seen"] == [wired_box.endpoint.ip, step.data["host_address"]]
    assert step.data["packets"] == (0, 1)
    assert nat.rules(step.data["table"]) == []
    assert nat.forwarding(wired_box.endpoint.network.bridge) == "0"     # the lab's bridge never routes again
