"""02's live tree of Docker's processes: dockerd → containerd, the shim adopted by the host's init, the container's
pid 1 a child of the shim; after dockerd's SIGKILL the container still runs; and nothing of it is left after."""
import os
from pathlib import Path

import pytest

from labcore.kernel.journal import mounts_under
from labcore.lessons import client_server
from labcore.lessons.dockerd import dockerd_unavailable_reason
from tests.conftest import privileged

REASON = dockerd_unavailable_reason()
pytestmark = [privileged, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def running(pid: int) -> bool:
    return client_server.process_facts(pid)["state"] not in ("gone", "zombie")


def test_the_container_outlives_dockerd_as_the_shims_child_and_nothing_is_left(busybox_image):
    step = client_server.docker_process_tree()
    before, after = step.data["before"], step.data["after"]
    assert before["containerd"]["ppid"] == before["dockerd"]["pid"]
    assert before["container"]["ppid"] == before["shim"]["pid"] and before["shim"]["name"] == "containerd-shim"
    assert before["shim"]["ppid"] != before["containerd"]["pid"]          # adopted: its starter exited
    assert before["container"]["name"] == "sleep" and before["dockerd"]["ppid"] == os.getpid()
    assert after["dockerd"]["state"] == "gone" and after["containerd"]["state"] in ("gone", "zombie")
    assert step.data["container survived"] and step.data["container's parent after"] == before["shim"]["pid"]
    assert not any(running(facts["pid"]) for facts in before.values())     # all stopped afterwards
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if "labcore-dockerd-" in line]
    assert not [path for path in Path("/sys/fs/cgroup").glob("**/labcore-dockerd-*")]
    assert not mounts_under("/run/docker")
