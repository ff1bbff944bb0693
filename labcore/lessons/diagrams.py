"""Diagrams: pictures of what the kernel does, drawn by graphviz from text the lab writes.

A diagram is DOT source (https://graphviz.org/doc/info/lang.html): nodes, edges and clusters, written as
plain text and laid out by graphviz's ``dot`` program. The lab keeps diagrams as text so they can be read,
diffed and regenerated: ``diagrams/*.gv`` are the sources, ``diagrams/*.svg`` their renders, and
``python -m labcore.lessons.diagrams`` rewrites both.

``show(source)`` draws a diagram in a notebook cell. Where ``dot`` is not installed it shows the source with
the one command that installs it, instead of failing: the lesson does not depend on the picture.

Next: ``labcore.lessons.widgets`` steps through a sequence of diagrams and evidence.
"""
from __future__ import annotations

import base64
import html
import re
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

MISSING_DOT = ("graphviz's dot is not installed: apt-get install graphviz "
               "(or conda install -c conda-forge graphviz); here is the source")

# Everything before <svg is the XML prolog and comments; one of them names the graphviz version, which
# would make a stored notebook change whenever the host's graphviz does.
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)
_SIZE = re.compile(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"')
_RANKDIR = re.compile(r'^\s*rankdir\s*=\s*"?(\w+)', re.MULTILINE)

# A reader's page is 1000 CSS pixels wide; JupyterLab's prompt column and margins leave 820 of it to
# an output. dot measures in points (1/72 in), a browser in CSS pixels (1/96 in).
MAX_WIDTH_PX = 800
PX_PER_PT = 96 / 72
# Too wide drawn across, a flow fits drawn down the page (and a wide row of siblings fits drawn across).
# Bottom-up and right-to-left drawings (a stack of layers) mean their direction: those are only scaled.
TURNED = {"LR": "TB", "TB": "LR"}


@dataclass
class Rendered:
    """One diagram laid out to fit the page: its SVG, and the dot options that made it fit (for the PNG)."""
    svg: str
    options: list[str]
    width_px: int
    height_px: int


def render(dot_source: str) -> Rendered | None:
    """Lay out ``dot_source`` so that it fits a page; None where dot is not installed.

    Drawn as written where it fits; else turned (LR <-> TB) where that fits; else the narrower of the two,
    scaled down by graphviz's ``size`` attribute (https://graphviz.org/docs/attrs/size/) to the page.
    """
    if shutil.which("dot") is None:
        return None
    rankdir = (_RANKDIR.findall(dot_source) or ["TB"])[0].upper()
    tries = [[]] + ([[f"-Grankdir={TURNED[rankdir]}"]] if rankdir in TURNED else [])
    drawn = []
    for options in tries:
        svg = _dot(dot_source, "svg", options).decode()
        drawn.append((svg, options))
        if _width_px(svg) <= MAX_WIDTH_PX:
            return _rendered(svg, options)
    svg, options = min(drawn, key=lambda item: _width_px(item[0]))
    options = [*options, f"-Gsize={MAX_WIDTH_PX / 96:.2f},1000"]     # inches; only ever scales down
    return _rendered(_dot(dot_source, "svg", options).decode(), options)


def render_svg(dot_source: str) -> str | None:
    """The SVG of ``render``: starts at ``<svg``, the same text for the same source on the same graphviz."""
    rendered = render(dot_source)
    return rendered and rendered.svg


def render_png(dot_source: str, rendered: Rendered) -> bytes:
    """The same layout as a PNG at 96 dpi, one pixel per CSS pixel: an image every front end shows, where
    JupyterLab and Notebook 7 show no SVG of an untrusted notebook (a freshly cloned one)."""
    return _dot(dot_source, "png", [*rendered.options, "-Gdpi=96"])


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels, from the IHDR chunk that follows the PNG signature."""
    return struct.unpack(">II", data[16:24])


def _dot(dot_source: str, kind: str, options: list[str]) -> bytes:
    """Run dot through the graphviz package (https://graphviz.readthedocs.io), which finds the program and
    turns its failures into exceptions. An option ``-Gname=value`` becomes a statement at the end of the root
    graph: the last assignment of a graph attribute wins, so it overrides what the source set."""
    import graphviz     # here, not at module level: only a drawing pays for it
    body = dot_source.rstrip()
    assert body.endswith("}"), "a DOT graph ends with }"
    statements = "".join(f' {option[2:].partition("=")[0]}="{option.partition("=")[2]}";' for option in options)
    try:
        return graphviz.pipe("dot", kind, f"{body[:-1]}{statements}\n}}\n".encode(), quiet=True)
    except graphviz.CalledProcessError as error:
        # A syntax error in a diagram is a bug in the lab: say where, as dot does.
        raise ValueError(f"dot rejected the diagram: {error.stderr.decode().strip()}") from None


def _width_px(svg: str) -> float:
    return float(_SIZE.search(svg).group(1)) * PX_PER_PT


def _rendered(svg: str, options: list[str]) -> Rendered:
    svg = _PROLOG.sub("", svg, count=1)
    width, height = (round(float(number) * PX_PER_PT) for number in _SIZE.search(svg).groups())
    return Rendered(svg, options, width, height)


class Diagram:
    """A cell result: the SVG and a PNG of it in Jupyter, or the DOT source with the install hint.

    Both images, because a front end picks: JupyterLab and Notebook 7 render SVG only in a trusted notebook
    and fall back to the PNG otherwise; nbconvert's HTML and Jupyter Book take the SVG.
    """

    def __init__(self, source: str):
        self.source = source
        self.rendered = render(source)
        self.svg = self.rendered and self.rendered.svg
        self.png = self.rendered and render_png(source, self.rendered)

    def _repr_svg_(self) -> str | None:
        return self.svg

    def _repr_png_(self):
        if self.png is None:
            return None
        width, height = png_size(self.png)      # shown at one image pixel per CSS pixel, also on HiDPI
        return self.png, {"width": width, "height": height}

    def img_html(self) -> str:
        """An <img> of the PNG, for HTML that embeds a diagram (a widget's stored copy): HTML sanitizers
        keep a data: image, where they drop inline SVG."""
        if self.png is None:
            return ""
        data = base64.b64encode(self.png).decode()
        return (f'<img src="data:image/png;base64,{data}" width="{png_size(self.png)[0]}" '
                f'alt="{html.escape(_title(self.source))}"/>')

    def _repr_html_(self) -> str | None:
        if self.svg is not None:
            return None             # Jupyter then uses the SVG or the PNG
        return f"<p><i>{html.escape(MISSING_DOT)}</i></p><pre>{html.escape(self.source)}</pre>"

    def __repr__(self) -> str:
        if self.svg is not None:
            return f"<diagram: {_title(self.source)}>"
        return f"{MISSING_DOT}\n{self.source}"


class NotDrawn:
    """What a cell shows instead of a picture of a step that was refused here: nothing live to draw."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"(no {self.what}: the step it shows was not run here; see its recording above)"

    def _repr_html_(self) -> str:
        return f"<p><i>{html.escape(repr(self))}</i></p>"


def show(dot_source: str) -> Diagram | NotDrawn:
    """Draw a diagram as the result of a notebook cell (``Diagram``'s text in a terminal). A refused step's
    diagram is ``evidence.NOT_RUN``, not DOT: then there is nothing to draw, and the cell says so."""
    if not isinstance(dot_source, str):
        return NotDrawn("diagram")
    return Diagram(dot_source)


def _title(source: str) -> str:
    match = re.match(r"\s*(?:strict\s+)?(?:di)?graph\s+(\"[^\"]*\"|\w+)", source)
    return match.group(1).strip('"') if match else "graph"


# --- building DOT safely ----------------------------------------------------------------------------------

def quote(label: str) -> str:
    """A DOT double-quoted string: backslashes and quotes escaped, newlines as DOT's centred ``\\n``."""
    text = str(label).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def _attrs(attrs: dict) -> str:
    if not attrs:
        return ""
    return " [" + ", ".join(f"{key}={quote(value)}" for key, value in attrs.items()) + "]"


class Graph:
    """A directed graph written as DOT text, one statement per call, in the order of the calls."""

    def __init__(self, name: str, **attrs):
        self.name = name
        self.lines = [f"  {key}={quote(value)};" for key, value in attrs.items()]

    def defaults(self, kind: str, **attrs) -> "Graph":
        """Attributes for every following ``node`` or ``edge`` (kind), e.g. a font."""
        self.lines.append(f"  {kind}{_attrs(attrs)};")
        return self

    def node(self, name: str, label: str | None = None, **attrs) -> "Graph":
        self.lines.append(f"  {quote(name)}{_attrs({'label': label or name, **attrs})};")
        return self

    def edge(self, tail: str, head: str, **attrs) -> "Graph":
        self.lines.append(f"  {quote(tail)} -> {quote(head)}{_attrs(attrs)};")
        return self

    def cluster(self, name: str, label: str, nodes: list[str], **attrs) -> "Graph":
        """A labelled box around existing nodes (graphviz draws subgraphs named cluster_* as boxes)."""
        body = " ".join(f"{quote(node)};" for node in nodes)
        settings = " ".join(f"{key}={quote(value)};" for key, value in {"label": label, **attrs}.items())
        self.lines.append(f"  subgraph {quote('cluster_' + name)} {{ {settings} {body} }}")
        return self

    def source(self) -> str:
        return f"digraph {quote(self.name)} {{\n" + "\n".join(self.lines) + "\n}\n"


# --- the course map -----------------------------------------------------------------------------------------

# notebook -> (the concept it teaches, the kernel mechanisms it calls). One row per notebook in notebooks/.
COURSE = [
    ("00-start-here", "the host", ["/proc, /sys"]),
    ("01-docker-run-flow", "client → socket → daemon →\nimage pull → create → start", ["Unix socket"]),
    ("02-client-server", "client and daemon", ["Unix socket"]),
    ("03-namespaces", "what a container sees", ["unshare, setns", "/proc/PID/ns"]),
    ("04-control-groups", "what a container may use", ["cgroupfs v1/v2"]),
    ("05-union-filesystem", "image layers", ["overlayfs", "OCI layers"]),
    ("06-root-filesystem", "which files it sees", ["chroot", "pivot_root"]),
    ("07-containers-vs-vms", "shared kernel vs guest OS", ["qemu/KVM"]),
    ("08-build-your-own-docker-run", "all of 03–06 together,\nplus a network", ["veth, netns", "ports"]),
    ("09-security", "what root inside may still do", ["capabilities", "seccomp", "masked paths"]),
]


def course_map() -> str:
    """The DOT of the course: each notebook, the concept it teaches, the kernel mechanism it calls."""
    graph = Graph("course map", rankdir="LR", fontname="Helvetica", nodesep="0.15", ranksep="0.6")
    graph.defaults("node", fontname="Helvetica", fontsize="11", shape="box", style="rounded")
    graph.defaults("edge", color="gray40", arrowsize="0.6")
    mechanisms = list(dict.fromkeys(m for _, _, used in COURSE for m in used))
    for mechanism in mechanisms:
        graph.node(mechanism, shape="component", style="filled", fillcolor="lightblue")
    for notebook, concept, used in COURSE:
        graph.node(notebook, shape="note", style="filled", fillcolor="lightyellow")
        graph.node(f"{notebook}:concept", concept)
        graph.edge(notebook, f"{notebook}:concept")
        for mechanism in used:
            graph.edge(f"{notebook}:concept", mechanism)
    graph.cluster("notebooks", "notebooks", [notebook for notebook, _, _ in COURSE], color="white")
    graph.cluster("kernel", "the kernel", mechanisms, style="dashed")
    return graph.source()


DIAGRAMS = {"course-map": course_map}


def write_diagrams(directory: Path) -> list[Path]:
    """Write each diagram's source (.gv) and, where dot is installed, its render (.svg)."""
    written = []
    for name, build in DIAGRAMS.items():
        source = build()
        (directory / f"{name}.gv").write_text(source)
        written.append(directory / f"{name}.gv")
        svg = render_svg(source)
        if svg is not None:
            (directory / f"{name}.svg").write_text(svg)
            written.append(directory / f"{name}.svg")
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "diagrams"
    for path in write_diagrams(target):
        print(f"wrote {path}")
