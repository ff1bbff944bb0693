"""tools/hub without a hub: the roster, the course's copy in a home, a student's cgroup on a fake v2 tree, the
JupyterHub configuration, the spawner's order of steps in the child, and the kernel messages of a cell.
(tests/hub runs the real thing, as root.)"""
import asyncio
import json
import os
from pathlib import Path

import pytest

from tests.unit.test_cgroups_v2 import FakeV2
from tools.hub import course, roster
from tools.hub.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


# --- the roster -------------------------------------------------------------------------------------------

def test_a_roster_gives_names_and_optional_passwords_and_skips_comments():
    students = roster.parse("# class of 2026\nalice\n\nbob  open sesame  # his own\n")
    assert [(s.name, s.password) for s in students] == [("alice", None), ("bob", "open sesame")]


@pytest.mark.parametrize("text, says", [
    ("alice\nAlice\n", "line 2: 'Alice' is not a user name"),
    ("alice\nalice\n", "line 2: 'alice' is listed twice"),
    ("root\n", "line 1: 'root' is a system account (uid 0)"),
    ("-rf\n", "starting with a letter or '_'"),
])
def test_a_bad_roster_line_is_refused_with_its_number_and_the_accepted_form(text, says):
    with pytest.raises(roster.RosterError) as caught:
        roster.parse(text)
    assert says in str(caught.value)


# --- the course in a home ----------------------------------------------------------------------------------

@pytest.fixture
def course_dirs(tmp_path):
    source, home = tmp_path / "course", tmp_path / "home" / "labcore-course"
    (source / "05-labfile").mkdir(parents=True)
    (source / "03.ipynb").write_text("v1 of 03")
    (source / "05-labfile" / "Labfile").write_text("FROM busybox")
    (source / ".ipynb_checkpoints").mkdir()
    (source / ".ipynb_checkpoints" / "03-checkpoint.ipynb").write_text("not part of the course")
    return source, home


def test_the_first_login_copies_the_course_and_the_next_changes_nothing(course_dirs):
    source, home = course_dirs
    assert course.sync(source, home)["copied"] == ["03.ipynb", "05-labfile/Labfile"]
    assert (home / "03.ipynb").read_text() == "v1 of 03" and not (home / ".ipynb_checkpoints").exists()
    again = course.sync(source, home)
    assert again["unchanged"] == ["03.ipynb", "05-labfile/Labfile"] and not again["copied"]


def test_an_update_replaces_untouched_files_and_never_the_students_own(course_dirs):
    source, home = course_dirs
    course.sync(source, home)
    (home / "03.ipynb").write_text("my answers")                  # the student's work
    (source / "03.ipynb").write_text("v2 of 03")
    (source / "05-labfile" / "Labfile").write_text("FROM busybox\nRUN true")
    done = course.sync(source, home)
    assert done["kept"] == ["03.ipynb"] and done["updated"] == ["05-labfile/Labfile"]
    assert (home / "03.ipynb").read_text() == "my answers"
    assert (home / "03.updated.ipynb").read_text() == "v2 of 03"  # the new version beside it
    assert (home / "05-labfile" / "Labfile").read_text().endswith("RUN true")


def test_a_deleted_notebook_comes_back_and_a_planted_link_is_not_followed(course_dirs, tmp_path):
    source, home = course_dirs
    course.sync(source, home)
    (home / "03.ipynb").unlink()
    (home / "05-labfile" / "Labfile").unlink()
    secret = tmp_path / "someone-elses"
    secret.write_text("theirs")
    (home / "05-labfile" / "Labfile").symlink_to(secret)
    (source / "05-labfile" / "Labfile").write_text("v2")
    done = course.sync(source, home)
    assert done["copied"] == ["03.ipynb"] and done["kept"] == ["05-labfile/Labfile"]
    assert secret.read_text() == "theirs"


def test_the_launcher_execs_the_server_with_the_spawners_arguments(course_dirs, monkeypatch):
    source, home = course_dirs
    monkeypatch.setenv("HOME", str(home.parent))
    execs = []
    monkeypatch.setattr(os, "execvp", lambda program, argv: execs.append(argv))
    course.main(["--course", str(source), "--into", "labcore-course", "--", "jupyterhub-singleuser", "--debug"])
    assert execs == [["jupyterhub-singleuser", "--debug"]] and (home / "03.ipynb").exists()


# --- a student's cgroup -------------------------------------------------------------------------------------

