"""One monitor per state directory (labcore.runtime.monitord): the parent of every detached container's pid 1,
not labd's child, outliving labd, and gone once no container and no client keeps it."""
import json
import os
import signal
from pathlib import Path

from labcore.api.labd import Labd
from labcore.kernel.journal import Journal, running
from tests.conftest import eventually, labcore, privileged

pytestmark = privileged


def record(home: Path, box: str) -> dict:
    return json.loads((home / "containers" / box / "state.json").read_text())


def ppid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_two_detached_containers_share_one_monitor_that_outlives_labd_and_leaves_when_idle(busybox_image,
                                                                                        labcore_home):
    socket = f"/tmp/labcore-test-monitor-{os.getpid()}.sock"
    with Labd(socket) as labd:
        held = [entry.owner["pid"] for entry in Journal(labcore_home / "journal").entries()
                if entry.kind == "process" and entry.name == "labcore-monitor"]
        assert len(held) == 1                           # labd's start spawned it, and holds it
        boxes = [labcore("-H", f"unix://{socket}", "run", "-d", "busybox", "sleep", "600").stdout.strip()
                 for _ in range(2)]
        monitors = {record(labcore_home, box)["monitor"]["pid"] for box in boxes}
        assert monitors == set(held)                    # one monitor for both
        monitor = held[0]
        pids = [record(labcore_home, box)["pid"] for box in boxes]
        assert [ppid(pid) for pid in pids] == [monitor, monitor]    # each pid 1 is the monitor's child
        assert ppid(monitor) != labd.process.pid        # and the monitor is not labd's
        os.kill(labd.process.pid, signal.SIGKILL)
        labd.process.wait()
    assert all(running(pid) for pid in pids) and running(monitor)   # labd is gone; the containers are not
    states = [json.loads(labcore("inspect", box).stdout)[0]["State"] for box in boxes]
    assert [state["Status"] for state in states] == ["running", "running"]
    os.kill(pids[0], signal.SIGKILL)
    assert labcore("wait", boxes[0]).stdout.strip() == "137"        # the exit is still recorded
    assert running(monitor)                             # the other container keeps it
    labcore("stop", "-t", "0", boxes[1])
    assert record(labcore_home, boxes[1])["state"] == "exited"
    assert eventually(lambda: not running(monitor), 30)          # nothing keeps it now: it leaves by itself
    assert not (labcore_home / "labcore-monitor.sock").exists()
    assert [entry for entry in Journal(labcore_home / "journal").entries() if entry.owner.get("pid") == monitor
            and "for" not in entry.owner] == []         # its socket and its own record went with it
    labcore("rm", *boxes)


def test_cleanup_leaves_no_monitor_when_no_container_runs(busybox_image, labcore_home):
    box = labcore("run", "-d", "busybox", "true").stdout.strip()
    monitor = record(labcore_home, box)["monitor"]["pid"]
    assert labcore("wait", box).stdout.strip() == "0"
    labcore("rm", box)
    labcore("cleanup")
    assert not running(monitor) and not (labcore_home / "labcore-monitor.sock").exists()


def test_a_failed_start_is_the_clients_error_and_the_monitor_serves_the_next(busybox_image, labcore_home):
    failed = labcore("run", "-d", "--name", "broken", "busybox", "/no/such/program", check=False)
    assert failed.returncode != 0 and "/no/such/program" in failed.stderr
    box = labcore("run", "-d", "busybox", "sh", "-c", "echo fine").stdout.strip()
    assert labcore("wait", box).stdout.strip() == "0" and labcore("logs", box).stdout == "fine\n"
    labcore("rm", box, "broken")
