"""What a request may carry: the Engine API's bodies and query parameters, checked in one place.

A daemon is a server on a socket that anyone with access may write anything to. Docker decodes each body into
Go structs (api/types/container/config.go, hostconfig.go), so a value of the wrong type never reaches the code
that acts on it: `{"Cmd": 123}` is answered 400 with Go's words, "json: cannot unmarshal number into Go struct
field ... of type string". labd is Python, where nothing stops a number from flowing into `" ".join(...)`
and breaking `docker ps` for everyone later; so every body and every query value passes here first:

    body fields     declared below with their Go type; a wrong type is 400, with the field's name
    query values    ``query_int``, ``query_bool``, ``query_choice``: 400 naming the parameter and the range
    unimplemented   a HostConfig field labd does not implement is refused when it asks for something (a value
                    other than Go's zero value), never accepted and ignored: `--cpuset-cpus 0` that silently
                    does nothing would teach the wrong thing

Unknown fields are ignored, as Docker ignores them (they belong to newer API versions).
Next: ``labcore.api.routes`` turns the checked body into a ``Spec``.
"""
from __future__ import annotations

import math
import struct

# Docker's multiplexed framing of a container's output (logs, attach, exec): one byte for the stream (1 stdout,
# 2 stderr), three zero bytes, the payload's length as a big-endian uint32, the payload. labd writes it, the
# client reads it: one definition for both ends.
FRAME = struct.Struct(">BxxxI")


def frame(stream: int, data: bytes) -> bytes:
    return FRAME.pack(stream, len(data)) + data


class ApiError(Exception):
    """An answer in Docker's error shape: ``{"message": ...}`` with an HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Invalid(ApiError):
    def __init__(self, message: str):
        super().__init__(400, message)


# --- types, in Go's vocabulary (encoding/json's error messages name them so) ------------------------------

def json_kind(value) -> str:
    """encoding/json's name for what it found: "number", "string", "array", "object", "bool"."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return f"number {value}" if isinstance(value, float) and not value.is_integer() else "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


class Type:
    go = "?"

    def check(self, value, where: str):
        raise NotImplementedError

    def refuse(self, value, where: str):
        return Invalid(f"json: cannot unmarshal {json_kind(value)} into Go struct field {where} of type "
                       f"{self.go}")


class Plain(Type):
    """A JSON scalar that Go decodes into one Python type, or null (Go's zero value)."""

    def __init__(self, go: str, kind: type):
        self.go, self.kind = go, kind

    def check(self, value, where):
        if value is None or isinstance(value, self.kind):
            return value
        raise self.refuse(value, where)


class Int(Type):
    def __init__(self, go: str = "int64", low: int = -(1 << 63), high: int = (1 << 63) - 1):
        self.go, self.low, self.high = go, low, high

    def check(self, value, where):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and (not math.isfinite(value) or not value.is_integer())):
            raise self.refuse(value, where)
        if not self.low <= value <= self.high:
            raise Invalid(f"json: cannot unmarshal number {value} into Go struct field {where} of type {self.go}")
        return int(value)


class ListOf(Type):
    def __init__(self, item: Type):
        self.item, self.go = item, f"[]{item.go}"

    def check(self, value, where):
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.refuse(value, where)
        return [self.item.check(item, where) for item in value]


class StrSlice(Type):
    """Docker's strslice.StrSlice (Cmd, Entrypoint, Shell): a list of strings, or one string."""
    go = "string"

    def check(self, value, where):
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise self.refuse(value, where)
        for item in value:
            if not isinstance(item, str):
                raise self.refuse(item, where)
        return value


class MapOf(Type):
    def __init__(self, item: Type | None):
        self.item = item
        self.go = f"map[string]{item.go if item else 'struct {}'}"

    def check(self, value, where):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.refuse(value, where)
        return {key: self.item.check(item, where) if self.item else item for key, item in value.items()}


