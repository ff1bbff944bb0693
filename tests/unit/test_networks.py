"""labcore.runtime.networks and labd's /networks routes without root: the records, the subnets picked, names as
Docker checks them, which networks a container joins, connect and disconnect before it starts, and what the
DNS server may answer. The kernel's side (bridges, veths, the server in a container's namespace) is in
tests/privileged/test_networks.py."""
import json

import pytest

from labcore.api import labd, routes
from labcore.errors import BadInput, InvalidTransition, NotFound
from labcore.kernel import netlink, network
from labcore.runtime import lifecycle, networks
from labcore.runtime.container import Spec
from labcore.runtime.lifecycle import Record, State


@pytest.fixture(autouse=True)
def host_routes(monkeypatch):
    """The host's routes, as netlink lists them (only 192.168.1.0/24 here)."""
    routes = [{"dst": "default", "gateway": "192.168.1.1"}, {"dst": "192.168.1.0/24"}]
    with netlink.use(netlink.Recorder(routes=routes)) as fake:
        fake.route_table = routes                   # the same list: a test appends a route to it
        yield routes


def call(method: str, path: str, body=None, version: str = "1.45"):
    request = labd.Request(method, f"/v{version}{path}", {}, json.dumps(body).encode() if body is not None else b"")
    return labd.dispatch(request)


def test_the_first_networks_get_the_lowest_free_24s_of_the_pool(host_routes):
    first, second = networks.create("front"), networks.create("back")
    assert (first.subnet, first.gateway, second.subnet) == ("10.203.1.0/24", "10.203.1.1", "10.203.2.0/24")
    assert first.bridge == network.Network(f"lcbr-{first.id[:10]}", "10.203.1.0/24", "front")
    assert len(first.bridge.bridge) <= network.IFNAMSIZ - 1 and network.DEFAULT.name == "bridge"
    host_routes.append({"dst": "10.203.3.0/24", "dev": "lcbr-0000000000"})     # another lab's network, in use
    assert networks.create("third").subnet == "10.203.4.0/24"


def test_a_subnet_asked_for_must_not_overlap_a_route_or_another_network():
    networks.create("front", subnet="10.203.9.0/24")
    with pytest.raises(InvalidTransition, match="overlaps"):
        networks.create("again", subnet="10.203.9.128/25")
    with pytest.raises(InvalidTransition, match="overlaps"):
        networks.create("lan", subnet="192.168.0.0/16")
    for bad in ("nonsense", "fd00::/64", "10.0.0.0/8", "10.203.9.4/31"):
        with pytest.raises(BadInput):
            networks.create("bad", subnet=bad)


@pytest.mark.parametrize("name, error", [("bridge", networks.Forbidden), ("none", networks.Forbidden),
                                         ("host", networks.Forbidden), ("-x", BadInput), ("a b", BadInput),
                                         ("", BadInput)])
def test_names_are_refused_as_docker_refuses_them(name, error):
    with pytest.raises(error):
        networks.create(name)


def test_a_name_is_taken_once_and_found_by_name_id_or_prefix():
    made = networks.create("front", labels={"a": "b"})
    with pytest.raises(InvalidTransition, match="network with name front already exists"):
        networks.create("front")
    assert networks.find("front") == networks.find(made.id) == networks.find(made.id[:6])
    assert [record.name for record in networks.all_networks()] == ["bridge", "none", "front"]
    assert networks.find("bridge").builtin and networks.find("bridge").bridge == network.DEFAULT
    with pytest.raises(NotFound, match="network nope not found"):
        networks.find("nope")


def test_other_drivers_and_internal_networks_are_refused_naming_what_works():
    with pytest.raises(BadInput, match="bridge driver"):
        networks.create("over", driver="overlay")
    with pytest.raises(BadInput, match="internal"):
        networks.create("inside", internal=True)


def save_container(name: str, spec: Spec, state: State = State.CREATED, live: dict | None = None) -> Record:
    from labcore.runtime.container import describe, plan_for
    config = describe(spec, plan_for(spec))
    if live:
        config["networks"] = live
    record = Record(spec.id, name, "busybox", config=config, state=state)
    record.save()
    return record


