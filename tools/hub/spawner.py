"""The spawner: each student's single-user server as that student, inside their own limited cgroup.

JupyterHub's ``LocalProcessSpawner`` forks the server from the hub (root), switches to the student's uid, gid
and groups in the child (``set_user_setuid``), and execs it. ``LabSpawner`` adds these steps to it:

    start   make the student's group (``tools.hub.fairness``) and, in the child before it drops root, move
            the child into it: the server and everything it starts are held to the class's limits
    start   the server's command begins with ``course.py``, which, as the student, copies or updates the
            course in their home, then execs jupyterhub-singleuser
    start   the server's kernels talk on Unix sockets in the student's home, not on loopback TCP ports
            (``kernel_transport``)
    stop    after the server: every process left in the student's group killed (detached containers
            too), then the student's own `labcore cleanup` (their journal, as them: every record's owner is
            dead now, so all is undone), then the group removed

Why this spawner, and not SystemdSpawner or sudospawner: it runs wherever the hub runs as root, with or
without systemd (this project's CI host has none; neither does a container or the cgroup v2 guest of
tests/vm), and the per-student group is made by the same cgroup manager, v1 or v2, that limits the lab's
containers. On a systemd VM it works the same way (its groups sit beside systemd's at the top, as Docker's
cgroupfs driver puts /sys/fs/cgroup/docker). SystemdSpawner gives MemoryMax=/CPUQuota=/TasksMax= per
student too, but only where systemd runs, and its unit would have to be delegated and the server moved into
a leaf of it for the lab's own per-container groups. sudospawner lets the hub run unprivileged, but the
groups must still be made by root.
"""
from __future__ import annotations

import asyncio
import os
import pwd
import subprocess

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import Any, Unicode


SUN_PATH_MAX = 107          # bytes of a Unix socket's path, its NUL aside (unix(7): sun_path[108])
# jupyter_client's longest socket path below a home: the runtime directory (jupyter_core.paths), the kernel's
# connection file's name without .json, then "-ipc-N" (connect.py, ConnectionFileMixin._ip_default)
KERNEL_SOCKETS = "/.local/share/jupyter/runtime/kernel-" + "0" * 36 + "-ipc-99"


def kernel_transport(home: str) -> list[str]:
    """The server's arguments that put the student's kernels on Unix sockets in their own runtime directory,
    not on loopback TCP ports, which every user of the VM shares.

    On TCP, jupyter_client picks a kernel's five ports by binding port 0 and closing the socket (connect.py,
    LocalPortCache; jupyter_client issue #487). Ten servers do that at once, and any connection's ephemeral
    port comes from the same range, so a port may be taken before the kernel binds it. Its restarts then
    keep the same cached ports: a full run here saw one kernel fail five times with "ZMQError: Address
    already in use" and die. Unix sockets under the student's home are theirs alone: no race for a name,
    and no other student can even connect to them. Where the home is so long that a socket's path would
    not fit in sun_path, the kernels stay on TCP. The home is taken as jupyter_core takes it, links resolved
    (paths.get_home_dir), and the runtime directory as its default: the servers' environment names none
    (JUPYTER_RUNTIME_DIR, JUPYTER_DATA_DIR, XDG_DATA_HOME; ``c.Spawner.environment``)."""
    if len(os.fsencode(os.path.realpath(home) + KERNEL_SOCKETS)) > SUN_PATH_MAX:
        return []
    return ["--KernelManager.transport=ipc"]


class LabSpawner(LocalProcessSpawner):
    fairness = Any(help="a tools.hub.fairness.Fairness: makes each student's group").tag(config=True)
    labcore = Unicode(help="the labcore command, for each student's own cleanup after their server").tag(
        config=True)

    student_group = None

    def make_preexec_fn(self, name):
        drop_root = set_user_setuid(name)
        group, fairness = self.student_group, self.fairness

        def preexec():                      # in the forked child, before exec: still root here
            if group is not None:
                fairness.enter(group, os.getpid())
            drop_root()
        return preexec

    def get_args(self) -> list[str]:
        return kernel_transport(pwd.getpwnam(self.user.name).pw_dir) + super().get_args()   # c.Spawner.args win

    async def start(self):
        if self.fairness is not None:
            user = pwd.getpwnam(self.user.name)
            self.student_group = self.fairness.make(self.user.name, user.pw_uid, user.pw_gid)
        try:
            return await super().start()
        except BaseException:
            self.remove_student_group()
            raise

    async def stop(self, now=False):
        await super().stop(now=now)
        await asyncio.to_thread(self.end_student_session)      # seconds of work: not on the hub's loop

    def end_student_session(self) -> None:
        if self.student_group is not None:
            self.fairness.kill(self.student_group)
        self.clean_up_as_student()
        self.remove_student_group()

    def clean_up_as_student(self) -> None:
        """`labcore cleanup` as the student, in their environment: undo what their containers left in their
        state directory (their journal is theirs; root would not tell their objects from anyone's)."""
        if not self.labcore:
            return
        user = pwd.getpwnam(self.user.name)
        environment = {"HOME": user.pw_dir, "USER": user.pw_name, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        done = subprocess.run([self.labcore, "cleanup"], env=environment, cwd=user.pw_dir,
                              preexec_fn=set_user_setuid(self.user.name), capture_output=True, text=True,
                              timeout=120)
        if done.returncode != 0:
            self.log.warning("labcore cleanup as %s: %s", self.user.name, done.stderr.strip()[-500:])

    def remove_student_group(self) -> None:
        group, self.student_group = self.student_group, None
        if group is not None:
            self.fairness.remove(group)
