"""Build your own `docker run`: every step of ``labcore.runtime.container`` done by hand, one call at a time.

``start(image)`` returns a ``Box``, a container being built. Each method does one step for real and returns a
``labcore.lessons.evidence.Step`` read back from /proc, /sys and the filesystem. The order is Docker's and runc's,
and each step names what must come before it (``InvalidTransition`` otherwise):

    layers()            the image's layers, unpacked once, as lowerdirs; the box's own upper and work dirs
    mount_overlay()     mount -t overlay on the host, as dockerd's overlay2 driver does before runc starts
    fork_child()        the "shim": a child of this notebook, still in every namespace of the host
    join_cgroup(...)    mkdir a cgroup, write the limits and the shim's pid into it
    unshare()           the shim unshares six namespaces and forks pid 1, which waits for orders
    connect_network()   a veth pair: one end on the bridge lcbr0, the other eth0 in pid 1's namespace
    pivot_root()        pid 1: / private, /proc /dev /sys on the overlay, pivot_root, the old root detached
    set_hostname(name)  pid 1: sethostname(2) in its UTS namespace, and /etc/hostname in its own layer
    exec(argv)          pid 1 execve()s the command: it stays pid 1, with everything set up above
    publish(port, 80)   the loopback proxy from a host port to eth0's address; a request goes through
    wait()              the shim reaps pid 1 and exits as it did: the exit code, the output
    remove()            everything undone, newest first; nothing of the box left in mountinfo, cgroups, links

Every object is recorded in the box's own ``journal.Scope`` the moment it exists: ``remove()``, an interrupt
(^C) during a step, and ``journal.cleanup()`` all undo it. ``Box.diagram()`` draws the box from live state.

Without root the same steps run inside a user namespace, as rootless podman runs them: ``mount_overlay``
mounts in the user and mount namespace of a ``userns.MountKeeper`` (the host's mount table never shows it),
and the shim joins that namespace before it unshares the others, so pid 1's mount namespace, a copy of the
keeper's, holds the overlay to pivot into. A step the host refuses returns a refused ``Step``; the box goes
on without it where it can (no limits, no network, as ``docker run`` without -m, or with --network none),
and a step that needs a refused one is refused in turn, naming it.

Beyond the proxy, three functions of a connected box (pid 1 alive), each removing what it made before it returns:
``limit_bandwidth`` (a tbf qdisc on the host end, the throughput measured without and with it),
``publish_dnat`` (Docker's way to publish: an nftables DNAT rule, and its counter) and ``masquerade_outbound``
(the way out: MASQUERADE to another network, and the address the server there saw).

Next: ``compare_with_run`` does all of it again in one call, ``labcore.runtime.container.run``.
"""
from __future__ import annotations

import contextlib
import functools
import http.client
import os
import secrets
import shlex
import signal
import socket
import threading
import time
from pathlib import Path

from labcore import paths
from labcore.errors import BadInput, InvalidTransition, LabError, NeedsPrivilege, NotSupportedHere
from labcore.image import layers
from labcore.kernel import journal, namespaces, nat, network, overlay, procfs, rootfs, syscalls, usernet, userns
from labcore.kernel.process import Child
from labcore.lessons import display, hosts, root_fs, union_fs
from labcore.lessons.client_server import wait_for_listener
from labcore.lessons.evidence import Step, current_mode, user_mode
from labcore.runtime import container, lifecycle, sequence
from labcore.runtime.lifecycle import State

KINDS = ("mnt", "uts", "ipc", "pid", "net", "cgroup")     # container.NAMESPACES: all but user, as root
OVERLAY_ROOT = "the overlay's merged dir"
# The merged dir's mount as it teaches: where, what, and the overlay's layers (its source is just "overlay").
MOUNTS_SHOWN = ("mount point", "fstype", "propagation", "fs options")
REQUEST_TIMEOUT = 10.0                                     # seconds for a server inside to start listening
_REFUSED = (NeedsPrivilege, NotSupportedHere)

# The one start sequence (labcore.runtime.sequence), which `labcore run` and labd walk too: each step, what it
# calls, and what must come before it, with the reason. The box mounts its overlay on the host before unshare.
ORDER = sequence.order(sequence.HOST_MOUNT)
INSIDE = sequence.INSIDE                   # done by pid 1 itself, so only possible before exec
OPTIONAL = sequence.OPTIONAL               # refused join_cgroup or network: the box goes on without them


def step(name: str):
    """A Box method that is one step: refused out of order, and undone on ^C (the box goes with it). Where
    the host refuses it, or a step it needs was refused, it returns the refused Step (kept as ``box.NAME``
    among the reference recordings) and the box remembers why."""
    def wrap(method):
        @functools.wraps(method)
        def run(self: "Box", *args, **kwargs):
            needed = self.refused_before(name)
            if needed:
                return self.refuse(name, NeedsPrivilege(f"{name}() needs {needed}(), which this host refused",
                                                        why=self.refused[needed]))
            self.check_order(name)
            try:
                result = method(self, *args, **kwargs)
            except _REFUSED as err:                       # the host forbids it: say so, change nothing more
                return self.refuse(name, err)
            except KeyboardInterrupt:                     # ^C mid-step: the whole box goes, nothing half-made
                self.undo()
                self.done.append("remove")
                raise
            self.done.append(name)
            result.key = f"box.{name}"
            return result
        return run
    return wrap