def test_which_networks_a_container_joins(busybox_image_record):
    front = networks.create("front")
    assert networks.wanted(Spec("busybox", network="front")) == {"front": {}}
    assert networks.wanted(Spec("busybox", network=front.id[:8])) == {"front": {}}
    assert networks.wanted(Spec("busybox", network="none")) == {}
    both = Spec("busybox", network="front", endpoints={"front": {"Aliases": ["web"]}, "bridge": None})
    assert networks.wanted(both) == {"front": {"Aliases": ["web"]}, "bridge": {}}
    assert networks.resolves_names(both) and not networks.resolves_names(Spec("busybox"))
    assert networks.wanted(Spec("busybox", network="front", endpoints={})) == {}          # all disconnected
    networks.remove("front")
    assert networks.listed({"network": "front"}) == {"front": {}}                         # inspect still works
    with pytest.raises(NotFound):
        networks.wanted(Spec("busybox", network="front"))


@pytest.fixture
def busybox_image_record(monkeypatch):
    """plan_for without the image store: a busybox with the usual config."""
    from labcore.runtime import spec as specs

    class Image:
        id, config = "sha256:" + "0" * 64, {"Cmd": ["sh"], "Env": ["PATH=/bin"]}
    monkeypatch.setattr(specs, "find_image", lambda ref: Image())


def test_connect_and_disconnect_change_a_created_container_the_way_compose_does(busybox_image_record):
    front = networks.create("front")
    spec = Spec("busybox", ["true"], network="front", endpoints={"front": {"Aliases": ["web"]}})
    record = save_container("web1", spec)
    networks.disconnect(record.id, front)
    assert networks.listed(lifecycle.load(record.id).config["spec"]) == {}
    with pytest.raises(networks.Forbidden, match="not connected"):
        networks.disconnect(record.id, front)
    networks.connect(record.id, front, {"Aliases": ["web", record.id[:12]], "IPAMConfig": {}})
    networks.connect(record.id, networks.find("bridge"))
    assert networks.listed(lifecycle.load(record.id).config["spec"]) == {
        "front": {"Aliases": ["web", record.id[:12]]}, "bridge": {}}
    networks.connect(record.id, front, {"Aliases": ["again"]})                  # no error, no change: Docker's
    assert networks.listed(lifecycle.load(record.id).config["spec"])["front"]["Aliases"] == ["web", record.id[:12]]
    with pytest.raises(BadInput, match="user defined networks"):
        networks.connect(save_container("other", Spec("busybox", ["true"])).id, networks.find("bridge"),
                         {"Aliases": ["x"]})
    assert [c.name for c in networks.members(front)] == ["web1"]


def test_a_running_container_is_not_rewired_and_a_network_in_use_is_not_removed(busybox_image_record):
    front = networks.create("front")
    record = save_container("web1", Spec("busybox", ["true"], network="front"), State.RUNNING)
    with pytest.raises(InvalidTransition, match="when it starts"):
        networks.disconnect(record.id, front)
    with pytest.raises(networks.Forbidden, match="has active endpoints"):
        networks.remove("front")
    with pytest.raises(networks.Forbidden, match="pre-defined"):
        networks.remove("bridge")
    assert networks.prune() == []


def test_the_dns_server_answers_only_for_containers_on_a_network_the_asker_is_on(busybox_image_record):
    networks.create("front")
    networks.create("back")
    def on(name, ip, aliases=None):
        return {name: {"IPAddress": ip, "IPPrefixLen": 24, "Gateway": "", "Aliases": aliases}}
    save_container("client", Spec("busybox", ["true"], network="front"), State.RUNNING,
                   on("front", "10.203.1.3"))
    web = save_container("Web", Spec("busybox", ["true"], network="front"), State.RUNNING,
                         {**on("front", "10.203.1.2", ["www"]), **on("back", "10.203.2.2")})
    save_container("db", Spec("busybox", ["true"], network="back"), State.RUNNING, on("back", "10.203.2.3"))
    save_container("gone", Spec("busybox", ["true"], network="front"), State.EXITED)
    save_container("plain", Spec("busybox", ["true"]), State.RUNNING, on("bridge", "10.203.0.5"))
    answers = networks.for_lookup(["front"])
    assert answers["web"] == answers["www"] == answers[web.id[:12]] == ["10.203.1.2"]
    assert answers["client"] == ["10.203.1.3"]
    assert "db" not in answers and "gone" not in answers and "plain" not in answers
    assert networks.for_lookup(["bridge"]) == {}            # the default bridge resolves no names
    assert networks.for_lookup(["front", "back"])["db"] == ["10.203.2.3"]


