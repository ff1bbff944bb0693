"""`labcore run` with cgroup limits, enforced by the kernel and measured (the issue's "done when")."""
import subprocess
import time

from labcore.kernel.cgroups import open_manager
from labcore.runtime.container import Spec, run
from tests.conftest import privileged

pytestmark = privileged


def test_memory_limit_oom_kills_with_137(busybox_image):
    result = run(Spec("busybox", ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"], rm=True,
                      limits={"memory": "32m"}))
    assert result.exit_code == 137


def test_pids_limit_makes_fork_fail_inside_while_the_host_forks(busybox_image):
    script = "for i in $(seq 40); do sleep 2 & done; wait"
    result = run(Spec("busybox", ["sh", "-c", script], rm=True, limits={"pids_limit": "10"}))
    assert b"can't fork" in result.stderr
    assert subprocess.run(["true"]).returncode == 0            # the host is unaffected


def test_cpus_quarter_throttles_the_containers_busy_loop(busybox_image):
    """The mechanism, from the container's own group while it spins: the quota written, periods throttled.
    (How close to a quarter of a core it stays is a measurement: `python -m bench cgroups`.)"""
    from labcore.kernel import journal
    from labcore.runtime import container
    spec = Spec("busybox", ["sh", "-c", "while :; do :; done"], rm=True, limits={"cpus": "0.25"})
    with journal.Scope() as scope, container.Stdio("capture") as stdio:
        box = container.create(spec, scope, stdio)
        try:
            container.start(box)
            manager, before = open_manager(), None
            before = manager.stats(box.cgroup)
            time.sleep(0.5)
            after, quota = manager.stats(box.cgroup), manager.limits_of(box.cgroup)
        finally:
            container.stop_if_running(box)
    assert quota.get("cpu.cfs_quota_us", quota.get("cpu.max", "")).startswith("25000")
    assert after.cpu_throttled > before.cpu_throttled and after.cpu_usage_us > before.cpu_usage_us


def test_a_limited_container_has_its_own_group_and_it_is_removed_at_exit(busybox_image):
    result = run(Spec("busybox", ["cat", "/proc/self/cgroup"], rm=True, limits={"pids_limit": "64"}))
    assert b"memory:/\n" in result.stdout                      # the cgroup namespace's root is its group
    assert not [g for g in open_manager().groups() if result.id in g.name]
