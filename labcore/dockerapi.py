"""The Docker Engine API, as labd answers it: Docker's JSON in, the lab's engine underneath, Docker's JSON out.

Each route is the Engine API operation of the same name (docs.docker.com/reference/api/engine, v1.45), reduced to
the fields the docker SDK and CLI use. What `docker run` sends, in order:

    POST /containers/create        → 201 {"Id"}; 404 "No such image: busybox:latest" sends the client to pull
    POST /images/create?fromImage  → a stream of progress lines, then the image is local
    POST /containers/{id}/attach   → 101, then the output (the docker CLI; the SDK reads the logs instead)
    POST /containers/{id}/start    → 204
    GET  /containers/{id}/logs     → stdout and stderr, multiplexed in 8-byte-header frames
    POST /containers/{id}/wait     → {"StatusCode": 0} (the CLI posts it before start: ?condition=next-exit)
    DELETE /containers/{id}        → 204

Container output travels in Docker's multiplexed framing: one byte for the stream (1 stdout, 2 stderr),
three zero bytes, the payload's length as a big-endian uint32, the payload.
"""
from __future__ import annotations

import json
import os
import platform
import re
import signal
import struct
import time
from datetime import datetime, timezone

from labcore import __version__, daemon, engine
from labcore.container import Spec
from labcore.daemon import ApiError, Request, Stream, route
from labcore.errors import BadInput, LabError
from labcore.lifecycle import Record, State
from labcore.units import human_duration


def rfc3339(seconds: float) -> str:
    if not seconds:
        return "0001-01-01T00:00:00Z"          # Docker's zero time, for "never started"
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def epoch(rfc3339_text: str) -> float:
    """An OCI config's "created" (RFC 3339, maybe with nanoseconds) as seconds since 1970."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339_text.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


# --- the daemon itself ------------------------------------------------------------------------------------

@route("GET", "/_ping")
@route("HEAD", "/_ping")
def ping(request: Request):
    return "OK"


@route("GET", "/version")
def version(request: Request):
    return {"Version": f"labcore-{__version__}", "ApiVersion": daemon.API_VERSION,
            "MinAPIVersion": daemon.MIN_API_VERSION, "Os": "linux", "Arch": engine.architecture(),
            "KernelVersion": platform.release(), "Components": [{"Name": "labd", "Version": __version__}]}


@route("GET", "/info")
def info(request: Request):
    records = engine.containers(everything=True)
    count = lambda state: sum(1 for r in records if r.state is state)  # noqa: E731
    return {"ID": "labd", "Name": platform.node(), "Containers": len(records),
            "ContainersRunning": count(State.RUNNING), "ContainersPaused": count(State.PAUSED),
            "ContainersStopped": count(State.EXITED), "Images": len(engine.images()),
            "Driver": "overlay", "CgroupVersion": engine.cgroup_version(), "OperatingSystem": "labcore",
            "OSType": "linux", "Architecture": platform.machine(), "KernelVersion": platform.release(),
            "NCPU": os.cpu_count(), "ServerVersion": __version__, "DockerRootDir": str(engine.home())}


# --- images -----------------------------------------------------------------------------------------------

def tags_of(image_id: str) -> list[str]:
    """Every name:tag pointing at one image ID: Docker lists and inspects images by ID, not by name."""
    return [f"{i.name}:{i.tag}" for i in engine.images() if i.id == image_id and i.name != "<none>"]


def image_summary(image) -> dict:
    return {"Id": image.id, "ParentId": "", "RepoTags": tags_of(image.id), "RepoDigests": [],
            "Created": int(epoch(image.created)), "Size": image.size, "SharedSize": -1, "Labels": {},
            "Containers": -1}


def image_inspect(image) -> dict:
    return {"Id": image.id, "RepoTags": tags_of(image.id), "RepoDigests": [],
            "Created": image.created, "Architecture": engine.architecture(), "Os": "linux",
            "Size": image.size, "Config": image.config,
            "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]}}


@route("GET", "/images/json")
def list_images(request: Request):
    unique = {image.id: image for image in reversed(engine.images())}     # one row per ID, as Docker
    return [image_summary(image) for image in reversed(unique.values())]


@route("GET", "/images/{name*}/json")
def inspect_image(request: Request, name: str):
    return image_inspect(engine.image(name))


@route("POST", "/images/create")
def pull_image(request: Request):
    reference = request.query.get("fromImage", "")
    tag = request.query.get("tag")
    if tag:
        reference += ("@" if tag.startswith("sha256:") else ":") + tag
    return Stream((json.dumps(event).encode() + b"\r\n" for event in engine.pull(reference)),
                  "application/json")


@route("DELETE", "/images/{name*}")
def remove_image(request: Request, name: str):
    """`docker rmi`: [{"Untagged": name}], and {"Deleted": ...} once the last name has gone (`labcore rmi`)."""
    from labcore.cli import rmi
    from labcore.images import Store
    lines = rmi.remove(Store(), name, force=request.flag("force"))
    return [dict([line.split(": ", 1)]) for line in lines]


# --- containers -------------------------------------------------------------------------------------------

def spec_from_body(body: dict, name: str) -> Spec:
    """Docker's ContainerConfig (with its HostConfig) as the lab's Spec. Unknown fields are ignored, as the
    Engine ignores fields of newer API versions."""
    def as_list(value):
        return [value] if isinstance(value, str) else value
    if not body.get("Image"):
        raise BadInput("Config cannot be empty in order to create a container",
                       fix='send {"Image": "busybox", "Cmd": [...]}')
    host = body.get("HostConfig") or {}
    return Spec(image=body["Image"], cmd=as_list(body.get("Cmd")) or None,
                entrypoint=as_list(body.get("Entrypoint")), env=body.get("Env") or [],
                workdir=body.get("WorkingDir") or None, user=body.get("User") or None,
                hostname=body.get("Hostname") or None, tty=bool(body.get("Tty")),
                interactive=bool(body.get("OpenStdin")), name=name.lstrip("/"),
                rm=bool(host.get("AutoRemove")), limits=engine.limits_from_host_config(host),
                network="none" if host.get("NetworkMode") == "none" else "bridge",
                publish=publish_from_bindings(host.get("PortBindings") or {}),
                volumes=list(host.get("Binds") or []),        # `-v /:/host:ro` arrives as Binds
                **security_from_host_config(host))


def security_from_host_config(host: dict) -> dict:
    """HostConfig's confinement fields as the Spec's: Privileged, CapAdd, CapDrop, SecurityOpt,
    ReadonlyRootfs, and Devices ({PathOnHost, PathInContainer, CgroupPermissions}) as `--device` values."""
    devices = [f"{d.get('PathOnHost', '')}:{d.get('PathInContainer') or d.get('PathOnHost', '')}:"
               f"{d.get('CgroupPermissions') or 'rwm'}" for d in host.get("Devices") or []]
    return {"privileged": bool(host.get("Privileged")), "cap_add": list(host.get("CapAdd") or []),
            "cap_drop": list(host.get("CapDrop") or []), "security_opt": list(host.get("SecurityOpt") or []),
            "read_only": bool(host.get("ReadonlyRootfs")), "devices": devices}


def inspect_security(spec: dict) -> dict:
    """The confinement part of `docker inspect`'s HostConfig, from the stored spec."""
    return {"Privileged": spec.get("privileged", False), "CapAdd": spec.get("cap_add") or None,
            "CapDrop": spec.get("cap_drop") or None, "SecurityOpt": spec.get("security_opt") or None,
            "ReadonlyRootfs": spec.get("read_only", False)}


