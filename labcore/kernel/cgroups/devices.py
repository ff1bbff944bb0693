"""The device controller: which device nodes a container may open or create, whatever its capabilities.

CAP_MKNOD lets root in a container create a node for any device number: ``mknod /tmp/disk b 254 0`` names the
host's disk. What stops it from reading that disk is the device cgroup, consulted on every open(2) and mknod(2)
of a device node. Docker denies everything, then allows null, zero, full, random, urandom, tty, console,
ptmx and the ptys (moby daemon/pkg/oci/defaults.go; runc libcontainer/specconv AllowedDevices), and whatever
`--device` or `--device-cgroup-rule` adds. `--privileged` allows all.

    v1   two files per group: one rule per write to devices.deny / devices.allow ("c 1:3 rwm"), read back
         from devices.list (cgroup-v1/devices.rst) — ``labcore.kernel.cgroups.v1`` writes them
    v2   no files: a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the group answers each access
         (cgroup-v2.rst, "Device controller"). ``program`` writes it as runc does
         (libcontainer/cgroups/ebpf/devicefilter/devicefilter.go): read the access type, major and minor
         from the context, then one block per rule — the first block that matches answers (1 allow,
         0 deny) — and the default at the end. ``attach`` loads it with bpf(BPF_PROG_LOAD) and attaches
         it to the group with bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE).
"""
from __future__ import annotations

import ctypes
import os
import struct

from labcore.errors import NotSupportedHere
from labcore.kernel import syscalls

# <linux/bpf.h>
BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
BPF_DEVCG_ACC = {"m": 1, "r": 2, "w": 4}
BPF_DEVCG_DEV = {"b": 1, "c": 2}
R0, R1, R2, R3, R4, R5 = range(6)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """struct bpf_insn: opcode, dst and src registers in one byte, a 16-bit offset, a 32-bit immediate."""
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def load_word(dst: int, offset: int) -> bytes:        # dst = *(u32 *)(r1 + offset)
    return _insn(0x61, dst, R1, offset)


def and32(dst: int, imm: int) -> bytes:
    return _insn(0x54, dst, imm=imm)


def rsh32(dst: int, imm: int) -> bytes:
    return _insn(0x74, dst, imm=imm)


def mov32_reg(dst: int, src: int) -> bytes:
    return _insn(0xbc, dst, src)


def mov32(dst: int, imm: int) -> bytes:
    return _insn(0xb4, dst, imm=imm)


def jne(dst: int, imm: int, skip: int) -> bytes:      # if dst != imm: jump over ``skip`` instructions
    return _insn(0x55, dst, off=skip, imm=imm)


def jne_reg(dst: int, src: int, skip: int) -> bytes:
    return _insn(0x5d, dst, src, off=skip)


def leave() -> bytes:
    return _insn(0x95)


def _rule_block(rule) -> list[bytes]:
    """The checks of one rule, each jumping past the block when it fails, then "return 1" (allow) or 0."""
    checks: list[tuple] = [("jne", R2, BPF_DEVCG_DEV[rule.kind])]
    access = sum(BPF_DEVCG_ACC[letter] for letter in set(rule.access))
    if access != 7:          # r1 = access & allowed; the asked access must lie within the rule's
        checks += [("mov", R1, R3), ("and", R1, access), ("jne_reg", R1, R3)]
    if rule.major != "*":
        checks.append(("jne", R4, int(rule.major)))
    if rule.minor != "*":
        checks.append(("jne", R5, int(rule.minor)))
    block, total = [], len(checks) + 2
    for position, check in enumerate(checks):
        skip = total - position - 1          # past the rest of the block: to the next one
        if check[0] == "jne":
            block.append(jne(check[1], check[2], skip))
        elif check[0] == "jne_reg":
            block.append(jne_reg(check[1], check[2], skip))
        elif check[0] == "mov":
            block.append(mov32_reg(check[1], check[2]))
        else:
            block.append(and32(check[1], check[2]))
    return block + [mov32(R0, int(rule.allow)), leave()]


def program(rules) -> bytes:
    """The BPF program for a v1-style rule list. A group starts allowing everything; "deny all" first turns
    that around (Docker's lists). After it, each rule is an exception to that default: a block that returns
    its own answer when the access matches, as runc's emulator reduces a list (devicefilter.go)."""
    default = True
    if rules and rules[0].kind == "a":
        default, rules = rules[0].allow, rules[1:]
    # struct bpf_cgroup_dev_ctx: u32 access_type (type in the low 16 bits, access in the high), major, minor.
    code = [load_word(R2, 0), and32(R2, 0xFFFF), load_word(R3, 0), rsh32(R3, 16), load_word(R4, 4),
            load_word(R5, 8)]
    for rule in rules:
        if rule.allow == default:
            raise NotSupportedHere(f"the device rule {rule} repeats the default ({'allow' if default else 'deny'} "
                                   f"all) after an exception: runc's emulator would be needed on cgroup v2",
                                   fix="list 'deny all' first, then only allow rules, as Docker does")
        if rule.kind == "a":
            return b"".join(code + [mov32(R0, int(rule.allow)), leave()])
        code += _rule_block(rule)
    return b"".join(code + [mov32(R0, int(default)), leave()])


def attach(directory, rules) -> None:
    """Load the program and attach it to the cgroup ``directory``; it stays until the group is removed."""
    code = program(rules)
    instructions = ctypes.create_string_buffer(code, len(code))
    license_text = ctypes.create_string_buffer(b"Apache")
    load = struct.pack("<IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(code) // 8,
                       ctypes.addressof(instructions), ctypes.addressof(license_text), 0, 0, 0, 0, 0,
                       b"labcore_devices", 0, 0).ljust(128, b"\0")
    prog = syscalls.bpf(BPF_PROG_LOAD, load, "bpf(BPF_PROG_LOAD, BPF_PROG_TYPE_CGROUP_DEVICE)")
    group = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attr = struct.pack("<IIIII", group, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, 0).ljust(128, b"\0")
        syscalls.bpf(BPF_PROG_ATTACH, attr, f"bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE) on {directory}")
    finally:
        os.close(group)
        if prog:
            os.close(prog)