class Box:
    """A container under construction: what exists of it so far, all recorded in ``scope``."""

    def __init__(self, image, scope: journal.Scope | None = None):
        self.image = image
        self.id = secrets.token_hex(32)
        self.hostname = self.id[:12]                       # Docker's default, until set_hostname
        self.directory = paths.scratch_dir() / f"{paths.PREFIX}-box-{self.id[:12]}"
        self.scope = scope or journal.Scope()
        self.done: list[str] = []
        self.stack = self.overlay = self.shim = self.pid = self.group = self.endpoint = self.published = None
        self.stdio = self.argv = self.result = self.reply = None
        self.usernet = self.network_refused = None          # rootless: labcore.kernel.usernet, or why not
        self.limits: dict = {}
        self.refused: dict[str, str] = {}                  # step -> what the host answered
        self.rootless = os.geteuid() != 0
        self.state = State.CREATED                          # as a container's: lifecycle.check at each change

    @property
    def keeper(self):
        """Rootless: the process whose user and mount namespaces hold the overlay (``userns.MountKeeper``)."""
        return self.overlay.keeper if self.overlay is not None else None

    # --- order -----------------------------------------------------------------------------------------

    def refused_before(self, name: str) -> str | None:
        """A step that ``name`` needs and that this host refused (a box does without the OPTIONAL ones)."""
        return next((before for before, _ in ORDER[name][1]
                     if before in self.refused and (name, before) not in OPTIONAL), None)

    def refuse(self, name: str, error: LabError) -> Step:
        self.refused[name] = error.message
        return hosts.refuse(f"box.{name}()", ORDER[name][0], error, key=f"box.{name}")

    def check_order(self, name: str) -> None:
        """Refuse a step whose prerequisites are not done, that was done, or that pid 1 can no longer do."""
        refused = self.refusal(name)
        if refused is not None:
            message, fix = refused
            raise InvalidTransition(message, fix=fix or self.next_hint())

    def refusal(self, name: str) -> tuple[str, str | None] | None:
        """(why ``name`` may not run now, the fix), or None when it may: the start sequence's own answer."""
        if "remove" in self.done:
            return f"box {self.id[:12]} was removed", "start a new one: build_your_own.start(image)"
        refused = sequence.refusal(name, self.done, excused=self.refused, table=ORDER)
        if refused is None:
            return None
        message, before = refused
        if "wait" in self.done:
            return message.replace("the command", "the box's command"), "box.remove()"
        return message.replace(" was done already", f" was done already in box {self.id[:12]}"), \
            (f"call box.{before}()" if before else None)

    def why_not(self, name: str) -> str:
        """"allowed" if step ``name`` may run now, or why not: the message it would be refused with."""
        refused = self.refusal(name)
        return "allowed" if refused is None else refused[0]

    def next_hint(self) -> str:
        ready = [name for name in ORDER if self.refusal(name) is None]
        return "next: " + ", ".join(f"box.{name}()" for name in ready) if ready else "box.remove()"

    def __repr__(self) -> str:
        return (f"<Box {self.id[:12]} of {self.image.ref}: {self.directory}; done: {', '.join(self.done)}; "
                f"{self.next_hint()}>")

    def __enter__(self) -> "Box":
        return self

    def __exit__(self, *exc) -> None:
        self.undo()

    # --- the image's files -----------------------------------------------------------------------------

    @step("layers")
    def layers(self) -> Step:
        """The image's layers as read-only lowerdirs (top first), the box's init layer, upper and work dirs."""
        before = {"state dir": union_fs.listing(self.directory)}
        self.stack = layers.prepare_root(self.image, self.directory, rootless=self.rootless)
        rootfs.write_etc_files(self.stack.init, self.hostname)    # Docker's "-init" layer: hostname, hosts
        after = {f"lowerdir {number}": f"{path} ({sum(1 for _ in layers.walk(path))} entries)"
                 for number, path in enumerate(self.stack.lowers, start=1)}
        after.update({"upperdir": union_fs.listing(self.stack.upper), "workdir": union_fs.listing(self.stack.work),
                      "state dir": union_fs.listing(self.directory)})
        return Step(f"{self.image.ref}: {len(self.stack.lowers) - 1} image layer(s) and an init layer",
                    ORDER["layers"][0], before, after, user_mode(),
                    note="the image's layers are shared by every container of it; upperdir is this box's alone",
                    data={"lowers": self.stack.lowers, "upper": self.stack.upper})

    @step("mount_overlay")
    def mount_overlay(self) -> Step:
        """mount -t overlay on the host: the merged root, before any namespace exists (dockerd does the same).
        Without root: in the user and mount namespace of a keeper process, where a user may mount."""
        merged = self.stack.merged
        before = {"mountinfo": mounts_at(merged), "ls merged": union_fs.listing(merged)}
        # Rootless, the keeper's user namespace is the user-mode network's, joined first: pid 1 will join the
        # keeper to find the overlay, and its net namespace must belong to the network's user namespace too.
        self._join_usernet()
        keeper = userns.MountKeeper(self.scope, userns_of=self.usernet.holder) if self.usernet else None
        self.overlay = overlay.mount_overlay(self.stack.lowers, self.stack.upper, self.stack.work, merged,
                                             self.scope, keeper=keeper)
        lines = mountinfo_lines(merged, self.keeper.pid if self.keeper else "self")
        after = {"mountinfo": mounts_at(merged, lines), "ls merged": sorted(os.listdir(self.overlay.view))}
        note = "the image's files appear at the merged dir; writes will go to upperdir"
        if self.keeper:
            after["the host's own mountinfo"] = mounts_at(merged)
            note += (f"; the mount is in the mount namespace of keeper pid {self.keeper.pid} (a user namespace "
                     f"of yours), which this notebook reaches as /proc/{self.keeper.pid}/root")
        return Step("the merged root: an overlay of the layers", ORDER["mount_overlay"][0], before, after,
                    current_mode(), note=note,
                    data={"merged": merged, "names": after["ls merged"], "mountinfo": lines})

    # --- the processes -----------------------------------------------------------------------------------

    @step("fork_child")
    def fork_child(self) -> Step:
        """The shim: a child of this notebook, waiting on its channel, in all of the host's namespaces."""
        self.stdio = container.Stdio("capture")      # its pipes, made before the fork so pid 1 inherits them
        self.shim = Child(lambda channel: _shim(channel, self.stdio.child_fds), keep=self.stdio.child_fds)
        container.record_process(self.scope, self.shim.pid)
        self.stdio.after_fork()
        mine, its = namespaces.namespaces_of("self", KINDS), namespaces.namespaces_of(self.shim.pid, KINDS)
        same = [kind for kind in KINDS if mine[kind] == its[kind]]
        before = {"this notebook": f"pid {os.getpid()}", "cgroup (memory)": cgroup_of(os.getpid())}
        after = {"the shim": f"pid {self.shim.pid}, parent {namespaces.status_field('PPid', self.shim.pid)}",
                 "namespaces shared with this notebook": same, "cgroup (memory)": cgroup_of(self.shim.pid)}
        return Step("fork: the shim", ORDER["fork_child"][0], before, after, user_mode(),
                    note="the shim is an ordinary child: same namespaces, same cgroup as this notebook",
                    data={"pid": self.shim.pid, "shared": same})

    @step("join_cgroup")
    def join_cgroup(self, memory: str | None = None, cpus: str | None = None, pids: str | None = None) -> Step:
        """mkdir the box's cgroup, write the limits (Docker's syntax), write the shim's pid to cgroup.procs."""
        from labcore.kernel.cgroups import open_manager
        from labcore.kernel.cgroups.limits import parse_run_limits
        flags = {key: value for key, value in (("memory", memory), ("cpus", cpus), ("pids_limit", pids)) if value}
        limits = parse_run_limits(**flags)            # BadInput for `memory="64XB"`, before anything is made
        manager = open_manager()
        before = {"cgroup of the shim (memory)": cgroup_of(self.shim.pid)}
        self.group = manager.create_for_container(self.id, limits, self.scope)
        manager.add(self.group, self.shim.pid)
        self.limits = flags
        after = {"cgroup of the shim (memory)": cgroup_of(self.shim.pid), "directory": str(self.group.path),
                 **manager.limits_of(self.group), "cgroup.procs": manager.procs(self.group)}
        return Step(f"cgroup {self.group.name}", ORDER["join_cgroup"][0], before, after, user_mode(),
                    note="the limits are files of the group; the shim, and every child it forks, counts against them",
                    data={"limits": manager.limits_of(self.group), "procs": manager.procs(self.group),
                          **plain_limits(manager.limits_of(self.group))})

    @step("unshare")
    def unshare(self) -> Step:
        """The shim unshares six namespaces and forks: its child is pid 1 of the new pid namespace."""
        before = {f"{kind} ns": f"{kind}:[{inode}]" for kind, inode in namespaces.namespaces_of(
            self.shim.pid, KINDS).items()}
        self.shim.send((self.keeper.pid if self.keeper else None, self._join_usernet()))   # the go-ahead
        self.pid = self.shim.recv(timeout=30)
        container.record_process(self.scope, self.pid)
        seen = self.shim.recv(timeout=30)                 # pid 1's first words: what it sees of itself
        inodes = namespaces.namespaces_of(self.pid, KINDS)
        host = namespaces.namespaces_of("self", KINDS)
        after = {f"{kind} ns": f"{kind}:[{inode}]" for kind, inode in inodes.items()}
        after.update({"NSpid (host, inside)": " ".join(map(str, namespaces.nspids(self.pid))), **seen})
        new = [kind for kind in KINDS if inodes[kind] != host[kind]]
        return Step("unshare: pid 1 in new namespaces", ORDER["unshare"][0], before, after, current_mode(),
                    note=f"before: the shim's namespaces, the host's; after: pid 1's, new {', '.join(new)}",
                    data={"pid": self.pid, "new": new, "inside": seen})

    @step("connect_network")
    def connect_network(self) -> Step:
        """Docker's bridge network: a veth pair from lcbr0 into pid 1's namespace, an address, a route.
        Rootless, the lcbr0 is the user-mode network's, in a namespace of your own (``labcore.kernel.usernet``)."""
        if self.usernet is None and os.geteuid() != 0:    # refused by this host: the box keeps lo only
            raise self.network_refused                     # recorded by @step: publish() is refused after it
        host_end = network.interface_names(self.id[:10])[0]
        before = self._wiring(host_end)
        if self.usernet is None:
            self.endpoint = network.connect(self.pid, self.scope, short_id=self.id[:10])
        else:
            self.endpoint = usernet.connect(self.usernet, self.pid, self.scope, short_id=self.id[:10])
        after = {**self._wiring(host_end), **(usernet.show(self.usernet) if self.usernet else {})}
        names = sorted(key.split(": ", 1)[1] for key in after if key.startswith("inside: ")
                       and key not in ("inside: net ns", "inside: default route"))
        where = f", in the router namespace, whose way out is slirp4netns pid {self.usernet.slirp}" \
            if self.usernet else ""
        return Step(f"veth: eth0 {self.endpoint.ip} inside, {host_end} on {self.endpoint.network.bridge}",
                    ORDER["connect_network"][0], before, after, current_mode(),
                    note=f"inside: {names}; the other end is plugged into the bridge{where}",
                    data={"interfaces_inside": names, "ip": self.endpoint.ip, "host_ifname": host_end})

    def _wiring(self, host_end: str) -> dict:
        """pid 1's interfaces, read in its namespace, and the other end of its veth, where that is plugged in."""
        inside = network.in_netns(self.pid, network.read_interfaces)
        side = "host" if self.usernet is None else "router ns"
        return {**{f"inside: {name}": value for name, value in inside.items()}, f"{side}: {host_end}":
                self._link(host_end)}

    def _join_usernet(self) -> int | None:
        """Rootless: join the user-mode network, whose user namespace the shim joins before it unshares, so
        that a veth end may be moved into pid 1's namespace (``labcore.kernel.usernet`` says why). None as root, or
        where this host refuses it: then ``connect_network`` returns the refusal."""
        if os.geteuid() == 0:
            return None
        if self.usernet is not None:
            return self.usernet.holder
        try:
            self.usernet = usernet.join(self.scope)
        except (NeedsPrivilege, NotSupportedHere) as err:
            self.network_refused = err
            return None
        return self.usernet.holder

    def _link(self, name: str) -> str:
        """The host end of the box's veth: on the host, or in the user-mode network's router namespace."""
        if self.usernet is None:
            return network.describe_link(name)
        return network.in_netns(self.usernet.holder, network.describe_link, name)

    @step("pivot_root")
    def pivot_root(self) -> Step:
        """pid 1 mounts /proc, /dev and /sys on the overlay and pivots into it; the host's / is gone for it."""
        merged = str(self.stack.merged)
        known = {identity("/"): root_fs.HOST_ROOT, identity(self.overlay.view): OVERLAY_ROOT}
        before, after = self._ask("pivot_root", merged, known, self.rootless)
        after["host: mounts in the state dir"] = [os.path.relpath(point, self.directory)
                                                  for point in journal.mounts_under(self.directory)]
        return Step("pivot_root into the overlay", ORDER["pivot_root"][0], before, after, current_mode(),
                    note="pid 1's / is the overlay; the chroot escape ends there; its /proc, /dev, /sys did not "
                         "propagate to the host (private first)",
                    data={"root": after["/ is"], "escape": after["chroot escape ends at"],
                          "host_mounts": after["host: mounts in the state dir"]})

    @step("set_hostname")
    def set_hostname(self, name: str) -> Step:
        """sethostname(2) in pid 1's UTS namespace; /etc/hostname rewritten in the box's own layer."""
        namespaces.check_hostname(name)
        before, after = self._ask("set_hostname", name)
        self.hostname = name
        after["host: uname -n"] = namespaces.nodename()
        after["upperdir"] = union_fs.listing(self.stack.upper)
        return Step(f"hostname {name}", ORDER["set_hostname"][0].replace("NAME", name), before, after,
                    current_mode(), note="the name changed inside only; /etc/hostname was copied up to upperdir",
                    data={"hostname": after["uname -n"], "host": after["host: uname -n"],
                          "etc_hostname": after["/etc/hostname"], "upperdir": after["upperdir"]})

    @step("exec")
    def exec(self, argv: list[str]) -> Step:
        """pid 1 execve()s ``argv``: the same process, now the command; its output goes to this notebook."""
        if not argv or not all(isinstance(arg, str) for arg in argv):
            raise BadInput(f"exec() takes a command as a list of strings, not {argv!r}", fix='e.g. ["sh", "-c", "..."]')
        env = container.environment(self.image.config, container.Spec(self.image.ref), self.hostname, 0)
        before = {"pid 1 (host pid)": self.pid, "cmdline": cmdline(self.pid)}
        self.shim.send(("exec", (argv, env)))
        with contextlib.suppress(EOFError):          # execve closed pid 1's end of the channel: it worked
            self.shim.recv(timeout=30)                # anything else is its error, raised here
        self.argv = argv
        levels = nspids(self.pid)                     # [] when a quick command has exited and been reaped
        after = {"pid 1 (host pid)": self.pid, "cmdline": cmdline_after(self.pid, before["cmdline"]),
                 "NSpid (host, inside)": " ".join(map(str, levels)) or "exited already"}
        self.state = lifecycle.check("start", self.state, self.id)
        return Step(f"execve: pid 1 is {argv[0]} now", ORDER["exec"][0], before, after, current_mode(),
                    note="one process, one pid: the Python that set everything up became the command",
                    data={"argv": argv, "pid_inside": levels[-1] if levels else None, "cmdline": after["cmdline"]})

    @step("publish")
    def publish(self, host_port: int, container_port: int) -> Step:
        """`-p 127.0.0.1:HOST_PORT:CONTAINER_PORT`: a proxy on the host's loopback; a request goes through."""
        before = {"host listening": listening(os.getpid(), host_port),
                  "inside listening": listening(self.pid, container_port)}
        self.published = network.publish(self.endpoint, host_port, container_port, self.scope)  # EADDRINUSE: says so
        inside = [address for address in wait_for_listener(self.pid, container_port, REQUEST_TIMEOUT)
                  if address.endswith(f":{container_port}")]
        self.reply = reply = http_get(self.published.host_ip, self.published.host_port)
        url = f"http://{self.published.host_ip}:{self.published.host_port}/"
        after = {"host listening": listening(os.getpid(), self.published.host_port),
                 "inside listening": inside, f"GET {url}": reply,
                 "proxy": f"pid {self.published.pid} -> {self.endpoint.ip}:{container_port}"
                          + (" (connecting from the router namespace)" if self.endpoint.via else "")}
        return Step(f"publish {self.published}", ORDER["publish"][0], before, after, current_mode(),
                    note="the request went to the proxy on loopback, then to eth0's address in the box",
                    data={"reply": reply, "url": url, "host_port": self.published.host_port})

    @step("wait")
    def wait(self) -> Step:
        """Read the command's output to its end, and reap the shim, which exits as pid 1 did."""
        before = {"pid 1": process_state(self.pid)}
        # A command that serves one request (the notebook's) waits for ever when its port could not be
        # published, or the request did not reach it: it is stopped as `docker stop` would, SIGKILL from the
        # host, and the step says so.
        unserved = "publish" in self.refused or (self.reply or "").startswith("failed")
        stop = threading.Timer(REQUEST_TIMEOUT, os.kill, (self.pid, signal.SIGKILL)) if unserved else None
        if stop:
            stop.start()
        stdout, stderr = self.stdio.pump()
        code = self.shim.wait()
        if stop:
            stop.cancel()
        self.result = container.Result(self.id, self.argv, code, stdout, stderr)
        self.state = lifecycle.check("exit", self.state, self.id)
        after = {"pid 1": process_state(self.pid),
                 "exit code": code, "stdout": stdout.decode(errors="replace").splitlines(),
                 "stderr": stderr.decode(errors="replace").splitlines()}
        note = "its namespaces went with it: the veth pair too; the overlay, cgroup and dir remain"
        if stop and code == 128 + signal.SIGKILL:
            note = (f"stopped after {REQUEST_TIMEOUT:.0f} s with SIGKILL from the host, as `docker stop` does: "
                    f"it waited for a request that did not reach it ({self.refused.get('publish') or self.reply})")
        return Step(f"exit code {code}", ORDER["wait"][0], before, after, user_mode(), note=note,
                    data={"exit_code": code, "stdout": after["stdout"], "stderr": after["stderr"]})

    # --- the end ---------------------------------------------------------------------------------------

    def remove(self) -> Step:
        """Undo everything the box made, newest first; before/after: what is left of it on the host."""
        if "remove" in self.done:
            raise InvalidTransition(f"box {self.id[:12]} was removed already")
        before = self.leftovers()
        self.undo()
        after = self.leftovers()
        self.done.append("remove")
        return Step(f"remove box {self.id[:12]}", "kill; ip link delete; rmdir cgroups; umount2; rm -r",
                    before, after, user_mode(), note="nothing of the box is left on the host",
                    data={"left": {key: value for key, value in after.items() if value}})

    def undo(self) -> None:
        """Stop the processes (pid 1, then the shim, which reaps it), reap the shim, undo the scope."""
        if self.shim is not None and self.shim.status is None:
            for entry in reversed([e for e in self.scope.entries if e.kind == "process" and
                                   e.args["pid"] in (self.pid, self.shim.pid)]):
                journal.undo_kill(**entry.args)
            self.shim.wait()
        if self.stdio is not None:
            self.stdio.__exit__()
            self.stdio = None
        if self.keeper is not None:
            self.keeper.close()            # its mount namespace, and the overlay in it, go with it
        failures = self.scope.close()
        if failures:
            raise LabError("could not undo: " + "; ".join(failures), fix="run `labcore cleanup`")

    def leftovers(self) -> dict:
        """What of the box the host still has: mounts, cgroup dirs, links, live processes, the state dir."""
        host_end = network.interface_names(self.id[:10])[0]
        proxy = self.published and self.published.pid
        router = (self.usernet.holder, self.usernet.slirp) if self.usernet else ()
        keeper = self.keeper and self.keeper.pid
        pids = [pid for pid in (self.pid, self.shim and self.shim.pid, proxy, keeper, *router)
                if pid and _alive(pid)]
        groups = [name for name, path in (self.group.dirs.items() if self.group else ()) if path.exists()]
        linked = (network.link_exists(host_end) if not router else
                  _alive(router[0]) and self._link(host_end) != "absent")
        return {"mounts (mountinfo)": journal.mounts_under(self.directory),
                f"cgroup labcore-{self.id[:12]}... in": groups,
                "links (ip link)": [host_end] if linked else [], "processes": pids,
                "state dir": [str(self.directory)] if self.directory.exists() else []}

    # --- talking to pid 1 ------------------------------------------------------------------------------

    def _ask(self, request: str, *args):
        self.shim.send((request, args))
        return self.shim.recv(timeout=60)

    def diagram(self) -> str:
        """DOT of the box from live state: processes, namespaces, cgroup, overlay stack, veth, published port."""
        from labcore.lessons.diagrams import Graph
        graph = Graph(f"box {self.id[:12]}", rankdir="LR", fontname="Helvetica", nodesep="0.15")
        graph.defaults("node", fontname="Helvetica", fontsize="10", shape="box", style="rounded,filled",
                       fillcolor="white")
        graph.defaults("edge", fontname="Helvetica", fontsize="9")
        _draw_processes(graph, self)
        _draw_overlay(graph, self)
        _draw_cgroup(graph, self)
        _draw_network(graph, self)
        return graph.source()


