"""The syscall seam: C names in messages, errors classified by errno, the recording fake."""
import errno
import os
from pathlib import Path

import pytest

from labcore.errors import LabError, NeedsPrivilege, NotSupportedHere
from labcore.kernel import syscalls


def test_flag_names_spell_flags_as_c_does():
    assert syscalls.clone_flag_names(syscalls.CLONE_NEWNS | syscalls.CLONE_NEWPID) == "CLONE_NEWNS|CLONE_NEWPID"
    assert syscalls.mount_flag_names(syscalls.MS_REC | syscalls.MS_PRIVATE) == "MS_REC|MS_PRIVATE"
    assert syscalls.mount_flag_names(0) == "0"


def test_recorder_keeps_the_order_of_calls():
    with syscalls.use(syscalls.Recorder()) as rec:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        syscalls.pivot_root("/new", "/new/old")
    assert rec.names() == ["unshare", "mount", "pivot_root"]
    assert rec.calls[1] == ("mount", (None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE, None))


def test_recorder_is_only_active_inside_the_block():
    with syscalls.use(syscalls.Recorder()):
        pass
    assert isinstance(syscalls.backend(), syscalls.Kernel)


def test_recorder_injects_failures_classified_by_errno():
    with syscalls.use(syscalls.Recorder(fail={"unshare": errno.EPERM, "pivot_root": errno.EINVAL})):
        with pytest.raises(NeedsPrivilege) as refused:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
        with pytest.raises(NotSupportedHere):
            syscalls.pivot_root("/a", "/a/b")
    assert refused.value.syscall == "unshare"
    assert "run as root" in str(refused.value)


def test_real_kernel_error_names_the_syscall_its_flags_and_the_path(tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(Exception) as failed:
        syscalls.Kernel().mount(None, str(missing), None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    error = failed.value
    assert "MS_REC|MS_PRIVATE" in error.syscall
    assert error.path == str(missing)
    assert error.errno in (errno.ENOENT, errno.EPERM, errno.EINVAL)


def test_clone_into_a_directory_that_is_no_cgroup_is_refused_naming_clone3_and_the_path(tmp_path):
    """The kernel checks the fd before the child is ever seen (cgroup_can_fork, in copy_process, unwinds it:
    EBADF from cgroup_get_from_file): no child, an error that names the call and the directory. Made for
    real: it needs no privilege."""
    if not syscalls.clone3_allowed():
        pytest.skip("clone3 is not allowed here (Linux before 5.3, or a seccomp profile answers ENOSYS)")
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = children.read_text().split()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(LabError) as refused:
            if syscalls.clone_into_cgroup(fd) == 0:
                os._exit(0)                 # a child, against expectation: it must not run the rest of pytest
    finally:
        os.close(fd)
    assert refused.value.syscall == "clone3(CLONE_INTO_CGROUP)" and refused.value.path == str(tmp_path)
    assert refused.value.errno == errno.EBADF
    assert children.read_text().split() == before


def test_whether_clone3_is_allowed_is_asked_of_the_kernel_once_and_a_fake_kernel_has_none(monkeypatch):
    kernel, asked = syscalls.Kernel(), []
    real_syscall = kernel._libc.syscall
    monkeypatch.setattr(kernel, "_libc", type("Libc", (), {
        "syscall": staticmethod(lambda *args: (asked.append(args), real_syscall(*args))[1])})())
    assert kernel.clone3_allowed() == kernel.clone3_allowed() and len(asked) == 1
    with syscalls.use(syscalls.Recorder()) as recorder:
        assert syscalls.clone3_allowed() is False
    assert recorder.names() == ["clone3_allowed"]
