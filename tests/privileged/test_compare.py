"""Containers vs VMs on the real kernel: a container reports the host's kernel and boot id, a VM its own;
each way of starting echo is timed to its first output. Speed targets are reported by the bench
(`python -m labcore.lessons.vs_vms`), not asserted here beyond what no busy machine could break."""
import os
from pathlib import Path

import pytest

from labcore.errors import NotSupportedHere
from labcore.lessons import vm, vs_vms
from labcore.lessons.dockerd import dockerd_unavailable_reason
from labcore.lessons.evidence import NOT_RUN
from tests.conftest import has, privileged

pytestmark = privileged
HOST = {"kernel release": os.uname().release, "boot_id": Path(vs_vms.BOOT_ID).read_text().strip()}


def test_a_container_reports_the_hosts_kernel_and_boot_id(busybox_image):
    step = vs_vms.container_kernel()
    assert step.after == HOST and step.data["same_kernel"]


def test_process_and_container_rows_are_measured(busybox_image):
    process, container = vs_vms.time_process(3), vs_vms.time_container(3)
    assert len(process.seconds) == len(container.seconds) == 3
    assert 0 < process.median < container.median
    assert 0 < process.memory_median < 16 << 20               # one busybox echo: well under 16 MiB
    assert len(container.memory) == 1 and 0 < container.memory_median < 64 << 20      # its cgroup was read


@pytest.mark.skipif(bool(dockerd_unavailable_reason()), reason=str(dockerd_unavailable_reason()))
def test_docker_row_is_measured_with_a_private_dockerd(busybox_image):
    row = vs_vms.time_docker(2)
    assert not row.missing and len(row.seconds) == 2 and row.median > 0


@pytest.mark.vm
@pytest.mark.skipif(bool(os.environ.get("LABCORE_IN_GUEST")), reason="already inside a guest")
def test_a_vm_boots_a_kernel_of_its_own_and_both_starts_are_measured(busybox_image):
    if not has(vm.QEMU):
        pytest.skip(f"{vm.QEMU} not found: apt-get install qemu-system-x86")
    try:
        guest = vm.boot_marker()
    except NotSupportedHere as err:
        pytest.skip(f"no kernel to boot: {err}")
    assert guest.before == HOST
    assert guest.after["boot_id"] != HOST["boot_id"] and guest.data["kernel_release"]
    measured = vs_vms.measure(runs=3, vm_runs=1, docker_runs=0, boots=[guest])   # no second boot
    assert measured.rows["docker"].missing and measured.ratio("vm", "docker") is NOT_RUN
    # How much slower is a measurement, not a test (bench/; README, "Performance"): here, that both were timed.
    assert measured.rows["vm"].seconds and measured.rows["container"].seconds and measured.ratio("vm", "container")
