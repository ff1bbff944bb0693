"""02's Docker steps without a daemon: what the daemon answered is said as it was, and the process tree's drawing
names the shim's adopter as /proc showed it."""
from types import SimpleNamespace

import pytest

from labcore.errors import NeedsPrivilege, NotFound, NotSupportedHere
from labcore.lessons import client_server


@pytest.mark.parametrize("status, explanation, kind, fix", [
    (404, "No such image: busybox:latest", NotFound, "docker pull busybox"),
    (409, 'Conflict. The container name "/labcore-box-a" is already in use', None, "docker rm -f"),
    (500, "error mounting: operation not permitted", NeedsPrivilege, "root"),
    (500, "failed to create shim task: OCI runtime create failed", NotSupportedHere, "log"),
])
def test_the_daemons_answer_is_not_always_a_privilege_refusal(status, explanation, kind, fix):
    error = client_server.daemon_answer(SimpleNamespace(status_code=status, explanation=explanation))
    assert f"the daemon answered {status}: {explanation}" == error.message and fix in error.fix
    assert type(error) is kind if kind else not isinstance(error, (NeedsPrivilege, NotFound, NotSupportedHere))


def test_the_shims_adopter_is_called_init_only_when_it_is_pid_1():
    def facts(pid, ppid, name="x", state="S"):
        return {"pid": pid, "ppid": ppid, "name": name, "state": state, "parent": "systemd"}
    before = {"dockerd": facts(10, 5), "containerd": facts(11, 10), "shim": facts(12, 1), "container": facts(13, 12)}
    data = {"before": before, "after": before}
    assert "the host's init" in client_server.docker_tree_dot(data)
    before["shim"] = facts(12, 777)
    drawn = client_server.docker_tree_dot(data)
    assert "subreaper" in drawn and "the host's init" not in drawn
