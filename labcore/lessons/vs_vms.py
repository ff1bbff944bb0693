"""Containers and virtual machines, side by side: one kernel shared, or a kernel each.

A container is a group of the host's processes that the host's kernel fences in: `uname -r` inside it
prints the host's kernel release, and /proc/sys/kernel/random/boot_id (a random id the kernel draws once per
boot, random(4)) is the host's too. There is no second kernel to start, so a container starts as fast as the
host can set up namespaces, a root filesystem and a cgroup, then fork and exec. A virtual machine
(``labcore.lessons.vm``) runs a kernel of its own on virtual hardware: before its first program can print anything,
firmware or qemu's loader, the kernel's own start and device probing must run.

    container_kernel()     `uname -r` and boot_id inside a labcore container: the host's
                           (``vm.boot_marker()`` shows the guest's own)
    time_process()         fork+exec of busybox echo, timed to its first output byte
    time_container()       a labcore container running echo, from this warm Python process
    time_docker()          `docker run --rm --network none busybox echo`, on a private dockerd
    time_vm()              a real VM booted to its first output (``vm.boot_marker``), KVM or TCG
    measure()              all four in one run: medians, memory and ratios, as a ``Comparison``
    stacks_dot()           the container stack beside the VM stack, annotated with what was measured

Each figure says how it was measured; what cannot be measured here says why instead of showing a number.
``python -m labcore.lessons.vs_vms`` takes the full medians (20 runs, 5 VM boots) and rewrites diagrams/stacks.*.

Next: notebook 08 puts 03-06 together into a `docker run` of your own.
"""
from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from labcore import paths
from labcore.errors import LabError, NeedsPrivilege, NotSupportedHere
from labcore.kernel import journal, procfs
from labcore.lessons import dockerd, hosts, vm
from labcore.lessons.diagrams import Graph
from labcore.lessons.evidence import NOT_RUN, NotRun, Step, current_mode
from labcore.runtime import container

_REFUSED = (NeedsPrivilege, NotSupportedHere)

BUSYBOX = "/bin/busybox"
ECHO = ["echo", "hello from the first output"]
BOOT_ID = "/proc/sys/kernel/random/boot_id"
MiB = 1 << 20
ACCOUNTED = {"memory": "256m"}       # a limit, so that labcore gives the container a cgroup to account it
# What stands between an app and the hardware (the container engine sets things up and steps aside: once
# pid 1 has exec'd, the app's system calls go straight to the host's kernel).
CONTAINER_LAYERS = ("bins/libs", "host OS kernel")
VM_LAYERS = ("bins/libs", "guest OS kernel", "hypervisor (virtual hardware)", "host OS kernel")


@dataclass
class Row:
    """One way to start `echo`: its times to first output, its memory, and how both were measured."""
    key: str                          # process, container, docker, vm
    label: str
    how: str
    seconds: list[float] = field(default_factory=list)
    memory: list[int] = field(default_factory=list)        # bytes, one per run
    memory_how: str = "not measured"
    missing: str = ""                 # why nothing was measured here

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def memory_median(self) -> float | None:
        return statistics.median(self.memory) if self.memory else None


