"""`labcore exec` puts its process in the container's cgroups, as runc exec does: it counts against the
container's limits, as root and, on a cgroup v2 host, as a user who owns a delegated subtree (tests/vm's lab
VM runs this as such a user). A rootless exec used to stay in the caller's own group, outside every limit."""
import os

import pytest

from labcore.kernel.cgroups import can_limit
from labcore.lessons import hosts

pytestmark = [
    pytest.mark.skipif(not can_limit(), reason=f"needs root or a cgroup v2 subtree delegated to uid {os.geteuid()} "
                                                "(cgroup-v2.rst, 'Delegation'); see `labcore doctor`"),
    pytest.mark.skipif(os.geteuid() != 0 and bool(hosts.try_user_namespace()),
                       reason="a rootless container needs a user namespace, and unshare(CLONE_NEWUSER) is refused")]


def test_an_exec_is_in_the_containers_group_where_its_limits_hold(engines_home):
    """Seen from inside, through the container's cgroup namespace: the exec's line for the limited hierarchy
    reads "/", the container's group itself ("/../../session" was the caller's own group, outside it)."""
    from labcore.runtime import engine
    from labcore.runtime.container import Spec
    record = engine.create(Spec("busybox", ["sleep", "600"], network="none", limits={"pids_limit": "64"}))
    try:
        engine.start(record.id)
        exec_id = engine.exec_create(record.id, ["cat", "/proc/self/cgroup"])
        said = b"".join(data for _, data in engine.exec_start(exec_id)).decode().split()
    finally:
        engine.remove(record.id, force=True)
    # v1's pids hierarchy where there is one (a hybrid host's cgroup2 tree holds no group of the lab's), else v2's
    limited = [line for line in said if ":pids:" in line] or [line for line in said if line.startswith("0::")]
    assert len(limited) == 1 and limited[0].split(":", 2)[2] == "/", said
