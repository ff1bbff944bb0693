"""The `docker run` flow, one step at a time: the bytes on the socket, then what the kernel did.

`docker run -m 64m IMAGE sh -c 'sleep 1; echo hi'` is a conversation between a client and a daemon over a Unix
socket, in HTTP (docs.docker.com/reference/api/engine; the CLI's cli/command/container/run.go):

    step      the client sends                      the daemon answers      and the kernel...
    connect   GET /_ping                            200 OK                  (a process owns the socket)
    lookup    GET /v1.45/images/IMAGE/json          404 "No such image"     -
    pull      POST /v1.45/images/create?fromImage   200, progress lines     (the registry: manifest, blobs)
    create    POST /v1.45/containers/create         201 {"Id"}              nothing yet: a record on disk
    start     POST /v1.45/containers/ID/start       204                     namespaces, a cgroup, a root, pid 1
    output    GET /v1.45/containers/ID/logs         200, framed output      pid 1 wrote to a pipe
    exit      POST /v1.45/containers/ID/wait        200 {"StatusCode": 0}   pid 1 exited, was reaped
              DELETE /v1.45/containers/ID           204                     (--rm: its files go)

Each step here speaks through ``Wire``, a client on a raw socket that keeps the exact bytes it sent and
received, then reads the kernel's side from /proc. ``setup()`` builds the stage: a docker-registry on
loopback holding the image, and a labd whose image store is empty, so the pull is real.

Next: the same flow by the docker SDK and the docker CLI (notebook 01); the daemon itself (notebook 02).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.api.labd import API_VERSION
from labcore.errors import LabError, NeedsPrivilege, NotFound, NotSupportedHere
from labcore.kernel import procfs
from labcore.lessons import hosts
from labcore.lessons.evidence import Step, current_mode, user_mode
from labcore.runtime import container

IMAGE = "lab/hello:v1"                              # the repository and tag pushed to the loopback registry
COMMAND = ["sh", "-c", "sleep 1; echo hi"]          # long enough to read pid 1 from /proc while it runs
KINDS = ("cgroup", "ipc", "mnt", "net", "pid", "uts")
MAX_BODY_LINES = 12
DOCKER_DAEMON_ERROR = 125          # the docker CLI's exit status when the daemon failed, not the command
SUN_PATH_MAX = 107                  # sockaddr_un.sun_path: 108 bytes with the terminating NUL (unix(7))


# --- who holds the daemon's socket (notebook 02 asks it again) ------------------------------------------

def socket_listener(path: str) -> dict:
    """The process holding the listening socket bound to ``path``: its /proc/net/unix inode, matched to the
    fds of the processes (what `ss -xlp` does)."""
    import psutil
    inode = unix_socket_inode(path)
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            for fd, link in procfs.fds(process.pid).items():
                if link == f"socket:[{inode}]":
                    return {"pid": process.pid, "fd": fd, "inode": inode,
                            "command": " ".join(process.info["cmdline"] or [])}
    raise NotFound(f"no process listens on {path}", fix="start labd (flow.setup())")


def unix_socket_inode(path: str) -> int:
    """/proc/net/unix: one line per Unix socket; the listening one bound to ``path`` (unix(7), proc(5))."""
    for fields in procfs.net_table("unix"):
        if len(fields) == 8 and fields[7] == path and fields[3] == "00010000":      # __SO_ACCEPTCON
            return int(fields[6])
    raise NotFound(f"no listening Unix socket at {path} in /proc/net/unix")


def owner_name(uid: int) -> str:
    import pwd
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(uid).pw_name
    return str(uid)


def group_name(gid: int) -> str:
    import grp
    with contextlib.suppress(KeyError):
        return grp.getgrgid(gid).gr_name
    return str(gid)


# --- the wire: HTTP/1.1 on a Unix socket, every byte kept -------------------------------------------------

@dataclass
class Exchange:
    """One request and its response, as they crossed the socket."""
    request: bytes
    response: bytes
    status: int
    body: bytes                     # the response body, chunked framing removed

    def json(self):
        return json.loads(self.body)

    def stream(self) -> list[dict]:
        """A streamed answer (pull progress): one JSON object a line."""
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]

    def __str__(self) -> str:
        head, _, body = self.response.partition(b"\r\n\r\n")
        lines = ["> " + line for line in printable(self.request).split("\n") if line]
        lines += ["< " + line for line in printable(head + b"\r\n").split("\n") if line] + ["<"]
        shown, how = readable_body(body)
        lines += ["< " + line for line in shown[:MAX_BODY_LINES] if line]
        if len(shown) > MAX_BODY_LINES:
            lines.append(f"< ... {len(shown) - MAX_BODY_LINES} more lines ({len(body)} bytes in all)")
        return "\n".join(lines + ([how] if how else []))

    __repr__ = __str__


def readable_body(body: bytes) -> tuple[list[str], str]:
    """A body as lines to show, and how they differ from the bytes: one JSON document on one line (as the
    daemon sends it, to save bytes) is indented for reading, and that is said under it."""
    text = printable(body)
    if "\n" not in text.strip() and text.strip()[:1] in ("{", "["):
        try:
            pretty = json.dumps(json.loads(body), indent=2, ensure_ascii=False).split("\n")
        except ValueError:
            return text.split("\n"), ""
        return pretty, f"(the body above is indented for reading; on the wire it is one line of {len(body)} bytes)"
    return text.split("\n"), ""


def printable(data: bytes) -> str:
    """Bytes as text, CRLF as newlines, anything else unprintable escaped (Docker's log frames are binary)."""
    text = data.decode("utf-8", errors="backslashreplace").replace("\r\n", "\n")
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


class Wire:
    """An HTTP client on a Unix socket, written out by hand so that nothing is hidden: the request is the
    bytes in ``Exchange.request``, the answer is read until the daemon closes (``Connection: close``)."""

    def __init__(self, path: str):
        self.path = path

    def exchange(self, method: str, target: str, body: dict | None = None) -> Exchange:
        request = build_request(method, target, body)
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(120)
            try:
                connection.connect(self.path)
            except OSError as err:
                raise LabError(f"cannot connect to {self.path}: {err.strerror}",
                               fix="is the daemon running? (setup() starts one)") from err
            connection.sendall(request)
            response = b"".join(iter(lambda: connection.recv(65536), b""))
        status, body = parse_response(response)
        return Exchange(request, response, status, body)


def build_request(method: str, target: str, body: dict | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", "User-Agent: labcore-flow", "Connection: close"]
    data = json.dumps(body).encode() if body is not None else b""
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def parse_response(response: bytes) -> tuple[int, bytes]:
    """The status code and the body; a chunked body (RFC 9112, 7.1) is joined back together."""
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1."):
        raise LabError(f"not an HTTP answer: {response[:80]!r}")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" not in head.lower():
        return status, body
    chunks = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        body = rest[size + 2:]
    return status, b"".join(chunks)


def api(path: str) -> str:
    return f"/v{API_VERSION}{path}"


# --- the stage: a registry holding the image, a daemon without it -------------------------------------------

class Stage:
    """``with setup() as stage:`` → ``stage.wire``, ``stage.reference``, ``stage.client()``, ``stage.labd``.

    labd runs with a state directory of its own (``LABCORE_HOME``), so its image store starts empty, and
    with this process's journal (a symlink), so one `journal.cleanup()` also removes its containers."""

    def __init__(self):
        from labcore.kernel.journal import Scope
        self.scope = Scope()
        self.stack = contextlib.ExitStack()
        self.home = self.reference = ""
        self.registry = self.labd = self.wire = None
        self.pushed: list[dict] = []
        self.container_id, self.pid = "", 0
        self.start_refused = ""             # the daemon's answer when the kernel refused it the container

    def open(self) -> "Stage":
        from labcore.api.labd import Labd
        from labcore.lessons.localregistry import LocalRegistry
        self.home = make_daemon_home(self.scope)
        self.registry = self.stack.enter_context(LocalRegistry())
        self.reference = f"{self.registry.address}/{IMAGE}"
        self.pushed = push_base_image(self.reference)
        self.labd = self.stack.enter_context(Labd(socket_in(self.home, "labd.sock", self.scope), self.home))
        self.wire = Wire(self.labd.socket)
        return self

    def client(self):
        """The official docker SDK, pointed at this stage's labd."""
        return self.labd.client()

    def close(self) -> None:
        """`docker rm -f` what is left, stop labd and the registry, remove the daemon's directory."""
        if self.wire is not None:
            with contextlib.suppress(LabError, OSError):
                remove_all_containers(self.wire)
        try:
            self.stack.close()
        finally:
            self.scope.close()

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.labd is None:
            return "<stage, closed>"
        return (f"labd (pid {self.labd.process.pid}) on unix://{self.labd.socket}, image store empty\n"
                f"docker-registry on {self.registry.address}, holding {IMAGE} "
                f"(pushed: {', '.join(e['status'] for e in self.pushed[1:])})")


def setup() -> Stage:
    """The stage for the flow, journaled: everything it makes is removed by `journal.cleanup()`."""
    stage = Stage()
    try:
        return stage.open()
    except BaseException:
        stage.close()
        raise


def make_daemon_home(scope) -> str:
    from labcore.kernel.journal import make_scratch
    home = make_scratch(scope, "labcore-flow-")       # named, journaled, then made
    os.symlink(paths.journal_dir(), os.path.join(home, "journal"))
    return home


def socket_in(directory: str, name: str, scope) -> str:
    """Where a socket of the lab goes: in the state directory of the process that listens on it, as rootless
    Docker puts docker.sock in the user's runtime directory, so that any user may make it (only root may
    write /run). A path too long for sun_path gets a short labcore-sock-* directory in /tmp of its own."""
    path = os.path.join(directory, name)
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        return path
    short = os.path.join(tempfile.gettempdir(), f"{paths.PREFIX}-sock-{secrets.token_hex(6)}")
    scope.record("directory", short, "rmtree", path=short)        # journaled before it exists
    os.mkdir(short, 0o700)
    return os.path.join(short, name)


def push_base_image(reference: str) -> list[dict]:
    """The lab's busybox into the registry as ``reference``: blobs, then the manifest (labcore.image.registry.push)."""
    from labcore.image import registry
    from labcore.image.baseimage import ensure_base_image
    return list(registry.push(ensure_base_image(), reference))


def remove_all_containers(wire: Wire) -> None:
    for summary in wire.exchange("GET", api("/containers/json?all=1")).json():
        wire.exchange("DELETE", api(f"/containers/{summary['Id']}?force=1"))


# --- the kernel's side: read from /proc ------------------------------------------------------------------

def process_view(pid: int | str) -> dict:
    """What a process is, from the kernel's point of view: namespaces, cgroup, root, pid inside."""
    view = {f"{kind} ns": procfs.ns_link(kind, pid) for kind in KINDS}
    view["pid (NSpid: host ... inside)"] = procfs.status_field("NSpid", pid)
    view["cgroup"] = cgroup_of(pid)
    view["/ is"] = root_mount_of(pid)
    view["command"] = short_command(pid)
    return view


def cgroup_of(pid: int | str) -> str:
    """The memory controller's group on cgroup v1, the unified group on v2 (cgroups(7), /proc/PID/cgroup)."""
    return procfs.cgroup_of("memory", pid) or procfs.cgroup_of("v2", pid) or "?"


def root_mount_of(pid: int | str) -> str:
    """The mount at "/" as the process sees it (proc(5), mountinfo; the last mount on "/" is the one on top):
    its type and source; for an overlay, how many read-only layers lie below (the image's, and any the engine
    adds) and where its writes go."""
    mount = procfs.mount_at("/", pid)
    if mount is None:
        return "?"
    if mount.fstype != "overlay":
        return f"{mount.fstype} {mount.source}, directory {mount.root}"
    settings = dict(option.split("=", 1) for option in mount.super_options.split(",") if "=" in option)
    return (f"overlay: {len(settings.get('lowerdir', '').split(':'))} read-only layer(s) below, "
            f"writes to {settings.get('upperdir', '?')}")


def short_command(pid: int | str) -> str:
    argv = procfs.cmdline(pid)
    return " ".join([os.path.basename(argv[0]), *argv[1:3]] + (["..."] if len(argv) > 3 else [])) if argv else ""


# --- the flow, step by step -----------------------------------------------------------------------------

@dataclass(repr=False)          # Step.__repr__, which shows the exchanges first
class FlowStep(Step):
    """A Step with the HTTP exchanges that caused it, shown first, as `curl -v` shows them; in a notebook the
    flowchart follows it, with the step's own place lit (``where``, a name in STEPS or "missing")."""
    exchanges: list[Exchange] = field(default_factory=list)
    where: str = ""

    def wire(self) -> list[str]:
        return [str(exchange) for exchange in self.exchanges]

    def _ipython_display_(self) -> None:
        # IPython's hook for a cell's result: two outputs, the evidence and then the drawing of where it is.
        from IPython.display import display
        from labcore.lessons.diagrams import show
        display({"text/html": self._repr_html_(), "text/plain": str(self)}, raw=True)
        if self.where:
            display(show(flow_dot(self.where)))


def connect(stage: Stage) -> FlowStep:
    """client → socket → daemon: a file in the filesystem, and a process that listens on it."""
    ping = stage.wire.exchange("GET", "/_ping")
    info = os.stat(stage.labd.socket)
    listener = socket_listener(stage.labd.socket)
    after = {"socket": stage.labd.socket, "mode": stat.filemode(info.st_mode),
             "owner": f"{owner_name(info.st_uid)}:{group_name(info.st_gid)}",
             "listened on by": f"pid {listener['pid']}: {listener['command']}", "answer": ping.body.decode()}
    return FlowStep("client → socket → daemon", "connect(AF_UNIX, socket); send GET /_ping", after=after,
                    where="connect", mode=user_mode(), exchanges=[ping],
                    note="the socket is a file; the daemon is the process that listens on it",
                    data={"status": ping.status, "body": ping.body.decode(), **listener})


def look_up_image(stage: Stage) -> FlowStep:
    """Is the image here? labd looks in its own store; a 404 is what sends a client to pull."""
    lookup = stage.wire.exchange("GET", api(f"/images/{stage.reference}/json"))
    message = lookup.json().get("message", "") if lookup.status != 200 else ""
    return FlowStep("is the image local?", f"GET /images/{stage.reference}/json",
                    before={"images in labd's store": stored_images(stage) or "none"},
                    after={"answer": f"{lookup.status} {message}".strip()}, where="lookup", mode=user_mode(),
                    exchanges=[lookup], note=lookup_note(lookup.status),
                    data={"status": lookup.status, "message": message})


def lookup_note(status: int) -> str:
    if status == 200:
        return "here already: labd answered with the image's config, so no pull is needed"
    if status == 404:
        return "not here: the client must ask the daemon to pull it"
    return f"labd answered {status}: neither here nor missing; its message says why"


def pull_image(stage: Stage) -> FlowStep:
    """The daemon pulls from the registry and streams Docker's progress lines back as they happen."""
    repository, _, tag = stage.reference.rpartition(":")
    before = stored_images(stage)
    query = urllib.parse.urlencode({"fromImage": repository, "tag": tag})
    pull = stage.wire.exchange("POST", api(f"/images/create?{query}"))
    events = pull.stream()
    statuses = list(dict.fromkeys(event["status"].split(":")[0] for event in events))
    return FlowStep("pull from the registry", f"POST /images/create?{query}",
                    before={"images in labd's store": before or "none"},
                    after={"images in labd's store": stored_images(stage),
                           "progress": statuses, "progress lines": len(events)},
                    where="pull", mode=user_mode(), exchanges=[pull],
                    note="manifest, config and layer fetched by digest, checked, stored; one line per event",
                    data={"status": pull.status, "events": events, "statuses": statuses,
                          "errors": [e["error"] for e in events if "error" in e]})


def create_container(stage: Stage) -> FlowStep:
    """Create writes down what to run. No namespace, no process yet: those come with start."""
    # `docker run -m 64m`: with a limit to hold, the container gets a cgroup of its own at start. A user to
    # whom no cgroup is delegated could not hold it, and a limit is never accepted and ignored: without one.
    from labcore.kernel.cgroups import can_limit
    host_config = {"NetworkMode": "none", **({"Memory": 64 * 1024 * 1024} if can_limit() else {})}
    body = {"Image": stage.reference, "Cmd": COMMAND, "HostConfig": host_config}
    create = stage.wire.exchange("POST", api("/containers/create?name=labcore-flow"), body)
    if create.status != 201:
        return FlowStep("create", "POST /containers/create", after={"answer": create.body.decode()},
                        exchanges=[create], data={"status": create.status}, where="create")
    stage.container_id = create.json()["Id"]
    record = state_file(stage)
    limit = "-m 64m: a cgroup at start" if "Memory" in host_config else "no -m: no cgroup is delegated to you"
    return FlowStep("create", "POST /containers/create", where="create", mode=user_mode(), exchanges=[create],
                    after={"state.json": str(record.relative_to(stage.home)),
                           "state": json.loads(record.read_text())["state"],
                           "pid": json.loads(record.read_text())["pid"] or "none yet", "limit": limit},
                    note="a record on disk and nothing in the kernel: `docker create` does no more",
                    data={"status": create.status, "id": stage.container_id})


def start_container(stage: Stage) -> FlowStep:
    """Start: the daemon's engine unshares the namespaces, joins a cgroup, pivots into the image, execs pid 1."""
    title, action = "start: pid 1 in new namespaces", "POST /containers/ID/start; then read /proc/PID"
    start = stage.wire.exchange("POST", api(f"/containers/{stage.container_id}/start"))
    if start.status >= 300:                         # the daemon's engine was refused by the kernel
        stage.start_refused = answer_of(start)
        return refused(title, action, stage, [start])
    inspect = stage.wire.exchange("GET", api(f"/containers/{stage.container_id}/json"))
    stage.pid = inspect.json()["State"]["Pid"] if inspect.status == 200 else 0
    host, inside = process_view("self"), process_view(stage.pid)
    differ = [kind for kind in KINDS if host[f"{kind} ns"] != inside[f"{kind} ns"]]
    return FlowStep(title, action.replace("PID", str(stage.pid)),
                    before=host, after=inside, where="start", mode=current_mode(), exchanges=[start, inspect],
                    note=f"before: this notebook; after: the container's pid 1. New: {', '.join(differ)}",
                    data={"status": start.status, "pid": stage.pid, "host": host, "inside": inside,
                          "new namespaces": differ, "pid inside": inside["pid (NSpid: host ... inside)"]
                          .split()[-1]})


def answer_of(exchange: Exchange) -> str:
    """The daemon's words for a failed request: Docker's {"message": ...}."""
    try:
        return f"{exchange.status}: {exchange.json()['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{exchange.status}: {exchange.body.decode(errors='replace')}"


def refused(title: str, action: str, stage: Stage, exchanges: list[Exchange]) -> FlowStep:
    """A step of the flow this host refused: the daemon's answer, explained; the requests that got it."""
    step = hosts.refuse(title, action, NeedsPrivilege(f"the daemon answered {stage.start_refused}"), FlowStep)
    step.exchanges = exchanges
    return step


def read_output(stage: Stage) -> FlowStep:
    """The output, as Docker frames it: stream (1 stdout, 2 stderr), 3 zero bytes, a length, the bytes."""
    if stage.start_refused:
        return refused("output", "GET /containers/ID/logs?follow=1", stage, [])
    logs = stage.wire.exchange("GET", api(f"/containers/{stage.container_id}/logs?stdout=1&stderr=1&follow=1"))
    frames = split_frames(logs.body)
    after = {f"frame {n} ({'stdout' if stream == 1 else 'stderr'})": repr(data.decode())
             for n, (stream, data) in enumerate(frames, 1)}
    return FlowStep("output", "GET /containers/ID/logs?follow=1", after=after or {"frames": "none"},
                    where="output", mode=user_mode(), exchanges=[logs],
                    note="pid 1 wrote into a pipe; the daemon kept it",
                    data={"status": logs.status, "stdout": b"".join(d for s, d in frames if s == 1).decode(),
                          "frames": frames})


def split_frames(body: bytes) -> list[tuple[int, bytes]]:
    """(stream, data) of each frame, read as the client reads them (``labcore.api.client.read_frames``)."""
    import io
    from labcore.api.client import read_frames
    return list(read_frames(io.BytesIO(body).read))


def wait_for_exit(stage: Stage) -> FlowStep:
    """The exit code, then `--rm`: the daemon removes what it kept of the container."""
    if stage.start_refused:
        remove = stage.wire.exchange("DELETE", api(f"/containers/{stage.container_id}"))
        return refused("exit code", "POST /containers/ID/wait; DELETE /containers/ID", stage, [remove])
    directory = Path(state_file(stage)).parent
    wait = stage.wire.exchange("POST", api(f"/containers/{stage.container_id}/wait"))
    alive = os.path.exists(procfs.path(stage.pid))
    remove = stage.wire.exchange("DELETE", api(f"/containers/{stage.container_id}"))
    code = wait.json()["StatusCode"] if wait.status == 200 else None
    return FlowStep("exit code", "POST /containers/ID/wait; DELETE /containers/ID",
                    after={"exit code": code,
                           f"/proc/{stage.pid}": "still there" if alive else "gone: pid 1 exited and was reaped",
                           "container directory": "still there" if directory.exists() else "removed"},
                    where="exit", mode=user_mode(), exchanges=[wait, remove],
                    note="the shim reaped pid 1 and kept its status; the CLI exits with it",
                    data={"status": wait.status, "exit_code": code, "remove_status": remove.status})


def state_file(stage: Stage) -> Path:
    return Path(stage.home, "containers", stage.container_id, "state.json")


def stored_images(stage: Stage) -> list[str]:
    from labcore.image.oci import Store
    return [image.ref for image in Store(Path(stage.home, "images")).list()]


STEPS = [("connect", connect), ("lookup", look_up_image), ("pull", pull_image), ("create", create_container),
         ("start", start_container), ("output", read_output), ("exit", wait_for_exit)]


def run_all(stage: Stage) -> list[FlowStep]:
    return [step(stage) for _, step in STEPS]


# --- the diagram, and the stepper ------------------------------------------------------------------------

NODES = [
    ("client", "client\n(docker CLI, docker SDK, flow.Wire)"),
    ("socket", "Unix socket\n(a file, mode 0660)"),
    ("daemon", "daemon: labd"),
    ("lookup", "image local?\nGET /images/NAME/json"),
    ("pull", "pull\nPOST /images/create"),
    ("create", "create\nPOST /containers/create"),
    ("start", "start: namespaces, cgroup,\nroot, pid 1  (POST .../start)"),
    ("output", "output\nGET .../logs"),
    ("exit", "exit code\nPOST .../wait"),
]
LIT = {"connect": ("client", "socket", "daemon"), "missing": ("pull", "client")}


def flow_dot(current: str | None = None) -> str:
    """The flowchart of `docker run`, with the nodes of step ``current`` (a name in STEPS, or "missing": the
    branch where the registry does not have the image) highlighted."""
    from labcore.lessons.diagrams import Graph
    lit = LIT.get(current, (current,))
    graph = Graph("docker run", rankdir="LR", fontname="Helvetica", nodesep="0.3")
    graph.defaults("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10")
    for name, label in NODES:
        graph.node(name, label, fillcolor="gold" if name in lit else "white", penwidth="2" if name in lit else "1")
    graph.node("registry", "registry\n(docker-registry on 127.0.0.1)", shape="cylinder", fillcolor="lightblue")
    for tail, head in [("client", "socket"), ("socket", "daemon"), ("daemon", "lookup"), ("pull", "create"),
                       ("create", "start"), ("start", "output"), ("output", "exit")]:
        graph.edge(tail, head)
    graph.edge("lookup", "pull", label="404: no")
    graph.edge("lookup", "create", label="200: yes", style="dashed")
    graph.edge("pull", "registry", label="GET /v2/...", style="dashed", dir="both")
    # The branch where the registry has no such image: its 404 travels back to the client (missing_image).
    missing = current == "missing"
    graph.edge("pull", "client", label="no such image: registry 404 manifest unknown\n→ daemon 404 {\"message\"}"
               "\n→ docker: Error response from daemon, exit 125", style="dashed", color="firebrick",
               fontcolor="firebrick", constraint="false", penwidth="2" if missing else "1")
    graph.cluster("labd", "the daemon's process", ["lookup", "pull", "create", "start", "output", "exit"],
                  style="dashed")
    return graph.source()


def stepper(stage: Stage):
    """The same flow behind Back / Next / Run all. It starts with `docker rmi`, so the image is not local."""
    from labcore.lessons.widgets import Stepper
    pages = [("forget the image (docker rmi)", lambda: remove_image(stage), flow_dot(None))]
    pages += [(name, lambda step=step: step(stage), flow_dot(name)) for name, step in STEPS]
    return Stepper(pages)


def remove_image(stage: Stage) -> FlowStep:
    remove = stage.wire.exchange("DELETE", api(f"/images/{stage.reference}"))
    return FlowStep("forget the image", f"DELETE /images/{stage.reference}", mode=user_mode(),
                    after={"images in labd's store": stored_images(stage) or "none"}, exchanges=[remove],
                    data={"status": remove.status})


# --- the same flow in one call ---------------------------------------------------------------------------

def run_with_docker_cli(stage: Stage, *command: str) -> Step:
    """`docker run --rm --network none IMAGE COMMAND` by the real docker CLI, through a ``Tap`` in front of
    labd's socket, so that the requests it sent are shown next to its output and exit status."""
    title = "the docker CLI against labd"
    action = f"DOCKER_HOST=unix://TAP docker run --rm --network none {stage.reference} {shlex.join(command)}"
    key = f"docker run {shlex.join(command)}"
    if not shutil.which("docker"):
        return hosts.refuse(title, action, NotFound("the docker CLI is not installed",
                                                    fix="apt-get install docker.io"), key=key)
    with Tap(stage.labd.socket) as tap:
        environment = {**os.environ, "DOCKER_HOST": f"unix://{tap.path}",
                       "DOCKER_CONFIG": os.path.join(stage.home, "docker-cli")}    # not ~/.docker
        result = subprocess.run(["docker", "run", "--rm", "--network", "none", stage.reference, *command],
                                env=environment, capture_output=True, text=True, timeout=120)
    requests = tap.requests()
    if result.returncode == DOCKER_DAEMON_ERROR and hosts.current().kind == hosts.CONFINED:
        # the daemon could not run it because the kernel refuses it namespaces here; elsewhere a 125 is
        # Docker's own answer, shown as it came
        return hosts.refuse(title, action, NeedsPrivilege(f"docker: {result.stderr.strip()}"), key=key)
    shown = {f"request {n}": re.sub(r"([0-9a-f]{12})[0-9a-f]{52}", r"\1…", line)     # ids cut, for reading
             for n, line in enumerate(requests, 1)}
    return Step(title, action, mode=current_mode(), key=key,
                after={**shown, "stdout": result.stdout, "stderr": result.stderr.strip() or "(none)",
                       "exit status": result.returncode},
                note="Docker's own client, unchanged: labd answered every request it sent",
                data={"stdout": result.stdout, "stderr": result.stderr, "exit_code": result.returncode,
                      "requests": requests})


def run_with_docker_sdk(stage: Stage, *command: str) -> Step:
    """The docker SDK's `containers.run` against labd: Docker's Python client, unchanged, and what it got."""
    import docker
    call = f"client.containers.run({stage.reference!r}, {list(command)!r}, remove=True, network_mode='none')"
    try:
        output = stage.client().containers.run(stage.reference, list(command), remove=True, network_mode="none")
    except docker.errors.APIError as err:               # a 500 from labd: the kernel refused it the container
        return hosts.refuse("the docker SDK against labd", call, NeedsPrivilege(f"docker SDK: {err.explanation}"))
    return Step("the docker SDK against labd", call, mode=current_mode(), after={"returned": output},
                note="the SDK created, started, waited for and removed the container, as `docker run --rm` does",
                data={"output": output})


class Tap:
    """A socket in front of the daemon's that relays both ways, unchanged, and notes each request line and
    each status line: what a client asked, in order (a ``socat -v`` for one lesson)."""

    REQUEST = re.compile(rb"(?m)^(GET|HEAD|POST|PUT|DELETE) (\S+) HTTP/1\.[01]\r$")
    STATUS = re.compile(rb"(?m)^HTTP/1\.[01] (\d{3}) ")

    def __init__(self, target: str):
        from labcore.kernel.journal import Scope
        self.scope, self.seen = Scope(), []         # (connection, "request" | "status", text), in order
        self.target = target                        # the tap goes beside the daemon's socket
        self.path = socket_in(os.path.dirname(target), f"labcore-tap-{secrets.token_hex(4)}.sock", self.scope)
        self.scope.record("file", self.path, "unlink", path=self.path)
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.path)
        self.server.listen(16)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        with contextlib.suppress(OSError):                  # the listening socket was closed: done
            for number in itertools.count():
                client, _ = self.server.accept()
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.target)
                threading.Thread(target=self.relay, args=(client, upstream, number, self.REQUEST), daemon=True).start()
                threading.Thread(target=self.relay, args=(upstream, client, number, self.STATUS), daemon=True).start()

    def relay(self, source, sink, number: int, pattern) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self.seen += [(number, match.group(0).decode().strip()) for match in pattern.finditer(data)]
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)                   # pass the end on: the other side reads EOF

    def requests(self) -> list[str]:
        """"METHOD /path → status" per request, in the order they were sent; a connection answers in order."""
        answers = {}
        for number, line in self.seen:
            if line.startswith("HTTP/"):
                answers.setdefault(number, []).append(line.split()[1])
        lines = []
        for number, line in self.seen:
            if not line.startswith("HTTP/"):
                status = answers.get(number, []).pop(0) if answers.get(number) else "?"
                lines.append(f"{urllib.parse.unquote(' '.join(line.split()[:2]))} → {status}")
        return lines

    def __enter__(self) -> "Tap":
        return self

    def __exit__(self, *exc) -> None:
        self.server.close()
        self.scope.close()


