"""The daemon's socket: who owns it, who may connect, and why connecting to docker.sock equals root.

A Unix socket is a file (unix(7)): it has an owner, a group and a mode, and connect(2) needs write permission
on it. That is the whole of Docker's access control: whoever can connect can ask the daemon — which runs as
root — to start a container that bind-mounts the host's / and reads or writes anything there. Docker's
documentation says it plainly: the docker group grants root-level privileges.

The steps here show it for real on labd (notebook 02): the process that owns the socket, found the way
`ss -xlp` finds it; the socket's mode and a refused connect as nobody; a container reading a root-only host
file through the socket; and two containers listening on port 80 at once, each in its own network namespace.
``two_servers_on_port_80`` does the same by hand, with no daemon: two children in two network namespaces,
wired to the host by ``labcore.kernel.network`` (notebook 08 comes back to it).

Next: ``labcore.lessons.namespaces`` shows each kind of isolation on its own (notebook 03).
"""
from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from labcore import paths
from labcore.errors import LabError, NeedsPrivilege, NotFound, NotSupportedHere
from labcore.kernel import journal, netlink, network, procfs, syscalls, usernet, userns
from labcore.kernel.process import Child, run_in_child
from labcore.lessons import hosts
from labcore.lessons.evidence import Mode, Step, current_mode, user_mode
from labcore.lessons.run_flow import group_name, owner_name, socket_listener

if TYPE_CHECKING:
    from labcore.lessons.run_flow import Stage      # the stage (labd + registry) is set up by the flow


def daemon_process(stage: Stage) -> Step:
    """The daemon is a process like any other; what makes it the daemon is the listening socket it holds."""
    import psutil
    labd = psutil.Process(stage.labd.process.pid)
    listener = socket_listener(stage.labd.socket)
    # Named: the socket it listens on. Unnamed: a connection it made, its hold on the container monitor
    # (labcore.runtime.monitord), kept from labd's start to its end, as dockerd keeps one to containerd.
    sockets = [f"fd {c.fd}: {c.laddr or '(no name): a connection labd made, to the container monitor'}"
               for c in sorted(labd.net_connections(kind="unix"), key=lambda c: c.fd)]
    after = {"pid": labd.pid, "parent": f"pid {labd.ppid()} ({psutil.Process(labd.ppid()).name()})",
             "command": " ".join(labd.cmdline()), "user": labd.username(), "threads": labd.num_threads(),
             "Unix sockets (psutil)": sockets,
             f"/proc/{labd.pid}/fd/{listener['fd']}":
                 os.readlink(procfs.path(labd.pid, "fd", str(listener["fd"]))),
             "/proc/net/unix": f"inode {listener['inode']}, path {stage.labd.socket}, state LISTEN"}
    return Step("the daemon: a process holding a socket", "psutil.Process(PID).net_connections('unix'); "
                "readlink /proc/PID/fd/N; read /proc/net/unix", after=after, mode=user_mode(),
                note="the socket's inode in /proc/net/unix is the one behind the daemon's fd: it owns the socket",
                data={**listener, "sockets": sockets, "parent": labd.ppid(), "user": labd.username()})


def socket_permissions(stage: Stage) -> Step:
    """Who may talk to the daemon: connect(2) needs search (x) permission on each directory of the socket's
    path and write permission on the socket file itself (unix(7)). As root the step also tries as nobody;
    anyone else cannot become another user to try (setuid(2) needs CAP_SETUID)."""
    from labcore.kernel.process import run_in_child
    info, folder = os.stat(stage.labd.socket), os.stat(os.path.dirname(stage.labd.socket))
    me = f"connect as you (uid {os.geteuid()})"
    after = {"mode": f"{stat.filemode(info.st_mode)} ({stat.S_IMODE(info.st_mode):04o})",
             "owner": f"{owner_name(info.st_uid)}:{group_name(info.st_gid)}",
             "its directory": f"{stat.filemode(folder.st_mode)} {owner_name(folder.st_uid)}",
             me: connect_as(stage.labd.socket, os.getuid(), os.getgid())}
    if os.geteuid() == 0:
        after["connect as another user (nobody, uid 65534)"] = run_in_child(connect_as, stage.labd.socket,
                                                                            65534, 65534)
    else:
        after["connect as another user"] = ("not tried: only root may become another user (setuid(2)); "
                                            "the socket's mode and its directory's decide for them")
    return Step("the socket's permissions", f"stat {stage.labd.socket}; connect() as you and as another user",
                after=after, mode=user_mode(), data={"mode": after["mode"], "owner": after["owner"],
                                                     "directory": after["its directory"],
                                                     "connect_as_you": after[me],
                                                     "connect_as_another_user": list(after.values())[-1]},
                note="write permission on the socket file, and search permission on its directories, are what "
                     "connect() checks: the owner and the group only")


