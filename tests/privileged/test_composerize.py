"""`labcore composerize` checked by the real docker-compose (Debian's 1.29): `docker-compose config` reads the
file for a wide set of flags and gives back each value as compose understands it; then `docker-compose up`
runs a composerized `docker run` against labd, and the container has what the flags asked for."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import privileged
from tests.unit.test_composerize import WIDE

pytestmark = [privileged, pytest.mark.skipif(not shutil.which("docker-compose"),
                                             reason="needs docker-compose (apt-get install docker-compose)")]


def composerize(command: str) -> str:
    done = subprocess.run([sys.executable, "-m", "labcore", "composerize", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def compose(directory, *argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", "-p", "labcorecomposerize", *argv], cwd=directory,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


def test_docker_compose_config_accepts_every_flag_and_reads_the_values_back(tmp_path):
    (tmp_path / "docker-compose.yml").write_text(composerize(WIDE))
    config = compose(tmp_path, "config")
    assert config.returncode == 0, config.stderr
    import yaml
    web = yaml.safe_load(config.stdout)["services"]["web"]
    assert web["ports"][0] == {"published": 8080, "target": 80}
    assert web["blkio_config"]["device_read_bps"] == [{"path": "/dev/sda", "rate": 1 << 20}]
    assert (web["mem_limit"], web["memswap_limit"], web["cpus"], web["cpu_shares"], web["pids_limit"]) == \
        ("64m", "128m", 0.5, 512, 100)
    assert web["command"] == ["-c", "echo hi; sleep 1"] and web["entrypoint"] == ["/bin/sh"]
    assert (web["init"], web["read_only"], web["tty"], web["stdin_open"], web["pid"]) == (True, True, True,
                                                                                         True, "host")


def test_a_named_network_is_external_for_compose(tmp_path):
    (tmp_path / "docker-compose.yml").write_text(composerize("docker run --network backend --network-alias db "
                                                             "--name pg busybox"))
    config = compose(tmp_path, "config")
    assert config.returncode == 0, config.stderr
    assert "external: true" in config.stdout and "- db" in config.stdout


def test_docker_compose_up_on_labd_makes_the_container_the_flags_asked_for(tmp_path, busybox_image):
    from labcore.api.labd import Labd
    command = ("docker run --name labcore-cz --hostname box -e GREETING=hi -w /tmp --network none busybox "
               "sh -c 'echo $GREETING from $(hostname) in $(pwd)'")
    (tmp_path / "docker-compose.yml").write_text(composerize(command))
    with Labd(f"/tmp/labcore-cz-{os.getpid()}-{time.monotonic_ns()}.sock") as labd:
        env = {"DOCKER_HOST": f"unix://{labd.socket}"}
        try:
            up = compose(tmp_path, "up", "--no-color", env=env)
            assert up.returncode == 0, up.stderr
            assert "hi from box in /tmp" in up.stdout
            inspect = labd.client().api.inspect_container("labcore-cz")
            assert inspect["HostConfig"]["NetworkMode"] == "none" and inspect["Config"]["Hostname"] == "box"
            assert json.dumps(inspect["Config"]["Env"]).count("GREETING=hi") == 1
        finally:
            down = compose(tmp_path, "down", env=env)
    assert down.returncode == 0, down.stderr
