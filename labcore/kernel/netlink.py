"""rtnetlink: the socket through which interfaces, addresses and routes are made (man 7 rtnetlink).

`ip link add lcbr0 type bridge` is not a system call of its own: ip(8) opens an AF_NETLINK socket and sends
the kernel a message, RTM_NEWLINK with the attributes IFLA_IFNAME "lcbr0" and IFLA_INFO_KIND "bridge", and
reads back an acknowledgement or an errno. Every network call of the lab is one such message:

    link_add       RTM_NEWLINK   ip link add NAME [address MAC] type bridge | veth peer name PEER  man 8 ip-link
    link_set       RTM_NEWLINK   ip link set NAME [name N] [address MAC] [alias A] [master BR] [netns PID] [up]
    link_delete    RTM_DELLINK   ip link delete NAME
    addr_add       RTM_NEWADDR   ip addr add ADDRESS/PREFIX dev NAME                   man 8 ip-address
    route_add      RTM_NEWROUTE  ip route add default via GATEWAY dev NAME             man 8 ip-route
    neigh_flush    RTM_DELNEIGH  ip neigh flush to ADDRESS dev NAME                    man 8 ip-neighbour
    qdisc_add      RTM_NEWQDISC  tc qdisc add dev NAME root tbf rate R burst B latency L  man 8 tc-tbf
    qdisc_delete   RTM_DELQDISC  tc qdisc del dev NAME root                             man 8 tc
    qdiscs         RTM_GETQDISC  `tc -s qdisc show dev NAME`: kind, parameters, bytes and packets sent
    links, addresses, routes     RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE dumps: `ip -j link/addr/route show`

The messages are built by pyroute2, a netlink library (no ip(8) process per call). A netlink socket belongs
to the network namespace of the process that opened it, so each call opens its own: a child that setns(2)'d
into a container's namespace (``labcore.kernel.network.in_netns``) talks to that namespace, never to one
whose socket it inherited. The answers come back as ip(8)'s JSON would print them.

Like ``labcore.kernel.syscalls`` this is a seam: the functions below delegate to the active backend, and unit
tests swap in ``Recorder`` to check the order of calls without root::

    with netlink.use(netlink.Recorder()) as rec:
        network.connect(...)
    assert rec.names()[:2] == ["link_add", "addr_add"]

Next: ``labcore.kernel.network``, which wires a container to a bridge with these calls.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import sys

from labcore.errors import from_oserror
from labcore.kernel.syscalls import Seam

PERMISSION_FIX = ("a network namespace's links are changed with CAP_NET_ADMIN over it: run as root (sudo); "
                  "without root, labcore.kernel.usernet builds the network inside a namespace you own")
TC_H_ROOT, ROOT_HANDLE = 0xFFFFFFFF, 0x10000   # <linux/pkt_sched.h>: the root of a device; handle 1:
_NUD_KEPT = 0x80 | 0x40                # NUD_PERMANENT, NUD_NOARP: `ip neigh flush` leaves these (ip-neighbour(8))


def off_the_running_loop(method):
    """Run ``method`` in a thread of its own when this thread runs an asyncio event loop, as a Jupyter
    kernel's main thread does: pyroute2's synchronous calls drive an event loop of their own, which asyncio
    refuses to start inside another. A new thread shares the caller's network namespace (setns(2) is per
    thread, and a thread starts in its creator's); a forked child runs no loop, so it calls directly."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        if not _loop_running():
            return method(*args, **kwargs)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(method, *args, **kwargs).result()
    return call


def _loop_running() -> bool:
    asyncio = sys.modules.get("asyncio")               # not imported: no loop can be running
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()                     # RuntimeError when this thread runs none
    except RuntimeError:
        return False
    return True


