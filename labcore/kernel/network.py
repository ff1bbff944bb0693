"""Container networking: a bridge, a veth pair, an address, and a proxy for published ports.

A new network namespace has nothing but `lo`, and `lo` is down (network_namespaces(7)). Docker's default
"bridge" network wires it to the host in four steps (moby: libnetwork/drivers/bridge; docs: "Bridge network
driver"); the lab does the same, naming what it makes ``lc...``:

    bridge   a virtual switch on the host: docker0 with 172.17.0.1/16, here lcbr0 with 10.203.0.1/24
    veth     two interfaces that are the two ends of one cable (veth(4)): the host end is plugged into the
             bridge, the other end moves into the container's namespace (`ip link set lcXc netns PID`)
             and is renamed eth0 there
    address  the next free address of the subnet (Docker's IPAM), a default route via the bridge's address,
             and a MAC address made of it, 02:42 and the address's four bytes, as Docker makes one
             (libnetwork/netutils: GenerateMACFromIP), unless `--mac-address` says otherwise
    publish  `docker run -p 127.0.0.1:8080:80`: docker-proxy, a process that accepts on the host's port
             and connects to the container's address and port (``labcore.kernel.portproxy``)

Each step is one rtnetlink message (``labcore.kernel.netlink``), written here as the iproute2 command that
sends it (man 8 ip-link, ip-address, ip-route); inside the container's namespace they are sent by a child that
setns(2)'d into /proc/PID/ns/net, as `nsenter -t PID -n ip ...` would (man 8 ip-netns).
A veth end dies with its namespace, and its peer with it: when the container's last process exits, the
kernel removes the pair and the address it held is free again.

What the lab leaves out on purpose: Docker also turns on net.ipv4.ip_forward and adds iptables MASQUERADE
and DNAT rules, so that containers reach other hosts and other hosts reach published ports. The lab never
routes off the machine: it sets net.ipv4.conf.lcbr0.forwarding=0, so the kernel drops whatever a container
sends to anyone but the host and the other containers, and it publishes ports on 127.0.0.1 only. Notebook 08
shows both rules for real, one step at a time, and removes them after (``labcore.kernel.nat``), and a bandwidth
limit, which is no cgroup but a tbf qdisc on the host end (``limit_rate``).

Without root none of this is allowed: a veth into the host's namespace needs CAP_NET_ADMIN there.
``labcore.kernel.usernet`` does what rootless Podman does instead: the same bridge and veth pairs inside a network
namespace the user owns, with slirp4netns, a TCP/IP stack in a user process, as its way out.

Next: ``labcore.kernel.portproxy``, the published port's relay; ``labcore.kernel.usernet``, the network without root.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import re
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, LabError, NotSupportedHere, from_oserror
from labcore.kernel import journal, netlink, portproxy, procfs, syscalls
from labcore.kernel.namespaces import enter_namespaces
from labcore.kernel.process import find_program, run_in_child, tied

IFNAMSIZ = 16                         # <linux/if.h>: an interface name is at most 15 bytes and a NUL
LOOPBACK = "127.0.0.1"
ROOTLESS_FIX = ("run as root (sudo): a veth pair to the host needs CAP_NET_ADMIN in the host's network "
                "namespace. Without root, containers get their network from labcore.kernel.usernet instead: a bridge "
                "in a namespace you own, with slirp4netns as its way out, as rootless Podman does")
PUBLISH_FORMS = ("CONTAINER_PORT, HOST_PORT:CONTAINER_PORT, 127.0.0.1:HOST_PORT:CONTAINER_PORT or "
                 "127.0.0.1::CONTAINER_PORT, optionally with /tcp or /udp (e.g. -p 8080:80, -p 5353:53/udp); "
                 "HOST_PORT 0 or left out: one the kernel picks")
SHORT_ID_MAX = IFNAMSIZ - 1 - len(paths.LINK_PREFIX) - 1      # room for "lc", the id, and "h" or "c"
_SHORT_ID = re.compile(r"[0-9a-z]{1,%d}" % SHORT_ID_MAX)
_PORT = re.compile(r"[0-9]{1,5}")
NETWORKS_LOCK = Path("/run/lock") / f"{paths.PREFIX}-networks.lock"   # user-defined bridges and their subnets


@dataclass(frozen=True)
class Network:
    """One bridge and its subnet; the bridge holds the first address, the gateway of every container.
    ``name`` is Docker's: "bridge" for the default, or a user-defined network's (``labcore.runtime.networks``)."""
    bridge: str = "lcbr0"
    subnet: str = "10.203.0.0/24"
    name: str = "bridge"

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


DEFAULT = Network()


@dataclass
class Endpoint:
    """A container's end of the network: its address, and the interfaces on both sides."""
    pid: int
    ip: str
    network: Network
    host_ifname: str                  # on the host, plugged into the bridge
    container_ifname: str = "eth0"    # inside, as Docker names it
    netns: int = 0                    # inode of /proc/PID/ns/net
    entries: list = field(default_factory=list)     # its journal entries, for ``disconnect``
    mac: str = ""                     # of the container's end
    via: int | None = None            # rootless: the pid holding the bridge's namespace (labcore.kernel.usernet)

    def __str__(self) -> str:
        where = f" in the namespace of pid {self.via}" if self.via else ""
        return (f"{self.container_ifname} {self.ip}/{self.network.prefixlen} in net:[{self.netns}] (pid "
                f"{self.pid}) <-> {self.host_ifname} on {self.network.bridge} {self.network.gateway}{where}")


