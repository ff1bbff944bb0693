"""Containers: a command started as pid 1, on an image's files, inside new namespaces.

`docker run busybox sh` comes down to a few steps (runc: libcontainer/process_linux.go, standard_init_linux.go):

    create   check the spec and find the image; its layers (unpacked once, ``labcore.image.layers``); the state dir
             fork the "shim", which unshares the namespaces and forks pid 1;
             pid 1 mounts its root filesystem (``labcore.kernel.rootfs``), pivots into it, sets the hostname,
             makes /proc/sys read-only and masks /proc/keys (``labcore.kernel.confinement``), waits
    start    pid 1 loads the seccomp filter, drops capabilities and becomes the user, enters the working
             directory and execve()s the command
    wait     the caller reaps pid 1 (adopted when the shim left): its exit code, or 128+N when signal N killed it

Why two processes: unshare(CLONE_NEWPID) does not move the caller, only its next child, which becomes pid 1
(pid_namespaces(7)). The shim forks pid 1, says its pid and exits, as runc's parent does once the container runs.
Its caller is a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER), so the orphaned pid 1 becomes the caller's
child, not init's: the caller (the `labcore run` process, the engine's monitor, the notebook's kernel) reaps it and
reads how it ended, as containerd-shim does for runc. No forked Python stays behind for each running container.

pid 1 is special: the kernel drops any signal sent to a namespace's init for which it installed no handler,
except SIGKILL and SIGSTOP from an ancestor namespace. `sleep` as pid 1 ignores `kill -TERM 1`, and even
`kill -KILL 1` from inside; that is why `docker stop` waits ten seconds and then sends SIGKILL from outside.

What the command is, and every refusal of bad input, comes first and changes nothing (``labcore.runtime.spec``);
where its stdin, stdout and stderr go is ``labcore.runtime.stdio``.

Next: ``labcore.runtime.engine`` keeps containers running after the caller has gone, as Docker's daemon does.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, LabError, NeedsPrivilege, NotSupportedHere, from_oserror
from labcore.image import layers
from labcore.kernel import confinement, journal, procfs, rootfs, syscalls, userns
from labcore.kernel.process import Channel, Child, adopting_orphans, exit_code
from labcore.runtime import lifecycle, sequence, users
from labcore.runtime.lifecycle import State
# The vocabulary of `docker run`, resolved and checked (labcore.runtime.spec), and the container's stdio
# (labcore.runtime.stdio), are imported here by name: callers know them as container.Spec, container.Stdio, ...
from labcore.runtime.spec import (DEFAULT_PATH, Plan, Spec, check_spec, command_line, environment,  # noqa: F401
                          find_image, parse_user, parse_volume, plan_for)
from labcore.runtime.stdio import Stdio, attach_stdio, open_terminal, receive_fd, send_fd  # noqa: F401

# Everything but the user namespace; with it added when not root (``userns.unshare``).
NAMESPACES = (syscalls.CLONE_NEWNS | syscalls.CLONE_NEWUTS | syscalls.CLONE_NEWIPC | syscalls.CLONE_NEWPID
              | syscalls.CLONE_NEWNET | syscalls.CLONE_NEWCGROUP)
# The shim's share: all but the cgroup namespace, which pid 1 makes itself once it is in its group
# (``enter_cgroup_namespace``): its root is the group of whoever unshares it.
SHIM_NAMESPACES = NAMESPACES & ~syscalls.CLONE_NEWCGROUP


@dataclass
class Result:
    """How a container ended; in capture mode, what it wrote."""
    id: str
    argv: list[str]
    exit_code: int
    stdout: bytes | None = None
    stderr: bytes | None = None

    def __str__(self) -> str:
        text = (self.stdout or b"").decode(errors="replace") + (self.stderr or b"").decode(errors="replace")
        return f"{text}[exit code {self.exit_code}]"

    __repr__ = __str__


# --- the container, from the host's side ------------------------------------------------------------------

@dataclass
class Container:
    spec: Spec
    plan: Plan
    scope: journal.Scope
    shim: Child | None = None
    cgroup: object = None               # labcore.kernel.cgroups.Group, when the container has one
    cgroup_manager: object = None       # the labcore.kernel.cgroups.Manager that made it, which removes it
    moving: object = None               # labcore.kernel.cgroups.Move: the shim on its way into the group
    moving_itself: list = field(default_factory=list)   # or the files through which the shim moves itself
    forking_into: object = None         # or the group's directory (a Path) the shim forks pid 1 into
    endpoint: object = None             # labcore.kernel.network.Endpoint, on its first network
    endpoints: dict = field(default_factory=dict)     # network name -> Endpoint, eth0 first
    resolver: object = None             # labcore.runtime.dns.Resolver, on a user-defined network
    usernet: object = None              # labcore.kernel.usernet.Usernet, when rootless on the bridge network
    published: list = field(default_factory=list)     # labcore.kernel.network.Published, one per -p
    oom_killed: bool = False
    pid: int | None = None              # pid 1, as the host numbers it
    state: State = State.CREATED        # changed only through lifecycle.check (``advance``)
    exit_code: int | None = None
    created: float = field(default_factory=time.time)
    started: float = 0.0
    finished: float = 0.0
    process_entries: list = field(default_factory=list)     # pid 1's, in the journal
    progress: sequence.Progress = None  # the start sequence's steps done so far, each checked in order

    def __post_init__(self):
        self.progress = self.progress or sequence.Progress(self.spec.id)

    @property
    def directory(self) -> Path:
        return paths.containers_dir() / self.spec.id


def advance(container: Container, action: str) -> None:
    """The container's state after ``action``, as the lifecycle table allows it (InvalidTransition if not)."""
    container.state = lifecycle.check(action, container.state, container.spec.id)


