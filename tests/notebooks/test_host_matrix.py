"""The host matrix (issue 11; README, "What runs where"): every notebook executed on each kind of host a student
meets, every cell run even after an error, the error cells counted: zero on every host.

As root, nbval's run of the notebooks is the root row; these tests add the other two, through
``tools/host_matrix.py``: an ordinary user with user namespaces (`labcore-student`, made by `./lab test`), and
a pod made as JupyterHub or Binder makes one (uid 1000, no capabilities, Docker's own default seccomp profile,
no user namespaces). Run by anyone else, the row is that user's own host (nbval compares root's stored
outputs, so it runs as root only).
"""
import os
import pwd

import pytest

from tools import host_matrix
from labcore.lessons.dockerd import dockerd_unavailable_reason

pytestmark = pytest.mark.matrix
# As an ordinary user everything runs for real but what needs root on the host itself: limits on a cgroup v1
# host (nothing is delegated there). The network is the user-mode one (labcore.kernel.usernet): real.
NEEDS_THE_HOST = {"02-client-server.ipynb": {"Docker's processes: dockerd, containerd, the shim, the container"},
                  "04-control-groups.ipynb": None,                  # None: any step may be refused
                  "07-containers-vs-vms.ipynb": set(),
                  # a qdisc and nftables rules on the host's side of the box's veth: root of the host only
                  "08-build-your-own-docker-run.ipynb": {
                      "box.join_cgroup()", "bandwidth: tc tbf rate 16mbit on the box's veth",
                      "publish with DNAT: host port 18810 -> the box's port 8080",
                      "MASQUERADE: the box reaches another network as the host"},
                  # --user 1000 rootless: only uid 0 is mapped (no newuidmap); the memory escape needs a limit
                  "09-security.ipynb": {"Capabilities, decoded", "Escape: Lift its own memory limit (--memory 32m)"}}


def has_student() -> bool:
    try:
        return pwd.getpwnam(host_matrix.STUDENT).pw_uid != 0
    except KeyError:
        return False


def errors_of(results: dict) -> list[str]:
    return [f"{name} {error}" for name, notebook in results.items() for error in notebook["errors"]]


@pytest.mark.skipif(os.geteuid() != 0 or not has_student(),
                    reason="runs the notebooks as the user labcore-student: needs root and that user "
                           "(./lab test makes it)")
def test_as_an_ordinary_user_every_notebook_runs_without_an_error_cell_and_for_real():
    results = host_matrix.run_host("student", host_matrix.NOTEBOOKS)
    assert not errors_of(results), "\n".join(errors_of(results))
    for name, notebook in results.items():
        allowed = NEEDS_THE_HOST.get(name, set())
        if allowed is not None:
            assert set(notebook["refused"]) <= allowed, f"{name}: refused {notebook['refused']}"
        assert notebook["steps"].get("refused, no recording", 0) == 0, f"{name}: a refusal with no recording"


@pytest.mark.skipif(os.geteuid() != 0 or bool(dockerd_unavailable_reason()),
                    reason=f"the pod is made by a private dockerd: {dockerd_unavailable_reason()}")
def test_in_a_binder_like_pod_every_notebook_runs_without_an_error_cell():
    results = host_matrix.run_host("pod", host_matrix.NOTEBOOKS)
    assert not errors_of(results), "\n".join(errors_of(results))
    totals = host_matrix.totals(results)
    assert totals["steps"].get("refused, no recording", 0) == 0, [
        (name, notebook["refused"]) for name, notebook in results.items()
        if notebook["steps"].get("refused, no recording")]
    assert totals["steps"].get("real", 0) > 0          # the daemon, the socket, images: real even here


@pytest.mark.skipif(os.geteuid() == 0, reason="as root, nbval's run of the notebooks is this host's row")
def test_on_this_host_every_notebook_runs_without_an_error_cell():
    results = host_matrix.run_here(host_matrix.NOTEBOOKS)
    assert not errors_of(results), "\n".join(errors_of(results))
