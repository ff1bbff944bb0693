"""`labcore run` parses as `docker run` does, and refuses bad input with exit code 125, creating nothing."""
import pytest

from labcore import paths
from labcore.cli import VERBS, build_parser, main
from labcore.cli.run import spec_from_args


def parse(*argv):
    return spec_from_args(build_parser({"run": VERBS["run"]}).parse_args(["run", *argv]))


def test_options_image_and_command():
    spec = parse("--rm", "--hostname", "box1", "-e", "A=1", "-e", "B", "-w", "/tmp", "-u", "1000:100",
                 "--name", "web", "-it", "busybox", "sh", "-c", "exit 42")
    assert (spec.image, spec.cmd) == ("busybox", ["sh", "-c", "exit 42"])
    assert spec.rm and spec.tty and spec.interactive
    assert (spec.hostname, spec.env, spec.workdir, spec.user, spec.name) == ("box1", ["A=1", "B"], "/tmp",
                                                                            "1000:100", "web")


def test_flags_after_the_image_belong_to_the_command():
    spec = parse("busybox", "ls", "--rm", "-l")
    assert spec.cmd == ["ls", "--rm", "-l"] and not spec.rm


def test_no_command_means_the_images():
    spec = parse("busybox")
    assert spec.cmd is None and spec.entrypoint is None


@pytest.mark.parametrize("value, entrypoint", [("echo", ["echo"]), ("", []), ("sh -c", ["sh -c"])])
def test_entrypoint_is_one_executable_and_empty_clears_it(value, entrypoint):
    assert parse("--entrypoint", value, "busybox").entrypoint == entrypoint


@pytest.mark.parametrize("argv, message", [
    (["--user", "a b", "busybox", "id"], "--user NAME|UID[:GROUP|GID]"),
    (["--cap-add", "FLY", "busybox", "id"], "unknown capability: 'FLY' (--cap-add)"),
    (["--security-opt", "label=disable", "busybox", "id"], "seccomp=unconfined, seccomp=PROFILE.json"),
    (["-e", "=x", "busybox", "id"], "use -e NAME=VALUE"),
    (["nosuch", "id"], "No such image: nosuch"),
])
def test_bad_input_exits_125_naming_what_is_accepted_and_creates_nothing(argv, message, capsys):
    assert main(["run", *argv]) == 125
    assert message in capsys.readouterr().err
    assert not paths.containers_dir().exists()


def test_limit_flags_become_the_specs_limits_in_dockers_syntax():
    from labcore.cli import build_parser, VERBS
    from labcore.cli.run import spec_from_args
    args = build_parser({"run": VERBS["run"]}).parse_args(
        ["run", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "10", "busybox", "true"])
    assert spec_from_args(args).limits == {"memory": "64m", "cpus": "0.5", "pids_limit": "10"}


@pytest.mark.parametrize("flag,value,accepted", [("--memory", "10XB", "64m"), ("--cpus", "-1", "0.5"),
                                                  ("--pids-limit", "ten", "-1")])
def test_bad_limits_are_refused_before_anything_exists(flag, value, accepted, labcore_home):
    from labcore.errors import BadInput
    from labcore.runtime import container
    with pytest.raises(BadInput) as refused:
        container.plan_for(container.Spec("busybox", ["true"], limits={flag[2:].replace("-", "_"): value}))
    assert accepted in str(refused.value)
    assert not (labcore_home / "containers").exists()


# --- a thin client where this user's labd answers ---------------------------------------------------------------

@pytest.mark.parametrize("argv, through", [
    (("busybox", "true"), True), (("-e", "A=1", "busybox"), True), (("-e", "A", "busybox"), False),
    (("-i", "busybox"), False), (("-t", "busybox"), False), (("-v", "./d:/d", "busybox"), False)])
def test_only_a_run_whose_meaning_is_in_its_flags_goes_to_the_daemon(argv, through):
    from labcore.cli.run import self_contained
    assert self_contained(parse(*argv)) is through


def test_the_daemon_is_used_only_while_its_socket_answers(tmp_path, monkeypatch):
    import socket
    from labcore.api import client
    monkeypatch.setenv("LABCORE_HOME", str(tmp_path))
    assert client.local_daemon() is None                      # no socket
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(tmp_path / "labd.sock"))
    listening.listen()
    assert client.local_daemon() == f"unix://{tmp_path / 'labd.sock'}"
    listening.close()                                         # the file stays, as a killed labd leaves it
    assert (tmp_path / "labd.sock").is_socket() and client.local_daemon() is None
