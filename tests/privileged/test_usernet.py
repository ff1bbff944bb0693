"""The user-mode network on the real kernel, as the user `labcore-student`, who is not root: a rootless
container's own network namespace with eth0 and a route out through slirp4netns; two containers on port 80,
each reached through its own published port on 127.0.0.1; one container reaching another; the network steps
of notebook 08; the refusal where the host has no tap device; and `labcore cleanup` after a crash, leaving no
process, namespace or file.

The suite runs as root. The user runs Debian's python3 with the .venv's packages on PYTHONPATH (the .venv's
interpreter is pyenv's, under /root, mode 700), as test_notebooks_rootless does for nobody."""
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from labcore.kernel.journal import Journal, running, undo_rmtree
from tests.conftest import privileged
from tools.host_matrix import STUDENT

pytestmark = privileged
ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
USER = STUDENT                      # the ordinary user `./lab test` makes (as root)


def ready_to_run_as_the_user() -> str | None:
    """Why these tests cannot run on this host, or None."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"needs a user {USER!r} without root (`./lab test` makes it, when run as root)"
    if not os.path.exists(SYSTEM_PYTHON) or not shutil.which("setpriv"):
        return "needs the system's python3 and setpriv (util-linux)"
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    if version != str(sys.version_info[:2]):
        return f"the system's python3 is {version}, the .venv's {sys.version_info[:2]}: their packages differ"
    for program in ("slirp4netns", "nft"):
        if not shutil.which(program):
            return f"needs {program} (`./lab test` installs it)"
    if os.stat("/dev/net/tun").st_mode & 0o006 != 0o006:
        return "/dev/net/tun is not open to users (`./lab test` makes it 0666, as udev does)"
    return None


@pytest.fixture(scope="module")
def lab_dir():
    """A directory the user owns, with the busybox image built in it once (as the user), for every test."""
    why = ready_to_run_as_the_user()
    if why:
        pytest.skip(why)
    user = pwd.getpwnam(USER)
    directory = tempfile.mkdtemp(prefix="labcore-usernet-")
    os.chown(directory, user.pw_uid, user.pw_gid)
    os.chmod(directory, 0o755)
    try:
        built = as_user(directory, f"{directory}/build", "-c",
                        "from labcore.image.baseimage import ensure_base_image; ensure_base_image()")
        assert built.returncode == 0, built.stderr[-2000:]
        yield directory
    finally:
        undo_rmtree(directory)


@pytest.fixture
def state(lab_dir, request):
    """This test's LABCORE_HOME, sharing the built image; everything in it undone afterwards, as the user."""
    home = f"{lab_dir}/{request.node.name[:40]}"
    as_user(lab_dir, home, "-c", f"import os; os.makedirs({home!r}); os.symlink('../build/images', "
                                 f"{home + '/images'!r})")
    yield home
    left = Journal(f"{home}/journal").entries()
    done = as_user(lab_dir, home, "-m", "labcore", "cleanup", "--all")
    assert not left, "the test left objects behind: " + ", ".join(entry.describe() for entry in left)
    assert "could not" not in done.stdout, done.stdout


def as_user(lab_dir: str, home: str, *args: str) -> subprocess.CompletedProcess:
    """``python3 ARGS`` as the user, with LABCORE_HOME=home."""
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    env = {"HOME": lab_dir, "LABCORE_HOME": home, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "PYTHONPATH": f"{site}:{ROOT}", "PYTHONDONTWRITEBYTECODE": "1"}
    user = pwd.getpwnam(USER)
    return subprocess.run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
                           "env", "-i", *(f"{k}={v}" for k, v in env.items()), SYSTEM_PYTHON, *args],
                          capture_output=True, text=True, timeout=300, cwd="/")