# --- `labcore run` in one cell, for the notebooks after this one ------------------------------------------

def run_step(spec: container.Spec) -> Step:
    """`labcore run` as a notebook cell shows it (notebooks 05 and 06): a Step with the command's output and exit
    code, in the mode it ran; where this host refuses what a container needs (namespaces), the refused Step."""
    flags = [flag for flag, on in (("--rm", spec.rm), (f"--hostname {spec.hostname}", spec.hostname),
                                   (f"--network {spec.network}", spec.network != "bridge")) if on]
    words = [f"'{arg}'" if " " in arg else arg for arg in spec.cmd]
    title, action = f"a {spec.image} container runs {spec.cmd[0]}", " ".join(["labcore run", *flags, spec.image,
                                                                             *words])
    host = hosts.current()
    try:
        if host.kind == hosts.CONFINED:       # before the image is looked up: nothing could run it here
            raise NeedsPrivilege(f"unshare(CLONE_NEWUSER) was refused: {host.userns_refused}")
        result = container.run(spec)
    except (NeedsPrivilege, NotSupportedHere) as err:
        return hosts.refuse(title, action, err, key=action)
    text = lambda data: (data or b"").decode(errors="replace").rstrip("\n")   # noqa: E731
    return Step(title, action, after={"stdout": text(result.stdout), "stderr": text(result.stderr) or "(none)",
                                      "exit code": result.exit_code}, mode=current_mode(), key=action,
                data={"id": result.id, "result": result, "exit_code": result.exit_code})


