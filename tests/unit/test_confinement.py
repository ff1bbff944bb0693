"""Confinement without root: Docker's rules for the flags, the profile's resolution, runc's order of calls
(recorded by syscalls.Recorder), and the v2 device program run by a small BPF interpreter."""
import errno
import struct

import pytest

from labcore.errors import BadInput, NotSupportedHere
from labcore.kernel import capabilities, confinement, seccomp, syscalls
from labcore.kernel.cgroups import devices
from labcore.kernel.cgroups.limits import DEFAULT_ALLOWED, DENY_ALL, DeviceRule
from labcore.runtime.spec import Spec
from labcore.runtime.users import Identity

ALL = capabilities.NAMES


@pytest.fixture(autouse=True)
def every_capability_held(monkeypatch):
    monkeypatch.setattr(capabilities, "held_by_this_process", lambda: ALL)


def test_dockers_default_set_is_a80425fb():
    assert capabilities.mask(capabilities.resolve()) == 0xa80425fb
    assert capabilities.decode("00000000a80425fb") == sorted(capabilities.DEFAULT, key=ALL.index)


@pytest.mark.parametrize("add, drop, privileged, expected", [
    (["SYS_ADMIN"], [], False, set(capabilities.DEFAULT) | {"CAP_SYS_ADMIN"}),
    ([], ["chown", "CAP_KILL"], False, set(capabilities.DEFAULT) - {"CAP_CHOWN", "CAP_KILL"}),
    ([], ["ALL"], False, set()),
    (["NET_ADMIN"], ["ALL"], False, {"CAP_NET_ADMIN"}),                 # moby: ALL dropped keeps the adds
    (["ALL"], ["MKNOD"], False, set(ALL) - {"CAP_MKNOD"}),
    (["CHOWN"], ["CHOWN"], False, set(capabilities.DEFAULT)),           # the add comes after the drop
    ([], ["ALL"], True, set(ALL)),
])
def test_cap_add_and_cap_drop_follow_dockers_rules(add, drop, privileged, expected):
    assert set(capabilities.resolve(add, drop, privileged)) == expected


def test_privileged_gets_only_what_this_process_holds(monkeypatch):
    monkeypatch.setattr(capabilities, "held_by_this_process", lambda: ("CAP_CHOWN", "CAP_SYS_ADMIN"))
    assert capabilities.resolve(privileged=True) == ("CAP_CHOWN", "CAP_SYS_ADMIN")


@pytest.mark.parametrize("options, expected", [
    ([], (None, False)),
    (["seccomp=unconfined"], ("unconfined", False)),
    (["seccomp:/p.json", "no-new-privileges"], ("/p.json", True)),
    (["no-new-privileges=false"], (None, False)),
    (["no-new-privileges=true"], (None, True)),
])
def test_security_opts_in_dockers_spellings(options, expected):
    assert confinement.parse_security_opts(options) == expected


@pytest.mark.parametrize("option", ["apparmor=unconfined", "label=disable", "seccomp", "no-new-privileges=yes"])
def test_security_opts_not_implemented_are_refused_not_ignored(option):
    with pytest.raises(BadInput, match="invalid --security-opt"):
        confinement.parse_security_opts([option])


@pytest.mark.parametrize("text, target, permissions", [
    ("/dev/null", "/dev/null", "rwm"), ("/dev/null:/dev/nothing", "/dev/nothing", "rwm"),
    ("/dev/null:r", "/dev/null", "r"), ("/dev/null:/dev/x:rw", "/dev/x", "rw"),
])
def test_device_flag_in_dockers_forms(text, target, permissions):
    device = confinement.parse_device(text)
    assert (device.target, device.permissions, device.kind, device.major, device.minor) == \
        (target, permissions, "c", 1, 3)