def start(image: str = "busybox") -> Box:
    """A new box: the image found (busybox built from the host the first time), an id, an empty state dir."""
    box = Box(container.find_image(image))
    box.scope.record("directory", str(box.directory), "rmtree", path=str(box.directory))   # journal, then make
    box.directory.mkdir(parents=True)
    box.done.append("start")
    return box


# --- inside: the shim and pid 1. They never print, and leave by os._exit. ----------------------------------

def _shim(channel, child_fds) -> None:
    """Wait for the go-ahead; unshare; fork pid 1 (``container.fork_pid1``, the runtime's own); then only wait
    for it, and exit as it did. Rootless, it
    first joins the keeper's user and mount namespaces (root there, it may unshare the rest, and pid 1's mount
    namespace is born a copy of the keeper's, overlay included) — the keeper lives in the user-mode network's
    user namespace (``Box.mount_overlay``) — or, without a keeper, the network's user namespace alone."""
    keeper, router = channel.recv()
    if keeper is not None:
        userns.MountKeeper.join_pid(keeper)
        syscalls.unshare(container.NAMESPACES)
    elif router is not None:
        userns.join(router)
        syscalls.unshare(container.NAMESPACES)
    else:
        userns.unshare(container.NAMESPACES)
    container.fork_pid1(channel, child_fds, lambda: _pid1(channel, child_fds))     # as `labcore run`'s shim