def create(spec: Spec, scope: journal.Scope, stdio: "Stdio", save: bool = True) -> Container:
    """Everything up to the moment before execve: pid 1 waits in its new root for `start`. The steps are the
    start sequence's (``labcore.runtime.sequence``), in its order, each counted there as it begins.
    ``save=False``: no "created" record, for a caller that starts it at once (``run``)."""
    container = Container(spec, plan_for(spec), scope)    # first: refuse bad input before making anything
    try:
        skipped = skipped_steps(container)
        for name, step in CREATE_STEPS:
            if name in skipped:
                continue
            container.progress.advance(name)
            if step is not None:
                step(container, stdio)
        await_root(container, stdio)          # pid 1's own steps, done when it says so
    except BaseException:
        stop_if_running(container)            # reap what was forked; the scope removes the rest
        raise
    if save:
        save_state(container)
    return container


def skipped_steps(container: Container) -> tuple[str, ...]:
    """Steps this container has no use for: no -p, or a UTS namespace it shares (--uts host) and may not name."""
    return (() if container.spec.publish else ("publish",)) + \
        (("set_hostname",) if container.plan.shared & syscalls.CLONE_NEWUTS else ())


def prepare_layers(container: Container, stdio: "Stdio") -> None:
    """The image's layers, each unpacked once and shared; this container's state dir, its init layer
    (/etc/hostname, hosts, resolv.conf), upper and work dirs. pid 1 mounts them (``mount_overlay`` happens in
    its mount namespace)."""
    make_state_dir(container)                 # recorded before anything goes in it, so a failure removes it
    container.plan.layers = layers.prepare_root(container.plan.image, container.directory, container.plan.rootless)
    rootfs.write_etc_files(container.plan.layers.init, container.plan.hostname, resolv_conf(container.spec))


def fork_shim(container: Container, stdio: "Stdio") -> None:
    """The shim: a child still in every namespace of the host; it waits for the go-ahead to unshare. Unlike
    pid 1 it gets no journal record: it cannot outlive this process. It takes its orders from this process and
    leaves at the end of the channel (EOF) or once it has forked pid 1, which in turn leaves at EOF until it
    execs the command (``_pid1``)."""
    container.shim = Child(lambda channel: _shim(channel, container.plan, stdio), keep=stdio.child_fds)
    stdio.after_fork()


def join_shim_cgroup(container: Container, stdio: "Stdio") -> None:
    join_cgroup(container, container.shim.pid)


