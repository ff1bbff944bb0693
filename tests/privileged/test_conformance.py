"""The same scenarios through the docker SDK against labd and against the real Docker engine (dockerd), which
must agree: exit codes, output, hostname, pid 1, the OOM kill, environment, working directory, the image list.

Each test runs once per engine, so the report reads `test_...[labd]` next to `test_...[dockerd]`. dockerd runs
with --bridge=none, so every container here uses network_mode="none" on both engines."""
import os
import re
import time

import pytest

from tests.conftest import dockerd_with_busybox, privileged

docker = pytest.importorskip("docker", reason="the docker SDK is the client under test: pip install docker")
pytestmark = privileged
ENGINES = ["labd", "dockerd"]


@pytest.fixture(scope="module", params=ENGINES)
def client(request, engines_home):
    from labcore.image.baseimage import ensure_base_image
    ensure_base_image()
    if request.param == "labd":
        from labcore.api.labd import Labd
        with Labd(f"/run/labcore-conformance-{os.getpid()}.sock") as labd:
            yield labd.client()
        return
    with dockerd_with_busybox() as dockerd:
        yield dockerd.client()


def run(client, command, **options) -> bytes:
    return client.containers.run("busybox", command, network_mode="none", remove=True, **options)


def test_exit_code_0_and_42(client):
    assert run(client, "true") == b""
    with pytest.raises(docker.errors.ContainerError) as failed:
        run(client, ["sh", "-c", "exit 42"])
    assert failed.value.exit_status == 42


def test_stdout(client):
    assert run(client, ["echo", "hi"]) == b"hi\n"


def test_hostname(client):
    assert run(client, "hostname", hostname="box1") == b"box1\n"


def test_the_command_is_pid_1(client):
    assert run(client, ["sh", "-c", "echo $$"]) == b"1\n"


def test_memory_limit_kills_with_137_and_reports_oom(client):
    box = client.containers.run("busybox", "dd if=/dev/zero of=/dev/null bs=100M count=1", mem_limit="32m",
                                memswap_limit="32m", network_mode="none", detach=True)
    try:
        assert box.wait(timeout=60)["StatusCode"] == 137
        box.reload()
        assert box.attrs["State"]["OOMKilled"] is True
    finally:
        box.remove(force=True)


def test_environment_from_run_and_from_the_image(client):
    out = run(client, ["sh", "-c", "echo $GREETING; echo $PATH"], environment={"GREETING": "hello"})
    assert out == b"hello\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"


def test_working_directory(client):
    assert run(client, "pwd") == b"/\n"
    assert run(client, "pwd", working_dir="/tmp") == b"/tmp\n"


def test_image_list_fields(client, busybox_image):
    images = [image for image in client.images.list() if "busybox:latest" in image.tags]
    assert len(images) == 1
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", images[0].id)
    assert images[0].id == busybox_image.id                  # the same config bytes: the same IMAGE ID
    # Other tests of the session may have pulled the same image under another name into the shared store.
    assert "busybox:latest" in images[0].attrs["RepoTags"]
    assert all(re.fullmatch(r"[^:@\s]+(:\d+/[^:@\s]+)?:[\w.-]+", tag) for tag in images[0].attrs["RepoTags"])


def test_a_detached_container_is_listed_then_removed(client):
    box = client.containers.run("busybox", "sleep 60", network_mode="none", detach=True, name="labcore-conf")
    try:
        assert [c.name for c in client.containers.list()] == ["labcore-conf"]
        box.kill()
        assert box.wait(timeout=30)["StatusCode"] == 137
    finally:
        box.remove(force=True)
    deadline = time.monotonic() + 10
    while client.containers.list(all=True) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.containers.list(all=True) == []
