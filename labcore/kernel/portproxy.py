"""The userland port proxy: what docker-proxy does for `docker run -p 127.0.0.1:8080:80`.

A container's port 80 is a socket in another network namespace, at an address only the host can reach. To
publish it, Docker runs one docker-proxy process per port (moby: cmd/docker-proxy): it accepts connections
on the host's port, opens a second connection to the container's address and port, and copies bytes both
ways until each side has closed. Docker also adds an iptables DNAT rule for packets from other machines; a
connection from the host itself to 127.0.0.1 never passes the PREROUTING chain that rule lives in, so the
proxy is what serves it. The lab adds no NAT rule and binds loopback only: the proxy is the whole path.

The parent binds and listens on the host port itself and passes the socket down (as dockerd does since
moby pull request 48132), so a busy port fails with EADDRINUSE in the parent, and a client may connect
before the proxy has even started: the kernel queues it in the listen backlog.

A rootless container's address lives in a network namespace the host cannot route to (``labcore.kernel.usernet``).
The proxy then starts inside that namespace, by `nsenter --user --net`, still holding the listening socket
it was given: a socket belongs to the network namespace it was created in (network_namespaces(7)), so it
keeps accepting on the host's 127.0.0.1 while every connection it opens starts from inside. One process in
two namespaces: what rootlesskit's "builtin" port driver does with two (rootless-containers/rootlesskit:
pkg/port/builtin), and Podman's rootlessport after it.

A published UDP port (`-p 5353:53/udp`) has no connections to accept: the proxy reads each datagram on the
host's port and sends it on from a socket of its own for that client, so the container's replies come back
to that socket and go out to the client they belong to; a client silent for 90 seconds is forgotten
(docker-proxy's UDPConnTrackTimeout).

Crash safety: the proxy holds the port from its first instant, so it must never outlive an unjournaled
start. It waits on ``--go`` (a pipe) until its parent has journaled it; if the parent dies first, the pipe
reads end-of-file and the proxy exits (``labcore.kernel.network.publish``).

Run as a program: ``python portproxy.py --fd FD --go FD [--udp] IP:PORT``. It needs nothing but the standard
library, so it starts quickly and runs from any directory.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import threading

CONNECT_TIMEOUT = 5.0          # seconds to reach the container before the client's connection is closed
UDP_IDLE = 90.0                # seconds a UDP client may stay silent before its relay is dropped (docker-proxy)


def start(listener: socket.socket, target: tuple[str, int], inside: int | None = None, go: int | None = None):
    """Start a proxy process that serves ``listener`` (bound, and listening if TCP) and relays to ``target``;
    with ``inside``, a pid, it connects from that process's network namespace (and joins its user namespace).
    ``go``: the read end of a pipe; the proxy serves once it reads a byte there, and exits on end-of-file."""
    from labcore.kernel.process import spawn
    fd = listener.fileno()
    enter = ["nsenter", f"--target={inside}", "--user", "--net", "--preserve-credentials", "--"] if inside else []
    udp = ["--udp"] if listener.type == socket.SOCK_DGRAM else []
    wait = ["--go", str(go)] if go is not None else []
    return spawn([*enter, sys.executable, "-I", __file__, "--fd", str(fd), *wait, *udp, f"{target[0]}:{target[1]}"],
                 pass_fds=(fd, *([go] if go is not None else [])))


def serve(listener: socket.socket, target: tuple[str, int]) -> None:
    """Accept forever; each client gets its own connection to the target, relayed by two threads."""
    while True:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client, target), daemon=True).start()


def relay(client: socket.socket, target: tuple[str, int]) -> None:
    with client:
        try:
            upstream = socket.create_connection(target, timeout=CONNECT_TIMEOUT)
        except OSError:
            return                     # nothing listens there: the client sees its connection closed
        with upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
            back.start()
            pump(client, upstream)
            back.join()


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until EOF, then pass the EOF on (a half-close: the other direction may still be talking)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        # A reset on one side: shut both down, so the thread copying the other way wakes up and ends.
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve_udp(listener: socket.socket, target: tuple[str, int]) -> None:
    """Datagrams from each client go to the target from a socket of that client's; replies go back."""
    clients: dict = {}
    lock = threading.Lock()
    while True:
        data, client = listener.recvfrom(65535)
        with lock:
            upstream = clients.get(client)
            if upstream is None:
                upstream = clients[client] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                upstream.connect(target)
                threading.Thread(target=answer_udp, args=(listener, upstream, client, clients, lock),
                                 daemon=True).start()
        try:
            upstream.send(data)
        except OSError:
            pass                       # ECONNREFUSED from an earlier datagram: nothing listens there yet


def answer_udp(listener: socket.socket, upstream: socket.socket, client, clients: dict, lock) -> None:
    """The target's replies to one client, until it has been silent for UDP_IDLE seconds."""
    upstream.settimeout(UDP_IDLE)
    try:
        while True:
            try:
                listener.sendto(upstream.recv(65535), client)
            except ConnectionRefusedError:
                continue               # an ICMP port unreachable, reported on the next call: keep relaying
    except OSError:
        pass                           # idle for too long
    finally:
        with lock:
            clients.pop(client, None)
        upstream.close()


def wait_for_go(fd: int) -> None:
    """Block until the parent says it has journaled us; leave quietly if it died instead."""
    if os.read(fd, 1) != b"1":
        sys.exit(0)
    os.close(fd)


def parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="labcore-portproxy", description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="a listening TCP socket (or a bound UDP one), inherited")
    parser.add_argument("--go", type=int, help="a pipe to read one byte from before serving; EOF: exit")
    parser.add_argument("--udp", action="store_true", help="relay datagrams: --fd is a UDP socket")
    parser.add_argument("target", type=parse_target, metavar="IP:PORT", help="where to relay each connection")
    args = parser.parse_args(argv)
    if args.go is not None:
        wait_for_go(args.go)
    (serve_udp if args.udp else serve)(socket.socket(fileno=args.fd), args.target)


if __name__ == "__main__":
    main()