@dataclass(frozen=True)
class PortMapping:
    """One `-p` value. ``host_port`` 0 lets the kernel choose a free port, as `-p 80` does."""
    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"


@dataclass
class Published:
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int
    pid: int                          # of the proxy
    protocol: str = "tcp"

    def __str__(self) -> str:         # as `docker port` prints it
        return (f"{self.container_port}/{self.protocol} -> {self.host_ip}:{self.host_port} "
                f"(to {self.container_ip})")


# --- checking input, before anything is made ----------------------------------------------------------------

def interface_names(short_id: str) -> tuple[str, str]:
    """The veth pair's names: lc<id>h on the host, lc<id>c until it is renamed eth0 inside."""
    if not _SHORT_ID.fullmatch(short_id):
        raise BadInput(f"invalid interface id {short_id!r}",
                       fix=f"1 to {SHORT_ID_MAX} lowercase letters or digits, so that "
                           f"{paths.LINK_PREFIX}<id>h fits in {IFNAMSIZ - 1} bytes (IFNAMSIZ)")
    return f"{paths.LINK_PREFIX}{short_id}h", f"{paths.LINK_PREFIX}{short_id}c"


def parse_publish(text: str) -> PortMapping:
    """Docker's `-p [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]`; the host side is always on loopback here."""
    spec, _, protocol = text.partition("/")
    if protocol not in ("", "tcp", "udp"):
        raise BadInput(f"cannot publish {text!r}: the lab's proxy relays TCP and UDP only",
                       fix=f"use {PUBLISH_FORMS}")
    if spec.startswith("["):
        raise BadInput(f"cannot publish {text!r}: the lab publishes on 127.0.0.1 only", fix=f"use {PUBLISH_FORMS}")
    parts = spec.split(":")
    if len(parts) > 3:
        raise BadInput(f"invalid port mapping {text!r}", fix=f"use {PUBLISH_FORMS}")
    host_ip = check_loopback(parts[0]) if len(parts) == 3 else LOOPBACK
    host_port = parse_port(parts[-2], text, host=True) if len(parts) > 1 else 0
    return PortMapping(host_ip, host_port, parse_port(parts[-1], text), protocol or "tcp")


def parse_port(value: str, text: str, host: bool = False) -> int:
    if host and value in ("", "0"):
        return 0                     # `127.0.0.1::80`, HostPort "0": a port of the kernel's choosing
    if not _PORT.fullmatch(value) or not 1 <= int(value) <= 65535:
        hint = " (port ranges are not supported)" if "-" in value else ""
        raise BadInput(f"invalid port {value!r} in {text!r}{hint}",
                       fix=f"a port is a number from 1 to 65535; use {PUBLISH_FORMS}")
    return int(value)


