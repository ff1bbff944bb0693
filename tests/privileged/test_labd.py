"""labd answered by the official docker SDK: the `docker run` flow, the lifecycle, errors, load, restarts."""
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import time

import pytest

from labcore import paths
from labcore.api.labd import Labd
from tests.conftest import has, privileged

docker = pytest.importorskip("docker", reason="the docker SDK is the client under test: pip install docker")
pytestmark = privileged


def short_socket() -> str:
    """A Unix socket path must fit in 108 bytes (unix(7)); pytest's tmp paths can be longer."""
    return f"/tmp/labcore-test-{os.getpid()}-{time.monotonic_ns()}.sock"


@pytest.fixture
def labd(busybox_image):
    with Labd(short_socket()) as daemon:
        yield daemon


def test_run_returns_the_output(labd):
    assert labd.client().containers.run("busybox", "echo hi", remove=True) == b"hi\n"


def test_pid_1_hostname_env_and_workdir_as_docker_sets_them(labd):
    script = 'echo $$; hostname; echo $GREETING; pwd'
    out = labd.client().containers.run("busybox", ["sh", "-c", script], hostname="box1",
                                       environment={"GREETING": "hello"}, working_dir="/tmp", remove=True)
    assert out == b"1\nbox1\nhello\n/tmp\n"


def test_nonzero_exit_raises_container_error_with_the_code(labd):
    with pytest.raises(docker.errors.ContainerError) as failed:
        labd.client().containers.run("busybox", "sh -c 'exit 42'", remove=True)
    assert failed.value.exit_status == 42


def test_detached_logs_exec_kill_and_remove(labd):
    client = labd.client()
    box = client.containers.run("busybox", "sh -c 'echo ready; exec sleep 60'", detach=True, name="labcore-t")
    assert [c.name for c in client.containers.list()] == ["labcore-t"]
    assert box.exec_run("hostname").output.decode().strip() == box.id[:12]
    assert box.exec_run("ls /nope").exit_code == 1
    box.kill()
    assert box.wait()["StatusCode"] == 137
    assert box.logs() == b"ready\n"
    box.remove()
    assert client.containers.list(all=True) == []


def test_memory_limit_oom_kill_is_reported(labd):
    box = labd.client().containers.run("busybox", "dd if=/dev/zero of=/dev/null bs=100M count=1",
                                       mem_limit="32m", detach=True)
    assert box.wait()["StatusCode"] == 137
    box.reload()
    assert box.attrs["State"]["OOMKilled"] is True
    box.remove()


def test_errors_in_dockers_shape_and_the_daemon_keeps_serving(labd):
    client = labd.client()
    with pytest.raises(docker.errors.ImageNotFound, match="No such image: nosuch:latest"):
        client.containers.create("nosuch", "true")
    with pytest.raises(docker.errors.NotFound, match="No such container: nope"):
        client.containers.get("nope")
    bad = client.api._post(client.api._url("/containers/create"), data="{not json",
                           headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "invalid JSON" in bad.json()["message"]
    running = client.containers.run("busybox", "sleep 60", detach=True)
    with pytest.raises(docker.errors.APIError) as conflict:
        running.remove()
    assert conflict.value.status_code == 409
    running.remove(force=True)
    assert client.ping()


def test_twenty_concurrent_runs_complete_and_leave_nothing(labd):
    # A client per thread: docker-py's Unix adapter keeps one connection pool per URL, at most 25 of them (its
    # num_pools argument is ignored for a Unix socket: docker/api/client.py), and closes the least recently
    # used even while another thread reads from it (docker/transport/unixconn.py): 20 containers' URLs at once
    # outgrow it, and a request fails in the client ("'NoneType' object has no attribute 'qsize'").
    def run(i):
        with contextlib.closing(labd.client()) as client:
            return client.containers.run("busybox", f"echo {i}", remove=True)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        outputs = list(pool.map(run, range(20)))
    assert sorted(int(out) for out in outputs) == list(range(20))
    assert labd.client().containers.list(all=True) == []
    assert not list(paths.containers_dir().iterdir())


def test_killing_the_daemon_loses_no_container(busybox_image):
    socket = short_socket()
    with Labd(socket) as first:
        box = first.client().containers.run("busybox", "sleep 60", detach=True)
        os.kill(first.process.pid, signal.SIGKILL)
    with Labd(socket) as second:
        again = second.client().containers.get(box.id)
        assert again.status == "running"
        again.kill()
        assert again.wait()["StatusCode"] == 137
        again.remove()


@pytest.mark.skipif(not (has("docker-registry") and has("skopeo")), reason="needs docker-registry and skopeo")
def test_an_image_absent_locally_is_pulled_from_the_registry_during_run(labd, tmp_path):
    from labcore.image.baseimage import ensure_base_image
    from labcore.image.oci import Store
    from labcore.lessons.localregistry import LocalRegistry
    source = Store(tmp_path / "labcore-source")
    ensure_base_image(source)
    with LocalRegistry() as registry:
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                        f"oci:{source.root}:latest", f"docker://{registry.address}/lab/hello:v1"],
                       check=True, capture_output=True)
        client = labd.client()
        reference = f"{registry.address}/lab/hello:v1"
        assert reference not in [tag for image in client.images.list() for tag in image.tags]
        try:
            assert client.containers.run(reference, "echo pulled", remove=True) == b"pulled\n"
            assert reference in [tag for image in client.images.list() for tag in image.tags]
        finally:
            Store().untag(f"{registry.address}/lab/hello", "v1")    # the image store is shared by the session
