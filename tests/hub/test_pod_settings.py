"""The Kubernetes path (tools/hub/k8s/values.yaml), as far as this machine can test it: no cluster here, so a
container made by a private dockerd stands in for the single-user pod (``tools.host_matrix.run_in_pod``:
uid 1000, every capability dropped, no_new_privs), given Docker's equivalents of the values' settings:

    seccompProfile Localhost labcore-rootless.json    --security-opt seccomp=<tools/hub/k8s/seccomp.py's>
    procMount: Unmasked                               --security-opt systempaths=unconfined
    appArmorProfile                                   (this machine loads no AppArmor)

Notebooks 03, 05 and 06 then run with every step real where, under Docker's default profile (the host
matrix's pod row), every step that isolates is refused. Not tested here: the chart itself, hostUsers: false
(a pod user namespace), Pod Security admission; the values are checked against the chart's schema by hand
(README, "Teaching a class").
"""
import json
import os
import tempfile
from pathlib import Path

import pytest

from labcore.lessons.dockerd import dockerd_unavailable_reason
from labcore.kernel.journal import undo_rmtree
from tools import host_matrix
from tools.hub.k8s.seccomp import rootless_profile

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = [ROOT / "notebooks" / name for name in
             ("03-namespaces.ipynb", "05-union-filesystem.ipynb", "06-root-filesystem.ipynb")]

pytestmark = [pytest.mark.hub,
              pytest.mark.skipif(os.geteuid() != 0 or bool(dockerd_unavailable_reason()),
                                 reason=f"the pod is made by a private dockerd: {dockerd_unavailable_reason()}")]


def test_the_pods_settings_let_every_step_of_03_05_and_06_run_for_real():
    work = Path(tempfile.mkdtemp(prefix="labcore-pod-settings-"))
    os.chmod(work, 0o755)
    try:
        profile = work / "labcore-rootless.json"
        profile.write_text(json.dumps(rootless_profile()))
        confinement = (*host_matrix.POD_CONFINEMENT, "--security-opt", f"seccomp={profile}",
                       "--security-opt", "systempaths=unconfined")
        results = host_matrix.run_in_pod(NOTEBOOKS, work, confinement)
    finally:
        undo_rmtree(str(work))
    assert set(results) == {path.name for path in NOTEBOOKS}, results
    for name, counted in results.items():
        assert counted["error cells"] == 0, (name, counted["errors"])
        assert counted["steps"].get("real", 0) > 0 and counted["refused"] == [], (name, counted)
