"""The user-mode network: eth0, neighbours and published ports for containers started without root.

As root, a container's network is a veth pair from the host's bridge lcbr0 (``labcore.kernel.network``). Without
root that is refused: creating a link in the host's network namespace, or moving one into it, needs
CAP_NET_ADMIN over that namespace, and only root has it. In a user namespace of your own you hold every
capability, but only over the namespaces it owns (user_namespaces(7)). Rootless Podman builds its bridge
network out of such namespaces alone, its "rootless netns" (containers/common:
libnetwork/internal/rootlessnetns/netns_linux.go), and so does the lab, once per state directory:

    router namespace  a user namespace and a network namespace it owns, kept alive by a sleeping process
                      (``labcore-usernet``), as Podman's pause process keeps its own
    lcbr0, veth       root's bridge and subnet, 10.203.0.0/24, inside the router namespace, where the host never
                      sees them; lc<id>h on the bridge, eth0 in the container, as ``network.connect`` does.
                      A user-defined network (``labcore.runtime.networks``) gets a bridge of its own there, lcbr-<id>,
                      when its first container joins; the router passes no packet from one bridge to another
    one user ns       to move a veth end into a container's network namespace, the kernel wants
                      CAP_NET_ADMIN over the user namespace owning *that* namespace too. So each rootless
                      container joins the router's user namespace (``userns.join``, `nsenter -U`) before it
                      unshares the others: it is root there, as in its own; Podman's share one as well
    slirp4netns       the way out (slirp4netns(1)): a process of yours on the host that opens a tap device,
                      lctap0, inside the router namespace and keeps the fd outside it. It runs a whole TCP/IP
                      stack (libslirp, QEMU's user-mode network): each connection a container opens out is
                      replayed as an ordinary connect(2) of that process, so the world sees you, not a
                      container. QEMU's addresses: the namespace is 10.0.2.100, the gateway 10.0.2.2 leads to
                      the host's own 127.0.0.1, 10.0.2.3 is a DNS forwarder
    NAT               slirp4netns answers only inside its own network, 10.0.2.0/24 (a packet from 10.203.0.2
                      gets no answer): an nftables masquerade rule in the router namespace, as netavark adds,
                      gives every container's outgoing packet the namespace's own address, 10.0.2.100
    -p 8080:80        ``labcore.kernel.portproxy`` accepts on the host's 127.0.0.1:8080 and connects from inside the
                      router namespace to the container's address: rootlesskit's "builtin" port driver

pasta(1) (Debian's passt, Podman 5's default) does slirp4netns's job by mapping packets to sockets without a
TCP stack of its own. The lab measured Debian 12's pasta (2023-03) losing the server's FIN in 9 of 20 short
connections that both ends closed at once, where slirp4netns 1.2 lost none: so slirp4netns it is.

The first container of a state directory starts it; each records its use (the journal's ``usernet`` undo,
where Podman keeps a reference count in a file), and the last one out stops slirp4netns and the holder.
Their namespaces go with them, and with those the bridge, every veth and the NAT rule: no record is needed
for what dies with its namespace.

Next: ``labcore.kernel.portproxy``, the published port's relay.
"""
from __future__ import annotations

import os
import secrets
import select
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import LabError, NotSupportedHere, from_oserror
from labcore.kernel import journal, netlink, network, procfs, syscalls, userns
from labcore.kernel.process import Child, find_program, spawn

TAP = "lctap0"                        # slirp4netns's interface in the router namespace
HOLDER = "labcore-usernet"            # the holder's argv[0], as ps(1) shows it
TUN = "/dev/net/tun"                  # where a tap device is asked for (Documentation/networking/tuntap.rst)
READY_SECONDS = 10.0
# --configure: lctap0 up with 10.0.2.100/24 and the default route; the MTU of slirp4netns(1)'s example and
# Podman's; the sandbox: slirp4netns pivots into a mount namespace with only /etc and /run, under seccomp.
SLIRP_OPTIONS = ("--configure", "--mtu=65520", "--enable-sandbox", "--enable-seccomp")
ROUTER = """table ip labcore {
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }
  chain forward { type filter hook forward priority filter; policy accept; }
}
"""
# Per bridge: its containers' packets leave with the router's address; none goes on to another bridge, as
# Docker isolates its networks from each other (its DOCKER-ISOLATION chains).
BRIDGE_RULES = """add rule ip labcore postrouting ip saddr {subnet} oifname != "{bridge}" masquerade
add rule ip labcore forward iifname "{bridge}" oifname "lcbr*" oifname != "{bridge}" drop
"""
PROGRAMS = (("slirp4netns", "slirp4netns"), ("nft", "nftables"))      # program, Debian package


