"""Debian's docker-compose (v1.29, the Python one, API 1.38) against labd: a web server and a client that
reaches it by its service name on the project's network; `up`, `ps`, `logs`, `down`, and nothing left."""
import os
import shutil
import subprocess
import time

import pytest

from labcore.kernel.journal import Journal
from tests.conftest import privileged

pytestmark = [privileged, pytest.mark.skipif(not shutil.which("docker-compose"),
                                             reason="needs docker-compose (`./lab test` installs Debian's)")]

PROJECT = """\
version: "3"
services:
  web:
    image: busybox
    command: sh -c 'mkdir /www && echo hello from web > /www/index.html && exec httpd -f -p 80 -h /www'
  client:
    image: busybox
    command: sh -c 'for i in $$(seq 50); do wget -qO- http://web/ && exit 0; sleep 0.1; done; exit 1'
    depends_on: [web]
"""


def compose(labd, directory, *argv) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", "--no-ansi", "-p", "labcorecompose", *argv], cwd=directory,
                          env={**os.environ, "DOCKER_HOST": f"unix://{labd.socket}"}, capture_output=True,
                          text=True, timeout=120)


def test_compose_brings_up_two_services_that_talk_by_name_and_takes_them_down(tmp_path, busybox_image):
    from labcore.api.labd import Labd
    from labcore.runtime import networks
    (tmp_path / "docker-compose.yml").write_text(PROJECT)
    links_before = set(os.listdir("/sys/class/net"))
    with Labd(f"/tmp/labcore-compose-{os.getpid()}-{time.monotonic_ns()}.sock") as labd:
        up = compose(labd, tmp_path, "up", "-d")
        assert up.returncode == 0, up.stderr
        assert 'Creating network "labcorecompose_default" with the default driver' in up.stderr
        bridge = f"lcbr-{networks.find('labcorecompose_default').id[:10]}"
        deadline = time.monotonic() + 30
        while "Exit 0" not in (ps := compose(labd, tmp_path, "ps").stdout) and time.monotonic() < deadline:
            time.sleep(0.2)
        rows = {line.split()[0]: line for line in ps.splitlines()[2:]}
        assert "Exit 0" in rows["labcorecompose_client_1"] and " Up " in rows["labcorecompose_web_1"] + " "
        assert bridge in os.listdir("/sys/class/net")                   # web is still on it
        logs = compose(labd, tmp_path, "logs", "client").stdout
        assert "hello from web" in logs                                  # the client reached web by its name
        down = compose(labd, tmp_path, "down", "-t", "1")
        assert down.returncode == 0, down.stderr
        assert "Removing network labcorecompose_default" in down.stderr
        assert compose(labd, tmp_path, "ps", "-q").stdout.strip() == ""
    assert [n.name for n in networks.all_networks()] == ["bridge", "none"]
    assert bridge not in os.listdir("/sys/class/net")
    assert not {name for name in set(os.listdir("/sys/class/net")) - links_before if name.startswith("lcbr-")}
    assert Journal().entries() == []
    assert not any((networks.networks_dir()).iterdir())
