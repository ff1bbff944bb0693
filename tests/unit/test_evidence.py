"""A Step renders its evidence as text and HTML, and a refused step says why."""
from labcore.errors import NeedsPrivilege
from labcore.lessons.evidence import Mode, Step


def test_text_shows_action_mode_and_before_after():
    step = Step("uts", 'sethostname("box1")', {"hostname": "vm"}, {"hostname": "box1"}, Mode.ROOT,
                note="the host keeps its name")
    text = str(step)
    assert 'did:  sethostname("box1")' in text and "real, as root" in text
    assert "hostname  vm      box1" in text and "=> the host keeps its name" in text


def test_refused_step_carries_the_reason_and_is_not_permitted():
    step = Step.refused("mnt", "unshare(CLONE_NEWNS)", NeedsPrivilege("refused", fix="run as root"))
    assert not step.permitted and "fix: run as root" in str(step)
    assert "not permitted here" in step._repr_html_()


def test_html_escapes_values():
    assert "&lt;b&gt;" in Step("t", "a", {"k": "<b>"}, {})._repr_html_()


# --- refused steps: every cell works with them, and they show the reference host's recording (issue 11) ----

def test_a_refused_steps_data_reads_as_not_run_whatever_the_cell_does_with_it():
    from labcore.lessons.evidence import NOT_RUN
    step = Step.refused("cpu", "write cpu.max", "refused: EACCES")
    assert step.data["share"] is NOT_RUN and step.after["oom_kill"] is NOT_RUN
    for value in (step.data["share"] <= step.data["limit"] + 0.05, step.data["a"]["b"].split(" in ")[0],
                  step.after != step.before, f"{step.data['exit']}", -step.data["x"] * 2):
        assert str(value) == "(not run here)"
    assert not step.data["x"] and list(step.data["x"]) == [] and "k" not in step.data["x"]
    assert step.rows() == []                                             # nothing measured, nothing shown


def test_a_refused_step_stands_in_for_what_its_step_would_have_made():
    from labcore.lessons.evidence import NOT_RUN
    box = Step.refused("mount an overlay", "mount -t overlay", "refused: EPERM")
    assert box.options is NOT_RUN and box.data["id"] is NOT_RUN and box.stop() is NOT_RUN
    real = Step("t", "a")
    try:
        real.options
    except AttributeError:
        pass
    else:
        raise AssertionError("a real step has only its own attributes")


def test_modes_say_how_a_step_ran(monkeypatch):
    import os
    from labcore.lessons.evidence import current_mode, user_mode
    monkeypatch.setattr(os, "geteuid", lambda: 1001)
    assert current_mode() is Mode.USERNS and user_mode() is Mode.USER and Step("t", "a").mode is Mode.USER
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert current_mode() is Mode.ROOT and Step("t", "a").mode is Mode.ROOT


def test_a_refused_step_shows_its_recording_labelled_with_the_reference_host(tmp_path, monkeypatch):
    import json
    from labcore.lessons import evidence
    host = {"who": "root", "machine": "Debian VM", "kernel": "6.1.0", "cgroup": "v2", "date": "2025-01-02"}
    entry = {"key": "cpu: --cpus 0.25 holds a busy loop", "title": "cpu: --cpus 0.25 holds a busy loop",
             "action": "write cpu.max", "mode": "real, as root", "rows": [["throttled", "0", "12"]],
             "note": "held", "wire": [], "output": ""}
    (tmp_path / "04.json").write_text(json.dumps({"host": host, "steps": [entry]}))
    monkeypatch.setattr(evidence, "RECORDINGS", tmp_path)
    evidence.recordings.cache_clear()
    try:
        step = Step.refused("cpu: --cpus 0.25 holds a busy loop", "write cpu.max", "refused: EACCES")
        text = str(step)
    finally:
        evidence.recordings.cache_clear()
    assert "not permitted here" in text and "refused: EACCES" in text
    assert "recorded on the reference host (root on a Debian VM, Linux 6.1.0, cgroup v2, 2025-01-02)" in text
    assert "not run here" in text and "   |    throttled  0       12" in text
    assert "not run here" in step._repr_html_() and "12" in step._repr_html_()


def test_recording_keys_mask_what_differs_between_runs():
    from labcore.lessons.evidence import recording_key
    assert recording_key("setns: join the namespaces of pid 48213") == "setns: join the namespaces of pid N"
    assert recording_key("commit 0123456789ab as x:latest") == "commit ID as x:latest"
    assert recording_key("pids: --pids-limit 10") == "pids: --pids-limit 10"


def test_a_real_step_is_recorded_when_the_recording_tool_asks(tmp_path, monkeypatch):
    import json
    log = tmp_path / "steps.jsonl"
    monkeypatch.setenv("LABCORE_RECORD", str(log))
    str(Step("box", "a", after={"k": "v"}, key="box.layers"))
    str(Step.refused("never", "a", "refused"))                       # a refusal is never recorded
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["key"] for e in entries] == ["box.layers"] and entries[0]["rows"] == [["k", "", "v"]]


def test_a_comparison_names_its_two_columns():
    step = Step("one kernel", "uname -r", {"release": "6.1"}, {"release": "6.1"}, columns=("host", "container"))
    assert step._text().splitlines()[3].split() == ["host", "container"]
    assert "<th>host</th><th>container</th>" in step._html()
    assert "<th>before</th><th>after</th>" in Step("a moment", "x", {"k": 1}, {"k": 2})._html()


def test_a_value_of_several_lines_stays_in_its_column_before_and_after():
    from labcore.lessons.display import Table
    step = Step("t", "a", {"groups": Table(("id", "group"), [("0", "/")])}, {"groups": "one\ntwo", "x": 1})
    assert step._text().splitlines()[3:] == ["           before     after",
                                             "   groups  id  group  one",
                                             "           0   /      two",
                                             "   x                  1"]
    assert "<td><div style='word-wrap:break-word'><table>" in step._repr_html_()