def as_user_json(lab_dir: str, home: str, code: str) -> dict:
    done = as_user(lab_dir, home, "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(port: int, path: str = "/", seconds: float = 20.0) -> str:
    """The body of GET http://127.0.0.1:PORT/PATH, once the server inside answers (it starts after -p)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
                answer = b""
                while chunk := conn.recv(4096):
                    answer += chunk
            if answer:
                return answer.decode().split("\r\n\r\n", 1)[-1]
        except OSError:
            pass
        if time.monotonic() > deadline:
            return "no answer"
        time.sleep(0.05)


def net_namespaces_in_use() -> set[str]:
    """Every network namespace some process holds, as root reads /proc/*/ns/net."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found.add(os.readlink(f"/proc/{pid}/ns/net"))
        except OSError:
            pass
    return found


RUN_AND_LOOK = """
import json, os
from labcore.kernel.journal import Journal
from labcore.runtime.container import Spec, run
result = run(Spec("busybox", ["sh", "-c", "readlink /proc/self/ns/net; ip -4 -o addr show eth0; ip route; "
                              "nc 10.0.2.2 {port} </dev/null"], rm=True))
print(json.dumps({{"out": result.stdout.decode(), "code": result.exit_code,
                  "host ns": os.readlink("/proc/self/ns/net"), "journal": len(Journal().entries())}}))
"""


def test_a_rootless_container_has_its_own_netns_with_eth0_and_a_route_out(lab_dir, state):
    """Out through slirp4netns: a server on the host's loopback is reached at 10.0.2.2, and sees the
    connection come from the host's own 127.0.0.1, a socket of the user's slirp4netns."""
    seen = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        def answer_once():
            conn, peer = server.accept()
            seen.append(peer[0])
            with conn:
                conn.sendall(b"hello from the host\n")
        thread = threading.Thread(target=answer_once)
        thread.start()
        found = as_user_json(lab_dir, state, RUN_AND_LOOK.format(port=server.getsockname()[1]))
        thread.join(10)
    lines = [line.strip() for line in found["out"].splitlines()]
    assert found["code"] == 0 and lines[0].startswith("net:[") and lines[0] != found["host ns"]
    assert " eth0 " in lines[1] and "inet 10.203.0." in lines[1]
    assert "default via 10.203.0.1 dev eth0" in lines
    assert lines[-1] == "hello from the host" and seen == ["127.0.0.1"]
    assert found["journal"] == 0                           # the run undid all it made, the network too


def start_web(lab_dir: str, state: str, name: str, port: int) -> None:
    done = as_user(lab_dir, state, "-m", "labcore", "run", "-d", "--name", name, "-p", f"{port}:80", "busybox",
                   "sh", "-c", f"mkdir /www; echo I am {name} > /www/index.html; exec httpd -f -p 80 -h /www")
    assert done.returncode == 0, done.stderr


def inspect(lab_dir: str, state: str, name: str) -> dict:
    done = as_user(lab_dir, state, "-m", "labcore", "inspect", name)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    return found[0] if isinstance(found, list) else found


def test_two_rootless_containers_on_port_80_each_behind_its_own_published_port(lab_dir, state):
    ports = {"web-a": free_port(), "web-b": free_port()}
    try:
        for name, port in ports.items():
            start_web(lab_dir, state, name, port)
        assert {name: get(port).strip() for name, port in ports.items()} == {"web-a": "I am web-a",
                                                                            "web-b": "I am web-b"}
        a, b = (inspect(lab_dir, state, name) for name in ports)
        namespaces = {os.readlink(f"/proc/{box['State']['Pid']}/ns/net") for box in (a, b)}
        assert len(namespaces | {os.readlink("/proc/self/ns/net")}) == 3
        for box in (a, b):            # each holds port 80 in its own namespace (busybox listens on [::])
            assert any(row.split()[1].endswith(":0050") and row.split()[3] == "0A" for row in
                       Path(f"/proc/{box['State']['Pid']}/net/tcp6").read_text().splitlines()[1:])
        # one container reaches the other at its address, across the bridge in the router namespace
        other = b["NetworkSettings"]["IPAddress"]
        done = as_user(lab_dir, state, "-m", "labcore", "exec", "web-a", "wget", "-q", "-O", "-", f"http://{other}/")
        assert done.stdout.strip() == "I am web-b", done.stderr
    finally:
        removed = as_user(lab_dir, state, "-m", "labcore", "rm", "-f", *ports)
    assert removed.returncode == 0, removed.stderr
    for port in ports.values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)


def test_after_a_crash_cleanup_leaves_no_process_namespace_or_file(lab_dir, state):
    port = free_port()
    start_web(lab_dir, state, "crashed", port)
    assert get(port).strip() == "I am crashed"
    entries = Journal(f"{state}/journal").entries()
    pids = {entry.args["pid"] for entry in entries if entry.undo == "kill"}
    holder = next(entry.args["pid"] for entry in entries if entry.kind == "usernet" and entry.name == "holder")
    router_ns = os.readlink(f"/proc/{holder}/ns/net")
    monitor = next(entry.owner["pid"] for entry in entries if entry.kind == "link")
    assert {"holder", "slirp4netns"} <= {entry.name for entry in entries if entry.kind == "usernet"}
    assert router_ns in net_namespaces_in_use() and all(map(running, pids))

    os.kill(monitor, 9)                                   # the container's parent dies: a crash
    done = as_user(lab_dir, state, "-m", "labcore", "cleanup")

    assert done.returncode == 0 and "user-mode network" in done.stdout, done.stdout + done.stderr
    assert [pid for pid in pids if running(pid)] == []    # container, proxy, slirp4netns, holder
    assert router_ns not in net_namespaces_in_use()
    assert not list(Path(state, "journal").glob("*.json"))
    assert not any(Path(state, "containers").iterdir())
    assert state not in Path("/proc/self/mountinfo").read_text()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


BOX = """
import json, socket
from labcore.kernel import journal
from labcore.lessons import build_your_own
from labcore.runtime import container
box = build_your_own.Box(container.find_image("busybox"))
box.directory.mkdir(parents=True)
box.scope.record("directory", str(box.directory), "rmtree", path=str(box.directory))
box.fork_child()
box.done += ["layers", "mount_overlay", "join_cgroup"]    # not the network's: here only so unshare may run
box.unshare()
wired = box.connect_network()
box.done += ["pivot_root"]                                # pid 1 stays on the host's files: busybox-static
box.exec(["/bin/busybox", "sh", "-c", "printf 'HTTP/1.0 200 OK\\\\r\\\\n\\\\r\\\\nhello from box8\\\\n' | "
          "/bin/busybox nc -l -p 80 >/dev/null"])
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
web = box.publish(port, 80)
box.wait()
gone = box.remove()
print(json.dumps({"mode": wired.mode.value, "wired": wired.data, "after": wired.after, "reply": web.data["reply"],
                  "proxy": web.after["proxy"], "left": gone.data["left"], "journal": len(journal.Journal().entries())}))
"""


def test_notebook_08s_network_steps_run_for_real_without_root(lab_dir, state):
    found = as_user_json(lab_dir, state, BOX)
    host_end = found["wired"]["host_ifname"]
    assert found["mode"] == "real, inside a user namespace"
    assert found["wired"]["interfaces_inside"] == ["eth0", "lo"]
    assert found["after"]["inside: default route"] == "via 10.203.0.1 dev eth0"
    assert found["after"][f"router ns: {host_end}"].endswith("on lcbr0")
    assert found["after"]["router default route"] == "via 10.0.2.2 dev lctap0"
    assert found["after"]["router lctap0"].endswith("10.0.2.100/24") and "masquerade" in found["after"]["router nat"]
    assert found["reply"] == "200 OK: hello from box8"
    assert found["proxy"].endswith("(connecting from the router namespace)")
    assert found["left"] == {} and found["journal"] == 0


TWO_SERVERS = """
import json
from labcore.lessons import client_server
step = client_server.two_servers_on_port_80(host_ports=(0, 0))
print(json.dumps({"mode": step.mode.value, "reason": step.reason, "data": step.data, "after": step.after}))
"""


def test_two_servers_on_port_80_without_root(lab_dir, state):
    found = as_user_json(lab_dir, state, TWO_SERVERS)
    assert found["mode"] == "real, inside a user namespace", found["reason"]
    a, b = found["data"]["servers"]["server-a"], found["data"]["servers"]["server-b"]
    assert a["identity"] != b["identity"] and a["net_ns"] != b["net_ns"]
    for server in (a, b):
        assert "0.0.0.0:80" in server["listening"] and server["second_bind"].startswith("EADDRINUSE")
        assert server["from_bridge"] == server["identity"]                    # from the router namespace
        assert server["from_other"] == server["identity"]
        assert server["published"] == server["identity"]
    assert found["data"]["links_left"] == []


REFUSED = """
import json
from labcore.errors import LabError
from labcore.kernel import usernet
from labcore.lessons import client_server
from labcore.runtime import container
usernet.TUN = "/dev/net/labcore-no-such-tun"        # a host without the tun driver
two = client_server.two_servers_on_port_80(host_ports=(0, 0))
lo_only = container.run(container.Spec("busybox", ["ls", "/sys/class/net"], rm=True))
try:
    container.run(container.Spec("busybox", ["true"], rm=True, publish=["80"]))
    published = "ran"
except LabError as err:
    published = str(err)
print(json.dumps({"mode": two.mode.name, "reason": two.reason, "after": two.after,
                  "lo only": lo_only.stdout.decode().split(), "published": published}))
"""


def test_where_the_host_refuses_the_network_the_step_says_why_and_loopback_still_works(lab_dir, state):
    found = as_user_json(lab_dir, state, REFUSED)
    assert found["mode"] == "NOT_PERMITTED"
    assert "labcore-no-such-tun" in found["reason"] and "modprobe tun" in found["reason"]
    assert found["after"]["connect 127.0.0.1:80"].startswith("loopback server in net:[")
    assert found["lo only"] == ["lo"]                     # no -p: the container runs, with loopback only
    assert "labcore-no-such-tun" in found["published"]   # -p cannot be honoured: refused, with the reason


NAMES = """
import json, subprocess, sys
def labcore(*argv):
    done = subprocess.run([sys.executable, "-m", "labcore", *argv], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr
for name in ("front", "back"):
    labcore("network", "create", name)
labcore("run", "-d", "--name", "web", "--network", "front", "--network-alias", "www", "busybox", "sh", "-c",
        "mkdir /www; echo I am web > /www/index.html; exec httpd -f -p 80 -h /www")
same = labcore("run", "--rm", "--network", "front", "busybox", "sh", "-c",
               "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://www/ 2>>/tmp/e && break; sleep 0.2; done; "
               "[ $i = 1 ] || echo tries $i: $(cat /tmp/e) >&2")
other = labcore("run", "--rm", "--network", "back", "busybox", "sh", "-c",
                "nslookup web; ping -c1 -W2 10.203.1.2; echo ping $?")         # web: the first on front
labcore("rm", "-f", "web")
removed = labcore("network", "rm", "front", "back")
print(json.dumps({"same": same, "other": other, "removed": removed}))
"""


def test_rootless_containers_find_each_other_by_name_on_their_own_network_only(lab_dir, state):
    """The router namespace holds a bridge per network; the DNS server answers inside each container's
    namespace; the router forwards nothing from one bridge to another."""
    found = as_user_json(lab_dir, state, NAMES)
    # The name is there from the first try: the asker's DNS server knows its networks before pid 1 runs
    # (``networks.for_lookup``; before, its first tries could say "bad address 'www'"). web's httpd may still
    # be starting, so the loop waits up to 2 s for a connection; what every failed try said is kept (2>>), and
    # none may be about the name.
    assert found["same"].strip().splitlines()[0] == "I am web", found["same"]
    assert "bad address" not in found["same"], found["same"]
    assert "can't find web" in found["other"] and "ping 1" in found["other"]
    assert found["removed"].split() == ["front", "back"]
