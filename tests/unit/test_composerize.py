"""`labcore composerize`: every flag of `labcore run` becomes its compose key; the YAML reads back as written
(YAML 1.1, as docker-compose's PyYAML reads it); a flag the file cannot hold is refused by name."""
import pytest

from labcore.cli import main
from labcore.cli.composerize import parse_run, words_of
from labcore.errors import BadInput
from labcore.runtime import compose

yaml = pytest.importorskip("yaml")          # PyYAML, docker-compose 1.29's own parser (YAML 1.1)

WIDE = ("docker run -d --rm -it --name web --hostname box -e A=1 -e B -w /srv -u 1000:1000 --entrypoint /bin/sh "
        "-v /tmp:/data:ro -p 8080:80 -p 127.0.0.1:5353:53/udp --mac-address 02:42:ac:11:00:0a -m 64m "
        "--memory-swap 128m --cpus 0.5 -c 512 --pids-limit 100 --device-read-bps /dev/sda:1mb "
        "--device-write-bps /dev/sda:2mb --device-cgroup-rule 'c 1:3 rwm' --cap-add NET_ADMIN --cap-drop ALL "
        "--security-opt no-new-privileges --read-only --device /dev/fuse:/dev/fuse:rw --group-add 1000 "
        "--tmpfs /run:size=64m --init --pid host busybox -c 'echo hi; sleep 1'")


def composed(command: str) -> dict:
    spec, detach = parse_run(words_of([command]))
    return yaml.safe_load(compose.composerize(spec, detach))


def test_every_flag_becomes_its_key_and_reads_back_with_its_type():
    service = composed(WIDE)["services"]["web"]
    assert service == {
        "image": "busybox", "container_name": "web", "hostname": "box", "user": "1000:1000", "working_dir": "/srv",
        "entrypoint": ["/bin/sh"], "command": ["-c", "echo hi; sleep 1"], "environment": ["A=1", "B"],
        "stdin_open": True, "tty": True, "init": True, "ports": ["8080:80", "127.0.0.1:5353:53/udp"],
        "volumes": ["/tmp:/data:ro"], "tmpfs": ["/run:size=64m"], "mac_address": "02:42:ac:11:00:0a",
        "mem_limit": "64m", "memswap_limit": "128m", "cpus": 0.5, "cpu_shares": 512, "pids_limit": 100,
        "blkio_config": {"device_read_bps": [{"path": "/dev/sda", "rate": "1mb"}],
                         "device_write_bps": [{"path": "/dev/sda", "rate": "2mb"}]},
        "cap_add": ["NET_ADMIN"], "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"], "read_only": True,
        "devices": ["/dev/fuse:/dev/fuse:rw"], "device_cgroup_rules": ["c 1:3 rwm"], "group_add": ["1000"],
        "pid": "host"}


def test_run_words_are_said_in_comments_and_nothing_else_is_written():
    spec, detach = parse_run(words_of(["docker run -d --rm busybox"]))
    text = compose.composerize(spec, detach, command="docker run -d --rm busybox")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert comments[0] == "# docker run -d --rm busybox"
    assert any("docker-compose up -d" in line for line in comments)
    assert any("docker-compose down" in line for line in comments)
    assert yaml.safe_load(text) == {"services": {"busybox": {"image": "busybox"}}}


def test_networks_none_a_named_one_with_aliases_and_the_default():
    assert composed("docker run --network none busybox")["services"]["busybox"]["network_mode"] == "none"
    named = composed("docker run --network backend --network-alias db --name pg postgres:16")
    assert named["services"]["pg"]["networks"] == {"backend": {"aliases": ["db"]}}
    assert named["networks"] == {"backend": {"external": True}}
    assert "networks" not in composed("labcore run busybox") and "network_mode" not in composed("run busybox")


def test_entrypoint_cleared_is_the_empty_word_docker_sends():
    assert composed("docker run --entrypoint '' busybox ls")["services"]["busybox"]["entrypoint"] == [""]