def connect_as(path: str, uid: int, gid: int) -> str:
    """connect(2) to ``path`` with these ids: "connected" or the errno. Call it in a child for another uid."""
    if (os.getuid(), os.getgid()) != (uid, gid):
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError as err:
            return f"{errno_name(err)}: {err.strerror}"
    return "connected"


def errno_name(err: OSError) -> str:
    import errno
    return errno.errorcode.get(err.errno, str(err.errno))


SERVE_HOSTNAME = "hostname | nc -l -p 80"


def two_containers_on_port_80(stage: Stage) -> Step:
    """Two containers of one daemon, each listening on port 80 in its own network namespace, each reached
    at its own address: `hostname | nc -l -p 80` answers one client with its hostname, then exits.

    Not `nc -l -p 80 -e hostname`: there nc, pid 1, forks `hostname` and exits at once, and pid 1's exit
    kills everything in its pid namespace (pid_namespaces(7)), `hostname` too, often before it has written.
    A container with no address to reach (a rootless one, which has only loopback) makes the step refused."""
    import docker
    title = "two containers, both on port 80"
    action = f"docker run -d --hostname box-a busybox sh -c '{SERVE_HOSTNAME}' (and box-b)"
    client, boxes = stage.client(), []
    try:
        for name in ("box-a", "box-b"):
            boxes.append(client.containers.run("busybox", ["sh", "-c", SERVE_HOSTNAME], hostname=name,
                                               name=f"labcore-{name}", detach=True))
        seen = {box.name.removeprefix("labcore-"): listener_evidence(box) for box in boxes}
    except docker.errors.APIError as err:
        return hosts.refuse(title, action, daemon_answer(err, conflict="a container of the name is left from "
                                                         "an earlier run: docker rm -f labcore-box-a labcore-box-b"))
    finally:
        for box in boxes:
            box.remove(force=True)
    if not all(values["address"] != "none" for values in seen.values()):
        return hosts.refuse(title, action, NeedsPrivilege(
            "the containers listen, but have no address to reach them at",
            why="a container of a daemon without root has its loopback only: a veth pair to the host needs "
                "CAP_NET_ADMIN in the host's network namespace",
            fix="a user-mode network (pasta, slirp4netns) gives rootless containers one; until the lab has "
                "it, run this step where you are root"))
    after = {f"{name}: {key.replace('_', ' ')}": value                 # net_ns is shown as "net ns"
             for name, values in seen.items() for key, value in values.items()}
    host = {"net ns": procfs.ns_link("net"),
            "listening on :80": [s for s in listening_ports("self") if s.endswith(":80")] or "none"}
    return Step(title, action, before=host, after=after, mode=current_mode(), columns=("host", "containers"),
                note="one daemon, two network namespaces: each has its own port 80, the host's is untouched",
                data={"boxes": seen, "answers": [values["answer"] for values in seen.values()],
                      "listening": [values["listening"] for values in seen.values()],
                      "distinct_net_ns": len({v["net_ns"] for v in seen.values()} | {host["net ns"]}) == 3})


def daemon_answer(err, conflict: str = "remove the container named in the answer: docker rm -f NAME") -> LabError:
    """What the daemon answered (docker.errors.APIError), as the lab's error: a refusal of privilege only where
    the daemon said so, a missing image or a name in use as what they are, each with its fix."""
    status = getattr(err, "status_code", None)
    said = f"the daemon answered {status}: {err.explanation or err}"
    if status == 404:
        return NotFound(said, fix="give this daemon the image first: docker pull busybox (or docker load)")
    if status == 409:
        return LabError(said, fix=conflict)
    if any(word in str(err.explanation).lower() for word in ("permission denied", "operation not permitted")):
        return NeedsPrivilege(said, fix="run the lab as root (sudo), or with a daemon you own (rootless)")
    return NotSupportedHere(said, fix="the daemon's own log says more: its --log-level debug output")


def listener_evidence(box) -> dict:
    from labcore.kernel import usernet
    box.reload()
    pid, address = box.attrs["State"]["Pid"], box.attrs["NetworkSettings"]["IPAddress"]
    evidence = {"net_ns": procfs.ns_link("net", pid), "listening": wait_for_listener(pid, 80),
                "address": address or "none"}
    # From the host as root; rootless, the addresses are inside the user-mode network's router namespace.
    evidence["answer"] = usernet.reply(address, 80) if address else "no address to connect to"
    return evidence