def publish_from_bindings(bindings: dict) -> list[str]:
    """HostConfig.PortBindings, {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}, as `-p` values."""
    published = []
    for container_port, hosts in bindings.items():
        for host in hosts or [{}]:
            address = host.get("HostIp") or "127.0.0.1"
            published.append(f"{address}:{host.get('HostPort') or 0}:{container_port}")
    return published


@route("POST", "/containers/create")
def create_container(request: Request):
    record = engine.create(spec_from_body(request.json(), request.query.get("name", "")))
    return 201, {"Id": record.id, "Warnings": []}


def status_text(record: Record) -> str:
    """`docker ps`'s STATUS column: "Up 3 seconds", "Exited (0) 2 seconds ago", "Created"."""
    if record.state is State.RUNNING:
        return f"Up {human_duration(time.time() - record.started)}"
    if record.state is State.PAUSED:
        return f"Up {human_duration(time.time() - record.started)} (Paused)"
    if record.state is State.EXITED:
        return f"Exited ({record.exit_code}) {human_duration(time.time() - record.finished)} ago"
    return "Created"


def container_summary(record: Record) -> dict:
    argv = record.config.get("argv") or []
    return {"Id": record.id, "Names": [f"/{record.name}"], "Image": record.image,
            "ImageID": record.config.get("image_id", ""), "Command": " ".join(argv),
            "Created": int(record.created), "State": record.state.value, "Status": status_text(record),
            "Ports": record.config.get("ports", []) if record.state is State.RUNNING else [], "Labels": {},
            "HostConfig": {"NetworkMode": record.config.get("spec", {}).get("network", "bridge")}, "Mounts": []}


def container_inspect(record: Record) -> dict:
    spec, argv = record.config.get("spec", {}), record.config.get("argv") or [""]
    return {
        "Id": record.id, "Created": rfc3339(record.created), "Path": argv[0], "Args": argv[1:],
        "State": {"Status": record.state.value, "Running": record.state in (State.RUNNING, State.PAUSED),
                  "Paused": record.state is State.PAUSED, "Restarting": False,
                  "OOMKilled": record.oom_killed, "Dead": False, "Pid": record.pid,
                  "ExitCode": record.exit_code, "Error": "", "StartedAt": rfc3339(record.started),
                  "FinishedAt": rfc3339(record.finished)},
        "Image": record.config.get("image_id", ""), "Name": f"/{record.name}",
        "Config": {"Hostname": record.config.get("hostname", ""), "Env": record.config.get("env", []),
                   "Cmd": spec.get("cmd"), "Entrypoint": spec.get("entrypoint"), "Image": record.image,
                   "WorkingDir": record.config.get("workdir", ""), "User": spec.get("user") or "",
                   "Tty": spec.get("tty", False), "OpenStdin": spec.get("interactive", False), "Labels": {}},
        "HostConfig": {"LogConfig": {"Type": "json-file", "Config": {}}, "AutoRemove": spec.get("rm", False),
                       "NetworkMode": spec.get("network", "bridge"), **inspect_security(spec)},
        "NetworkSettings": {"IPAddress": record.config.get("ip", ""), "Networks": {}, "Ports": {}},
        "Mounts": [],
    }


