"""`python -m bench scale`: N containers started at once from one image, measured while they all run.

N threads each call ``container.run`` with ``sleep 3600``; once every pid 1 runs `sleep` the clock stops, and
the bench measures

* disk: ``du -x`` of each container's overlay upperdir (its unpacked rootfs on a runtime without overlay),
  and of Docker's upperdirs (``GraphDriver.Data.UpperDir``);
* memory the runtime keeps per running container: the processes it keeps for each one (Docker's
  containerd-shim-runc-v2; the lab keeps none: its shim leaves once pid 1 is forked, and the caller, a child
  subreaper, adopts pid 1), plus what the shared processes grew by while the N ran, divided by N (the lab's
  caller, this process, with its N threads; dockerd and containerd). RSS counts pages shared with other
  processes; USS (psutil's unique set size) only those the process alone holds.

Three sides: the lab's ``container.run`` in N threads of this process; the lab's detached containers, N
``containers.run(..., detach=True)`` of the docker SDK against a labd of the bench's own, in a state directory
of its own (its one monitor, ``labcore.runtime.monitord``, pid 1's parent, counted whole as the kept process,
and labd's growth over N as shared); Docker's, the same SDK calls against a dockerd of its own.

``--counts 10,50,100,200`` repeats it for each count and draws the cost per container against N, side by side
with Docker (bench/results/*-scale.png).

Then SIGKILL to each pid 1 from the host (as `docker kill`), and a check that nothing was left behind.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from bench import peers, report
from labcore import paths
from labcore.kernel import journal


def main(args) -> int:
    import psutil        # imported here: the run path stays light, as CONTRIBUTING asks
    counts = [int(n) for n in args.counts.split(",")] if args.counts else [args.count]
    series = [{"count": n} for n in counts]
    with ExitStack() as stack:
        try:
            dockerd = peers.start_dockerd(stack)
        except peers.Missing as err:
            dockerd, missing = None, {"missing": str(err)}
        for results in series:          # interleaved: the lab, then Docker, at each count
            results["load"] = os.getloadavg()[0]        # as each count begins: the one before raised it
            print(f"{results['count']} containers...", file=sys.stderr, flush=True)
            results["lab"] = lab_containers(results["count"], psutil)
            results["labd"] = labd_containers(results["count"], psutil)
            results["docker"] = docker_containers(dockerd, results["count"], psutil) if dockerd else missing
    markdown = "\n\n".join(table(results) for results in series) + "\n\n" + growth(series)
    print(markdown)
    report.save("scale", {"series": series}, markdown, (lambda png: plot(series, png)) if len(series) > 1 else None)
    return 1 if any(r[side].get("leftovers") for r in series for side in SIDES) else 0


def lab_containers(count: int, psutil) -> dict:
    from labcore.runtime import container
    ids = [secrets.token_hex(32) for _ in range(count)]
    errors: list[str] = []

    def one(id_: str) -> None:
        try:
            container.run(container.Spec("busybox", ["sleep", "3600"], rm=True, network="none", id=id_),
                          stdio="capture")
        except Exception as err:             # reported below: a refusal is a finding
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=one, args=(id_,)) for id_ in ids]
    me = psutil.Process()
    before, daemons = memory([me], ""), {p.pid for p in me.children(recursive=True)}   # Docker's, started first
    start = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        running = wait_running(ids, threads)
        wall = time.perf_counter() - start
        parents = {psutil.Process(pid).ppid() for pid, _ in running.values()}
        kept = [psutil.Process(pid) for pid in parents - {me.pid}]      # a process of its own per container
        measured = {"wall_s": wall, "running": len(running), "errors": errors[:3],
                    "disk_bytes": du([writable_dir(paths.containers_dir() / id_) for id_ in running]),
                    "parents": sorted(parents), **memory(kept, "none: pid 1's parent is the caller" if not kept
                                                          else "a shim (pid 1's parent)"),
                    "shared": grown(before, memory([me], "this process (the caller, N threads)"))}
    finally:
        stop(ids, threads)
    measured["leftovers"] = [str(paths.containers_dir() / i) for i in ids if (paths.containers_dir() / i).exists()]
    measured["leftovers"] += [e.describe() for e in journal.Journal().entries() if any(i in e.name for i in ids)]
    measured["leftovers"] += [f"process {p.pid}" for p in me.children(recursive=True) if p.pid not in daemons]
    measured["leftovers"] += [f"cgroup {c}" for c in Path("/sys/fs/cgroup").glob(f"*/**/{paths.PREFIX}-*")
                              if c.name.split("-", 1)[1] in ids]
    return measured


def labd_containers(count: int, psutil) -> dict:
    """N detached containers through labd (docker SDK), in a state directory of the bench's own, so that its
    monitor watches these N and no others; labd holds the monitor from its start, as it does in use."""
    import docker
    with journal.Scope() as scope, ExitStack() as stack:
        home = paths.scratch_dir() / f"{paths.PREFIX}-bench-labd-{secrets.token_hex(4)}"
        paths.scratch_dir().mkdir(parents=True, exist_ok=True)
        scope.record("directory", str(home), "rmtree", path=str(home))
        home.mkdir()
        (home / "images").symlink_to(paths.images_dir())           # the same image store, not a copy
        sock = home / f"{paths.PREFIX}-labd.sock"
        log = stack.enter_context(open(home / "labd.log", "wb"))
        labd = subprocess.Popen([str(peers.VENV_BIN / "labcore"), "daemon", "--socket", str(sock)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=peers.labcore_environment(LABCORE_HOME=str(home)))
        scope.record("process", str(labd.pid), "kill", pid=labd.pid, start=journal.process_start_time(labd.pid))
        stack.callback(peers.stop_process, labd, log)
        peers.wait_for_socket(sock, labd, home / "labd.log", "labd (`labcore daemon`)")
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=120)
        stack.callback(client.close)
        process = psutil.Process(labd.pid)
        before = memory([process], "")
        try:
            started, errors, wall = start_detached(client, count)
            pids = [json.loads((home / "containers" / c.id / "state.json").read_text())["pid"] for c in started]
            parents = {psutil.Process(pid).ppid() for pid in pids}
            kept = [psutil.Process(pid) for pid in parents]
            measured = {"wall_s": wall, "running": len(started), "errors": errors[:3],
                        "disk_bytes": du([writable_dir(home / "containers" / c.id) for c in started]),
                        "parents": sorted(parents), "labd_is_parent": labd.pid in parents,
                        **memory(kept, "the monitor (pid 1's parent)"),
                        "shared": grown(before, memory([process], "labd"))}
        finally:
            remove_all(client)
        stack.close()                             # labd stops: nothing holds the monitor now
        monitors = [entry for entry in journal.Journal(home / "journal").entries() if entry.name == "labcore-monitor"]
        deadline = time.monotonic() + 10
        while any(journal.owner_alive(e.owner) for e in monitors) and time.monotonic() < deadline:
            time.sleep(0.05)
        measured["leftovers"] = [f"monitor {e.owner['pid']}" for e in monitors if journal.owner_alive(e.owner)]
        measured["leftovers"] += [str(d) for d in (home / "containers").glob("*") if d.is_dir()]
        measured["leftovers"] += [e.describe() for e in journal.Journal(home / "journal").entries()]
        if measured["leftovers"]:           # reported; then undone, before the scope removes their state dir
            subprocess.run([str(peers.VENV_BIN / "labcore"), "cleanup", "--all"], capture_output=True,
                           env=peers.labcore_environment(LABCORE_HOME=str(home)))
    return measured


def our_pid1(id_: str, command_started: bool = False) -> tuple[int, int | None] | None:
    """pid 1 of one of our containers and its start time, from state.json; with ``command_started``, only
    once pid 1 has become the command (its cmdline is `sleep 3600`)."""
    try:
        pid = json.loads((paths.containers_dir() / id_ / "state.json").read_text()).get("pid")
        if pid and command_started and Path(f"/proc/{pid}/cmdline").read_bytes() != b"sleep\x003600\x00":
            return None
    except (OSError, ValueError):
        return None
    return (pid, journal.process_start_time(pid)) if pid else None


def wait_running(ids: list[str], threads: list[threading.Thread], timeout: float = 300) -> dict:
    """Until every pid 1 runs `sleep` (or its thread has ended). Not state.json's "running": with several
    containers starting at once, `start` can wait on a channel that a concurrently forked shim holds open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = {i: p for i in ids if (p := our_pid1(i, command_started=True))}
        if len(running) + sum(not t.is_alive() for t in threads) >= len(ids):
            return running
        time.sleep(0.05)
    raise TimeoutError(f"not all {len(ids)} containers were running after {timeout:.0f} s")


