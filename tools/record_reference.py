"""The reference recordings: every step of every notebook as it really ran on a root VM, kept as data.

    tools/record_reference.py [NOTEBOOK...]        (`./lab record`; as root, on the reference VM)

Where a student's host refuses a step (no root, no user namespaces, no delegated cgroup), the refused Step
shows the same step from these recordings, labelled with the reference host's kernel, cgroup layout and date
(``labcore.lessons.evidence.Recording``), never as if it had just happened there.

How they are made: each notebook runs top to bottom in a fresh kernel of the .venv's Python, in a state
directory of its own, with ``LABCORE_RECORD`` naming a scratch file. Every real Step that a cell shows
appends itself to that file (``evidence.record``), keyed as a refused one looks it up (``Step.key``, or its
title with ids and pids masked). This tool then writes ``labcore/recordings/<notebook>.json``: the host, and
one entry per key in the order they ran (a step shown twice keeps its last showing). A cell that fails stops
the run and nothing is written. These files are data made by this tool, never edited by hand.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ROOT / "labcore" / "lessons" / "recordings"
CELL_TIMEOUT = 300
FIELDS = ("key", "title", "action", "mode", "rows", "note", "wire", "output")


def reference_host() -> dict:
    """Who ran the steps and where: what a recording's label says."""
    from labcore.kernel.cgroups import detect
    release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    return {"who": "root", "machine": f"{release.get('PRETTY_NAME', 'Linux').strip(chr(34))} VM",
            "kernel": platform.release(), "cgroup": detect().kind, "date": datetime.date.today().isoformat(),
            "made by": "tools/record_reference.py"}


def run_notebook(path: Path, log: Path, home: Path) -> None:
    """Execute ``path`` with every shown step appended to ``log``; raise on the first failing cell."""
    import nbformat
    from nbclient import NotebookClient
    os.environ.update({"LABCORE_RECORD": str(log), "LABCORE_HOME": str(home)})
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()


def collect(log: Path) -> list[dict]:
    """One entry per key, in the order first shown, holding its last showing."""
    entries: dict[str, dict] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        entry = json.loads(line)
        entries[entry["key"]] = {field: entry.get(field, "") for field in FIELDS}
    return list(entries.values())


def record(path: Path, host: dict) -> Path:
    from labcore.kernel.journal import undo_rmtree
    work = Path(tempfile.mkdtemp(prefix="labcore-record-"))
    try:
        run_notebook(path, work / "steps.jsonl", work / "home")
        steps = collect(work / "steps.jsonl")
    finally:
        subprocess.run([sys.executable, "-m", "labcore", "cleanup", "--all"], capture_output=True,
                       env={**os.environ, "LABCORE_HOME": str(work / "home")})
        undo_rmtree(str(work))
    target = RECORDINGS / f"{path.stem}.json"
    target.write_text(json.dumps({"host": host, "notebook": path.name, "steps": steps}, indent=1,
                                 ensure_ascii=False) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    paths = parser.parse_args(argv).notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if os.geteuid() != 0:
        print("the reference recordings are made as root, on the reference VM", file=sys.stderr)
        return 1
    RECORDINGS.mkdir(exist_ok=True)
    host = reference_host()
    for path in paths:
        print(f"recording {path}", file=sys.stderr, flush=True)
        target = record(path.resolve(), host)
        print(f"wrote {target.relative_to(ROOT)}: {len(json.loads(target.read_text())['steps'])} steps",
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
