"""labd under generated requests (hypothesis): any body or query is a 4xx or a success, never a 500, and after
each the daemon still answers /_ping and `docker ps -a` (GET /containers/json?all=1) still works."""
import contextlib
import json
import os
import subprocess
import sys

import pytest

from labcore.api.labd import Labd
from tests.conftest import privileged

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz test generates requests with hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

pytestmark = privileged
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | \
    st.text(max_size=12) | st.sampled_from(["busybox", "/", "/tmp:/x", "host", "none", "-1", "ctrl-p"])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                          inner, max_size=4),
                      max_leaves=12)
HOST_FIELDS = ["Binds", "Memory", "NanoCpus", "CpuShares", "PidsLimit", "PortBindings", "RestartPolicy", "LogConfig",
               "Tmpfs", "Mounts", "GroupAdd", "Links", "VolumesFrom", "PidMode", "UTSMode", "Init", "AutoRemove",
               "Privileged", "CapAdd", "CpusetCpus", "MemorySwappiness", "ConsoleSize", "NetworkMode"]
CONFIG_FIELDS = ["Image", "Cmd", "Entrypoint", "Env", "User", "WorkingDir", "Hostname", "Tty", "OpenStdin",
                 "Volumes", "Labels", "StopSignal", "StopTimeout", "ExposedPorts"]


def body_of(fields: list[str]):
    return st.dictionaries(st.sampled_from(fields), values, max_size=5)


create_bodies = st.one_of(
    values,                                                     # not even an object
    body_of(CONFIG_FIELDS),
    st.builds(lambda config, host: {"Image": "busybox", "Cmd": ["true"], **config, "HostConfig": host},
              body_of(CONFIG_FIELDS[1:]), body_of(HOST_FIELDS)),
)
exec_bodies = values | st.builds(lambda extra: {"Cmd": ["true"], **extra},
                                 body_of(["Cmd", "Env", "User", "WorkingDir", "Tty", "AttachStdin", "DetachKeys",
                                          "Privileged"]))
queries = st.dictionaries(st.sampled_from(["signal", "tail", "since", "until", "follow", "stdout", "stderr",
                                           "timestamps", "t", "all", "filters", "limit"]),
                          st.text(max_size=10) | st.sampled_from(["0", "1", "-1", "99999", "KILL", "abc", "1e9"]),
                          max_size=4)


@pytest.fixture(scope="module")
def labd(tmp_path_factory, shared_images):
    home = tmp_path_factory.mktemp("labcore-fuzz")
    os.symlink(shared_images, home / "images")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LABCORE_HOME", str(home))
        from labcore.image.baseimage import ensure_base_image
        ensure_base_image()
        with Labd(f"/tmp/labcore-fuzz-{os.getpid()}.sock") as daemon:
            yield daemon
            for record in daemon.client().api.containers(all=True):
                daemon.client().api.remove_container(record["Id"], force=True)


def call(labd, method: str, path: str, body=None, raw: bytes | None = None, query: dict | None = None):
    from urllib.parse import urlencode
    from tests.unixhttp import unix_connection
    connection = unix_connection(labd.socket)
    data = raw if raw is not None else json.dumps(body).encode()
    try:
        connection.request(method, "/v1.41" + path + ("?" + urlencode(query) if query else ""), body=data,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def still_serving(labd) -> None:
    assert call(labd, "GET", "/_ping", raw=b"")[0] == 200
    status, listing = call(labd, "GET", "/containers/json", raw=b"", query={"all": "1"})
    assert status == 200 and isinstance(json.loads(listing), list)


@contextlib.contextmanager
def running(labd):
    """A running container for the example, force-removed after it."""
    status, data = call(labd, "POST", "/containers/create", {"Image": "busybox", "Cmd": ["sleep", "600"],
                                                             "HostConfig": {"NetworkMode": "none"}})
    container = json.loads(data)["Id"]
    assert call(labd, "POST", f"/containers/{container}/start", raw=b"")[0] == 204
    try:
        yield container
    finally:
        call(labd, "DELETE", f"/containers/{container}", raw=b"", query={"force": "1"})
    still_serving(labd)


@SETTINGS
@given(body=create_bodies, raw=st.none() | st.binary(max_size=64))
def test_create_never_answers_500(labd, body, raw):
    status, data = call(labd, "POST", "/containers/create", body, raw=raw)
    assert status < 500, (body, raw, data)
    if status == 201:
        assert call(labd, "DELETE", f"/containers/{json.loads(data)['Id']}", raw=b"", query={"force": "1"})[0] < 500
    still_serving(labd)


@SETTINGS
@given(body=exec_bodies)
def test_exec_create_never_answers_500(labd, body):
    with running(labd) as container:
        status, data = call(labd, "POST", f"/containers/{container}/exec", body)
        assert status < 500, (body, data)
        if status == 201:
            exec_id = json.loads(data)["Id"]
            assert call(labd, "GET", f"/exec/{exec_id}/json", raw=b"")[0] == 200


@SETTINGS
@given(query=queries)
def test_kill_and_logs_never_answer_500(labd, query):
    with running(labd) as container:
        for method, path in (("GET", "logs"), ("POST", "kill")):
            status, data = call(labd, method, f"/containers/{container}/{path}", raw=b"",
                                query={k: v for k, v in query.items() if k != "follow"})
            assert status < 500, (path, query, data)


def test_ps_a_through_the_cli_after_the_fuzzing(labd):
    done = subprocess.run([sys.executable, "-m", "labcore", "-H", f"unix://{labd.socket}", "ps", "-a"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split()[:2] == ["CONTAINER", "ID"]


def test_the_malformed_requests_of_issue_16_are_each_a_4xx(labd):
    with running(labd) as container:
        bodies = [b"[]", b'"x"', b"null", b'{"Image": 123}', b'{"Image": "busybox", "Cmd": 123}',
                  b'{"Image": "busybox", "Env": [1]}', b'{"Image": "busybox", "HostConfig": {"NanoCpus": "x"}}',
                  b'{"Image": "busybox", "Cmd": [1, 2]}', b"[" * 100_000 + b"]" * 100_000]
        for body in bodies:
            status, data = call(labd, "POST", "/containers/create", raw=body)
            assert 400 <= status < 500, (body[:40], data)
            still_serving(labd)
        for method, path, query in (("POST", "stop", {"t": "abc"}), ("POST", "kill", {"signal": "99999"}),
                                    ("GET", "logs", {"stdout": "1", "tail": "x"}), ("POST", "wait", {"condition": "x"})):
            status, data = call(labd, method, f"/containers/{container}/{path}", raw=b"", query=query)
            assert 400 <= status < 500, (path, query, data)
        for version in ("/v9.99", "/v1.0"):
            from tests.unixhttp import unix_connection
            connection = unix_connection(labd.socket)
            connection.request("GET", f"{version}/_ping")
            assert connection.getresponse().status == 400
            connection.close()
