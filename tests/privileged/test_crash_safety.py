"""Crash safety by construction: `labcore run` with a memory limit, a published port and a volume, killed with
SIGKILL at random instants; after each, `labcore cleanup` leaves no mount, cgroup, network namespace, link,
process, port or file of the lab. And a detached container whose monitor was killed is reported dead, as
Docker reports one, and `rm` removes all it had.

How a kill is aimed: the run is stopped (SIGSTOP) at a random instant of its life, its container ids read
while it cannot make anything more, then killed (SIGKILL), so the test knows every object that run could
have made. The instants are drawn over the length of one whole run measured first, so they fall in the
start, the run and the removal alike. All 200 of issue 16 run in `./lab test`: about 100 s on this machine's
2 cores (a kill and a cleanup take half a second), well inside CI's budget; LABCORE_KILLS=20 is a quick look
while working, and LABCORE_KILL_SEED replays one sequence of instants."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from labcore.kernel.journal import Journal
from tests.conftest import labcore, privileged

pytestmark = privileged
KILLS = int(os.environ.get("LABCORE_KILLS", "200"))
TOKEN = f"labcore-crash-{os.getpid()}"          # pid 1's $0: how its processes are recognised


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_run(port: int, volume: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labcore", "run", "--rm", "-m", "32m", "-p", f"{port}:80",
                             "-v", f"{volume}:/data", "busybox", "sh", "-c", "httpd -p 80 -h /data; sleep 0.3",
                             TOKEN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")


def kill_at(run: subprocess.Popen, seconds: float, home: Path) -> list[str]:
    """Stop the run after ``seconds``, note its containers, kill it; the ids it made (or none yet)."""
    try:
        run.wait(seconds)
        return []                                 # it ended first: nothing to kill
    except subprocess.TimeoutExpired:
        pass
    run.send_signal(signal.SIGSTOP)
    while run.poll() is None and not stopped(run.pid):
        time.sleep(0.001)
    ids = os.listdir(home / "containers") if (home / "containers").is_dir() else []
    run.send_signal(signal.SIGKILL)
    run.wait()
    return ids


def whats_left(home: Path, ids: list[str], port: int, volume: Path) -> dict:
    """Every kind of object a run makes, looked for on the host by what names it."""
    cgroups = [str(path) for id in ids for path in Path("/sys/fs/cgroup").glob(f"*/labcore/labcore-{id}")]
    links = [name for name in os.listdir("/sys/class/net") if any(name.startswith(f"lc{id[:10]}") for id in ids)]
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(home) in line or str(volume) in line]
    processes, namespaces = [], set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if TOKEN.encode() in cmdline or f"LABCORE_HOME={home}".encode() in environ.split(b"\0"):
            if int(pid) != os.getpid():
                words = cmdline.replace(b"\0", b" ").decode(errors="replace")
                processes.append(f"{pid}: {words}")
                namespaces.add(os.readlink(f"/proc/{pid}/ns/net"))
    try:
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))
        held = []
    except OSError:
        held = [port]
    files = [str(path) for path in home.rglob("*") if not path.is_dir() and "images" not in path.parts]
    return {k: v for k, v in {"cgroups": cgroups, "links": links, "mounts": mounts, "processes": processes,
                              "net namespaces": sorted(namespaces), "ports": held, "files": files,
                              "journal": [e.describe() for e in Journal().entries()]}.items() if v}


def test_a_run_killed_at_random_instants_leaves_nothing_after_cleanup(busybox_image, labcore_home, tmp_path):
    volume = tmp_path / "data"
    volume.mkdir()
    (volume / "index.html").write_text("served from a volume\n")
    began = time.monotonic()
    whole = start_run(free_port(), volume)
    assert whole.wait(60) == 0
    length = time.monotonic() - began                  # one run from start to removal, killed at none
    assert whats_left(labcore_home, os.listdir(labcore_home / "containers"), free_port(), volume) == {}
    seed = int(os.environ.get("LABCORE_KILL_SEED", time.time_ns() % 10**6))
    chance = random.Random(seed)
    killed_with_objects = 0
    for number in range(KILLS):
        port = free_port()
        at = chance.uniform(0, length)
        ids = kill_at(start_run(port, volume), at, labcore_home)
        killed_with_objects += bool(ids)
        cleaned = labcore("cleanup")
        assert "could not" not in cleaned.stdout, f"kill {number} at {at:.3f} s (seed {seed}): {cleaned.stdout}"
        left = whats_left(labcore_home, ids, port, volume)
        assert left == {}, f"kill {number} at {at:.3f} s (seed {seed}) left: {json.dumps(left, indent=1)}"
    assert killed_with_objects >= KILLS // 2, "too few kills landed while the run had made something"


def test_a_container_whose_monitor_died_is_dead_and_rm_removes_everything(busybox_image, labcore_home, tmp_path):
    """The finding of issue 16: a killed monitor showed `Exited (255)` while its httpd still served, and `rm`
    left everything behind. Now: `Dead` in ps, State.Dead in inspect, and rm kills and removes all of it."""
    port, volume = free_port(), tmp_path / "data"
    volume.mkdir()
    (volume / "index.html").write_text("still here\n")
    box = labcore("run", "-d", "-m", "32m", "-p", f"{port}:80", "-v", f"{volume}:/data", "busybox", "httpd",
                  "-f", "-p", "80", "-h", "/data").stdout.strip()
    shown = json.loads(labcore("inspect", box).stdout)[0]
    monitor = json.loads((labcore_home / "containers" / box / "state.json").read_text())["monitor"]["pid"]
    os.kill(monitor, signal.SIGKILL)
    while Path(f"/proc/{monitor}").exists() and not Path(f"/proc/{monitor}/stat").read_text().split()[2] == "Z":
        time.sleep(0.01)
    assert Path(f"/proc/{shown['State']['Pid']}").exists()                       # its httpd still runs
    row = next(line for line in labcore("ps", "-a").stdout.splitlines() if line.startswith(box[:12]))
    assert " Dead " in row
    state = json.loads(labcore("inspect", box).stdout)[0]["State"]
    assert (state["Status"], state["Dead"], state["Running"]) == ("dead", True, False) and "monitor" in state["Error"]
    assert "cannot start" in labcore("start", box, check=False).stderr
    labcore("rm", box)                                                            # no -f needed, as Docker
    assert whats_left(labcore_home, [box], port, volume) == {}
    assert not Path(f"/proc/{shown['State']['Pid']}").exists() or \
        Path(f"/proc/{shown['State']['Pid']}/stat").read_text().split()[2] == "Z"
