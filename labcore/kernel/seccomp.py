"""seccomp: which system calls a container may make at all.

Capabilities decide what a call may do; a seccomp filter (seccomp(2), SECCOMP_SET_MODE_FILTER) decides whether
the call reaches the kernel's implementation. It is a small BPF program the kernel runs on every system call
of the process and all its descendants, for life: it sees the call's number and arguments and answers
"allow", "fail with errno N" or "kill". /proc/PID/status shows ``Seccomp: 2`` when one is loaded.

Docker loads one by default (moby profiles/seccomp/default.json, kept here as
``labcore/profiles/seccomp-default.json``, unchanged data from moby at 35797366, 2026-05). The profile is JSON:
a default action (``SCMP_ACT_ERRNO``: EPERM) and an allow-list of about 370 calls. Some entries apply only
when the container holds a capability (``includes.caps``): mount, umount2, unshare, setns, sethostname need
CAP_SYS_ADMIN; some are refused on other grounds for everyone — keyctl and add_key (the kernel keyring is
not namespaced), kexec_load, open_by_handle_at (the "shocker" escape of 2014), userfaultfd, io_uring_*.
clone is allowed only without new-namespace flags; clone3, whose flags sit in memory a filter cannot read,
fails with ENOSYS so the C library falls back to clone.

``rules_for`` resolves a profile for a container as Docker does (moby profiles/seccomp/seccomp_linux.go,
setupSeccomp): entries for another architecture, for capabilities the container lacks, or for a newer
kernel are left out. ``compile_filter`` hands the result to libseccomp (through its Python binding,
pyseccomp), which writes the BPF program for the host's architecture and its 32-bit siblings;
``labcore.kernel.confinement`` loads it in pid 1. `--security-opt seccomp=unconfined` loads nothing;
`seccomp=FILE.json` reads any Docker profile instead of the default.

Next: ``labcore.kernel.confinement`` puts capabilities, seccomp and the masked paths together in runc's order.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, NotSupportedHere
from labcore.kernel import procfs

DEFAULT_PROFILE = Path(__file__).parent / "profiles" / "seccomp-default.json"
EPERM = 1
# Go's names for the architectures, which the profile's includes/excludes use (moby: runtime.GOARCH).
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "s390x": "s390x", "ppc64le": "ppc64le",
          "riscv64": "riscv64", "i686": "386"}
_SCMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "s390x": "SCMP_ARCH_S390X",
              "ppc64le": "SCMP_ARCH_PPC64LE", "riscv64": "SCMP_ARCH_RISCV64"}
_OPS = {"SCMP_CMP_NE": "NE", "SCMP_CMP_LT": "LT", "SCMP_CMP_LE": "LE", "SCMP_CMP_EQ": "EQ",
        "SCMP_CMP_GE": "GE", "SCMP_CMP_GT": "GT", "SCMP_CMP_MASKED_EQ": "MASKED_EQ"}


@dataclass(frozen=True)
class Rule:
    """One resolved entry: these calls get this action, when their arguments match ``args``."""
    names: tuple[str, ...]
    action: str                              # SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, ...
    errno: int | None = None
    args: tuple = ()                         # (index, op, value, value_two)
    why: str = ""                            # the capability or comment that made it apply


@dataclass
class Profile:
    """A Docker seccomp profile, as read from its JSON."""
    source: str
    default_action: str
    default_errno: int | None
    arch_map: dict[str, list[str]] = field(default_factory=dict)
    syscalls: list[dict] = field(default_factory=list)


_DEFAULT: list[Profile] = []            # the default profile, read once per process
_COMPILED: dict[tuple, bytes] = {}      # capabilities -> the default profile's BPF program


def load_profile(path: str | Path | None = None) -> Profile:
    """Docker's default profile, or the Docker profile in ``path`` (`--security-opt seccomp=PATH`). The docker
    CLI reads the file itself and sends its text, so a value that starts with "{" is the profile."""
    if not path and _DEFAULT:
        return _DEFAULT[0]
    inline = isinstance(path, str) and path.lstrip().startswith("{")
    source = "(inline)" if inline else str(Path(path) if path else DEFAULT_PROFILE)
    form = "a Docker seccomp profile: JSON with defaultAction and syscalls (moby profiles/seccomp/default.json)"
    try:
        data = json.loads(path if inline else Path(source).read_text())
    except OSError as err:
        raise BadInput(f"opening seccomp profile ({source}) failed: {err.strerror}", path=source,
                       fix="give --security-opt seccomp=PATH of an existing file, or seccomp=unconfined") from err
    except ValueError as err:
        raise BadInput(f"decoding seccomp profile failed: {err}", path=source, fix=form) from err
    if not isinstance(data, dict) or "defaultAction" not in data:
        raise BadInput(f"{source} is not a seccomp profile: no defaultAction", path=source, fix=form)
    arch_map = {entry["architecture"]: entry.get("subArchitectures") or [] for entry in data.get("archMap") or []}
    for arch in data.get("architectures") or []:             # the older form: a flat list
        arch_map.setdefault(arch, [])
    profile = Profile(source, data["defaultAction"], data.get("defaultErrnoRet"), arch_map,
                      list(data.get("syscalls") or []))
    if not path:
        _DEFAULT.append(profile)
    return profile


def rules_for(profile: Profile, capabilities, machine: str | None = None, kernel: str | None = None) -> list[Rule]:
    """The entries that apply to a container holding ``capabilities`` on this architecture and kernel."""
    # os.uname(), not the platform module: the same fields, without importing it (and its regexes) per process.
    machine, kernel = machine or os.uname().machine, kernel or os.uname().release
    arch = GOARCH.get(machine, machine)
    version = procfs.kernel_version(kernel)
    held = set(capabilities)
    rules = []
    for entry in profile.syscalls:
        includes, excludes = entry.get("includes") or {}, entry.get("excludes") or {}
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        if includes.get("caps") and not set(includes["caps"]) <= held:
            continue
        if includes.get("minKernel") and version < procfs.kernel_version(includes["minKernel"]):
            continue
        if arch in (excludes.get("arches") or []) or held & set(excludes.get("caps") or []):
            continue
        names = tuple(entry.get("names") or ([entry["name"]] if entry.get("name") else []))
        args = tuple((a["index"], a["op"], a["value"], a.get("valueTwo", 0)) for a in entry.get("args") or [])
        why = ", ".join(includes.get("caps") or []) or entry.get("comment", "")
        rules.append(Rule(names, entry["action"], entry.get("errnoRet"), args, why))
    return rules


def _action(pyseccomp, action: str, errno: int | None):
    if action == "SCMP_ACT_ERRNO":
        return pyseccomp.ERRNO(EPERM if errno is None else errno)
    if action == "SCMP_ACT_TRACE":
        return pyseccomp.TRACE(EPERM if errno is None else errno)
    names = {"SCMP_ACT_ALLOW": "ALLOW", "SCMP_ACT_KILL": "KILL", "SCMP_ACT_KILL_THREAD": "KILL_THREAD",
             "SCMP_ACT_KILL_PROCESS": "KILL_PROCESS", "SCMP_ACT_TRAP": "TRAP", "SCMP_ACT_LOG": "LOG"}
    if action not in names:
        raise BadInput(f"unknown seccomp action {action!r}", fix=f"use one of {sorted(names)}, SCMP_ACT_ERRNO")
    return getattr(pyseccomp, names[action], None) or pyseccomp.KILL      # Debian's binding lacks KILL_THREAD


def binding():
    """libseccomp's Python binding: pyseccomp (PyPI, ctypes), or Debian's python3-seccomp (the ``seccomp``
    module libseccomp itself ships; the same API) for a system Python. Where neither is installed, say how."""
    try:
        import pyseccomp
        return pyseccomp
    except (ImportError, OSError):
        pass
    try:
        import seccomp
        return seccomp
    except (ImportError, OSError) as err:
        raise NotSupportedHere(f"libseccomp's Python binding is not available: {err}",
                               fix="pip install pyseccomp (./lab does), or apt-get install python3-seccomp; or "
                                   "run with --security-opt seccomp=unconfined") from err


# libseccomp's filter shape (seccomp_attr_set(3), SCMP_FLTATR_CTL_OPTIMIZE, since 2.5): 2 sorts the syscalls
# into a binary tree, where the default, 1, tests them one after the other. The same verdict for every call, in
# a few comparisons instead of hundreds; and the kernel, which runs the filter once per syscall number when it is
# loaded (seccomp_cache_prepare, kernel/seccomp.c), loads Docker's profile in 0.7 ms instead of 1.5 (this machine).
# runc and crun keep the default.
OPTIMIZE = 2


def compile_filter(profile: Profile, rules: list[Rule], machine: str | None = None):
    """A libseccomp filter for this architecture and its 32-bit siblings (the profile's archMap), as runc
    builds it (libcontainer/seccomp/seccomp_linux.go). A name libseccomp does not know on this host is
    skipped, as runc skips it; a rule with the default's own action is redundant and left out."""
    pyseccomp = binding()
    default = _action(pyseccomp, profile.default_action, profile.default_errno)
    native = _SCMP_ARCH.get(machine or os.uname().machine)
    compiled = pyseccomp.SyscallFilter(default)
    with contextlib.suppress(OSError):               # EINVAL from a libseccomp before 2.5: its one shape
        compiled.set_attr(pyseccomp.Attr.CTL_OPTIMIZE, OPTIMIZE)
    compiled.set_attr(pyseccomp.Attr.CTL_NNP, 0)      # runc: no_new_privs only when asked for, not as a side effect
    for sub in profile.arch_map.get(native, []):
        arch = getattr(pyseccomp.Arch, sub.removeprefix("SCMP_ARCH_"), None)
        if arch is not None and not compiled.exist_arch(arch):
            compiled.add_arch(arch)
    for rule in rules:
        action = _action(pyseccomp, rule.action, rule.errno)
        if action == default:
            continue
        for name in rule.names:
            if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) < 0:
                continue
            for args in _argument_groups(rule.args):
                compiled.add_rule(action, name, *(pyseccomp.Arg(index, getattr(pyseccomp, _OPS[op]), value, two)
                                                  for index, op, value, two in args))
    return compiled