@dataclass
class Comparison:
    rows: dict[str, Row]

    def ratio(self, slower: str, faster: str) -> float | NotRun:
        """How many times longer ``slower`` took to its first output than ``faster`` (medians); ``NOT_RUN``
        where either was not measured here (it prints as such, and compares as such)."""
        a, b = self.rows[slower].median, self.rows[faster].median
        return a / b if a and b else NOT_RUN

    def timed(self) -> list[str]:
        """The rows measured on this host; the others say why not."""
        return [key for key, row in self.rows.items() if row.seconds]

    def ratios(self) -> dict[str, float | NotRun]:
        return {"VM boot ÷ labcore container": self.ratio("vm", "container"),
                "VM boot ÷ docker run": self.ratio("vm", "docker"),
                "docker run ÷ labcore container": self.ratio("docker", "container"),
                "labcore container ÷ plain process": self.ratio("container", "process")}

    def table(self) -> list[tuple[str, ...]]:
        """(what, runs, median to first output, memory, how) per row; a missing row says why."""
        lines = []
        for row in self.rows.values():
            if row.missing:
                lines.append((row.label, "0", "not measured", "–", row.missing))
                continue
            memory = f"{row.memory_median / MiB:.1f} MiB" if row.memory else "–"
            lines.append((row.label, str(len(row.seconds)), seconds_text(row.median), memory,
                          f"time: {row.how}; memory: {row.memory_how}"))
        return lines

    def __str__(self) -> str:
        head = ("what", "runs", "median to first output", "memory (median)", "how")
        lines = [" | ".join(head)] + [" | ".join(line) for line in self.table()]
        lines += [f"{name}: {ratio_text(value)}" for name, value in self.ratios().items()]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html
        cells = lambda line, tag: "".join(f"<{tag} style='text-align:left'>{html.escape(c)}</{tag}>"  # noqa: E731
                                          for c in line)
        head = ("what", "runs", "median to first output", "memory (median)", "how it was measured")
        body = "".join(f"<tr>{cells(line, 'td')}</tr>" for line in self.table())
        ratios = "".join(f"<li>{html.escape(name)}: <b>{ratio_text(value)}</b></li>"
                         for name, value in self.ratios().items())
        return f"<table><tr>{cells(head, 'th')}</tr>{body}</table><ul>{ratios}</ul>"


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def ratio_text(ratio: float | NotRun | None) -> str:
    if ratio is None or isinstance(ratio, NotRun):
        return "not measured"
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


# --- the kernel: shared or not ------------------------------------------------------------------------------

def host_kernel() -> dict[str, str]:
    return {"kernel release": os.uname().release, "boot_id": procfs.sysctl("kernel.random.boot_id")}


def container_kernel(image: str = "busybox") -> Step:
    """`uname -r` and the boot id, read inside a labcore container: the host's own, because no other kernel
    runs. (The UTS namespace gives a container its own hostname, not its own kernel release.)"""
    command = ["sh", "-c", f"uname -r; cat {BOOT_ID}"]
    title = "A container runs on the host's kernel"
    action = f"labcore run --rm --network none {image} sh -c 'uname -r; cat {BOOT_ID}'"
    try:
        result = container.run(container.Spec(image, command, network="none", rm=True), stdio="capture")
    except _REFUSED as err:
        return hosts.refuse(title, action, err)
    if result.exit_code != 0:
        raise LabError(f"the container exited {result.exit_code}: {result}", fix="run `labcore doctor`")
    release, boot_id = result.stdout.decode().split()
    host, inside = host_kernel(), {"kernel release": release, "boot_id": boot_id}
    return Step(title, action, before=host, after=inside, mode=current_mode(), columns=("host", "container"),
                data={"same_kernel": inside == host, "host": host, "inside": inside},
                note="same kernel release and same boot id as the host: the container is the host's processes"
                if inside == host else "the container reported another kernel: read the values above")


# --- timing one start --------------------------------------------------------------------------------------

def first_output(argv: list[str], env: dict | None = None) -> tuple[float, int]:
    """Seconds from fork to the first byte ``argv`` writes to stdout, and its peak RSS in bytes (ru_maxrss
    of its own rusage, which wait4(2) returns for exactly that child)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env)
    first = child.stdout.read(1)
    seconds = time.perf_counter() - started
    child.stdout.read()
    errors = child.stderr.read().decode(errors="replace").strip()
    child.stdout.close(), child.stderr.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)      # reaped here, so Popen must not wait again
    if not first or child.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {child.returncode} after printing {first!r}: {errors}")
    return seconds, usage.ru_maxrss * 1024


def container_once(image: str = "busybox", limits: dict | None = None) -> tuple[float, int | None]:
    """One labcore container running echo: seconds from the first step (``container.create``) to the first
    byte of its output, and, when ``limits`` give it a cgroup, the group's memory peak, read after echo exits
    and before the group goes.

    ``container.run``'s steps, with a sink on the output that notes when the first byte arrives."""
    spec = container.Spec(image, ECHO, network="none", rm=True, limits=limits or {})
    arrived: list[float] = []
    started = time.perf_counter()
    with journal.Scope() as scope, container.Stdio("capture") as stdio:
        box = None
        try:
            box = container.create(spec, scope, stdio)
            container.start(box)
            stdio.pump(sink=lambda stream, data: arrived.append(time.perf_counter()))
            peak = cgroup_peak(box)
            container.wait(box)
        finally:
            if box is not None:
                container.stop_if_running(box)
    if not arrived or box.exit_code != 0:
        raise LabError(f"the container exited {box.exit_code} without output", fix="run `labcore doctor`")
    return arrived[0] - started, peak