@pytest.mark.parametrize("text", ["2222:22", "22:22", "80:80", "no", "Yes", "off", "1000", "0.5", "1e3", "2001-12-14", "~", "-x",
                                  "a: b", "#x", "*a", "", "null", "c 1:3 rwm", "'q'", '"q"', "a\nb", "é"])
def test_a_string_reads_back_as_the_same_string_in_yaml_1_1(text):
    assert yaml.safe_load("\n".join(compose.to_yaml({"key": [text]}))) == {"key": [text]}


@pytest.mark.parametrize("command, named", [
    ("docker run --restart always busybox", "--restart"),
    ("docker run --log-driver=none busybox", "--log-driver"),
    ("docker run --uts host busybox", "--uts"),
    ("docker run -v data:/data busybox", "data:/data"),
    ("docker run -m 10XB busybox", "10XB"),
    ("docker run --network-alias db busybox", "alias"),
    ("docker run --cap-add NOT_A_CAP busybox", "NOT_A_CAP"),
    ("docker run --device fuse busybox", "fuse"),
    ("docker run --device-read-bps sda busybox", "sda"),
    ("docker run -p 80:80 --network none busybox", "network"),
    ("docker build .", "run"),
    ("docker run", "IMAGE"),
])
def test_what_the_file_cannot_hold_is_refused_by_name(command, named):
    with pytest.raises(BadInput) as refused:
        composed(command)
    assert named in refused.value.message and refused.value.fix


def test_the_verb_prints_yaml_and_refuses_with_125(capsys):
    assert main(["composerize", "docker run -p 8080:80 busybox httpd -f"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["services"]["busybox"]["ports"] == ["8080:80"]
    assert main(["composerize", "docker", "run", "--name", "xy", "busybox"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["services"]["xy"]["container_name"] == "xy"
    assert main(["composerize", "docker run --restart always busybox"]) == 125
    error = capsys.readouterr().err
    assert "--restart is not a flag labcore run supports" in error and "--publish" in error


def test_a_dollar_stays_a_dollar_for_the_container():
    service = composed("docker run -e 'PRICE=$5' busybox sh -c 'echo $HOME'")["services"]["busybox"]
    assert service["environment"] == ["PRICE=$$5"] and service["command"] == ["sh", "-c", "echo $$HOME"]


def test_the_notebook_step_shows_the_file_and_compose_reading_it_or_says_why_not(monkeypatch):
    from labcore.lessons import build_your_own
    monkeypatch.setattr("shutil.which", lambda program: None)          # no docker-compose on this host
    step = build_your_own.composerize("docker run -p 8080:80 busybox")
    assert yaml.safe_load(step.data["yaml"])["services"]["busybox"]["ports"] == ["8080:80"]
    assert step.after["as docker-compose reads it (config)"].startswith("not checked: docker-compose is not")
    refused = build_your_own.composerize("docker run --restart always busybox")
    assert refused.data["exit_code"] == 125 and "--restart" in refused.data["error"]
    assert refused.data["yaml"] == "" and "refused by name" in refused.note


def test_an_unclosed_quote_is_refused_naming_it(capsys):
    assert main(["composerize", "docker run -e 'A=b busybox"]) == 125
    error = capsys.readouterr().err
    assert "No closing quotation" in error and "quote it as a shell would" in error


@pytest.mark.parametrize("cpus, said", [("4096", None), ("lots", "is not a number"), ("0", "out of range")])
def test_cpus_is_checked_the_same_on_every_host(cpus, said):
    if said is None:                     # more CPUs than this host has: the file may run on a bigger one
        assert composed(f"docker run --cpus {cpus} busybox")["services"]["busybox"]["cpus"] == 4096
        return
    with pytest.raises(BadInput, match=said) as refused:
        composed(f"docker run --cpus {cpus} busybox")
    assert "e.g. --cpus 0.5" in refused.value.fix
