"""NAT in the kernel: a published port as a DNAT rule, and the way out as MASQUERADE (nftables, man 8 nft).

Docker publishes a port mainly without any process: its bridge driver adds NAT rules, and the kernel rewrites
each connection's packets (moby: libnetwork/drivers/bridge; docs: "Packet filtering and firewalls"):

    DNAT        `-p 8080:80`: a new connection to a host address, port 8080, is rewritten to go to the
                container's address, port 80. Docker puts the rule in the nat table's PREROUTING (packets from
                other machines) and OUTPUT (the host's own, to any of its local addresses but 127.0.0.0/8);
                docker-proxy serves only what NAT cannot: 127.0.0.1, whose packets may not leave lo
                (route_localnet), and a container reaching its own published port (hairpin)
    MASQUERADE  `-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE`: a connection a container opens to anywhere but
                its bridge leaves with the source address of the host's outgoing interface, so the answer
                comes back to the host, which rewrites it back (conntrack) to the container

A NAT rule is looked at for a connection's first packet only: conntrack remembers the rewrite and applies it to
every later packet in both directions, so a rule's counter counts connections, not traffic.

The lab writes each set of rules as one nftables table of its own, ``labcore-...``, journaled before it exists
and deleted whole (`nft delete table ip NAME`). Its DNAT rule is in the output hook only: the lab never lets
another machine reach a container. Without root the host's tables are not yours: rootless Docker and Podman
forward ports with a process (rootlesskit's port driver, slirp4netns's add_hostfwd) and leave by slirp4netns.

Next: ``labcore.kernel.portproxy``, the loopback proxy the lab publishes with.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import subprocess
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, LabError, NotFound, NotSupportedHere
from labcore.kernel import journal, netlink, network, procfs
from labcore.kernel.network import nft
from labcore.kernel.process import find_program, tied

TABLE_PREFIX = f"{paths.PREFIX}-"

DNAT = """table ip {table} {{
    chain output {{
        type nat hook output priority -100; policy accept;
        ip daddr != 127.0.0.0/8 fib daddr type local tcp dport {host_port} counter dnat to {address}:{port} \
comment "publish"
    }}
}}
"""
MASQUERADE = """table ip {table} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet} oifname != "{bridge}" counter masquerade comment "masquerade"
    }}
}}
"""
FORWARD_ONLY = """table ip {table} {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{bridge}" oifname != {{ "{bridge}", "{out}" }} counter drop comment "only to {out}"
        iifname "{out}" oifname "{bridge}" ct state != {{ established, related }} counter drop comment "answers only"
    }}
}}
"""


def check_table(name: str) -> str:
    if not name.startswith(TABLE_PREFIX) or not name.replace("-", "").isalnum():
        raise BadInput(f"invalid table name {name!r}", fix=f"{TABLE_PREFIX} and letters or digits")
    return name


def add_table(name: str, rules: str, scope: journal.Scope, what: str) -> None:
    """Journal the table, then load it: `nft -f -` makes it whole or not at all (one transaction)."""
    scope.record("nft table", check_table(name), "nft_table", name=name)
    nft(rules, what)


def publish(table: str, host_port: int, address: str, port: int, scope: journal.Scope) -> None:
    """DNAT: the host's own connections to a local address (not loopback), ``host_port``, go to address:port."""
    add_table(table, DNAT.format(table=table, host_port=host_port, address=address, port=port), scope,
              f"the DNAT of port {host_port}")


def masquerade(table: str, subnet: str, bridge: str, scope: journal.Scope) -> None:
    """MASQUERADE what ``subnet`` sends out of any interface but its ``bridge``, as Docker's rule does."""
    add_table(table, MASQUERADE.format(table=table, subnet=subnet, bridge=bridge), scope,
              f"the masquerade of {subnet}")


def forward_only(table: str, bridge: str, out: str, scope: journal.Scope) -> None:
    """A filter, made before ``bridge`` may forward at all: what comes in on it is routed to ``out`` only, and
    from ``out`` only the answers come back. Nothing else of the lab's network is routed anywhere meanwhile.
    (Container to container stays allowed: with br_netfilter loaded, bridged frames pass this hook too.)"""
    add_table(table, FORWARD_ONLY.format(table=table, bridge=bridge, out=out), scope,
              f"the filter from {bridge} to {out}")


def counters(table: str) -> dict[str, dict]:
    """Each commented rule's counter, as `nft -j list table ip NAME` reads it from the kernel: {comment:
    {"packets": N, "bytes": N}}; {} when the table does not exist."""
    listing = _nft("-j", "list", "table", "ip", check_table(table))
    if listing is None:
        return {}
    found = {}
    for item in json.loads(listing).get("nftables", []):
        rule = item.get("rule")
        if rule and rule.get("comment"):
            counter = next((e["counter"] for e in rule.get("expr", []) if "counter" in e), {})
            found[rule["comment"]] = {"packets": counter.get("packets", 0), "bytes": counter.get("bytes", 0)}
    return found


def packets(table: str, comment: str) -> int | None:
    """The packets the rule ``comment`` counted; None where nft could not list the table."""
    return counters(table).get(comment, {}).get("packets")


def rules(table: str) -> list[str]:
    """The table's rules as nft prints them (without handles); [] when it does not exist."""
    listing = _nft("list", "table", "ip", check_table(table)) or ""
    return [line.strip() for line in listing.splitlines() if line.strip().split(" ")[0] not in _FRAME]


