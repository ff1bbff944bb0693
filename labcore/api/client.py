"""The client: how `labcore ps`, `logs`, `exec`... reach an engine, in this process or through labd.

`docker ps` does no container work itself. It is an HTTP client: it sends ``GET /containers/json`` over the
Unix socket named by ``DOCKER_HOST`` (default /var/run/docker.sock) and prints the JSON it gets back. The lab
works the same way when ``--host unix:///path`` or ``LABCORE_HOST`` is given; without one it calls
``labcore.runtime.engine`` in this process, as if the CLI and the daemon were one program. Both backends here answer
the same methods with the same Docker-shaped values, so each verb's code is the same for both:

    Local(engine)      engine.create, engine.start ...     summaries from labcore.api.routes
    Remote(socket)     POST /containers/create, ...        the same summaries, as labd sends them

What travels on the socket (docs.docker.com/reference/api/engine):

    JSON           one body, with Content-Length
    chunked        Transfer-Encoding: chunked (RFC 9112 §7.1): "<hex size>\\r\\n<data>\\r\\n" ... "0\\r\\n\\r\\n";
                   pull progress (one JSON object a line) and logs arrive as they are made
    frames         stdout and stderr multiplexed in one stream: a byte for the stream (1 or 2), three
                   zero bytes, the length as a big-endian uint32, the data
    101 hijack     exec start answers "101 UPGRADED" and the connection stops being HTTP: raw frames
                   follow until the process ends and the daemon closes the socket

An error answer is Docker's ``{"message": ...}`` with a status: 404 becomes NotFound, 409
InvalidTransition, 400 BadInput, so a verb handles a daemon's refusal as it handles the engine's.

Next: ``labcore.cli.run`` with ``-d`` or ``--host``: create, start, logs, wait, remove as separate requests.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator     # not typing: one import fewer on `labcore run`'s path

from labcore.errors import BadInput, InvalidTransition, LabError, NotFound, from_oserror

ENVIRONMENT = "LABCORE_HOST"            # as DOCKER_HOST names the daemon for `docker`


# --- choosing the backend ---------------------------------------------------------------------------------

def host_of(args) -> str | None:
    """``--host`` first, then $LABCORE_HOST; None means "no daemon: call the engine in this process"."""
    return getattr(args, "host", None) or os.environ.get(ENVIRONMENT) or None


def local_daemon() -> str | None:
    """This user's labd, when one runs: its socket (``<state dir>/labd.sock``, labd's default) takes a connect(2).
    A socket file left by a labd that died refuses it (ECONNREFUSED): then None, and the engine runs here."""
    import socket
    from labcore import paths
    path = paths.home() / "labd.sock"
    if not path.is_socket():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return None
    return f"unix://{path}"


def connect(args=None):
    """The backend the verbs talk to: Remote for a host, Local otherwise."""
    host = host_of(args)
    return Remote(host) if host else Local()


# --- the wire formats, on their own (unit tests feed them canned bytes) ------------------------------------

def read_frames(read: Callable[[int], bytes]) -> Iterator[tuple[int, bytes]]:
    """(stream, data) from Docker's multiplexed framing, until the end of the stream."""
    from labcore.api.schema import FRAME    # Docker's 8-byte frame header: labd writes it, the client reads it
    while len(header := read_exactly(read, FRAME.size)) == FRAME.size:
        stream, size = FRAME.unpack(header)
        yield stream, read_exactly(read, size)


def read_exactly(read: Callable[[int], bytes], size: int) -> bytes:
    """``size`` bytes, or fewer only at the end: a frame may arrive split across reads and chunks."""
    data = b""
    while len(data) < size and (more := read(size - len(data))):
        data += more
    return data


def json_lines(lines: Iterator[bytes]) -> Iterator[dict]:
    """Progress events, one JSON object a line; an ``error`` event (sent after the 200) is raised."""
    for line in lines:
        if not line.strip():
            continue
        event = json.loads(line)
        if "error" in event:
            raise LabError(event["error"])
        yield event


