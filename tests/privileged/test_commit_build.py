"""commit and build for real: an upperdir becomes a layer whose whiteouts delete in the next container, and a
Labfile builds one layer per filesystem-changing step, reused from the cache until an instruction changes."""
import os
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from labcore import paths
from labcore.errors import LabError, NotFound
from labcore.image.oci import Store
from labcore.kernel import journal
from labcore.runtime import build, container
from labcore.runtime.container import Spec
from tests.conftest import privileged

pytestmark = privileged
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def nothing_left_behind(busybox_image):
    yield
    assert str(paths.home()) not in Path("/proc/self/mountinfo").read_text()
    containers = paths.containers_dir()
    assert not containers.exists() or not any(containers.iterdir()), "a container directory was left"


def sh(image: str, script: str, **options) -> container.Result:
    return container.run(Spec(image, ["sh", "-c", script], network="none", **options))


def test_commit_makes_the_upperdir_a_layer_whose_changes_the_next_container_sees(busybox_image):
    kept = sh("busybox", "echo hi > /greeting; rm /etc/group; rm -r /usr; mkdir /usr; touch /usr/only")
    name = f"labcore-commit-{secrets.token_hex(4)}"
    image = build.commit(kept.id, name).image
    journal.cleanup()                                          # the container goes; the image stays
    assert len(image.layers) == len(busybox_image.layers) + 1
    with tarfile.open(image.layers[-1].path) as layer:
        names = layer.getnames()
    assert {"greeting", "etc/.wh.group", "usr/.wh..wh..opq", "usr/only"} <= set(names)
    assert image.config == busybox_image.config and len(image.history) == len(busybox_image.history) + 1
    seen = sh(name, "cat /greeting; ls /etc/group 2>&1; ls /usr", rm=True)
    assert seen.stdout.decode().split("\n")[:3] == ["hi", "ls: /etc/group: No such file or directory", "only"]


def test_commit_refuses_a_container_that_is_gone():
    with pytest.raises(NotFound, match="No such container"):
        build.commit("labcore-nosuch", "labcore-x")


def labcore(*argv: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labcore", *argv], capture_output=True, text=True, timeout=120,
                          cwd=cwd, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def context(tmp_path) -> Path:
    (tmp_path / "greeting.txt").write_text("hello from the context\n")
    token = secrets.token_hex(4)             # the shared store keeps its cache across tests: start afresh
    (tmp_path / "Labfile").write_text(f"FROM busybox\nRUN echo {token} > /etc/motd && rm /etc/group\n"
                                      f"COPY greeting.txt /greeting.txt\n")
    return tmp_path


def test_three_instructions_build_three_layers_and_a_rebuild_uses_the_cache(context, busybox_image):
    first = build.build(context, tag="labcore-built")
    assert len(first.image.layers) == 3 and first.cached == 0
    assert "Successfully tagged labcore-built:latest" in first.log and " ---> Using cache" not in first.log
    again = build.build(context, tag="labcore-built")
    assert again.cached == 2 and again.log.count(" ---> Using cache") == 2
    assert again.image.id == first.image.id and again.log[-2] == f"Successfully built {first.image.short_id}"
    seen = sh("labcore-built", "cat /greeting.txt; ls /etc/group 2>&1", rm=True)
    assert seen.stdout.decode().startswith("hello from the context\nls: /etc/group: No such file")


def test_changing_one_step_rebuilds_from_there_on(context):
    first = build.build(context, tag="labcore-rebuilt")
    (context / "greeting.txt").write_text("changed\n")
    changed = build.build(context, tag="labcore-rebuilt")
    assert changed.cached == 1 and changed.log[3] == " ---> Using cache"        # RUN cached, COPY not
    assert changed.image.layers[:2] == first.image.layers[:2] and changed.image.id != first.image.id
    text = (context / "Labfile").read_text().replace("RUN echo", "RUN echo other")
    (context / "Labfile").write_text(text)
    assert build.build(context, tag="labcore-rebuilt").cached == 0             # COPY's parent changed too


def test_a_failing_run_stops_the_build_and_leaves_no_container(tmp_path):
    (tmp_path / "Labfile").write_text(f"FROM busybox\nRUN echo {secrets.token_hex(4)}; exit 3\n")
    with pytest.raises(LabError, match="returned a non-zero code: 3"):
        build.build(tmp_path)


def test_the_cli_builds_and_commits_as_docker_prints(context):
    result = labcore("build", "-t", "labcore-cli-built", str(context))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Step 1/3 : FROM busybox" and lines[-1] == "Successfully tagged labcore-cli-built:latest"
    assert labcore("build", "-t", "labcore-cli-built", str(context)).stdout.count("---> Using cache") == 2
    (context / "Bad").write_text("FROM busybox\nRUNN true\n")
    bad = labcore("build", "-f", str(context / "Bad"), str(context))
    assert bad.returncode == 125 and "Labfile line 2: unknown instruction: RUNN" in bad.stderr
    kept = sh("labcore-cli-built", "echo committed > /mark")
    try:
        commit = labcore("commit", kept.id[:12], "labcore-cli-committed:v1")
        assert commit.returncode == 0, commit.stderr
        assert commit.stdout.strip() == Store().resolve("labcore-cli-committed:v1").id
    finally:
        journal.cleanup()
