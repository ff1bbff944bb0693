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

Beyond `docker run`: the lifecycle (restart, pause, rename, update, kill, stop, prune), what is inside
(top, changes, stats, archive), images (tag, save, load, import, commit, build, prune), exec with a terminal
and stdin, named volumes, legacy links. Every body is checked first (``labcore.api.schema``); what labd does
not do is answered in Docker's own shapes (the README lists it).
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import platform
import re
import time
from datetime import datetime, timezone

from labcore import __version__
from labcore.api import labd, schema
from labcore.api.labd import ApiError, Request, Stream, route
from labcore.api.schema import Invalid, frame, query_int, signal_number
from labcore.errors import BadInput, InvalidTransition, LabError, NotFound
from labcore.kernel import procfs
from labcore.kernel.journal import Scope
from labcore.runtime import engine, lifecycle
from labcore.runtime.container import Spec
from labcore.runtime.lifecycle import Record, State
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


# --- the daemon itself ------------------------------------------------------------------------------------

@route("GET", "/_ping")
@route("HEAD", "/_ping")
def ping(request: Request):
    return "OK"


@route("GET", "/version")
def version(request: Request):
    return {"Version": f"labcore-{__version__}", "ApiVersion": labd.API_VERSION,
            "MinAPIVersion": labd.MIN_API_VERSION, "Os": "linux", "Arch": engine.architecture(),
            "KernelVersion": platform.release(), "GitCommit": "", "BuildTime": "", "Experimental": False,
            # labd is not written in Go; the field says which language runs it, where clients expect one
            "GoVersion": f"python{platform.python_version()}",
            "Platform": {"Name": "labcore"}, "Components": [{"Name": "labd", "Version": __version__}]}


@route("GET", "/info")
def info(request: Request):
    records = engine.containers(everything=True)
    count = lambda state: sum(1 for r in records if r.state is state)  # noqa: E731
    return {"ID": "labd", "Name": platform.node(), "Containers": len(records),
            "ContainersRunning": count(State.RUNNING), "ContainersPaused": count(State.PAUSED),
            "ContainersStopped": count(State.EXITED), "Images": len({i.id for i in engine.images()}),
            "Driver": "overlay", "CgroupVersion": engine.cgroup_version(), "OperatingSystem": "labcore",
            "OSType": "linux", "Architecture": platform.machine(), "KernelVersion": platform.release(),
            "NCPU": os.cpu_count(), "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "ServerVersion": __version__, "DockerRootDir": str(engine.home()), "Debug": False,
            "ExperimentalBuild": False, "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
            "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}, "Runtimes": {"labcore": {}},
            "DefaultRuntime": "labcore", "SecurityOptions": [], "Labels": [], "Warnings": []}


# --- what a teaching daemon does not do (NOT_SUPPORTED.md lists them with the reasons) --------------------

SWARM = ("This node is not a swarm manager. labd is a single-host teaching daemon: it has no swarm mode "
         "(services, nodes, tasks, secrets, configs).")


def not_a_swarm_manager(request: Request, **_):
    raise ApiError(503, SWARM)


def not_implemented(what: str, why: str):
    def answer(request: Request, **_):
        raise ApiError(501, f"labd does not implement {what}: {why}")
    return answer


for _method in ("GET", "POST", "DELETE"):
    for _path in ("/swarm", "/swarm/{rest*}", "/nodes", "/nodes/{rest*}", "/services", "/services/{rest*}",
                  "/tasks", "/tasks/{rest*}", "/secrets", "/secrets/{rest*}", "/configs", "/configs/{rest*}"):
        route(_method, _path)(not_a_swarm_manager)
    route(_method, "/plugins/{rest*}")(not_implemented("plugins", "every driver labd has is built in"))
    route(_method, "/distribution/{rest*}")(not_implemented("registry inspection", "labd pulls, it does not "
                                                             "query a registry's manifests separately"))
route("GET", "/plugins")(lambda request: [])
route("POST", "/session")(not_implemented("BuildKit sessions", "labd builds with the classic builder"))
route("POST", "/containers/{ref}/checkpoints")(not_implemented("checkpoints", "CRIU is beyond this course"))
route("GET", "/containers/{ref}/export")(not_implemented("export", "commit, then save, gives the same files"))


# --- images -----------------------------------------------------------------------------------------------

def tags_of(image_id: str) -> list[str]:
    """Every name:tag pointing at one image ID: Docker lists and inspects images by ID, not by name."""
    return [f"{i.name}:{i.tag}" for i in engine.images() if i.id == image_id and i.name != "<none>"]


def digests_of(image_id: str) -> list[str]:
    """NAME@sha256:<manifest digest> for each name of the image: what a registry calls it."""
    return sorted({f"{i.name}@{i.digest}" for i in engine.images() if i.id == image_id and i.name != "<none>"})


def image_summary(image) -> dict:
    return {"Id": image.id, "ParentId": parent_of(image), "RepoTags": tags_of(image.id),
            "RepoDigests": digests_of(image.id),
            "Created": int(epoch(image.created)), "Size": image.size, "SharedSize": -1, "Labels": {},
            "Containers": -1}


def parent_of(image) -> str:
    """The image a commit or build step started from, as the config records it (Docker's "parent")."""
    return config_of(image).get("parent", "")


def config_of(image) -> dict:
    """The image's config blob (its history, author, comment); {} when it cannot be read."""
    from labcore.image.oci import Store
    try:
        return json.loads(Store().read_blob(image.id))
    except (LabError, OSError, ValueError):
        return {}


def image_inspect(image) -> dict:
    """`docker image inspect`: RepoDigests pair each name with its manifest's digest; RootFS.Layers are the
    diff_ids (the uncompressed layers' digests, not the blobs'); History is what `docker history` shows."""
    config = config_of(image)
    return {"Id": image.id, "RepoTags": tags_of(image.id), "RepoDigests": digests_of(image.id),
            "Parent": config.get("parent", ""), "Comment": config.get("comment", ""), "Created": image.created,
            "Author": config.get("author", ""), "Architecture": engine.architecture(), "Os": "linux",
            "Size": image.size, "Config": image.config, "ContainerConfig": image.config,
            "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]},
            "History": config.get("history", [])}


@route("GET", "/images/json")
def list_images(request: Request):
    from labcore.image.oci import split_reference
    wanted = filters(request).get("reference") or ([request.query["filter"]] if request.query.get("filter")
                                                   else [])
    rows = image_summaries()
    if wanted:
        names = {":".join(split_reference(ref)) if ":" in ref.rpartition("/")[2] else ref for ref in wanted}
        rows = [row for row in rows if any(tag in names or tag.rpartition(":")[0] in names
                                           for tag in row["RepoTags"])]
    return rows