def error_for(status: int, body: bytes) -> LabError:
    """Docker's error answer as the lab's exception: the same class the engine would have raised."""
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip() or f"HTTP {status}"
    cls = {404: NotFound, 409: InvalidTransition, 400: BadInput}.get(status, LabError)
    return cls(message)


# --- through labd -----------------------------------------------------------------------------------------

def connect_socket(host: str):
    """A connected socket to labd: ``unix:///path`` (AF_UNIX, as DOCKER_HOST's default) or ``tcp://HOST:PORT``."""
    import socket
    if host.startswith("unix://"):
        path = host.removeprefix("unix://")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as err:
            sock.close()
            raise from_oserror(err, "connect", path, fix="is labd running? start it with `labcore "
                               f"daemon --socket {path}`") from err
        return sock
    address, _, port = host.removeprefix("tcp://").rpartition(":")
    return socket.create_connection((address, int(port)))


class Remote:
    """The Docker Engine API over ``unix:///path`` (or ``tcp://127.0.0.1:PORT``): one connection a request."""

    def __init__(self, host: str):
        self.host = host
        if not host.startswith(("unix://", "tcp://")):
            raise BadInput(f"invalid --host {host!r}", fix="use unix:///path/to/labd.sock or tcp://127.0.0.1:PORT")

    @contextlib.contextmanager
    def request(self, method: str, path: str, body=None, headers=None, **query):
        """Send one request; yield the answer to read or stream (``labcore.api.wire``), or raise its error."""
        from urllib.parse import quote, urlencode
        from labcore.api import wire
        url = "/v1.45" + quote(path) + ("?" + urlencode(query, doseq=True) if query else "")
        if body is not None and not hasattr(body, "read"):      # a file (a tar) goes as it is, chunked
            body = json.dumps(body).encode()
        with connect_socket(self.host) as sock:
            answer = wire.exchange(sock, method, url, {"Content-Type": "application/json", "Connection": "close",
                                                       **(headers or {})}, body)
            try:
                if answer.status >= 400:
                    raise error_for(answer.status, answer.read())
                yield answer
            finally:
                answer.fp.close()                    # the socket's file holds the fd open past sock.close()

    def call(self, method: str, path: str, body=None, **query):
        """A request whose answer is one JSON body (or none: 204, 304)."""
        with self.request(method, path, body, **query) as response:
            data = response.read()
        return json.loads(data) if data else None

    # The same methods as Local, in the order `docker run` uses them.
    def create(self, spec) -> str:
        return self.call("POST", "/containers/create", body_from_spec(spec), name=spec.name)["Id"]

    def start(self, ref: str) -> None:
        self.call("POST", f"/containers/{ref}/start")

    def logs(self, ref: str, follow: bool = False) -> Iterator[tuple[int, bytes]]:
        with self.request("GET", f"/containers/{ref}/logs", stdout=1, stderr=1, follow=int(follow)) as response:
            if response.getheader("Content-Type", "").endswith("multiplexed-stream"):
                yield from read_frames(response.read)
            else:                               # a -t container: one raw stream, as a terminal mixes them
                while data := response.read1(65536):
                    yield 1, data

    def wait(self, ref: str) -> int:
        answer = self.call("POST", f"/containers/{ref}/wait")
        if answer.get("Error"):                 # an error after the 200 travels in the body
            raise LabError(answer["Error"]["Message"])
        return answer["StatusCode"]

    def kill(self, ref: str, signal: str = "KILL") -> None:
        self.call("POST", f"/containers/{ref}/kill", signal=signal)

    def stop(self, ref: str, timeout: float = 10) -> None:
        self.call("POST", f"/containers/{ref}/stop", t=int(timeout))

    def remove(self, ref: str, force: bool = False) -> None:
        self.call("DELETE", f"/containers/{ref}", force=int(force))

    def containers(self, everything: bool = False) -> list[dict]:
        return self.call("GET", "/containers/json", all=int(everything))

    def inspect(self, ref: str) -> dict:
        return self.call("GET", f"/containers/{ref}/json")

    def exec_create(self, ref: str, cmd: list[str], env=(), workdir=None, user=None) -> str:
        body = {"Cmd": cmd, "Env": list(env), "WorkingDir": workdir or "", "User": user or "",
                "AttachStdout": True, "AttachStderr": True}
        return self.call("POST", f"/containers/{ref}/exec", body)["Id"]

    def exec_start(self, exec_id: str, interactive: bool = False) -> Iterator[tuple[int, bytes]]:
        """The 101 hijack: after the headers the socket carries raw frames, not HTTP, until it closes."""
        if interactive:
            raise BadInput("exec -i through labd: labd's exec start sends output but reads no input",
                           fix="leave out -i, or run without --host/LABCORE_HOST")
        with self.request("POST", f"/exec/{exec_id}/start", {"Detach": False, "Tty": False},
                          headers={"Connection": "Upgrade", "Upgrade": "tcp"}) as response:
            yield from read_frames(response.fp.read)

    def exec_inspect(self, exec_id: str) -> dict:
        return self.call("GET", f"/exec/{exec_id}/json")

    def pull(self, ref: str) -> Iterator[dict]:
        with self.request("POST", "/images/create", fromImage=ref) as response:
            yield from json_lines(iter(response.readline, b""))

    def images(self) -> list[dict]:
        return self.call("GET", "/images/json")

    def image_inspect(self, ref: str) -> dict:
        return self.call("GET", f"/images/{ref}/json")

    def image_remove(self, ref: str, force: bool = False) -> list[str]:
        """`docker rmi`'s lines: "Untagged: NAME", then "Deleted: DIGEST" once the last name has gone."""
        return [f"{key}: {value}" for line in self.call("DELETE", f"/images/{ref}", force=int(force))
                for key, value in line.items()]

    def image_tag(self, source: str, target: str) -> None:
        repo, tag = split_tag(target)
        self.call("POST", f"/images/{source}/tag", repo=repo, **({"tag": tag} if tag else {}))

    def image_load(self, tar) -> list[str]:
        """`docker load`: the tar (a path or a file object) streamed up, chunked; "Loaded image: NAME" lines."""
        if isinstance(tar, str):
            if os.path.isdir(tar):
                raise BadInput(f"{tar} is a directory: labd loads a tar archive",
                               fix=f"tar -C {tar} -cf - . | labcore load")
            with open(tar, "rb") as file:
                return self.image_load(file)
        with self.request("POST", "/images/load", tar, headers={"Content-Type": "application/x-tar"}) as answer:
            return [event["stream"].rstrip("\n") for event in json_lines(iter(answer.readline, b""))
                    if "stream" in event]

    def image_save(self, names: list[str], out) -> None:
        """`docker save`: the tar streamed down into ``out`` (a path or a file object)."""
        if isinstance(out, str):
            with open(out, "wb") as file:
                return self.image_save(names, file)
        with self.request("GET", "/images/get", names=names) as answer:
            while chunk := answer.read(1 << 16):
                out.write(chunk)

    def image_build(self, context: str, labfile: str | None = None, tag: str | None = None) -> None:
        """`docker build`: the context goes up as a tar, Docker's {"stream": ...} lines come back as they are
        made. A Labfile outside the context travels in the tar under a name of its own, as the docker CLI does."""
        import tempfile
        with tempfile.TemporaryFile(prefix="labcore-context-") as tar:
            dockerfile = context_tar(context, labfile, tar)
            query = {"dockerfile": dockerfile, **({"t": tag} if tag else {})}
            with self.request("POST", "/build", tar, headers={"Content-Type": "application/x-tar"},
                              **query) as answer:
                for event in json_lines(iter(answer.readline, b"")):
                    print(event.get("stream", ""), end="", flush=True)

    def container_commit(self, ref: str, reference: str, comment: str = "") -> str:
        repo, tag = split_tag(reference)
        return self.call("POST", "/commit", container=ref, repo=repo, comment=comment,
                         **({"tag": tag} if tag else {}))["Id"]

    def network_create(self, name: str, subnet=None, labels=None, options=None, driver="bridge") -> str:
        pools = [{"Subnet": subnet}] if subnet else []
        body = {"Name": name, "CheckDuplicate": True, "Driver": driver, "Labels": labels or {},
                "Options": options or {}, "IPAM": {"Driver": "default", "Config": pools}}
        return self.call("POST", "/networks/create", body)["Id"]

    def networks(self) -> list[dict]:
        return self.call("GET", "/networks")

    def network_inspect(self, ref: str) -> dict:
        return self.call("GET", f"/networks/{ref}")

    def network_remove(self, ref: str) -> None:
        self.call("DELETE", f"/networks/{ref}")

    def network_connect(self, ref: str, container: str, aliases=()) -> None:
        self.call("POST", f"/networks/{ref}/connect", {"Container": container,
                                                       "EndpointConfig": {"Aliases": list(aliases) or None}})

    def network_disconnect(self, ref: str, container: str) -> None:
        self.call("POST", f"/networks/{ref}/disconnect", {"Container": container})

    def network_prune(self) -> list[str]:
        return self.call("POST", "/networks/prune")["NetworksDeleted"] or []