def _pid1(channel, child_fds) -> None:
    """Report, then take orders until exec. Everything it calls is imported already: after pivot_root the
    host's Python library is out of reach."""
    try:
        channel.send({"pid inside (getpid)": os.getpid(), "cgroup inside (/proc/self/cgroup)":
                      sorted(set(namespaces.cgroup_paths().values()))})
        while True:
            request, args = channel.recv()
            try:
                if request == "exec":
                    _exec(child_fds, *args)
                channel.send(PID1_ORDERS[request](*args))
            except Exception as err:       # the parent raises it; pid 1 waits for the next order
                channel.send_error(err)
    finally:
        os._exit(127)                      # the parent went away (EOFError), or exec failed fatally


def _pivot(root: str, known: dict, rootless: bool) -> tuple[dict, dict]:
    # Private before any mount: pid 1's mount table is a copy of the host's, where systemd makes / shared; its copy
    # of the merged dir is then a peer of the host's, and a /proc mounted on it would appear on the host too.
    # pivot_root, not chroot: chroot moves where one process's "/" starts and leaves every host mount in the
    # namespace, which the escape below climbs back to; pivot_root replaces the namespace's root mount and the
    # old one is detached, so nothing leads back (kernel/rootfs.py and lessons/root_fs.py explain both).
    before = {**root_fs.view_of_root(known), "mounts": len(namespaces.mounts())}
    rootfs.mount_container_root(root, rootless)        # private, bind, proc, dev, sys, pivot_root, detach
    after = {**root_fs.view_of_root(known), "mounts": len(namespaces.mounts())}
    after["chroot escape ends at"] = root_fs.try_escape(known)["/ is"]
    os.rmdir(f"/{root_fs.ESCAPE_DIR}")                       # the escape's directory, from the box's upperdir
    return before, after


