"""User-defined networks: `docker network create`, a bridge of their own, and names that resolve.

Docker's default network, "bridge" (docker0, here lcbr0), gives each container an address and nothing more:
containers on it find each other by address only. `docker network create NAME` makes a *user-defined* bridge
network (moby: libnetwork/drivers/bridge; docs: "Bridge network driver", "Networking overview"):

    a record    its name, a 64-hex-digit id, the driver, the subnet, labels: what `docker network inspect`
                shows (Docker keeps it in libnetwork's store; here <state dir>/networks/<id>.json)
    a subnet    the lowest free /24 of the lab's pool, 10.203.1.0/24 to 10.203.255.0/24, skipping any a host
                route covers (Docker's IPAM does the same with 172.17.0.0/16, 172.18.0.0/16, ...)
    a bridge    lcbr-<10 hex digits of its id> with the subnet's first address (Docker: br-<12 hex digits>).
                Docker makes it at create; the lab makes it when the first container joins and removes it
                when the last one leaves, as it does lcbr0 (``labcore.kernel.network``), so nothing outlives its users
    names       every container on it gets /etc/resolv.conf with `nameserver 127.0.0.11`, where the embedded
                DNS server answers the names and aliases of the other containers on the same network
                (``labcore.runtime.dns``). On the default bridge there is no such server: names do not resolve there
    isolation   no route between two networks: the lab turns forwarding off on every bridge of its own, so
                a container reaches the containers of the networks it is on, and no others

A container joins its first network at create (`docker run --network NAME`, HostConfig.NetworkMode), with
aliases (NetworkingConfig.EndpointsConfig, `--network-alias`); `docker network connect` adds more before it
starts: eth1, eth2, ... each on its own bridge, and one default route, through the first.

Next: ``labcore.runtime.dns``, the server at 127.0.0.11.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, InvalidTransition, LabError, NotFound
from labcore.kernel import journal, netlink, network

POOL = ipaddress.ip_network("10.203.0.0/16")      # /24s of it; the first, 10.203.0.0/24, is lcbr0's
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")            # libnetwork's rule for network names
BUILTIN = {"bridge": "bridge", "none": "null"}     # name -> driver: the networks every engine has
NAME_FORM = "letters, digits, '_', '.' and '-', starting with a letter or digit"


class Forbidden(InvalidTransition):
    """What Docker answers 403 to: an operation not permitted on this network (a predefined one, one in use)."""


@dataclass
class NetworkRecord:
    """What `docker network create` made; its bridge is made by the first container that joins."""
    name: str
    id: str = field(default_factory=lambda: secrets.token_hex(32))
    driver: str = "bridge"
    subnet: str = ""
    gateway: str = ""
    created: float = field(default_factory=time.time)
    labels: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN

    @property
    def bridge(self) -> network.Network:
        """The kernel's side: lcbr0 for the default network, lcbr-<id> for a user-defined one."""
        if self.name == "bridge":
            return network.DEFAULT
        return network.Network(bridge=f"{paths.LINK_PREFIX}br-{self.id[:10]}", subnet=self.subnet, name=self.name)


def builtin(name: str) -> NetworkRecord:
    """The predefined networks, with ids that stay the same for this state dir (Docker's are random at its
    first start, and kept)."""
    ident = hashlib.sha256(f"{paths.home()}:{name}".encode()).hexdigest()
    record = NetworkRecord(name, id=ident, driver=BUILTIN[name], created=0)
    if name == "bridge":
        record.subnet, record.gateway = network.DEFAULT.subnet, network.DEFAULT.gateway
    return record


def networks_dir() -> Path:
    return paths.home() / "networks"


# --- finding ------------------------------------------------------------------------------------------------

def all_networks() -> list[NetworkRecord]:
    """The predefined networks, then the user-defined ones, oldest first."""
    found = []
    for file in sorted(networks_dir().glob("*.json")) if networks_dir().is_dir() else []:
        try:
            found.append(NetworkRecord(**json.loads(file.read_text())))
        except (OSError, ValueError, TypeError):
            continue                          # half-removed, or not a record: never breaks `network ls`
    return [builtin(name) for name in BUILTIN] + sorted(found, key=lambda record: record.created)