def test_default_device_rules_deny_all_then_allow_dockers_list_and_each_device():
    conf = confinement.Confinement(devices=(confinement.parse_device("/dev/null:/dev/x:r"),))
    assert confinement.device_rules(conf) == (DENY_ALL, *DEFAULT_ALLOWED, DeviceRule("c", "1", "3", "r"))
    assert confinement.device_rules(confinement.Confinement(privileged=True)) == ()


# --- the seccomp profile, resolved as Docker resolves it -------------------------------------------------------

def names_allowed(rules) -> set[str]:
    return {name for rule in rules if rule.action == "SCMP_ACT_ALLOW" for name in rule.names}


def test_the_default_profile_allows_mount_and_unshare_only_with_cap_sys_admin():
    profile = seccomp.load_profile()
    default = names_allowed(seccomp.rules_for(profile, capabilities.DEFAULT, "x86_64", "6.1"))
    admin = names_allowed(seccomp.rules_for(profile, [*capabilities.DEFAULT, "CAP_SYS_ADMIN"], "x86_64", "6.1"))
    assert {"read", "write", "execve", "clone"} <= default
    assert not {"mount", "umount2", "unshare", "setns", "keyctl", "add_key", "kexec_load"} & default
    assert {"mount", "umount2", "unshare", "setns"} <= admin and "keyctl" not in admin


def test_clone3_fails_with_enosys_unless_cap_sys_admin():
    rules = seccomp.rules_for(seccomp.load_profile(), capabilities.DEFAULT, "x86_64", "6.1")
    assert [(r.action, r.errno) for r in rules if "clone3" in r.names] == [("SCMP_ACT_ERRNO", errno.ENOSYS)]


def test_arch_and_kernel_conditions():
    profile = seccomp.load_profile()
    assert "arch_prctl" in names_allowed(seccomp.rules_for(profile, (), "x86_64", "6.1"))
    assert "arch_prctl" not in names_allowed(seccomp.rules_for(profile, (), "aarch64", "6.1"))
    ptrace_old = seccomp.rules_for(profile, (), "x86_64", "4.4")
    assert "ptrace" not in names_allowed(ptrace_old)                    # minKernel 4.8


def test_any_docker_profile_file_and_inline_json(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], '
                    '"action": "SCMP_ACT_ERRNO"}]}')
    assert seccomp.load_profile(str(path)).default_action == "SCMP_ACT_ALLOW"
    assert seccomp.load_profile(path.read_text()).syscalls[0]["names"] == ["mkdir"]
    path.write_text("[]")
    with pytest.raises(BadInput, match="not a seccomp profile"):
        seccomp.load_profile(str(path))


def test_verdicts_name_the_capability_that_would_allow_the_call():
    profile = seccomp.load_profile()
    assert seccomp.verdict(profile, capabilities.DEFAULT, "read") == "allowed"
    assert "CAP_SYS_ADMIN" in seccomp.verdict(profile, capabilities.DEFAULT, "unshare")
    assert seccomp.verdict(profile, capabilities.DEFAULT, "keyctl").startswith("refused: EPERM")


# --- runc's order, recorded ----------------------------------------------------------------------------------

def test_privileges_drop_in_runcs_order(monkeypatch):
    monkeypatch.setattr(capabilities, "last_capability", lambda: 40)
    conf = confinement.Confinement(seccomp_filter="FILTER")
    with syscalls.use(syscalls.Recorder()) as kernel:
        confinement.drop_privileges(conf, Identity(1000, 1000, (1000,)), rootless=False)
    names = kernel.names()
    assert names[0] == "load_seccomp"                           # without nnp: while CAP_SYS_ADMIN is held
    drops = [args for name, args in kernel.calls if name == "prctl" and args[0] == syscalls.PR_CAPBSET_DROP]
    assert [args[1] for args in drops] == [b for b in range(41) if not 0xa80425fb >> b & 1]
    tail = [(name, args[:2] if name == "prctl" else args) for name, args in kernel.calls
            if not (name == "prctl" and args[0] == syscalls.PR_CAPBSET_DROP)]
    assert tail[1:] == [("prctl", (syscalls.PR_SET_KEEPCAPS, 1)), ("setgroups", ([1000],)),
                        ("setresgid", (1000,)), ("setresuid", (1000,)), ("prctl", (syscalls.PR_SET_KEEPCAPS, 0)),
                        ("capset", (0xa80425fb, 0xa80425fb, 0)),
                        ("prctl", (syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL))]