@dataclass
class Usernet:
    """The router namespace, held by process ``holder`` and connected to the host by process ``slirp``."""
    holder: int
    slirp: int
    network: network.Network = network.DEFAULT
    use: journal.Entry | None = field(default=None, repr=False)     # this user's record, for ``leave``

    def __str__(self) -> str:
        return (f"{self.network.bridge} {self.network.gateway} in the namespace of pid {self.holder}; "
                f"slirp4netns pid {self.slirp} on {TAP}")


# --- joining and leaving ------------------------------------------------------------------------------------

def join(scope: journal.Scope) -> Usernet:
    """This state dir's user-mode network, started if nobody runs it; ``scope`` records the use.

    The use is recorded first and the check made under the journal's lock, the one ``undo_usernet`` takes:
    a user leaving at this moment counts this one and leaves the network running."""
    ledger = scope.journal
    use = scope.record("network", "user-mode network", "usernet", journal=str(ledger.directory))
    with locked(ledger):
        found = find(ledger) or start(ledger)
    found.use = use
    return found


def locked(ledger: journal.Journal):
    """flock(2) on the journal's directory: one process at a time starts or stops the network, or leases an
    address on it. The journal is the state dir's, as the network is."""
    ledger.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return journal.flocked(ledger.directory)


def leave(usernet: Usernet, scope: journal.Scope) -> None:
    """Drop this user's record now; the last one out stops the network (``undo_usernet``)."""
    if usernet.use in scope.entries:
        scope.entries.remove(usernet.use)
        scope.journal.undo(usernet.use)


def find(ledger: journal.Journal) -> Usernet | None:
    """The running network; a half-dead one (slirp4netns or the holder killed) is stopped first."""
    found = running(ledger)
    if found is None:
        stop(ledger)
    return found


def running(ledger: journal.Journal) -> Usernet | None:
    """The network that the journal's ``usernet`` records name, if both its processes still run."""
    records = {entry.name: entry.args for entry in ledger.entries() if entry.kind == "usernet"}
    if set(records) == {"holder", "slirp4netns"} and all(map(journal.owner_alive, records.values())):
        return Usernet(records["holder"]["pid"], records["slirp4netns"]["pid"])
    return None


def stop(ledger: journal.Journal) -> None:
    """Kill slirp4netns and the holder: the namespaces, and everything in them, go with them."""
    failures = stop_usernet(ledger)
    if failures:
        raise LabError("could not stop the user-mode network: " + "; ".join(failures),
                       fix="run `labcore cleanup` to retry")


@journal.register("usernet")
def undo_usernet(journal: str) -> None:           # the records name their argument "journal"
    leave_network_of(journal)


def leave_network_of(directory: str) -> None:
    """Leave the user-mode network of a state dir (the journal's ``usernet`` inverse): the last user out stops
    it, as the last one out removes the bridge. Its processes are the journal's ``usernet`` records; each user
    holds a ``usernet`` undo, taken under the same lock, so one that is just joining is counted."""
    journal.refuse_foreign(directory, paths.path_is_ours(directory))
    ledger = journal.Journal(directory)
    with journal.flocked(directory):
        if any(entry.undo == "usernet" and journal.owner_alive(entry.owner) for entry in ledger.entries()):
            return                                      # another container still uses it
        failures = stop_usernet(ledger)
    if failures:
        raise LabError("could not stop the user-mode network: " + "; ".join(failures))


