"""`python -m bench scale`: N containers started at once from one image, measured while they all run.

labcore's runtime has no detached containers yet, so N threads each call ``container.run`` with
``sleep 3600``; once every container's state.json says "running" the clock stops, and the bench measures

* disk: ``du -x`` of each container's overlay upperdir (its unpacked rootfs on a runtime without overlay),
  and of Docker's upperdirs (``GraphDriver.Data.UpperDir``);
* memory the runtime keeps per running container: the lab's shim (pid 1's parent, a forked Python
  process), against Docker's containerd-shim-runc-v2. RSS counts pages shared with the parent;
  USS (psutil's unique set size) only those the process alone holds.

Then SIGKILL to each pid 1 from the host (as `docker kill`), and a check that nothing was left behind.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from bench import peers, report
from labcore import paths
from labcore.kernel import journal


def main(args) -> int:
    import psutil        # imported here: the run path stays light, as CONTRIBUTING asks
    results = {"count": args.count, "lab": lab_containers(args.count, psutil)}
    try:
        with ExitStack() as stack:
            dockerd = peers.start_dockerd(stack)
            results["docker"] = docker_containers(dockerd, args.count, psutil)
    except peers.Missing as err:
        results["docker"] = {"missing": str(err)}
    markdown = table(results)
    print(markdown)
    report.save("scale", results, markdown)
    return 1 if any(results[side].get("leftovers") for side in ("lab", "docker")) else 0


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
    start = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        running = wait_running(ids, threads)
        wall = time.perf_counter() - start
        shims = [psutil.Process(pid).parent() for pid, _ in running.values()]
        measured = {"wall_s": wall, "running": len(running), "errors": errors[:3],
                    "disk_bytes": du([writable_dir(paths.containers_dir() / id_) for id_ in running]),
                    **memory(shims, "shim (pid 1's parent)")}
    finally:
        stop(ids, threads)
    measured["leftovers"] = [str(paths.containers_dir() / i) for i in ids if (paths.containers_dir() / i).exists()]
    measured["leftovers"] += [e.describe() for e in journal.Journal().entries() if any(i in e.name for i in ids)]
    measured["leftovers"] += [f"process {p.pid}" for p in psutil.Process().children(recursive=True)]
    measured["leftovers"] += [f"cgroup {c}" for c in Path("/sys/fs/cgroup").glob(f"*/**/{paths.PREFIX}-*")
                              if c.name.split("-", 1)[1] in ids]
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


def docker_containers(dockerd, count: int, psutil) -> dict:
    client = dockerd.client()
    started: list = []
    errors: list[str] = []

    def one() -> None:
        try:
            started.append(client.containers.run("busybox", ["sleep", "3600"], detach=True, network_mode="none"))
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=one) for _ in range(count)]
    start = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        # This daemon's shims only (another Docker may run beside it): their -address is under its exec-root.
        shims = [p for p in psutil.process_iter(["name", "cmdline"])
                 if (p.info["name"] or "").startswith("containerd-shim")
                 and any(dockerd.runtime in arg for arg in p.info["cmdline"] or [])]
        uppers = [client.api.inspect_container(c.id)["GraphDriver"]["Data"]["UpperDir"] for c in started]
        measured = {"wall_s": wall, "running": len(started), "errors": errors[:3], "disk_bytes": du(uppers),
                    **memory(shims, "containerd-shim-runc-v2")}
    finally:       # everything in this private daemon is the bench's, including a half-started container
        removers = [threading.Thread(target=c.remove, kwargs={"force": True})
                    for c in client.containers.list(all=True)]
        for thread in removers:
            thread.start()
        for thread in removers:
            thread.join()
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


def table(results: dict) -> str:
    count = results["count"]
    lines = [f"{count} containers started at once from busybox, `sleep 3600`, measured while all run.", "",
             "| | labcore (threads × container.run) | Docker (dockerd, SDK, detached) |", "|---|---|---|"]
    lab, docker = results["lab"], results["docker"]

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
            ("RSS per container", lambda s: f"{each(s, 'rss_bytes') / mib:.1f} MiB"),
            ("USS per container", lambda s: f"{each(s, 'uss_bytes') / mib:.1f} MiB"),
            ("left behind", lambda s: "; ".join(s["leftovers"]) or "nothing")]
    lines += [f"| {name} | {cell(lab, render)} | {cell(docker, render)} |" for name, render in rows]
    return "\n".join(lines)
