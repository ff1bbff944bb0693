"""The `docker run` flow against a real labd and a real docker-registry: the evidence each step returns."""
import os
import re
import shutil

import pytest

from labcore.kernel.journal import process_start_time
from labcore.lessons import client_server, run_flow
from tests.conftest import has, privileged

pytest.importorskip("docker", reason="the stage's client() is the docker SDK: pip install docker")
pytestmark = [privileged, pytest.mark.skipif(not has("docker-registry"), reason="needs docker-registry")]


@pytest.fixture
def stage(busybox_image):
    with run_flow.setup() as stage:
        yield stage


def test_the_flow_shows_404_then_the_pull_then_pid_1_in_new_namespaces_then_exit_0(stage):
    connect, lookup, pull, create, start, output, exit_ = run_flow.run_all(stage)
    assert connect.data["status"] == 200 and connect.data["pid"] == stage.labd.process.pid
    assert (lookup.data["status"], lookup.data["message"]) == (404, f"No such image: {stage.reference}")
    assert lookup.exchanges[0].request.startswith(f"GET /v1.45/images/{stage.reference}/json HTTP/1.1".encode())
    assert pull.data["status"] == 200 and pull.data["errors"] == []
    assert {"Pulling fs layer", "Downloading", "Download complete", "Pull complete"} <= set(pull.data["statuses"])
    assert pull.data["events"][-1]["status"] == f"Status: Downloaded newer image for {stage.reference}"
    assert stage.reference in pull.after["images in labd's store"]
    assert create.data["status"] == 201 and create.after["state"] == "created"
    assert start.data["status"] == 204 and start.data["pid inside"] == "1"
    assert start.data["new namespaces"] == list(run_flow.KINDS)          # every inode differs from the host's
    assert start.data["inside"]["cgroup"].endswith(stage.container_id)
    assert (output.data["status"], output.data["stdout"]) == (200, "hi\n")
    assert output.exchanges[0].body == b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
    assert (exit_.data["status"], exit_.data["exit_code"], exit_.data["remove_status"]) == (200, 0, 204)
    assert not os.path.exists(f"/proc/{start.data['pid']}")


def test_an_image_the_registry_lacks_is_its_404_then_the_daemons_then_the_clients_error(stage):
    missing = run_flow.missing_image(stage)
    assert (missing.data["registry_status"], missing.data["registry_error"]) == (404, "MANIFEST_UNKNOWN: "
                                                                                      "manifest unknown")
    assert missing.data["status"] == 404 and "manifest unknown" in missing.data["answer"]
    assert b"Transfer-Encoding" not in missing.exchanges[1].response      # refused before any stream began
    assert missing.after["images in labd's store"] == "none"
    if shutil.which("docker"):
        assert missing.data["cli_exit_code"] == 125
        assert "docker: Error response from daemon: manifest unknown" in missing.data["cli_stderr"]
        assert missing.after["docker run: requests"][-1].endswith("&tag=missing → 404")


def test_the_stepper_forgets_the_image_so_the_flow_pulls_again(stage):
    run_flow.run_all(stage)
    stepper = run_flow.stepper(stage)
    stepper.run_all()
    forget, _, lookup, pull = (stepper.results[index] for index in range(4))
    assert forget.data["status"] == 200 and forget.after["images in labd's store"] == "none"
    assert lookup.data["status"] == 404 and pull.data["errors"] == []
    assert stepper.results[7].data["exit_code"] == 0


@pytest.mark.skipif(not shutil.which("docker"), reason="needs the docker CLI (docker.io)")
def test_the_docker_cli_runs_against_labd_with_its_exit_codes(stage):
    pulled_by_cli = run_flow.run_with_docker_cli(stage, "echo", "hi")
    assert (pulled_by_cli.data["stdout"], pulled_by_cli.data["exit_code"]) == ("hi\n", 0)
    assert "Pull complete" in pulled_by_cli.data["stderr"]          # not local: the CLI pulled through labd
    sent = [re.sub(r"\?\S*", "", line) for line in pulled_by_cli.data["requests"]]     # queries dropped
    assert sent[:4] == ["HEAD /_ping → 200", "POST /v1.45/containers/create → 404",
                        "POST /v1.45/images/create → 200", "POST /v1.45/containers/create → 201"]
    assert [line.rsplit("/", 1)[1] for line in sent[4:]] == ["attach → 101", "wait → 200", "start → 204"]
    assert run_flow.run_with_docker_cli(stage, "sh", "-c", "echo err >&2; exit 42").data["exit_code"] == 42


def test_the_socket_is_0660_root_and_refuses_nobody(stage):
    permissions = client_server.socket_permissions(stage)
    assert permissions.data["mode"] == "srw-rw---- (0660)" and permissions.data["owner"] == "root:root"
    assert permissions.data["connect_as_you"] == "connected"
    assert permissions.data["connect_as_another_user"].startswith("EACCES")         # nobody, uid 65534
    labd = client_server.daemon_process(stage)
    assert labd.data["pid"] == stage.labd.process.pid and labd.data["parent"] == os.getpid()


def test_a_connection_is_two_sockets_one_in_each_process(stage):
    seen = client_server.connection_seen_from_proc(stage)
    client, daemon = seen.data["client"], seen.data["daemon"]
    assert client["pid"] == os.getpid() and client["fd"] >= 0 and daemon["pid"] == stage.labd.process.pid
    assert daemon["accepted"]["inode"] not in (client["inode"], daemon["listening_inode"])   # three sockets
    assert f"fd {client['fd']}" in seen.data["dot"] and f"fd {daemon['accepted']['fd']}" in seen.data["dot"]


def test_a_client_of_the_socket_reads_a_root_only_host_file(stage):
    shadow = client_server.read_host_file(stage)
    assert shadow.before["open() as nobody (uid 65534)"].startswith("EACCES")
    assert shadow.data["first_user"] == "root"


def test_two_containers_of_one_daemon_both_listen_on_port_80(stage):
    ports = client_server.two_containers_on_port_80(stage)
    assert ports.data["listening"] == [["*:80"], ["*:80"]] and ports.data["distinct_net_ns"]
    assert ports.data["answers"] == ["box-a", "box-b"]


def test_one_daemon_answers_alike_on_its_socket_and_on_tcp_where_nobody_gets_in_too(stage):
    tcp = client_server.daemon_on_tcp(stage)
    assert tcp.data["same"] and tcp.data["same process"]
    assert tcp.data["unix"][0] == tcp.data["tcp"][0] == "HTTP/1.1 200 OK"
    assert "without --tlsverify is insecure" in tcp.data["warnings"][0]
    assert tcp.data["nobody (uid 65534), unix"].startswith("EACCES")
    assert tcp.data["nobody (uid 65534), tcp"] == "connected; HTTP/1.1 200 OK, OK"
    assert not any(line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == tcp.data["port"]
                   for line in open("/proc/net/tcp").read().splitlines()[1:])      # the port is closed again


def test_closing_the_stage_leaves_no_daemon_registry_socket_or_directory(busybox_image):
    with run_flow.setup() as stage:
        stage.client().containers.run("busybox", "sleep 60", network_mode="none", detach=True)  # for close()
        pids = [stage.labd.process.pid, stage.registry.process.pid]
        made = [stage.home, stage.labd.socket]
    assert all(process_start_time(pid) is None for pid in pids)
    assert not any(os.path.lexists(path) for path in made)