def image_summaries() -> list[dict]:
    """Every image once, by ID, as Docker lists them (`docker images` shows a row for each of its RepoTags)."""
    unique = {image.id: image for image in reversed(engine.images())}
    return [image_summary(image) for image in reversed(unique.values())]


def filters(request: Request) -> dict[str, list[str]]:
    """?filters={"label":["a=b"]} (or the older {"label":{"a=b":true}}), checked."""
    text = request.query.get("filters")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        raise Invalid(f"invalid filter: {text[:60]!r}: a JSON object of lists is expected") from None
    if not isinstance(raw, dict):
        raise Invalid("invalid filter: a JSON object of lists is expected")
    result = {}
    for key, value in raw.items():
        values = list(value) if isinstance(value, (list, dict)) else None
        if values is None or not all(isinstance(v, str) for v in values):
            raise Invalid(f"invalid filter {key!r}: a list of strings is expected")
        result[key] = values
    return result


@route("GET", "/images/{name*}/json")
def inspect_image(request: Request, name: str):
    return image_inspect(engine.image(name))


@route("POST", "/images/create")
def pull_image(request: Request):
    if "fromSrc" in request.query:
        return import_image(request)
    reference = request.query.get("fromImage", "")
    tag = request.query.get("tag")
    if tag:
        reference += ("@" if tag.startswith("sha256:") else ":") + tag
    events = engine.pull(reference)
    # dockerd fetches the manifest before it writes a byte, so an image the registry does not have is a 404
    # answer ({"message": "manifest ... not found"}); only a later error travels in the 200's stream.
    first = next(events)
    return Stream((json.dumps(event).encode() + b"\r\n" for event in itertools.chain([first], events)),
                  "application/json")


def import_image(request: Request):
    """`docker import`: a tar of files becomes an image of one layer, its config from ?changes."""
    from labcore.image.oci import Store
    from labcore.runtime import build
    if request.query["fromSrc"] != "-":
        raise Invalid("labd imports from the request body only (fromSrc=-), not from a URL")
    name, tag = import_name(request)
    with Scope() as scope:
        tar = request.body_file(scope)
        config = build.apply_changes({}, changes_of(request))
        image = Store().add_image([tar], {"config": config, "architecture": engine.architecture(),
                                          "os": "linux"}, name, tag)
    return Stream(iter([json.dumps({"status": image.id}).encode() + b"\r\n"]), "application/json")


def import_name(request: Request) -> tuple[str | None, str]:
    from labcore.image.oci import split_reference
    repo = request.query.get("repo")
    if not repo:
        return None, "latest"
    return split_reference(f"{repo}:{request.query['tag']}" if request.query.get("tag") else repo)


def changes_of(request: Request) -> list[str]:
    """?changes=CMD ["echo"]&changes=USER x: every value of the parameter, in order."""
    return request.multi.get("changes", [])


@route("DELETE", "/images/{name*}")
def remove_image(request: Request, name: str):
    """`docker rmi`: [{"Untagged": name}], and {"Deleted": ...} once the last name has gone."""
    from labcore.image.oci import Store
    from labcore.runtime import images
    lines = images.remove(Store(), name, force=request.flag("force"))
    return [dict([line.split(": ", 1)]) for line in lines]


@route("POST", "/images/{name*}/tag")
def tag_image(request: Request, name: str):
    from labcore.image.oci import Store
    from labcore.runtime import images
    repo = request.query.get("repo") or ""
    target = f"{repo}:{request.query['tag']}" if request.query.get("tag") else repo
    if not repo:
        raise Invalid("repository name must have at least one component")
    images.tag(Store(), name, target)
    return 201, None


@route("GET", "/images/{name*}/get")
def save_image(request: Request, name: str):
    return save_images([name])


@route("GET", "/images/get")
def save_named_images(request: Request):
    return save_images(request.multi.get("names", []))


def save_images(names: list[str]):
    """`docker save`: the images as one tar, streamed."""
    from labcore.image import archive
    for name in names:
        engine.image(name)                            # 404 before the 200 starts
    scope = Scope()
    directory = archive.make_directory(scope, "labcore-save-")
    path = os.path.join(directory, "images.tar")
    archive.save(names, path)

    def chunks():
        try:
            with open(path, "rb") as tar:
                while chunk := tar.read(1 << 16):
                    yield chunk
        finally:
            scope.close()
    return Stream(chunks(), "application/x-tar")


@route("POST", "/images/load")
def load_images(request: Request):
    """`docker load`: {"stream": "Loaded image: NAME\\n"} per image; a bad tar is an error in the stream,
    as Docker sends it (the docker SDK raises ImageLoadError from it)."""
    from labcore.image import archive
    with Scope() as scope:
        tar = request.body_file(scope)
        try:
            loaded = archive.load(tar)
            lines = [{"stream": f"{line}\n"} for line in loaded]
        except LabError as err:
            lines = [{"errorDetail": {"message": err.message}, "error": err.message}]
    return Stream(iter([json.dumps(line).encode() + b"\r\n" for line in lines]), "application/json")


@route("POST", "/images/prune")
def prune_images(request: Request):
    """Untagged images no container uses; with dangling=false, every image no container uses."""
    from labcore.image.oci import Store
    from labcore.runtime import images
    only_dangling = filters(request).get("dangling", ["true"])[0].lower() in ("1", "true")
    used = {r.config.get("image_id") for r in engine.containers(everything=True)}
    lines, space = images.prune(Store(), used, only_dangling)
    return {"ImagesDeleted": [dict([line.split(": ", 1)]) for line in lines] or None, "SpaceReclaimed": space}


@route("POST", "/commit")
def commit_container(request: Request):
    from labcore.runtime import build
    record = engine.find(request.query.get("container") or "")
    name, tag = import_name(request)
    image = build.commit_image(record, name, tag, request.query.get("comment") or "", changes_of(request),
                               request.query.get("author") or "")
    return 201, {"Id": image.id}