def unshare_shim(container: Container, stdio: "Stdio") -> None:
    """The go-ahead, with a user namespace to join or None, and the layers made since the fork: the shim
    unshares, forks pid 1, sends its pid and exits. Reaped here, it has handed pid 1 over: the kernel re-parents
    an orphan before its parent can be waited for (exit_notify in kernel/exit.c), so from here pid 1 is this
    process's child."""
    join = prepare_network(container)         # outside the window: the user-mode network's holder, orphaned on
    with adopting_orphans():                  # purpose, must go to init, not become this process's zombie
        container.shim.send((join, container.plan.layers, container.moving_itself, container.forking_into))
        container.pid = container.shim.recv()
        try:
            container.process_entries.append(record_process(container.scope, container.pid))
            finish_joining_cgroup(container)
        finally:
            settle_move(container)
            os.waitpid(container.shim.pid, 0)


def reap(container: Container) -> int:
    """pid 1's exit code (128+N for signal N), once it has ended; the shim's, if it failed before forking one."""
    settle_move(container)
    if container.shim.status is None and container.pid is not None:
        _, status = os.waitpid(container.pid, 0)
        container.shim.status = exit_code(status)
        container.shim.channel.close()
    return container.shim.wait()


def connect_pid1(container: Container, stdio: "Stdio") -> None:
    """pid 1 exists, its net namespace too, and it has not run the command yet: its network now, so the
    command's first connect() already finds eth0 (or at least a working loopback). -p's ports with it."""
    connect_network(container)


def await_root(container: Container, stdio: "Stdio") -> None:
    """pid 1 mounts the overlay, pivots into it and names itself (``_pid1``, in that order), then says "ready"."""
    container.shim.recv()
    if stdio.mode == "tty":
        stdio.take_terminal(receive_fd(container.shim.channel))


# `labcore run` and the engine's monitor walk the start sequence with these (the reasons for the order are in
# labcore.runtime.sequence). A step without a function here is done by another: publish with the network
# (connect_network), the last three by pid 1 itself (_pid1), which says "ready" when they are done.
# The layers come third, not first: made while the kernel moves the shim into its cgroup (``join_cgroup``).
CREATE_STEPS = (("fork_child", fork_shim), ("join_cgroup", join_shim_cgroup), ("layers", prepare_layers),
                ("unshare", unshare_shim), ("connect_network", connect_pid1), ("publish", None),
                ("mount_overlay", None), ("pivot_root", None), ("set_hostname", None))


def start(container: Container) -> None:
    """Let pid 1 execve the command. On success execve closes pid 1's end of the channel (close-on-exec)."""
    container.progress.advance("exec")
    container.shim.send("start")
    try:
        container.shim.recv()                 # only a failure (e.g. no such executable) sends anything
    except EOFError:
        pass
    advance(container, "start")
    container.started = time.time()
    save_state(container)


def join_cgroup(container: Container, pid: int) -> None:
    """A container gets a cgroup of its own holding its limits, and as root always Docker's device list
    (``labcore.kernel.confinement.device_rules``). Docker makes one in every hierarchy; on cgroup v1 the lab makes
    only the devices one when nothing else is limited: eight hierarchies to mkdir, join and rmdir are a tenth
    of a second a container (bench/). Rootless there is none (no device cgroup in a user namespace).

    Who puts pid 1 there: writing a pid to cgroup.procs makes the kernel sleep through an RCU grace period
    first, 13 to 30 ms after a quiet spell here (``labcore.kernel.cgroups.Move``), and two ways skip it. On v1
    the shim moves itself as it unshares (``_shim``): a process moving its only thread skips that wait
    (``labcore.kernel.cgroups.move_oneself``). On v2 the shim forks pid 1 straight into the group (clone3's
    CLONE_INTO_CGROUP, ``fork_pid1``). Where neither can, the move runs in a thread, beside the next steps: the
    layers, the shim's unshare, pid 1's root; ``finish_joining_cgroup`` waits for it before pid 1 may go on to
    its cgroupfs."""
    limits = container.plan.limits
    if limits != type(limits)():
        from labcore.kernel.cgroups import open_manager
        container.cgroup_manager = manager = open_manager()
        container.cgroup = group = manager.create_for_container(container.spec.id, limits, container.scope)
        container.moving_itself = manager.files_to_move_oneself(group) or []      # v1
        container.forking_into = manager.directory_to_fork_into(group)            # v2
        if not (container.moving_itself or container.forking_into):
            container.moving = manager.start_adding(group, pid)


