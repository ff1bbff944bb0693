"""Errors that teach.

Every failure in the lab is a ``LabError``. It carries what was attempted (the syscall or command, with
its C name), the path it touched, any data that matters, and — most important for a student — how to fix
it. Errors from the kernel are raised ``from`` the original ``OSError`` so the errno is never lost.

    LabError
    ├── NeedsPrivilege      the kernel said EPERM/EACCES: a capability or a root-owned file is missing
    ├── NotSupportedHere    the kernel or host lacks the feature (EINVAL/ENOSYS/EOPNOTSUPP, no such file)
    ├── InvalidTransition   a container was asked to go from one state to one it cannot reach
    ├── NotFound            an image, container or object by that name does not exist
    └── BadInput            a value from the user is malformed; raised before anything is changed

Next: ``labcore.kernel.syscalls`` turns each failing syscall into one of these.
"""
from __future__ import annotations

import errno as _errno
import os


class LabError(Exception):
    """A failure with the syscall, path and data involved, and the fix."""

    def __init__(self, message: str, *, syscall: str | None = None, path: str | None = None,
                 fix: str | None = None, errno: int | None = None, **data):
        super().__init__(message)
        self.message = message
        self.syscall = syscall
        self.path = path
        self.fix = fix
        self.errno = errno
        self.data = data

    def __reduce__(self):
        # Errors cross from a child process to its parent by pickle; keep the keyword-only fields.
        return (_rebuild, (type(self), self.message, self.__dict__))

    def __str__(self) -> str:
        text = self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


def _rebuild(cls, message, fields):
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(fields)
    return error


class NeedsPrivilege(LabError):
    """The kernel refused for lack of privilege (EPERM, EACCES)."""


class NotSupportedHere(LabError):
    """This kernel or host does not offer the feature."""


class InvalidTransition(LabError):
    """A lifecycle step that the current state does not allow."""


class NotFound(LabError):
    """No object of that name."""


class BadInput(LabError):
    """A malformed value from the user; nothing has been changed."""


# EROFS too: a read-only mount is how a container runtime keeps /sys/fs/cgroup from its unprivileged processes.
_PRIVILEGE_ERRNOS = {_errno.EPERM, _errno.EACCES, _errno.EROFS}
_UNSUPPORTED_ERRNOS = {_errno.EINVAL, _errno.ENOSYS, _errno.EOPNOTSUPP, _errno.ENODEV}


def who_am_i() -> str:
    return "you are root" if os.geteuid() == 0 else f"you are uid {os.geteuid()}"


def from_oserror(err: OSError, syscall: str, path: str | None = None, fix: str | None = None,
                 **data) -> LabError:
    """Classify an OSError from ``syscall`` into the lab's hierarchy, with a message naming both."""
    code = err.errno or 0
    where = f" on {path}" if path else ""
    reason = os.strerror(code) if code else str(err)
    if code in _PRIVILEGE_ERRNOS:
        cls = NeedsPrivilege
        fix = fix or ("run as root, or inside a user namespace where you are root "
                      "(see `labcore doctor`)")
        message = f"{syscall}{where} was refused: {reason} ({who_am_i()})"
    elif code in _UNSUPPORTED_ERRNOS:
        cls = NotSupportedHere
        message = f"{syscall}{where} is not supported here: {reason}"
    elif code == _errno.ENOENT:
        cls = NotFound
        message = f"{syscall}{where} failed: {reason}"
    else:
        cls = LabError
        message = f"{syscall}{where} failed: {reason}"
    return cls(message, syscall=syscall, path=path, fix=fix, errno=code, **data)