@route("POST", "/build")
def build_image(request: Request):
    """`docker build`: the body is the context as a tar; its Dockerfile is read as a Labfile. The output is
    Docker's: {"stream": "Step 1/2 : FROM ..."} lines, then {"aux": {"ID"}} and "Successfully built"."""
    from labcore.image.oci import split_reference
    from labcore.runtime import build
    tags = request.multi.get("t", [])
    for tag in tags:
        split_reference(tag)
    with Scope() as scope:
        context = unpack_context(request, scope)
        dockerfile = request.query.get("dockerfile") or "Dockerfile"
        labfile = os.path.normpath(os.path.join(context, dockerfile))
        if not labfile.startswith(context + os.sep) or not os.path.isfile(labfile):
            raise Invalid(f"Cannot locate specified Dockerfile: {dockerfile}")
        with open(labfile) as text:
            if not text.read().strip():
                raise Invalid(f"the Dockerfile ({dockerfile}) cannot be empty")
        try:
            result = build.build(context, labfile, tags[0] if tags else None)
            for tag in tags[1:]:
                build.tag_image(result.image, tag)
            lines = [{"stream": line + "\n"} for line in result.log]
            lines.insert(-1 - bool(tags), {"aux": {"ID": result.image.id}})
        except LabError as err:
            lines = [{"stream": line + "\n"} for line in getattr(err, "log", [])]
            lines.append({"errorDetail": {"message": err.message}, "error": err.message})
    return Stream(iter([json.dumps(line).encode() + b"\r\n" for line in lines]), "application/json")


def unpack_context(request: Request, scope: Scope) -> str:
    import tarfile
    from labcore.image import archive
    directory = archive.make_directory(scope, "labcore-build-")
    tar_path = request.body_file(scope)
    context = os.path.join(directory, "context")
    os.mkdir(context)
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                from labcore.image.oci import check_entry
                check_entry(member)
                if member.isfile() or member.isdir() or member.issym():
                    tar.extract(member, context, set_attrs=False)
    except tarfile.TarError as err:
        raise Invalid(f"the build context is not a tar archive: {err}") from err
    return context


# --- containers -------------------------------------------------------------------------------------------

LOG_DRIVERS = ("json-file", "none")
DOCKER_LOG_DRIVERS = ("local", "journald", "syslog", "gelf", "fluentd", "awslogs", "splunk", "etwlogs",
                      "gcplogs", "logentries")


def spec_from_body(body: dict, name: str, version: str | None = None) -> tuple[Spec, dict]:
    """Docker's ContainerConfig (with its HostConfig) as the lab's Spec, and what to keep for inspect.
    The body's types are checked already (labcore.api.schema); here, what its values mean."""
    def as_list(value):
        return [value] if isinstance(value, str) else value
    if not body.get("Image"):
        raise BadInput("Config cannot be empty in order to create a container",
                       fix='send {"Image": "busybox", "Cmd": [...]}')
    host = body.get("HostConfig") or {}
    schema.refuse_unimplemented(host)
    check_host_values(host)
    network = host.get("NetworkMode") or "default"
    network = "bridge" if network == "default" else network
    endpoints = endpoints_of(body.get("NetworkingConfig") or {}, network, version)
    volumes, anonymous = binds_of(body, host)
    spec = Spec(image=body["Image"], cmd=as_list(body.get("Cmd")) or None,
                entrypoint=as_list(body.get("Entrypoint")), env=body.get("Env") or [],
                workdir=body.get("WorkingDir") or None, user=str(body["User"]) if body.get("User") else None,
                hostname=body.get("Hostname") or None, tty=bool(body.get("Tty")),
                interactive=bool(body.get("OpenStdin")), name=name.lstrip("/"),
                rm=bool(host.get("AutoRemove")), limits=engine.limits_from_host_config(host),
                network=network, endpoints=endpoints, mac_address=body.get("MacAddress") or None,
                publish=publish_from_bindings(host.get("PortBindings") or {}), volumes=volumes,
                group_add=[str(group) for group in host.get("GroupAdd") or []],
                tmpfs=tmpfs_of(host), init=bool(host.get("Init")), pid=namespace_mode(host, "PidMode"),
                uts=namespace_mode(host, "UTSMode"), **security_from_host_config(host))
    spec.env = [*spec.env, *link_environment(host.get("Links") or [], spec.name)]
    config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
    return spec, {"Config": config, "HostConfig": host, "AnonymousVolumes": anonymous}


def endpoints_of(networking: dict, network: str, version: str | None) -> dict | None:
    """NetworkingConfig.EndpointsConfig as the Spec's endpoints (None: NetworkMode alone). Before API 1.44 a
    container is created on one network: more than one entry is refused, and a single entry for another
    network than NetworkMode is ignored, as Docker 20.10 does (daemon/create.go, verifyNetworkingConfig);
    from 1.44 on, it joins every network listed, each of which must exist."""
    from labcore.runtime import networks
    config = networking.get("EndpointsConfig") or {}
    if not config or network == "none":
        return None
    if len(config) > 1 and version_before(version, "1.44"):
        raise Invalid(f"Container cannot be connected to network endpoints: {', '.join(config)}")
    first = networks.find(network)
    named = {networks.find(ref).name if len(config) > 1 or ref in (first.name, first.id) else ref: settings
             for ref, settings in config.items()}
    if len(config) == 1 and first.name not in named:
        return None
    return {name: {key: settings[key] for key in ("Aliases", "DriverOpts", "IPAMConfig")
                   if (settings or {}).get(key)} for name, settings in named.items()}


def version_before(version: str | None, than: str) -> bool:
    """A request's API version (None: unversioned, the newest) older than ``than``."""
    return version is not None and tuple(map(int, version.split("."))) < tuple(map(int, than.split(".")))


def namespace_mode(host: dict, field: str) -> str:
    """PidMode, UTSMode: "" or "private" for a namespace of its own, "host" to share the host's. Sharing
    another container's (container:NAME) is not implemented."""
    mode = host.get(field) or ""
    if mode not in ("", "private", "host"):
        raise Invalid(f"HostConfig.{field} {mode!r} is not supported by labd: use host, or leave it out")
    return "host" if mode == "host" else ""


def check_host_values(host: dict) -> None:
    """Values of the fields labd implements that it cannot honour, in Docker's words where Docker has them."""
    log = (host.get("LogConfig") or {}).get("Type") or "json-file"
    if log not in LOG_DRIVERS:
        if log in DOCKER_LOG_DRIVERS:
            raise Invalid(f"labd keeps logs with json-file only (or none), not {log}")
        raise Invalid(f"logger: no log driver named '{log}' is registered")
    policy = (host.get("RestartPolicy") or {}).get("Name") or "no"
    if policy not in ("no", "always", "unless-stopped", "on-failure"):
        raise Invalid(f"invalid restart policy {policy!r}: use no, always, unless-stopped or on-failure")
    if policy != "no" and host.get("AutoRemove"):
        raise Invalid("can't create 'AutoRemove' container with restart policy")
    if (host.get("CgroupnsMode") or "private") != "private":
        raise Invalid("HostConfig.CgroupnsMode host is not supported by labd: every container gets its own "
                      "cgroup namespace")
    if (host.get("Isolation") or "default") != "default":
        raise Invalid(f"invalid isolation: {host['Isolation']!r}: on Linux only 'default' is supported")
    for mount in host.get("Mounts") or []:
        if (mount.get("Type") or "volume") not in ("bind", "volume", "tmpfs"):
            raise Invalid(f"mount type {mount.get('Type')!r}: labd mounts bind, volume and tmpfs")


