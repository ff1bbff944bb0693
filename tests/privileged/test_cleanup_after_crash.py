"""A `labcore run` killed with SIGKILL mid-run leaves kernel objects; `labcore cleanup` removes all of them."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from labcore.kernel.journal import Journal
from tests.conftest import privileged

pytestmark = privileged


def lab_objects(home: Path, container_id_part: str = "") -> dict:
    """What carries the lab's name right now: cgroups, links, mounts, processes, container dirs."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob(f"*/labcore/labcore-{container_id_part}*")),
        "links": [line.split(": ")[1] for line in links.splitlines() if f": lc{container_id_part[:10]}" in line],
        "mounts": [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(home) in line],
        "containers": sorted(os.listdir(home / "containers")) if (home / "containers").exists() else [],
    }


def test_cleanup_after_sigkill_leaves_nothing(busybox_image, labcore_home):
    run = subprocess.Popen([sys.executable, "-m", "labcore", "run", "--rm", "-p", "18999:80", "--memory", "64m",
                            "busybox", "sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not lab_objects(labcore_home)["containers"]:
        time.sleep(0.05)
    time.sleep(1.0)                                            # the network and the proxy come after the dir
    container_id = lab_objects(labcore_home)["containers"][0]
    before = lab_objects(labcore_home, container_id)
    assert before["cgroups"] and before["links"]
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert Journal().entries(), "the killed run's objects are in the journal"
    out = subprocess.run([sys.executable, "-m", "labcore", "cleanup"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "removed cgroup" in out.stdout and "removed link" in out.stdout
    assert lab_objects(labcore_home, container_id) == {"cgroups": [], "links": [], "mounts": [],
                                                       "containers": []}
    assert Journal().entries() == []