# --- the other branch: the registry does not have the image ----------------------------------------------

MISSING_TAG = "missing"                 # a tag never pushed to the stage's registry


def missing_image(stage: Stage, tag: str = MISSING_TAG) -> FlowStep:
    """The flowchart's other branch: the image is in no store, the registry's or the daemon's. The registry
    answers the manifest request 404 MANIFEST_UNKNOWN; the daemon asks for the manifest before it writes a byte
    of its answer, so it answers 404 too, in Docker's {"message": ...}; the docker CLI prints "Error response
    from daemon" and exits 125. (An error after the first progress line travels in the 200's stream instead.)"""
    repository = stage.reference.rpartition(":")[0]
    registry = registry_exchange(stage, f"/v2/{IMAGE.partition(':')[0]}/manifests/{tag}")
    query = urllib.parse.urlencode({"fromImage": repository, "tag": tag})
    before = stored_images(stage)
    pull = stage.wire.exchange("POST", api(f"/images/create?{query}"))
    cli = docker_cli_run(stage, f"{repository}:{tag}")
    after = {"the registry answered labd": f"{registry.status} {registry_error(registry)}",
             "labd answered the client": answer_of(pull), "images in labd's store": stored_images(stage) or "none",
             **cli}
    return FlowStep("no such image in the registry", f"GET /v2/.../manifests/{tag} (to the registry); POST "
                    f"/images/create?{query} (to labd); docker run {repository}:{tag}",
                    before={"images in labd's store": before or "none"}, after=after, where="missing", mode=user_mode(),
                    exchanges=[registry, pull], key="no such image in the registry",
                    data={"registry_status": registry.status, "registry_error": registry_error(registry),
                          "status": pull.status, "answer": answer_of(pull),
                          "cli_stderr": cli.get("docker run: stderr"), "cli_exit_code": cli.get("docker run: exit")},
                    note="the registry's 404 became the daemon's 404 and the client's error: nothing was stored")