def binds_of(body: dict, host: dict) -> tuple[list[str], list[str]]:
    """Binds, HostConfig.Mounts and Config.Volumes as `-v HOST:CONTAINER[:ro]`: a named volume becomes its
    directory (made if missing, as Docker makes it); a path alone, an anonymous volume."""
    from labcore.runtime import volumes
    binds, anonymous, targets = [], [], set()
    for bind in host.get("Binds") or []:
        source, _, rest = bind.partition(":")
        target, _, mode = rest.partition(":")
        modes = [m for m in mode.split(",") if m and m not in ("z", "Z", "rprivate")]   # z, Z: SELinux only
        if any(m not in ("ro", "rw") for m in modes):
            raise Invalid(f"invalid mode {mode!r} in {bind!r}: labd accepts ro, rw (z, Z and rprivate are "
                          "the defaults here); mount propagation is not implemented")
        if source and not source.startswith("/"):
            source = volumes.path_of(source)
        binds.append(":".join([source, target, *modes]))
        targets.add(os.path.normpath(target or "/"))
    for mount in host.get("Mounts") or []:
        kind, source, target = mount.get("Type") or "volume", mount.get("Source") or "", mount.get("Target") or ""
        if kind == "tmpfs":
            continue
        if kind == "volume":
            subpath = ((mount.get("VolumeOptions") or {}).get("Subpath") or "").strip("/")
            source = volumes.path_of(source or new_anonymous(anonymous))
            source = os.path.join(source, subpath) if subpath else source
        binds.append(f"{source}:{target}" + (":ro" if mount.get("ReadOnly") else ""))
        targets.add(os.path.normpath(target or "/"))
    for key in body.get("Volumes") or {}:
        # Docker parses each key as a -v spec: the SDK turns `-v /:/host:ro` into the key "/:/host"
        target = key.split(":")[1] if ":" in key else key
        if target and os.path.normpath(target) not in targets:
            binds.append(f"{volumes.path_of(new_anonymous(anonymous))}:{target}")
    return binds, anonymous


def new_anonymous(anonymous: list[str]) -> str:
    import secrets
    anonymous.append(secrets.token_hex(32))
    return anonymous[-1]


def tmpfs_of(host: dict) -> list[str]:
    found = [f"{path}:{options}" if options else path for path, options in (host.get("Tmpfs") or {}).items()]
    for mount in host.get("Mounts") or []:
        if mount.get("Type") == "tmpfs":
            size = (mount.get("TmpfsOptions") or {}).get("SizeBytes")
            found.append(mount.get("Target", "") + (f":size={size}" if size else ""))
    return found


def link_environment(links: list[str], name: str) -> list[str]:
    """--link NAME:ALIAS (legacy links): the linked container's Env as ALIAS_ENV_*, and ALIAS_NAME, as
    daemon/links/links.go writes them. The /etc/hosts entry a link also adds needs its address on a shared
    network: labd's containers have one only on the default bridge."""
    env = []
    for link in links:
        target, _, alias = link.partition(":")
        record = engine.find(target.lstrip("/"))
        prefix = re.sub(r"[^A-Z0-9_]", "_", (alias or record.name).upper())
        env.append(f"{prefix}_NAME=/{name}/{alias or record.name}")
        for item in record.config.get("env") or []:
            key, _, value = item.partition("=")
            if key not in ("HOME", "PATH", "HOSTNAME"):
                env.append(f"{prefix}_ENV_{key}={value}")
    return env


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
    from labcore.runtime.spec import check_spec
    body = schema.body(request, schema.CONFIG)
    name = request.query.get("name", "")
    spec, asked = spec_from_body(body, name, request.version)
    if spec.name:
        check_spec(spec)                              # a bad name is 400 before a volume is made for it
    record = engine.create(spec, asked)
    return 201, {"Id": record.id, "Warnings": []}


def status_text(record: Record) -> str:
    """`docker ps`'s STATUS column: "Up 3 seconds", "Exited (0) 2 seconds ago", "Created"."""
    if record.state is State.RUNNING:
        return f"Up {human_duration(time.time() - record.started)}"
    if record.state is State.PAUSED:
        return f"Up {human_duration(time.time() - record.started)} (Paused)"
    if record.state is State.RESTARTING:
        return f"Restarting ({record.exit_code}) {human_duration(time.time() - record.finished)} ago"
    if record.state is State.EXITED:
        return f"Exited ({record.exit_code}) {human_duration(time.time() - record.finished)} ago"
    if record.state is State.DEAD:
        return "Dead"
    return "Created"


def command_text(record: Record) -> str:
    argv = record.config.get("argv") or []
    return " ".join(str(word) for word in argv) if isinstance(argv, list) else str(argv)


def container_summary(record: Record) -> dict:
    asked = lifecycle.requested(record.id)
    return {"Id": record.id, "Names": [f"/{record.name}"], "Image": record.image,
            "ImageID": record.config.get("image_id", ""), "Command": command_text(record),
            "Created": int(record.created), "State": record.state.value, "Status": status_text(record),
            "Ports": record.config.get("ports", []) if record.state is State.RUNNING else [],
            "Labels": asked.get("Config", {}).get("Labels") or {},
            "HostConfig": {"NetworkMode": record.config.get("spec", {}).get("network", "bridge")},
            "NetworkSettings": {"Networks": network_settings(record, record.state is State.RUNNING)["Networks"]},
            "Mounts": mounts_of(record, asked)}


