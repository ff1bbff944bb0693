"""Diagrams: pictures of what the kernel does, drawn by graphviz from text the lab writes.

A diagram is DOT source (https://graphviz.org/doc/info/lang.html): nodes, edges and clusters, written as
plain text and laid out by graphviz's ``dot`` program. The lab keeps diagrams as text so they can be read,
diffed and regenerated: ``diagrams/*.gv`` are the sources, ``diagrams/*.svg`` their renders, and
``python -m labcore.diagrams`` rewrites both.

``show(source)`` draws a diagram in a notebook cell. Where ``dot`` is not installed it shows the source with
the one command that installs it, instead of failing: the lesson does not depend on the picture.

Next: ``labcore.widgets`` steps through a sequence of diagrams and evidence.
"""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

MISSING_DOT = ("graphviz's dot is not installed: apt-get install graphviz "
               "(or conda install -c conda-forge graphviz); here is the source")

# Everything before <svg is the XML prolog and comments; one of them names the graphviz version, which
# would make a stored notebook change whenever the host's graphviz does.
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)


def render_svg(dot_source: str) -> str | None:
    """Lay out ``dot_source`` with ``dot -Tsvg``; None where dot is not installed.

    The result starts at ``<svg``: the same source gives the same text on the same graphviz.
    """
    dot = shutil.which("dot")
    if dot is None:
        return None
    result = subprocess.run([dot, "-Tsvg"], input=dot_source, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        # A syntax error in a diagram is a bug in the lab: say where, as dot does.
        raise ValueError(f"dot rejected the diagram: {result.stderr.strip()}")
    return _PROLOG.sub("", result.stdout, count=1)


class Diagram:
    """A cell result: the rendered SVG in Jupyter, or the DOT source with the install hint."""

    def __init__(self, source: str):
        self.source = source
        self.svg = render_svg(source)

    def _repr_svg_(self) -> str | None:
        return self.svg

    def _repr_html_(self) -> str | None:
        if self.svg is not None:
            return None             # Jupyter then uses the SVG
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
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "diagrams"
    for path in write_diagrams(target):
        print(f"wrote {path}")
