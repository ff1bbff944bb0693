"""The lab's private dockerd: it answers, runs busybox made from the lab's own image with no network, and
leaves no process, directory, mount or cgroup behind."""
import os

import pytest

from labcore.kernel.journal import mounts_under, process_start_time
from labcore.lessons.dockerd import Dockerd, cgroup_parent_directories, dockerd_unavailable_reason, import_busybox
from tests.conftest import privileged

REASON = dockerd_unavailable_reason()
pytestmark = [privileged, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def test_dockerd_runs_the_labs_busybox_and_leaves_nothing_behind(busybox_image):
    with Dockerd() as docker:
        pids = [int(entry.name) for entry in docker.scope.entries if entry.kind == "process"]
        assert len(pids) == 2                              # dockerd and the containerd it started
        assert docker.client().version()["ApiVersion"]
        assert import_busybox(docker) == busybox_image.id  # same config bytes: the same IMAGE ID
        assert docker.run("busybox", "ls", "/sys/class/net").split() == ["lo"]   # --network none
        made = [docker.directory, docker.runtime]
        groups = cgroup_parent_directories(os.path.basename(docker.directory))
    assert all(process_start_time(pid) is None for pid in pids)
    assert not any(os.path.exists(path) or mounts_under(path) for path in made + groups)