def mounts_of(record: Record, asked: dict) -> list[dict]:
    """Docker's MountPoint list: each bind and volume, with its source on the host."""
    from labcore.runtime import volumes
    root, found = str(volumes.volumes_dir()), []
    for bind in record.config.get("spec", {}).get("volumes", []):
        source, _, rest = bind.partition(":")
        target, _, mode = rest.partition(":")
        entry = {"Type": "bind", "Source": source, "Destination": target, "Mode": mode, "RW": mode != "ro",
                 "Propagation": "rprivate"}
        if source.startswith(root + "/"):
            name = source[len(root) + 1:].split("/")[0]
            entry = {"Type": "volume", "Name": name, "Source": source, "Destination": target,
                     "Driver": "local", "Mode": mode or "z", "RW": mode != "ro", "Propagation": ""}
        found.append(entry)
    return found


def container_inspect(record: Record) -> dict:
    spec, argv = record.config.get("spec", {}), record.config.get("argv") or [""]
    asked = lifecycle.requested(record.id)
    config, host = asked.get("Config", {}), asked.get("HostConfig", {})
    env = list(record.config.get("env", []))
    env += [item for item in spec.get("env", []) if "=" not in item and item not in env]   # `-e Foo` as sent
    running = record.state in (State.RUNNING, State.PAUSED)
    return {
        "Id": record.id, "Created": rfc3339(record.created), "Path": argv[0], "Args": argv[1:],
        "State": {"Status": record.state.value, "Running": running or record.state is State.RESTARTING,
                  "Paused": record.state is State.PAUSED, "Restarting": record.state is State.RESTARTING,
                  "OOMKilled": record.oom_killed, "Dead": record.state is State.DEAD,
                  "Pid": record.pid if running else 0,
                  "ExitCode": record.exit_code, "Error": record.error, "StartedAt": rfc3339(record.started),
                  "FinishedAt": rfc3339(record.finished)},
        "Image": record.config.get("image_id", ""), "Name": f"/{record.name}", "RestartCount": 0,
        "Driver": "overlay", "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "Config": {**config, "Hostname": record.config.get("hostname", ""), "Env": env,
                   "Cmd": spec.get("cmd"), "Entrypoint": spec.get("entrypoint"), "Image": record.image,
                   "WorkingDir": record.config.get("workdir", ""), "User": spec.get("user") or "",
                   "Tty": spec.get("tty", False), "OpenStdin": spec.get("interactive", False),
                   "Labels": config.get("Labels") or {}},
        "HostConfig": {**host, "LogConfig": {"Type": (host.get("LogConfig") or {}).get("Type") or "json-file",
                                             "Config": (host.get("LogConfig") or {}).get("Config") or {}},
                       "AutoRemove": spec.get("rm", False), "NetworkMode": host.get("NetworkMode") or "default",
                       "RestartPolicy": host.get("RestartPolicy") or {"Name": "no", "MaximumRetryCount": 0},
                       "CgroupnsMode": host.get("CgroupnsMode") or "private",
                       "Isolation": host.get("Isolation") or "", "Binds": host.get("Binds"),
                       "VolumesFrom": host.get("VolumesFrom"), **inspect_security(spec)},
        "NetworkSettings": network_settings(record, running),
        "Mounts": mounts_of(record, asked),
    }


