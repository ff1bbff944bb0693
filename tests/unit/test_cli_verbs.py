"""The lifecycle verbs parse as `docker`'s do, and `labcore ps` lays out Docker's columns and words."""
import time

import pytest

from labcore.api import routes
from labcore.cli import VERBS, build_parser, main, verb_in
from labcore.cli import ps, pull
from labcore.runtime.lifecycle import Record, State


def parse(verb, *argv):
    return build_parser({verb: VERBS[verb]}).parse_args([verb, *argv])


def test_flags_follow_docker():
    assert parse("ps", "-a", "-q").all and parse("ps", "-aq").quiet
    assert parse("logs", "-f", "web").follow
    assert (parse("stop", "-t", "3", "a", "b").time, parse("stop", "a", "b").containers) == (3, ["a", "b"])
    assert parse("kill", "-s", "TERM", "web").signal == "TERM" and parse("kill", "web").signal == "KILL"
    assert parse("rm", "-f", "web").force
    assert parse("start", "-a", "web").attach
    assert parse("run", "-d", "--rm", "busybox", "sleep", "9").detach


def test_exec_flags_before_the_container_and_the_command_after_it_kept_whole():
    args = parse("exec", "-i", "-e", "A=1", "-w", "/tmp", "-u", "1000", "web", "ls", "-l", "-e")
    assert (args.interactive, args.env, args.workdir, args.user) == (True, ["A=1"], "/tmp", "1000")
    assert (args.container, args.command) == ("web", ["ls", "-l", "-e"])


def test_create_takes_the_same_flags_as_run():
    args = parse("create", "--name", "web", "-e", "A=1", "--memory", "64m", "busybox", "echo", "hi")
    assert (args.name, args.env, args.memory, args.image, args.command) == ("web", ["A=1"], "64m", "busybox",
                                                                            ["echo", "hi"])


def test_the_global_host_option_and_its_value_are_not_the_verb():
    assert verb_in(["-H", "unix:///tmp/labcore.sock", "ps", "-a"]) == "ps"
    assert verb_in(["--host=unix:///tmp/labcore.sock", "logs", "web"]) == "logs"
    args = build_parser({"ps": VERBS["ps"]}).parse_args(["--host", "unix:///tmp/labcore.sock", "ps"])
    assert args.host == "unix:///tmp/labcore.sock"


def test_an_unknown_container_is_named_and_exits_1(capsys, monkeypatch):
    monkeypatch.delenv("LABCORE_HOST", raising=False)
    assert main(["logs", "nosuch"]) == 1
    assert main(["rm", "nosuch"]) == 1
    assert capsys.readouterr().err.splitlines() == ["Error: No such container: nosuch"] * 2


def test_exec_without_a_command_is_bad_input():
    assert main(["exec", "web"]) == 125


def record(state, started=0.0, finished=0.0, exit_code=0):
    return Record("ab" * 32, "web", "busybox", config={"argv": ["sh", "-c", "echo ready; exec sleep 60"]},
                  state=state, started=started, finished=finished, exit_code=exit_code, created=time.time() - 5)


@pytest.mark.parametrize("state, started, finished, code, text", [
    (State.RUNNING, 3, 0, 0, "Up 3 seconds"),
    (State.EXITED, 10, 2, 0, "Exited (0) 2 seconds ago"),
    (State.EXITED, 400, 300, 137, "Exited (137) 5 minutes ago"),
    (State.CREATED, 0, 0, 0, "Created"),
    (State.PAUSED, 3 * 3600, 0, 0, "Up 3 hours (Paused)"),
])
def test_status_text_as_docker_ps_writes_it(state, started, finished, code, text):
    now = time.time()
    box = record(state, started=now - started - 0.5, finished=now - finished - 0.5 if finished else 0,
                 exit_code=code)
    assert routes.status_text(box) == text


def test_ps_row_cuts_and_quotes_the_command_and_says_how_long_ago():
    summary = routes.container_summary(record(State.RUNNING, started=time.time()))
    row = ps.row(summary, now=summary["Created"] + 5)
    assert row == ["abababababab", "busybox", '"sh -c echo ready; e…"', "5 seconds ago", "Up Less than a second",
                   "", "web"]
    assert ps.row(summary, no_trunc=True)[2] == '"sh -c echo ready; exec sleep 60"'


def test_ps_table_is_dockers_tabwriter_layout():
    lines = ps.table([["abababababab", "busybox", '"true"', "5 seconds ago", "Created", "", "web"]]).splitlines()
    assert lines[0] == ("CONTAINER ID   IMAGE     COMMAND   CREATED         STATUS    PORTS     NAMES")
    assert lines[1] == ("abababababab   busybox   \"true\"    5 seconds ago   Created             web")


def test_ports_as_docker_ps_shows_them():
    assert ps.ports([{"IP": "127.0.0.1", "PublicPort": 8080, "PrivatePort": 80, "Type": "tcp"},
                     {"PrivatePort": 53, "Type": "udp"}]) == "127.0.0.1:8080->80/tcp, 53/udp"


def test_pull_progress_line_and_bar_as_the_docker_cli_draws_them():
    event = {"status": "Downloading", "id": "abc123def456",
             "progressDetail": {"current": 1200000, "total": 3000000}}
    assert pull.line(event) == "abc123def456: Downloading [" + "=" * 20 + ">" + " " * 30 + "]    1.2MB/3MB"
    assert pull.line({"status": "Digest: sha256:00"}) == "Digest: sha256:00"


def test_pull_redraws_a_layers_line_on_a_terminal_and_skips_bars_on_a_pipe():
    import io
    events = [{"status": "Pulling fs layer", "id": "aaa", "progressDetail": {}},
              {"status": "Pulling fs layer", "id": "bbb", "progressDetail": {}},
              {"status": "Downloading", "id": "aaa", "progressDetail": {"current": 1, "total": 2}},
              {"status": "Pull complete", "id": "aaa", "progressDetail": {}},
              {"status": "Status: Downloaded newer image for lab/hello:v1"}]
    tty, plain = io.StringIO(), io.StringIO()
    screen, pipe = pull.Screen(tty, True), pull.Screen(plain, False)
    for event in events:
        screen.show(event)
        pipe.show(event)
    assert tty.getvalue().count("\x1b[2A\x1b[2K\r") == 2          # aaa's line, two up, rewritten twice
    assert plain.getvalue().splitlines() == ["aaa: Pulling fs layer", "bbb: Pulling fs layer",
                                             "aaa: Pull complete",
                                             "Status: Downloaded newer image for lab/hello:v1"]
