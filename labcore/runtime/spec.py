"""What `docker run` is asked for, and the plan it becomes — every refusal before anything exists.

A ``Spec`` holds the user's words: image, command, -e, -w, --user, limits, volumes, ports. ``plan_for`` resolves
them against the image's config, following Docker's rules ("ENTRYPOINT and CMD" in the Dockerfile reference):

    argv      the image's Entrypoint + Cmd; a command given to `run` replaces Cmd; --entrypoint replaces
              Entrypoint and drops Cmd (it was written for the old entrypoint)
    env       PATH and HOSTNAME as Docker sets them, the image's Env, then -e (NAME alone passes yours on)
    workdir   -w, else the image's WorkingDir, else /
    user      --user NAME|UID[:GROUP|GID], else the image's User, else root; resolved in the image's
              /etc/passwd and /etc/group by pid 1 (``labcore.runtime.users``), with the supplementary groups
    confined  Docker's default confinement, changed by --privileged, --cap-add/--cap-drop, --security-opt,
              --read-only and --device (``labcore.kernel.confinement``)

Every malformed value is refused here with ``BadInput`` naming the accepted form, so a bad `labcore run`
changes nothing on the host. Next: ``labcore.runtime.container`` turns a plan into processes.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from labcore import paths
from labcore.errors import BadInput, NotFound

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"    # Docker's, as well
_USER = re.compile(r"^(\d+)(?::(\d+))?$")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")                                # docker's container names
_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,62})$")
_ENV_NAME = re.compile(r"^[^=\s]+$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass
class Spec:
    """What `docker run` is asked for. ``cmd``/``entrypoint`` None means "the image's"."""
    image: str
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None       # [] clears the image's, as --entrypoint "" does
    env: list[str] = field(default_factory=list)      # K=V, or K to pass the caller's value on
    workdir: str | None = None
    user: str | None = None                   # UID or UID:GID
    hostname: str | None = None               # default: the first 12 hex digits of the id
    tty: bool = False
    interactive: bool = False
    name: str = ""
    rm: bool = False
    limits: dict = field(default_factory=dict)   # Docker's flag values: {"memory": "64m", "cpus": "0.5", ...}
    network: str = "bridge"                   # Docker's default; "none": loopback only; or a network's name
    mac_address: str | None = None            # --mac-address, of eth0 (default: made of its address)
    endpoints: dict | None = None             # every network it joins, when not just ``network``:
                                              # {name: {"Aliases": [...], "DriverOpts": {...}}}
    publish: list[str] = field(default_factory=list)  # -p [127.0.0.1:]HOST:CONTAINER
    volumes: list[str] = field(default_factory=list)  # -v HOST:CONTAINER[:ro], Docker's HostConfig.Binds
    privileged: bool = False                  # every capability and device, no seccomp, nothing masked
    cap_add: list[str] = field(default_factory=list)      # capability names, or ALL
    cap_drop: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)  # seccomp=unconfined|PATH, no-new-privileges
    read_only: bool = False                   # the root filesystem mounted read-only
    devices: list[str] = field(default_factory=list)  # --device HOST[:CONTAINER[:PERMISSIONS]]
    group_add: list[str] = field(default_factory=list)  # --group-add GID: supplementary groups
    tmpfs: list[str] = field(default_factory=list)    # --tmpfs PATH[:OPTIONS]: a tmpfs mounted at PATH
    init: bool = False                        # --init: Docker's docker-init (tini) as pid 1, the command its child
    pid: str = ""                             # --pid host: the host's pid namespace instead of a new one
    uts: str = ""                             # --uts host: the host's hostname (UTS namespace)
    id: str = field(default_factory=lambda: os.urandom(32).hex())


@dataclass
class Plan:
    """A spec resolved against its image: exactly what pid 1 will run, where, and as whom."""
    id: str
    image: object
    root: str
    argv: list[str]
    env: list[str]
    workdir: str
    uid: int
    gid: int
    hostname: str
    rootless: bool
    limits: object = None                     # labcore.kernel.cgroups.limits.Limits
    volumes: list = field(default_factory=list)   # (host, target, read_only), from parse_volume
    layers: object = None                     # labcore.image.layers.RootLayers: what pid 1 mounts, made by create()
    user: str = "0"                           # NAME|UID[:GROUP|GID], resolved in the image by pid 1
    confinement: object = None                # labcore.kernel.confinement.Confinement
    groups: list = field(default_factory=list)    # --group-add: more groups, resolved in the image by pid 1
    tmpfs: list = field(default_factory=list)     # (target, mount options), from parse_tmpfs
    shared: int = 0                           # CLONE_NEW* flags *not* to unshare: --pid host, --uts host


# --- checking and resolving, before anything exists ------------------------------------------------------

def check_spec(spec: Spec) -> None:
    """Refuse malformed values from the user (BadInput naming the accepted form), before any change."""
    if not re.fullmatch(r"[0-9a-f]{64}", spec.id):
        raise BadInput(f"invalid container id {spec.id!r}", fix="an id is 64 lowercase hex digits")
    if spec.name and not _NAME.match(spec.name):
        raise BadInput(f"invalid container name {spec.name!r}", fix="only [a-zA-Z0-9][a-zA-Z0-9_.-]+ are allowed")
    if spec.hostname is not None and not _HOSTNAME.match(spec.hostname):
        raise BadInput(f"invalid hostname {spec.hostname!r}",
                       fix="letters, digits, '-' and '.', at most 64 characters (sethostname(2))")
    for item in spec.env:
        if not _ENV_NAME.match(item.split("=", 1)[0]):
            raise BadInput(f"invalid environment variable: {item}", fix="use -e NAME=VALUE, or -e NAME")
    if spec.workdir is not None and not spec.workdir.startswith("/"):
        raise BadInput(f"the working directory {spec.workdir!r} is invalid", fix="it needs to be an absolute path")
    if spec.user is not None:
        from labcore.runtime.users import check_user
        check_user(spec.user)
    for group in spec.group_add:
        parse_group(group)
    for flag, mode in (("--pid", spec.pid), ("--uts", spec.uts)):
        if mode not in ("", "host"):
            raise BadInput(f"invalid {flag} mode {mode!r}", fix=f"use {flag} host, or leave it out for a new namespace")
    if spec.uts == "host" and spec.hostname:
        raise BadInput("Conflicting options: hostname and the UTS mode", fix="drop --hostname, or --uts host")
    check_networks(spec)
    if spec.mac_address is not None and not _MAC.match(spec.mac_address):
        raise BadInput(f"invalid MAC address {spec.mac_address!r}", fix="six hex bytes, e.g. 02:42:ac:11:00:0a")
    if spec.publish and spec.network == "none":
        raise BadInput("published ports need a network", fix="drop --network none, or drop -p")
    if spec.publish:
        from labcore.kernel import network
        for mapping in spec.publish:
            network.parse_publish(mapping)
    for volume in spec.volumes:
        parse_volume(volume)


def check_networks(spec: Spec) -> None:
    """The network and every one of ``endpoints`` must exist (``labcore.runtime.networks``); host and container:ID
    networking are not the lab's."""
    if spec.network in ("host",) or spec.network.startswith("container:"):
        raise BadInput(f"--network {spec.network} is not supported by the lab",
                       fix="use bridge (the default), none, or a network of `labcore network create`")
    if spec.network in ("bridge", "none") and not spec.endpoints:
        return                                # the common case, without importing the network modules
    from labcore.runtime import networks
    networks.check_endpoints(spec.network, spec.endpoints)
    networks.wanted(spec)                     # NotFound: "network NAME not found"