def split_tag(reference: str) -> tuple[str, str]:
    """NAME[:TAG] as the API's ?repo= and ?tag= (a ':' in a registry's host:port is not a tag's)."""
    name, colon, tag = reference.rpartition(":")
    return (name, tag) if colon and "/" not in tag else (reference, "")


def context_tar(context: str, labfile: str | None, out) -> str:
    """The build context as a tar written to ``out``; the Labfile's name inside it, for ?dockerfile=."""
    import tarfile
    context = os.path.abspath(context)
    if not os.path.isdir(context):
        raise BadInput(f"unable to prepare context: path {context!r} not found", fix="give a directory")
    labfile = os.path.abspath(labfile) if labfile else os.path.join(context, "Labfile")
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.add(context, ".")
        inside = os.path.relpath(labfile, context)
        if inside.startswith(".."):                 # outside the context: it travels under a name of its own
            inside = ".labcore-labfile"
            tar.add(labfile, inside)
    out.seek(0)
    return inside


def body_from_spec(spec) -> dict:
    """`labcore run`'s Spec as Docker's ContainerConfig: what `docker create` sends to the daemon."""
    host = {"AutoRemove": spec.rm, "NetworkMode": spec.network, "Binds": spec.volumes,
            "PortBindings": port_bindings(spec.publish), "GroupAdd": spec.group_add, "Init": spec.init,
            "Tmpfs": dict((text.partition(":")[0], text.partition(":")[2]) for text in spec.tmpfs),
            "PidMode": spec.pid, "UTSMode": spec.uts, **limits_host_config(spec.limits),
            **security_host_config(spec)}
    return {"Image": spec.image, "Cmd": spec.cmd, "Entrypoint": spec.entrypoint, "Env": spec.env,
            "WorkingDir": spec.workdir or "", "User": spec.user or "", "Hostname": spec.hostname or "",
            "Tty": spec.tty, "OpenStdin": spec.interactive, "MacAddress": spec.mac_address or "", "HostConfig": host,
            **({"NetworkingConfig": {"EndpointsConfig": spec.endpoints}} if spec.endpoints else {})}


