"""`docker run` as a compose service: the same request, written down as a file instead of typed once.

A `docker run` command line is said once and forgotten; a compose file (docs.docker.com/compose/compose-file)
keeps the same request as data, so `docker-compose up` makes the same container again, and again. Each flag of
`labcore run` is one key of the service:

    IMAGE, COMMAND          image, command (a list: run with no shell, as `docker run` passes its words)
    --name                  container_name, and the service's name (else the image's last name part)
    --entrypoint            entrypoint (a list of one word: docker takes it as one executable name)
    -e, -w, -u, --hostname  environment, working_dir, user, hostname
    -i, -t                  stdin_open, tty
    -p, -v, --tmpfs         ports, volumes, tmpfs
    --network               network_mode: none; a network of `labcore network create`: networks, external
    --network-alias, --mac-address     networks: NAME: aliases; mac_address
    -m, --memory-swap, --cpus, -c, --pids-limit     mem_limit, memswap_limit, cpus, cpu_shares, pids_limit
    --device-read-bps, --device-write-bps           blkio_config
    --device-cgroup-rule, --device, --privileged    device_cgroup_rules, devices, privileged
    --cap-add, --cap-drop, --security-opt, --read-only    cap_add, cap_drop, security_opt, read_only
    --group-add, --init, --pid host                 group_add, init, pid

Compose substitutes ``$NAME`` in every value from the environment it runs in; `docker run` got its words after
the shell was done with them, so each ``$`` is written ``$$``, compose's literal dollar.

-d and --rm belong to the run, not to the container: `docker-compose up -d` detaches, `docker-compose down`
removes; the file says so in a comment. --uts has no key in the file format docker-compose 1.29 reads, so it is
refused, as is any flag `labcore run` does not have: ``BadInput`` names it and what is accepted.

The file is YAML, written here for this small subset (mappings, lists, strings, numbers, booleans) rather than
with a YAML library: docker-compose 1.29 reads it with PyYAML, a YAML 1.1 parser, where ``2222:22`` unquoted is
the base-60 number 133342 (``-p 2222:22`` publishing ssh would break) and ``no`` is false, so any string that
could be read as something else is quoted (a JSON string is a valid YAML double-quoted string). Next: ``labcore.cli.composerize``, the verb.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import replace

from labcore.errors import BadInput
from labcore.runtime import spec as specs

# labcore run's limit flag (Spec.limits' key) -> the compose key, in the order a reader expects them.
LIMIT_KEYS = {"memory": "mem_limit", "memory_swap": "memswap_limit", "memory_swappiness": "mem_swappiness",
              "cpus": "cpus", "cpu_shares": "cpu_shares", "pids_limit": "pids_limit"}
THROTTLE_KEYS = {"device_read_bps": "device_read_bps", "device_write_bps": "device_write_bps"}
_PLAIN = re.compile(r"^[A-Za-z_/][\w./@+:=,-]*$")       # safe unquoted in YAML 1.1 (see the docstring)
_YAML11_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


# --- what compose can say, checked before anything is written -----------------------------------------------

def check(spec: specs.Spec) -> None:
    """BadInput for a flag the file cannot hold, or a malformed value (the checks of `labcore run` that do not
    depend on this host's objects: a network, a host path or a device may belong to the host compose runs on)."""
    if spec.uts:
        raise BadInput("--uts has no key in the compose file format of docker-compose 1.29",
                       fix="leave out --uts (Compose v2's format added `uts:`)")
    keep = spec.network if spec.network in ("bridge", "none") else "bridge"
    specs.check_spec(replace(spec, network=keep, endpoints=None, volumes=[]))
    aliases = aliases_of(spec)
    if aliases and spec.network in ("bridge", "none"):
        raise BadInput("network-scoped alias is supported only for containers in user defined networks",
                       fix="run with --network NAME, a network of `labcore network create`")
    for volume in spec.volumes:
        check_volume(volume)
    check_limits(spec.limits)
    from labcore.kernel import capabilities, confinement
    for device in spec.devices:
        confinement.device_form(device)
    confinement.parse_security_opts(spec.security_opt)
    capabilities.resolve(spec.cap_add, spec.cap_drop, spec.privileged)
    for text in spec.tmpfs:
        specs.parse_tmpfs(text)


def check_volume(volume: str) -> None:
    """-v HOST:CONTAINER[:ro|rw] with absolute paths, as `labcore run` takes it (no named volumes)."""
    host, _, rest = volume.partition(":")
    target, _, mode = rest.partition(":")
    if not (os.path.isabs(host) and os.path.isabs(target)) or mode not in ("", "ro", "rw") \
            or os.path.normpath(target) == "/":
        raise BadInput(f"invalid volume specification: {volume!r}",
                       fix="use -v HOST:CONTAINER[:ro] with absolute paths (labcore has no named volumes)")


def check_limits(limits: dict) -> None:
    """Docker's value syntax, as `labcore run` parses it; a throttle's device need not exist here."""
    from labcore.kernel.cgroups.limits import parse_size
    from labcore.kernel.cgroups.limits import parse_cpus
    rest = {flag: value for flag, value in limits.items() if flag not in THROTTLE_KEYS and flag != "cpus"}
    specs.parse_limits(specs.Spec(image="-", limits=rest))
    if "cpus" in limits:                 # the host compose runs on may have more CPUs than this one
        parse_cpus(limits["cpus"], on_this_host=False)
    for flag in THROTTLE_KEYS:
        for text in limits.get(flag, ()):
            device, sep, rate = str(text).rpartition(":")
            option = "--" + flag.replace("_", "-")
            if not sep or not device.startswith("/") or parse_size(rate, option) <= 0:
                raise BadInput(f"{option} {text!r} is not DEVICE:RATE", fix=f"e.g. {option} /dev/sda:1mb")


def aliases_of(spec: specs.Spec) -> list[str]:
    return [alias for settings in (spec.endpoints or {}).values() for alias in (settings or {}).get("Aliases", [])]


# --- the service ----------------------------------------------------------------------------------------

def service_name(spec: specs.Spec) -> str:
    """--name, else the image's last name part (``lab/hello:v1`` -> ``hello``), as a compose service name."""
    if spec.name:
        return spec.name
    name = spec.image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return re.sub(r"[^a-zA-Z0-9._-]", "-", name) or "app"


def service(spec: specs.Spec) -> dict:
    """The compose service for ``spec``: only what was asked for, in the order `docker run` reads."""
    entrypoint = None if spec.entrypoint is None else (spec.entrypoint or [""])   # [""]: what --entrypoint "" sends
    wanted = {"image": spec.image, "container_name": spec.name or None, "hostname": spec.hostname,
              "user": spec.user, "working_dir": spec.workdir, "entrypoint": entrypoint, "command": spec.cmd,
              "environment": spec.env, "stdin_open": spec.interactive, "tty": spec.tty, "init": spec.init,
              "ports": spec.publish, "volumes": spec.volumes, "tmpfs": spec.tmpfs, **network_keys(spec),
              "mac_address": spec.mac_address, **limit_keys(spec.limits),
              "privileged": spec.privileged, "cap_add": spec.cap_add, "cap_drop": spec.cap_drop,
              "security_opt": spec.security_opt, "read_only": spec.read_only, "devices": spec.devices,
              "device_cgroup_rules": spec.limits.get("device_cgroup_rule"), "group_add": spec.group_add,
              "pid": spec.pid or None}
    return {key: literal(value) for key, value in wanted.items() if value not in (None, False, [], {}, "")}


def literal(value):
    """Every ``$`` doubled: compose substitutes ``$NAME`` from its own environment in every value, where
    `docker run` got the words after the shell was done with them (``$$`` is compose's literal dollar)."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {key: literal(item) for key, item in value.items()}
    return [literal(item) for item in value] if isinstance(value, list) else value


def network_keys(spec: specs.Spec) -> dict:
    """none: network_mode; a named network: networks (with its aliases); the default bridge: nothing."""
    if spec.network == "none":
        return {"network_mode": "none"}
    if spec.network == "bridge":
        return {}
    aliases = aliases_of(spec)
    return {"networks": {spec.network: {"aliases": aliases}} if aliases else [spec.network]}


def limit_keys(limits: dict) -> dict:
    keys = {key: number_or_text(limits[flag]) for flag, key in LIMIT_KEYS.items() if limits.get(flag)}
    throttles = {key: [throttle(text) for text in limits[flag]] for flag, key in THROTTLE_KEYS.items()
                 if limits.get(flag)}
    return {**keys, "blkio_config": throttles or None}


def throttle(text: str) -> dict:
    device, _, rate = str(text).rpartition(":")
    return {"path": device, "rate": number_or_text(rate)}


def number_or_text(value):
    """``512`` -> 512, ``0.5`` -> 0.5, ``64m`` stays text: a number reads as one in the file."""
    text = str(value)
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return float(text) if re.fullmatch(r"-?\d*\.\d+", text) else text


def document(spec: specs.Spec) -> dict:
    """The whole file: the service, and each network it joins, declared external (it exists already)."""
    check(spec)
    found = {"services": {service_name(spec): service(spec)}}
    if spec.network not in ("bridge", "none"):
        found["networks"] = {spec.network: {"external": True}}
    return found


def notes(spec: specs.Spec, detach: bool = False) -> list[str]:
    """What the file cannot say about the run, as comments above it."""
    said = []
    if detach:
        said.append("-d: `docker-compose up -d` runs it in the background")
    if spec.rm:
        said.append("--rm: `docker-compose down` removes the container (`docker-compose run --rm` one-off)")
    if spec.network == "bridge":
        said.append("no --network: docker run joins the default bridge; compose joins the project's own "
                    "network, where services find each other by name (`network_mode: bridge` keeps docker run's)")
    return said


def composerize(spec: specs.Spec, detach: bool = False, command: str = "") -> str:
    """The compose file for ``spec`` as YAML text, the original command and the notes as comments on top."""
    body = document(spec)
    import textwrap
    said = ([command] if command else []) + notes(spec, detach)
    head = [f"# {line}" for text in said for line in textwrap.wrap(text, 100, subsequent_indent="  ")]
    return "\n".join(head + to_yaml(body)) + "\n"


# --- YAML, for this subset ---------------------------------------------------------------------------------

def to_yaml(value, indent: int = 0) -> list[str]:
    """Block-style YAML lines for nested dicts and lists of scalars; two spaces an indent level."""
    pad = " " * indent
    lines = []
    items = value.items() if isinstance(value, dict) else ((None, item) for item in value)
    for key, item in items:
        lead = f"{pad}{scalar(key)}:" if isinstance(value, dict) else f"{pad}-"
        if isinstance(item, (dict, list)) and item:
            nested = to_yaml(item, indent + 2)
            if isinstance(value, list) and isinstance(item, dict):     # "- key: value" starts the mapping
                lines.append(f"{lead} {nested[0].lstrip()}")
                lines += nested[1:]
            else:
                lines += [lead, *nested]
        else:
            lines.append(f"{lead} {scalar(item)}")
    return lines


def scalar(value) -> str:
    """A YAML scalar that reads back as the same value and type in YAML 1.1 and 1.2."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML11_WORDS:
        return text
    return json.dumps(text)
