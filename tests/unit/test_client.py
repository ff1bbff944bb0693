"""labcore.api.client against canned bytes: HTTP chunks, Docker's log frames, the 101 hijack, errors."""
import io
import json

import pytest

from labcore.api import client, wire
from labcore.api.schema import FRAME
from labcore.errors import BadInput, InvalidTransition, LabError, NotFound


def response(raw: bytes) -> wire.Answer:
    """An answer read from fixed bytes, as from the socket's buffered reader."""
    return wire.Answer(io.BufferedReader(io.BytesIO(raw)))


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def frame(stream: int, data: bytes) -> bytes:
    return FRAME.pack(stream, len(data)) + data


def test_frames_split_across_http_chunks_come_out_whole():
    body = frame(1, b"hello\n") + frame(2, b"oops\n") + frame(1, b"")
    raw = (b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body[:3], body[3:11], body[11:]))
    assert list(client.read_frames(response(raw).read)) == [(1, b"hello\n"), (2, b"oops\n"), (1, b"")]


def test_a_truncated_frame_ends_the_stream_without_inventing_bytes():
    body = frame(1, b"whole") + frame(2, b"cut short")[:10]
    assert list(client.read_frames(io.BytesIO(body).read)) == [(1, b"whole"), (2, b"cu")]


def test_after_a_101_the_socket_carries_raw_frames_not_chunks():
    raw = (b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
           b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n" + frame(1, b"box1\n") + frame(2, b"err\n"))
    hijacked = response(raw)
    assert hijacked.status == 101
    assert list(client.read_frames(hijacked.fp.read)) == [(1, b"box1\n"), (2, b"err\n")]


def test_pull_progress_is_one_json_object_a_line_and_an_error_line_raises():
    events = [{"status": "Pulling fs layer", "id": "abc123def456"}, {"status": "Digest: sha256:00"}]
    lines = (json.dumps(e).encode() + b"\r\n" for e in events)
    assert list(client.json_lines(lines)) == events
    failing = [b'{"status": "Pulling"}\r\n', b'{"errorDetail": {"message": "no"}, "error": "no such tag"}\r\n']
    with pytest.raises(LabError, match="no such tag"):
        list(client.json_lines(iter(failing)))


@pytest.mark.parametrize("status, cls", [(404, NotFound), (409, InvalidTransition), (400, BadInput),
                                         (500, LabError)])
def test_dockers_error_statuses_become_the_engines_exceptions(status, cls):
    error = client.error_for(status, b'{"message": "No such container: web"}')
    assert type(error) is cls and error.message == "No such container: web"


def test_an_error_body_that_is_not_json_is_kept_as_text():
    assert client.error_for(502, b"bad gateway\n").message == "bad gateway"


def test_for_each_words_errors_as_docker_does_goes_on_and_exits_1(capsys):
    def action(ref):
        if ref == "running":
            raise InvalidTransition("cannot remove container running: container is running")
        if ref == "nosuch":
            raise NotFound("No such container: nosuch")
    assert client.for_each(["a", "running", "nosuch", "c"], action) == 1
    out, err = capsys.readouterr()
    assert out == "a\nc\n"
    assert err.splitlines() == ["Error response from daemon: cannot remove container running: "
                                "container is running",
                                "Error: No such container: nosuch"]


def test_host_comes_from_the_option_then_the_environment(monkeypatch):
    class Args:
        host = None
    monkeypatch.delenv("LABCORE_HOST", raising=False)
    assert client.host_of(Args()) is None
    monkeypatch.setenv("LABCORE_HOST", "unix:///tmp/labcore-x.sock")
    assert isinstance(client.connect(Args()), client.Remote)
    Args.host = "unix:///tmp/labcore-y.sock"
    assert client.connect(Args()).host == "unix:///tmp/labcore-y.sock"
    with pytest.raises(BadInput, match="unix:///path"):
        client.Remote("ssh://example")


def test_a_daemon_that_is_not_there_is_named_with_the_fix(tmp_path):
    with pytest.raises(LabError, match="is labd running"):
        client.Remote(f"unix://{tmp_path}/labcore-none.sock").containers()


def test_run_flags_become_dockers_container_config():
    from labcore.runtime.container import Spec
    spec = Spec(image="busybox", cmd=["sh", "-c", "true"], env=["A=1"], workdir="/tmp", user="1000",
                tty=True, rm=True, limits={"memory": "64m", "cpus": "0.5", "pids_limit": "10"})
    body = client.body_from_spec(spec)
    assert (body["Image"], body["Cmd"], body["Env"], body["WorkingDir"], body["User"], body["Tty"]) == \
        ("busybox", ["sh", "-c", "true"], ["A=1"], "/tmp", "1000", True)
    host = body["HostConfig"]
    assert (host["AutoRemove"], host["Memory"], host["NanoCpus"], host["PidsLimit"]) == \
        (True, 64 * 1024 * 1024, 500_000_000, 10)
    assert client.port_bindings(["127.0.0.1:8080:80", "53"]) == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
        "53/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert client.body_from_spec(Spec(image="busybox", limits={"device_cgroup_rule": ["c 1:3 rwm"]}))[
        "HostConfig"]["DeviceCgroupRules"] == ["c 1:3 rwm"]