def limits_host_config(flags: dict) -> dict:
    """The limit flags as HostConfig's fields, parsed as the engine parses them. No flag, no field (Docker reads
    an absent one as 0, unlimited), and no parser to import: on `labcore run`'s thin path the cgroup modules
    would cost more to import than the whole request costs to send."""
    if not flags:
        return {}
    from labcore.kernel.cgroups.limits import parse_run_limits
    limits = parse_run_limits(**flags)
    host = {"Memory": limits.memory or 0, "CpuShares": limits.cpu_shares or 0,
            "NanoCpus": int((limits.cpus or 0) * 1e9), "PidsLimit": limits.pids or 0,
            "MemorySwap": limits.memory_swap or 0,
            "BlkioDeviceReadBps": [{"Path": t.device, "Rate": t.bps} for t in limits.read_bps],
            "BlkioDeviceWriteBps": [{"Path": t.device, "Rate": t.bps} for t in limits.write_bps],
            "DeviceCgroupRules": list(flags.get("device_cgroup_rule") or [])}
    if limits.swappiness is not None:
        host["MemorySwappiness"] = limits.swappiness
    return host


def security_host_config(spec) -> dict:
    """The confinement flags as Docker's HostConfig fields; --device as {PathOnHost, PathInContainer,
    CgroupPermissions}, the docker CLI's shape."""
    devices = []
    for text in spec.devices:
        host, _, rest = text.partition(":")
        target, _, permissions = rest.partition(":")
        if target and set(target) <= set("rwm"):
            target, permissions = "", target
        devices.append({"PathOnHost": host, "PathInContainer": target or host,
                        "CgroupPermissions": permissions or "rwm"})
    return {"Privileged": spec.privileged, "CapAdd": spec.cap_add, "CapDrop": spec.cap_drop,
            "SecurityOpt": spec.security_opt, "ReadonlyRootfs": spec.read_only, "Devices": devices}