class Struct(Type):
    def __init__(self, go: str, fields: dict[str, Type]):
        self.go, self.fields = go, fields

    def check(self, value, where=None):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.refuse(value, where or self.go)
        # Go's encoding/json matches field names without regard to case: "detachKeys" is DetachKeys.
        canonical = {name.lower(): name for name in self.fields}
        checked = {canonical.get(key.lower(), key): item for key, item in value.items()}
        value = checked
        for name, kind in self.fields.items():
            if name in value:
                checked[name] = kind.check(value[name], f"{self.go}.{name}")
        return checked

    def refuse(self, value, where):
        if where == self.go:                        # the whole body: Go names the type, not a field
            return Invalid(f"json: cannot unmarshal {json_kind(value)} into Go value of type {self.go}")
        return super().refuse(value, where)


class Any(Type):
    go = "interface {}"

    def check(self, value, where):
        return value


STR, BOOL, INT, UINT16 = Plain("string", str), Plain("bool", bool), Int(), Int("uint16", 0, 65535)
STRS = ListOf(STR)
THROTTLE = ListOf(Struct("ThrottleDevice", {"Path": STR, "Rate": Int("uint64", 0, (1 << 64) - 1)}))

MOUNT = Struct("Mount", {
    "Type": STR, "Source": STR, "Target": STR, "ReadOnly": BOOL, "Consistency": STR,
    "BindOptions": Struct("BindOptions", {"Propagation": STR, "NonRecursive": BOOL}),
    "VolumeOptions": Struct("VolumeOptions", {"NoCopy": BOOL, "Labels": MapOf(STR), "Subpath": STR,
                                              "DriverConfig": Struct("Driver", {"Name": STR,
                                                                                "Options": MapOf(STR)})}),
    "TmpfsOptions": Struct("TmpfsOptions", {"SizeBytes": INT, "Mode": Int("uint32", 0, 0o7777)}),
})

HOST_CONFIG = Struct("HostConfig", {
    # what labd implements (labcore.api.routes.spec_from_body reads each of these)
    "Binds": STRS, "AutoRemove": BOOL, "NetworkMode": STR, "VolumesFrom": STRS, "Links": STRS,
    "PortBindings": MapOf(ListOf(Struct("PortBinding", {"HostIp": STR, "HostPort": STR}))),
    "LogConfig": Struct("LogConfig", {"Type": STR, "Config": MapOf(STR)}),
    "RestartPolicy": Struct("RestartPolicy", {"Name": STR, "MaximumRetryCount": Int("int", 0)}),
    "Memory": Int(low=0), "MemorySwap": Int(low=-1), "NanoCpus": Int(low=0), "CpuShares": Int(low=0),
    "PidsLimit": INT, "BlkioDeviceReadBps": THROTTLE, "BlkioDeviceWriteBps": THROTTLE,
    "DeviceCgroupRules": STRS, "GroupAdd": STRS, "Tmpfs": MapOf(STR), "Mounts": ListOf(MOUNT), "Init": BOOL,
    "CgroupnsMode": STR, "Isolation": STR, "ConsoleSize": ListOf(Int("uint", 0, (1 << 32) - 1)),
    "VolumeDriver": STR, "PidMode": STR, "UTSMode": STR, "MemorySwappiness": Int(low=-1, high=100),
    # confinement (labcore.kernel.confinement; dockerapi.security_from_host_config makes them the Spec's fields)
    "Privileged": BOOL, "CapAdd": StrSlice(), "CapDrop": StrSlice(), "SecurityOpt": STRS, "ReadonlyRootfs": BOOL,
    "Devices": ListOf(Struct("DeviceMapping", {"PathOnHost": STR, "PathInContainer": STR,
                                               "CgroupPermissions": STR})),
    # known to Docker, not implemented by labd: refused when set (UNIMPLEMENTED)
    "ContainerIDFile": STR, "Dns": STRS, "DnsOptions": STRS, "DnsSearch": STRS, "ExtraHosts": STRS,
    "IpcMode": STR, "Cgroup": STR, "OomScoreAdj": Int("int"), "PublishAllPorts": BOOL,
    "StorageOpt": MapOf(STR), "UsernsMode": STR, "ShmSize": Int(low=0), "Sysctls": MapOf(STR),
    "Runtime": STR, "CgroupParent": STR, "BlkioWeight": UINT16, "BlkioWeightDevice": ListOf(Any()),
    "BlkioDeviceReadIOps": ListOf(Any()), "BlkioDeviceWriteIOps": ListOf(Any()), "CpuPeriod": INT,
    "CpuQuota": INT, "CpuRealtimePeriod": INT, "CpuRealtimeRuntime": INT, "CpusetCpus": STR, "CpusetMems": STR,
    "DeviceRequests": ListOf(Any()), "KernelMemory": INT, "KernelMemoryTCP": INT, "MemoryReservation": INT,
    "OomKillDisable": BOOL, "Ulimits": ListOf(Any()), "CpuCount": INT,
    "CpuPercent": INT, "IOMaximumIOps": INT, "IOMaximumBandwidth": INT, "MaskedPaths": STRS,
    "ReadonlyPaths": STRS, "Annotations": MapOf(STR),
})

