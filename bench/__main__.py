"""`python -m bench` (`./lab bench`): starting /bin/true side by side with unshare, bubblewrap, crun, runc,
Docker and labcore, on the same busybox root filesystem, in one run, interleaved (A B C ... C A B) so that
drift on the machine hits every row alike, each round in an order of its own (``measure`` says why).

    python -m bench [--runs 20] [--warmup 3]    the side-by-side table, JSON, latest.md and a plot
    python -m bench breakdown [--runs 20]      where the milliseconds of one warm start (row h) go, step by step
    python -m bench scale [--count 50]          50 containers at once: wall time, disk, memory per container
    python -m bench scale --counts 10,50,200    the same at each count; per-container cost against N, plotted
    python -m bench notebooks                   the nbval run of each notebook, against the 2-minute target
    python -m bench cgroups [--runs 5]          what cpu quota, cpu shares and io throttling hold, measured
    python -m bench netlink [--runs 20]         a veth pair over rtnetlink (pyroute2) against ip(8) processes

Run as root on the lab's VM. Results go to bench/results/ (gitignored).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from contextlib import ExitStack

from bench import peers, report

# key, label, how it runs. The order is the order of each round; "crun" and "docker" are the ratios' bases.
ROWS = [
    ("true", "(a) /bin/true: fork+exec on the host", peers.plain_true),
    ("python", "python3 -c pass (the .venv's; reference for g)", peers.python_pass),
    ("unshare", "(b) unshare --fork --pid --mount --uts --ipc --net chroot", peers.unshare_chroot),
    ("bwrap", "(c) bwrap --unshare-all --bind ROOTFS / --proc --dev", peers.bubblewrap),
    ("wrapper", "crun's wrapper alone: unshare -m sh -c 'umount cgroup2; exec true'", peers.crun_wrapper),
    ("crun", "(d) crun run, inside that wrapper on a hybrid host", peers.crun),
    ("runc", "(e) runc run", peers.runc),
    ("docker", "(f) docker run --rm --network none busybox", peers.docker_run),
    ("cli", "(g) labcore run --rm --network none busybox (whole process)", peers.labcore_cli),
    ("cli_labd", "(g2) the same, this user's labd running: a thin client to it", peers.labcore_cli_labd),
    ("api", "(h) labcore.runtime.container.run(Spec(..., network=\"none\")), warm process", peers.labcore_api),
    ("sdk", "(i) docker SDK containers.run(network_mode=\"none\") → labd", peers.labd_sdk),
]


def side_by_side(args: argparse.Namespace) -> int:
    from labcore import paths
    from labcore.kernel import journal
    before = {p.name for p in paths.containers_dir().iterdir()} if paths.containers_dir().is_dir() else set()
    rows = [{"key": key, "label": label, "times": []} for key, label, _ in ROWS]
    load = os.getloadavg()[0]       # other work on the machine adds noise; interleaving spreads it evenly
    with journal.Scope() as scope, ExitStack() as stack:      # the stack (daemons) closes before the scope
        ws = peers.Workspace(scope, stack)
        runners = prepare(rows, ws)
        measure(rows, runners, args.warmup, args.runs, args.seed)
    stats, leaks, facts = report.summarize(rows), peers.leftovers(ws.made, before), peers.versions()
    found = report.targets(stats)
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {facts['cpus']} CPUs, kernel {facts['kernel']}; "
              f"{args.runs} runs per row after {args.warmup} warm-up runs, interleaved, each round shuffled "
              f"(seed {args.seed}); load average "
              f"{load:.1f} before, {os.getloadavg()[0]:.1f} after.")
    markdown = report.markdown(header, stats, found, leaks)
    print(markdown)
    document = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": args.runs, "warmup": args.warmup,
                "machine": facts, "load_before": load, "rows": stats, "targets": found, "leftovers": leaks,
                "times_ms": {r["key"]: [t * 1000 for t in r["times"]] for r in rows}}
    path = report.save("", document, markdown, lambda png: report.plot(stats, rows, png))
    print(f"\nwritten: {path}, {path.with_suffix('.png')}, {report.RESULTS / 'latest.md'}")
    return 1 if leaks else 0


def prepare(rows: list[dict], ws: peers.Workspace) -> dict:
    """Each peer's one-run function; a peer that cannot start here is kept, as missing, with the reason."""
    runners = {}
    for row, (key, _, start) in zip(rows, ROWS):
        print(f"preparing {key}...", file=sys.stderr, flush=True)
        try:
            runners[key] = start(ws)
        except peers.Missing as err:
            row["missing"] = str(err)
        except Exception as err:       # a peer's own failure is a finding, not a reason to stop the others
            row["missing"] = f"{type(err).__name__}: {err}"
    return runners


