"""The host matrix: every notebook executed on each kind of host a student meets, its cells counted.

    tools/host_matrix.py [--host root|student|pod]... [--json] [NOTEBOOK...]    (as root: all three hosts)
    tools/host_matrix.py here [NOTEBOOK...]                                    (this user, this host)

The hosts (issue 11; README, "What runs where"):

    root      this machine as root: every step real
    student   an ordinary user (`labcore-student`) with user namespaces: `setpriv` to that uid, a
              HOME and LABCORE_HOME of its own
    pod       a container made like a JupyterHub or Binder pod: uid 1000, no capabilities, no_new_privs,
              Docker's own default seccomp profile (which refuses unshare, mount and user namespaces), run
              by a private dockerd (``labcore.lessons.dockerd``) on an image of nothing but the host's /usr and /etc
              bound read-only, with this checkout at the same path

Each notebook runs top to bottom in a fresh kernel of the .venv's Python, every cell even after an error
(nbclient ``allow_errors``). Counted per notebook: code cells, cells with an error (and which), and the
steps shown, by mode: real (as root, in a user namespace, as the user), refused with the reference recording,
refused without one. Nothing is written to the notebooks. Each host's state directory is a fresh
``labcore-matrix-*`` directory, removed afterwards (``journal.undo_rmtree``), with the notebooks' own cleanup
cells having run.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HOSTS = ("root", "student", "pod")
STUDENT = "labcore-student"          # an ordinary user; `./lab test` makes it as root
POD_UID = 1000                      # jovyan, as Binder and the Jupyter Docker Stacks run the notebook server
CELL_TIMEOUT = 300
MODES = {"real, as root": "real", "real, inside a user namespace": "real", "real, as your own user": "real",
         "not permitted here": "refused"}
RECORDED = "recorded on the reference host"


# --- one host: this process's user ------------------------------------------------------------------------

def execute(path: Path) -> dict:
    """Run every cell of one notebook, errors or not; count its cells, its error cells and its steps."""
    import nbformat
    from nbclient import NotebookClient
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, allow_errors=True, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return count(notebook)


def count(notebook) -> dict:
    """A run notebook's code cells, its error cells (and which) and its steps by how they ran; also for
    notebooks run elsewhere, as tools/hub/kernelapi.py runs them in a student's server."""
    cells = [(index, cell) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    errors, steps, refused = [], collections.Counter(), []
    for index, cell in cells:                   # numbered as in the notebook, markdown cells counted
        for output in cell.outputs:
            if output.output_type == "error":
                errors.append(f"cell {index}: {output.ename}: {output.evalue[:300]}")
            text = output.get("text", "") + output.get("data", {}).get("text/plain", "")
            for title, kind in shown_steps(text):
                steps[kind] += 1
                refused += [title] if kind != "real" else []
    return {"cells": len(cells), "error cells": len({e.split(":")[0] for e in errors}), "errors": errors,
            "steps": dict(steps), "refused": refused}


def shown_steps(text: str) -> list[tuple[str, str]]:
    """(title, how it ran) of each step in a cell's text output: a Step prints "== TITLE", then a "mode:"
    line (evidence.Step); a recording's lines start with "   |" and are not counted."""
    found, lines = [], text.splitlines()
    for number, line in enumerate(lines):
        mode = line[len("   mode: "):].strip() if line.startswith("   mode: ") else ""
        if mode in MODES:
            title = lines[number - 2][3:] if number >= 2 and lines[number - 2].startswith("== ") else "?"
            kind = MODES[mode]
            if kind == "refused":
                kind = "refused, recording shown" if any(RECORDED in later for later in lines[number:]) \
                    else "refused, no recording"
            found.append((title, kind))
    return found


def run_here(notebooks: list[Path]) -> dict:
    return {path.name: execute(path) for path in notebooks}


# --- other hosts: another user, a pod ---------------------------------------------------------------------

def inner_command(notebooks: list[Path]) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "here", "--json",
            *map(str, notebooks)]


def run_as_student(notebooks: list[Path], work: Path) -> dict:
    """As the ordinary user: its own uid and groups, a HOME and state dir of its own, nothing inherited."""
    user = pwd.getpwnam(STUDENT)
    home = work / "home"
    for directory in (home, work / "state"):
        directory.mkdir()
        os.chown(directory, user.pw_uid, user.pw_gid)
    environment = {"HOME": str(home), "USER": STUDENT, "LOGNAME": STUDENT, "PATH": "/usr/bin:/bin",
                   "LABCORE_HOME": str(work / "state"), "LANG": "C.UTF-8"}
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "env", "-i",
               *(f"{key}={value}" for key, value in environment.items()), *inner_command(notebooks)]
    return finished(subprocess.run(command, capture_output=True, text=True, cwd="/"))