def test_with_no_new_privs_the_filter_is_the_last_call_and_rootless_keeps_its_groups(monkeypatch):
    monkeypatch.setattr(capabilities, "last_capability", lambda: 40)
    conf = confinement.Confinement(seccomp_filter="FILTER", no_new_privileges=True)
    with syscalls.use(syscalls.Recorder()) as kernel:
        confinement.forbid_new_privileges(conf)
        confinement.drop_privileges(conf, Identity(0, 0, (0,)), rootless=True)
    assert kernel.calls[0] == ("prctl", (syscalls.PR_SET_NO_NEW_PRIVS, 1, 0))
    assert kernel.names()[-1] == "load_seccomp" and "setgroups" not in kernel.names()


class MissingPaths(syscalls.Recorder):
    """A kernel where some /proc files do not exist and directories refuse a /dev/null bind (ENOTDIR)."""
    def __init__(self, missing=(), directories=()):
        super().__init__()
        self.missing, self.directories = set(missing), set(directories)

    def mount(self, source, target, fstype=None, flags=0, data=None):
        self.calls.append(("mount", (source, target, fstype, flags)))
        code = errno.ENOENT if target in self.missing else errno.ENOTDIR if (
            source == "/dev/null" and target in self.directories) else 0
        if code:
            from labcore.errors import from_oserror
            raise from_oserror(OSError(code, "x"), "mount", target)

    def __getattr__(self, name):
        return super().__getattr__(name)


def test_read_only_paths_then_masks_skipping_what_this_kernel_lacks(monkeypatch):
    import os
    monkeypatch.setattr(os, "statvfs", lambda path: type("S", (), {"f_flag": syscalls.MS_NOSUID})())
    kernel = MissingPaths(missing={"/proc/kcore", "/proc/fs"}, directories={"/proc/acpi", "/sys/firmware"})
    with syscalls.use(kernel):
        confinement.finalize_root(confinement.Confinement(read_only=True))
    calls = [(args[0], args[1], args[3]) for _, args in kernel.calls]
    B, RO, REC, RE, NS = syscalls.MS_BIND, syscalls.MS_RDONLY, syscalls.MS_REC, syscalls.MS_REMOUNT, syscalls.MS_NOSUID
    assert calls[0] == (None, "/", B | RE | RO | NS)                          # --read-only: the root first
    assert calls[1:3] == [("/proc/bus", "/proc/bus", B | REC), (None, "/proc/bus", B | RE | RO | NS)]
    assert ("/proc/fs", "/proc/fs", B | REC) in calls and (None, "/proc/fs", B | RE | RO | NS) not in calls
    assert ("/dev/null", "/proc/keys", B) in calls
    assert ("tmpfs", "/sys/firmware", RO) in calls and ("tmpfs", "/proc/kcore", RO) not in calls
    masked = [target for source, target, _ in calls if source in ("/dev/null", "tmpfs")]
    assert masked == sorted(masked, key=lambda p: list(confinement.MASKED_PATHS).index(p))   # after the read-only ones


def test_a_privileged_container_masks_nothing():
    conf = confinement.confinement_for(Spec("busybox", privileged=True))
    assert (conf.masked_paths, conf.readonly_paths, conf.seccomp) == ((), (), None)
    with syscalls.use(syscalls.Recorder()) as kernel:
        confinement.finalize_root(conf)
    assert kernel.calls == []


# --- the cgroup v2 device program, run -------------------------------------------------------------------------