def test_a_starting_containers_dns_server_answers_from_the_networks_it_was_wired_to(busybox_image_record,
                                                                                     monkeypatch):
    """pid 1 may ask at once, before its record says it runs (``container.start`` saves it after the execve;
    `run` saves none before): the server started by ``connect_network`` answers from the networks its owner
    wired, so the name is there already. (It read them from that record before, and found none.)"""
    import dataclasses
    from types import SimpleNamespace

    from labcore.runtime import container as runtime
    from labcore.runtime import dns
    networks.create("front")
    save_container("web", Spec("busybox", ["true"], network="front"), State.RUNNING,
                   {"front": {"IPAddress": "10.203.1.2", "IPPrefixLen": 24, "Gateway": "", "Aliases": ["www"]}})
    spec = Spec("busybox", ["nslookup", "www"], network="front")
    box = runtime.Container(spec, dataclasses.replace(runtime.plan_for(spec), rootless=False), scope=None)
    box.pid = 4242
    monkeypatch.setattr(runtime, "connect_to", lambda container, net, index: SimpleNamespace(ip="10.203.1.3"))
    started = {}
    monkeypatch.setattr(dns, "start", lambda pid, names: started.update(pid=pid, names=names))
    runtime.connect_network(box)
    assert [c.name for c in lifecycle.all_records()] == ["web"]                  # no record of the asker yet
    assert started["pid"] == 4242 and started["names"]()["www"] == ["10.203.1.2"]


def test_endpoints_at_create_follow_the_api_version(busybox_image_record):
    front = networks.create("front")
    one = {"EndpointsConfig": {"front": {"Aliases": ["hello"], "DriverOpts": {"k": "v"}, "IPAMConfig": {}}}}
    assert routes.endpoints_of(one, "front", "1.41") == {"front": {"Aliases": ["hello"], "DriverOpts": {"k": "v"}}}
    assert routes.endpoints_of({"EndpointsConfig": {front.id: {}}}, "front", "1.41") == {"front": {}}
    other = {"EndpointsConfig": {"bar": {"Aliases": ["hello"]}}}
    assert routes.endpoints_of(other, "front", "1.41") is None                 # not its network: ignored
    two = {"EndpointsConfig": {"front": {}, "bar": {}}}
    with pytest.raises(labd.ApiError, match="cannot be connected to network endpoints: front, bar"):
        routes.endpoints_of(two, "front", "1.41")
    with pytest.raises(NotFound, match="network bar not found"):
        routes.endpoints_of(two, "front", "1.44")
    assert list(routes.endpoints_of({"EndpointsConfig": {"front": {}, "bridge": {}}}, "front", "1.44")) == [
        "front", "bridge"]


def test_the_network_routes_answer_in_dockers_shapes():
    status, created = call("POST", "/networks/create", {"Name": "front", "Labels": {"a": "b"},
                                                        "IPAM": {"Driver": "default", "Config": []}})
    assert status == 201 and set(created) == {"Id", "Warning"}
    shown = call("GET", "/networks/front")
    assert shown["Id"] == created["Id"] and shown["Driver"] == "bridge" and shown["Labels"] == {"a": "b"}
    assert shown["IPAM"] == {"Driver": "default", "Options": None,
                             "Config": [{"Subnet": "10.203.1.0/24", "Gateway": "10.203.1.1"}]}
    assert {"Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal", "Attachable",
            "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels"} <= set(shown)
    listed = call("GET", "/networks")
    assert [n["Name"] for n in listed] == ["bridge", "none", "front"]
    with pytest.raises(InvalidTransition):
        call("POST", "/networks/create", {"Name": "front"})
    for body, says in (({"Name": "v6", "EnableIPv6": True}, "IPv6"), ({}, "must not be empty"),
                       ({"Name": "x", "IPAM": {"Driver": "other"}}, "IPAM driver"), ({"Name": 5}, "Go struct")):
        with pytest.raises(labd.ApiError, match=says):
            call("POST", "/networks/create", body)
    with pytest.raises(labd.ApiError) as caught:
        call("DELETE", "/networks/bridge")
    assert caught.value.status == 403
    assert call("DELETE", "/networks/front") == (204, None)
    assert call("POST", "/networks/prune") == {"NetworksDeleted": None}