def _hostname(name: str) -> tuple[dict, dict]:
    before = {"uname -n": namespaces.nodename(), "/etc/hostname": Path("/etc/hostname").read_text().strip()}
    syscalls.sethostname(name)
    Path("/etc/hostname").write_text(name + "\n")
    return before, {"uname -n": namespaces.nodename(), "/etc/hostname": Path("/etc/hostname").read_text().strip()}


def _exec(child_fds, argv: list[str], env: list[str]) -> None:
    container.attach_stdio(child_fds)      # the pipes to the notebook become fds 0, 1, 2
    container.reset_signals()
    container.execute(argv, env)           # returns only by raising


PID1_ORDERS = {"pivot_root": _pivot, "set_hostname": _hostname}


# --- evidence readers ---------------------------------------------------------------------------------------

def identity(path: str) -> tuple[int, int]:
    """A directory as the kernel names it: (device, inode)."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def mountinfo_lines(point, pid: int | str = "self") -> list[str]:
    """/proc/PID/mountinfo lines for mounts at ``point`` (proc(5)): this notebook's mount namespace, or that of
    process ``pid``."""
    lines = procfs.read(pid, "mountinfo").splitlines()
    return [line for line in lines if line.split()[4] == str(point)]


def mounts_at(point, lines: list[str] | None = None) -> display.Table | str:
    """The mounts at ``point`` as a table of the fields that teach (the raw lines are 500 characters)."""
    lines = mountinfo_lines(point) if lines is None else lines
    return display.mount_table(lines, MOUNTS_SHOWN) if lines else "no mount there"


# Each limit by the file that holds it, on cgroup v1 and on v2 (cgroup-v1/*.rst, cgroup-v2.rst): a check cell
# reads data["memory_limit"] on either, and data["memory_file"] says which file it came from.
LIMIT_FILES = {"memory": ("memory.limit_in_bytes", "memory.max"), "cpu_quota": ("cpu.cfs_quota_us", "cpu.max"),
               "pids": ("pids.max",)}


def plain_limits(limits: dict[str, str]) -> dict[str, str]:
    """``{"memory.max": "67108864", "cpu.max": "50000 100000"}`` -> ``{"memory_limit": "67108864",
    "memory_file": "memory.max", "cpu_quota_limit": "50000", ...}``: the same keys on cgroup v1 and v2."""
    found = {}
    for name, files in LIMIT_FILES.items():
        for file in files:
            if file in limits:     # cpu.max holds "QUOTA PERIOD" (microseconds), cfs_quota_us the quota alone
                found[f"{name}_limit"], found[f"{name}_file"] = limits[file].split()[0], file
    return found


def cgroup_of(pid: int) -> str:
    """The memory hierarchy's line of /proc/PID/cgroup, as this process's cgroup namespace shows it."""
    return procfs.cgroup_of("memory", pid) or procfs.cgroup_of("v2", pid) or "?"


def cmdline(pid: int) -> list[str]:
    """argv of a process, from /proc/PID/cmdline (its first 4 words); [] once it has exited."""
    return procfs.cmdline(pid)[:4]


def cmdline_after(pid: int, old: list[str], timeout: float = 2.0) -> list[str]:
    """The new argv once execve has installed it: the channel closes (close-on-exec) a moment before."""
    deadline = time.monotonic() + timeout
    while cmdline(pid) == old and time.monotonic() < deadline:
        time.sleep(0.01)
    return cmdline(pid)


def nspids(pid: int) -> list[int]:
    """NSpid of /proc/PID/status (namespaces.nspids), or [] once the process is gone."""
    try:
        return namespaces.nspids(pid)
    except OSError:
        return []


def process_state(pid: int) -> str:
    """The State line of /proc/PID/status ("S (sleeping)", "Z (zombie)"), or "gone"."""
    try:
        return namespaces.status_field("State", pid)
    except OSError:
        return "gone"


def http_get(host: str, port: int, timeout: float = 5.0) -> str:
    """GET / and the reply as ``STATUS REASON: BODY``, or why it failed (evidence, not an exception)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return f"{response.status} {response.reason}: {response.read().decode(errors='replace').strip()}"
    except (OSError, http.client.HTTPException) as err:
        return f"failed: {type(err).__name__} {err}"
    finally:
        connection.close()


def listening(pid: int, port: int) -> list[str]:
    """TCP sockets listening on ``port`` in pid's network namespace, IPv4 and IPv6 (procfs.tcp_listeners):
    busybox's nc and httpd listen on [::] (shown *), which takes IPv4 connections too (ipv6(7), IPV6_V6ONLY off)."""
    return [str(listener) for listener in procfs.tcp_listeners(pid) if listener.port == port]


def _alive(pid: int) -> bool:
    return process_state(pid)[:1] not in ("g", "Z", "")


# --- the picture --------------------------------------------------------------------------------------------

def _draw_processes(graph, box: Box) -> None:
    graph.node("notebook", f"this notebook\npid {os.getpid()}")
    if box.shim is None:
        return
    graph.node("shim", f"shim\nhost pid {box.shim.pid}", fillcolor="white" if box.shim.status is None else "gray90")
    graph.edge("notebook", "shim", label="fork")
    if box.pid is None:
        return
    alive = _alive(box.pid)
    what = " ".join(cmdline(box.pid)[:2]) if alive else f"exited {box.shim.status}"
    graph.node("pid1", f"pid 1 inside\nhost pid {box.pid}\n{what}", fillcolor="lightyellow" if alive else "gray90")
    graph.edge("shim", "pid1", label="unshare, fork")
    if alive:
        host = namespaces.namespaces_of("self", KINDS)
        for kind, inode in namespaces.namespaces_of(box.pid, KINDS).items():
            graph.node(f"ns {kind}", f"{kind}:[{inode}]", shape="ellipse",
                       fillcolor="lightyellow" if inode != host[kind] else "lightgrey")
            graph.edge("pid1", f"ns {kind}", arrowhead="none", color="gray50")
        graph.cluster("ns", "pid 1's namespaces (yellow: new)", [f"ns {kind}" for kind in KINDS], style="dashed")


def _draw_overlay(graph, box: Box) -> None:
    if box.stack is None:
        return
    graph.node("upper", f"upperdir: {', '.join(union_fs.listing(box.stack.upper))}", fillcolor="palegreen")
    nodes = ["upper", *(f"lower {index}" for index in range(len(box.stack.lowers)))]
    for index, path in enumerate(box.stack.lowers):         # top first, as lowerdir= lists them
        name = "init (/etc/hostname, hosts)" if index == 0 else f"layer {path.name[:12]}"
        graph.node(f"lower {index}", f"lowerdir {index + 1}: {name}", fillcolor="lightblue")
    if box.overlay is not None and os.path.ismount(box.overlay.view):
        graph.node("merged", "merged (overlay)" + ("\n= / of pid 1" if "pivot_root" in box.done else ""),
                   fillcolor="khaki")
        nodes.append("merged")
        for node in nodes[:-1]:
            graph.edge(node, "merged", color="gray40")
        if box.pid is not None and "pivot_root" in box.done and _alive(box.pid):
            graph.edge("merged", "pid1", label="root", style="bold")
    graph.cluster("overlay", f"overlay stack in {box.directory.name}", nodes, style="rounded")


def _draw_cgroup(graph, box: Box) -> None:
    if box.group is None or not box.group.path.exists():
        return
    from labcore.kernel.cgroups import open_manager
    limits = open_manager().limits_of(box.group)
    rows = [f"cgroup labcore/labcore-{box.id[:12]}...", *(f"{key} = {value}" for key, value in limits.items())]
    graph.node("cgroup", "\n".join(rows), fillcolor="mistyrose")
    for node, pid in (("shim", box.shim.pid), ("pid1", box.pid)):
        if pid and _alive(pid):
            graph.edge(node, "cgroup", style="dashed", label="cgroup.procs")