def parse_volume(volume: str) -> tuple[str, str, bool]:
    """-v ``HOST:CONTAINER[:ro]`` (Docker's syntax) -> (host, target, read_only). HOST is an existing
    absolute path: labcore has no named volumes, and does not create a missing HOST as Docker's -v does."""
    form = "use -v HOST:CONTAINER[:ro] with absolute paths and an existing HOST, e.g. -v /srv/data:/data:ro"
    host, _, rest = volume.partition(":")
    target, _, mode = rest.partition(":")
    if not (os.path.isabs(host) and os.path.isabs(target)) or mode not in ("", "ro", "rw"):
        raise BadInput(f"invalid volume specification: {volume!r}", fix=form)
    if not os.path.exists(host):
        raise BadInput(f"bind source path does not exist: {host}", fix=form)
    if os.path.normpath(target) == "/":
        raise BadInput(f"invalid volume specification: {volume!r}: the destination can't be '/'", fix=form)
    return host, os.path.normpath(target), mode == "ro"


def parse_user(user: str) -> tuple[int, int]:
    """``UID`` or ``UID:GID`` -> (uid, gid); the gid is 0 when not given. A name counts as uid 0 here, where
    only HOME depends on it; pid 1 looks it up in the image (``labcore.runtime.users``)."""
    if re.match(r"^[A-Za-z_]", user):
        return (0 if user.partition(":")[0] == "root" else -1), 0
    match = _USER.match(user)
    if not match:
        raise BadInput(f"invalid user {user!r}: labcore accepts a numeric UID or UID:GID",
                       fix="e.g. --user 1000 or --user 1000:1000 (names from the image's /etc/passwd are not "
                           "looked up)")
    return int(match[1]), int(match[2] or 0)