def run_bpf(code: bytes, access_type: int, major: int, minor: int) -> int:
    """Just enough of the eBPF interpreter for the opcodes ``devices`` emits."""
    insns = [struct.unpack("<BBhi", code[i:i + 8]) for i in range(0, len(code), 8)]
    ctx = struct.pack("<III", access_type, major, minor)
    regs, pc = [0] * 11, 0
    while True:
        op, r, off, imm = insns[pc]
        dst, src = r & 0xF, r >> 4
        pc += 1
        if op == 0x61:
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif op == 0x54:
            regs[dst] = regs[dst] & imm & 0xFFFFFFFF
        elif op == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif op == 0xbc:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif op == 0xb4:
            regs[dst] = imm & 0xFFFFFFFF
        elif op == 0x55:
            pc += off if regs[dst] != imm else 0
        elif op == 0x5d:
            pc += off if regs[dst] != regs[src] else 0
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


def access(kind: str, letters: str) -> int:
    return devices.BPF_DEVCG_DEV[kind] | sum(devices.BPF_DEVCG_ACC[c] for c in letters) << 16


def test_the_v2_device_program_allows_dockers_list_and_refuses_the_host_disk():
    code = devices.program((DENY_ALL, *DEFAULT_ALLOWED))
    assert run_bpf(code, access("c", "rw"), 1, 3) == 1                  # /dev/null
    assert run_bpf(code, access("c", "rw"), 136, 7) == 1                # a pty
    assert run_bpf(code, access("b", "m"), 254, 0) == 1                 # mknod of anything is allowed...
    assert run_bpf(code, access("b", "r"), 254, 0) == 0                 # ...opening the disk is not
    assert run_bpf(code, access("c", "r"), 1, 1) == 0                   # /dev/mem


def test_a_device_rule_grants_only_its_access():
    code = devices.program((DENY_ALL, DeviceRule("b", "254", "0", "r")))
    assert run_bpf(code, access("b", "r"), 254, 0) == 1
    assert run_bpf(code, access("b", "rw"), 254, 0) == 0
    assert run_bpf(devices.program((DENY_ALL, DeviceRule("a", "*", "*", "rwm"))), access("b", "w"), 8, 0) == 1


def test_a_deny_rule_alone_denies_that_device_and_allows_the_rest():
    code = devices.program((DeviceRule("c", "1", "3", "rwm", allow=False),))
    assert run_bpf(code, access("c", "rw"), 1, 3) == 0
    assert run_bpf(code, access("c", "rw"), 1, 5) == 1


def test_a_rule_repeating_the_default_is_refused():
    with pytest.raises(NotSupportedHere, match="deny all"):
        devices.program((DENY_ALL, DeviceRule("c", "1", "3", "rwm"), DeviceRule("c", "1", "3", "r", allow=False)))


def test_the_default_filter_is_a_bpf_program_written_once_on_the_host():
    """pid 1 hands the kernel bytes: libseccomp generated them once, in the parent (seccomp_export_bpf)."""
    pytest.importorskip("pyseccomp")
    profile = seccomp.load_profile()
    first = seccomp.compiled_for(profile, capabilities.DEFAULT)
    assert isinstance(first, bytes) and len(first) % 8 == 0 and len(first) > 8     # struct sock_filter: 8 bytes
    assert seccomp.compiled_for(profile, capabilities.DEFAULT) is first                # compiled once per set


def test_resolving_the_capabilities_reads_proc_self_status_once(monkeypatch):
    from labcore.kernel import procfs
    monkeypatch.undo()                                   # the real held_by_this_process, reading /proc
    reads = []
    real = procfs.status_field
    monkeypatch.setattr(procfs, "status_field", lambda name, *a: reads.append(name) or real(name, *a))
    held = capabilities.resolve(privileged=True)
    assert reads == ["CapBnd"]
    assert set(held) == set(capabilities.decode(real("CapBnd"))) & set(capabilities.NAMES)