def _draw_network(graph, box: Box) -> None:
    if box.endpoint is None or box._link(box.endpoint.host_ifname) == "absent":
        return
    bridge = box.endpoint.network
    graph.node("bridge", f"{bridge.bridge}\n{bridge.gateway}", shape="component", fillcolor="lightblue")
    graph.node("veth", f"{box.endpoint.host_ifname}", shape="component", fillcolor="lightblue")
    graph.node("eth0", f"eth0 {box.endpoint.ip}\n(in pid 1's net ns)", shape="component", fillcolor="lightyellow")
    graph.edge("bridge", "veth", arrowhead="none")
    graph.edge("veth", "eth0", arrowhead="none", label="veth pair")
    if _alive(box.pid):
        graph.edge("eth0", "ns net", style="dotted", arrowhead="none")
    if box.published is not None:
        graph.node("proxy", f"proxy pid {box.published.pid}\n{box.published.host_ip}:{box.published.host_port}")
        graph.edge("proxy", "eth0", label=f"connect :{box.published.container_port}", style="dashed")
    if box.usernet is not None:
        _draw_router(graph, box.usernet)


def _draw_router(graph, router: usernet.Usernet) -> None:
    """Rootless: the bridge and the host end are in the router namespace, whose way out is slirp4netns."""
    graph.node("tap", f"{usernet.TAP}\n10.0.2.100", shape="component", fillcolor="lightblue")
    graph.node("slirp", f"slirp4netns\nhost pid {router.slirp}")
    graph.edge("slirp", "tap", label="tap fd", style="dashed", arrowhead="none")
    graph.edge("bridge", "tap", label="routed, masqueraded", style="dotted", arrowhead="none")
    graph.cluster("router", f"router namespace, held by pid {router.holder}", ["bridge", "veth", "tap"],
                  style="dashed")


# --- the network beyond the proxy: bandwidth with tc, ports and the way out with NAT ---------------------------
# Module functions, not Box steps: they add nothing to the box that `docker run` would make (the start sequence
# is runtime.sequence's), and each removes what it made before it returns. Each needs the box's eth0 and its
# pid 1 alive: after connect_network(), before wait().

MiB = 1 << 20
OUTSIDE_POOL = "10.204.0.0/28"           # "another network", a free /30 of it: outside the lab's 10.203.0.0/16


ROOTLESS_NAT = ("rootless Docker and Podman forward ports with a process (rootlesskit's port driver, slirp4netns's "
                "add_hostfwd) and leave by slirp4netns, which is their NAT")


def _network_refusal(box: Box, title: str, action: str, key: str, why: str = ROOTLESS_NAT) -> Step | None:
    """The refused Step when the box has no network of the host's to work on (refused, or rootless), else None."""
    if "connect_network" in box.refused:
        return hosts.refuse(title, action, NeedsPrivilege("this step needs the box's network, which this host "
                                                          "refused above", why=box.refused["connect_network"]), key=key)
    if box.endpoint is None or not _alive(box.pid):
        raise InvalidTransition(f"{title} needs the box's eth0 and its pid 1 alive",
                                fix="after box.connect_network(), before box.wait()")
    if box.usernet is not None:
        return hosts.refuse(title, action, NeedsPrivilege(
            "the host's own interfaces and nftables tables are root's: the box's veth is in a router "
            "namespace of yours", why=why), key=key)
    return None


def limit_bandwidth(box: Box, mbit: int = 16, megabytes: int = 2) -> Step:
    """No cgroup limits bandwidth (notebook 04): a tbf qdisc on the host end of the box's veth does. The host
    sends ``megabytes`` MiB to a client in the box, first free, then under ``mbit`` Mbit/s; the qdisc goes after."""
    if not isinstance(mbit, (int, float)) or mbit < 1:     # tc's rate is whole bits: below 1 Mbit/s, say so first
        raise BadInput(f"limit_bandwidth takes a rate of at least 1 Mbit/s, not {mbit!r}", fix="e.g. mbit=16")
    title = f"bandwidth: tc tbf rate {mbit}mbit on the box's veth"
    action = f"tc qdisc add dev HOST_END root tbf rate {mbit}mbit burst B latency 50ms; send {megabytes} MiB to the box"
    refused = _network_refusal(box, title, action, "box.limit_bandwidth", why=(
        "the step sends from the host's own network namespace, which is root's; rootless, the box's veth ends in "
        "the router namespace of labcore.kernel.usernet, where a qdisc would go"))
    if refused is not None:
        return refused
    host_end = box.endpoint.host_ifname
    try:
        with journal.Scope() as scope:
            free, default = push_to_box(box, megabytes), network.root_qdisc(host_end)
            made = network.limit_rate(host_end, mbit * 1_000_000, scope)
            held, qdisc = push_to_box(box, megabytes), network.root_qdisc(host_end)
    except _REFUSED as err:
        return hosts.refuse(title, action, err, key="box.limit_bandwidth")
    measured = lambda got: f"{got['bytes'] * 8 / got['seconds'] / 1e6:.1f}"     # noqa: E731 - Mbit/s
    return Step(title, action.replace("HOST_END", host_end).replace(" B ", f" {made['burst']} "),
                columns=("limit off", "limit on"),
                before={f"root qdisc of {host_end}": default["kind"], "received in the box (bytes)": free["bytes"],
                        "seconds": f"{free['seconds']:.2f}", "Mbit/s": measured(free)},
                after={f"root qdisc of {host_end}": f"{qdisc['kind']} rate {qdisc.get('rate', 0) // 1_000_000}Mbit",
                       "received in the box (bytes)": held["bytes"], "seconds": f"{held['seconds']:.2f}",
                       "Mbit/s": measured(held), "sent by the qdisc (bytes, packets)":
                       f"{qdisc.get('bytes')}, {qdisc.get('packets')}", "qdisc of it now": network.root_qdisc(
                           host_end)["kind"]},
                mode=current_mode(), key="box.limit_bandwidth",
                note=bandwidth_note(megabytes, mbit, float(measured(free)), float(measured(held))),
                data={"qdisc": qdisc, "rate": mbit * 1_000_000, "free": free, "held": held, "host_ifname": host_end})


def bandwidth_note(megabytes: int, mbit: float, free: float, held: float) -> str:
    """What the two measured rates show: held at the qdisc's rate (within a fifth), or not."""
    if held <= mbit * 1.2 and held < free:
        return (f"the same {megabytes} MiB, {free} Mbit/s free and {held} Mbit/s under a {mbit} Mbit/s limit: the tbf "
                "lets a packet leave the host end only with a token, tokens come at the rate; the box's TCP slows "
                "down to it")
    return (f"the same {megabytes} MiB, {free} Mbit/s free and {held} Mbit/s under a {mbit} Mbit/s limit: not held "
            "to the rate here; see the qdisc's counters")


def push_to_box(box: Box, megabytes: int) -> dict:
    """``megabytes`` MiB from a server on the bridge's address (the host) to a client in the box's network
    namespace, which times them from connect to the end: {"bytes": N, "seconds": S}."""
    with socket.create_server((box.endpoint.network.gateway, 0)) as server:
        server.settimeout(REQUEST_TIMEOUT)
        sender = threading.Thread(target=_send_once, args=(server, megabytes * MiB), daemon=True)
        sender.start()
        got = network.in_netns(box.pid, receive_all, server.getsockname())
        sender.join()
    return got


