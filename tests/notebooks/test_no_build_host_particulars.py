"""No stored output names the machine that produced it (issue 14).

The notebooks' stored outputs and diagrams/ are what a reader sees first. They come from the lab VM
(`./lab execute --vm`, tools/labvm.py): a plain cgroup v2 Debian host with the checkout at /lab. This test
greps them for the particulars of the host it runs on, the kind of host that builds them, and for the
shapes such particulars take anywhere:

* the checkout's absolute path, its .venv, the Python it links to, the user's hidden directories (~/.pyenv);
* any other .venv than the lab VM's /lab/.venv;
* this host's name, its kernel release (any local build of the same upstream version) and build string;
* its cgroup paths, as /proc/self/cgroup and /proc/1/cgroup give them (and their top-level group);
* the entries of its / that a Debian host does not have, as an item of a listing (`ls /`).
"""
import json
import os
import re
import socket
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DIAGRAMS = sorted(path for path in (ROOT / "diagrams").glob("*") if path.suffix in (".gv", ".svg"))
LAB_VM_PROJECT = "/lab"             # tools/labvm.py GUEST_PROJECT: the one checkout path outputs may show
# The top-level directories of a Debian host (hier(7)); anything else in / is this machine's own.
FHS = {"bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "lost+found", "media", "mnt",
       "opt", "proc", "root", "run", "sbin", "srv", "sys", "tmp", "usr", "var", "lab"}

# Flip to False once `./lab execute --vm` has regenerated every notebook and diagrams/ (the lead does, after
# the work of issue 14 and its neighbours has merged): from then on this test guards every regeneration.
REGENERATION_PENDING = False
pending = pytest.mark.xfail(REGENERATION_PENDING, strict=False,
                            reason="stored outputs still come from the build machine: regeneration in the "
                                   "lab VM (`./lab execute --vm`) is pending")


def cgroup_paths() -> set[str]:
    """The non-root cgroup paths of this process and of PID 1, each also as its top-level group."""
    found = set()
    for source in ("/proc/self/cgroup", "/proc/1/cgroup"):
        try:
            lines = Path(source).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            path = line.split(":", 2)[-1]
            if path not in ("", "/"):
                found |= {path, "/" + path.strip("/").split("/")[0] + "/"}
    return found


def particulars() -> dict[str, re.Pattern]:
    """What names this host, and the shapes such names take: label -> pattern."""
    home = os.path.expanduser("~")
    uname = os.uname()
    exact = {"checkout": str(ROOT), "venv": sys.prefix, "kernel build": uname.version,
             **{f"cgroup {path}": path for path in cgroup_paths()}}
    if sys.base_prefix not in ("/usr", "/usr/local"):      # a Python of this machine's own (pyenv, conda...)
        exact["python"] = sys.base_prefix
    patterns = {label: re.compile(re.escape(text)) for label, text in exact.items() if len(text) > 3}
    patterns["hidden directory of the home"] = re.compile(re.escape(home) + r"/\.(pyenv|cache|local|config)\b")
    patterns["another .venv"] = re.compile(rf"(?<!{re.escape(LAB_VM_PROJECT)})/\.venv\b")
    upstream = uname.release.split("-")[0]       # 6.18.44 of 6.18.44-fc-v1300: other builds of it too
    patterns["kernel release"] = re.compile(re.escape(upstream) + r"(?![\d.])")
    own = sorted(set(os.listdir("/")) - FHS)
    if own:             # an item of a listing: "a, NAME, b" or "['NAME', ...]"
        patterns["entry of /"] = re.compile(r"(?:(?<=, )|(?<=\[')|(?<=<code>))(" + "|".join(map(re.escape, own))
                                            + r")(?=, |',|'\])")
    hostname = socket.gethostname()
    if len(hostname) > 3:       # a name as short as "vm" or "lab" is also a word of the lessons
        patterns["hostname"] = re.compile(rf"(?<![\w.-]){re.escape(hostname)}(?![\w.-])")
    return patterns


def output_texts(notebook) -> list[tuple[int, str]]:
    """(cell index, text) of every stored output: streams, errors, and every text-like MIME type."""
    texts = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if "text" in output:
                texts.append((index, output["text"]))
            if output.get("traceback"):
                texts.append((index, "\n".join(output["traceback"])))
            for kind, data in output.get("data", {}).items():
                if kind.startswith("text/") or kind.endswith(("+xml", "json")):
                    texts.append((index, data if isinstance(data, str) else json.dumps(data)))
    return texts


def found_in(where: str, texts, patterns) -> list[str]:
    hits = []
    for index, text in texts:
        text = text.replace("&#45;", "-")           # graphviz's SVG writes a hyphen as an entity
        for label, pattern in patterns.items():
            for match in pattern.finditer(text):
                context = text[max(0, match.start() - 40):match.end() + 40].replace("\n", " ")
                hits.append(f"{where}{'' if index is None else f' cell {index}'}: {label}: …{context}…")
    return hits


def test_the_patterns_find_this_hosts_particulars_and_nothing_of_the_lab_vm():
    patterns = particulars()
    host = [(0, f"python {sys.prefix}/bin/python on {os.uname().release} ({socket.gethostname()})")]
    expected = {"venv", "another .venv", "kernel release"} | ({"hostname"} if "hostname" in patterns else set())
    assert expected <= {hit.split(": ")[1] for hit in found_in("x", host, patterns)}
    lab_vm = [(0, "/lab/.venv/bin/python on 6.1.0-57-amd64 (lab), 0::/labcore/labcore-1148741f969b, "
                  "root:x:0:0:root:/root:/bin/sh, setuid helpers work")]
    assert found_in("x", lab_vm, patterns) == []


@pending
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_no_stored_output_names_the_build_host(path):
    hits = found_in(path.name, output_texts(nbformat.read(path, as_version=4)), particulars())
    assert not hits, "regenerate in the lab VM (`./lab execute --vm`):\n" + "\n".join(hits[:20])


@pending
@pytest.mark.parametrize("path", DIAGRAMS, ids=[path.name for path in DIAGRAMS])
def test_no_stored_diagram_names_the_build_host(path):
    hits = found_in(f"diagrams/{path.name}", [(None, path.read_text())], particulars())
    assert not hits, "regenerate in the lab VM (`./lab execute --vm`):\n" + "\n".join(hits[:20])