def finish_joining_cgroup(container: Container) -> None:
    """Wait for the shim's move; then move pid 1, which it may have forked before it was moved itself (a
    move right after another is quick: the grace period is behind it). A shim that moved itself, or that
    forked pid 1 into the group, has nothing to wait for. Then tell pid 1 to go on: its cgroup namespace comes
    next (``enter_cgroup_namespace``), rooted in the container's group."""
    if container.moving is not None:
        moving, container.moving = container.moving, None
        moving.wait()
        container.cgroup_manager.add(container.cgroup, container.pid)
    container.shim.send("in its cgroup")


def settle_move(container: Container) -> None:
    """Let a move still under way end, when the start is being undone (its error no longer matters). Its write
    names the shim by pid: the shim is reaped only after it, so that the pid cannot name another process."""
    if container.moving is not None:
        moving, container.moving = container.moving, None
        moving.thread.join()


def prepare_network(container: Container) -> int | None:
    """Rootless on the bridge network: join the user-mode network (``labcore.kernel.usernet``) and return the pid
    whose user namespace the shim joins before it unshares, so that a veth end may later be moved into the
    container's network namespace. Where the host refuses it (no slirp4netns), a container that publishes no port
    keeps loopback only, as before; one with -p fails with the host's answer."""
    if container.spec.network == "none" or not container.plan.rootless:
        return None
    from labcore.kernel import usernet
    try:
        container.usernet = usernet.join(container.scope)
    except (NeedsPrivilege, NotSupportedHere):
        if container.spec.publish:
            raise
        return None
    return container.usernet.holder


def resolv_conf(spec: Spec) -> str | None:
    """On a user-defined network, the embedded DNS server's resolv.conf (``labcore.runtime.dns``); else the host's."""
    if spec.network in ("bridge", "none") and not spec.endpoints:
        return None                               # without importing the network modules
    from labcore.runtime import dns, networks
    return dns.resolv_conf() if networks.resolves_names(spec) else None


def connect_network(container: Container) -> None:
    """Docker's bridge: a veth pair to lcbr0 and the published ports; rootless, to the lcbr0 of the user-mode
    network. A user-defined network has a bridge of its own (``labcore.runtime.networks``), and the DNS server that
    answers the names of the containers on it (``labcore.runtime.dns``), started last: it answers for the
    addresses just given. With --network none, or rootless where the host refused a user-mode network,
    only loopback (the shim brought it up)."""
    spec = container.spec
    if spec.network == "none" or (container.plan.rootless and container.usernet is None):
        return
    from labcore.kernel import network
    from labcore.runtime import networks
    for index, name in enumerate(networks.wanted(spec)):
        container.endpoints[name] = connect_to(container, networks.find(name).bridge, index)
    if not container.endpoints:                   # disconnected from every network before it started
        if spec.publish:
            raise BadInput("published ports need a network: the container was disconnected from all of them",
                           fix="`labcore network connect NETWORK CONTAINER`, then start it")
        return
    container.endpoint = next(iter(container.endpoints.values()))
    for text in spec.publish:
        mapping = network.parse_publish(text)
        container.published.append(network.publish(container.endpoint, mapping.host_port, mapping.container_port,
                                                   container.scope, mapping.host_ip, mapping.protocol))
    if networks.resolves_names(spec):
        from labcore.runtime import dns
        joined = list(container.endpoints)          # fixed while it runs: `network connect` refuses a running one
        container.resolver = dns.start(container.pid, lambda: networks.for_lookup(joined))


def connect_to(container: Container, net, index: int):
    """eth<index> on the bridge of ``net``; only the first carries the default route. The pair is named
    lc<id>h, lc<id>1h, ... (at most 15 bytes, IFNAMSIZ)."""
    from labcore.kernel import network, usernet
    options = {"short_id": container.spec.id[:10] + (str(index) if index else ""), "ifname": f"eth{index}",
               "default_route": index == 0, "mac": container.spec.mac_address if index == 0 else None}
    if container.usernet is not None:
        return usernet.connect(container.usernet, container.pid, container.scope, net=net, **options)
    return network.connect(container.pid, container.scope, net, **options)