def find(ref: str) -> NetworkRecord:
    """A network by name, full id or unique id prefix, as Docker looks them up (an exact name first)."""
    records = all_networks()
    for record in records:
        if ref in (record.name, record.id):
            return record
    matches = [record for record in records if ref and record.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise NotFound(f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)")
    raise NotFound(f"network {ref} not found", fix="list them with `labcore network ls`")


# --- create and remove --------------------------------------------------------------------------------------

def create(name: str, labels: dict | None = None, options: dict | None = None, subnet: str | None = None,
           internal: bool = False, attachable: bool = False, driver: str = "bridge") -> NetworkRecord:
    """`docker network create NAME`: check, pick a subnet, write the record. No kernel object yet."""
    check_name(name)
    if driver != "bridge":
        raise BadInput(f"network driver {driver!r} is not supported by the lab",
                       fix="use the bridge driver (the default): the lab is one host, with no overlay or macvlan")
    if internal:
        raise BadInput("internal networks are not supported by the lab",
                       fix="leave out --internal: the lab's networks route nowhere beyond the host anyway")
    with journal.flocked(network.NETWORKS_LOCK):        # one subnet per network, host-wide
        if any(other.name == name for other in all_networks()):
            raise InvalidTransition(f"network with name {name} already exists")
        chosen = check_subnet(subnet) if subnet else free_subnet()
        record = NetworkRecord(name, subnet=str(chosen), gateway=str(next(chosen.hosts())),
                               labels=dict(labels or {}), options=dict(options or {}), attachable=attachable)
        save(record)
    return record


def check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput(f"invalid network name {name!r}", fix=f"use {NAME_FORM}")
    if name in (*BUILTIN, "host", "default"):
        raise Forbidden(f"{name} is a pre-defined network and cannot be created")


def check_subnet(text: str) -> ipaddress.IPv4Network:
    """A subnet the user asked for (IPAM.Config Subnet, `--subnet`): IPv4, room for containers, no overlap
    with a route the host has, since the host would then send that range's packets to the wrong place."""
    try:
        subnet = ipaddress.ip_network(text)
    except ValueError:
        raise BadInput(f"invalid subnet {text!r}", fix="an IPv4 network in CIDR form, e.g. 10.203.7.0/24") from None
    if subnet.version != 4 or not 16 <= subnet.prefixlen <= 29:
        raise BadInput(f"subnet {text}: the lab's networks are IPv4, /16 to /29", fix="e.g. --subnet 10.203.7.0/24")
    taken = [other for other in taken_subnets() if other.overlaps(subnet)]
    if taken:
        raise InvalidTransition(f"Pool overlaps with other one on this address space: {subnet} and {taken[0]}")
    return subnet


def free_subnet() -> ipaddress.IPv4Network:
    """The lowest /24 of the pool that no network of this state dir and no route of the host uses."""
    taken = taken_subnets()
    for candidate in list(POOL.subnets(new_prefix=24))[1:]:
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise LabError(f"no free subnet left in {POOL}", fix="remove networks you no longer use (`labcore network prune`)")


def taken_subnets() -> list[ipaddress.IPv4Network]:
    """This state dir's networks (the default one's too), and the routes of this network namespace."""
    subnets = [ipaddress.ip_network(record.subnet) for record in all_networks() if record.subnet]
    for route in netlink.routes():
        if route.get("dst", "default") != "default":
            subnets.append(ipaddress.ip_network(route["dst"], strict=False))
    return subnets


def save(record: NetworkRecord) -> None:
    """Written whole or not at all (``journal.write_whole``): a crash never leaves half a record."""
    networks_dir().mkdir(parents=True, exist_ok=True)
    journal.write_whole(networks_dir() / f"{record.id}.json", json.dumps(asdict(record)))


def remove(ref: str) -> NetworkRecord:
    """`docker network rm`: refused for a predefined network and for one a running container is on."""
    record = find(ref)
    if record.builtin:
        raise Forbidden(f"{record.name} is a pre-defined network and cannot be removed")
    users = [container for container in members(record) if container.state.value in ("running", "paused")]
    if users:
        raise Forbidden(f"error while removing network: network {record.name} id {record.id} has active "
                        f"endpoints ({', '.join(user.name for user in users)})")
    (networks_dir() / f"{record.id}.json").unlink(missing_ok=True)
    return record


def prune() -> list[str]:
    """`docker network prune`: every user-defined network no running container is on; their names."""
    removed = []
    for record in all_networks():
        if not record.builtin and not any(c.state.value in ("running", "paused") for c in members(record)):
            remove(record.id)
            removed.append(record.name)
    return removed


# --- who is on it ---------------------------------------------------------------------------------------------

def wanted(spec) -> dict[str, dict]:
    """The networks a container joins, in order, as {name: {"Aliases", "DriverOpts"}}; NotFound for one that
    no longer exists. ``spec.endpoints`` None means its NetworkMode alone (`--network NAME`); a dict lists
    them all, as `network connect` and `disconnect` left them (empty: it was disconnected from every one)."""
    if spec.network == "none":
        return {}
    if spec.endpoints is None:
        return {find(spec.network).name: {}}
    return {find(name).name: settings or {} for name, settings in spec.endpoints.items()}


def listed(spec: dict) -> dict[str, dict]:
    """``wanted`` for what inspect shows, from a stored spec: never an error for a network removed since."""
    if spec.get("network", "bridge") == "none":
        return {"none": {}}
    def name(ref):
        try:
            return find(ref).name
        except NotFound:
            return ref
    endpoints = spec.get("endpoints")
    if endpoints is None:
        return {name(spec.get("network", "bridge")): {}}
    return {name(ref): settings or {} for ref, settings in endpoints.items()}


def resolves_names(spec) -> bool:
    """Whether the container gets the embedded DNS server: it is on at least one user-defined network."""
    return any(name not in BUILTIN for name in wanted(spec))


def members(record: NetworkRecord) -> list:
    """The containers whose spec puts them on this network (running or not), as lifecycle Records."""
    from labcore.runtime import lifecycle
    return [container for container in lifecycle.all_records()
            if record.name in listed(container.config.get("spec", {}))]


def attached(container) -> dict[str, dict]:
    """A running container's endpoints, as its record keeps them: {network name: {"IPAddress", ...}}."""
    return container.config.get("networks") or {}


def check_endpoints(first: str, endpoints: dict | None) -> None:
    """Aliases only on user-defined networks, as Docker says: on the default bridge nothing resolves names."""
    if first == "none" and endpoints:
        raise BadInput("container cannot be connected to multiple networks with one of the networks in "
                       "private (none) mode", fix="leave out --network none")
    for name, settings in (endpoints or {}).items():
        check_settings(find(name), settings or {})


def check_settings(record: NetworkRecord, settings: dict) -> None:
    """What an endpoint may ask for here: aliases on a user-defined network; no fixed address."""
    if settings.get("Aliases") and record.builtin:
        raise BadInput("network-scoped alias is supported only for containers in user defined networks",
                       fix="create a network (`labcore network create NAME`) and run with --network NAME")
    fixed = settings.get("IPAMConfig") or {}
    if fixed.get("IPv4Address") or fixed.get("IPv6Address"):
        raise BadInput("a fixed address (IPAMConfig) is not supported by the lab: it picks the lowest free one",
                       fix="leave out --ip/ipv4_address")


# --- connect and disconnect ---------------------------------------------------------------------------------

def connect(container_id: str, record: NetworkRecord, settings: dict | None = None) -> None:
    """`docker network connect`: a created or stopped container joins ``record`` at its next start.
    A running one is refused: the lab wires a container's networks when it starts."""
    settings = {key: value for key, value in (settings or {}).items() if key in ("Aliases", "DriverOpts")
                and value} if settings is not None else {}
    check_settings(record, settings)
    def change(spec: dict) -> None:
        if spec.get("network") == "none":
            raise BadInput("container cannot be connected to multiple networks with one of the networks in "
                           "private (none) mode", fix="create it with --network NAME instead")
        joined = listed(spec)
        if record.name not in joined:     # connected already: Docker 20.10 says yes and changes nothing
            spec["endpoints"] = {**joined, record.name: settings}
    change_stopped(container_id, change)


def disconnect(container_id: str, record: NetworkRecord) -> None:
    """`docker network disconnect`: the network is dropped from the ones it joins at its next start."""
    def change(spec: dict) -> None:
        joined = listed(spec)
        if record.name not in joined or spec.get("network") == "none":
            raise Forbidden(f"container {container_id[:12]} is not connected to network {record.name}")
        spec["endpoints"] = {name: settings for name, settings in joined.items() if name != record.name}
    change_stopped(container_id, change)


def change_stopped(container_id: str, change) -> None:
    """Apply ``change`` to the stored spec of a container that is not running, under its lock."""
    from labcore.runtime import lifecycle
    with lifecycle.locked(container_id):
        container = lifecycle.load(container_id)
        if container.state.value in ("running", "paused", "restarting"):
            raise InvalidTransition(f"container {container_id[:12]} is {container.state.value}: the lab wires a "
                                    "container's networks when it starts",
                                    fix="stop it, connect or disconnect, start it again")
        spec = dict(container.config.get("spec", {}))
        change(spec)
        container.config["spec"] = spec
        container.save()



def for_lookup(joined: list[str]) -> dict[str, list[str]]:
    """What the DNS server of a container on the networks ``joined`` may answer: every name of every running
    container on one of them (the asker too, once its record says it runs), lower-cased, with its address there
    ({name: [addresses]}).

    ``joined`` comes from the asker's owner, not from the asker's record: pid 1 runs, and may ask at once,
    before that record says "running" (``labcore.runtime.container.start`` saves it after the execve). Read
    from the record, its first lookups found no network and went to the host's nameservers: NXDOMAIN, in 9
    of 30 fresh containers here. Docker's resolver knows the sandbox's networks before the process starts."""
    from labcore.runtime import lifecycle
    records = [c for c in lifecycle.all_records() if c.state.value in ("running", "paused")]
    answers: dict[str, list[str]] = {}
    for name in joined:
        if name in BUILTIN:
            continue                          # the default bridge resolves no names (Docker's rule too)
        for other in records:
            endpoint = attached(other).get(name)
            if endpoint and endpoint.get("IPAddress"):
                aliases = {other.name, other.id[:12], *(endpoint.get("Aliases") or [])}
                for alias in aliases:
                    answers.setdefault(alias.lower(), []).append(endpoint["IPAddress"])
    return answers
