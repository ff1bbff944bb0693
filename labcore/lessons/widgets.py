"""Widgets: buttons and sliders over the same steps the notebook cells run one by one.

The cells of a notebook are the lesson: one call each, top to bottom, outputs stored. Widgets are a second
way through the same material, never a replacement for the cells:

* ``Stepper(steps)`` walks a list of steps with Back / Next / Run all, showing each step's title, its
  diagram and its evidence (a ``labcore.lessons.evidence.Step``);
* ``try_it(fn, **controls)`` puts sliders and checkboxes in front of a function and a Run button after them,
  for "try it yourself" cells.

Results are written into an ``ipywidgets.Output`` through its own methods (``append_display_data``,
``append_stdout``), not by capturing prints, so what a widget shows does not depend on which cell is running
and a test can click a button and read the outputs back. ipywidgets is imported only when a widget is made.

Next: the notebooks in ``notebooks/``; ``00-start-here`` shows a ``Stepper`` over this very process.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import Any, Callable

from labcore.errors import BadInput, LabError
from labcore.kernel import procfs
from labcore.lessons import diagrams
from labcore.lessons.evidence import Step, user_mode


@dataclass
class Page:
    """One step of a Stepper: a title, what to run, and optionally a diagram (DOT source)."""
    title: str
    run: Callable[[], Any]
    dot: str | None = None


def _as_page(step) -> Page:
    if isinstance(step, Page):
        return step
    if isinstance(step, tuple) and len(step) in (2, 3) and callable(step[1]):
        return Page(*step)
    raise BadInput(f"a Stepper step is (title, callable) or (title, callable, dot source), not {step!r}")


def _show_in(out, items: list) -> None:
    """Replace what ``out`` shows with ``items``: text as stdout, anything else by its rich display."""
    # Output.clear_output() only asks a front end to clear; assigning the synced trait clears the model
    # itself, the same in a kernel, under nbclient and in a unit test.
    out.outputs = ()
    for item in items:
        if item is None:
            continue
        if isinstance(item, str):
            out.append_stdout(item if item.endswith("\n") else item + "\n")
        else:
            out.append_display_data(item)


def _call(fn: Callable[[], Any]) -> Any:
    """Run one step; an error that teaches is shown as its text, like the CLI does, not as a traceback."""
    try:
        return fn()
    except LabError as err:
        return f"labcore: {err}"


class Stepper:
    """Back / Next / Run all over a list of steps; each step runs once, the first time it is shown."""

    def __init__(self, steps: list):
        import ipywidgets
        self.pages = [_as_page(step) for step in steps]
        if not self.pages:
            raise BadInput("a Stepper needs at least one step")
        self.results: dict[int, Any] = {}
        self.pictures: dict[int, diagrams.Diagram | None] = {}
        self.index = 0
        self.heading = ipywidgets.HTML()
        self.out = ipywidgets.Output()
        self.back_button = ipywidgets.Button(description="Back", icon="arrow-left")
        self.next_button = ipywidgets.Button(description="Next", icon="arrow-right")
        self.run_all_button = ipywidgets.Button(description="Run all", icon="forward")
        self.back_button.on_click(lambda _: self.go(self.index - 1))
        self.next_button.on_click(lambda _: self.go(self.index + 1))
        self.run_all_button.on_click(lambda _: self.run_all())
        buttons = ipywidgets.HBox([self.back_button, self.next_button, self.run_all_button])
        self.widget = ipywidgets.VBox([buttons, self.heading, self.out])
        self.go(0)

    def result(self, index: int) -> Any:
        if index not in self.results:
            self.results[index] = _call(self.pages[index].run)
        return self.results[index]

    def label(self, index: int) -> str:
        return f"step {index + 1}/{len(self.pages)}: {self.pages[index].title}"

    def go(self, index: int) -> None:
        """Show step ``index`` (kept within the list), running it if it has not run yet."""
        self._move_to(index)
        _show_in(self.out, self._items(self.index))

    def run_all(self) -> None:
        """Run every step in order and show them all, one after the other; stop on the last."""
        items = []
        for index in range(len(self.pages)):
            items += [self.label(index), *self._items(index)]
        self._move_to(len(self.pages) - 1)
        _show_in(self.out, items)

    def _move_to(self, index: int) -> None:
        self.index = max(0, min(index, len(self.pages) - 1))
        self.heading.value = f"<b>{html.escape(self.label(self.index))}</b>"
        self.back_button.disabled = self.index == 0
        self.next_button.disabled = self.index == len(self.pages) - 1

    def picture(self, index: int) -> diagrams.Diagram | None:
        if index not in self.pictures:
            dot = self.pages[index].dot
            self.pictures[index] = diagrams.show(dot) if dot else None
        return self.pictures[index]

    def _items(self, index: int) -> list:
        return [self.picture(index), self.result(index)]

    def __str__(self) -> str:
        return f"{self.label(self.index)}\n{self.result(self.index)}"

    def _repr_mimebundle_(self, **kwargs) -> dict:
        # The live widget, plus a text and an HTML copy of the current step for wherever widgets do not
        # run (a stored notebook, GitHub, a terminal): tools/execute_notebooks.py keeps only those.
        return {**self.widget._repr_mimebundle_(**kwargs), "text/plain": str(self),
                "text/html": self._html()}

    def _html(self) -> str:
        picture, result = self.picture(self.index), self.result(self.index)
        image = picture.img_html() if picture else ""     # a PNG: sanitized HTML drops inline SVG
        body = (result._repr_html_() if hasattr(result, "_repr_html_")
                else f"<pre>{html.escape(str(result))}</pre>")
        return f"<div><b>{html.escape(self.label(self.index))}</b>{image}{body}</div>"


# --- try it yourself ----------------------------------------------------------------------------------------

def make_control(name: str, spec):
    """A widget from a short spec: a bool is a Checkbox, (min, max[, step]) a slider, [words] a Dropdown.

    A ready-made ipywidgets widget is used as it is. The first value of a slider is its minimum.
    """
    import ipywidgets
    if isinstance(spec, ipywidgets.ValueWidget):
        return spec
    if isinstance(spec, bool):
        return ipywidgets.Checkbox(value=spec, description=name)
    if isinstance(spec, tuple) and len(spec) in (2, 3) and all(isinstance(v, (int, float)) for v in spec):
        low, high, *step = spec
        slider = ipywidgets.IntSlider if all(isinstance(v, int) for v in spec) else ipywidgets.FloatSlider
        return slider(value=low, min=low, max=high, step=step[0] if step else 1, description=name)
    if isinstance(spec, list) and spec and all(isinstance(v, str) for v in spec):
        return ipywidgets.Dropdown(options=spec, value=spec[0], description=name)
    raise BadInput(f"control {name}={spec!r}: give True/False, (min, max[, step]), a list of strings, "
                   f"or an ipywidgets widget")


class TryIt:
    """Controls for the arguments of ``fn``, and a Run button that calls it and shows the result."""

    def __init__(self, fn: Callable[..., Any], controls: dict):
        import ipywidgets
        self.fn = fn
        self.controls = {name: make_control(name, spec) for name, spec in controls.items()}
        self.out = ipywidgets.Output()
        self.run_button = ipywidgets.Button(description="Run", icon="play", button_style="primary")
        self.run_button.on_click(lambda _: self.run())
        self.widget = ipywidgets.VBox([*self.controls.values(), self.run_button, self.out])

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def run(self) -> Any:
        result = _call(lambda: self.fn(**self.values()))
        _show_in(self.out, [result])
        return result

    def __str__(self) -> str:
        arguments = ", ".join(f"{name}={value!r}" for name, value in self.values().items())
        return f"try it: {getattr(self.fn, '__name__', 'fn')}({arguments}); run this cell to get the controls"

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return {**self.widget._repr_mimebundle_(**kwargs), "text/plain": str(self)}


def try_it(fn: Callable[..., Any], **controls) -> TryIt:
    """E.g. ``try_it(run_with_limit, megabytes=(16, 256, 16), swap=False)``: a slider, a checkbox, then Run."""
    return TryIt(fn, controls)


# --- the demo of 00-start-here: the notebook's own process, before any container ---------------------------

def _status_fields(*names: str) -> dict:
    # Uid and Gid hold four tab-separated ids (real, effective, saved, filesystem): procfs gives one space.
    fields = procfs.status()
    return {name: fields[name] for name in names if name in fields}


def look_at_process() -> Step:
    return Step("this notebook's kernel is a process", "read /proc/self/status  (proc(5))",
                before=_status_fields("Name", "Pid", "PPid", "Uid", "CapEff", "NSpid"), mode=user_mode(),
                note="a container is a process too: the same fields, with other values")


def look_at_namespaces() -> Step:
    kinds = sorted(os.listdir(procfs.path("self", "ns")))
    links = {kind: procfs.ns_link(kind) for kind in kinds}
    return Step("the namespaces it is in", "readlink /proc/self/ns/*  (namespaces(7))", before=links,
                mode=user_mode(), note="a container gets new ones of these: new inode numbers (03-namespaces)")


def look_at_cgroup() -> Step:
    groups = {",".join(line.controllers) or "v2 (unified)": line.path for line in procfs.cgroups()}
    return Step("the control group it is in", "read /proc/self/cgroup  (cgroups(7))", before=groups,
                mode=user_mode(), note="a container gets its own group, with limits (04-control-groups)")


def _arrows_from_kernel(*targets: str) -> str:
    graph = diagrams.Graph("tour", rankdir="LR").defaults("node", shape="box", fontname="Helvetica")
    for target in targets:
        graph.edge("this notebook's kernel", target)
    return graph.source()


def host_tour() -> Stepper:
    """Three looks at this very process: what every later notebook changes for a container."""
    return Stepper([
        ("a process", look_at_process, _arrows_from_kernel("/proc/self/status")),
        ("its namespaces", look_at_namespaces,
         _arrows_from_kernel("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")),
        ("its control group", look_at_cgroup, _arrows_from_kernel("/proc/self/cgroup", "/sys/fs/cgroup/...")),
    ])