def release_network(container: Container) -> None:
    """A stopped container keeps no network, even when its files are kept for `labcore rm`."""
    if container.resolver is not None:
        container.resolver.stop()
        container.resolver = None
    if container.endpoints:
        from labcore.kernel import network
        for endpoint in reversed(container.endpoints.values()):
            network.disconnect(endpoint, container.scope)
        container.endpoints, container.endpoint, container.published = {}, None, []
    if container.usernet is not None:
        from labcore.kernel import usernet
        usernet.leave(container.usernet, container.scope)      # the last one out stops it
        container.usernet = None


def release_cgroup(container: Container) -> None:
    """Read whether the OOM killer fired, then remove the group: an exited container holds no cgroup."""
    if container.cgroup is None:
        return
    from labcore.kernel.cgroups import open_manager
    manager = container.cgroup_manager or open_manager()         # the one that made it: /proc read once a run
    container.oom_killed = bool(manager.stats(container.cgroup).oom_kills)
    manager.remove(container.cgroup, container.scope)
    container.cgroup = None


def wait(container: Container, save: bool = True) -> int:
    """Reap pid 1 (``reap``); forget the processes, which are gone now. ``save=False``: no "exited" record,
    for a caller that removes the container next (``run`` with --rm)."""
    if "exec" in container.progress.done:
        container.progress.advance("wait")
    container.exit_code = reap(container)
    release_cgroup(container)
    release_network(container)
    for entry in container.process_entries:
        container.scope.journal.forget(entry)
    # Its command ran: it exited. Reaped before it ran (a failed create): it was stopped, never started.
    advance(container, "exit" if container.state in (State.RUNNING, State.PAUSED) else "stop")
    container.finished = time.time()
    if save:
        save_state(container)
    return container.exit_code


def kill(container: Container, signum: int = signal.SIGKILL) -> None:
    """Signal pid 1 from the host. From here SIGKILL always works; other signals need pid 1's handler."""
    os.kill(container.pid, signum)


def stop_if_running(container: Container) -> None:
    """After an interrupt or a failed create: SIGKILL pid 1 (or the shim, before it has forked one) and reap,
    before the scope removes the files. Either is this process's child (pid 1 adopted from the shim), not yet
    reaped: its pid still names it, journaled or not."""
    if container.exit_code is None and container.shim is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(container.shim.pid if container.pid is None else container.pid, signal.SIGKILL)
        wait(container)


def run(spec: Spec, stdio: str = "capture", outputs: tuple[int, int] = (1, 2), on_start=None) -> Result:
    """docker run: create, start, wait, and remove with ``rm``. Notebooks use ``stdio="capture"``; with
    ``stdio="inherit"``, ``outputs`` are the command's stdout and stderr. ``on_start(container)`` is called once
    its command runs (labd's watch for a client that hangs up, ``labcore.cli.handoff``).

    state.json is written once with --rm, at the start (``start``): what `ps`, `inspect` and `rmi`'s in-use
    check read while it runs. Not at the end of create: start follows at once and rewrites it; until then the
    container has no record, as during create itself (name lookups want running ones anyway,
    ``networks.for_lookup``), and a failed create or start is undone by the scope, directory and all. Not at
    the exit with --rm: the scope removes the directory next. Without --rm the exit is saved, for `ps -a`.
    A crash cleanup replays the journal, which holds every object before it exists, not state.json."""
    with journal.Scope() as scope, Stdio(stdio, spec.interactive, outputs=outputs) as io:
        container = None
        try:
            container = create(spec, scope, io, save=False)
            start(container)
            if on_start is not None:
                on_start(container)
            output = io.pump()
            wait(container, save=not spec.rm)
        finally:
            if container is not None:
                stop_if_running(container)
        if not spec.rm:
            scope.release()    # kept, as Docker keeps a stopped container; `labcore cleanup` removes it
    return Result(spec.id, container.plan.argv, container.exit_code, *output)


