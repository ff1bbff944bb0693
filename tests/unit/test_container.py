"""Docker's rules without root: the command line (ENTRYPOINT and CMD), the environment, --user, and bad
input refused before anything is created."""
import os

import pytest

from labcore import paths
from labcore.errors import BadInput, NotFound
from labcore.kernel import journal
from labcore.runtime import container, spec
from labcore.runtime.container import Spec, command_line, environment, parse_user

IMAGE = {"Entrypoint": ["/entry"], "Cmd": ["default", "args"], "Env": ["PATH=/image/bin", "A=image"]}


@pytest.mark.parametrize("spec, argv", [
    (Spec("x"), ["/entry", "default", "args"]),                             # Entrypoint + Cmd
    (Spec("x", cmd=["ls", "-l"]), ["/entry", "ls", "-l"]),                    # CMD replaces the image's Cmd
    (Spec("x", entrypoint=["sh"]), ["sh"]),                                   # --entrypoint drops the image's Cmd
    (Spec("x", entrypoint=["sh"], cmd=["-c", "id"]), ["sh", "-c", "id"]),     # ...unless a CMD is given
    (Spec("x", entrypoint=[], cmd=["id"]), ["id"]),                           # --entrypoint "" clears it
])
def test_command_line_follows_dockers_entrypoint_and_cmd_rules(spec, argv):
    assert command_line(IMAGE, spec) == argv


def test_image_without_cmd_and_nothing_given_is_refused():
    with pytest.raises(BadInput, match="no command specified"):
        command_line({"Entrypoint": None, "Cmd": None}, Spec("x"))


def test_environment_is_the_images_then_the_users(monkeypatch):
    monkeypatch.setenv("FROM_CALLER", "yes")
    monkeypatch.delenv("NOT_SET", raising=False)
    spec = Spec("x", env=["A=mine", "B=2", "FROM_CALLER", "NOT_SET", "PATH"], tty=True)
    env = dict(item.split("=", 1) for item in environment(IMAGE, spec, "box1", uid=0))
    assert env["A"] == "mine" and env["B"] == "2"                 # -e wins over the image's Env
    assert env["FROM_CALLER"] == "yes"                            # -e NAME passes the caller's value on
    assert "NOT_SET" not in env
    assert env["PATH"] == os.environ["PATH"]                      # even over the image's
    assert env["HOSTNAME"] == "box1" and env["TERM"] == "xterm" and env["HOME"] == "/root"


def test_path_defaults_to_dockers_when_the_image_has_none():
    env = environment({}, Spec("x"), "h", uid=1000)
    assert f"PATH={container.DEFAULT_PATH}" in env and "HOME=/" in env


@pytest.mark.parametrize("user, ids", [("0", (0, 0)), ("1000", (1000, 0)), ("1000:100", (1000, 100))])
def test_user_is_uid_or_uid_and_gid(user, ids):
    assert parse_user(user) == ids


@pytest.mark.parametrize("user", ["-1", "", "a b", "1000:", ":5", "x:y:z"])
def test_malformed_users_are_refused_naming_the_accepted_form(user):
    from labcore.runtime.users import check_user
    with pytest.raises(BadInput, match="NAME|UID"):
        check_user(user)


def test_user_names_and_supplementary_groups_come_from_the_images_files(tmp_path):
    from labcore.runtime.users import Identity, resolve
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nwheel:x:10:root\nwww:x:33:\nlogs:x:4:web,root\n")
    assert resolve("root", tmp_path) == Identity(0, 0, (0, 10, 4))
    assert resolve("web", tmp_path) == Identity(33, 33, (33, 4))
    assert resolve("1000", tmp_path) == Identity(1000, 0, (0,))          # docker: uid=1000 gid=0 groups=0
    assert resolve("1000:1000", tmp_path) == Identity(1000, 1000, (1000,))
    assert resolve("web:root", tmp_path).gid == 0
    with pytest.raises(BadInput, match="no matching entries in passwd"):
        resolve("nosuch", tmp_path)


@pytest.mark.parametrize("spec, message", [
    (Spec("busybox", user="a b"), "invalid user"),
    (Spec("busybox", cap_add=["NOPE"]), "unknown capability"),
    (Spec("busybox", security_opt=["apparmor=unconfined"]), "invalid --security-opt"),
    (Spec("busybox", security_opt=["seccomp=/nonexistent.json"]), "opening seccomp profile"),
    (Spec("busybox", devices=["/etc/passwd"]), "not a device node"),
    (Spec("busybox", devices=["relative"]), "invalid device specification"),
    (Spec("busybox", env=["=value"]), "invalid environment variable"),
    (Spec("busybox", workdir="relative"), "absolute path"),
    (Spec("busybox", hostname="no spaces"), "invalid hostname"),
    (Spec("busybox", name="-bad"), "invalid container name"),
    (Spec("busybox", id="123"), "64 lowercase hex"),
])
def test_bad_input_is_refused_before_anything_is_created(spec, message):
    with journal.Scope() as scope, container.Stdio("capture") as io:
        with pytest.raises(BadInput, match=message):
            container.create(spec, scope, io)
    assert not paths.containers_dir().exists()
    assert not journal.Journal().entries()


def test_an_unknown_image_is_not_found_before_anything_is_created():
    with journal.Scope() as scope, container.Stdio("capture") as io:
        with pytest.raises(NotFound, match="No such image: nosuch:latest"):
            container.create(Spec("nosuch"), scope, io)
    assert not paths.containers_dir().exists()


def test_defaults_id_is_64_hex_and_hostname_its_first_12():
    spec = Spec("busybox")
    assert len(spec.id) == 64 and int(spec.id, 16) >= 0
    container.check_spec(spec)
    assert (spec.hostname or spec.id[:12]) == spec.id[:12]


def test_plan_puts_the_root_in_the_containers_directory(monkeypatch):
    image = type("Image", (), {"config": IMAGE | {"WorkingDir": "/srv", "User": "5:6"}})()
    monkeypatch.setattr(spec, "find_image", lambda ref: image)
    plan = container.plan_for(Spec("busybox", cmd=["id"]))
    assert plan.root == str(paths.containers_dir() / plan.id / "rootfs")
    assert (plan.argv, plan.workdir, plan.uid, plan.gid) == (["/entry", "id"], "/srv", 5, 6)
    assert plan.hostname == plan.id[:12]


def test_unknown_stdio_mode_is_refused():
    with pytest.raises(BadInput, match="inherit, capture or tty"):
        container.Stdio("files")


def test_result_shows_output_and_exit_code():
    assert str(container.Result("id", ["sh"], 42, b"out\n", b"")) == "out\n[exit code 42]"


def test_this_process_adopts_orphans_only_while_a_shim_may_leave():
    """One window for threads starting containers at once: on at the first, off after the last."""
    from labcore.kernel import process, syscalls
    with syscalls.use(syscalls.Recorder()) as kernel:
        with process.adopting_orphans():
            with process.adopting_orphans():
                pass
    assert kernel.calls == [("prctl", (syscalls.PR_SET_CHILD_SUBREAPER, 1, 0)),
                            ("prctl", (syscalls.PR_SET_CHILD_SUBREAPER, 0, 0))]