class Kernel:
    """The real backend: one pyroute2 IPRoute socket per call, in the caller's network namespace."""

    @contextlib.contextmanager
    def _socket(self, command: str):
        from pyroute2 import IPRoute                 # a heavy import: only when a network is wired
        from pyroute2.netlink.exceptions import NetlinkError
        try:
            with IPRoute() as ipr:
                yield ipr
        except NetlinkError as err:
            code = err.code or errno.EIO
            fix = PERMISSION_FIX if code in (errno.EPERM, errno.EACCES) else None
            raise from_oserror(OSError(code, os.strerror(code)), f"netlink: ip {command}", fix=fix) from err

    @staticmethod
    def _index(ipr, name: str) -> int:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise from_oserror(OSError(errno.ENODEV, os.strerror(errno.ENODEV)), f"netlink: no link {name}")
        return found[0]

    @off_the_running_loop
    def link_add(self, name: str, kind: str, peer: str | None = None, mac: str | None = None) -> None:
        with self._socket(_COMMANDS["link_add"](name, kind, peer, mac)) as ipr:
            ipr.link("add", ifname=name, kind=kind, **({"peer": peer} if peer else {}),
                     **({"address": mac} if mac else {}))

    @off_the_running_loop
    def link_set(self, name: str, **changes) -> None:
        with self._socket(f"link set {name} {describe(changes)}") as ipr:
            index = self._index(ipr, name)
            attributes = {_ATTRIBUTES[key]: value for key, value in changes.items() if key not in ("up", "master")}
            if "master" in changes:
                attributes["master"] = self._index(ipr, changes["master"])
            if changes.get("up") is not None:
                attributes["state"] = "up" if changes["up"] else "down"
            ipr.link("set", index=index, **attributes)

    @off_the_running_loop
    def link_delete(self, name: str) -> None:
        with self._socket(f"link delete {name}") as ipr:
            ipr.link("del", index=self._index(ipr, name))

    @off_the_running_loop
    def addr_add(self, name: str, address: str, prefixlen: int) -> None:
        with self._socket(f"addr add {address}/{prefixlen} dev {name}") as ipr:
            ipr.addr("add", index=self._index(ipr, name), address=address, prefixlen=prefixlen)

    @off_the_running_loop
    def route_add(self, gateway: str, name: str) -> None:
        with self._socket(f"route add default via {gateway} dev {name}") as ipr:
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=self._index(ipr, name))

    @off_the_running_loop
    def neigh_flush(self, address: str, name: str) -> None:
        from pyroute2.netlink.exceptions import NetlinkError
        with self._socket(f"neigh flush to {address} dev {name}") as ipr:
            index = self._index(ipr, name)
            for entry in ipr.get_neighbours(family=socket.AF_INET, ifindex=index):
                if entry.get("NDA_DST") == address and not entry["state"] & _NUD_KEPT:
                    with contextlib.suppress(NetlinkError):     # gone meanwhile: as good as flushed
                        ipr.neigh("del", dst=address, ifindex=index)

    @off_the_running_loop
    def links(self) -> list[dict]:
        with self._socket("link show") as ipr:
            found = list(ipr.get_links())
        names = {link["index"]: link.get("IFLA_IFNAME") for link in found}
        return [_link(link, names) for link in found]

    @off_the_running_loop
    def addresses(self) -> list[dict]:
        """`ip -j addr show`: each link with its IPv4 addresses as ``addr_info``."""
        links = self.links()
        with self._socket("addr show") as ipr:
            found = list(ipr.get_addr(family=socket.AF_INET))
        for link in links:
            link["addr_info"] = [{"family": "inet", "local": a.get("IFA_LOCAL") or a.get("IFA_ADDRESS"),
                                  "prefixlen": a["prefixlen"]} for a in found if a["index"] == link["index"]]
        return links

    @off_the_running_loop
    def routes(self) -> list[dict]:
        """`ip -j -4 route show` of the main table: ``dst`` is "default" or a subnet."""
        links = {link["index"]: link["ifname"] for link in self.links()}
        with self._socket("route show") as ipr:
            found = list(ipr.get_routes(family=socket.AF_INET, table=254))
        return [_route(route, links) for route in found]

    @off_the_running_loop
    def qdisc_add(self, name: str, kind: str, rate: int, burst: int, latency_ms: int) -> None:
        with self._socket(f"qdisc add dev {name} root {kind} rate {rate}bit burst {burst} "
                          f"latency {latency_ms}ms") as ipr:
            ipr.tc("add", kind, self._index(ipr, name), ROOT_HANDLE, rate=f"{rate}bit", burst=burst,
                   latency=f"{latency_ms}ms")

    @off_the_running_loop
    def qdisc_delete(self, name: str) -> None:
        with self._socket(f"qdisc del dev {name} root") as ipr:
            ipr.tc("del", index=self._index(ipr, name), handle=ROOT_HANDLE, parent=TC_H_ROOT)

    @off_the_running_loop
    def qdiscs(self, name: str) -> list[dict]:
        with self._socket(f"qdisc show dev {name}") as ipr:
            return [_qdisc(message, name) for message in ipr.get_qdiscs(self._index(ipr, name))]


_ATTRIBUTES = {"new_name": "ifname", "mac": "address", "alias": "ifalias", "netns": "net_ns_pid"}