def check_loopback(host_ip: str) -> str:
    """The lab binds published ports on loopback only: nothing it runs may be reached from outside."""
    try:
        address = ipaddress.ip_address(host_ip)
    except ValueError:
        raise BadInput(f"invalid host address {host_ip!r}", fix=f"use {PUBLISH_FORMS}") from None
    if address.version != 4 or not address.is_loopback:
        why = "all of the host's addresses" if address.is_unspecified else "an address other hosts can reach"
        raise BadInput(f"the lab does not publish on {host_ip} ({why}): it binds loopback only, so that no "
                       "other machine can reach a lab container", fix="use 127.0.0.1, or leave the address "
                       "out (`-p 8080:80` means 127.0.0.1:8080 here, 0.0.0.0:8080 in Docker)")
    return host_ip


def check_own_netns(pid: int) -> int:
    """The inode of ``pid``'s network namespace, refused if it is ours: we would configure the host."""
    inode, ours = netns_inode(pid), netns_inode("self")
    if inode == ours:
        raise BadInput(f"pid {pid} is in this process's network namespace (net:[{ours}])",
                       fix="connect a process that has called unshare(CLONE_NEWNET), e.g. a container's pid 1")
    return inode


# --- nftables, and reaching another network namespace ---------------------------------------------------

def nft(rules: str, what: str) -> None:
    """Load nftables ``rules`` (nft(8) -f -) into this process's network namespace; ``what`` they are for."""
    program = find_program("nft")
    if program is None:
        raise NotSupportedHere(f"nft is not installed: {what} needs it", syscall="nft",
                               fix="apt-get install nftables (`./lab up` does)")
    done = subprocess.run(tied([program, "-f", "-"]), input=rules, capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"nft could not add {what}: {done.stderr.strip()}", syscall="nft -f -")


def netns_inode(pid: int | str = "self") -> int:
    try:
        return procfs.ns_inode("net", pid)
    except OSError as err:
        raise from_oserror(err, "readlink", procfs.path(pid, "ns", "net")) from err


def enter_netns(pid: int) -> None:
    """setns(2) into ``pid``'s network namespace (first its user namespace, if it has one of its own)."""
    # A rootless container's netns belongs to its user namespace: only root in there may join it.
    own_userns = procfs.ns_inode("user", pid) != procfs.ns_inode("user")
    enter_namespaces(pid, ("user", "net") if own_userns else ("net",))      # nsenter's order


def in_netns(pid: int | None, fn, *args):
    """``fn(*args)`` in ``pid``'s network namespace (in a child, so this process never moves), or here."""
    if pid is None:
        return fn(*args)

    def inside():
        enter_netns(pid)
        return fn(*args)
    return run_in_child(inside)


# --- the bridge, the address, the veth pair -------------------------------------------------------------------

def lock_path(network: Network) -> Path:
    """One lock for the whole host, as the bridge itself is: every state directory (a user's lab, the test
    suite beside it) plugs into the same lcbr0. /run/lock is where host-wide lock files live (FHS); the empty
    file stays, as lock files do, since unlinking a lock others may hold would break it. So user-defined
    bridges, which come and go, share one lock file between them rather than leave one each behind."""
    return Path("/run/lock") / f"{paths.PREFIX}-{network.bridge}.lock" if network.bridge == DEFAULT.bridge \
        else NETWORKS_LOCK


def locked(path: Path):
    """flock(2) the bridge's lock: one container at a time picks an address and plugs into the bridge."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return journal.flocked(path)


def ensure_bridge(network: Network, scope: journal.Scope) -> None:
    """Create the bridge with the gateway address unless it exists; it is shared, so the last user removes it."""
    # Each user records its own release before the bridge can exist; the undo deletes the bridge only once no
    # veth is plugged in any more (undo_bridge), under the same lock as this function.
    scope.record("bridge", network.bridge, "bridge", name=network.bridge, lock=str(lock_path(network)))
    if not link_exists(network.bridge):
        check_subnet_free(network)
        netlink.link_add(network.bridge, "bridge", mac=bridge_mac(network))
    gateway = f"{network.gateway}/{network.prefixlen}"
    shown = ipv4_addresses(netlink.addresses()).get(network.bridge, "")
    if gateway not in shown.split():               # not there after a crash between `link add` and `addr add`
        netlink.addr_add(network.bridge, network.gateway, network.prefixlen)
    netlink.link_set(network.bridge, up=True)
    forbid_forwarding(network.bridge)


def forbid_forwarding(bridge: str) -> None:
    """Never route a container's packets on: per-device forwarding is checked on the device a packet came in
    by (ip_route_input_slow), so this holds even on a host with net.ipv4.ip_forward=1. Not while a step of the
    lab routes through the bridge for its time (``nat.allow_forwarding``): that step's undo sets it back."""
    if forwarding_holders(bridge):
        return
    set_forwarding(bridge, "0")