def compiled_for(profile: Profile, capabilities) -> bytes:
    """The BPF program for a container holding ``capabilities``; Docker's default profile compiled once per set.
    A program is only read by the kernel, in each container's pid 1, so one may serve many containers."""
    if not any(profile is default for default in _DEFAULT):      # a profile of the user's: as it is now
        return program(compile_filter(profile, rules_for(profile, capabilities)))
    key = tuple(sorted(capabilities))
    if key not in _COMPILED:
        _COMPILED[key] = cached_program(profile, key)
    return _COMPILED[key]


def cached_program(profile: Profile, capabilities: tuple) -> bytes:
    """Docker's default profile's program, kept in <state dir>/images/seccomp/ once generated: `labcore run` then
    neither imports libseccomp's binding (which runs `ldconfig -p` twice to find the libraries) nor compiles,
    about 30 ms a start (bench breakdown). Named by what decides its content: the profile file, the
    capabilities, the architecture and the kernel (``rules_for``); written whole or not at all."""
    import hashlib
    from labcore.kernel.journal import write_whole
    machine = os.uname()
    key = [DEFAULT_PROFILE.read_bytes(), *capabilities, machine.machine, machine.release, f"optimize={OPTIMIZE}"]
    name = hashlib.sha256(b"\0".join(k if isinstance(k, bytes) else k.encode() for k in key)).hexdigest()
    path = paths.images_dir() / "seccomp" / f"{name[:32]}.bpf"     # with the unpacked layers: caches, not state
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    data = program(compile_filter(profile, rules_for(profile, capabilities)))
    # Another start may have written the same program meanwhile (FileExistsError); a state dir this user cannot
    # write to costs the next start a compile, nothing more.
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_whole(path, data)
    return data