def stop(ids: list[str], threads: list[threading.Thread]) -> None:
    """SIGKILL every pid 1 until each thread's container.run has returned (and removed its container)."""
    while any(t.is_alive() for t in threads):
        for id_ in ids:
            if (found := our_pid1(id_)):
                journal.undo_kill(*found)         # only while that pid still names the process we started
        for thread in threads:
            thread.join(timeout=0.05)


def docker_processes(dockerd, psutil) -> list:
    """This daemon's dockerd and containerd (another Docker may run beside it): named by its directories."""
    return [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] in ("dockerd", "containerd")
            and any(dockerd.runtime in arg or dockerd.directory in arg for arg in p.info["cmdline"] or [])]


def start_detached(client, count: int) -> tuple[list, list[str], float]:
    """``count`` `docker run -d busybox sleep 3600` at once, one SDK call a thread, against labd or dockerd:
    the containers that started, the first errors (a refusal is a finding), and the wall time for all."""
    started: list = []
    errors: list[str] = []

    def one() -> None:
        try:
            started.append(client.containers.run("busybox", ["sleep", "3600"], detach=True, network_mode="none"))
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=one) for _ in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started, errors, time.perf_counter() - start


def remove_all(client) -> None:
    """`docker rm -f` of every container the daemon lists, at once."""
    removers = [threading.Thread(target=c.remove, kwargs={"force": True}) for c in client.containers.list(all=True)]
    for thread in removers:
        thread.start()
    for thread in removers:
        thread.join()


