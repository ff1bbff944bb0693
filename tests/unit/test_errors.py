"""Errors name the syscall, the path and the fix, and survive the trip from a child to its parent."""
import errno
import pickle

from labcore.errors import BadInput, LabError, NeedsPrivilege, NotFound, NotSupportedHere, from_oserror


def test_classified_by_errno():
    cases = {errno.EPERM: NeedsPrivilege, errno.EACCES: NeedsPrivilege, errno.EINVAL: NotSupportedHere,
             errno.ENOSYS: NotSupportedHere, errno.ENOENT: NotFound, errno.EBUSY: LabError}
    for code, cls in cases.items():
        assert type(from_oserror(OSError(code, "x"), "mount")) is cls


def test_message_names_syscall_path_and_fix():
    error = from_oserror(OSError(errno.EPERM, "Operation not permitted"), "unshare(CLONE_NEWNS)", "/x")
    text = str(error)
    assert text.startswith("unshare(CLONE_NEWNS) on /x was refused: Operation not permitted")
    assert "fix:" in text and error.errno == errno.EPERM


def test_pickles_with_every_field():
    error = BadInput("--memory 10XB is not a size", fix="use 64m, 1g", path=None, flag="--memory")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is BadInput
    assert (copy.message, copy.fix, copy.data) == (error.message, error.fix, {"flag": "--memory"})
