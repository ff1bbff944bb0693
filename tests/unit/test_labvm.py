"""tools/labvm.py without booting: what goes into the image, its name, the guest's /init, what comes back."""
import os
import time
from pathlib import Path

from labcore.lessons import vm
from tools import labvm

KERNEL = vm.GuestKernel("6.1.0-57-amd64", Path("/cache/linux-image-6.1.0-57-amd64/boot/vmlinux-6.1.0-57-amd64"),
                   Path("/cache/linux-image-6.1.0-57-amd64/lib/modules/6.1.0-57-amd64"))


def test_the_image_has_the_packages_lab_installs(tmp_path):
    script = tmp_path / "lab"
    script.write_text('RUN_PACKAGES=(\n  "graphviz:/usr/bin/dot" "busybox-static:/bin/busybox"\n)\n'
                      'TEST_PACKAGES=(\n  "docker.io:/usr/sbin/dockerd"\n  "chromium:/usr/bin/chromium"\n)\n')
    assert labvm.lab_packages(script) == ["graphviz", "busybox-static", "docker.io", "chromium"]
    assert {"graphviz", "qemu-system-x86", "python3", "python3-venv", "kmod"} <= set(labvm.packages())
    assert not {"chromium", "mmdebstrap"} & set(labvm.packages())       # the build machine's, not the lab's


def test_the_image_name_changes_with_its_recipe_only(monkeypatch):
    first = labvm.image_key(KERNEL, "psutil==7.2.2\n")
    assert first == labvm.image_key(KERNEL, "psutil==7.2.2\n")
    assert first != labvm.image_key(KERNEL, "psutil==7.2.3\n")
    assert first != labvm.image_key(vm.GuestKernel("6.1.0-58-amd64", KERNEL.image, KERNEL.modules), "psutil==7.2.2\n")
    monkeypatch.setattr(labvm, "BASE_PACKAGES", [*labvm.BASE_PACKAGES, "strace"])
    assert first != labvm.image_key(KERNEL, "psutil==7.2.2\n")
    assert labvm.image_path(first).name == f"labcore-lab-{first}.ext4"


def test_the_lock_pins_every_wheel_of_the_image():
    pins = [line for line in labvm.LOCK.read_text().splitlines() if not line.startswith("#")]
    names = {pin.split("==")[0] for pin in pins}
    assert all("==" in pin for pin in pins)
    assert {"psutil", "nbclient", "ipykernel", "graphviz", "pyroute2"} <= names


def test_guest_init_mounts_a_pure_cgroup_v2_root_and_runs_the_command_in_lab():
    init = labvm.guest_init("echo hi", ["lib/modules/x/virtio_blk.ko"])
    assert init.startswith("#!/bin/busybox sh\n")
    assert "insmod /lib/modules/x/virtio_blk.ko" in init
    assert "mount -t ext4 /dev/vda /newroot" in init
    assert "mount -t cgroup2 cgroup2 sys/fs/cgroup" in init and "-t cgroup " not in init
    assert "exec switch_root /newroot /bin/sh /run/labcore-guest.sh" in init   # modprobe finds the image's
    script = init.split("<<'LABCORE_GUEST_EOF'\n", 1)[1].split("LABCORE_GUEST_EOF", 1)[0]
    assert "hostname lab" in script and "cd /lab" in script
    assert "--exclude=./.venv" in script and "--exclude=./.git" in script      # this host's venv stays here
    assert "sh -c 'echo hi'" in script and f'echo "{vm.EXIT}$?"' in script
    assert f"XDG_CACHE_HOME={labvm.GUEST_KERNEL_CACHE}" in script              # 07 finds the kernel offline


def test_only_what_the_guest_changed_comes_back(tmp_path, monkeypatch):
    root, out = tmp_path / "checkout", tmp_path / "out"
    for base in (root, out):
        (base / "notebooks").mkdir(parents=True)
        (base / "diagrams").mkdir()
    (root / "notebooks" / "00.ipynb").write_text("old")
    (root / "notebooks" / "01.ipynb").write_text("same")
    (root / "diagrams" / "stacks.svg").write_text("old drawing")
    (out / "notebooks" / "00.ipynb").write_text("executed")
    (out / "notebooks" / "01.ipynb").write_text("same")              # failed in the guest: left as it was
    (out / "diagrams" / "stacks.svg").write_text("redrawn")
    monkeypatch.setattr(labvm, "ROOT", root)
    stored = labvm.store_results(["notebooks/00.ipynb", "notebooks/01.ipynb", "notebooks/02.ipynb"], out)
    assert stored == ["notebooks/00.ipynb", "diagrams/stacks.svg"]
    assert (root / "notebooks" / "00.ipynb").read_text() == "executed"
    assert (root / "diagrams" / "stacks.svg").read_text() == "redrawn"


def test_stale_images_go_after_two_days_unused(tmp_path, monkeypatch):
    monkeypatch.setattr(vm, "cache_dir", lambda: tmp_path)
    keep, recent, old = (tmp_path / f"labcore-lab-{name}.ext4" for name in ("keep", "recent", "old"))
    for image in (keep, recent, old):
        image.write_bytes(b"")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    os.utime(keep, (time.time() - 3 * 86400,) * 2)
    labvm.forget_stale_images(keep)
    assert keep.exists() and recent.exists() and not old.exists()