def _send_once(server: socket.socket, size: int) -> None:
    with contextlib.suppress(OSError):
        connection, _ = server.accept()
        with connection:
            connection.sendall(bytes(size))


def receive_all(address: tuple[str, int]) -> dict:
    """In the box's namespace: connect, read to the end, and say how much and how long."""
    received, start = 0, time.monotonic()
    with socket.create_connection(address, timeout=60) as connection:
        while chunk := connection.recv(1 << 16):
            received += len(chunk)
    return {"bytes": received, "seconds": time.monotonic() - start}


def publish_dnat(box: Box, host_port: int = 18810, container_port: int = 8080) -> Step:
    """Docker's way to publish: a DNAT rule, no process. A server in the box's namespace on ``container_port``;
    the host asks its own address (the bridge's), ``host_port``, before and after the rule; its counter."""
    table = f"{paths.PREFIX}-dnat-{box.id[:10]}"
    title = f"publish with DNAT: host port {host_port} -> the box's port {container_port}"
    action = (f"nft add table ip {table}; ... type nat hook output ...: fib daddr type local tcp dport {host_port} "
              f"dnat to BOX:{container_port}")
    refused = _network_refusal(box, title, action, "box.publish_dnat")
    if refused is not None:
        return refused
    gateway, action = box.endpoint.network.gateway, action.replace("BOX", box.endpoint.ip)
    server = Child(lambda channel: _serve_once(channel, box.pid, container_port))
    try:
        with journal.Scope() as scope:
            container.record_process(scope, server.pid)
            server.recv(timeout=REQUEST_TIMEOUT)                 # listening, in the box's namespace
            before = network.reply(gateway, host_port)           # nothing on the host's port itself
            nat.publish(table, host_port, box.endpoint.ip, container_port, scope)
            counted = nat.packets(table, "publish")
            found = {"before": before, "reply": network.reply(gateway, host_port), "rules": nat.rules(table),
                     "packets": (counted, nat.packets(table, "publish"))}
            if found["reply"].startswith("failed"):        # no client reached the server: do not wait for it
                raise NotSupportedHere(f"the connection through the DNAT rule failed ({found['reply']})",
                                       fix="a firewall on this host drops what the rule rewrote: `nft list ruleset`")
            found["seen"] = server.recv(timeout=REQUEST_TIMEOUT)
    except _REFUSED as err:
        return hosts.refuse(title, action, err, key="box.publish_dnat")
    finally:
        server.wait()                    # reaped, whether it ended or the scope killed it
    return dnat_step(title, action, table, f"{gateway}:{host_port}", found)


def dnat_step(title: str, action: str, table: str, url: str, found: dict) -> Step:
    counted, counter = found["packets"]
    return Step(title, action, columns=("no rule", "DNAT rule"),
                before={f"connect {url}": found["before"], f"table ip {table}": "none",
                        "connections the rule rewrote": "-"},
                after={f"connect {url}": found["reply"], f"table ip {table}": found["rules"],
                       "connections the rule rewrote": f"{counted} -> {counter}",
                       "the server in the box saw a client at": found["seen"],
                       "the table now": nat.rules(table) or "none"},
                mode=current_mode(), key="box.publish_dnat",
                note="no process relayed it: the kernel rewrote the connection's destination to the box's address "
                     "(the rule counts its first packet; conntrack rewrites the rest), and the table is gone again",
                data={"reply": found["reply"], "refused_before": found["before"], "packets": found["packets"],
                      "seen": found["seen"], "table": table})


def _serve_once(channel, pid: int | None, port: int, address: str = "0.0.0.0", count: int = 1) -> list | str:
    if pid is not None:
        network.enter_netns(pid)
    with socket.create_server((address, port)) as listener:
        channel.send("listening")
        seen = []
        for _ in range(count):
            connection, (client, _) = listener.accept()
            with connection:
                connection.sendall(f"hello from net:[{network.netns_inode('self')}], to {client}\n".encode())
            seen.append(client)
    return seen[0] if count == 1 else seen


def masquerade_outbound(box: Box, port: int = 8081) -> Step:
    """Docker's way out: MASQUERADE. The box connects to a server on another network the host routes to (a
    namespace of its own); the server sees the box's address without the rule, the host's with it."""
    masq, only = f"{paths.PREFIX}-masq-{box.id[:10]}", f"{paths.PREFIX}-fwd-{box.id[:10]}"
    title = "MASQUERADE: the box reaches another network as the host"
    action = (f"nft add table ip {masq}: type nat hook postrouting: ip saddr SUBNET oifname != BRIDGE masquerade; "
              "the box connects to a server beyond the host")
    refused = _network_refusal(box, title, action, "box.masquerade_outbound")
    if refused is not None:
        return refused
    action = action.replace("SUBNET", box.endpoint.network.subnet).replace("BRIDGE", box.endpoint.network.bridge)
    outside = Child(_outside)
    try:
        with journal.Scope() as scope:
            container.record_process(scope, outside.pid)
            net = another_network(outside, box, port, scope)
            found = reach_out(box, net, port, (masq, only), scope)
            seen = outside.recv(timeout=REQUEST_TIMEOUT)
    except _REFUSED as err:
        return hosts.refuse(title, action, err, key="box.masquerade_outbound")
    finally:
        outside.wait()                   # reaped, whether it ended or the scope killed it
    return masquerade_step(box, title, action, found, seen, (masq, only), net.gateway, port)


def another_network(outside: Child, box: Box, port: int, scope: journal.Scope):
    """The outside child, in a network namespace of its own, wired to the host and listening on ``port``."""
    outside.recv(timeout=REQUEST_TIMEOUT)                    # unshared
    net = nat.wire_peer(outside.pid, scope, box.id[:10], nat.free_peer_subnet(OUTSIDE_POOL))
    outside.send((nat.peer_address(net), port, 2))
    outside.recv(timeout=REQUEST_TIMEOUT)                    # listening
    return net


def reach_out(box: Box, net, port: int, tables: tuple[str, str], scope: journal.Scope) -> dict:
    """The host made a router for the step's time (its filter first); the box connects without the masquerade,
    then with it. A connection that fails (a firewall of the host's forward hook) ends the step, refused."""
    masq, only = tables
    bridge, target = box.endpoint.network.bridge, nat.peer_address(net)
    nat.forward_only(only, bridge, net.bridge, scope)        # before the bridge may forward at all
    for link in (bridge, net.bridge):
        nat.allow_forwarding(link, scope)
    found = {"plain": network.in_netns(box.pid, network.reply, target, port)}
    nat.masquerade(masq, box.endpoint.network.subnet, bridge, scope)
    found["counted"] = nat.packets(masq, "masquerade")
    found["masked"] = network.in_netns(box.pid, network.reply, target, port)
    found.update(rules=nat.rules(masq), counter=nat.packets(masq, "masquerade"), target=target)
    failed = next((reply for reply in (found["plain"], found["masked"]) if reply.startswith("failed")), None)
    if failed:
        raise NotSupportedHere(f"the box could not reach {target}:{port} through the host ({failed})",
                               fix="a firewall on this host drops what it forwards: `nft list ruleset`")
    return found