def stop_usernet(ledger: journal.Journal) -> list[str]:
    """Undo the ``usernet`` records (kill slirp4netns, then the holder), and wait until both have exited."""
    processes = [entry for entry in ledger.entries() if entry.kind == "usernet"]
    failures = ledger.undo_many(processes)
    journal.wait_gone(processes)
    return failures


# --- starting it: the holder, slirp4netns, the router inside --------------------------------------------------

def start(ledger: journal.Journal) -> Usernet:
    """The holder, slirp4netns on its namespaces, then the bridge and NAT inside; undone if a step fails."""
    check_host()
    try:
        holder = start_holder(ledger)
        slirp = start_slirp(ledger, holder)
        network.in_netns(holder, make_router, network.DEFAULT)
    except BaseException:
        stop(ledger)
        raise
    return Usernet(holder, slirp)


def check_host() -> None:
    """What the user-mode network needs from the host, asked before anything is made."""
    for program, package in PROGRAMS:
        if find_program(program) is None:
            raise NotSupportedHere(f"{program} is not installed: a rootless container gets loopback only",
                                   syscall=program, fix=f"ask an administrator to install it (Debian, Ubuntu: "
                                                        f"apt-get install {package}; `./lab up` does)")
    try:
        os.close(os.open(TUN, os.O_RDWR))      # makes nothing: a tap exists only after ioctl(TUNSETIFF)
    except PermissionError as err:
        raise from_oserror(err, "open", TUN, fix="ask an administrator for `chmod 0666 /dev/net/tun`, the mode "
                           "udev gives it on Debian, Ubuntu and Fedora: making a tap still takes CAP_NET_ADMIN, "
                           "which you hold only over namespaces you own") from err
    except OSError as err:                     # ENOENT, ENODEV: no tun driver here
        raise NotSupportedHere(f"open {TUN} failed: {err.strerror}: a rootless container gets loopback only",
                               syscall="open", path=TUN, errno=err.errno,
                               fix="ask an administrator for `modprobe tun`; a container must be given "
                                   "--device /dev/net/tun") from err


def start_holder(ledger: journal.Journal) -> int:
    """A process in a new user namespace and a network namespace it owns, sleeping to keep them alive.

    A grandchild, so that it belongs to nobody's process tree once we return. It waits until it is
    journaled, and exits if we die before: it is never left unrecorded."""
    child = Child(_fork_holder)
    try:
        pid = child.recv(timeout=READY_SECONDS)
        owner = journal.owner_of(pid)
        ledger.record("usernet", "holder", "kill", owner=owner, **owner)     # its own owner: no orphan
        child.send("recorded")
    finally:
        child.wait()
    return pid


def _fork_holder(channel) -> int:
    """In a child: unshare, fork the holder (it inherits the namespaces), return its pid and exit."""
    userns.unshare(syscalls.CLONE_NEWNET)          # inside a new user namespace, as we are not root
    sleep = shutil.which("sleep") or "/bin/sleep"
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()                            # no terminal's ^C or hangup
            channel.recv()                         # "recorded"; EOFError when the parent died first
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)                  # hold no pipe or terminal of the caller's
            os.execv(sleep, [HOLDER, "infinity"])
        finally:
            os._exit(1)
    return pid


def start_slirp(ledger: journal.Journal, holder: int) -> int:
    """slirp4netns on the holder's namespaces, journaled at once; ready when it writes "1" to --ready-fd."""
    ready, ready_end = os.pipe()
    with tempfile.TemporaryFile() as log, os.fdopen(ready, "rb") as readiness:   # its words; a nameless file
        try:
            process = spawn([find_program("slirp4netns"), *SLIRP_OPTIONS, f"--ready-fd={ready_end}", str(holder),
                             TAP], pass_fds=(ready_end,), stderr=log)
        finally:
            os.close(ready_end)                    # its copy is the only one: EOF once it is gone
        ledger.record("usernet", "slirp4netns", "kill", owner=journal.owner_of(holder), pid=process.pid,
                      start=journal.process_start_time(process.pid))
        if not (select.select([readiness], [], [], READY_SECONDS)[0] and readiness.read(1) == b"1"):
            log.seek(0)
            raise NotSupportedHere(f"slirp4netns did not start: {log.read().decode(errors='replace').strip()}",
                                   syscall="slirp4netns", fix="`labcore doctor` checks user namespaces")
    return process.pid