_FRAME = ("table", "chain", "type", "}", "")


def _nft(*argv: str) -> str | None:
    program = find_program("nft")
    if program is None:
        return None
    done = subprocess.run(tied([program, *argv]), capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


# --- somewhere to go: another network, routed by the host ------------------------------------------------------

def wire_peer(pid: int, scope: journal.Scope, short_id: str, subnet: str) -> network.Network:
    """A veth pair from the host (lc<id>o, the subnet's first address) to ``pid``'s network namespace (eth0,
    the second): another network the host routes to, as a LAN beyond a Docker host would be."""
    net = network.Network(bridge=f"{paths.LINK_PREFIX}{short_id}o", subnet=subnet, name="outside")
    peer = f"{paths.LINK_PREFIX}{short_id}p"
    network.check_own_netns(pid)
    network.check_subnet_free(net)
    scope.record("link", net.bridge, "link", name=net.bridge)      # deleting one end deletes both
    netlink.link_add(net.bridge, "veth", peer)
    netlink.addr_add(net.bridge, net.gateway, net.prefixlen)
    netlink.link_set(net.bridge, up=True)
    netlink.link_set(peer, netns=pid)
    network.in_netns(pid, network.configure_inside, peer, "eth0", peer_address(net), net)
    return net


def free_peer_subnet(pool: str) -> str:
    """The first /30 of ``pool`` no interface of this namespace holds an address in (another lab's step may hold
    one for its time); NotSupportedHere when every one is taken."""
    held = [ipaddress.ip_address(address["local"]) for link in netlink.addresses()      # IPv4 only
            for address in link.get("addr_info", [])]
    for subnet in ipaddress.ip_network(pool).subnets(new_prefix=30):
        if not any(address in subnet for address in held):
            return str(subnet)
    raise NotSupportedHere(f"every /30 of {pool} is in use on this host, so there is no other network to make",
                           fix="see who holds them: `ip -br addr`; a lab's step gives its own back when it ends")


def peer_address(net: network.Network) -> str:
    return str(list(ipaddress.ip_network(net.subnet).hosts())[1])


# --- forwarding, for the masquerade's time ---------------------------------------------------------------------

def allow_forwarding(ifname: str, scope: journal.Scope) -> None:
    """net.ipv4.conf.IFNAME.forwarding=1 on a link of ours, journaled: the kernel routes on what comes in on it
    (ip_route_input_slow checks the incoming device). ``network.forbid_forwarding`` set 0 on the lab's bridges.
    lcbr0 is shared by every lab on the host: each step that asks is a holder, and the last one out sets 0."""
    if not ifname.startswith(paths.LINK_PREFIX):
        raise BadInput(f"{ifname} is not a link of the lab's", fix="a lab bridge or veth (lc...)")
    holder = network.FORWARDING_HOLDERS / f"{ifname}.{secrets.token_hex(6)}"
    scope.record("sysctl", f"net.ipv4.conf.{ifname}.forwarding", "forwarding_off", name=ifname, holder=str(holder))
    with network.locked(network.lock_path(network.DEFAULT)):
        holder.parent.mkdir(mode=0o755, exist_ok=True)
        holder.touch()
        network.set_forwarding(ifname, "1")


def forwarding(ifname: str) -> str:
    try:
        return Path(procfs.sysctl_path(f"net.ipv4.conf.{ifname}.forwarding")).read_text().strip()
    except FileNotFoundError:
        return "no such link"


@journal.register("forwarding_off")
def undo_forwarding(name: str, holder: str = "") -> None:
    """Back to the lab's 0 (its links never route) once no other step holds it; a link that is gone took its
    setting with it. (A journal written before holders has none: it sets 0 unless another step holds it.)"""
    journal.refuse_foreign(name, name.startswith(paths.LINK_PREFIX))
    if holder:
        journal.refuse_foreign(holder, Path(holder).parent == network.FORWARDING_HOLDERS)
    with network.locked(network.lock_path(network.DEFAULT)):
        if holder:
            Path(holder).unlink(missing_ok=True)
        if network.forwarding_holders(name):
            return                                      # another step routes through it still: its undo sets 0
        with contextlib.suppress(OSError):              # the last holder of any link: no directory left behind
            network.FORWARDING_HOLDERS.rmdir()
        # Write, don't look first: the link may go in between. A veth to a namespace goes when that namespace
        # does, and the kernel tears a namespace down in a worker after its last process exits (net/core/
        # net_namespace.c, cleanup_net), so the outside end of a step's peer network vanishes at a moment of
        # the kernel's choosing. ENOENT then is the link, and its setting, gone: already undone.
        with contextlib.suppress(NotFound):
            network.set_forwarding(name, "0")


@journal.register("nft_table")
def undo_table(name: str) -> None:
    """`nft delete table ip NAME`, a table of ours; one that is gone is as good as deleted."""
    journal.refuse_foreign(name, name.startswith(TABLE_PREFIX))
    if _nft("list", "table", "ip", name) is None:
        return
    if _nft("delete", "table", "ip", name) is None and _nft("list", "table", "ip", name) is not None:
        raise LabError(f"nft could not delete table ip {name}", syscall="nft delete table")
