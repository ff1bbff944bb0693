"""The seccomp profile a single-user pod needs for rootless containers, made from Docker's default profile.

    python tools/hub/k8s/seccomp.py > labcore-rootless.json      # then on every node, as root:
    install -D -m 0644 labcore-rootless.json /var/lib/kubelet/seccomp/labcore-rootless.json

Docker's default profile (moby's profiles/seccomp/default.json, which containerd and CRI-O's RuntimeDefault
follow) allows unshare, setns, mount, umount2, pivot_root, sethostname and clone with namespace flags only to
a container holding CAP_SYS_ADMIN, and chroot only with CAP_SYS_CHROOT: a single-user pod holds neither, so
every step that isolates is refused there (the README's Binder row). A rootless container needs exactly
those calls, and the kernel confines them to namespaces the user owns (user_namespaces(7)). This profile is
Docker's with one rule more that allows them to anyone; everything else Docker refuses stays refused.
``values.yaml`` names it as the pods' ``Localhost`` profile; tests/hub/test_pod_settings.py runs notebooks
03, 05 and 06 under it, in a container made like such a pod.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

DOCKER_PROFILE = Path(__file__).resolve().parents[3] / "labcore" / "kernel" / "profiles" / "seccomp-default.json"
ROOTLESS = sorted([
    "unshare", "setns", "clone",                     # new namespaces: user first, then the others in it
    "mount", "umount2", "pivot_root", "chroot",      # the container's root: overlay, /proc, pivot
    "sethostname", "setdomainname",                  # the UTS namespace's names
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",   # the new mount API
])


def rootless_profile(docker_profile: Path = DOCKER_PROFILE) -> dict:
    profile = json.loads(docker_profile.read_text())
    profile["syscalls"].append({"names": ROOTLESS, "action": "SCMP_ACT_ALLOW",
                                "comment": "labcore: rootless containers (tools/hub/k8s/seccomp.py)"})
    return profile


if __name__ == "__main__":
    json.dump(rootless_profile(), sys.stdout, indent=1)
    sys.stdout.write("\n")