def read_host_file(stage: Stage) -> Step:
    """Whoever may connect to the socket may ask for anything the daemon can do, and the daemon is root: here,
    a container with the host's / mounted at /host (`-v /:/host`), reading a file only root may read.
    Only the first field of /etc/shadow's first line (a user name) leaves the container, never a hash.
    A rootless daemon is you, not root: its container is refused the file, which is the point of rootless."""
    import docker
    from labcore.kernel.process import run_in_child
    title = "the socket is root on the host" if os.geteuid() == 0 else "a rootless daemon is only you"
    action = "docker run --rm -v /:/host:ro busybox sh -c 'head -n 1 /host/etc/shadow | cut -d: -f1'"
    info = os.stat("/etc/shadow")
    before = {"/etc/shadow": f"{stat.filemode(info.st_mode)} {owner_name(info.st_uid)}:{group_name(info.st_gid)}",
              f"open() as you (uid {os.geteuid()})": open_as("/etc/shadow", os.getuid(), os.getgid())}
    if os.geteuid() == 0:
        before["open() as nobody (uid 65534)"] = run_in_child(open_as, "/etc/shadow", 65534, 65534)
    try:
        output = stage.client().containers.run(
            "busybox", ["sh", "-c", "head -n 1 /host/etc/shadow | cut -d: -f1"], volumes=["/:/host:ro"],
            network_mode="none", remove=True)
    except docker.errors.APIError as err:
        return hosts.refuse(title, action, daemon_answer(err), key="unixsocket.read_host_file")
    user = output.decode().strip() or "(nothing: head could not open it)"
    note = ("the client never had the right to read it; it asked the daemon, which runs as root"
            if os.geteuid() == 0 else
            "the daemon runs as you, so its container is you on the host: the kernel refused it the file")
    return Step(title, action, before=before, after={"the container read /host/etc/shadow, first user": user},
                mode=current_mode(), note=note, data={"first_user": user}, key="unixsocket.read_host_file")


def open_as(path: str, uid: int, gid: int) -> str:
    """open(2) ``path`` for reading as uid:gid (in a child for another uid): "allowed" or the errno."""
    if (os.getuid(), os.getgid()) != (uid, gid):
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as err:
        return f"{errno_name(err)}: {err.strerror}"
    return "allowed"