@route("GET", "/containers/json")
def list_containers(request: Request):
    return [container_summary(r) for r in engine.containers(everything=request.flag("all"))]


@route("GET", "/containers/{ref}/json")
def inspect_container(request: Request, ref: str):
    return container_inspect(engine.find(ref))


@route("POST", "/containers/{ref}/start")
def start_container(request: Request, ref: str):
    record = engine.find(ref)
    if record.state is State.RUNNING:
        return 304, None                        # Docker: "container already started"
    engine.start(record.id)


@route("POST", "/containers/{ref}/wait")
def wait_container(request: Request, ref: str):
    """The headers at once, the exit code when it comes: `docker run` posts this *before* start, and its Go
    client returns from the POST only when the headers arrive. ``condition``: not-running, next-exit, removed.
    An error after the 200 travels as Docker's {"Error": {"Message"}}, which the CLI turns into exit 125."""
    container_id = engine.find(ref).id
    condition = request.query.get("condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, f"invalid condition: {condition!r}")

    def answer():
        try:
            result = {"StatusCode": engine.wait_for(container_id, condition), "Error": None}
        except LabError as err:
            result = {"StatusCode": -1, "Error": {"Message": err.message}}
        yield json.dumps(result).encode()
    return Stream(answer(), "application/json")


@route("POST", "/containers/{ref}/attach")
def attach_container(request: Request, ref: str):
    """`docker run` without -d attaches before it starts the container: a hijacked connection carrying the
    output, framed as the logs are, from the start to the exit. Input is not relayed (`labcore run -i` is)."""
    record = engine.find(ref)
    wanted = {1} if request.flag("stdout") else set()
    wanted |= {2} if request.flag("stderr") else set()
    tty = record.config.get("spec", {}).get("tty", False)
    return daemon.Hijack(data if tty else frame(stream, data)
                         for stream, data in engine.attach(record.id) if stream in wanted)


@route("GET", "/containers/{ref}/logs")
def container_logs(request: Request, ref: str):
    record = engine.find(ref)
    wanted = {1} if request.flag("stdout") else set()
    wanted |= {2} if request.flag("stderr") else set()
    chunks = engine.logs(record.id, follow=request.flag("follow"))
    tty = record.config.get("spec", {}).get("tty", False)
    return Stream((data if tty else frame(stream, data) for stream, data in chunks if stream in wanted),
                  "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream")


@route("POST", "/containers/{ref}/kill")
def kill_container(request: Request, ref: str):
    engine.kill(engine.find(ref).id, signal_number(request.query.get("signal", "SIGKILL")))


@route("POST", "/containers/{ref}/stop")
def stop_container(request: Request, ref: str):
    record = engine.find(ref)
    if record.state is not State.RUNNING:
        return 304, None                        # Docker: "container already stopped"
    engine.stop(record.id, timeout=float(request.query.get("t", 10)))


@route("DELETE", "/containers/{ref}")
def remove_container(request: Request, ref: str):
    engine.remove(engine.find(ref).id, force=request.flag("force"))


def signal_number(text: str) -> int:
    """Docker accepts a number, a name with or without SIG: 9, KILL, SIGKILL."""
    if text.isdigit():
        return int(text)
    try:
        return int(signal.Signals["SIG" + text.upper().removeprefix("SIG")])
    except KeyError as err:
        raise ApiError(400, f"Invalid signal: {text}") from err


# --- exec: a second process in a running container's namespaces --------------------------------------------

@route("POST", "/containers/{ref}/exec")
def create_exec(request: Request, ref: str):
    body = request.json()
    if not body.get("Cmd"):
        raise ApiError(400, "No exec command specified")
    exec_id = engine.exec_create(engine.find(ref).id, body["Cmd"], env=body.get("Env") or [],
                                 workdir=body.get("WorkingDir") or None, user=body.get("User") or None)
    return 201, {"Id": exec_id}


@route("POST", "/exec/{exec_id}/start")
def start_exec(request: Request, exec_id: str):
    """Docker answers 101 and "hijacks" the connection: raw frames on the socket until the process ends."""
    chunks = engine.exec_start(exec_id)
    return daemon.Hijack(frame(stream, data) for stream, data in chunks)


@route("GET", "/exec/{exec_id}/json")
def inspect_exec(request: Request, exec_id: str):
    state = engine.exec_inspect(exec_id)
    return {"ID": exec_id, "Running": state["running"], "ExitCode": state["exit_code"],
            "ContainerID": state["container"], "Pid": state.get("pid", 0)}
