"""The embedded DNS server: how `wget http://web/` in one container finds the container named web.

On a user-defined network (``labcore.runtime.networks``) every container's /etc/resolv.conf says `nameserver
127.0.0.11`. Nothing in the container listens there. Docker's daemon answers (moby: libnetwork/resolver.go,
resolver_unix.go, sandbox_dns_unix.go; docs: "Networking overview", "DNS services"):

    sockets   the daemon opens a UDP and a TCP socket *inside the container's network namespace*, bound to
              127.0.0.11 on a port the kernel picks (a socket belongs to the namespace it was made in,
              network_namespaces(7), and stays there when the process holding it is elsewhere). The lab opens
              them in a child that entered the namespace with setns(2), and passes them back over a Unix
              socket (SCM_RIGHTS, unix(7)): the thread that serves them runs on the host's side
    redirect  a NAT rule in the container's namespace sends what goes to 127.0.0.11:53 to that port (Docker
              writes iptables DNAT rules in a chain of its own, DOCKER_OUTPUT; the lab writes one nftables
              table, labcore-dns). So the container may still serve port 53 itself, and the daemon's port is
              no fixed number anyone could take first. The table dies with the namespace
    answers   a query for the name, an alias or the short id of a running container on one of the asker's
              networks gets that container's address there (an A record, TTL 600 as Docker's); a name
              it does not know goes on to the host's own nameservers (/etc/resolv.conf), asked from the
              host's network namespace, as Docker does when the host's resolver is on loopback

Who serves them: a thread of the process that owns the container, as dockerd's goroutines do: the
detached container's monitor (``labcore.runtime.engine``) or the process of `labcore run`. It lives as long as the
container and holds no other kernel object, so a crash leaves nothing of it behind: the sockets close with
their process, and the rule goes with the namespace.

The wire format is RFC 1035's (section 4: a 12-byte header, the question, the answer records); dnspython
reads and writes it. Next: ``labcore.kernel.portproxy``, the other relay between the host and a container.
"""
from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from pathlib import Path
from typing import Callable

from labcore.errors import LabError, NotSupportedHere
from labcore.kernel.process import find_program

ADDRESS = "127.0.0.11"                # Docker's: in 127.0.0.0/8, so it is on every container's lo
TTL = 600                             # seconds, as Docker's resolver answers (respTTL)
UPSTREAM_TIMEOUT = 3.0                # seconds for the host's nameserver to answer a forwarded query
REDIRECT = """table ip labcore-dns {{
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr {address} udp dport 53 dnat to {address}:{udp}
    ip daddr {address} tcp dport 53 dnat to {address}:{tcp}
  }}
}}
"""
HOST_RESOLV_CONF = "/etc/resolv.conf"


# --- what the container reads ---------------------------------------------------------------------------------

def resolv_conf(host_file: str = HOST_RESOLV_CONF) -> str:
    """The /etc/resolv.conf of a container on a user-defined network: the embedded server, the host's search
    domains, and ndots:0, so that `web` is asked as it is before any search domain is tried (Docker's)."""
    search = ""
    with contextlib.suppress(OSError):
        search = "".join(line + "\n" for line in Path(host_file).read_text().splitlines()
                         if line.startswith("search "))
    return (f"# written by labcore: the embedded DNS server of the container's networks (labcore.runtime.dns)\n"
            f"nameserver {ADDRESS}\n{search}options ndots:0\n")


def upstream_servers(host_file: str = HOST_RESOLV_CONF) -> list[str]:
    """The host's nameservers, where names of the world are asked."""
    with contextlib.suppress(OSError):
        return [line.split()[1] for line in Path(host_file).read_text().splitlines()
                if line.startswith("nameserver ") and len(line.split()) > 1]
    return []


# --- answering ------------------------------------------------------------------------------------------------

def answer(query: bytes, names: dict[str, list[str]]) -> bytes | None:
    """The reply to a query about a container's name (``names``: lower-case name -> addresses), or None when
    the name is none of theirs and the query should go on to the host's nameservers. A known name asked for
    another type than A (AAAA: the lab's networks are IPv4) gets an empty answer, not NXDOMAIN: it exists."""
    import dns.flags
    import dns.message
    import dns.rdatatype
    import dns.rrset
    try:
        message = dns.message.from_wire(query)
    except Exception:                              # noqa: BLE001 - dnspython raises many kinds of DNSException
        return None                                # not a query we can read: the upstream answers FORMERR
    if len(message.question) != 1:
        return None
    question = message.question[0]
    addresses = names.get(question.name.to_text(omit_final_dot=True).lower())
    if addresses is None:
        return None
    reply = dns.message.make_response(message)
    reply.flags |= dns.flags.RA
    if question.rdtype == dns.rdatatype.A:
        reply.answer.append(dns.rrset.from_text_list(question.name, TTL, "IN", "A", sorted(set(addresses))))
    return reply.to_wire()


def failure(query: bytes) -> bytes | None:
    """SERVFAIL for a query no upstream answered (None if it cannot even be read)."""
    import dns.message
    import dns.rcode
    try:
        reply = dns.message.make_response(dns.message.from_wire(query))
    except Exception:                              # noqa: BLE001
        return None
    reply.set_rcode(dns.rcode.SERVFAIL)
    return reply.to_wire()