def network_settings(record: Record, running: bool) -> dict:
    """The published ports as Docker shows them, {"80/tcp": [{"HostIp", "HostPort"}]} while running, and an
    endpoint for each network it joins: its address there while it runs, its aliases always."""
    from labcore.runtime import networks
    ports: dict = {}
    for port in record.config.get("ports", []) if running else []:
        ports.setdefault(f"{port['PrivatePort']}/{port['Type']}", []).append(
            {"HostIp": port["IP"], "HostPort": str(port["PublicPort"])})
    live = record.config.get("networks", {}) if running else {}
    joined = {name: endpoint_settings(record, name, settings, live.get(name) or {})
              for name, settings in networks.listed(record.config.get("spec", {})).items()}
    first = next(iter(joined.values()), {})
    return {"Bridge": "", "SandboxID": "", "HairpinMode": False, "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0, "SandboxKey": procfs.path(record.pid, "ns", "net") if running else "",
            "EndpointID": first.get("EndpointID", ""), "Gateway": first.get("Gateway", ""),
            "IPAddress": first.get("IPAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
            "MacAddress": first.get("MacAddress", ""), "Ports": ports, "Networks": joined}


def endpoint_settings(record: Record, name: str, settings: dict, live: dict) -> dict:
    """Docker's EndpointSettings for one network: what was asked (aliases, driver options), and, while the
    container runs, what it got."""
    from labcore.runtime import networks
    try:
        network_id = networks.find(name).id
    except NotFound:
        network_id = ""                          # removed since the container was created
    endpoint = hashlib.sha256(f"{record.id}/{name}/{record.started}".encode()).hexdigest() if live else ""
    return {"IPAMConfig": settings.get("IPAMConfig"), "Links": None, "Aliases": settings.get("Aliases") or None,
            "NetworkID": network_id, "EndpointID": endpoint, "Gateway": live.get("Gateway", ""),
            "IPAddress": live.get("IPAddress", ""), "IPPrefixLen": live.get("IPPrefixLen", 0),
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "MacAddress": live.get("MacAddress", ""), "DriverOpts": settings.get("DriverOpts") or None}


@route("GET", "/containers/json")
def list_containers(request: Request):
    records = engine.containers(everything=request.flag("all"))
    limit = query_int(request.query, "limit", -1, low=-1)
    wanted = filters(request)
    for key in wanted:
        if key not in ("status", "name", "id", "label"):
            raise Invalid(f"invalid filter '{key}': labd filters by status, name, id and label")
    records = [r for r in records if matches(r, wanted)]
    return [container_summary(r) for r in (records[:limit] if limit > 0 else records)]


def matches(record: Record, wanted: dict) -> bool:
    labels = lifecycle.requested(record.id).get("Config", {}).get("Labels") or {}
    return all((key != "status" or record.state.value in values) and
               (key != "name" or any(v.lstrip("/") in record.name for v in values)) and
               (key != "id" or any(record.id.startswith(v) for v in values)) and
               (key != "label" or all(labels.get(v.partition("=")[0]) == v.partition("=")[2] if "=" in v
                                      else v in labels for v in values))
               for key, values in wanted.items())


@route("GET", "/containers/{ref}/json")
def inspect_container(request: Request, ref: str):
    return container_inspect(engine.find(ref))


@route("POST", "/containers/{ref}/start")
def start_container(request: Request, ref: str):
    record = engine.find(ref)
    if record.state is State.RUNNING:
        return 304, None                        # Docker: "container already started"
    if record.state is State.PAUSED:
        raise InvalidTransition("cannot start a paused container, try unpause instead")
    engine.start(record.id)


@route("POST", "/containers/{ref}/wait")
def wait_container(request: Request, ref: str):
    """The headers at once, the exit code when it comes: `docker run` posts this *before* start, and its Go
    client returns from the POST only when the headers arrive. ``condition``: not-running, next-exit, removed.
    An error after the 200 travels as Docker's {"Error": {"Message"}}, which the CLI turns into exit 125."""
    container_id = engine.find(ref).id
    condition = schema.query_choice(request.query, "condition", ("not-running", "next-exit", "removed"),
                                       "not-running")

    def answer():
        try:
            result = {"StatusCode": engine.wait_for(container_id, condition), "Error": None}
        except LabError as err:
            result = {"StatusCode": -1, "Error": {"Message": err.message}}
        yield json.dumps(result).encode()
    return Stream(answer(), "application/json")


def detach_keys(text: str | None) -> bytes:
    """Docker's --detach-keys: "ctrl-p,ctrl-q" (the default), "a", "ctrl-@" ... as the bytes to watch for
    (pkg/term ToBytes)."""
    keys = b""
    for key in (text or "ctrl-p,ctrl-q").split(","):
        key = key.strip().lower()
        if len(key) == 1:
            keys += key.encode()
        elif key.startswith("ctrl-") and len(key) == 6 and key[5] in "abcdefghijklmnopqrstuvwxyz@[\\]^_":
            keys += bytes([ord(key[5].upper()) & 0x1f if key[5].isalpha() else ord(key[5]) - 64])
        else:
            raise Invalid(f"Unknown character: '{key}': use ctrl-A ... ctrl-Z, ctrl-@, ctrl-[, ctrl-\\, "
                          "ctrl-], ctrl-^, ctrl-_, or one character")
    return keys


def relay_input(write, close, keys: bytes, detached):
    """What the client types after the 101, to ``write``, until it sends the detach keys (Docker's escape
    proxy: a partial match is held back and sent on if the next byte does not continue it)."""
    def relay(rfile, connection):
        held = b""
        try:
            while data := connection.recv(4096):
                if not keys:
                    write(data)
                    continue
                for byte in data:
                    held += bytes([byte])
                    if keys.startswith(held):
                        if held == keys:
                            detached.set()
                            connection.shutdown(2)
                            return
                        continue
                    write(held)
                    held = b""
        except OSError:
            pass
        finally:
            close()
    return relay


@route("POST", "/containers/{ref}/attach")
def attach_container(request: Request, ref: str):
    """`docker attach` (and `docker run` without -d, before start): a hijacked connection carrying the output,
    framed as the logs are (raw for a -t container); with stdin=1 what the client sends goes to the
    container's stdin until the detach keys. ?logs=1 replays the output so far; ?stream=0 ends at once."""
    import threading
    record = engine.find(ref)
    wanted = {1} if request.flag("stdout") else set()
    wanted |= {2} if request.flag("stderr") else set()
    tty = record.config.get("spec", {}).get("tty", False)
    # Docker watches for the detach keys on a terminal only (container/stream/attach.go): without -t, every
    # byte the client sends is the container's input.
    keys = detach_keys(request.query.get("detachKeys")) if tty else b""
    detached = threading.Event()
    on_input = None
    if request.flag("stdin"):
        fd = engine.write_stdin(record.id)
        write = (lambda data: os.write(fd, data)) if fd is not None else (lambda data: None)
        close = (lambda: os.close(fd)) if fd is not None else (lambda: None)
        on_input = relay_input(write, close, keys, detached)
    chunks = engine.attach(record.id, past=request.flag("logs"), follow=request.flag("stream", True),
                           stop=detached)
    return labd.Hijack((data if tty else frame(stream, data) for stream, data in chunks if stream in wanted),
                         on_input)


@route("GET", "/containers/{ref}/logs")
def container_logs(request: Request, ref: str):
    record = engine.find(ref)
    if (lifecycle.requested(record.id).get("HostConfig", {}).get("LogConfig") or {}).get("Type") == "none":
        raise ApiError(501, 'configured logging driver does not support reading')
    wanted = {1} if request.flag("stdout") else set()
    wanted |= {2} if request.flag("stderr") else set()
    tail = request.query.get("tail", "all")
    chunks = engine.logs(record.id, follow=request.flag("follow"),
                         tail=None if tail == "all" else query_int(request.query, "tail", None, low=-1),
                         since=query_time(request, "since"), until=query_time(request, "until"),
                         timestamps=request.flag("timestamps"))
    tty = record.config.get("spec", {}).get("tty", False)
    return Stream((data if tty else frame(stream, data) for stream, data in chunks if stream in wanted),
                  "application/vnd.docker.raw-stream" if tty else "application/vnd.docker.multiplexed-stream")


def query_time(request: Request, name: str) -> float:
    """?since= / ?until=: seconds since 1970, with an optional fraction (what the SDK and CLI send)."""
    text = request.query.get(name) or "0"
    try:
        value = float(text)
    except ValueError:
        raise Invalid(f"invalid value for {name}: {text[:40]!r}: seconds since 1970 are expected") from None
    if value < 0 or value != value:
        raise Invalid(f"invalid value for {name}: {text[:40]!r}")
    return value


@route("POST", "/containers/{ref}/kill")
def kill_container(request: Request, ref: str):
    record = engine.find(ref)
    signum = signal_number(request.query.get("signal") or "SIGKILL")
    if record.state is not State.RUNNING and record.state is not State.PAUSED:
        raise InvalidTransition(f"Cannot kill container: {ref}: Container {record.id} is not running")
    engine.kill(record.id, signum)


@route("POST", "/containers/{ref}/stop")
def stop_container(request: Request, ref: str):
    record = engine.find(ref)
    timeout = query_int(request.query, "t", None, low=-1)
    if record.state not in (State.RUNNING, State.PAUSED, State.RESTARTING):
        return 304, None                        # Docker: "container already stopped"
    engine.stop(record.id, timeout=None if timeout is None else (1e9 if timeout < 0 else timeout))


@route("POST", "/containers/{ref}/restart")
def restart_container(request: Request, ref: str):
    timeout = query_int(request.query, "t", None, low=-1)
    engine.restart(engine.find(ref).id, timeout=None if timeout is None else (1e9 if timeout < 0 else timeout))


@route("POST", "/containers/{ref}/pause")
def pause_container(request: Request, ref: str):
    engine.pause(engine.find(ref).id)


@route("POST", "/containers/{ref}/unpause")
def unpause_container(request: Request, ref: str):
    engine.unpause(engine.find(ref).id)


@route("POST", "/containers/{ref}/rename")
def rename_container(request: Request, ref: str):
    name = request.query.get("name")
    if not name:
        raise Invalid("Neither old nor new names may be empty")
    engine.rename(engine.find(ref).id, name)


@route("POST", "/containers/{ref}/update")
def update_container(request: Request, ref: str):
    body = schema.body(request, schema.UPDATE_CONFIG)
    schema.refuse_unimplemented(body)
    check_host_values({"RestartPolicy": body.get("RestartPolicy")})
    return {"Warnings": engine.update(engine.find(ref).id, body)}


@route("GET", "/containers/{ref}/top")
def top_container(request: Request, ref: str):
    return engine.top(engine.find(ref).id, request.query.get("ps_args") or "-ef")


@route("GET", "/containers/{ref}/changes")
def container_changes(request: Request, ref: str):
    from labcore.runtime import containerfs
    return containerfs.changes(engine.find(ref)) or None


@route("GET", "/containers/{ref}/stats")
def container_stats(request: Request, ref: str):
    record = engine.find(ref)
    if not request.flag("stream", True) or request.flag("one-shot"):
        return engine.stats(record.id)

    def samples():
        while True:
            yield json.dumps(engine.stats(record.id)).encode() + b"\n"
            if engine.find(record.id).state not in (State.RUNNING, State.PAUSED):
                return
            time.sleep(1)
    return Stream(samples(), "application/json")


@route("POST", "/containers/prune")
def prune_containers(request: Request):
    removed, space = engine.prune()
    return {"ContainersDeleted": removed or None, "SpaceReclaimed": space}


@route("HEAD", "/containers/{ref}/archive")
def archive_stat(request: Request, ref: str):
    from labcore.runtime import containerfs
    header = containerfs.stat_header(engine.find(ref), archive_path(request))
    return labd.Headers({"X-Docker-Container-Path-Stat": header})


@route("GET", "/containers/{ref}/archive")
def archive_get(request: Request, ref: str):
    from labcore.runtime import containerfs
    header, chunks = containerfs.read_archive(engine.find(ref), archive_path(request))
    return Stream(chunks, "application/x-tar", {"X-Docker-Container-Path-Stat": header})


@route("PUT", "/containers/{ref}/archive")
def archive_put(request: Request, ref: str):
    from labcore.runtime import containerfs
    record = engine.find(ref)
    path = archive_path(request)
    with Scope() as scope:
        containerfs.write_archive(record, path, request.body_file(scope),
                                  request.flag("noOverwriteDirNonDir"))
    return 200, None


def archive_path(request: Request) -> str:
    path = request.query.get("path") or ""
    if not path.startswith("/"):
        raise Invalid(f"path {path!r}: an absolute path inside the container is expected")
    return path


@route("DELETE", "/containers/{ref}")
def remove_container(request: Request, ref: str):
    from labcore.runtime import volumes
    record = engine.find(ref)
    anonymous = lifecycle.requested(record.id).get("AnonymousVolumes") or []
    engine.remove(record.id, force=request.flag("force"))
    if request.flag("v"):
        for name in anonymous:
            with contextlib.suppress(LabError):
                volumes.remove(name)


@route("DELETE", "/containers/{ref}/{alias}")
def remove_link(request: Request, ref: str, alias: str):
    """DELETE /containers/NAME/ALIAS?link=1: forget the link ALIAS of container NAME (its env stays: it was
    set when the container was created, as Docker's is)."""
    if not request.flag("link"):
        raise NotFound(f"No such container: {ref}/{alias}")
    record = engine.find(ref)
    asked = lifecycle.requested(record.id)
    links = asked.get("HostConfig", {}).get("Links") or []
    kept = [link for link in links if link.partition(":")[2] != alias]
    if len(kept) == len(links):
        raise NotFound(f"Could not find link /{record.name}/{alias}")
    lifecycle.save_requested(record.id, {**asked, "HostConfig": {**asked.get("HostConfig", {}), "Links": kept}})


# --- exec: a second process in a running container's namespaces --------------------------------------------

@route("POST", "/containers/{ref}/exec")
def create_exec(request: Request, ref: str):
    body = schema.body(request, schema.EXEC_CONFIG)
    cmd = body.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    if not cmd:
        raise Invalid("No exec command specified")
    if body.get("Privileged"):
        raise Invalid("ExecConfig.Privileged is not supported by labd (the security options are being "
                      "built, branch 12-confine)")
    exec_id = engine.exec_create(engine.find(ref).id, cmd, env=body.get("Env") or [],
                                 workdir=body.get("WorkingDir") or None,
                                 user=str(body["User"]) if body.get("User") else None, tty=bool(body.get("Tty")),
                                 stdin=bool(body.get("AttachStdin")), detach_keys=body.get("DetachKeys"))
    detach_keys(body.get("DetachKeys"))                # refused now if malformed, not at start
    return 201, {"Id": exec_id}


@route("POST", "/exec/{exec_id}/start")
def start_exec(request: Request, exec_id: str):
    """Docker answers 101 and "hijacks" the connection: raw frames on the socket until the process ends.
    Everything that can be refused is refused before the 101 (ExecSession starts the process)."""
    import threading
    body = schema.body(request, schema.EXEC_START, required=False)
    session = engine.ExecSession(exec_id, console=tuple(body.get("ConsoleSize") or ()))
    keys = detach_keys(session.state.get("detach_keys")) if session.state.get("tty") else b""
    if body.get("Detach"):
        session.start()
        threading.Thread(target=lambda: [None for _ in session.output()], daemon=True).start()
        return 200, None
    # The command starts after the 101, as Docker starts it: output written with the headers could be read
    # into the client's HTTP buffer, and lost to the raw socket it reads the stream from afterwards.
    detached = threading.Event()
    on_input = relay_input(session.write, session.close_input, keys, detached) \
        if session.state.get("stdin") else None
    tty = body.get("Tty")                     # framing follows the start's Tty, the terminal the create's
    chunks = (data if tty else frame(stream, data) for stream, data in session.output())
    return labd.Hijack(chunks, on_input)


@route("GET", "/exec/{exec_id}/json")
def inspect_exec(request: Request, exec_id: str):
    state = engine.exec_inspect(exec_id)
    return {"ID": exec_id, "Running": state["running"], "ExitCode": state["exit_code"],
            "ContainerID": state["container"], "Pid": state.get("pid", 0), "OpenStdin": state.get("stdin", False),
            "ProcessConfig": {"entrypoint": state["cmd"][0], "arguments": state["cmd"][1:],
                              "tty": state.get("tty", False), "user": state.get("user") or ""}}


# --- volumes ------------------------------------------------------------------------------------------------

VOLUME_CREATE = schema.Struct("VolumeCreateBody", {"Name": schema.STR, "Driver": schema.STR,
                                                      "DriverOpts": schema.MapOf(schema.STR),
                                                      "Labels": schema.MapOf(schema.STR)})


@route("POST", "/volumes/create")
def create_volume(request: Request):
    from labcore.runtime import volumes
    body = schema.body(request, VOLUME_CREATE, required=False)
    return 201, volumes.create(body.get("Name"), body.get("Labels"), body.get("Driver") or "local",
                               body.get("DriverOpts"))


@route("GET", "/volumes")
def list_volumes(request: Request):
    from labcore.runtime import volumes
    return {"Volumes": volumes.listing(), "Warnings": None}


@route("GET", "/volumes/{name}")
def inspect_volume(request: Request, name: str):
    from labcore.runtime import volumes
    return volumes.describe(name)


@route("DELETE", "/volumes/{name}")
def remove_volume(request: Request, name: str):
    from labcore.runtime import volumes
    volumes.remove(name, force=request.flag("force"))


@route("POST", "/volumes/prune")
def prune_volumes(request: Request):
    from labcore.runtime import volumes
    removed, space = volumes.prune()
    return {"VolumesDeleted": removed or None, "SpaceReclaimed": space}


# --- networks: bridge, none, and user-defined bridges (labcore.runtime.networks) ------------------------------------

def forbidden(call, *args):
    """Docker answers 403 to an operation a network does not permit (removing a predefined one, ...)."""
    from labcore.runtime.networks import Forbidden
    try:
        return call(*args)
    except Forbidden as err:
        raise ApiError(403, err.message) from err


def network_inspect(record, containers: bool = True) -> dict:
    """`docker network inspect`: the record, and each running container on it with its address there."""
    from labcore.runtime import networks
    members = {}
    for container in networks.members(record) if containers else []:
        endpoint = networks.attached(container).get(record.name)
        if endpoint and container.state in (State.RUNNING, State.PAUSED):
            members[container.id] = {
                "Name": container.name, "MacAddress": endpoint.get("MacAddress", ""), "IPv6Address": "",
                "EndpointID": endpoint_settings(container, record.name, {}, endpoint)["EndpointID"],
                "IPv4Address": f"{endpoint['IPAddress']}/{endpoint['IPPrefixLen']}"}
    subnets = [{"Subnet": record.subnet, "Gateway": record.gateway}] if record.subnet else []
    return {"Name": record.name, "Id": record.id, "Created": rfc3339(record.created), "Scope": "local",
            "Driver": record.driver, "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None,
                                                                  "Config": subnets},
            "Internal": record.internal, "Attachable": record.attachable, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": members,
            "Options": record.options, "Labels": record.labels}