def _link(message, names: dict) -> dict:
    master = message.get("IFLA_MASTER")
    link = {"index": message["index"], "ifname": message.get("IFLA_IFNAME"),
            "operstate": message.get("IFLA_OPERSTATE", "UNKNOWN"), "address": message.get("IFLA_ADDRESS")}
    if message.get("IFLA_IFALIAS"):
        link["ifalias"] = message.get("IFLA_IFALIAS")
    if master:
        link["master"] = names.get(master, str(master))
    return link


def _route(message, links: dict) -> dict:
    route = {"dst": f"{message.get('RTA_DST')}/{message['dst_len']}" if message["dst_len"] else "default"}
    if message.get("RTA_GATEWAY"):
        route["gateway"] = message.get("RTA_GATEWAY")
    if message.get("RTA_OIF"):
        route["dev"] = links.get(message.get("RTA_OIF"), "?")
    return route


def _qdisc(message, name: str) -> dict:
    """One qdisc as `tc -s -j qdisc show` prints it: the tbf rate in bits/s (the kernel keeps bytes/s)."""
    qdisc = {"dev": name, "kind": message.get("TCA_KIND"), "root": message["parent"] == TC_H_ROOT,
             "handle": f"{message['handle'] >> 16:x}:"}
    parms = (message.get("TCA_OPTIONS") or {}).get("TCA_TBF_PARMS") if qdisc["kind"] == "tbf" else None
    if parms:
        qdisc["rate"] = parms["rate"] * 8
    stats = message.get("TCA_STATS") or {}
    qdisc.update(bytes=stats.get("bytes", 0), packets=stats.get("packets", 0), drops=stats.get("drop", 0),
                 overlimits=stats.get("overlimits", 0))
    return qdisc


def describe(changes: dict) -> str:
    """``link_set``'s changes as ip(8) words: name eth0 address 02:42:.. alias .. master lcbr0 netns 42 up."""
    words = {"new_name": "name", "mac": "address", "alias": "alias", "master": "master", "netns": "netns"}
    return " ".join([f"{words[key]} {value}" for key, value in changes.items() if key in words] +
                    ([] if changes.get("up") is None else ["up" if changes["up"] else "down"]))


class Recorder:
    """A fake rtnetlink that records each call, for unit tests of the order without root.

    ``links`` is what the namespace holds (``ip -j link show``'s form, with ``addr_info`` for addresses);
    calls that make or remove links change it, so a second look sees the first's work. ``fail`` maps a call's
    name to an errno it raises."""

    def __init__(self, links: list[dict] | None = None, routes: list[dict] | None = None,
                 fail: dict[str, int] | None = None):
        self.calls: list[tuple[str, tuple]] = []
        self.state = {link["ifname"]: dict(link) for link in links or []}
        self.route_table = list(routes or [])
        self.fail = fail or {}

    def names(self) -> list[str]:
        return [name for name, _ in self.calls if name not in _QUERIES]

    def commands(self) -> list[str]:
        """The calls as ip(8) would be asked for them: "link add lcbr0 type bridge"..."""
        return [_COMMANDS[name](*args) for name, args in self.calls if name not in _QUERIES]

    def _record(self, name: str, *args) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            code = self.fail[name]
            raise from_oserror(OSError(code, os.strerror(code)), f"netlink: {name}")

    def link_add(self, name, kind, peer=None, mac=None):
        self._record("link_add", name, kind, peer, mac)
        for ifname in (name, peer) if peer else (name,):
            self.state[ifname] = {"ifname": ifname, "operstate": "DOWN", "addr_info": []}
        if mac:
            self.state[name]["address"] = mac

    def link_set(self, name, **changes):
        self._record("link_set", name, changes)
        link = self.state.pop(name, {"ifname": name, "addr_info": []})
        if changes.get("netns") is not None:
            return                                     # gone from this namespace
        state = {} if changes.get("up") is None else {"operstate": "UP" if changes["up"] else "DOWN"}
        link.update({"ifname": changes.get("new_name", name), **state,
                     **({"ifalias": changes["alias"]} if "alias" in changes else {}),
                     **({"address": changes["mac"]} if "mac" in changes else {})})
        self.state[link["ifname"]] = link

    def link_delete(self, name):
        self._record("link_delete", name)
        self.state.pop(name, None)

    def addr_add(self, name, address, prefixlen):
        self._record("addr_add", name, address, prefixlen)
        self.state.setdefault(name, {"ifname": name}).setdefault("addr_info", []).append(
            {"family": "inet", "local": address, "prefixlen": prefixlen})

    def route_add(self, gateway, name):
        self._record("route_add", gateway, name)
        self.route_table.append({"dst": "default", "gateway": gateway, "dev": name})

    def neigh_flush(self, address, name):
        self._record("neigh_flush", address, name)

    def qdisc_add(self, name, kind, rate, burst, latency_ms):
        self._record("qdisc_add", name, kind, rate, burst, latency_ms)
        self.state.setdefault(name, {"ifname": name})["qdisc"] = {
            "dev": name, "kind": kind, "root": True, "handle": "1:", "rate": rate, "bytes": 0, "packets": 0,
            "drops": 0, "overlimits": 0}

    def qdisc_delete(self, name):
        self._record("qdisc_delete", name)
        self.state.get(name, {}).pop("qdisc", None)

    def qdiscs(self, name):
        self.calls.append(("qdiscs", (name,)))
        qdisc = self.state.get(name, {}).get("qdisc")
        return [dict(qdisc)] if qdisc else [{"dev": name, "kind": "noqueue", "root": True, "handle": "0:"}]

    def links(self):
        self.calls.append(("links", ()))
        return [{key: value for key, value in link.items() if key not in ("addr_info", "qdisc")}
                for link in self.state.values()]

    def addresses(self):
        self.calls.append(("addresses", ()))
        return [{**{key: value for key, value in link.items() if key != "qdisc"},
                 "addr_info": list(link.get("addr_info", []))} for link in self.state.values()]

    def routes(self):
        self.calls.append(("routes", ()))
        return list(self.route_table)