def command_line(config: dict, spec: Spec) -> list[str]:
    """Docker's rule: Entrypoint + Cmd, where the spec's own values replace the image's."""
    entrypoint = spec.entrypoint if spec.entrypoint is not None else (config.get("Entrypoint") or [])
    if spec.cmd:
        cmd = spec.cmd
    elif spec.entrypoint is not None:
        cmd = []                   # --entrypoint drops the image's Cmd: it was written for the old entrypoint
    else:
        cmd = config.get("Cmd") or []
    argv = list(entrypoint) + list(cmd)
    if not argv:
        raise BadInput("no command specified", fix="give a command after the image name, or --entrypoint")
    return argv


def environment(config: dict, spec: Spec, hostname: str, uid: int) -> list[str]:
    """The image's Env, then -e; PATH, HOSTNAME, TERM (with -t) and HOME as Docker adds them."""
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    if spec.tty:
        env["TERM"] = "xterm"
    for item in [*(config.get("Env") or []), *spec.env]:
        name, equals, value = item.partition("=")
        if equals:
            env[name] = value
        elif name in os.environ:   # `-e NAME` passes the caller's value on, and drops NAME if it has none
            env[name] = os.environ[name]
        else:
            env.pop(name, None)
    env.setdefault("HOME", "/root" if uid == 0 else "/")      # -1: a user name, looked up later
    return [f"{name}={value}" for name, value in env.items()]


def find_image(ref: str):
    """The image by reference; busybox is built from the host the first time, as `docker run` would pull."""
    from labcore.image import oci
    try:
        return oci.Store().resolve(ref)
    except NotFound:
        if ref not in ("busybox", oci.BASE_IMAGE):
            raise
        from labcore.image.baseimage import ensure_base_image
        return ensure_base_image()


def parse_limits(spec: Spec):
    """The cgroup limits asked for, parsed with Docker's value syntax (BadInput for `--memory 10XB`)."""
    from labcore.kernel.cgroups.limits import parse_run_limits
    try:
        return parse_run_limits(**spec.limits)
    except TypeError as err:
        raise BadInput(f"unknown resource limit in {sorted(spec.limits)}",
                       fix="use memory, memory_swap, cpus, cpu_shares, pids_limit, device_read_bps, "
                           "device_write_bps, device_cgroup_rule") from err


