"""Hosts: which kind of host the lab runs on, and what a refused step means there.

A student meets the lab on one of three kinds of host, and the kind decides which steps the kernel allows
(README, "What runs where"):

    root        a VM or machine where you are root, with root's capabilities: every step is real
    rootless    an ordinary user whose kernel allows user namespaces (user_namespaces(7)): every step that
                needs root only over its own objects runs for real inside one, as rootless podman does;
                cgroup limits where the host delegates a subtree to you (cgroup-v2.rst, "Delegation")
    confined    a container such as a JupyterHub or Binder pod: no capabilities, and a seccomp filter or a
                policy that refuses unshare(CLONE_NEWUSER) (Docker's default profile refuses unshare, mount
                and setns to anyone without CAP_SYS_ADMIN): nothing that isolates can run in it

``current()`` finds out once per process by asking the kernel (a child tries unshare(CLONE_NEWUSER)) and
reading /proc/self/status (proc(5)). ``refuse()`` turns a refusal into the ``Step`` a notebook shows: what
the kernel answered, why on this kind of host, and a fix that this user can act on (inside a pod, "run as
root" is none), followed by the same step as it ran on the reference host (``labcore.lessons.evidence``).

Next: ``labcore.lessons.doctor`` probes each operation one by one, for the whole picture.
"""
from __future__ import annotations

import errno
import functools
import os
from dataclasses import dataclass

from labcore.errors import LabError, NeedsPrivilege
from labcore.kernel import procfs, syscalls
from labcore.lessons.evidence import NotRun, Step

CAP_SYS_ADMIN = 21                      # <linux/capability.h>
ROOT, ROOTLESS, CONFINED = "root", "rootless", "confined"
GENERIC_FIX = "run as root"             # the start of from_oserror's fix, which a user may not be able to take


@dataclass(frozen=True)
class Host:
    euid: int
    capable: bool                       # CAP_SYS_ADMIN in the effective set
    userns_refused: str | None          # None when unshare(CLONE_NEWUSER) works, else the errno's name
    seccomp: bool                       # a seccomp filter is on (Seccomp: 2)
    container: str | None               # docker, podman, kubernetes, as far as their marks tell

    @property
    def kind(self) -> str:
        if self.euid == 0 and self.capable:
            return ROOT
        return ROOTLESS if self.userns_refused is None else CONFINED

    def describe(self) -> str:
        """Who we are here, in the words of the kernel's answers."""
        if self.kind == ROOT:
            return "root with root's capabilities"
        who = "root without capabilities" if self.euid == 0 else f"uid {self.euid}, not root"
        if self.kind == ROOTLESS:
            return f"{who}; user namespaces allowed"
        where = f"a {self.container} container" if self.container else "a confined process"
        filtered = ", under a seccomp filter" if self.seccomp else ""
        return (f"{who}, in {where}{filtered}: unshare(CLONE_NEWUSER) gives {self.userns_refused}, so no user "
                f"namespace either")


@functools.lru_cache(maxsize=1)
def current() -> Host:
    status = procfs.status()
    return Host(euid=os.geteuid(), capable=bool(int(status.get("CapEff", "0"), 16) >> CAP_SYS_ADMIN & 1),
                userns_refused=try_user_namespace(), seccomp=status.get("Seccomp", "0").strip() == "2",
                container=container_marks())


def try_user_namespace() -> str | None:
    """Fork a child that calls unshare(CLONE_NEWUSER); None if the kernel allowed it, else the errno name."""
    pid = os.fork()
    if pid == 0:
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os._exit(0)
        except LabError as err:
            os._exit(err.errno or 255)
        except BaseException:
            os._exit(255)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return None if code == 0 else errno.errorcode.get(code, f"error {code}")


def container_marks() -> str | None:
    """The files and variables container engines leave behind (they prove little when absent)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "Kubernetes"
    for name, mark in (("Docker", "/.dockerenv"), ("podman", "/run/.containerenv")):
        if os.path.exists(mark):
            return name
    return None


# --- a refusal, explained -----------------------------------------------------------------------------------

def explain(error: Exception, host: Host | None = None) -> str:
    """What the kernel answered, why on this kind of host, and the fix this user can act on."""
    host = host or current()
    answered = getattr(error, "message", None) or str(error)
    fix = getattr(error, "fix", None)
    cause = getattr(error, "data", {}).get("why")        # what the step found out about this host, if anything
    if host.kind == CONFINED:
        why = (f"this host: {host.describe()}" + (f"; {cause}" if cause else "") + ". That is how JupyterHub, "
               "Binder and Docker run a notebook server, and the kernel lets nothing in here make namespaces, "
               "mount or pivot_root.")
        fix = ("nothing run in here can change it. To do this step yourself, run the lab on a machine or VM "
               "where you are root or may make user namespaces (`./lab up`), or ask the hub's administrator "
               "for such a server. Below, the step as it ran on the reference host.")
    elif host.kind == ROOTLESS:
        why = f"this host: {host.describe()}; " + (cause or "the lab did this inside a user namespace") + "."
        if not fix or fix.startswith(GENERIC_FIX):
            fix = ("this step needs root on the host itself, which a user namespace does not give: do it on a "
                   "machine or VM where you are root (`sudo ./lab up`). Below, the step as it ran there.")
    else:
        why = f"this host: {host.describe()}" + (f"; {cause}." if cause else ".")
    lines = [f"refused: {answered}", f"why here: {why}"]
    return "\n".join(lines + ([f"fix: {fix}"] if fix else []))


def refuse(title: str, action: str, error: Exception, kind: type[Step] = Step, key: str = "") -> Step:
    """The step this host forbids, as a ``Step`` (or the subclass ``kind``): the refusal explained, and the
    reference host's recording of it (kept under ``key``, else under the title)."""
    return kind.refused(title, action, explain(error), key)


def was_refused(value) -> bool:
    """Whether ``value`` is what a refused step left: the refused Step itself, or one of its NOT_RUN values."""
    return isinstance(value, NotRun) or (isinstance(value, Step) and not value.permitted)


def lacking(what: str, title: str, action: str, *inputs, key: str = "") -> Step | None:
    """The refused Step for a step whose input (``what``) a refused step was to make; None if all is there."""
    refused = next((value for value in inputs if was_refused(value)), None)
    if refused is None:
        return None
    cause = refused.reason.splitlines()[0].removeprefix("refused: ") if isinstance(refused, Step) else ""
    return refuse(title, action, NeedsPrivilege(f"this step needs {what}, which this host refused above",
                                                why=cause or None), key=key)