def make_state_dir(container: Container) -> None:
    """The container's directory, journaled before it exists: a crash between the two leaves a record of
    nothing, never a directory nobody knows about."""
    directory = container.directory
    if directory.is_dir():
        return                    # made by `create` (labcore.runtime.engine), which journaled it already
    container.scope.record("directory", str(directory), "rmtree", path=str(directory))
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.mkdir()


def record_process(scope: journal.Scope, pid: int) -> journal.Entry:
    owner = journal.owner_of(pid)
    return scope.record("process", str(pid), "kill", pid=pid, start=owner["start"])


def describe(spec: Spec, plan: Plan) -> dict:
    """What the record keeps of a container's configuration: enough to start it again and to inspect it."""
    # vars(), not dataclasses.asdict: asdict deep-copies every list, at each save, for json.dumps.
    return {"spec": dict(vars(spec)), "argv": plan.argv, "env": plan.env, "workdir": plan.workdir,
            "hostname": plan.hostname, "image_id": plan.image.id, "rootless": plan.rootless}


def save_state(container: Container) -> None:
    """state.json as a ``labcore.runtime.lifecycle.Record``: what `labcore ps`, `inspect` and the daemon read."""
    from labcore.runtime.lifecycle import Record
    config = describe(container.spec, container.plan)
    if container.endpoint is not None:
        config["ip"] = container.endpoint.ip
        config["ports"] = [{"IP": p.host_ip, "PrivatePort": p.container_port, "PublicPort": p.host_port,
                            "Type": p.protocol} for p in container.published]     # Docker's `Ports` entries
        config["networks"] = {name: {"IPAddress": endpoint.ip, "IPPrefixLen": endpoint.network.prefixlen,
                                     "Gateway": endpoint.network.gateway, "Interface": endpoint.container_ifname,
                                     "MacAddress": endpoint.mac,
                                     "Aliases": ((container.spec.endpoints or {}).get(name) or {}).get("Aliases")}
                              for name, endpoint in container.endpoints.items()}
    Record(id=container.spec.id, name=container.spec.name, image=container.spec.image, config=config,
           state=container.state, pid=container.pid or 0, exit_code=container.exit_code or 0,
           oom_killed=container.oom_killed, created=container.created, started=container.started,
           finished=container.finished, monitor=journal.owner_of()).save()


def exec_in(record, request: dict, stdio: "Stdio") -> Child:
    """`docker exec`: a new process that joins pid 1's namespaces with setns(2) and runs a command there.

    setns(CLONE_NEWPID) moves only the caller's future children (pid_namespaces(7)), so the joiner forks
    once more; the command is that child. It joins pid 1's cgroups first, and gets the same capabilities,
    seccomp filter and no_new_privs as pid 1: an exec is no way around the confinement. Joining the mount
    namespace also sets the root to the container's (setns(2)), so no chroot is needed."""
    config = record.config
    kinds = ["ipc", "uts", "net", "pid", "mnt", "cgroup"] + (["user"] if config.get("rootless") else [])
    env = _merge_env(config["env"], request.get("env") or [])
    user = request.get("user") or config["spec"].get("user") or "0"
    workdir = request.get("workdir") or config["workdir"]
    spec = Spec(**config["spec"])
    confined = confinement.confinement_for(spec)              # docker exec is confined as pid 1 is

    def join(channel: Channel) -> None:
        from labcore.kernel.namespaces import enter_namespaces
        cgroup_fd = join_container_cgroup(record)   # its limits and device list, before its cgroup namespace
        enter_namespaces(record.pid, kinds)
        pid = syscalls.fork(cgroup_fd)
        if pid == 0:
            try:
                attach_stdio(stdio.child_fds)
                if stdio.mode == "tty":         # a terminal of the container's own devpts, as pid 1's is
                    send_fd(channel, open_terminal())
                become_confined_user(confined, user, config.get("rootless", False), spec.group_add)
                enter_workdir(workdir)
                reset_signals()
                execute(request["cmd"], env)
            except LabError as err:                     # on the exec's stderr, as Docker reports it there
                os.write(2, f"{err.message}\n".encode(errors="replace"))
            finally:
                os._exit(127)
        for fd in set(stdio.child_fds) - {0, 1, 2}:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        os._exit(exit_code(status))

    child = Child(join, keep=stdio.child_fds)
    stdio.after_fork()
    if stdio.mode == "tty":
        stdio.take_terminal(receive_fd(child.channel))
    return child


