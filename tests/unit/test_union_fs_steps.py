"""05's steps where the host refuses part of them, and their notes, with the engine and the build faked."""
from types import SimpleNamespace

from labcore.errors import NeedsPrivilege, NotSupportedHere
from labcore.kernel import journal
from labcore.lessons import union_fs
from labcore.lessons.evidence import Step


def test_a_container_refused_its_start_is_removed_not_left(monkeypatch):
    removed = []
    monkeypatch.setattr(union_fs.engine, "create", lambda spec: SimpleNamespace(id="c0ffee"))
    monkeypatch.setattr(union_fs.engine, "start", lambda cid: (_ for _ in ()).throw(NeedsPrivilege("clone: EPERM")))
    monkeypatch.setattr(union_fs.engine, "remove", lambda cid, force=False: removed.append((cid, force)))
    step = union_fs.change_running_container("busybox", "true")
    assert not step.permitted and "EPERM" in step.reason and removed == [("c0ffee", True)]


def test_an_overlay_refused_while_timing_is_a_refused_step(monkeypatch, tmp_path):
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    monkeypatch.setattr(union_fs.os, "geteuid", lambda: 0)              # no keeper: the mount itself refused

    def refused(*args):
        raise NotSupportedHere("mount(overlay): EACCES (AppArmor)")

    monkeypatch.setattr(union_fs, "_overlay_root", refused)
    step = union_fs.share_lower_layers(lower, containers=2)
    assert not step.permitted and "AppArmor" in step.reason


def test_a_refused_run_keeps_its_whole_reason_under_the_volumes_title(monkeypatch):
    reason = "refused: clone(CLONE_NEWUSER): EPERM\nwhy here: a confined pod\nfix: run the lab in a VM"
    monkeypatch.setattr(union_fs.run_flow, "run_step", lambda spec: Step.refused("labcore run", "run", reason))
    try:
        step = union_fs.volume_outlives_container()
        assert step.title == "a volume outlives its container" and step.reason == reason
    finally:
        journal.Journal().undo_all()                  # the volume, kept until cleanup by design


def test_the_volume_and_rm_notes_follow_what_was_found():
    assert "is still there" in union_fs.volume_note(True, False)
    assert "not in the host's directory" in union_fs.volume_note(False, False)
    assert "--rm did not remove it" in union_fs.volume_note(True, True)


def test_a_build_is_recorded_once_however_often_it_is_shown(monkeypatch):
    recorded = []
    monkeypatch.setattr(union_fs.build, "build", lambda context, labfile, tag: "Step 1/1 : FROM busybox")
    monkeypatch.setattr(union_fs, "record", lambda step, output="": recorded.append(output))
    log = union_fs.build_image("ctx", tag="demo")
    assert [str(log), repr(log), str(log)] == ["Step 1/1 : FROM busybox"] * 3
    assert recorded == ["Step 1/1 : FROM busybox"]