UNIMPLEMENTED = tuple(name for name in HOST_CONFIG.fields if name in (
    "ContainerIDFile", "Dns", "DnsOptions", "DnsSearch", "ExtraHosts", "IpcMode", "Cgroup", "OomScoreAdj",
    "PublishAllPorts", "StorageOpt", "UsernsMode", "ShmSize", "Sysctls", "Runtime",
    "CgroupParent", "BlkioWeight", "BlkioWeightDevice", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps",
    "CpuPeriod", "CpuQuota", "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems",
    "DeviceRequests", "KernelMemory", "KernelMemoryTCP", "MemoryReservation",
    "OomKillDisable", "Ulimits", "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth",
    "MaskedPaths", "ReadonlyPaths", "Annotations"))

# Values that ask for nothing beyond the default, though not Go's zero value: what the docker CLI sends.
DEFAULTS = {"IpcMode": ("", "private", "shareable"), "UsernsMode": ("", "private"), "Cgroup": ("", "private"),
            "Runtime": ("", "labcore"), "ShmSize": (0, 64 << 20), "OomKillDisable": (False, None)}

ENDPOINT_SETTINGS = Struct("EndpointSettings", {
    "IPAMConfig": Struct("EndpointIPAMConfig", {"IPv4Address": STR, "IPv6Address": STR, "LinkLocalIPs": STRS}),
    "Links": STRS, "Aliases": STRS, "MacAddress": STR, "DriverOpts": MapOf(STR), "NetworkID": STR,
    "EndpointID": STR, "Gateway": STR, "IPAddress": STR, "IPPrefixLen": Int("int"), "IPv6Gateway": STR,
    "GlobalIPv6Address": STR, "GlobalIPv6PrefixLen": Int("int"), "DNSNames": STRS,
})
NETWORKING_CONFIG = Struct("NetworkingConfig", {"EndpointsConfig": MapOf(ENDPOINT_SETTINGS)})

NETWORK_CREATE = Struct("NetworkCreateRequest", {
    "Name": STR, "CheckDuplicate": BOOL, "Driver": STR, "Scope": STR, "EnableIPv6": BOOL, "Internal": BOOL,
    "Attachable": BOOL, "Ingress": BOOL, "ConfigOnly": BOOL, "Options": MapOf(STR), "Labels": MapOf(STR),
    "IPAM": Struct("IPAM", {"Driver": STR, "Options": MapOf(STR), "Config": ListOf(Struct("IPAMConfig", {
        "Subnet": STR, "IPRange": STR, "Gateway": STR, "AuxiliaryAddresses": MapOf(STR)}))}),
})
NETWORK_CONNECT = Struct("NetworkConnect", {"Container": STR, "EndpointConfig": ENDPOINT_SETTINGS})
NETWORK_DISCONNECT = Struct("NetworkDisconnect", {"Container": STR, "Force": BOOL})