def forward(query: bytes, servers: list[str], port: int = 53) -> bytes | None:
    """Ask the host's nameservers in turn, as they are (the reply carries the query's id); SERVFAIL when
    none answers."""
    for server in servers:
        with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as upstream:
            upstream.settimeout(UPSTREAM_TIMEOUT)
            try:
                upstream.sendto(query, (server, port))
                return upstream.recv(65535)
            except OSError:
                continue
    return failure(query)


# --- the sockets, made inside the container's network namespace -------------------------------------------------

def open_sockets(pid: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on 127.0.0.11 in ``pid``'s network namespace, port 53 redirected to
    them; made by a child that entered the namespace, received here (SCM_RIGHTS)."""
    from labcore.kernel.process import Child
    if find_program("nft") is None:
        raise NotSupportedHere("nft is not installed: the embedded DNS server's redirect of port 53 needs it",
                               syscall="nft", fix="apt-get install nftables (`./lab up` does)")
    child = Child(lambda channel: _open_inside(channel, pid))
    try:
        if child.channel.sock.recv(1, socket.MSG_PEEK) != b"F":
            child.recv()                           # not the sockets: the child's error, raised here
        _, fds, _, _ = socket.recv_fds(child.channel.sock, 1, 2)
        child.recv()                               # and its return
    finally:
        child.wait()
    return socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])


def _open_inside(channel, pid: int) -> None:
    """In the child: setns(2) into the namespace, bind, redirect, and hand the two sockets over."""
    from labcore.kernel.network import enter_netns, nft
    enter_netns(pid)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((ADDRESS, 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind((ADDRESS, 0))
    tcp.listen(16)
    rules = REDIRECT.format(address=ADDRESS, udp=udp.getsockname()[1], tcp=tcp.getsockname()[1])
    nft(rules, f"the redirect of {ADDRESS}:53")
    socket.send_fds(channel.sock, [b"F"], [udp.fileno(), tcp.fileno()])


# --- serving -------------------------------------------------------------------------------------------------------

class Resolver:
    """The server of one container: a thread answering on its two sockets until ``stop``."""

    def __init__(self, udp: socket.socket, tcp: socket.socket, names: Callable[[], dict[str, list[str]]],
                 servers: list[str] | None = None):
        self.udp, self.tcp, self.names = udp, tcp, names
        self.servers = upstream_servers() if servers is None else servers
        self.wake, self.waker = socket.socketpair()
        self.thread = threading.Thread(target=self.serve, name="labcore-dns", daemon=True)

    def __str__(self) -> str:
        (host, udp), (_, tcp) = self.udp.getsockname(), self.tcp.getsockname()
        return f"{ADDRESS}:53 -> udp {host}:{udp}, tcp {host}:{tcp}"

    def serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            for sock in (self.udp, self.tcp, self.wake):
                selector.register(sock, selectors.EVENT_READ)
            while True:
                ready = [key.fileobj for key, _ in selector.select()]
                if self.wake in ready:
                    return
                if self.udp in ready:
                    with contextlib.suppress(OSError):
                        self.reply_udp(*self.udp.recvfrom(65535))
                if self.tcp in ready:
                    with contextlib.suppress(OSError):
                        connection, _ = self.tcp.accept()
                        threading.Thread(target=self.reply_tcp, args=(connection,), daemon=True).start()

    def known(self, query: bytes) -> bytes | None:
        try:
            names = self.names()
        except (OSError, LabError):
            names = {}                              # the records are being rewritten: the name is unknown now
        return answer(query, names)

    def reply(self, query: bytes) -> bytes | None:
        return self.known(query) or forward(query, self.servers)

    def reply_udp(self, query: bytes, client) -> None:
        known = self.known(query)
        if known is not None:
            self.udp.sendto(known, client)
            return
        # The world's names may take seconds: asked in a thread, so the containers' names never wait.
        threading.Thread(target=lambda: self._send_forwarded(query, client), daemon=True).start()

    def _send_forwarded(self, query: bytes, client) -> None:
        reply = forward(query, self.servers)
        if reply is not None:
            with contextlib.suppress(OSError):
                self.udp.sendto(reply, client)

    def reply_tcp(self, connection: socket.socket) -> None:
        """DNS over TCP (RFC 1035 4.2.2): each message after its length in two bytes; a client uses it when a
        UDP reply came truncated."""
        with connection:
            connection.settimeout(UPSTREAM_TIMEOUT)
            with contextlib.suppress(OSError, ValueError):
                size = int.from_bytes(_read(connection, 2), "big")
                reply = self.reply(_read(connection, size))
                if reply is not None:
                    connection.sendall(len(reply).to_bytes(2, "big") + reply)

    def start(self) -> "Resolver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.waker.close()                          # the serving thread sees EOF and returns
        self.thread.join()
        for sock in (self.udp, self.tcp, self.wake):
            sock.close()


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ValueError("the client closed the connection mid-message")
        data += chunk
    return data


def start(pid: int, names: Callable[[], dict[str, list[str]]]) -> Resolver:
    """The embedded DNS server of the container whose pid 1 is ``pid``; ``names`` says what it may answer
    (``labcore.runtime.networks.for_lookup``), read again at each query, as containers come and go."""
    udp, tcp = open_sockets(pid)
    return Resolver(udp, tcp, names).start()
