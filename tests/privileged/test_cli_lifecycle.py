"""The lifecycle verbs for real, in this process's engine and through labd: run -d, ps, logs, exec, stop, rm."""
import os
import re
import subprocess
import time

import pytest

from labcore import paths
from labcore.api.labd import Labd
from tests.conftest import has, labcore, privileged

pytestmark = privileged


@pytest.fixture(params=["in-process", "labd"])
def where(request, busybox_image, monkeypatch):
    """Each scenario twice: the engine called by the CLI itself, then labd reached through LABCORE_HOST."""
    if request.param == "in-process":
        monkeypatch.delenv("LABCORE_HOST", raising=False)
        yield request.param
        return
    socket = f"/tmp/labcore-test-{os.getpid()}-{time.monotonic_ns()}.sock"     # unix(7): at most 108 bytes
    with Labd(socket):
        monkeypatch.setenv("LABCORE_HOST", f"unix://{socket}")
        yield request.param


def pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def test_detached_container_through_its_whole_life(where):
    started = labcore("run", "-d", "--name", "labcore-web", "busybox", "sh", "-c", "echo ready; exec sleep 60")
    box = started.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", box)
    try:
        listed = labcore("ps").stdout.splitlines()
        assert listed[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
        assert box[:12] in listed[1] and "Up " in listed[1] and listed[1].endswith("labcore-web")
        assert labcore("ps", "-q").stdout.split() == [box[:12]]
        deadline = time.monotonic() + 5
        while labcore("logs", "labcore-web").stdout != "ready\n" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert labcore("logs", "labcore-web").stdout == "ready\n"

        import json
        pid = json.loads(labcore("inspect", "labcore-web").stdout)[0]["State"]["Pid"]
        assert pid_alive(pid)
        # The exec joins pid 1's namespaces: it sees pid 1 as `sleep` and the container's hostname.
        assert labcore("exec", "labcore-web", "sh", "-c", "cat /proc/1/comm; hostname").stdout == \
            f"sleep\n{box[:12]}\n"
        assert labcore("exec", "labcore-web", "sh", "-c", "exit 3", check=False).returncode == 3

        refused = labcore("rm", "labcore-web", check=False)
        assert refused.returncode == 1
        assert refused.stderr.startswith("Error response from daemon: You cannot remove a running container")
        assert "Stop the container before attempting removal or force remove" in refused.stderr

        # pid 1 is `sleep`, which has no SIGTERM handler: stop waits -t 1 s, then SIGKILLs it.
        assert labcore("stop", "-t", "1", "labcore-web").stdout == "labcore-web\n"
        assert not pid_alive(pid)
        assert "Exited (137)" in labcore("ps", "-a").stdout
        assert labcore("wait", "labcore-web").stdout == "137\n"
    finally:
        labcore("rm", "-f", box, check=False)
    assert labcore("ps", "-a", "-q").stdout.split() == []
    assert not list(paths.containers_dir().iterdir())


def test_attached_run_and_kill_and_start(where):
    done = labcore("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 5", check=False)
    assert (done.returncode, done.stdout, done.stderr) == (5, "out\n", "err\n")
    box = labcore("create", "--name", "labcore-c", "busybox", "sleep", "60").stdout.strip()
    try:
        assert "Created" in labcore("ps", "-a").stdout
        assert labcore("start", "labcore-c").stdout == "labcore-c\n"
        assert labcore("kill", "-s", "KILL", "labcore-c").stdout == "labcore-c\n"
        assert labcore("wait", box).stdout == "137\n"
        again = labcore("kill", "labcore-c", check=False)
        assert again.returncode == 1 and "is not running" in again.stderr
    finally:
        labcore("rm", "-f", box, check=False)
    assert not list(paths.containers_dir().iterdir())


def test_an_unknown_container_is_named_and_exits_1(where):
    for verb in ("logs", "rm", "stop", "inspect", "exec"):
        argv = [verb, "nosuch"] + (["true"] if verb == "exec" else [])
        missing = labcore(*argv, check=False)
        assert missing.returncode == 1
        assert "Error: No such container: nosuch" in missing.stderr


@pytest.mark.skipif(not (has("docker-registry") and has("skopeo")), reason="needs docker-registry and skopeo")
def test_pull_shows_dockers_progress_lines_and_the_image_is_then_local(where, tmp_path):
    from labcore.image.baseimage import ensure_base_image
    from labcore.image.oci import Store
    from labcore.lessons.localregistry import LocalRegistry
    source = Store(tmp_path / "labcore-source")
    ensure_base_image(source)
    with LocalRegistry() as registry:
        reference = f"{registry.address}/lab/hello:v1"
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                        f"oci:{source.root}:latest", f"docker://{reference}"], check=True, capture_output=True)
        lines = labcore("pull", reference).stdout.splitlines()
    try:
        assert lines[0] == "v1: Pulling from lab/hello"
        assert any(re.fullmatch(r"[0-9a-f]{12}: Pull complete", line) for line in lines)
        assert not any("[=" in line for line in lines)          # not a terminal: no progress bars
        assert lines[-2].startswith("Digest: sha256:")
        assert lines[-1] == f"Status: Downloaded newer image for {reference}"
        assert labcore("run", "--rm", reference, "echo", "pulled").stdout == "pulled\n"
    finally:
        labcore("rmi", reference)               # the image store is shared by the whole test session