def test_what_the_client_sends_labd_reads_back_as_the_same_spec():
    from labcore.api.routes import spec_from_body
    from labcore.runtime.container import Spec
    spec = Spec(image="busybox", cmd=["echo", "hi"], env=["A=1"], workdir="/tmp", hostname="box1", tty=True,
                name="web", network="bridge", publish=["127.0.0.1:8080:80/tcp"], group_add=["1000"],
                tmpfs=["/run:size=1m"], limits={"pids_limit": "10", "memory": "64m", "memory_swap": "128m",
                                                "device_cgroup_rule": ["c 1:3 rwm"]})
    again, asked = spec_from_body(client.body_from_spec(spec), spec.name)
    for field in ("image", "cmd", "entrypoint", "env", "workdir", "hostname", "tty", "name", "network", "publish",
                  "group_add", "tmpfs", "init", "pid", "uts"):
        assert getattr(again, field) == getattr(spec, field), field
    assert again.limits == {"pids_limit": "10", "memory": str(64 << 20), "memory_swap": str(128 << 20),
                            "device_cgroup_rule": ["c 1:3 rwm"]}
    assert asked["HostConfig"]["GroupAdd"] == ["1000"]        # kept as sent, for inspect


@pytest.mark.parametrize("reference, expected", [
    ("busybox", ("busybox", "")), ("busybox:v1", ("busybox", "v1")),
    ("localhost:5000/lab/hello", ("localhost:5000/lab/hello", "")),
    ("localhost:5000/lab/hello:v1", ("localhost:5000/lab/hello", "v1"))])
def test_a_reference_becomes_the_apis_repo_and_tag(reference, expected):
    assert client.split_tag(reference) == expected


def test_a_build_context_travels_as_a_tar_with_a_labfile_from_outside(tmp_path):
    import tarfile
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello").write_text("hi\n")
    (context / "Labfile").write_text("FROM busybox\n")
    (tmp_path / "Other").write_text("FROM busybox\nCOPY hello /\n")
    with open(tmp_path / "a.tar", "w+b") as out:
        assert client.context_tar(str(context), None, out) == "Labfile"
        assert {"./hello", "./Labfile"} <= set(tarfile.open(fileobj=out).getnames())
    with open(tmp_path / "b.tar", "w+b") as out:
        assert client.context_tar(str(context), str(tmp_path / "Other"), out) == ".labcore-labfile"
        with tarfile.open(fileobj=out) as tar:
            assert tar.extractfile(".labcore-labfile").read() == b"FROM busybox\nCOPY hello /\n"
