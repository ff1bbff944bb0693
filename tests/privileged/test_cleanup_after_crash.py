"""A `labcore run` killed with SIGKILL mid-run leaves kernel objects; `labcore cleanup` removes all of them."""
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from labcore.kernel.journal import Journal
from tests.conftest import eventually, privileged

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


def is_running_sleep(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return any(child.cmdline() == ["sleep", "60"] for child in psutil.Process(pid).children(recursive=True))
    return False


def test_cleanup_after_sigkill_leaves_nothing(busybox_image, labcore_home):
    run = subprocess.Popen([sys.executable, "-m", "labcore", "run", "--rm", "-p", "18999:80", "--memory", "64m",
                            "busybox", "sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # pid 1 becomes `sleep 60` once every step is done (network, proxy, root): a fixed pause was a guess that
        # a loaded machine could outlast. The foreground run adopts pid 1, so it is among the run's children.
        assert eventually(lambda: is_running_sleep(run.pid), seconds=60), "the container never started"
        container_id = lab_objects(labcore_home)["containers"][0]
        before = lab_objects(labcore_home, container_id)
        assert before["cgroups"] and before["links"]
    finally:
        run.send_signal(signal.SIGKILL)                # the crash; on a failure above, what the leak check undoes
        run.wait()
    assert Journal().entries(), "the killed run's objects are in the journal"
    out = subprocess.run([sys.executable, "-m", "labcore", "cleanup"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "removed cgroup" in out.stdout and "removed link" in out.stdout
    assert lab_objects(labcore_home, container_id) == {"cgroups": [], "links": [], "mounts": [],
                                                       "containers": []}
    assert Journal().entries() == []
