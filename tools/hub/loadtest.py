"""A class on this machine, for the load test (tests/hub) and for measuring by hand:

    python -m tools.hub.loadtest [--students 10] [--notebooks 03-namespaces.ipynb 05-union-filesystem.ipynb]

As root: makes the students (``labcore-<tag>-sNN``, random passwords, a class group of their own), starts
JupyterHub with ``tools/hub/jupyterhub_config.py`` on loopback ports the kernel picks, and then, as a class
would:

    1. every student at once logs in through the hub's REST API, starts their server and runs the notebooks
       in it through the server's kernel API (``tools.hub.kernelapi``); wall time, peak memory
    2. one student tries to reach another's containers, logs and daemon socket (``PROBE``, run in their own
       kernel)
    3. one student runs a memory hog and a fork bomb in containers while the others run a notebook again
    4. the hub stops; the students' processes, groups, accounts, homes and the hub's state are removed, and
       each is checked gone

Loopback only, every wait bounded. Prints one JSON report.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from tools import host_matrix
from tools.hub import roster
from tools.hub.kernelapi import Session
from tools.hub.settings import ROOT, Settings, free_port, proxy_command

NOTEBOOKS = ("03-namespaces.ipynb", "05-union-filesystem.ipynb")
COURSE = "labcore-course"
LIMITS = {"memory": "1g", "cpus": "1", "pids": "512"}

# Run in a student's kernel against another student (their home, a container's pid and name, their daemon's
# socket): each line records what the kernel answered. Nothing here should succeed.
PROBE = '''
import json, os, socket, subprocess
def attempt(what, action):
    try:
        action(); found[what] = "allowed"
    except OSError as err:
        found[what] = f"{type(err).__name__}: {err.strerror}"
found = {}
home, sock, pid, name = ARGS["home"], ARGS["sock"], ARGS["pid"], ARGS["name"]
attempt("list their home", lambda: os.listdir(home))
attempt("read their state directory", lambda: os.listdir(home + "/.local/state/labcore/containers"))
attempt("connect to their daemon's socket", lambda: socket.socket(socket.AF_UNIX).connect(sock))
attempt("signal their container", lambda: os.kill(pid, 0))
attempt("read their container's environment", lambda: open(f"/proc/{pid}/environ").read())
attempt("look into their container's root", lambda: os.listdir(f"/proc/{pid}/root/"))
attempt("connect to their kernel's socket", lambda: socket.socket(socket.AF_UNIX).connect(ARGS["kernel"]))
ps = subprocess.run(["labcore", "ps", "-a"], capture_output=True, text=True)
found["my labcore ps lists theirs"] = name in ps.stdout
for verb in (["logs"], ["stop"], ["rm", "-f"]):
    done = subprocess.run(["labcore", "-H", "unix://" + sock, *verb, name], capture_output=True, text=True)
    found["labcore -H their socket " + verb[0]] = f"exit {done.returncode}: {done.stderr.strip()[-160:]}"
print(json.dumps(found))
'''
# A runaway student: a memory hog past their memory limit, then a fork bomb whose pid 1 execs a sleep (an
# exec needs no new process, so pid 1 survives the bomb: the container lasts until the hub stops it).
HOG = '''
import subprocess
done = subprocess.run(["labcore", "run", "--rm", "--network", "none", "busybox", "dd", "if=/dev/zero",
                       "of=/dev/null", "bs=" + ARGS["size"], "count=1"], capture_output=True, text=True)
print("hog exit", done.returncode, done.stderr.strip()[-300:])
'''
BOMB = '''
import subprocess
done = subprocess.run(["labcore", "run", "-d", "--name", "labcore-bomb", "--network", "none", "busybox", "sh",
                       "-c", "b() { b | b & }; b; exec sleep 600"], capture_output=True, text=True)
print("bomb started", done.returncode, done.stderr.strip()[-200:])
'''
OTHER = '''
import json, subprocess
subprocess.run(["labcore", "run", "-d", "--name", "labcore-secret", "--network", "none", "busybox", "sh", "-c",
                "echo secret-of-$(whoami); exec sleep 600"], check=True, capture_output=True)
daemon = subprocess.Popen(["labd"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
state = json.loads(subprocess.run(["labcore", "inspect", "labcore-secret"], capture_output=True, text=True).stdout)
import os, time
sock = os.path.expanduser("~/.local/state/labcore/labd.sock")
for _ in range(100):
    if os.path.exists(sock): break
    time.sleep(0.1)
import ipykernel.connect                       # this kernel's connection file: how it talks to the server
kernel = json.loads(ipykernel.connect.get_connection_info())
print(json.dumps({"pid": state[0]["State"]["Pid"], "sock": sock, "home": os.path.expanduser("~"),
                  "kernel transport": kernel["transport"], "kernel socket": f"{kernel['ip']}-{kernel['shell_port']}",
                  "kernel socket there": os.path.exists(f"{kernel['ip']}-{kernel['shell_port']}")}))
'''


class Class:
    """The hub and its students on this machine; everything it makes is removed on leaving the block."""

    def __init__(self, students: int = 10, limits: dict | None = None, auth: str = "pam"):
        self.tag, self.auth = secrets.token_hex(2), auth
        self.group = f"labcore-{self.tag}-class"
        self.names = [f"labcore-{self.tag}-s{i:02d}" for i in range(1, students + 1)]
        self.passwords: dict[str, str] = {}
        self.limits = limits or LIMITS
        self.state = Path(tempfile.mkdtemp(prefix=f"labcore-hub-{self.tag}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.hub: subprocess.Popen | None = None

    def __enter__(self) -> "Class":
        try:
            roster.ensure_group(self.group)
            for name in self.names:         # first use: the hub makes each account; its first login sets this
                self.passwords[name] = roster.add(roster.Student(name), self.group) if self.auth == "pam" \
                    else secrets.token_urlsafe(9)
            self.start_hub()
        except BaseException:
            self.close()
            raise
        return self

    def start_hub(self) -> None:
        settings = Settings(root=str(ROOT), state=str(self.state), bind_url=self.url,
                            hub_bind_url=f"http://127.0.0.1:{free_port()}",
                            proxy_api_url=f"http://127.0.0.1:{free_port()}", proxy=proxy_command(),
                            auth=self.auth, group=self.group, students=self.names, limits=self.limits,
                            course_folder=COURSE)
        environment = {k: v for k, v in os.environ.items() if k != "LABCORE_HOME"}
        environment["LABCORE_HUB_SETTINGS"] = str(settings.write())
        self.log = open(self.state / "jupyterhub.log", "w")
        self.hub = subprocess.Popen([str(ROOT / ".venv" / "bin" / "jupyterhub"), "-f",
                                     str(ROOT / "tools" / "hub" / "jupyterhub_config.py")],
                                    cwd=self.state, env=environment, stdout=self.log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.hub.poll() is not None:
                raise RuntimeError(f"JupyterHub exited {self.hub.returncode}:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.url}/hub/api", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"JupyterHub did not answer within 120 s:\n{self.log_tail()}")

    def log_path(self) -> Path:
        return self.state / "jupyterhub.log"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path().read_text().splitlines()[-lines:])

    def session(self, name: str) -> Session:
        return Session(self.url, name)

    def stop_hub(self) -> None:
        """SIGTERM: JupyterHub stops every server (cleanup_servers: each student's group removed) and its
        proxy, then exits."""
        if self.hub is None or self.hub.poll() is not None:
            return
        self.hub.send_signal(signal.SIGTERM)
        try:
            self.hub.wait(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(self.hub.pid, signal.SIGKILL)
            self.hub.wait()

    def __exit__(self, *exc) -> None:
        if exc and exc[0] is not None and (self.state / "jupyterhub.log").exists():
            print(f"JupyterHub's log ends:\n{self.log_tail()}", file=sys.stderr)
        self.close()

    def close(self) -> None:
        """Stop the hub (and so every server), then remove the students and the hub's state; again: nothing."""
        self.stop_hub()
        from labcore.kernel.journal import Journal, undo_rmtree
        Journal(self.state / "journal").undo_all()          # a group a failed stop left
        self.kill_proxy()
        for name in self.names:
            roster.remove(name)
        subprocess.run(["groupdel", self.group], capture_output=True)
        if self.state.exists():
            undo_rmtree(str(self.state))

    def kill_proxy(self) -> None:
        pid_file = self.state / "jupyterhub-proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def left_behind(self) -> list[str]:
        """What of this class still exists: processes, accounts, homes, groups, cgroups, the hub's state."""
        import psutil
        found = []
        uids = {}
        for name in self.names:
            try:
                uids[pwd.getpwnam(name).pw_uid] = name
                found.append(f"account {name}")
            except KeyError:
                pass
            if Path("/home", name).exists():
                found.append(f"home /home/{name}")
        for process in psutil.process_iter(["uids", "cmdline"]):
            if process.info["uids"] and process.info["uids"].real in uids:
                found.append(f"process {process.pid} of {uids[process.info['uids'].real]}")
            elif str(self.state) in " ".join(process.info["cmdline"] or []):
                found.append(f"process {process.pid}: {' '.join(process.info['cmdline'])[:100]}")
        found += [f"cgroup {path}" for path in Path("/sys/fs/cgroup").glob(f"**/labcore-hub-labcore-{self.tag}-*")]
        if subprocess.run(["getent", "group", self.group], capture_output=True).returncode == 0:
            found.append(f"group {self.group}")
        if self.state.exists():
            found.append(f"hub state {self.state}")
        return found


# --- measuring -----------------------------------------------------------------------------------------------

class MemorySampler:
    """The class's memory every half second: the proportional set size (PSS: shared pages split between the
    processes sharing them) of the hub, its proxy and every student process, summed; its peak is the
    class's footprint on a VM of its own."""

    def __init__(self, the_class: Class):
        self.the_class, self.peak, self.samples = the_class, 0, 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.peak = max(self.peak, self.measure())
            self.samples += 1

    def measure(self) -> int:
        import psutil
        uids = {pwd.getpwnam(name).pw_uid for name in self.the_class.names}
        hub = psutil.Process(self.the_class.hub.pid)
        processes = [hub, *hub.children(recursive=True)]
        processes += [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real in uids]
        total = 0
        for process in {p.pid: p for p in processes}.values():
            try:
                total += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total


def group_usage(name: str):
    """The student's cgroup's counters (``labcore.kernel.cgroups.Stats``), read the way the hub's manager reads them."""
    from labcore.kernel.cgroups import Group, open_manager
    manager = open_manager()
    group = f"labcore/labcore-hub-{name}"
    return manager.stats(Group(group, manager.hierarchy_dirs(group)))


# --- the phases -------------------------------------------------------------------------------------------

async def run_student(the_class: Class, name: str, notebooks) -> dict:
    session = the_class.session(name)
    started = time.monotonic()
    await session.login(the_class.passwords[name])
    await session.start()
    ready = time.monotonic() - started
    counted = {notebook: host_matrix.count(await session.run_notebook(f"{COURSE}/{notebook}"))
               for notebook in notebooks}
    return {"server ready s": round(ready, 1), "seconds": round(time.monotonic() - started, 1),
            "notebooks": counted, "peak bytes": group_usage(name).memory_peak}


async def everyone_at_once(the_class: Class, notebooks) -> dict:
    started = time.monotonic()
    with MemorySampler(the_class) as memory:
        idle = memory.measure()                         # the hub and its proxy, before anyone logs in
        results = await asyncio.gather(*(run_student(the_class, name, notebooks) for name in the_class.names))
    return {"wall s": round(time.monotonic() - started, 1), "peak PSS bytes": memory.peak,
            "hub idle PSS bytes": idle, "students": dict(zip(the_class.names, results))}


async def cell(session: Session, code: str, **args) -> str:
    """Run ``code`` in a fresh kernel of the student's server, with ``args`` as its ARGS; its printed text."""
    import nbformat
    code = f"ARGS = {json.dumps(args)}\n{code}"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    server = f"/user/{session.name}/api"
    kernel = await session.call("POST", f"{server}/kernels", {"name": "python3", "path": COURSE})
    try:
        await session.execute_cells(f"{server}/kernels/{kernel['id']}/channels", notebook)
    finally:
        await session.call("DELETE", f"{server}/kernels/{kernel['id']}")
    outputs = notebook.cells[0].outputs
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    if errors:
        raise RuntimeError(f"{session.name}'s cell failed: {errors}")
    return "".join(o.get("text", "") for o in outputs)


async def isolation(the_class: Class) -> dict:
    """The second student runs a container and a daemon; the first tries to reach them from their kernel."""
    prober, owner = (the_class.session(name) for name in the_class.names[:2])
    for session in (prober, owner):
        await session.login(the_class.passwords[session.name])
    theirs = json.loads((await cell(owner, OTHER)).strip().splitlines()[-1])
    kernel = {"their kernel's transport": theirs.pop("kernel transport"),
              "their kernel's socket was there": theirs.pop("kernel socket there")}
    found = json.loads((await cell(prober, PROBE, name="labcore-secret", kernel=theirs.pop("kernel socket"),
                                   **theirs)).strip().splitlines()[-1])
    return {**found, **kernel}


async def runaway(the_class: Class, notebook: str) -> dict:
    """The first student's memory hog and fork bomb, while every other student runs ``notebook`` again."""
    bomber = the_class.session(the_class.names[0])
    others = [the_class.session(name) for name in the_class.names[1:]]
    for session in (bomber, *others):
        await session.login(the_class.passwords[session.name])
    before = group_usage(bomber.name)
    memory = the_class.limits["memory"]
    hog = await cell(bomber, HOG, size=f"{hog_bytes(memory) >> 20}M")
    await cell(bomber, BOMB)
    started = time.monotonic()
    results = await asyncio.gather(*(session.run_notebook(f"{COURSE}/{notebook}") for session in others))
    during = group_usage(bomber.name)
    report = {"hog": hog.strip(), "others s": round(time.monotonic() - started, 1),
              "others": {s.name: host_matrix.count(nb) for s, nb in zip(others, results)},
              "bomber oom kills": (during.oom_kills or 0) - (before.oom_kills or 0),
              "bomber forks refused": (during.pids_refused or 0) - (before.pids_refused or 0),
              "bomber pids": during.pids_current,
              "bomber CPU periods throttled": (during.cpu_throttled or 0) - (before.cpu_throttled or 0)}
    await bomber.stop()                       # the hub kills what is left in the student's group
    report["bomber server after stop"] = await bomber.server_running()
    return report


def hog_bytes(memory: str) -> int:
    """Half as much again as the student's memory limit: past it, whatever the page cache holds."""
    from labcore.kernel.cgroups.limits import parse_memory
    return parse_memory(memory) * 3 // 2


async def stop_everyone(the_class: Class) -> None:
    sessions = [the_class.session(name) for name in the_class.names]
    for session in sessions:
        await session.login(the_class.passwords[session.name])
    await asyncio.gather(*(session.stop() for session in sessions))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=10)
    parser.add_argument("--notebooks", nargs="+", default=list(NOTEBOOKS))
    parser.add_argument("--memory", default=LIMITS["memory"])
    args = parser.parse_args(argv)
    report = {}
    with Class(args.students, dict(LIMITS, memory=args.memory)) as the_class:
        report["load"] = asyncio.run(everyone_at_once(the_class, args.notebooks))
        if args.students >= 2:                  # one student to probe or run away, another to watch
            report["isolation"] = asyncio.run(isolation(the_class))
            report["runaway"] = asyncio.run(runaway(the_class, args.notebooks[0]))
        asyncio.run(stop_everyone(the_class))
    report["left behind"] = the_class.left_behind()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
