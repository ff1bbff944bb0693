"""Notebooks 03 and 06 as a user without root: every step runs for real inside a user namespace, none fails.

The suite runs as root, so the user is `nobody` (setpriv). nobody cannot run the .venv's interpreter where it
links to a root-only one (pyenv under /root), so the test uses the system's python3 of the same version with
the .venv's packages on PYTHONPATH, and skips, saying why, where that is not possible.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NOBODY, privileged

pytestmark = privileged
ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
NOTEBOOKS = ["03-namespaces.ipynb", "06-root-filesystem.ipynb"]
EXECUTE = """
import collections, json, sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
modes = collections.Counter()
for cell in nb.cells:
    for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
        text = out.get("text", "") + out.get("data", {}).get("text/plain", "")
        modes.update(line.split("mode: ")[1].strip() for line in text.splitlines() if "mode: " in line)
print(json.dumps(modes))
"""


def as_nobody(home: str, *command: str) -> subprocess.CompletedProcess:
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)
    env = {"HOME": home, "LABCORE_HOME": f"{home}/state", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": f"{site}:{ROOT}", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([*NOBODY, "env", "-i",
                           *(f"{k}={v}" for k, v in env.items()), *command],
                          capture_output=True, text=True, timeout=600, cwd="/")


@pytest.fixture
def notebook_home(nobody_home):
    """nobody's home, once the system's python3 is known to run the lab for nobody."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs the system's python3")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"the system's python3 is {version}, the .venv's {sys.version_info[:2]}: "
                    "their compiled packages differ")
    probe = as_nobody(nobody_home, SYSTEM_PYTHON, "-c", "import labcore, nbclient, ipykernel")
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot import the lab from this checkout: {probe.stderr.strip()[-200:]}")
    return nobody_home


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_notebook_runs_rootless_without_errors(notebook_home, name):
    done = as_nobody(notebook_home, SYSTEM_PYTHON, "-c", EXECUTE, str(ROOT / "notebooks" / name),
                     str(ROOT / "notebooks"))
    assert done.returncode == 0, done.stderr[-2000:]
    modes = json.loads(done.stdout.strip().splitlines()[-1])      # each step's mode, counted
    assert set(modes) == {"real, inside a user namespace"} and sum(modes.values()) >= 5
    assert not list(Path(notebook_home, "state", "journal").glob("*.json")), "the notebook left objects"