# Who has asked a link to forward, one empty file each (LINK.HOLDER), host-wide as the bridge is: lcbr0 is shared
# by every state directory, so one lab's undo must not switch off what another's step is still routing through.
# Read and changed under the bridge's lock, as the bridge itself is.
FORWARDING_HOLDERS = Path("/run/lock") / f"{paths.PREFIX}-forwarding"


def forwarding_holders(ifname: str) -> list[Path]:
    return sorted(FORWARDING_HOLDERS.glob(f"{ifname}.*")) if FORWARDING_HOLDERS.is_dir() else []


def set_forwarding(ifname: str, value: str) -> None:
    """net.ipv4.conf.IFNAME.forwarding = ``value``, with the kernel's refusal as a LabError."""
    sysctl = procfs.sysctl_path(f"net.ipv4.conf.{ifname}.forwarding")
    try:
        Path(sysctl).write_text(value)
    except OSError as err:
        raise from_oserror(err, "write", sysctl, fix=ROOTLESS_FIX) from err


def check_subnet_free(network: Network) -> None:
    """Refuse a subnet that an interface of this namespace holds already: two bridges with one subnet would
    each claim its addresses, and which one a packet reaches would depend on the route the kernel met first.
    (Another state directory's network may hold it: each lab picks its subnets from the same pool.)"""
    subnet = ipaddress.ip_network(network.subnet)
    for link in netlink.addresses():
        for address in link.get("addr_info", []):
            if ipaddress.ip_address(address["local"]) in subnet and link["ifname"] != network.bridge:
                raise LabError(f"the subnet {network.subnet} of network {network.name} is in use on this host: "
                               f"{link['ifname']} holds {address['local']}",
                               fix="remove the network and create it again (it picks a free subnet), or give "
                                   "it another with --subnet")


def describe_link(name: str) -> str:
    """"absent", or the state of link ``name`` and the bridge it is plugged into, as netlink reads them in this
    process's network namespace (``in_netns`` to read another's)."""
    link = next((link for link in netlink.links() if link["ifname"] == name), None)
    if link is None:
        return "absent"
    return f"{link.get('operstate', '?')}, on {link['master']}" if "master" in link else "present"


link_exists = netlink.link_exists       # in this process's network namespace, as netlink answers


def taken_addresses() -> set[str]:
    """Addresses in use in this network namespace: each host end carries its container's address as its
    alias (IFLA_IFALIAS).

    The kernel is the lease table: an alias cannot go stale, since the pair dies with the container's
    namespace, and every state dir sees the same one (the host's, or the router namespace's rootless).
    """
    return {link.get("ifalias", "") for link in netlink.links() if paths.is_ours(link["ifname"])} - {""}


def free_address(network: Network, taken: set[str]) -> str:
    """The lowest address of the subnet that is neither the gateway nor taken, as Docker's IPAM picks."""
    for host in ipaddress.ip_network(network.subnet).hosts():
        if str(host) != network.gateway and str(host) not in taken:
            return str(host)
    raise LabError(f"no free address left in {network.subnet}",
                   fix="stop some containers, or run `labcore cleanup`")


def plug_in(network: Network, host_ifname: str, peer: str, address: str, pid: int) -> None:
    """Create the pair, plug the host end into the bridge, and send the other end into ``pid``'s namespace.

    The host end carries the container's address as its alias: that is the lease (``taken_addresses``)."""
    netlink.link_add(host_ifname, "veth", peer)
    netlink.link_set(host_ifname, alias=address, master=network.bridge, up=True)
    netlink.link_set(peer, netns=pid)
    # The address may have been another container's a moment ago, with another MAC: forget the bridge's
    # neighbour entry for it, or the first packets go to a MAC that no longer exists until the kernel
    # re-probes, seconds later (ip-neighbour(8); Docker's bridge driver refreshes the entry the same way).
    netlink.neigh_flush(address, network.bridge)