@pytest.fixture
def fairness_v2(tmp_path, monkeypatch):
    from tools.hub.fairness import Fairness, class_limits
    fake = FakeV2(tmp_path, monkeypatch)
    chowned = []
    monkeypatch.setattr(os, "chown", lambda path, uid, gid: chowned.append((str(path), uid, gid)))
    fairness = Fairness(tmp_path / "hub", class_limits("512m", "0.5", "100"), manager=fake.manager)
    fairness.chowned, fairness.fake, fairness.made = chowned, fake, []
    yield fairness
    for student in fairness.made:                     # a fake tree: its records are dropped, not undone
        for entry in student.scope.release():
            student.scope.journal.forget(entry)


def test_a_students_group_carries_the_class_limits_and_is_delegated_on_v2(fairness_v2):
    student = fairness_v2.make("alice", 2001, 2001)
    fairness_v2.made.append(student)
    top = fairness_v2.fake.mount / "labcore/labcore-hub-alice"
    assert (top / "memory.max").read_text() == str(512 << 20)
    assert (top / "cpu.max").read_text() == "50000 100000" and (top / "pids.max").read_text() == "100"
    # The student gets the directory and the three delegation files, the limits stay root's; the leaf is theirs.
    chowned = {Path(path).relative_to(top).as_posix() for path, uid, _ in fairness_v2.chowned if uid == 2001}
    assert {".", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"} <= chowned
    assert "memory.max" not in chowned and "pids.max" not in chowned
    assert "labcore-session" in chowned and "labcore-session/cgroup.procs" in chowned
    assert {"cpu", "memory", "pids"} <= set((top / "cgroup.subtree_control").read_text().split())


def test_the_server_starts_in_the_leaf_below_the_delegated_group(fairness_v2):
    student = fairness_v2.make("alice", 2001, 2001)
    fairness_v2.made.append(student)
    fairness_v2.enter(student, 4242)
    assert fairness_v2.fake.writes[-1] == ("labcore/labcore-hub-alice/labcore-session/cgroup.procs", "4242")


def test_a_killed_group_counts_as_empty_only_once_the_kernel_says_it_is_unpopulated(tmp_path, monkeypatch):
    # A threaded process whose leader has exited is gone from cgroup.procs while its last thread is still
    # exiting; rmdir answers EBUSY until cgroup.events says "populated 0" (CI saw it in the hub guest).
    from tools.hub import fairness
    group = tmp_path / "labcore-hub-alice"
    (group / "labcore-session").mkdir(parents=True)
    for here in (group, group / "labcore-session"):
        (here / "cgroup.procs").write_text("")
    (group / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    (group / "cgroup.kill").write_text("")
    waits = []

    def wait(seconds):        # the last thread leaves during the second wait
        waits.append(seconds)
        if len(waits) == 2:
            (group / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    monkeypatch.setattr(fairness.time, "sleep", wait)
    fairness.kill_subtree(group)
    assert len(waits) == 2 and (group / "cgroup.kill").read_text() == "1"


def test_bad_class_limits_are_refused_in_dockers_words():
    from labcore.errors import BadInput
    from tools.hub.fairness import class_limits
    with pytest.raises(BadInput, match="memory"):
        class_limits(memory="lots")


# --- the spawner and the configuration ---------------------------------------------------------------------

def test_the_server_enters_its_group_before_it_drops_root(monkeypatch):
    from tools.hub import spawner
    order = []
    monkeypatch.setattr(spawner, "set_user_setuid", lambda name: lambda: order.append(f"setuid {name}"))

    class Fairness:
        def enter(self, group, pid):
            order.append(f"enter {group} {pid}")

    lab = spawner.LabSpawner.__new__(spawner.LabSpawner)
    lab._trait_values = {"fairness": Fairness()}
    lab.student_group = "labcore-hub-alice"
    lab.make_preexec_fn("alice")()
    assert order == [f"enter labcore-hub-alice {os.getpid()}", "setuid alice"]


def load_config(tmp_path, monkeypatch, **overrides) -> object:
    from traitlets.config import Config
    settings = Settings(state=str(tmp_path / "hub"), proxy="/usr/bin/true", students=["alice"], **overrides)
    monkeypatch.setenv("LABCORE_HUB_SETTINGS", str(settings.write()))
    config = Config()
    source = (ROOT / "tools/hub/jupyterhub_config.py").read_text()
    exec(compile(source, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    return config


def test_the_config_spawns_each_student_as_themselves_with_the_course_first(tmp_path, monkeypatch):
    from tools.hub.spawner import LabSpawner
    c = load_config(tmp_path, monkeypatch)
    assert c.JupyterHub.spawner_class is LabSpawner and c.JupyterHub.authenticator_class == "pam"
    assert c.PAMAuthenticator.allowed_groups == {"labcore-class"} and c.Authenticator.allowed_users == {"alice"}
    assert c.Spawner.cmd[1].endswith("tools/hub/course.py") and c.Spawner.cmd[-1].endswith(
        "jupyterhub-singleuser")
    assert c.Spawner.default_url == "/lab/tree/labcore-course/00-start-here.ipynb"
    assert "LABCORE_HOME" not in c.Spawner.environment      # each student's state in their own home
    assert c.LabSpawner.fairness.limits.pids == 512


def test_self_made_accounts_use_the_first_use_authenticator_and_make_the_linux_user(tmp_path, monkeypatch):
    pytest.importorskip("firstuseauthenticator")
    from jupyterhub.auth import LocalAuthenticator
    c = load_config(tmp_path, monkeypatch, auth="firstuse")
    assert issubclass(c.JupyterHub.authenticator_class, LocalAuthenticator)
    assert c.LocalAuthenticator.create_system_users is True
    assert c.LocalAuthenticator.add_user_cmd[1:] == [str(ROOT / "tools/hub/roster.py"), "add", "--group",
                                                     "labcore-class"]


# --- a cell through the kernel's websocket -------------------------------------------------------------------

class FakeSocket:
    """The server's side of a kernel websocket: answers an execute_request with a scripted set of messages,
    one of them another request's."""

    def __init__(self):
        self.sent, self.queue = [], []

    async def write_message(self, text):
        request = json.loads(text)
        self.sent.append(request)
        mine = {"msg_id": request["header"]["msg_id"]}

        def message(kind, content, parent=mine, channel="iopub"):
            return json.dumps({"channel": channel, "msg_type": kind, "content": content, "parent_header": parent,
                               "header": {"msg_type": kind}, "metadata": {}})
        self.queue = [message("status", {"execution_state": "busy"}),
                      message("stream", {"name": "stdout", "text": "someone else's"}, parent={"msg_id": "x"}),
                      message("stream", {"name": "stdout", "text": "== Step\n"}),
                      message("error", {"ename": "OSError", "evalue": "EPERM", "traceback": []}),
                      message("execute_reply", {"status": "error"}, channel="shell"),
                      message("status", {"execution_state": "idle"})]

    async def read_message(self):
        return self.queue.pop(0)


def test_a_cells_outputs_are_the_iopub_messages_that_name_it_until_idle():
    from tools.hub.kernelapi import execute
    socket = FakeSocket()
    outputs = asyncio.run(execute(socket, "session", "alice", "print(1)"))
    assert [o.output_type for o in outputs] == ["stream", "error"]
    assert outputs[0].text == "== Step\n" and outputs[1].ename == "OSError"
    content = socket.sent[0]["content"]
    assert content["code"] == "print(1)" and content["stop_on_error"] is False


def test_kernels_talk_on_unix_sockets_in_the_students_home_where_the_path_fits(tmp_path):
    """jupyter_client's ipc socket paths (runtime dir, kernel id, "-ipc-N") must fit in sun_path: the kernel
    says where its limit is (a path of SUN_PATH_MAX bytes binds, one byte more does not)."""
    import socket

    from tools.hub.spawner import KERNEL_SOCKETS, SUN_PATH_MAX, kernel_transport
    assert kernel_transport("/home/labcore-0167-s09") == ["--KernelManager.transport=ipc"]
    longest = "/home/" + "a" * (SUN_PATH_MAX - len("/home/") - len(KERNEL_SOCKETS))
    assert kernel_transport(longest) == ["--KernelManager.transport=ipc"]
    assert kernel_transport(longest + "a") == []                      # the kernels stay on TCP
    base = str(tmp_path) + "/"
    for size, fits in ((SUN_PATH_MAX, True), (SUN_PATH_MAX + 1, False)):
        path = base + "s" * (size - len(base))
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.bind(path)
                bound = True
            except OSError:
                bound = False
        assert bound is fits, (size, path)


def test_the_socket_paths_measured_are_jupyter_clients_own(tmp_path, monkeypatch):
    """KERNEL_SOCKETS, as jupyter_core and jupyter_client make the names: the runtime directory below the home
    when the environment names none (the servers' does not), and an ipc kernel's "ip" from its connection file."""
    import uuid

    from jupyter_client.manager import KernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    from tools.hub.spawner import KERNEL_SOCKETS
    for name in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "XDG_DATA_HOME", "JUPYTER_PLATFORM_DIRS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    runtime = jupyter_runtime_dir()
    kernel = KernelManager(transport="ipc", connection_file=f"{runtime}/kernel-{uuid.uuid4()}.json")
    assert len(f"{kernel.ip}-99") == len(str(tmp_path) + KERNEL_SOCKETS)
    assert f"{kernel.ip}-99".startswith(str(tmp_path) + KERNEL_SOCKETS.split("kernel-")[0] + "kernel-")