POD_CONFINEMENT = ("--cap-drop", "ALL", "--security-opt", "no-new-privileges")   # and Docker's default seccomp


def run_in_pod(notebooks: list[Path], work: Path, confinement: tuple[str, ...] = POD_CONFINEMENT) -> dict:
    """In a container of Docker's own making with Binder's restrictions (see the module's docstring), or with
    the ``confinement`` flags given (tests/hub/test_pod_settings.py: the Kubernetes pods' settings)."""
    from labcore.lessons.dockerd import Dockerd
    with Dockerd() as docker:
        image = make_pod_image(docker, work)
        home = "/home/jovyan"
        command = ["run", "--rm", "--network", "none", "--user", f"{POD_UID}:{POD_UID}", *confinement,
                   "--workdir", home,
                   "--tmpfs", f"{home}:uid={POD_UID},gid={POD_UID},mode=0755,exec",
                   "--tmpfs", "/tmp:mode=1777,exec",
                   "-e", f"HOME={home}", "-e", "USER=jovyan", "-e", "PATH=/usr/bin:/bin", "-e", "LANG=C.UTF-8",
                   "-e", f"LABCORE_HOME={home}/.local/state/labcore",
                   *(flag for directory in ("/usr", "/etc", str(ROOT)) for flag in
                     ("-v", f"{directory}:{directory}:ro")),
                   image, *inner_command(notebooks)]
        return finished(docker.cli(*command, check=False))


def make_pod_image(docker, work: Path) -> str:
    """An image of four symbolic links, as Debian's merged /usr has them: the host's /usr and /etc are bound
    over it at run time, so the pod has this host's Python, graphviz and busybox without copying them."""
    import tarfile
    archive = work / "pod.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("bin", "sbin", "lib", "lib64"):
            entry = tarfile.TarInfo(name)
            entry.type, entry.linkname = tarfile.SYMTYPE, f"usr/{name}"
            tar.addfile(entry)
        for name in ("usr", "etc", "home", "tmp", "proc", "sys", "dev", "run", "work"):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(entry)
    docker.cli("import", str(archive), "labcore-pod:latest")
    return "labcore-pod:latest"


def finished(done: subprocess.CompletedProcess) -> dict:
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"(the run)": {"cells": 0, "error cells": 1, "steps": {},
                              "errors": [f"exit {done.returncode}: {(done.stderr or done.stdout)[-3000:]}"]}}


def run_host(host: str, notebooks: list[Path]) -> dict:
    if host == "root":
        if os.geteuid() != 0:
            raise SystemExit("the root row needs root")
        return run_here(notebooks)
    from labcore.kernel.journal import undo_rmtree
    work = Path(tempfile.mkdtemp(prefix="labcore-matrix-"))
    os.chmod(work, 0o755)
    try:
        return run_as_student(notebooks, work) if host == "student" else run_in_pod(notebooks, work)
    finally:
        undo_rmtree(str(work))


# --- the table --------------------------------------------------------------------------------------------

def totals(results: dict) -> dict:
    steps = collections.Counter()
    for notebook in results.values():
        steps.update(notebook["steps"])
    return {"cells": sum(n["cells"] for n in results.values()),
            "error cells": sum(n["error cells"] for n in results.values()), "steps": dict(steps)}


def table(matrix: dict[str, dict]) -> str:
    kinds = ["real", "refused, recording shown", "refused, no recording"]
    lines = ["| host | code cells | error cells | steps real | refused, recording shown | refused, no recording |",
             "|---|---:|---:|---:|---:|---:|"]
    for host, results in matrix.items():
        total = totals(results)
        lines.append(f"| {host} | {total['cells']} | {total['error cells']} | "
                     + " | ".join(str(total["steps"].get(kind, 0)) for kind in kinds) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", action="append", choices=HOSTS + ("here",))
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("notebooks", nargs="*", type=Path)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["here"]:
        argv = ["--host", "here", *argv[1:]]
    args = parser.parse_args(argv)
    notebooks = [path.resolve() for path in args.notebooks] or NOTEBOOKS
    hosts = args.host or (list(HOSTS) if os.geteuid() == 0 else ["here"])
    if hosts == ["here"]:
        results = run_here(notebooks)
        print(json.dumps(results) if args.json else table({"here": results}))
        return 0
    matrix = {host: run_host(host, notebooks) for host in hosts}
    if args.json:
        print(json.dumps(matrix))
    else:
        print(table(matrix))
        for host, results in matrix.items():
            for name, notebook in results.items():
                for error in notebook["errors"]:
                    print(f"{host} {name} {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