def docker_containers(dockerd, count: int, psutil) -> dict:
    client = dockerd.client()
    before = memory(docker_processes(dockerd, psutil), "")
    try:
        started, errors, wall = start_detached(client, count)
        # This daemon's shims only (another Docker may run beside it): their -address is under its exec-root.
        shims = [p for p in psutil.process_iter(["name", "cmdline"])
                 if (p.info["name"] or "").startswith("containerd-shim")
                 and any(dockerd.runtime in arg for arg in p.info["cmdline"] or [])]
        uppers = [client.api.inspect_container(c.id)["GraphDriver"]["Data"]["UpperDir"] for c in started]
        measured = {"wall_s": wall, "running": len(started), "errors": errors[:3], "disk_bytes": du(uppers),
                    **memory(shims, "containerd-shim-runc-v2"),
                    "shared": grown(before, memory(docker_processes(dockerd, psutil), "dockerd and containerd"))}
    finally:       # everything in this private daemon is the bench's, including a half-started container
        remove_all(client)
    measured["leftovers"] = [c.name for c in client.containers.list(all=True)]
    return measured


def writable_dir(directory: Path) -> Path:
    """The container's own files: its overlay upperdir, or the unpacked rootfs of a runtime without overlay."""
    return directory / "upper" if (directory / "upper").is_dir() else directory / "rootfs"


def du(directories: list) -> int:
    """Bytes used, counting each inode once and staying on one filesystem (not into a mounted rootfs)."""
    existing = [str(d) for d in directories if os.path.isdir(d)]
    if not existing:
        return 0
    done = subprocess.run(["du", "-sxc", "-B1", *existing], capture_output=True, text=True, check=True)
    return int(done.stdout.splitlines()[-1].split()[0])


def memory(processes: list, what: str) -> dict:
    rss = uss = 0
    for process in processes:
        info = process.memory_full_info()
        rss, uss = rss + info.rss, uss + info.uss
    return {"process": what, "processes": len(processes), "rss_bytes": rss, "uss_bytes": uss}


def grown(before: dict, after: dict) -> dict:
    """What shared processes grew by (never below zero: a garbage collection may shrink them meanwhile)."""
    return {**after, "rss_bytes": max(after["rss_bytes"] - before["rss_bytes"], 0),
            "uss_bytes": max(after["uss_bytes"] - before["uss_bytes"], 0)}


