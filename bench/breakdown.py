"""`python -m bench breakdown`: where the milliseconds of one warm start go (row h, ``container.run``).

The bench wraps, in this process only, the functions one `container.run(Spec(..., rm=True))` passes through: each
step of ``container.CREATE_STEPS``, the state dir, pid 1's own steps (``await_root``: mount, pivot_root,
hostname), start, wait, every journal record written or dropped, every cgroup file written, and the scope's
undo at --rm (rmtree, rmdir of the cgroup, kill). Each wrapped call's time is counted without the wrapped
calls inside it (exclusive), so the rows add up to the whole; what no wrapper holds is "(the rest)". Medians
over the runs, each row with how many times a run passes through it. A row marked "beside" ran in another
thread while the start went on (the shim's move into its cgroup, ``labcore.kernel.cgroups.Move``): it is not
part of the sum; what the start still waited for it is the row "wait for the cgroup move".
"""
from __future__ import annotations

import argparse
import functools
import os
import threading
import time
from collections import defaultdict
from statistics import median


class Clock:
    """Exclusive time per label: a call's time less that of the wrapped calls inside it."""

    def __init__(self):
        self.spent: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.main = threading.get_ident()
        self.local = threading.local()          # each thread's stack: per open call, its wrapped callees' time

    @property
    def stack(self) -> list[float]:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def wrap(self, label, function):
        """``label``: a string, or a function of the call's arguments giving one."""
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self.stack.append(0.0)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                inner = self.stack.pop()
                name = label if isinstance(label, str) else label(*args, **kwargs)
                if threading.get_ident() != self.main:
                    name = f"(beside, in a thread) {name}"
                self.spent[name] += took - inner
                self.calls[name] += 1
                if self.stack:
                    self.stack[-1] += took
        return timed

    def take(self) -> tuple[dict, dict]:
        spent, calls = dict(self.spent), dict(self.calls)
        self.spent.clear(), self.calls.clear()
        return spent, calls


def instrument(clock: Clock) -> None:
    """Wrap the start's functions where ``container`` and the journal look them up (module attributes)."""
    from labcore.kernel import cgroups, journal
    from labcore.runtime import container
    container.CREATE_STEPS = tuple((name, step and clock.wrap(f"create: {name}", step))
                                   for name, step in container.CREATE_STEPS)
    container.finish_joining_cgroup = clock.wrap("wait for the cgroup move (what the overlap left)",
                                                 container.finish_joining_cgroup)
    for name in ("make_state_dir", "await_root", "start", "save_state", "release_cgroup", "release_network"):
        setattr(container, name, clock.wrap(f"{name}", getattr(container, name)))
    container.plan_for = clock.wrap("plan_for (spec, image lookup)", container.plan_for)
    if hasattr(container, "reap"):          # pid 1 adopted from the shim; an older tree reaps the shim instead
        container.reap = clock.wrap("wait: reap pid 1", container.reap)
    else:
        container.Child.wait = clock.wrap("wait: reap the shim", container.Child.wait)
    journal.Journal.record = clock.wrap("journal: write a record", journal.Journal.record)
    journal.Journal.forget = clock.wrap("journal: drop a record", journal.Journal.forget)
    for op in list(journal.UNDO):
        journal.UNDO[op] = clock.wrap(f"--rm undo: {op}", journal.UNDO[op])
    cgroups.write = clock.wrap(lambda path, value: "cgroup: write cgroup.procs (move a process)"
                               if path.name == "cgroup.procs" else "cgroup: write a limit or device rule",
                               cgroups.write)
    cgroups.Manager.create = clock.wrap("cgroup: mkdir", cgroups.Manager.create)


def run_once() -> None:
    from labcore.runtime import container
    result = container.run(container.Spec("busybox", ["/bin/true"], rm=True, network="none"), stdio="capture")
    if result.exit_code != 0:
        raise SystemExit(f"container.run exited {result.exit_code}: {result}")


# Before each run, a pause as long as the side-by-side bench leaves between two runs of row (h) with no move
# into a cgroup (the other rows run): the kernel's first move after such a spell waits for an RCU grace period
# (``labcore.kernel.cgroups.Move``), and back to back runs would not show it.
PAUSE = 0.1


def measure(runs: int, warmup: int, pause: float = PAUSE) -> tuple[list[dict], list[dict], list[float]]:
    clock = Clock()
    instrument(clock)
    spent, calls, totals = [], [], []
    for round_ in range(warmup + runs):
        time.sleep(pause)
        start = time.perf_counter()
        clock.stack.append(0.0)                 # the run itself: its exclusive time is "(the rest)"
        run_once()
        took = time.perf_counter() - start
        rest = took - clock.stack.pop()
        one_spent, one_calls = clock.take()
        if round_ >= warmup:
            one_spent["(the rest: Python between the steps, Stdio, Scope)"] = rest
            spent.append(one_spent), calls.append(one_calls), totals.append(took)
    return spent, calls, totals


def table(spent: list[dict], calls: list[dict], totals: list[float]) -> str:
    labels = sorted({label for run in spent for label in run}, key=lambda k: -median(r.get(k, 0) for r in spent))
    whole = median(totals) * 1000
    lines = [f"One warm `container.run(Spec(\"busybox\", [\"/bin/true\"], rm=True, network=\"none\"))`: median "
             f"{whole:.1f} ms over {len(totals)} runs, each after a {PAUSE * 1000:.0f} ms pause; load average "
             f"{os.getloadavg()[0]:.1f}.", "",
             "| where | median ms | share | calls a run |", "|---|---:|---:|---:|"]
    for label in labels:
        ms = median(run.get(label, 0.0) for run in spent) * 1000
        count = median(run.get(label, 0) for run in calls) if label in calls[0] else 1
        lines.append(f"| {label} | {ms:.2f} | {ms / whole:.0%} | {count:g} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from bench import report
    spent, calls, totals = measure(args.runs, args.warmup)
    markdown = table(spent, calls, totals)
    print(markdown)
    report.save("breakdown", {"runs": args.runs, "total_ms": [t * 1000 for t in totals],
                              "spent_ms": [{k: v * 1000 for k, v in run.items()} for run in spent],
                              "calls": calls}, markdown)
    return 0