def bridge_mac(network: Network) -> str:
    """The bridge's own MAC: its gateway address's, made as a container's is (``mac_for``).

    A bridge given none takes the lowest of its ports' (br_stp_recalculate_bridge_id, net/bridge/br_stp_if.c),
    so it changed whenever a container's veth came or went, and a container that had learnt the old MAC sent
    the host its packets into the void until its neighbour entry went stale, tens of seconds later (seen here:
    a container's connect to the gateway timed out after 8 s, once another container had left). Docker gives
    docker0 an address of its own for the same reason (moby, libnetwork/drivers/bridge/setup_device.go). It is
    set in the message that creates the bridge, as moby does since a race with udev, which gives a persistent
    address to an interface created with a random one; the kernel then keeps it (addr_assign_type 3, "set")."""
    return mac_for(network.gateway)


def mac_for(address: str) -> str:
    """Docker's MAC address for a container's IPv4 address: 02:42 (locally administered) and its four bytes."""
    return "02:42:" + ":".join(f"{byte:02x}" for byte in ipaddress.ip_address(address).packed)


def configure_inside(peer: str, ifname: str, address: str, network: Network, default_route: bool = True,
                     mac: str | None = None) -> None:
    """Inside the container's namespace: lo up, the veth end renamed, given its MAC and address, a default
    route (through the first network only: a container on several has one way out, and a route to each)."""
    bring_up("lo")
    netlink.link_set(peer, new_name=ifname, mac=mac or mac_for(address))
    netlink.addr_add(ifname, address, network.prefixlen)
    netlink.link_set(ifname, up=True)
    if default_route:
        netlink.route_add(network.gateway, ifname)


def connect(pid: int, scope: journal.Scope, network: Network = DEFAULT, short_id: str | None = None,
            ifname: str = "eth0", default_route: bool = True, mac: str | None = None) -> Endpoint:
    """Give the network namespace of ``pid`` an eth0 on the bridge, as Docker's bridge driver does (eth1 on
    its second network, and so on: ``ifname``).

    ``pid`` has already called unshare(CLONE_NEWNET), so its namespace, and the veth end in it, die with it.
    ``short_id`` names the pair (lc<short_id>h, at most 12 characters): a container id's first ten digits.
    Everything made is recorded in ``scope``; ``disconnect`` undoes it before the scope ends.
    """
    host_ifname, peer = interface_names(short_id or secrets.token_hex(5))
    inode = check_own_netns(pid)
    first = len(scope.entries)
    with locked(lock_path(network)):       # from reading the aliases until the new alias is set
        ensure_bridge(network, scope)
        address = free_address(network, taken_addresses())
        scope.record("link", host_ifname, "link", name=host_ifname)   # deleting one end deletes both
        plug_in(network, host_ifname, peer, address, pid)
    in_netns(pid, configure_inside, peer, ifname, address, network, default_route, mac)
    return Endpoint(pid, address, network, host_ifname, ifname, inode, entries=scope.entries[first:],
                    mac=mac or mac_for(address))


def bring_up(name: str) -> None:
    """`ip link set NAME up`: a new namespace's lo is down (network_namespaces(7))."""
    netlink.link_set(name, up=True)


def disconnect(endpoint: Endpoint, scope: journal.Scope) -> None:
    """Undo the endpoint and its published ports now (a stopped container keeps no network), not at scope end."""
    failures = scope.journal.undo_many(endpoint.entries)
    scope.entries = [entry for entry in scope.entries if entry not in endpoint.entries]
    endpoint.entries = []
    if failures:
        raise LabError("could not undo: " + "; ".join(failures), fix="run `labcore cleanup` to retry")