def plan_for(spec: Spec) -> Plan:
    """Resolve ``spec`` against its image. Every refusal (BadInput, NotFound) happens here."""
    from labcore.kernel.confinement import confinement_for
    check_spec(spec)
    limits = parse_limits(spec)
    confinement = confinement_for(spec)
    image = find_image(spec.image)
    user = spec.user or image.config.get("User") or "0"
    uid, gid = parse_user(user)
    hostname = os.uname().nodename if spec.uts == "host" else spec.hostname or spec.id[:12]
    rootless = os.geteuid() != 0
    argv, volumes = command_line(image.config, spec), [parse_volume(volume) for volume in spec.volumes]
    if spec.init:
        argv, volumes = [INIT_PATH, "--", *argv], [*volumes, (find_init(), INIT_PATH, True)]
    return Plan(id=spec.id, image=image, root=str(paths.containers_dir() / spec.id / "rootfs"),
                argv=argv, env=environment(image.config, spec, hostname, uid),
                workdir=spec.workdir or image.config.get("WorkingDir") or "/", uid=uid, gid=gid,
                hostname=hostname, rootless=rootless, limits=with_device_rules(limits, confinement, rootless),
                volumes=volumes, user=user, confinement=confinement, groups=list(spec.group_add),
                tmpfs=[parse_tmpfs(text) for text in spec.tmpfs], shared=shared_namespaces(spec))


def with_device_rules(limits, confinement, rootless: bool):
    """Docker's device allow-list joins the limits of every container it can be enforced on: as root (a
    user namespace has no device cgroup, and refuses mknod of a device anyway) and not --privileged.
    --device-cgroup-rule adds to it."""
    from dataclasses import replace
    from labcore.kernel.confinement import device_rules
    rules = device_rules(confinement)
    if rootless or not rules:
        return limits
    extra = tuple(rule for rule in limits.devices if rule not in rules)
    return replace(limits, devices=rules + extra)


def shared_namespaces(spec: Spec) -> int:
    """--pid host, --uts host: the namespaces the container keeps sharing with the host (CLONE_NEW* flags)."""
    from labcore.kernel import syscalls
    return ((syscalls.CLONE_NEWPID if spec.pid == "host" else 0)
            | (syscalls.CLONE_NEWUTS if spec.uts == "host" else 0))


INIT_PATH = "/sbin/docker-init"       # where Docker puts its init in the container (daemon/oci_linux.go)


def find_init() -> str:
    """--init: Docker's docker-init, which is tini built static (it runs in any image), bind-mounted in."""
    import shutil
    found = shutil.which("docker-init") or shutil.which("tini-static")
    if not found:
        raise BadInput("--init needs docker-init (tini, static), which is not installed here",
                       fix="apt-get install docker.io (it ships /usr/bin/docker-init), or run without --init")
    return os.path.realpath(found)


def parse_group(group: str) -> str:
    """--group-add GID or NAME; a name is the image's (/etc/group inside), looked up by pid 1."""
    from labcore.runtime.users import USER_FORM
    if not USER_FORM.match(str(group)) or ":" in str(group):
        raise BadInput(f"invalid --group-add {group!r}", fix="a GID or a group name, e.g. --group-add 1000")
    return str(group)


def parse_tmpfs(text: str) -> tuple[str, str]:
    """--tmpfs PATH[:OPTIONS], e.g. /run:size=64m,mode=1777 -> (PATH, mount(8) options for tmpfs)."""
    target, _, options = text.partition(":")
    if not os.path.isabs(target) or os.path.normpath(target) == "/":
        raise BadInput(f"invalid tmpfs {text!r}: the path must be absolute and not /",
                       fix="use --tmpfs /PATH[:size=64m,mode=1777]")
    for option in filter(None, options.split(",")):
        name = option.split("=", 1)[0]
        if name not in ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "ro", "rw", "noexec",
                        "exec", "nosuid", "suid", "nodev", "dev"):
            raise BadInput(f"invalid tmpfs option {option!r} in {text!r}",
                           fix="use size, mode, uid, gid, nr_inodes, ro, noexec, nosuid, nodev")
    return os.path.normpath(target), options


def parse_signal(text) -> int:
    """Docker accepts a number, a name with or without SIG: 9, KILL, SIGKILL (`docker kill -s`, StopSignal)."""
    import signal
    text = str(text).strip()
    if text.isdigit() and 0 < int(text) < signal.NSIG:
        return int(text)
    try:
        return int(signal.Signals["SIG" + text.upper().removeprefix("SIG")])
    except KeyError:
        raise BadInput(f"Invalid signal: {text[:40]}", fix="use a number or a name: 9, KILL, SIGKILL") from None