def port_bindings(published: list[str]) -> dict:
    """`-p 127.0.0.1:8080:80` as HostConfig.PortBindings: {"80/tcp": [{"HostIp": ..., "HostPort": "8080"}]}."""
    bindings: dict = {}
    if not published:
        return bindings
    from labcore.kernel.network import parse_publish
    for mapping in map(parse_publish, published):
        bindings.setdefault(f"{mapping.container_port}/{mapping.protocol}", []).append(
            {"HostIp": mapping.host_ip, "HostPort": str(mapping.host_port or "")})
    return bindings


# --- in this process --------------------------------------------------------------------------------------

class Local:
    """The engine called directly; answers shaped as labd's, so the verbs cannot tell the difference."""

    def __init__(self):
        from labcore.runtime import engine
        self.engine = engine

    def id_of(self, ref: str) -> str:
        return self.engine.find(ref).id

    def create(self, spec) -> str:
        return self.engine.create(spec).id

    def start(self, ref: str) -> None:
        from labcore.runtime.lifecycle import State
        if self.engine.find(ref).state is not State.RUNNING:      # Docker: starting a running one is no error
            self.engine.start(self.id_of(ref))

    def logs(self, ref: str, follow: bool = False) -> Iterator[tuple[int, bytes]]:
        return self.engine.logs(self.id_of(ref), follow)

    def wait(self, ref: str) -> int:
        return self.engine.wait(self.id_of(ref)).exit_code

    def kill(self, ref: str, signal: str = "KILL") -> None:
        from labcore.api.schema import signal_number
        self.engine.kill(self.id_of(ref), signal_number(signal))

    def stop(self, ref: str, timeout: float = 10) -> None:
        from labcore.runtime.lifecycle import State
        record = self.engine.find(ref)
        if record.state is State.RUNNING:                          # Docker: stopping a stopped one is no error
            self.engine.stop(record.id, timeout)

    def remove(self, ref: str, force: bool = False) -> None:
        self.engine.remove(self.id_of(ref), force)

    def containers(self, everything: bool = False) -> list[dict]:
        from labcore.api.routes import container_summary
        return [container_summary(record) for record in self.engine.containers(everything)]

    def inspect(self, ref: str) -> dict:
        from labcore.api.routes import container_inspect
        return container_inspect(self.engine.find(ref))

    def exec_create(self, ref: str, cmd: list[str], env=(), workdir=None, user=None) -> str:
        return self.engine.exec_create(self.id_of(ref), cmd, env, workdir, user)

    def exec_start(self, exec_id: str, interactive: bool = False) -> Iterator[tuple[int, bytes]]:
        return self.engine.exec_start(exec_id, interactive=interactive)

    def exec_inspect(self, exec_id: str) -> dict:
        state = self.engine.exec_inspect(exec_id)
        return {"ID": exec_id, "Running": state["running"], "ExitCode": state["exit_code"],
                "ContainerID": state["container"]}

    def pull(self, ref: str) -> Iterator[dict]:
        return self.engine.pull(ref)

    def images(self) -> list[dict]:
        from labcore.api.routes import image_summaries
        return image_summaries()

    def image_inspect(self, ref: str) -> dict:
        from labcore.api.routes import image_inspect
        return image_inspect(self.engine.image(ref))

    def image_remove(self, ref: str, force: bool = False) -> list[str]:
        from labcore.image.oci import Store
        from labcore.runtime import images
        return images.remove(Store(), ref, force)

    def image_tag(self, source: str, target: str) -> None:
        from labcore.image.oci import Store
        from labcore.runtime import images
        images.tag(Store(), source, target)

    def image_load(self, tar) -> list[str]:
        from labcore.image import archive
        return archive.load(tar)

    def image_save(self, names: list[str], out) -> None:
        from labcore.image import archive
        archive.save(names, out)

    def image_build(self, context: str, labfile: str | None = None, tag: str | None = None) -> None:
        from labcore.runtime import build
        build.build(context, labfile, tag, echo=True)

    def container_commit(self, ref: str, reference: str, comment: str = "") -> str:
        from labcore.image.oci import split_reference
        from labcore.runtime import build
        return build.commit_image(self.engine.find(ref), *split_reference(reference), comment).id

    def network_create(self, name: str, subnet=None, labels=None, options=None, driver="bridge") -> str:
        from labcore.runtime import networks
        return networks.create(name, labels, options, subnet, driver=driver).id

    def networks(self) -> list[dict]:
        from labcore.api.routes import network_inspect
        from labcore.runtime import networks
        return [network_inspect(record, containers=False) for record in networks.all_networks()]

    def network_inspect(self, ref: str) -> dict:
        from labcore.api.routes import network_inspect
        from labcore.runtime import networks
        return network_inspect(networks.find(ref))

    def network_remove(self, ref: str) -> None:
        from labcore.runtime import networks
        networks.remove(ref)

    def network_connect(self, ref: str, container: str, aliases=()) -> None:
        from labcore.runtime import networks
        networks.connect(self.id_of(container), networks.find(ref), {"Aliases": list(aliases)})

    def network_disconnect(self, ref: str, container: str) -> None:
        from labcore.runtime import networks
        networks.disconnect(self.id_of(container), networks.find(ref))

    def network_prune(self) -> list[str]:
        from labcore.runtime import networks
        return networks.prune()


# --- what the verbs print ---------------------------------------------------------------------------------

def report(error: LabError) -> None:
    """Docker's CLI wording: "Error: No such container: x", else "Error response from daemon: ..."."""
    prefix = "Error" if isinstance(error, NotFound) else "Error response from daemon"
    print(f"{prefix}: {error}", file=sys.stderr)


def for_each(refs: list[str], action: Callable[[str], None], echo: bool = True) -> int:
    """Do ``action`` to each container; as `docker stop a b` does, go on after a failure and exit 1."""
    status = 0
    for ref in refs:
        try:
            action(ref)
        except LabError as error:
            report(error)
            status = 1
        else:
            if echo:
                print(ref, flush=True)
    return status


def write(stream: int, data: bytes) -> None:
    """A frame to our stdout (1) or stderr (2), at once: `logs -f` shows each line as it comes."""
    out = sys.stdout if stream == 1 else sys.stderr
    out.buffer.write(data)
    out.buffer.flush()