def publish(endpoint: Endpoint, host_port: int, container_port: int, scope: journal.Scope,
            host_ip: str = LOOPBACK, protocol: str = "tcp") -> Published:
    """`-p host_ip:host_port:container_port[/udp]`: a proxy process on the host port relays to the container.

    The proxy is journaled before it may do anything: it holds the port from its start, but serves only
    once it reads the go-ahead, written after its record; if this process dies first, it reads EOF and
    exits, so no proxy ever holds a port that `labcore cleanup` cannot find."""
    check_loopback(host_ip)
    parse_port(str(container_port), f"{host_port}:{container_port}")
    parse_port(str(host_port), f"{host_port}:{container_port}", host=True)
    listener = bind_host_port(host_ip, host_port, protocol)
    go, go_ahead = os.pipe()
    try:
        try:
            process = portproxy.start(listener, (endpoint.ip, container_port), inside=endpoint.via, go=go)
        finally:
            os.close(go)                  # the proxy's copy is the only one: EOF for it once we are gone
        entry = scope.record("process", str(process.pid), "kill", pid=process.pid,
                             start=journal.process_start_time(process.pid))
        endpoint.entries.append(entry)
        try:
            os.write(go_ahead, b"1")
        except BrokenPipeError as err:
            raise LabError(f"the port proxy (pid {process.pid}) exited before it could serve",
                           fix="run with -p again; `labcore doctor` checks that Python can run here") from err
        return Published(host_ip, listener.getsockname()[1], endpoint.ip, container_port, process.pid, protocol)
    finally:
        listener.close()                  # the proxy holds its own copy of the socket now
        os.close(go_ahead)


