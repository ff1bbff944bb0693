"""A Step renders its evidence as text and HTML, and a refused step says why."""
from labcore.errors import NeedsPrivilege
from labcore.evidence import Mode, Step


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