def join_container_cgroup(record) -> int | None:
    """The exec's way into its container's groups, the ways pid 1 went in (``join_cgroup``), for the same
    reason: a pid written to cgroup.procs waits for a grace period first, 9 ms of a 21 ms exec here. This
    process, the joiner, is a fork with one thread: on v1 it moves itself ("0" to tasks); on v2 it gets an fd
    of the group's directory, to fork the command into (returned; None in every other case); elsewhere it
    writes its own pid."""
    from labcore.kernel import cgroups
    group = cgroups.container_group_of(record.pid, record.id)
    if group is None:
        return None                                 # no group of its own: pid 1 is where this process is
    manager = cgroups.open_manager()
    files, directory = manager.files_to_move_oneself(group), manager.directory_to_fork_into(group)
    if not (files or directory):
        manager.add(group, os.getpid())
    return cgroups.prepare_fork_into(files or [], directory)


def _merge_env(base: list[str], extra: list[str]) -> list[str]:
    merged = dict(item.split("=", 1) for item in base)
    merged.update(item.split("=", 1) for item in extra if "=" in item)
    return [f"{name}={value}" for name, value in merged.items()]


# --- inside: the shim and pid 1. They never print and leave by os._exit. --------------------------------

def _shim(channel: Channel, plan: Plan, stdio: "Stdio") -> None:
    """Move into the container's cgroup where it may itself, unshare the namespaces, fork pid 1 (into the
    cgroup, on v2), and exit the way pid 1 exits."""
    join, plan.layers, cgroup_files, cgroup_dir = channel.recv()   # the go-ahead, and what was made since the fork
    cgroup_fd = None
    if cgroup_files or cgroup_dir:                  # first: pid 1 is born in the group (join_cgroup says why)
        from labcore.kernel.cgroups import prepare_fork_into
        cgroup_fd = prepare_fork_into(cgroup_files, cgroup_dir)
    if join:
        userns.join(join)                           # rootless: the user-mode network's (labcore.kernel.usernet)
    userns.unshare(SHIM_NAMESPACES & ~plan.shared)  # as root there or here; else inside a new user namespace
    syscalls.set_interface_up("lo")                 # a new net namespace has only lo, and it is down
    fork_pid1(channel, stdio.child_fds, lambda: _pid1(channel, plan, stdio), stay=False, cgroup_fd=cgroup_fd)


def fork_pid1(channel: Channel, child_fds, pid1, stay: bool = True, cgroup_fd: int | None = None) -> None:
    """The shim's second half, after unshare (notebook 08's box forks its pid 1 here too): fork pid 1, which
    runs ``pid1()``; tell the parent its pid; then only reap it, and exit as it did. With ``stay=False``
    (`labcore run`, labd) exit at once instead: the parent, a child subreaper, adopts pid 1 and reaps it.
    With ``cgroup_fd``, pid 1 is born in that cgroup v2 group (``syscalls.clone_into_cgroup``: the shim, a
    fork, has one thread, as that call needs)."""
    hold, release = os.pipe()
    pid = syscalls.fork(cgroup_fd)
    if pid == 0:
        os.close(release)
        os.read(hold, 1)                            # pid 1 speaks only after the shim has: one writer at a time
        pid1()
    channel.send(pid)
    channel.close()                                 # pid 1 talks to the parent from here on
    os.close(release)
    for fd in set(child_fds) - {0, 1, 2}:
        os.close(fd)                                # so the parent sees EOF when pid 1 is gone
    if not stay:
        os._exit(0)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)       # the parent decides; the shim only reports
    _, status = os.waitpid(pid, 0)
    os._exit(exit_code(status))


