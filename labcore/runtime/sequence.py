"""One start sequence: the steps from an image to a running command, in order, each with the reason for its place.

`labcore run` and the engine's monitor (both through ``labcore.runtime.container``: create walks ``CREATE_STEPS``,
then start and wait) and notebook 08's hand-built box (``labcore.lessons.build_your_own``, a method a step)
walk this one table, and a step out of order is refused with the same words (``InvalidTransition``). Its order
is runc's (libcontainer/process_linux.go, standard_init_linux.go), each step naming what must come before it
and why:

    layers            the image's layers as lowerdirs; the container's init, upper and work dirs
    mount_overlay     the merged root. The box mounts it on the host, as dockerd's overlay2 driver does
                      (and its unshare must then come after, ``HOST_MOUNT``); `labcore run`'s pid 1 mounts it
                      in its own mount namespace, so the host has nothing to undo
    fork_child        the shim, still in every namespace of the host
    join_cgroup       the limits; the shim's pid in cgroup.procs (or a way in that skips the write: below)
    unshare           new namespaces; pid 1 forked into them, waiting for orders. The kernel's first move
                      into a cgroup sleeps 13 to 30 ms (``labcore.kernel.cgroups.Move``), which `labcore run`
                      skips: on cgroup v1 its shim moves itself into its group first
                      (``labcore.kernel.cgroups.move_oneself``), on v2 it forks pid 1 straight into the group
                      (clone3's CLONE_INTO_CGROUP). Where neither can, it overlaps the two: the shim unshares
                      all but the cgroup namespace meanwhile, and pid 1 unshares that one itself once it is in
                      its group
    connect_network   a veth pair from the bridge into pid 1's network namespace
    publish           a host port relayed to the container's address
    pivot_root        pid 1 roots itself in the merged overlay
    set_hostname      pid 1 names its UTS namespace
    exec              pid 1 becomes the command
    wait              the shim reaps pid 1 and exits as it did. `labcore run`'s shim leaves as soon as pid 1
                      is forked, and its caller, a child subreaper, adopts pid 1 and reaps it itself
                      (``labcore.runtime.container``): one process fewer per running container

What a container *is* at each moment (created, running, exited...) is the other table,
``labcore.runtime.lifecycle``: ``exec`` is its "start", ``wait`` its "exit".
"""
from __future__ import annotations

from labcore.errors import InvalidTransition

# Each step: what it calls, and the steps that must come before it, with the reason. This table is the design.
STEPS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "layers": ("read the manifest; unpack each layer once into <images>/layers/<diff_id>; mkdir upper, work", []),
    "mount_overlay": ('mount("overlay", MERGED, "overlay", 0, "lowerdir=...,upperdir=...,workdir=...")', [
        ("layers", "the overlay's lowerdirs are the image's unpacked layers")]),
    "fork_child": ("fork()  (the shim, as containerd-shim is runc's parent)", []),
    "join_cgroup": ("mkdir /sys/fs/cgroup/*/labcore/labcore-ID; write the limits; write PID > cgroup.procs", [
        ("fork_child", "a cgroup holds processes: there must be a pid to write into cgroup.procs")]),
    "unshare": ("unshare(CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWPID|CLONE_NEWNET|CLONE_NEWCGROUP); fork()", [
        ("join_cgroup", "unshare(CLONE_NEWCGROUP) makes the caller's cgroup the root of the namespace; in the "
                        "container's group, pid 1 sees only its own, and is born inside the limits")]),
    "connect_network": ("ip link add lcXh type veth peer name lcXc; ip link set lcXc netns PID; in there: "
                        "rename eth0, address, up, default route", [
        ("unshare", "the veth end moves into pid 1's network namespace, which unshare(CLONE_NEWNET) creates")]),
    "pivot_root": ('mount(NULL, "/", MS_REC|MS_PRIVATE); proc, tmpfs /dev, sysfs; pivot_root(".", "."); '
                   'umount2(".", MNT_DETACH)', [
        ("mount_overlay", "the new root is the merged overlay"),
        ("unshare", "pivot_root changes the root mount of a mount namespace: pid 1 must have its own")]),
    "set_hostname": ('sethostname("NAME"); write /etc/hostname', [
        ("pivot_root", "/etc/hostname is written from inside: before pivot_root it would be the host's file")]),
    "exec": ("execve(argv[0], argv, envp)  (pid 1 becomes the command)", [
        ("pivot_root", "after execve pid 1 runs the image's program, which can no longer set up its own root"),
        ("connect_network", "the command's first connect() or bind() must find eth0 already there")]),
    "publish": ("bind(127.0.0.1:HOST_PORT); listen(); the proxy relays each connection to IP:PORT", [
        ("connect_network", "the proxy connects to the container's address, which eth0 holds")]),
    "wait": ("waitpid(shim); the shim exits as pid 1 did", [
        ("exec", "until execve, pid 1 waits for orders: there is no command to wait for")]),
}
# Where the overlay is mounted on the host (the box, dockerd), unshare copies the host's mount table with it.
HOST_MOUNT = {"unshare": [("mount_overlay", "the new mount namespace is a copy of the host's mount table at the "
                                            "moment of unshare: the overlay must be in it")]}
INSIDE = ("pivot_root", "set_hostname")     # done by pid 1 itself, so only possible before exec
# (step, a step it can do without): refused the latter, a container goes on without limits, or without a network.
OPTIONAL = {("unshare", "join_cgroup"), ("exec", "connect_network")}


def order(extra: dict | None = None) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """The table, with ``extra`` prerequisites put first (``HOST_MOUNT`` for a box that mounts on the host)."""
    extra = extra or {}
    return {name: (does, [*extra.get(name, []), *needs]) for name, (does, needs) in STEPS.items()}


def refusal(name: str, done: list[str], excused=frozenset(), table: dict | None = None) -> tuple[str, str] | None:
    """Why step ``name`` may not run after ``done``, as (message, the step to do first or ""); None when it may.
    ``excused``: prerequisites the host refused, which an OPTIONAL pair lets the step do without."""
    if name in done:
        return f"{name}() was done already", ""
    if "wait" in done:
        return f"{name}(): the command has exited and been reaped (wait)", ""
    if name in INSIDE and "exec" in done:
        return (f"{name}() needs pid 1 to take orders, but it has become the command (exec): set up "
                f"everything before exec", "")
    for before, why in (table or STEPS)[name][1]:
        if before not in done and not (before in excused and (name, before) in OPTIONAL):
            return f"{name}() needs {before}() first: {why}", before
    return None


class Progress:
    """The steps one container has done, each checked against the table before it is counted."""

    def __init__(self, container_id: str):
        self.container_id = container_id
        self.done: list[str] = []

    def advance(self, name: str) -> None:
        refused = refusal(name, self.done)
        if refused is not None:
            raise InvalidTransition(f"container {self.container_id[:12]}: {refused[0]}", action=name,
                                    fix=f"{refused[1]}() first" if refused[1] else None)
        self.done.append(name)