@route("GET", "/networks")
def list_networks(request: Request):
    from labcore.runtime import networks
    wanted = filters(request)
    for key in wanted:
        if key not in ("name", "id", "label", "driver", "type", "scope"):
            raise Invalid(f"invalid filter '{key}'")
    return [network_inspect(record, containers=False) for record in networks.all_networks()
            if network_matches(record, wanted)]


def network_matches(record, wanted: dict) -> bool:
    """Docker's network filters: name (a part of it), id (a prefix), label, driver, type custom|builtin."""
    kinds = {"builtin" if record.builtin else "custom"}
    return all((key != "name" or any(value in record.name for value in values)) and
               (key != "id" or any(record.id.startswith(value) for value in values)) and
               (key != "driver" or record.driver in values) and (key != "type" or kinds & set(values)) and
               (key != "scope" or "local" in values) and
               (key != "label" or all(record.labels.get(v.partition("=")[0]) == v.partition("=")[2] if "=" in v
                                      else v in record.labels for v in values))
               for key, values in wanted.items())


@route("GET", "/networks/{ref}")
def inspect_network(request: Request, ref: str):
    from labcore.runtime import networks
    return network_inspect(networks.find(ref))


@route("POST", "/networks/create")
def create_network(request: Request):
    """`docker network create`: 201 {"Id"}; a name taken is 409, as Docker's CheckDuplicate says."""
    from labcore.runtime import networks
    body = schema.body(request, schema.NETWORK_CREATE)
    if not body.get("Name"):
        raise Invalid("network name must not be empty")
    if body.get("EnableIPv6"):
        raise Invalid("IPv6 networks are not supported by labd: the lab's networks are IPv4")
    ipam = body.get("IPAM") or {}
    if (ipam.get("Driver") or "default") != "default":
        raise Invalid(f"IPAM driver {ipam['Driver']!r} is not supported by labd: use the default")
    pools = ipam.get("Config") or []
    if len(pools) > 1 or any(pool.get("Gateway") or pool.get("IPRange") or pool.get("AuxiliaryAddresses")
                             for pool in pools):
        raise Invalid("labd takes one IPAM pool with a Subnet alone: the gateway is its first address")
    record = forbidden(networks.create, body["Name"], body.get("Labels"), body.get("Options"),
                       pools[0].get("Subnet") if pools else None, bool(body.get("Internal")),
                       bool(body.get("Attachable")), body.get("Driver") or "bridge")
    return 201, {"Id": record.id, "Warning": ""}


@route("DELETE", "/networks/{ref}")
def remove_network(request: Request, ref: str):
    from labcore.runtime import networks
    forbidden(networks.remove, ref)
    return 204, None


@route("POST", "/networks/{ref}/connect")
def connect_network(request: Request, ref: str):
    from labcore.runtime import networks
    body = schema.body(request, schema.NETWORK_CONNECT)
    record, container = networks.find(ref), engine.find(body.get("Container") or "")
    forbidden(networks.connect, container.id, record, body.get("EndpointConfig") or {})
    return 200, None


@route("POST", "/networks/{ref}/disconnect")
def disconnect_network(request: Request, ref: str):
    from labcore.runtime import networks
    body = schema.body(request, schema.NETWORK_DISCONNECT)
    record, container = networks.find(ref), engine.find(body.get("Container") or "")
    forbidden(networks.disconnect, container.id, record)
    return 200, None


@route("POST", "/networks/prune")
def prune_networks(request: Request):
    from labcore.runtime import networks
    return {"NetworksDeleted": networks.prune() or None}


def table() -> list:
    """Every route above, as ``labd.serve`` takes them: labd is the transport, and imports no route."""
    return list(labd.ROUTES)