def measure(rows: list[dict], runners: dict, warmup: int, runs: int, seed: int = 0) -> None:
    """Round after round, every row once per round; a row that fails stops and keeps the error.

    Each round takes the rows in an order of its own (shuffled, from ``seed``): a row's time depends on the row
    before it. Moving a process into a cgroup first waits for an RCU grace period (``labcore.kernel.cgroups.Move``),
    and how long depends on what the kernel was just doing: crun after a 100 ms pause 25.9 ms, after bwrap
    (whose namespaces the kernel is still tearing down) 22.0 ms, on this machine. In a fixed order each row
    would always get the same neighbour, and its bias with it."""
    order = random.Random(seed)
    for round_ in range(warmup + runs):
        print(f"round {round_ + 1}/{warmup + runs}", file=sys.stderr, end="\r", flush=True)
        for row in order.sample(rows, len(rows)):
            if row["key"] not in runners or row.get("missing"):
                continue
            start = time.perf_counter()
            try:
                runners[row["key"]]()
            except Exception as err:
                row["missing"] = f"failed on run {round_ + 1}: {type(err).__name__}: {err}"
                continue
            if round_ >= warmup:
                row["times"].append(time.perf_counter() - start)
    print(file=sys.stderr)


def notebooks(args: argparse.Namespace) -> int:
    """Each notebook's nbval run, as `./lab test` runs them, timed as a whole process."""
    import subprocess
    from pathlib import Path
    results, total = [], 0.0
    for notebook in sorted(Path("notebooks").glob("*.ipynb")):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", str(notebook), "--nbval-lax", "--nbval-current-env",
                               "--nbval-sanitize-with", "tests/notebooks/sanitize.cfg", "-p", "no:cacheprovider",
                               "-q"], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        total += seconds
        outcome = (done.stdout.strip().splitlines() or ["?"])[-1]
        results.append({"notebook": notebook.name, "seconds": seconds, "exit": done.returncode, "pytest": outcome})
    lines = ["| notebook | seconds | pytest |", "|---|---:|---|"]
    lines += [f"| {r['notebook']} | {r['seconds']:.1f} | {r['pytest']} |" for r in results]
    verdict = "met" if total <= 120 else f"NOT MET, {total - 120:.1f} s over"
    lines.append(f"\nTotal {total:.1f} s against the 2-minute target: {verdict}.")
    print("\n".join(lines))
    report.save("notebooks", {"notebooks": results, "total_seconds": total, "target_seconds": 120},
                "\n".join(lines))
    return 0 if all(r["exit"] == 0 for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=["side-by-side", "breakdown", "scale", "notebooks", "cgroups",
                                                   "netlink"], default="side-by-side")
    parser.add_argument("--runs", type=int, default=20, help="measured runs per row (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured runs per row first (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="the rows' order in each round (default 0)")
    parser.add_argument("--count", type=int, default=50, help="containers at once, for scale (default 50)")
    parser.add_argument("--counts", help="scale at each of these counts, e.g. 10,50,100,200, and plot against N")
    args = parser.parse_args(argv)
    if args.part == "scale":
        from bench import scale
        return scale.main(args)
    if args.part == "breakdown":
        from bench import breakdown
        return breakdown.main(args)
    if args.part == "cgroups":
        from bench import cgroups
        return cgroups.main(args)
    if args.part == "netlink":
        from bench import netlink
        return netlink.main(args)
    return notebooks(args) if args.part == "notebooks" else side_by_side(args)


if __name__ == "__main__":
    sys.exit(main())