def cgroup_peak(box: container.Container) -> int | None:
    """memory.max_usage_in_bytes (v1) or memory.peak (v2) of the container's group: shim, pid 1 and echo."""
    if box.cgroup is None:
        return None
    from labcore.kernel.cgroups import open_manager
    return open_manager().stats(box.cgroup).memory_peak


class PeakRss:
    """``with PeakRss("labcore-vm") as rss:`` polls VmHWM (a process's peak resident set, proc(5)) of this
    process's children whose name (/proc/PID/comm) is ``name``; ``rss.peak`` is the highest, in bytes."""

    def __init__(self, name: str, interval: float = 0.02):
        self.name, self.interval, self.peak = name, interval, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        while not self.done.wait(self.interval):
            for pid in children_named(self.name):
                try:
                    peak = procfs.status_field("VmHWM", pid).split()
                except OSError:
                    continue                          # it has just exited
                self.peak = max([self.peak, *(int(kib) * 1024 for kib in peak[:1])])

    def __enter__(self) -> "PeakRss":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def children_named(name: str) -> list[int]:
    """Pids of this process's children called ``name`` (/proc/self/task/*/children, proc(5))."""
    pids = []
    for children in Path(procfs.path("self", "task")).glob("*/children"):
        for pid in children.read_text().split():
            try:
                if procfs.comm(pid) == name:
                    pids.append(int(pid))
            except OSError:
                pass
    return pids


# --- the four rows -----------------------------------------------------------------------------------------

def time_process(runs: int = 20) -> Row:
    row = Row("process", "(a) plain process: busybox echo",
              "fork+exec of /bin/busybox echo to the first byte on its stdout pipe",
              memory_how="cgroup memory peak of one more run, inside a group of its own (not timed)")
    row.seconds = [first_output([BUSYBOX, *ECHO])[0] for _ in range(runs)]
    row.memory, row.memory_how = memory_or_why(row.memory_how, process_memory, runs)
    return row


def memory_or_why(how: str, peak, runs: int) -> tuple[list[int], str]:
    """The memory peak from ``peak()``, which needs a cgroup of the lab's: or, where this user may make no
    cgroup (nothing delegated), no figure and why."""
    from labcore.kernel.cgroups import detect, find_delegation
    delegation = find_delegation(detect())
    if not delegation.allowed:
        return [], f"not measured: it needs a cgroup, and {delegation.why_not}"
    found = peak() if runs else None
    return ([found] if found else []), how