def _pid1(channel: Channel, plan: Plan, stdio: "Stdio") -> None:
    """In the new pid namespace as pid 1: build the root, confine it, wait for start, become the command."""
    try:
        attach_stdio(stdio.child_fds)               # first: pipes or the caller's fds, from the host
        # The cgroupfs shows pid 1's cgroup namespace, which waits for its cgroup (enter_cgroup_namespace): it is
        # mounted last, from inside, and everything else meanwhile, unless a -v or --tmpfs goes below it.
        late = not rootfs.below_cgroupfs(plan.volumes, plan.tmpfs)
        if not late:
            enter_cgroup_namespace(channel, plan)
        host_mounts = procfs.read("self", "mountinfo")        # the host's hierarchies, named while in view
        rootfs.mount_container_root(plan.root, plan.rootless, plan.layers.options, plan.volumes,
                                    plan.confinement, plan.tmpfs, cgroupfs=not late)
        if not plan.shared & syscalls.CLONE_NEWUTS:
            syscalls.sethostname(plan.hostname)     # the UTS namespace is the container's own
        os.makedirs(plan.workdir, exist_ok=True)    # Docker creates a missing WorkingDir, as root, before --read-only
        confinement.finalize_root(plan.confinement)           # on the container's own /proc and /sys
        identity = resolve_user(plan.user, plan.rootless, plan.groups)   # from the image's /etc/passwd
        if late:
            enter_cgroup_namespace(channel, plan)
            rootfs.mount_cgroupfs("", plan.rootless, not plan.confinement.privileged, host_mounts)
        confinement.forbid_new_privileges(plan.confinement)   # runc: before it reports ready
        terminal = open_terminal() if stdio.mode == "tty" else None
        channel.send("ready")
        if terminal is not None:
            send_fd(channel, terminal)              # runc's "console socket": the parent gets the master
            os.close(terminal)
        channel.recv()                              # start
        confinement.drop_privileges(plan.confinement, identity, plan.rootless)
        enter_workdir(plan.workdir)
        reset_signals()
        execute(plan.argv, plan.env)
    except BaseException as err:
        try:
            channel.send_error(err)
        finally:
            os._exit(127)


def enter_cgroup_namespace(channel: Channel, plan: Plan) -> None:
    """Once the parent says pid 1 is in the container's group (``finish_joining_cgroup``), a cgroup namespace
    rooted there (cgroup_namespaces(7)): /proc/self/cgroup then reads "/", and the cgroupfs shows nothing above."""
    channel.recv()
    if not plan.shared & syscalls.CLONE_NEWCGROUP:
        syscalls.unshare(syscalls.CLONE_NEWCGROUP)


def become_confined_user(confined: "confinement.Confinement", user: str, rootless: bool, groups=()) -> None:
    """The user from the image's /etc/passwd and /etc/group (and --group-add's groups), with the confinement's
    capabilities and seccomp filter (``labcore.kernel.confinement.drop_privileges``): the last step before execve."""
    confinement.drop_privileges(confined, resolve_user(user, rootless, groups), rootless)


def resolve_user(user: str, rootless: bool, groups=()):
    """--user as the image's /etc/passwd and /etc/group name it (``labcore.runtime.users``); refused rootless
    unless it is uid 0, the only one mapped."""
    identity = users.resolve(user, extra_groups=groups)
    if rootless and (identity.uid, identity.gid) != (0, 0):
        raise from_oserror(OSError(errno.EINVAL, os.strerror(errno.EINVAL)), f"setresuid({identity.uid})",
                           fix="a rootless container maps only uid 0 (your own uid): run without --user")
    return identity


def enter_workdir(workdir: str) -> None:
    try:
        os.chdir(workdir)
    except OSError as err:
        raise from_oserror(err, "chdir", workdir) from err


def reset_signals() -> None:
    """execve(2) keeps ignored signals ignored and the signal mask: give the command a clean slate."""
    # Numbers, not signal.valid_signals(), which makes an enum of each of the 64 first. 32 and 33 are glibc's
    # own (nptl), refused by sigaction(2) with EINVAL, as are SIGKILL and SIGSTOP, which cannot be changed.
    for signum in range(1, signal.NSIG):
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def execute(argv: list[str], env: list[str]) -> None:
    environ = dict(item.split("=", 1) for item in env)
    try:
        os.execvpe(argv[0], argv, environ)       # searches the container's PATH, in the container's root
    except OSError as err:
        hint = (f"is {argv[0]!r} in the image? PATH={environ.get('PATH', '')}" if err.errno == errno.ENOENT
                else f"is {argv[0]!r} an executable file?")
        raise from_oserror(err, "execve", argv[0], fix=hint) from err