def registry_exchange(stage: Stage, target: str) -> Exchange:
    """The request labd's pull sends to the registry (labcore.image.registry), made here on its own over TCP."""
    from labcore.image.registry import MANIFEST_TYPES
    host, _, port = stage.registry.address.rpartition(":")
    request = (f"GET {target} HTTP/1.1\r\nHost: {stage.registry.address}\r\nAccept: {', '.join(MANIFEST_TYPES)}"
               "\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        response = b"".join(iter(lambda: connection.recv(65536), b""))
    status, body = parse_response(response)
    return Exchange(request, response, status, body)


def registry_error(exchange: Exchange) -> str:
    """The distribution spec's error body: {"errors": [{"code", "message", "detail"}]}."""
    try:
        return "; ".join(f"{e['code']}: {e['message']}" for e in exchange.json()["errors"])
    except (ValueError, KeyError, TypeError):
        return exchange.body.decode(errors="replace")


def docker_cli_run(stage: Stage, reference: str) -> dict:
    """`docker run REFERENCE` by the real CLI through a Tap: the requests it sent, what it printed, its status."""
    if not shutil.which("docker"):
        return {"docker run (the CLI)": "not run: the docker CLI is not installed (apt-get install docker.io)"}
    with Tap(stage.labd.socket) as tap:
        environment = {**os.environ, "DOCKER_HOST": f"unix://{tap.path}",
                       "DOCKER_CONFIG": os.path.join(stage.home, "docker-cli")}    # not ~/.docker
        result = subprocess.run(["docker", "run", "--rm", "--network", "none", reference], env=environment,
                                capture_output=True, text=True, timeout=120)
    return {"docker run: requests": tap.requests(), "docker run: stderr": result.stderr.strip(),
            "docker run: exit": result.returncode}