def make_router(net: network.Network) -> None:
    """In the router namespace (a child that entered it): forwarding to lctap0, the NAT table, and the
    default network's bridge. All of it dies with the namespace."""
    # /proc/sys/net shows the reader's own network namespace: this is the router's switch, not the host's.
    Path(procfs.sysctl_path("net.ipv4.ip_forward")).write_text("1")
    network.nft(ROUTER, "the router's rules")
    add_bridge(net)


def add_bridge(net: network.Network) -> None:
    """In the router namespace: a bridge with its gateway address, its masquerade and isolation rules; a
    user-defined network's is added when its first container joins, and goes with the namespace."""
    netlink.link_add(net.bridge, "bridge", mac=network.bridge_mac(net))
    netlink.addr_add(net.bridge, net.gateway, net.prefixlen)
    netlink.link_set(net.bridge, up=True)
    network.nft(BRIDGE_RULES.format(subnet=net.subnet, bridge=net.bridge), f"the rules of {net.bridge}")


def ensure_bridge(net: network.Network) -> None:
    if not netlink.link_exists(net.bridge):
        add_bridge(net)


# --- a container on it --------------------------------------------------------------------------------------

def connect(usernet: Usernet, pid: int, scope: journal.Scope, short_id: str | None = None,
            net: network.Network | None = None, ifname: str = "eth0", default_route: bool = True,
            mac: str | None = None) -> network.Endpoint:
    """eth0 for ``pid``: ``network.connect``, one namespace further in; on a user-defined network ``net``,
    whose bridge the router gets when the first container joins. ``pid`` must be in the router's user
    namespace already (joined before its unshare): otherwise moving the veth end is refused with EPERM."""
    net = net or usernet.network
    host_ifname, peer = network.interface_names(short_id or secrets.token_hex(5))
    inode = network.check_own_netns(pid)
    first = len(scope.entries)
    with locked(scope.journal):                        # from reading the leases until the new one is set
        if net.bridge != usernet.network.bridge:
            network.in_netns(usernet.holder, ensure_bridge, net)
        address = network.free_address(net, network.in_netns(usernet.holder, network.taken_addresses))
        scope.record("link", host_ifname, "link_in", name=host_ifname, pid=usernet.holder,
                     start=journal.process_start_time(usernet.holder))
        network.in_netns(usernet.holder, network.plug_in, net, host_ifname, peer, address, pid)
    network.in_netns(pid, network.configure_inside, peer, ifname, address, net, default_route, mac)
    return network.Endpoint(pid, address, net, host_ifname, ifname, inode, entries=scope.entries[first:],
                            via=usernet.holder, mac=mac or network.mac_for(address))


def reply(address: str, port: int) -> str:
    """``network.reply`` from where containers' addresses are routed: the router namespace of this state
    dir's user-mode network while it runs; otherwise the host, where root's lcbr0 is."""
    router = running(journal.Journal())
    return network.in_netns(router.holder if router else None, network.reply, address, port)


# --- evidence -----------------------------------------------------------------------------------------------

def read_router() -> dict:
    """In the router namespace: its interfaces, default route and NAT rule, read back from the kernel."""
    seen = network.read_interfaces()
    nat = subprocess.run([find_program("nft") or "nft", "list", "table", "ip", "labcore"], capture_output=True,
                         text=True).stdout
    seen["nat"] = next((line.strip() for line in nat.splitlines() if "masquerade" in line), "none")
    return seen


def show(usernet: Usernet) -> dict:
    """The user-mode network as evidence: who holds it, slirp4netns's command line, what is inside."""
    inside = network.in_netns(usernet.holder, read_router)
    return {"holder": f"pid {usernet.holder}: {' '.join(cmdline(usernet.holder))}",
            "slirp4netns": f"pid {usernet.slirp}: {' '.join(cmdline(usernet.slirp))}",
            **{f"router {key}": value for key, value in inside.items()}}


def cmdline(pid: int) -> list[str]:
    return procfs.cmdline(pid)