SIDES = ("lab", "labd", "docker")
NAMES = {"lab": "labcore (threads × container.run)", "labd": "labcore detached (labd, SDK, one monitor)",
         "docker": "Docker (dockerd, SDK, detached)"}


def per_container(side: dict, key: str) -> float:
    """Bytes per running container: the kept processes' own, plus the shared processes' growth, over N."""
    return (side[key] + side.get("shared", {}).get(key, 0)) / max(side["running"], 1)


def growth(series: list[dict]) -> str:
    mib = 1024 * 1024
    lines = ["Per container, against N (kept processes + shared growth ÷ N; load average at the start of each):", "",
             "| N | load | labcore s to start each | labcore RSS / USS MiB | labd s to start each | "
             "labd RSS / USS MiB | Docker s to start each | Docker RSS / USS MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in series:
        cells = []
        for side in (r["lab"], r.get("labd", {"missing": "not measured"}), r["docker"]):
            if "missing" in side or not side.get("running"):
                cells += ["—", "—"]
                continue
            cells += [f"{side['wall_s'] / side['running']:.3f}",
                      f"{per_container(side, 'rss_bytes') / mib:.2f} / {per_container(side, 'uss_bytes') / mib:.2f}"]
        lines.append(f"| {r['count']} | {r['load']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(series: list[dict], path: Path) -> None:
    """Seconds to start, RSS and USS, each per container, against N: the lab's and Docker's side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for name, colour in (("lab", "#08519c"), ("labd", "#6baed6"), ("docker", "#e6550d")):
        points = [(r["count"], r[name]) for r in series if name in r and "missing" not in r[name]
                  and r[name].get("running")]
        counts = [n for n, _ in points]
        values = [[s["wall_s"] / s["running"] for _, s in points],
                  [per_container(s, "rss_bytes") / 2 ** 20 for _, s in points],
                  [per_container(s, "uss_bytes") / 2 ** 20 for _, s in points]]
        for ax, ys in zip(axes, values):
            ax.plot(counts, ys, "o-", color=colour, label={"lab": "labcore", "labd": "labcore -d (labd)",
                                                           "docker": "Docker"}[name])
    for ax, title in zip(axes, ("wall time to start, per container (s)", "RSS per container (MiB)",
                                "USS per container (MiB)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("containers running at once (N)")
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results: dict) -> str:
    count = results["count"]
    lines = [f"{count} containers started at once from busybox, `sleep 3600`, measured while all run.", "",
             "| | " + " | ".join(NAMES[side] for side in SIDES) + " |", "|---|---|---|---|"]
    sides = [results.get(side, {"missing": "not measured"}) for side in SIDES]

    def cell(side: dict, render) -> str:
        return f"missing: {' '.join(side['missing'].split())}" if "missing" in side else render(side)

    mib = 1024 * 1024

    def each(side: dict, key: str, count_key: str = "processes") -> float:
        return side[key] / max(side[count_key], 1)

    rows = [("running", lambda s: f"{s['running']} of {count}" + (f" ({s['errors'][0]})" if s["errors"] else "")),
            ("wall time until all run", lambda s: f"{s['wall_s']:.1f} s"),
            ("disk: upperdirs (or rootfs dirs)",
             lambda s: f"{s['disk_bytes'] / mib:.2f} MiB in all, "
                       f"{each(s, 'disk_bytes', 'running') / 1024:.0f} KiB each"),
            ("per-container process", lambda s: f"{s['process']} × {s['processes']}"),
            ("shared processes grew", lambda s: f"{s['shared']['process']}: RSS +{s['shared']['rss_bytes'] / mib:.1f}"
                                                f" MiB, USS +{s['shared']['uss_bytes'] / mib:.1f} MiB"),
            ("RSS per container (kept + grown ÷ N)", lambda s: f"{per_container(s, 'rss_bytes') / mib:.2f} MiB"),
            ("USS per container (kept + grown ÷ N)", lambda s: f"{per_container(s, 'uss_bytes') / mib:.2f} MiB"),
            ("left behind", lambda s: "; ".join(s["leftovers"]) or "nothing")]
    lines += [f"| {name} | " + " | ".join(cell(side, render) for side in sides) + " |" for name, render in rows]
    return "\n".join(lines)