def program(compiled) -> bytes:
    """The BPF program libseccomp generates for a filter (seccomp_export_bpf(3)): what seccomp_load would make
    in pid 1 each time, written once here (``labcore.kernel.syscalls.load_seccomp`` loads the bytes as they are);
    generating it for Docker's profile takes milliseconds (bench breakdown)."""
    fd = os.memfd_create("labcore-seccomp")
    try:
        with os.fdopen(os.dup(fd), "wb") as file:
            compiled.export_bpf(file)
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


def _argument_groups(args: tuple) -> list[tuple]:
    """libseccomp ANDs a rule's argument checks, and refuses two on the same argument: runc then adds
    one rule per check (an OR), as a profile with repeated indexes means."""
    indexes = [index for index, *_ in args]
    if len(set(indexes)) == len(indexes):
        return [args]
    return [(arg,) for arg in args]


# --- for the lesson: what the filter does to a call -----------------------------------------------------------

def verdict(profile: Profile, capabilities, name: str) -> str:
    """What the profile answers a call with no arguments matched: "allowed", "allowed for some arguments",
    or the errno, and the capability that would allow it."""
    rules = [rule for rule in rules_for(profile, capabilities) if name in rule.names]
    if any(rule.action == "SCMP_ACT_ALLOW" and not rule.args for rule in rules):
        return "allowed"
    if any(rule.action == "SCMP_ACT_ALLOW" for rule in rules):
        return "allowed for some arguments only"
    if rules:
        return f"refused: errno {rules[0].errno}"
    gated = sorted({cap for entry in profile.syscalls if name in (entry.get("names") or [])
                    for cap in (entry.get("includes") or {}).get("caps", [])})
    refusal = f"refused: EPERM (the default action, {profile.default_action})"
    return refusal + (f"; allowed with {' or '.join(gated)}" if gated else "")