CONFIG = Struct("ContainerConfigWrapper", {
    "Hostname": STR, "Domainname": STR, "User": STR, "AttachStdin": BOOL, "AttachStdout": BOOL,
    "AttachStderr": BOOL, "ExposedPorts": MapOf(None), "Tty": BOOL, "OpenStdin": BOOL, "StdinOnce": BOOL,
    "Env": STRS, "Cmd": StrSlice(), "Healthcheck": Any(), "ArgsEscaped": BOOL, "Image": STR,
    "Volumes": MapOf(None), "WorkingDir": STR, "Entrypoint": StrSlice(), "NetworkDisabled": BOOL,
    "MacAddress": STR, "OnBuild": STRS, "Labels": MapOf(STR), "StopSignal": STR, "StopTimeout": Int("int"),
    "Shell": StrSlice(), "HostConfig": HOST_CONFIG, "NetworkingConfig": NETWORKING_CONFIG,
})

EXEC_CONFIG = Struct("ExecConfig", {
    "User": STR, "Privileged": BOOL, "Tty": BOOL, "ConsoleSize": ListOf(Int("uint", 0, (1 << 32) - 1)),
    "AttachStdin": BOOL, "AttachStderr": BOOL, "AttachStdout": BOOL, "Detach": BOOL, "DetachKeys": STR,
    "Env": STRS, "WorkingDir": STR, "Cmd": StrSlice(),
})

EXEC_START = Struct("ExecStartCheck", {"Detach": BOOL, "Tty": BOOL,
                                       "ConsoleSize": ListOf(Int("uint", 0, (1 << 32) - 1))})

UPDATE_CONFIG = Struct("UpdateConfig", {name: HOST_CONFIG.fields[name] for name in (
    "Memory", "MemorySwap", "NanoCpus", "CpuShares", "PidsLimit", "RestartPolicy", "BlkioWeight", "CpuPeriod",
    "CpuQuota", "CpusetCpus", "CpusetMems", "MemoryReservation", "KernelMemory", "CpuRealtimePeriod",
    "CpuRealtimeRuntime")})


def body(request, schema: Struct, required: bool = True) -> dict:
    """The request's JSON body, checked against ``schema``; {} for an empty body unless ``required``."""
    value = request.json()
    if value is None:
        if required:
            raise Invalid("request body is empty: a JSON object is expected")
        return {}
    return schema.check(value)


def asks_for_something(name: str, value) -> bool:
    return value not in (None, "", 0, False, [], {}) and value not in DEFAULTS.get(name, ())


def refuse_unimplemented(host: dict) -> None:
    """400 for the first HostConfig field labd would otherwise accept and ignore, naming it."""
    for name in UNIMPLEMENTED:
        if asks_for_something(name, host.get(name)):
            raise Invalid(f"HostConfig.{name} is not supported by labd (a teaching daemon implements the flags "
                          "the course uses): "
                          f"leave it out, or use a real Docker for it")


# --- query parameters -----------------------------------------------------------------------------------

def query_bool(query: dict, name: str, default: bool = False) -> bool:
    """Docker's rule (api/server/httputils BoolValue): "", "0", "no", "false", "none" are false, else true."""
    value = query.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "no", "false", "none")


def query_int(query: dict, name: str, default: int | None = None, low: int | None = None,
              high: int | None = None) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value.strip(), 10)
    except ValueError:
        raise Invalid(f"invalid value for {name}: {value[:40]!r}: an integer is expected") from None
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise Invalid(f"invalid value for {name}: {number}: it must be {bounds}")
    return number


def query_choice(query: dict, name: str, choices: tuple[str, ...], default: str) -> str:
    value = query.get(name) or default
    if value not in choices:
        raise Invalid(f"invalid {name}: {value[:40]!r}: use one of {', '.join(choices)}")
    return value


def signal_number(text: str) -> int:
    """Docker accepts a number, a name with or without SIG: 9, KILL, SIGKILL; 400 for anything else."""
    from labcore.errors import BadInput
    from labcore.runtime.spec import parse_signal
    try:
        return parse_signal(text)
    except BadInput as err:
        raise Invalid(err.message) from None