_QUERIES = ("links", "addresses", "routes", "qdiscs")
_COMMANDS = {
    "link_add": lambda name, kind, peer, mac: f"link add {name}" + (f" address {mac}" if mac else "")
                                              + f" type {kind}" + (f" peer name {peer}" if peer else ""),
    "link_set": lambda name, changes: f"link set {name} {describe(changes)}",
    "link_delete": lambda name: f"link delete {name}",
    "addr_add": lambda name, address, prefixlen: f"addr add {address}/{prefixlen} dev {name}",
    "route_add": lambda gateway, name: f"route add default via {gateway} dev {name}",
    "neigh_flush": lambda address, name: f"neigh flush to {address} dev {name}",
    "qdisc_add": lambda name, kind, rate, burst, latency_ms: f"qdisc add dev {name} root {kind} rate {rate}bit "
                                                              f"burst {burst} latency {latency_ms}ms",
    "qdisc_delete": lambda name: f"qdisc del dev {name} root",
}
_seam = Seam(Kernel)
backend, use = _seam.backend, _seam.use         # every call below goes through backend()


def link_add(name: str, kind: str, peer: str | None = None, mac: str | None = None) -> None:
    """A new link (down); ``mac`` sets its address in the same message (IFLA_ADDRESS), before anyone sees it."""
    backend().link_add(name, kind, peer, mac)


def link_set(name: str, *, new_name: str | None = None, mac: str | None = None, alias: str | None = None,
             master: str | None = None, netns: int | None = None, up: bool | None = None) -> None:
    """One RTM_NEWLINK changing what is given (None: left as it is; up=False sets it down, netns=0 is a
    namespace too); the order of ip(8)'s words, which the kernel applies as one."""
    changes = {"new_name": new_name, "mac": mac, "alias": alias, "master": master, "netns": netns, "up": up}
    backend().link_set(name, **{key: value for key, value in changes.items() if value is not None})


def link_delete(name: str) -> None:
    backend().link_delete(name)


def addr_add(name: str, address: str, prefixlen: int) -> None:
    backend().addr_add(name, address, prefixlen)


def route_add(gateway: str, name: str) -> None:
    backend().route_add(gateway, name)


def neigh_flush(address: str, name: str) -> None:
    backend().neigh_flush(address, name)


def qdisc_add(name: str, kind: str, rate: int, burst: int, latency_ms: int) -> None:
    """A root qdisc on ``name``'s egress: ``rate`` in bits/s, a bucket of ``burst`` bytes, and at most
    ``latency_ms`` of queue (tc-tbf(8)); the kind is "tbf", the token bucket filter."""
    backend().qdisc_add(name, kind, rate, burst, latency_ms)


def qdisc_delete(name: str) -> None:
    """Back to the device's default qdisc."""
    backend().qdisc_delete(name)


def qdiscs(name: str) -> list[dict]:
    return backend().qdiscs(name)


def links() -> list[dict]:
    return backend().links()


def addresses() -> list[dict]:
    return backend().addresses()


def routes() -> list[dict]:
    return backend().routes()


def link_exists(name: str) -> bool:
    """In the caller's network namespace (sysfs would show the namespace of whoever mounted /sys)."""
    return any(link["ifname"] == name for link in links())
