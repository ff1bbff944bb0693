"""The lab VM (tools/labvm.py) is a plain cgroup v2 Debian host that shows nothing of the machine that runs it.

The first run builds its image (Debian's packages by mmdebstrap, a few minutes) into ~/.cache/labcore-vm;
later runs boot the cached one, about 10 s under TCG.
"""
import os
import shutil
import socket
from pathlib import Path

import pytest

from labcore.lessons import vm
from tests.conftest import privileged
from tests.notebooks.test_no_build_host_particulars import FHS
from tools import labvm

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.vm, privileged,
              pytest.mark.skipif(bool(os.environ.get("LABCORE_IN_GUEST")), reason="already inside a guest"),
              pytest.mark.skipif(not shutil.which(vm.QEMU), reason="apt-get install qemu-system-x86"),
              pytest.mark.skipif(not shutil.which("mmdebstrap"), reason="apt-get install mmdebstrap")]

PROBE = "; ".join([
    "uname -r", "hostname", "cat /proc/self/cgroup", "stat -f -c %T /sys/fs/cgroup",
    "grep -c ' cgroup ' /proc/mounts", "pwd", ".venv/bin/python -c 'import sys; print(sys.prefix)'",
    ".venv/bin/python -c 'import labcore; print(labcore.__file__)'", "ls /", "modprobe -n veth && echo modprobe ok",
    "test -e .venv/pyvenv.cfg && test ! -e .git && echo fresh copy"])


def test_the_lab_vm_is_a_plain_cgroup_v2_debian_host(tmp_path):
    result = labvm.run(PROBE, tmp_path, timeout=1800, log=lambda text: None)
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.console[-3000:]
    release, hostname, cgroup, fstype, v1_mounts, cwd, venv, package, *rest = lines
    assert release == vm.ensure_kernel().release != os.uname().release      # Debian's kernel, not this one
    assert hostname == labvm.HOSTNAME
    assert cgroup == "0::/" and fstype == "cgroup2fs" and v1_mounts == "0"  # cgroup v2 alone
    assert cwd == "/lab" and venv == "/lab/.venv" and package == "/lab/labcore/__init__.py"
    assert "modprobe ok" in rest and "fresh copy" in rest
    guest_root = set(" ".join(rest).split())
    assert "lab" in guest_root and not (set(os.listdir("/")) - FHS) & guest_root   # none of this host's own
    assert str(ROOT) not in result.output and socket.gethostname() != hostname


def test_a_user_with_a_delegated_subtree_starts_a_container_whose_pid_1_is_born_in_its_group(tmp_path):
    """Rootless on cgroup v2, for real: the shim, inside its new user namespace, forks pid 1 straight into a
    group of the user's delegated subtree (clone3's CLONE_INTO_CGROUP, checked with the shim's credentials);
    and a `labcore exec` into that container joins the group, so the container's limits hold for it too.
    The lab VM, unlike tests/vm's 9p guest, boots its own root (no chroot), so a user namespace can be made."""
    from tests.vm.test_cgroup_v2_guest import DELEGATE, STUDENT, summary_line
    tests = ("tests/privileged/test_cgroups.py::test_pid_1_is_born_in_its_group_and_the_caller_writes_no_cgroup_procs "
             "tests/privileged/test_exec_cgroup.py")      # and `labcore exec` joins that group
    # uid 1001 has no passwd entry in the lab VM: no --init-groups (it looks the name up), no groups at all.
    script = DELEGATE + (f"as_student() {{ setpriv --reuid={STUDENT} --regid={STUDENT} --clear-groups "
                         f"env HOME=/tmp/student \"$@\"; }}\nchmod -R a+rX /lab\n"
                         f"as_student .venv/bin/python -m pytest {tests} -p no:cacheprovider -q -rs")
    result = labvm.run(script, tmp_path, timeout=1800, log=lambda text: None)
    assert result.exit_code == 0, result.output[-3000:]
    assert summary_line(result.output).startswith("2 passed"), result.output[-3000:]