def wait_for_listener(pid: int, port: int, seconds: float = 5) -> list[str]:
    """pid's listening TCP ports once one is on ``port`` (a server needs a moment to bind), or those there are
    when ``seconds`` have gone by (notebook 08's box waits here too)."""
    import time
    deadline = time.monotonic() + seconds
    while True:
        found = listening_ports(pid)
        if any(address.endswith(f":{port}") for address in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def listening_ports(pid: int | str = "self") -> list[str]:
    """Listening TCP sockets of pid's network namespace, IPv4 and IPv6, as ADDRESS:PORT (procfs.tcp_listeners):
    busybox nc listens on an IPv6 socket, which takes IPv4 connections too."""
    return [str(listener) for listener in procfs.tcp_listeners(pid)]


# --- two servers on port 80, in two network namespaces (notebooks 02 and 08) ---------------------------------

class Server:
    """A child in a network namespace of its own, serving `name ...` on 0.0.0.0:80 until stopped.

    ``join``: the pid whose user namespace it joins first (rootless: the user-mode network's holder)."""

    def __init__(self, name: str, scope: journal.Scope, port: int = 80, join: int | None = None):
        self.child = Child(lambda channel: _serve(channel, name, port, join))
        scope.record("process", str(self.child.pid), "kill", pid=self.child.pid,
                     start=journal.process_start_time(self.child.pid))
        self.name, self.pid = name, self.child.pid
        try:
            self.inside = self.child.recv(timeout=10)
        except BaseException:
            self.stop()                   # reap it: a killed child left unreaped is a zombie of this process
            raise

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.child.send("stop")
        self.child.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _serve(channel, name: str, port: int, join: int | None) -> None:
    """In the child: a new network namespace, a socket on 0.0.0.0:port, one line to each client."""
    if join:
        userns.join(join)
    userns.unshare(syscalls.CLONE_NEWNET)
    listener = socket.create_server(("0.0.0.0", port))
    identity = f"{name} in net:[{network.netns_inode('self')}] (pid {os.getpid()})"
    channel.send({"identity": identity, "second_bind": second_bind(port)})
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        selector.register(channel.sock, selectors.EVENT_READ)
        while True:
            ready = [key.fileobj for key, _ in selector.select()]
            if channel.sock in ready:
                return                    # "stop", or EOF: the parent has gone
            conn, _ = listener.accept()
            with conn:
                conn.sendall(f"{identity}\n".encode())


def second_bind(port: int, address: str = "0.0.0.0") -> str:
    """A second socket on a port already listening in the same namespace: the kernel refuses it."""
    with socket.socket() as again:
        try:
            again.bind((address, port))
        except OSError as err:
            return f"{errno.errorcode[err.errno]}: {err.strerror}"
    return "allowed"


def two_servers_on_port_80(host_ports: tuple[int, int] = (18080, 18081), on: network.Network = network.DEFAULT) -> Step:
    """Two network namespaces, each with a server on port 80; reached by address, from each other, and by
    published ports. Rootless, both are on the user-mode network's bridge (``labcore.kernel.usernet``)."""
    title = "two servers on port 80, in two network namespaces"
    action = ("unshare(CLONE_NEWNET); bind(0.0.0.0:80); listen()  [x2]; ip link add lc..h type veth peer name "
              "lc..c; ip link set lc..c netns PID; labcore.kernel.portproxy 127.0.0.1:PORT -> IP:80")
    try:
        with journal.Scope() as scope:
            router = _join_usernet(scope)              # first: the servers join its user namespace
            join = router.holder if router else None
            with Server("server-a", scope, join=join) as a, Server("server-b", scope, join=join) as b:
                endpoints = [_connect_on(router, s.pid, scope, on) for s in (a, b)]
                published = [network.publish(e, port, 80, scope) for e, port in zip(endpoints, host_ports)]
                step = _two_servers_evidence(title, action, (a, b), endpoints, published)
    except (NeedsPrivilege, NotSupportedHere) as err:
        step = Step.refused(title, action, err)
        try:
            step.after = in_new_netns(loopback_server)       # what a user namespace does allow
        except LabError as why:
            step.after = {"loopback in a new netns": f"refused too: {why.message}"}
        return step
    if router is None:
        left = [link["ifname"] for link in netlink.links() if paths.is_ours(link["ifname"])]
    else:                                                # the router namespace went, with all links in it
        left = [f"router pid {pid}" for pid in (router.holder, router.slirp) if journal.running(pid)]
    step.data["links_left"] = left
    step.after["lc links after teardown"] = left or "none"
    return step


def _join_usernet(scope: journal.Scope):
    """Rootless: the user-mode network (``labcore.kernel.usernet``); None as root."""
    if os.geteuid() == 0:
        return None
    return usernet.join(scope)


def _connect_on(router, pid: int, scope: journal.Scope, on: network.Network) -> network.Endpoint:
    if router is None:
        return network.connect(pid, scope, on)
    return usernet.connect(router, pid, scope)


def _two_servers_evidence(title, action, servers, endpoints, published) -> Step:
    """Read it back while both run: namespaces, listening sockets, and what each path to each server says."""
    ports = [f":{port.host_port}" for port in published]
    listening = listening_ports()
    host = {"net ns": f"net:[{network.netns_inode('self')}]",
            "listening on :80": [s for s in listening if s.endswith(":80")] or "none",
            f"listening on {', '.join(ports)}": [s for s in listening if s.endswith(tuple(ports))],
            f"second bind to {published[0].host_ip}:{published[0].host_port}":
                second_bind(published[0].host_port, published[0].host_ip)}
    after, data = {}, {"servers": {}}
    for server, other, endpoint, port in zip(servers, servers[::-1], endpoints, published):
        facts = _server_facts(server, other, endpoint, port)
        after.update({f"{server.name}: {label}": facts[key] for key, label in _server_labels(server, other,
                                                                                             endpoint, port).items()})
        data["servers"][server.name] = {**facts, "ip": endpoint.ip, "host_port": port.host_port,
                                        "identity": server.inside["identity"], "pid": server.pid}
    where = "the host" if endpoints[0].via is None else "the router namespace"
    return Step(title, action, before=host, after=after, mode=current_mode(), data=data, columns=("host", "inside"),
                note="both servers hold port 80, each in its own namespace; a second bind in the same "
                     f"namespace fails with EADDRINUSE; {where} and the other server reach each by its veth "
                     "address, the host by a published port on 127.0.0.1")


def _server_facts(server: Server, other: Server, endpoint: network.Endpoint, port: network.Published) -> dict:
    """What one server's namespace shows, and what each way of reaching it answers, under plain names."""
    return {"net_ns": f"net:[{network.netns_inode(server.pid)}]", "listening": listening_ports(server.pid),
            "second_bind": server.inside["second_bind"],
            "from_bridge": network.in_netns(endpoint.via, network.reply, endpoint.ip, 80),
            "from_other": network.in_netns(other.pid, network.reply, endpoint.ip, 80),
            "published": network.reply(port.host_ip, port.host_port)}


def _server_labels(server: Server, other: Server, endpoint: network.Endpoint, port: network.Published) -> dict:
    """How the table names each of ``_server_facts``: with the addresses and ports it used."""
    via = "the host" if endpoint.via is None else "the router ns"
    return {"net_ns": "net ns", "listening": "listening", "second_bind": "second bind to :80",
            "from_bridge": f"connect {endpoint.ip}:80 from {via}",
            "from_other": f"connect {endpoint.ip}:80 from {other.name}",
            "published": f"connect {port.host_ip}:{port.host_port}"}


def in_new_netns(fn):
    """``fn()`` in a child in a new network namespace (inside a new user namespace when not root)."""
    return run_in_child(lambda: (userns.unshare(syscalls.CLONE_NEWNET), fn())[1])


def loopback_server() -> dict:
    """What works with no veth at all: lo up, a server on 127.0.0.1:80, a client in the same namespace."""
    before = network.ipv4_addresses(netlink.addresses())["lo"]
    network.bring_up("lo")
    loopback = network.LOOPBACK
    with socket.create_server((loopback, 80)) as listener, socket.create_connection((loopback, 80)) as client:
        conn, _ = listener.accept()                    # the client's connect completed in the backlog
        with conn:
            conn.sendall(f"loopback server in net:[{network.netns_inode('self')}]\n".encode())
        reply = client.recv(256).decode().strip()
    return {"lo in a new netns": before, "lo after `ip link set lo up`": network.ipv4_addresses(
        netlink.addresses())["lo"], "connect 127.0.0.1:80": reply}


# --- the picture: the client, the socket and the daemon, as /proc shows them ----------------------------------

def connection_seen_from_proc(stage: Stage) -> Step:
    """Connect to the daemon as a client does, and hold the connection open while /proc is read: the client's
    fd and the daemon's accepted fd are two sockets of one connection, both bound to nothing on the client's
    side and to the socket's path on the daemon's (/proc/net/unix lists the path for the daemon's end only)."""
    import psutil
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(stage.labd.socket)
        mine = os.fstat(client.fileno()).st_ino
        fd = client_fd(mine)
        accepted = wait_for_accepted(stage.labd.process.pid, stage.labd.socket)
        listener = socket_listener(stage.labd.socket)
    labd = psutil.Process(stage.labd.process.pid)
    data = {"client": {"pid": os.getpid(), "fd": fd, "inode": mine},
            "daemon": {"pid": labd.pid, "user": labd.username(), "listening_fd": listener["fd"],
                       "listening_inode": listener["inode"], "accepted": accepted},
            "socket": stage.labd.socket, "mode": stat.filemode(os.stat(stage.labd.socket).st_mode)}
    data["dot"] = connection_dot(data)
    after = {"the client (this notebook)": f"pid {os.getpid()}, fd {data['client']['fd']} -> socket:[{mine}]",
             "the daemon, listening": f"pid {labd.pid}, fd {listener['fd']} -> socket:[{listener['inode']}]",
             "the daemon, this connection": (f"fd {accepted['fd']} -> socket:[{accepted['inode']}]" if accepted
                                             else "not accepted yet")}
    return Step("a client connected to the daemon, seen from /proc", f"connect({stage.labd.socket}); "
                "readlink /proc/PID/fd/*; read /proc/net/unix", after=after, mode=user_mode(), data=data,
                note="two processes, two fds, one connection: the socket file is only where they met")


def client_fd(inode: int) -> int:
    """This process's fd whose link names ``socket:[inode]``."""
    return next((fd for fd, link in procfs.fds().items() if link == f"socket:[{inode}]"), -1)


def wait_for_accepted(pid: int, path: str, seconds: float = 5) -> dict:
    """The daemon's newest accepted connection on ``path``: an fd of ``pid`` whose socket /proc/net/unix
    lists with the path and state connected (03), not listening. Polled: accept(2) happens in the daemon's
    own time."""
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connected = {int(fields[6]) for fields in procfs.net_table("unix")
                     if len(fields) == 8 and fields[7] == path and fields[5] == "03"}
        held = {}
        with contextlib.suppress(OSError):
            for fd, link in procfs.fds(pid).items():
                if link.startswith("socket:[") and int(link[8:-1]) in connected:
                    held[int(link[8:-1])] = fd
        if held:
            inode = max(held)             # the newest: inodes count up
            return {"fd": held[inode], "inode": inode}
        time.sleep(0.02)
    return {}


def connection_dot(data: dict) -> str:
    """The drawing of ``connection_seen_from_proc``'s evidence: processes as boxes, the socket file as a note,
    fds as labelled edges."""
    from labcore.lessons.diagrams import Graph
    graph = Graph("client_server", rankdir="LR", fontname="Helvetica")
    graph.defaults("node", shape="box", fontname="Helvetica", fontsize="11")
    graph.defaults("edge", fontname="Helvetica", fontsize="10")
    client, daemon = data["client"], data["daemon"]
    graph.node("client", f"client: this notebook's kernel\npid {client['pid']}")
    graph.node("socket", f"{os.path.basename(data['socket'])}\n{data['mode']}", shape="note")
    graph.node("daemon", f"daemon: labd\npid {daemon['pid']} ({daemon['user']})")
    graph.edge("client", "socket", label=f"fd {client['fd']}\nconnect(2)")
    graph.edge("socket", "daemon", label=f"fd {daemon['listening_fd']}\nlisten(2)", dir="back")
    if daemon["accepted"]:
        graph.edge("client", "daemon", label=f"one connection: fd {client['fd']} ↔ fd {daemon['accepted']['fd']}",
                   style="dashed", constraint="false")
    return graph.source()


# --- the same daemon on TCP: a port has no owner and no mode ------------------------------------------------

def daemon_on_tcp(stage: Stage) -> Step:
    """dockerd listens where -H says, on a Unix socket and on TCP alike (`-H tcp://127.0.0.1:2375`). A daemon
    started with `labcore daemon --tcp 127.0.0.1:PORT` answers the same request the same way on both; but a TCP
    port is not a file: connect(2) to it checks no owner, group or mode (only bind(2) below 1024 is privileged),
    so every user of the host may talk to the daemon, which is root. That is dockerd's warning, printed again by
    labd at its start."""
    from labcore.api.labd import Labd
    port, home = free_loopback_port(), tempfile.mkdtemp(prefix="labcore-tcp-", dir=stage.home)
    path = os.path.join(os.path.dirname(stage.labd.socket), "tcp.sock")     # shorter than labd.sock: it fits
    with Labd(path, home, tcp=f"127.0.0.1:{port}") as daemon:
        warnings = startup_lines(daemon)
        unix, tcp = http_get(path, "/version"), http_get(("127.0.0.1", port), "/version")
        doors = {"unix": socket_listener(path), "tcp": tcp_listener(daemon.process.pid, port)}
        info, folder = os.stat(path), os.stat(os.path.dirname(path))
        others = connect_as_another_user(path, port)
    after = {"labd said at its start": "\n".join(warnings),
             "GET /version, on the Unix socket": answer_line(unix), "GET /version, on the TCP port": answer_line(tcp),
             "the same body": unix[1] == tcp[1],
             "both doors held by": f"pid {doors['unix']['pid']} (unix: fd {doors['unix']['fd']}; "
                                   f"tcp: fd {doors['tcp'].get('fd', '?')})",
             "who may connect, unix": f"{stat.filemode(info.st_mode)} {owner_name(info.st_uid)}:"
                                      f"{group_name(info.st_gid)} in a directory {stat.filemode(folder.st_mode)}: "
                                      "their modes decide",
             "who may connect, tcp": "anyone on this host: a port has no owner and no mode", **others}
    return Step("one daemon, a Unix socket and a TCP port", f"labcore daemon --socket {path} --tcp 127.0.0.1:"
                f"{port}; GET /version on each; connect() as another user", after=after, mode=user_mode(),
                note="the same daemon behind both doors; only the Unix socket's file asks who you are",
                data={"port": port, "warnings": warnings, "unix": unix, "tcp": tcp, "same": unix[1] == tcp[1],
                      "same process": doors["unix"]["pid"] == doors["tcp"].get("pid"), **others})


def answer_line(answer: tuple[str, bytes]) -> str:
    """``HTTP/1.1 200 OK``, and the API version the body names (/version's ApiVersion)."""
    import json
    with contextlib.suppress(ValueError, AttributeError):
        return f"{answer[0]}, ApiVersion {json.loads(answer[1]).get('ApiVersion')}"
    return answer[0]


def free_loopback_port() -> int:
    """A port the kernel calls free on 127.0.0.1 (bind to port 0, ip(7)); the daemon binds it a moment later."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def startup_lines(daemon) -> list[str]:
    """What the daemon wrote to stderr before it listened: dockerd's warnings for TCP without TLS, then its
    "listening on" line (both written before it answered the ping that found it ready)."""
    lines = []
    while not lines or not lines[-1].startswith("labd: listening"):
        line = daemon.process.stderr.readline().decode(errors="replace")
        if not line:
            break
        lines.append(line.strip())
    return lines


def http_get(address, target: str) -> tuple[str, bytes]:
    """GET ``target`` on a Unix socket (a path) or a TCP (host, port): the status line and the body."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as connection:
        connection.settimeout(10)
        connection.connect(address)
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        response = b"".join(iter(lambda: connection.recv(65536), b""))
    head, _, body = response.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


def tcp_listener(pid: int, port: int) -> dict:
    """The fd of ``pid`` that holds the socket listening on 127.0.0.1:``port``: /proc/net/tcp's row (state 0A,
    LISTEN; the address in hex, proc(5)) gives its inode, /proc/PID/fd the fd that links to it."""
    for listener in procfs.tcp_listeners(pid):
        if listener.port == port:
            for fd, link in procfs.fds(pid).items():
                if link == f"socket:[{listener.inode}]":
                    return {"pid": pid, "fd": fd, "inode": listener.inode, "address": listener.address}
    return {}


def connect_as_another_user(path: str, port: int) -> dict:
    """As root, a child become nobody (uid 65534) tries both doors; anyone else cannot become another user."""
    from labcore.kernel.process import run_in_child
    if os.geteuid() != 0:
        return {"as another user": "not tried: only root may become another user (setuid(2)); the socket's "
                                   "mode decides for them on unix, nothing on tcp"}
    return {"nobody (uid 65534), unix": run_in_child(connect_as, path, 65534, 65534),
            "nobody (uid 65534), tcp": run_in_child(ping_tcp_as, port, 65534, 65534)}


def ping_tcp_as(port: int, uid: int, gid: int) -> str:
    """GET /_ping on 127.0.0.1:``port`` as uid:gid (in a child for another uid): the status line or the errno."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    try:
        status, body = http_get(("127.0.0.1", port), "/_ping")
    except OSError as err:
        return f"{errno_name(err)}: {err.strerror}"
    return f"connected; {status}, {body.decode(errors='replace')}"


# --- Docker's own processes: dockerd, containerd, the shim, the container ----------------------------------

TREE_KEY = "client_server.docker_process_tree"      # its recording, made on the reference host
ROLES = ("dockerd", "containerd", "shim", "container")


def docker_process_tree() -> Step:
    """Debian's dockerd started by the lab (``labcore.lessons.dockerd``), a detached container, and the processes
    read from /proc: dockerd is containerd's parent; containerd started the shim (containerd-shim-runc-v2), which
    left its starter behind and was adopted by the host's pid 1; the shim is the container's parent. Then dockerd
    is killed with SIGKILL, and the container's pid 1 still runs: its parent is the shim, not dockerd. (Docker's
    --live-restore lets a restarted dockerd take such containers back; without it, a restart stops them.)"""
    from labcore.lessons.dockerd import Dockerd, dockerd_unavailable_reason, import_busybox
    title = "Docker's processes: dockerd, containerd, the shim, the container"
    action = "dockerd; docker run -d --network none busybox sleep 300; read /proc; kill -KILL dockerd; read /proc"
    reason = dockerd_unavailable_reason()
    if reason:
        error = (NeedsPrivilege(reason, why="Debian's dockerd runs as root (rootless Docker is another setup)")
                 if os.geteuid() != 0 else NotFound(reason))
        return hosts.refuse(title, action, error, key=TREE_KEY)
    with Dockerd() as docker:
        import_busybox(docker)
        container_id = docker.cli("run", "-d", "--network", "none", "busybox", "sleep", "300").stdout.strip()
        pid = int(docker.cli("inspect", "--format", "{{.State.Pid}}", container_id).stdout)
        try:
            before = docker_processes(docker, pid)
            kill_dockerd(docker)
            after = {role: process_facts(before[role]["pid"]) for role in ROLES}
        finally:
            stop_orphaned_container(docker, container_id, pid)
    data = {"before": before, "after": after, "container_id": container_id,
            "container survived": after["container"]["state"] not in ("gone", "zombie"),
            "container's parent after": after["container"].get("ppid")}
    data["dot"] = docker_tree_dot(data)
    return Step(title, action, before={role: describe(facts) for role, facts in before.items()},
                after={role: describe(facts) for role, facts in after.items()}, mode=Mode.ROOT, key=TREE_KEY,
                note="dockerd died (and its containerd with it); the container's pid 1 runs on, a child of the shim",
                data=data)


def docker_processes(docker, pid: int) -> dict:
    """The four processes, found from the container's pid 1 upwards and from dockerd's own files."""
    shim = int(process_facts(pid)["ppid"])
    containerd = int(Path(docker.runtime, "exec", "containerd", "containerd.pid").read_text())
    found = {"dockerd": process_facts(docker.process.pid), "containerd": process_facts(containerd),
             "shim": process_facts(shim), "container": process_facts(pid)}
    found["shim"]["parent"] = process_facts(found["shim"]["ppid"]).get("name", "?")
    found["dockerd"]["parent"] = process_facts(found["dockerd"]["ppid"]).get("name", "?")
    return found


def process_facts(pid: int | str) -> dict:
    """pid, name, parent and state from /proc/PID/status and cmdline (proc(5)); "gone" once it has no entry.
    A zombie has died and waits for its parent to reap it (wait(2)): it runs no more."""
    try:
        status = procfs.status(pid)
    except OSError:
        return {"pid": int(pid), "state": "gone"}
    state = status["State"].split("(")[-1].rstrip(")").strip()
    return {"pid": int(pid), "name": status["Name"], "ppid": int(status["PPid"]), "state": state,
            "command": " ".join(argument for argument in procfs.cmdline(pid)[:2] if argument)[:60]}


def describe(facts: dict) -> str:
    if facts["state"] in ("gone", "zombie"):
        return f"pid {facts['pid']}: {facts['state']}"
    return f"pid {facts['pid']} {facts['name']}, parent {facts['ppid']}, {facts['state']}"


def kill_dockerd(docker) -> None:
    """SIGKILL: no chance to stop its containers. The containerd that dockerd supervises was started with a
    parent-death signal (PR_SET_PDEATHSIG, prctl(2); moby's libcontainerd/supervisor), so the kernel ends it
    too; the shims were never children of either."""
    import time
    docker.process.send_signal(signal.SIGKILL)
    docker.process.wait()
    containerd = int(Path(docker.runtime, "exec", "containerd", "containerd.pid").read_text())
    deadline = time.monotonic() + 5
    while process_facts(containerd)["state"] not in ("gone", "zombie") and time.monotonic() < deadline:
        time.sleep(0.05)


def stop_orphaned_container(docker, container_id: str, pid: int) -> None:
    """What dockerd would have done at `docker stop`, now that it cannot: kill pid 1 (the shim reaps it), then
    remove its cgroup in each hierarchy; ``Dockerd.stop`` kills the shim, unmounts and removes the rest."""
    import time
    from labcore.lessons.dockerd import cgroup_parent_directories
    if process_facts(pid).get("command", "").startswith("sleep"):          # still the container's, not reused
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while process_facts(pid)["state"] not in ("gone", "zombie") and time.monotonic() < deadline:
        time.sleep(0.05)
    for parent in cgroup_parent_directories(os.path.basename(docker.directory)):
        with contextlib.suppress(FileNotFoundError):
            retry_rmdir(os.path.join(parent, container_id))


def retry_rmdir(path: str, seconds: float = 5) -> None:
    """rmdir(2) of a cgroup: EBUSY while its last process is still exiting."""
    import time
    deadline = time.monotonic() + seconds
    while True:
        try:
            return os.rmdir(path)
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def docker_tree_dot(data: dict) -> str:
    """The processes as /proc showed them: parent → child edges (PPid), "started" where the starter is not the
    parent; each box says what became of it after dockerd's SIGKILL."""
    from labcore.lessons.diagrams import Graph
    before, after = data["before"], data["after"]
    graph = Graph("docker_processes", rankdir="TB", fontname="Helvetica")
    graph.defaults("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10")
    graph.defaults("edge", fontname="Helvetica", fontsize="9")
    init, starter = before["shim"].get("ppid", 1), before["dockerd"]
    adopter = "the host's init" if init == 1 else "a subreaper (PR_SET_CHILD_SUBREAPER), not pid 1"
    graph.node("init", f"pid {init}: {before['shim'].get('parent', '?')}\n({adopter})", fillcolor="white")
    graph.node("starter", f"pid {starter.get('ppid', '?')}: {starter.get('parent', '?')}\n(started dockerd, as "
               "systemd does)", fillcolor="white")
    graph.edge("starter", "dockerd", label="parent")
    labels = {"dockerd": "dockerd", "containerd": "containerd", "shim": "containerd-shim-runc-v2",
              "container": "the container's pid 1"}
    for role in ROLES:
        facts, later = before[role], after[role]
        alive = later["state"] not in ("gone", "zombie")
        fate = "still running" if alive else {"dockerd": "killed (SIGKILL)", "containerd": "ended with dockerd"
                                               }.get(role, later["state"])
        graph.node(role, f"{labels[role]}\npid {facts['pid']} ({facts.get('name', '?')})\nafter: {fate}",
                   fillcolor="palegreen" if alive else "lightgray", style="rounded,filled" if alive else
                   "rounded,filled,dashed")
    graph.edge("dockerd", "containerd", label="parent\n(gRPC on containerd.sock)")
    graph.edge("containerd", "shim", label="started it\n(ttrpc)", style="dashed")
    graph.edge("init", "shim", label="parent: adopted it")
    graph.edge("shim", "container", label="parent: reaps it")
    return graph.source()
