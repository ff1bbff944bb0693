"""labcore.lessons.widgets: click the buttons as a student would, then read back what the Output widget holds."""
import os

import pytest

from labcore.errors import BadInput, NotSupportedHere
from labcore.lessons import widgets
from labcore.lessons.evidence import Step


def texts(out) -> list[str]:
    """What an Output widget shows, as text: stdout streams and the text/plain of rich outputs."""
    return [o["text"] if o["output_type"] == "stream" else o["data"]["text/plain"] for o in out.outputs]


class Counting:
    """A step that returns a Step and counts how often it ran."""

    def __init__(self, title):
        self.title, self.calls = title, 0

    def __call__(self):
        self.calls += 1
        return Step(self.title, "read /proc/self/stat", after={"calls": self.calls})


@pytest.fixture
def stepper():
    return widgets.Stepper([("first", Counting("one")), ("second", Counting("two"), "digraph d { a -> b }"),
                            ("third", Counting("three"))])


def test_stepper_shows_the_first_step_when_made(stepper):
    assert stepper.index == 0
    assert "step 1/3: first" in stepper.heading.value
    assert stepper.back_button.disabled and not stepper.next_button.disabled
    assert [text.splitlines()[0] for text in texts(stepper.out)] == ["== one"]


def test_next_and_back_move_and_run_each_step_once(stepper):
    stepper.next_button.click()
    assert stepper.index == 1
    assert len(stepper.out.outputs) == 2                      # the diagram, then the evidence
    assert "image/svg+xml" in stepper.out.outputs[0]["data"] or "text/html" in stepper.out.outputs[0]["data"]
    stepper.back_button.click()
    stepper.next_button.click()
    assert stepper.index == 1
    assert stepper.pages[1].run.calls == 1                    # going back shows the result, it does not re-run
    assert texts(stepper.out)[-1].splitlines()[0] == "== two"


def test_next_stops_at_the_last_step(stepper):
    for _ in range(5):
        stepper.next_button.click()
    assert stepper.index == 2 and stepper.next_button.disabled


def test_run_all_shows_every_step_in_order(stepper):
    stepper.run_all_button.click()
    shown = [text.splitlines()[0] for text in texts(stepper.out)]
    assert shown == ["step 1/3: first", "== one", "step 2/3: second", "<diagram: d>", "== two",
                     "step 3/3: third", "== three"]
    assert stepper.index == 2


def test_a_step_that_raises_a_lab_error_shows_its_text():
    def refuse():
        raise NotSupportedHere("no overlayfs here", fix="modprobe overlay")
    stepper = widgets.Stepper([("refused", refuse)])
    assert texts(stepper.out) == ["labcore: no overlayfs here\n  fix: modprobe overlay\n"]


def test_stepper_has_a_text_copy_for_where_widgets_do_not_run(stepper):
    bundle = stepper._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].splitlines()[:2] == ["step 1/3: first", "== one"]
    assert "<b>step 1/3: first</b>" in bundle["text/html"]


def test_stepper_refuses_a_malformed_step():
    with pytest.raises(BadInput, match=r"\(title, callable\)"):
        widgets.Stepper([("no callable",)])


def test_try_it_makes_controls_and_run_calls_with_their_values():
    calls = []
    tried = widgets.try_it(lambda megabytes, ratio, swap, kind: calls.append((megabytes, ratio, swap, kind))
                           or f"{megabytes} MiB", megabytes=(16, 256, 16), ratio=(0.0, 1.0, 0.1), swap=False,
                           kind=["memory", "pids"])
    assert [type(c).__name__ for c in tried.controls.values()] == ["IntSlider", "FloatSlider", "Checkbox",
                                                                    "Dropdown"]
    tried.controls["megabytes"].value = 64
    tried.run_button.click()
    assert calls == [(64, 0.0, False, "memory")]
    assert texts(tried.out) == ["64 MiB\n"]
    tried.run_button.click()
    assert texts(tried.out) == ["64 MiB\n"]                   # replaced, not appended


def test_try_it_refuses_a_control_it_cannot_make():
    with pytest.raises(BadInput, match="min, max"):
        widgets.try_it(print, size="big")


def test_host_tour_reads_this_process():
    tour = widgets.host_tour()
    first = tour.result(0)
    assert first.before["Pid"] == str(os.getpid())
    namespaces = tour.result(1).before
    assert namespaces["net"] == os.readlink("/proc/self/ns/net")