def process_memory() -> int:
    """The memory peak of a cgroup holding one busybox echo: the container's yardstick. (Its ru_maxrss would
    not do: a child started with vfork+exec, as subprocess does, reports the peak of its parent's memory.)

    The child waits for "go" on stdin, so that it is in the group before it execs echo."""
    from labcore.kernel.cgroups import open_manager
    manager = open_manager()
    with journal.Scope() as scope:
        group = manager.create(f"{paths.PREFIX}-compare-{secrets.token_hex(3)}", scope)
        child = subprocess.Popen([BUSYBOX, "sh", "-c", 'read go && exec "$0" "$@"', BUSYBOX, *ECHO],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        scope.record("process", str(child.pid), "kill", pid=child.pid,
                     start=journal.process_start_time(child.pid))
        manager.add(group, child.pid)
        child.communicate(b"go\n", timeout=30)
        return manager.stats(group).memory_peak


def time_container(runs: int = 20, image: str = "busybox") -> Row:
    row = Row("container", "(b) labcore container: busybox echo",
              "container.create → start, from this warm Python process (namespaces, root filesystem, "
              "--network none; no cgroup, since nothing is limited), to the first byte of echo's output",
              memory_how=f"cgroup memory peak of one more run with --memory {ACCOUNTED['memory']}, which gives "
                         "it a cgroup (not timed): shim, pid 1 and echo")
    try:
        container_once(image)                     # warm-up, not counted: the first run may build the image
    except _REFUSED as err:                        # no namespaces here: the other rows still stand
        row.missing = f"refused here: {err.message}"
        return row
    row.seconds = [container_once(image)[0] for _ in range(runs)]
    row.memory, row.memory_how = memory_or_why(row.memory_how, lambda: container_once(image, ACCOUNTED)[1],
                                               runs)
    return row


def time_docker(runs: int = 20) -> Row:
    row = Row("docker", "(c) Docker: docker run --rm --network none busybox echo",
              "the docker CLI started → dockerd → containerd → runc → the first byte on the CLI's stdout",
              memory_how="not measured: the container's cgroup is gone with --rm")
    row.missing = dockerd.dockerd_unavailable_reason() or ("" if runs else "not asked for (0 runs)")
    if row.missing:
        return row
    argv = ["docker", "run", "--rm", "--network", "none", "busybox", *ECHO]
    try:
        with dockerd.Dockerd() as docker:
            dockerd.import_busybox(docker)
            first_output(argv, docker.environment())              # warm-up, not counted
            row.seconds = [first_output(argv, docker.environment())[0] for _ in range(runs)]
    except LabError as err:            # Docker's own failure: the other rows still stand, and say so
        row.missing = f"Docker failed: {err}"
    return row


def time_vm(runs: int = 5, boots: list[Step] = ()) -> Row:
    """``runs`` boots in all, counting ``boots``: ``vm.boot_marker()`` steps already taken (a notebook's
    kernel evidence), whose times count but whose memory was not sampled."""
    accel, why = vm.accelerator()
    row = Row("vm", f"(d) virtual machine: qemu -accel {accel}, Debian's kernel, /init prints",
              f"qemu started → /init's marker line on the serial console (vm.boot_marker); {accel}: {why}",
              memory_how="qemu's peak RSS (VmHWM, sampled every 20 ms): the guest RAM it touched plus qemu")
    row.seconds = [step.data["seconds"] for step in boots if step.permitted]
    try:
        for _ in range(runs - len(boots)):
            with PeakRss("labcore-vm") as rss:
                step = vm.boot_marker()
            row.seconds.append(step.data["seconds"])
            row.memory += [rss.peak] if rss.peak else []
    except NotSupportedHere as err:             # no qemu, or no kernel to boot: say so, show the rest
        row.missing = str(err)
    return row


def measure(runs: int = 20, vm_runs: int = 5, docker_runs: int | None = None,
            boots: list[Step] = ()) -> Comparison:
    """All four, one after the other, in this process; ``boots`` are VM boots already taken. The cheap rows
    first: under TCG a VM boot keeps a CPU busy, and what it leaves behind would slow the rows after it."""
    docker_runs = runs if docker_runs is None else docker_runs
    rows = [time_process(runs), time_container(runs), time_docker(docker_runs), time_vm(vm_runs, boots)]
    return Comparison({row.key: row for row in rows})


# --- the picture ----------------------------------------------------------------------------------------------

def stacks_dot(comparison: Comparison | None = None, apps: int = 3) -> str:
    """The container stack beside the VM stack, bottom up, each with its layers counted and, when given,
    the figures measured on this host."""
    graph = Graph("containers vs virtual machines", rankdir="BT", fontname="Helvetica", newrank="true",
                  nodesep="0.15", ranksep="0.12")
    graph.defaults("node", shape="box", style="filled", fontname="Helvetica", fontsize="11", fillcolor="white")
    graph.defaults("edge", style="invis")            # the edges only stack the boxes, bottom up
    # No kernel release in the drawing: the stored one (diagrams/) must name no host; 07's steps show uname -r.
    hardware = "Infrastructure: this host's CPUs, memory, disks"
    engine = ("Container engine (labcore, Docker): sets up namespaces, cgroups and a root\n"
              "filesystem, then steps aside (system calls go straight to the host kernel)")
    base(graph, "c", apps, [(hardware, "gray85"), ("Host OS kernel (Linux): the only kernel",
                                                   "lightblue"), (engine, "lightyellow")])
    base(graph, "v", apps, [(hardware, "gray85"), ("Host OS (Linux)", "lightblue"),
                            ("Hypervisor: qemu + KVM, or qemu's TCG emulator", "lightpink")])
    for i in range(1, apps + 1):
        box(graph, f"c{i}", f"container {i}", "c:2", ["Bins/Libs", f"App {i}"], "lightyellow")
        box(graph, f"v{i}", f"VM {i}", "v:2", ["Guest OS kernel", "Bins/Libs", f"App {i}"], "lightpink")
    for side, title, layers, key in (("c", "Containers", CONTAINER_LAYERS, "container"),
                                     ("v", "Virtual machines", VM_LAYERS, "vm")):
        graph.node(f"{side}:title", stack_label(title, layers, comparison, key), shape="plaintext", style="")
        for i in range(1, apps + 1):
            graph.edge(f"{side}{i}:App {i}", f"{side}:title")     # the title goes above the apps
    return graph.source()


def base(graph: Graph, side: str, apps: int, layers: list[tuple[str, str]]) -> None:
    """The shared layers of one stack, named side:0 (the bottom) up, as wide as the boxes on them."""
    for level, (label, color) in enumerate(layers):
        dashed = "Container engine" in label          # beside the app's path, not under it
        graph.node(f"{side}:{level}", label, fillcolor=color, width=str(1.55 * apps),
                   style="filled,dashed" if dashed else "filled")
        if level:
            graph.edge(f"{side}:{level - 1}", f"{side}:{level}")


def box(graph: Graph, name: str, label: str, on: str, layers: list[str], color: str) -> None:
    """One container or VM: its layers bottom up, standing on ``on``, in a box of its own."""
    names = [f"{name}:{layer}" for layer in layers]
    for node, layer in zip(names, layers):
        graph.node(node, layer, fillcolor="lightblue" if "kernel" in layer else color, width="1.2")
    for lower, upper in zip([on, *names], names):
        graph.edge(lower, upper)
    # rankdir=BT turns the drawing upside down, labelloc included: "b" puts the box's name on top.
    graph.cluster(name, label, names, style="rounded", color="gray60", labelloc="b", fontsize="11")


def stack_label(title: str, layers: tuple[str, ...], comparison: Comparison | None, key: str) -> str:
    lines = [f"{title}: {len(layers)} layers between an app and the hardware", "(" + ", ".join(layers) + ")"]
    row = comparison.rows.get(key) if comparison else None
    if row is None or row.missing or not row.seconds:
        lines.append("not measured on this host" + (f": {row.missing}" if row and row.missing else ""))
    else:
        memory = f", {row.memory_median / MiB:.0f} MiB" if row.memory else ""
        lines.append(f"measured here: first output after {seconds_text(row.median)} (median of "
                     f"{len(row.seconds)}){memory}")
    return "\n".join(lines)


def write_stacks(directory: Path, comparison: Comparison | None = None) -> list[Path]:
    """diagrams/stacks.gv and, where dot is installed, stacks.svg, annotated with ``comparison``."""
    from labcore.lessons.diagrams import render_svg
    source = stacks_dot(comparison)
    (directory / "stacks.gv").write_text(source)
    svg = render_svg(source)
    if svg is not None:
        (directory / "stacks.svg").write_text(svg)
    return [directory / "stacks.gv"] + ([directory / "stacks.svg"] if svg is not None else [])


def main(argv: list[str] | None = None) -> int:
    """`python -m labcore.lessons.vs_vms`: the full medians, the ratios, and diagrams/stacks.* annotated with them."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m labcore.lessons.vs_vms", description=main.__doc__)
    parser.add_argument("--runs", type=int, default=20, help="runs of (a), (b) and (c) (default 20)")
    parser.add_argument("--vm-runs", type=int, default=5, help="VM boots (default 5; about 5 s each on TCG)")
    parser.add_argument("--diagrams", type=Path, default=Path(__file__).resolve().parents[2] / "diagrams",
                        help="where stacks.gv and stacks.svg go (default: the checkout's diagrams/)")
    args = parser.parse_args(argv)
    comparison = measure(args.runs, args.vm_runs)
    print(comparison)
    for path in write_stacks(args.diagrams, comparison):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
