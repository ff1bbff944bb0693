"""`labcore run` with cgroup limits, enforced by the kernel and measured (the issue's "done when")."""
import subprocess

from labcore.cgroups import open_manager
from labcore.container import Spec, run
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


def test_cpus_quarter_holds_a_busy_loop_at_a_quarter_core(busybox_image):
    loop = ["time", "-f", "%e %U %S", "timeout", "2", "sh", "-c", "while :; do :; done"]
    result = run(Spec("busybox", loop, rm=True, limits={"cpus": "0.25"}))
    elapsed, user, system = map(float, result.stderr.decode().split()[-3:])
    assert 0.15 <= (user + system) / elapsed <= 0.35


def test_a_limited_container_has_its_own_group_and_it_is_removed_at_exit(busybox_image):
    result = run(Spec("busybox", ["cat", "/proc/self/cgroup"], rm=True, limits={"pids_limit": "64"}))
    assert b"memory:/\n" in result.stdout                      # the cgroup namespace's root is its group
    assert not [g for g in open_manager().groups() if result.id in g.name]
