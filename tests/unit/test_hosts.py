"""labcore.lessons.hosts: the kind of host, and a refusal explained with a fix this user can act on."""
from labcore.errors import NeedsPrivilege
from labcore.lessons import hosts
from labcore.lessons.evidence import NOT_RUN, Mode, Step

ROOT = hosts.Host(euid=0, capable=True, userns_refused=None, seccomp=False, container=None)
STUDENT = hosts.Host(euid=1001, capable=False, userns_refused=None, seccomp=False, container=None)
POD = hosts.Host(euid=1000, capable=False, userns_refused="EPERM", seccomp=True, container="Docker")
GENERIC = NeedsPrivilege("mount(overlay) was refused: Operation not permitted (you are uid 1000)",
                         fix="run as root, or inside a user namespace where you are root (see `labcore doctor`)")


def test_three_kinds_of_host():
    assert (ROOT.kind, STUDENT.kind, POD.kind) == (hosts.ROOT, hosts.ROOTLESS, hosts.CONFINED)
    assert hosts.Host(0, False, "EPERM", True, "Docker").kind == hosts.CONFINED     # root with no capabilities
    assert "unshare(CLONE_NEWUSER) gives EPERM" in POD.describe() and "Docker" in POD.describe()


def test_in_a_pod_the_fix_never_says_run_as_root():
    text = hosts.explain(GENERIC, POD)
    assert text.startswith("refused: mount(overlay) was refused")
    assert "JupyterHub, Binder and Docker" in text and "run as root" not in text and "sudo" not in text
    assert "./lab up" in text


def test_as_a_user_a_generic_fix_becomes_where_to_do_it_and_a_specific_one_stays():
    assert "machine or VM where you are root" in hosts.explain(GENERIC, STUDENT)
    specific = NeedsPrivilege("mkdir refused", fix="ask for a delegated subtree", why="nothing is delegated")
    text = hosts.explain(specific, STUDENT)
    assert "fix: ask for a delegated subtree" in text and "nothing is delegated" in text


def test_a_step_given_what_a_refused_step_left_is_refused_naming_it():
    refused = Step.refused("overlay", "mount", "refused: mount(overlay) was refused: EPERM\nwhy here: ...")
    step = hosts.lacking("an overlay", "read etc/passwd", "cat", refused)
    assert step.mode is Mode.NOT_PERMITTED and "needs an overlay, which this host refused above" in step.reason
    assert "mount(overlay) was refused" in step.reason
    assert hosts.lacking("a pid", "join", "setns", NOT_RUN).mode is Mode.NOT_PERMITTED
    assert hosts.lacking("a pid", "join", "setns", 42) is None


def test_this_process_is_probed_once_by_the_kernel():
    found = hosts.current()
    assert found is hosts.current() and found.euid >= 0
    assert found.userns_refused in (None, "EPERM", "ENOSPC", "EINVAL", "EACCES")