def masquerade_step(box: Box, title: str, action: str, found: dict, seen: list, tables: tuple[str, str],
                    host_address: str, port: int) -> Step:
    bridge, target = box.endpoint.network.bridge, found["target"]
    left = ", ".join(f"{name}: {nat.rules(name) or 'none'}" for name in tables)
    return Step(title, action, columns=("no rule", "MASQUERADE"),
                before={f"the box connects to {target}:{port}": found["plain"], "the server saw": seen[0],
                        f"table ip {tables[0]}": "none", "connections masqueraded": "-"},
                after={f"the box connects to {target}:{port}": found["masked"], "the server saw": seen[1],
                       f"table ip {tables[0]}": found["rules"],
                       "connections masqueraded": f"{found['counted']} -> {found['counter']}",
                       f"forwarding on {bridge} now": nat.forwarding(bridge), "tables now": left},
                mode=current_mode(), key="box.masquerade_outbound",
                note=masquerade_note(seen, box.endpoint.ip, host_address),
                data={"seen": seen, "packets": (found["counted"], found["counter"]), "table": tables[0],
                      "replies": (found["plain"], found["masked"]), "host_address": host_address,
                      "box_address": box.endpoint.ip})


def masquerade_note(seen: list, box_address: str, host_address: str) -> str:
    """What the outside server saw, before and after the rule: the box's address, then the host's, or not."""
    if list(seen[:2]) == [box_address, host_address]:
        return (f"without the rule the server saw the box's own {box_address}, an address nobody beyond the host "
                f"could answer on a real network; with it, the host's {host_address}, and conntrack turned each "
                "answer back to the box")
    return (f"the server saw {' then '.join(map(str, seen[:2])) or 'no client'}: not the box's {box_address} then "
            f"the host's {host_address}; see the rule's counter and `nft list ruleset`")


def _outside(channel) -> list:
    """Another network's server: a child in a network namespace of its own, wired by its parent; it answers
    ``count`` connections with the address it saw each client at."""
    syscalls.unshare(syscalls.CLONE_NEWNET)
    channel.send("ready")
    address, port, count = channel.recv()
    return _serve_once(channel, None, port, address, count)


# --- the same, in one call -----------------------------------------------------------------------------------

def compare_with_run(box: Box, host_port: int | None = None) -> Step:
    """`labcore run` of the box's command with its hostname, limits and published port (on ``host_port``,
    by default the box's port + 1): before = the hand-built box's evidence, after = the same from one call.

    The command may serve one request, as the notebook's does: it runs in a thread while this one sends it."""
    title = "by hand (before) and with `labcore run` (after)"
    # Refused: a box that never ran its command has no result to compare, and a command that serves one
    # request would wait for ever under `labcore run` where no port can be published.
    refused = [name for name in ("wait", "publish") if name in box.refused]
    if refused:
        return hosts.refuse(title, "labcore run ...", NeedsPrivilege(
            f"the box was refused {', '.join(f'{name}()' for name in refused)} here: nothing to compare",
            why=box.refused[refused[0]]), key="assemble.compare_with_run")
    if "wait" not in box.done:
        raise InvalidTransition("compare_with_run() needs box.wait() first: the box's evidence is its result",
                                fix=box.next_hint())
    publish = []
    if box.published is not None:
        host_port = host_port or box.published.host_port + 1
        publish = [f"127.0.0.1:{host_port}:{box.published.container_port}"]
    spec = container.Spec(box.image.ref, cmd=box.argv, hostname=box.hostname, limits=dict(box.limits),
                          publish=publish, rm=True)
    outcome: dict = {}
    runner = threading.Thread(target=_run_into, args=(spec, outcome), name="labcore-compare-run", daemon=True)
    runner.start()
    reply = _request_while(runner, host_port) if publish else None
    runner.join()
    if "error" in outcome:
        raise outcome["error"]
    hand, run = evidence_of(box.result, box.reply), evidence_of(outcome["result"], reply)
    return Step(title, run_command_line(spec), hand, run, current_mode(), key="assemble.compare_with_run",
                note="the same evidence: twelve steps by hand, or one call",
                data={"same": hand == run, "hand": hand, "run": run})


def evidence_of(result: container.Result, reply: str | None) -> dict:
    found = {"stdout": result.stdout.decode(errors="replace").splitlines(), "exit code": result.exit_code}
    if reply is not None:
        found["GET / through the published port"] = reply
    return found


def run_command_line(spec: container.Spec) -> str:
    """The spec as `labcore run` (and `docker run`) spell it on the command line; a long argument as '...'."""
    flags = [f"--{name.replace('_', '-')} {value}" for name, value in spec.limits.items()]
    flags += [f"-p {mapping}" for mapping in spec.publish]
    command = " ".join(shlex.quote(arg) if len(arg) <= 40 else "'...'" for arg in spec.cmd)
    return f"labcore run --rm --hostname {spec.hostname} {' '.join(flags)} {spec.image} {command}"


def _run_into(spec: container.Spec, outcome: dict) -> None:
    try:
        outcome["result"] = container.run(spec)
    except BaseException as err:            # re-raised in the caller's thread
        outcome["error"] = err


def _request_while(runner: threading.Thread, port: int) -> str:
    """GET through the published port once the container answers: its server starts after the proxy."""
    deadline, reply = time.monotonic() + REQUEST_TIMEOUT, "failed: no answer"
    while runner.is_alive() and time.monotonic() < deadline:
        reply = http_get("127.0.0.1", port)
        if not reply.startswith("failed"):
            break
        time.sleep(0.1)
    return reply


# --- the same container as a compose file -----------------------------------------------------------------

COMPOSERIZE_EXAMPLE = ("docker run -d --name web --hostname web -e GREETING=hello -p 127.0.0.1:8080:80 -m 64m "
                       "--cpus 0.5 --cap-drop ALL --read-only --tmpfs /www busybox "
                       "sh -c 'echo $GREETING > /www/index.html && exec httpd -f -p 80 -h /www'")


def composerize(command: str = COMPOSERIZE_EXAMPLE) -> Step:
    """`labcore composerize` turns a `docker run` command into a compose file; the real docker-compose reads it
    back (`docker-compose config`): every flag a key, each value as compose understood it."""
    import subprocess
    import sys
    made = subprocess.run([sys.executable, "-m", "labcore", "composerize", command], capture_output=True,
                          text=True, timeout=60)
    after = {"the command": command, "the file (labcore composerize)": made.stdout or made.stderr.strip()}
    config = compose_config(made.stdout) if made.returncode == 0 else None
    if config is not None:
        after["as docker-compose reads it (config)"] = config.stdout if config.returncode == 0 else config.stderr
    elif made.returncode == 0:
        after["as docker-compose reads it (config)"] = ("not checked: docker-compose is not installed "
                                                        "(apt-get install docker-compose)")
    return Step("docker run as a compose file", "labcore composerize 'COMMAND' > docker-compose.yml; "
                "docker-compose config", after=after, mode=user_mode(), note=composerize_note(made, config),
                data={"yaml": made.stdout, "error": made.stderr.strip(), "exit_code": made.returncode,
                      "config": config.stdout if config else "",
                      "config_exit_code": config.returncode if config else None})


def composerize_note(made, config) -> str:
    """What the two runs showed: refused, written but refused by docker-compose, not read back, or read back."""
    if made.returncode != 0:
        return "refused by name, and nothing written: the file could not say it"
    if config is None:
        return "one flag, one key, as labcore wrote it; not read back: docker-compose is not installed here"
    if config.returncode != 0:
        return "written, but docker-compose refused the file: its answer is above"
    return "one flag, one key: docker-compose read the file back, and `docker-compose up` makes the container"


def compose_config(text: str):
    """`docker-compose config` on ``text``, in a journaled scratch directory; None without docker-compose."""
    import shutil
    import subprocess
    if not shutil.which("docker-compose"):
        return None
    with journal.Scope() as scope:
        directory = journal.make_scratch(scope, "labcore-compose-")
        Path(directory, "docker-compose.yml").write_text(text)
        return subprocess.run(["docker-compose", "config"], cwd=directory, capture_output=True, text=True,
                              timeout=60)
