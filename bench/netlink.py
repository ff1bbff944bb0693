"""`python -m bench netlink`: what a veth pair costs made over rtnetlink in-process (``labcore.kernel.netlink``,
pyroute2, as `labcore run` makes it now) against one ip(8) process per command (as it did before issue 13).

Everything happens inside a child in a network namespace of its own, so nothing reaches the host's. The
first netlink call of a process also pays for importing pyroute2; it is measured apart.
Run as root (or where user namespaces are allowed); results go to bench/results/ (gitignored).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import time

from bench import report


def spread(values: list[float]) -> str:
    return (f"{statistics.median(values) * 1000:.2f} ms (min {min(values) * 1000:.2f}, max "
            f"{max(values) * 1000:.2f}, n={len(values)})" if values else "not measured")


def measure(runs: int) -> dict[str, list[float]]:
    """In a new network namespace: the import, then ``runs`` of each, interleaved: a veth pair added (and
    deleted, untimed: the kernel's wait for its RCU grace period would hide the rest), and `link set lo up`,
    a call the kernel answers at once, which shows the cost of the way of asking alone."""
    from labcore.kernel import netlink, syscalls, userns
    from labcore.kernel.process import find_program
    userns.unshare(syscalls.CLONE_NEWNET)                       # in a user namespace when not root
    ip = find_program("ip") or "/sbin/ip"
    started = time.perf_counter()
    netlink.links()
    times = {"first netlink call (imports pyroute2)": [time.perf_counter() - started]}
    ways = {"veth pair add: netlink": lambda: netlink.link_add("lcbenchh", "veth", "lcbenchc"),
            "veth pair add: ip(8)": lambda: subprocess.run([ip, "link", "add", "lcbenchh", "type", "veth", "peer",
                                                            "name", "lcbenchc"], check=True),
            "link set lo up: netlink": lambda: netlink.link_set("lo", up=True),
            "link set lo up: ip(8)": lambda: subprocess.run([ip, "link", "set", "lo", "up"], check=True)}
    for _ in range(runs):
        for how, way in ways.items():
            started = time.perf_counter()
            way()
            times.setdefault(how, []).append(time.perf_counter() - started)
            if "veth" in how:
                netlink.link_delete("lcbenchh")
    return times


def main(args) -> int:
    from labcore.kernel.process import run_in_child
    load = os.getloadavg()[0]
    times = run_in_child(measure, max(args.runs, 1))
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M')}, load average {load:.1f} before, "
             f"{os.getloadavg()[0]:.1f} after. In a network namespace of its own.",
             "", "| how | median (min, max) |", "|---|---|"]
    lines += [f"| {how} | {spread(values)} |" for how, values in times.items()]
    print("\n".join(lines))
    report.save("netlink", {"seconds": times, "load_before": load}, "\n".join(lines))
    return 0