def bind_host_port(host_ip: str, host_port: int, protocol: str = "tcp") -> socket.socket:
    """Bind (and listen, for TCP) here, so a busy port fails in this process with EADDRINUSE, before any
    proxy runs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM)
    try:
        if protocol == "tcp":
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # rebind while old TIME_WAITs linger
        listener.bind((host_ip, host_port))
        if protocol == "tcp":
            listener.listen(128)
    except OSError as err:
        listener.close()
        raise from_oserror(err, f"bind({host_ip}:{host_port}/{protocol})", fix="publish on another host port, "
                           "or leave it out for a free one (-p 80)" if err.errno == errno.EADDRINUSE else None) from err
    return listener


# --- bandwidth: tc on the host end ---------------------------------------------------------------------------
# No cgroup controller limits network bandwidth (net_cls and net_prio only tag a socket's packets with a class
# id or a priority, for a qdisc to act on). A limit is a queueing discipline on an interface: Kubernetes' CNI
# "bandwidth" plugin puts a tbf on the host end of a pod's veth, so what goes *to* the pod leaves the host no
# faster than its rate (containernetworking/plugins: plugins/meta/bandwidth).

TBF_LATENCY_MS = 50                   # at most this long in the queue, then dropped: TCP slows down to the rate
BURST_MIN = 64 * 1024                 # a veth passes TCP in segments up to 64 KiB (GSO): the bucket must hold one


def limit_rate(host_ifname: str, rate: int, scope: journal.Scope, burst: int | None = None) -> dict:
    """`tc qdisc add dev HOST_IFNAME root tbf rate RATEbit burst B latency 50ms`: what the host sends into the
    veth (to the container) leaves at ``rate`` bits/s. Journaled first; returns the kernel's qdisc, and the
    burst asked for (the kernel keeps it as a time, tc-tbf(8))."""
    if not paths.is_ours(host_ifname):
        raise BadInput(f"{host_ifname} is not a link of the lab's", fix="the host end of a lab container's veth")
    burst = burst or max(rate // 8 // 100, BURST_MIN)      # 10 ms of the rate, or one GSO packet
    scope.record("qdisc", host_ifname, "qdisc", name=host_ifname)
    netlink.qdisc_add(host_ifname, "tbf", rate, burst, TBF_LATENCY_MS)
    return {**root_qdisc(host_ifname), "burst": burst}


def root_qdisc(name: str) -> dict:
    """The qdisc at the root of ``name``'s egress, as the kernel answers (noqueue: a veth's default)."""
    return next((qdisc for qdisc in netlink.qdiscs(name) if qdisc.get("root")), {"kind": "none"})


# --- the inverses the journal replays ----------------------------------------------------------------------
# Each refuses a name the lab could not have given (lc...), and treats a link that is gone as removed.

@journal.register("link")
def undo_link(name: str) -> None:
    """Delete one end of a veth pair of ours (its peer goes with it: veth(4)) in this network namespace."""
    journal.refuse_foreign(name, name.startswith(paths.LINK_PREFIX))
    delete_link(name)


def delete_link(name: str) -> None:
    if link_exists(name):
        try:
            netlink.link_delete(name)
        except LabError as err:
            if err.errno != errno.ENODEV:           # gone between the look and the delete: as good as done
                raise


@journal.register("qdisc")
def undo_qdisc(name: str) -> None:
    """`tc qdisc del dev NAME root` on a link of ours; a link gone took its qdisc with it."""
    journal.refuse_foreign(name, name.startswith(paths.LINK_PREFIX))
    if not link_exists(name):
        return
    try:          # the look and the delete both inside: a veth goes when its namespace's teardown says so
        if root_qdisc(name).get("kind") == "tbf":
            netlink.qdisc_delete(name)
    except LabError as err:
        if err.errno not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):        # gone meanwhile: as good as done
            raise


@journal.register("link_in")
def undo_link_in(name: str, pid: int, start: int | None) -> None:
    """Delete a link of ours inside the network namespace of process ``pid`` (a rootless one, where the host's
    netlink cannot see: ``labcore.kernel.usernet``), while that pid still names the process we started."""
    journal.refuse_foreign(name, name.startswith(paths.LINK_PREFIX))
    if start is not None and journal.process_start_time(pid) == start:
        in_netns(pid, delete_link, name)


@journal.register("bridge")
def undo_bridge(name: str, lock: str) -> None:
    """Delete a bridge of ours once no interface is plugged into it: it is shared by every container on it,
    so the last one out removes it. Under the lock that ``connect`` holds while plugging in."""
    journal.refuse_foreign(name, name.startswith(paths.LINK_PREFIX))
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(FileNotFoundError):     # its state dir is gone: nobody connects through it
            fcntl.flock(stack.enter_context(open(lock)).fileno(), fcntl.LOCK_EX)
        links = netlink.links()
        # Were we killed from here on, the lock would go with us, but the bridge would be either still there
        # or gone: the kernel handles RTM_DELLINK whole within the sendmsg(2) that carries it.
        if any(link["ifname"] == name for link in links) and not any(link.get("master") == name for link in links):
            delete_link(name)


@journal.register("netns")
def undo_netns(name: str) -> None:
    """`ip netns delete NAME`: detach the bind mount that keeps a named namespace alive (ip-netns(8)), and
    its file. The lab names none today; a journal written by an older lab may still hold one."""
    journal.refuse_foreign(name, name.startswith(paths.PREFIX))
    path = os.path.join("/run/netns", name)
    if path in procfs.mounts_under(path):
        syscalls.umount2(path, syscalls.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# --- evidence ---------------------------------------------------------------------------------------------------

def ipv4_addresses(dump: list[dict]) -> dict[str, str]:
    """`ip -j addr` as one line per interface: ``{"eth0": "UP 10.203.0.2/24"}`` (IPv4 only: the lab's)."""
    return {link["ifname"]: " ".join([link.get("operstate", "?"),
                                      *(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                                        if a.get("family") == "inet")])
            for link in dump}


def read_interfaces() -> dict:
    """What this process's network namespace has: its interfaces with their addresses, its default route."""
    default = [route for route in netlink.routes() if route["dst"] == "default"]
    return {"net ns": f"net:[{netns_inode('self')}]",
            **ipv4_addresses(netlink.addresses()),
            "default route": ", ".join(f"via {r.get('gateway', '-')} dev {r['dev']}" for r in default) or "none"}


def ask(host: str, port: int, timeout: float = 5.0) -> str:
    """Connect, and read what the server says first: each demo server names itself."""
    with socket.create_connection((host, port), timeout=timeout) as conn:
        return conn.recv(256).decode(errors="replace").strip()


def reply(host: str, port: int) -> str:
    """``ask``, with a failure shown as evidence rather than raised."""
    try:
        return ask(host, port)
    except OSError as err:
        return f"failed: {errno.errorcode.get(err.errno, err.errno)} {err.strerror or err}"
