"""The unit group under every Python the lab supports (pyproject's requires-python, 3.10 to 3.13), not only the
one `./lab test` runs with: each interpreter found on this machine gets a venv of its own, `.venv-pythons/X.Y`,
with the package's dependencies and its `test` extra, as .venv has them, and runs `pytest tests/unit` there.

Found means `pythonX.Y` on PATH, or pyenv's build of it (~/.pyenv/versions/X.Y.*). One not found is skipped,
with how to get it. The package is not installed into those venvs: pytest puts the checkout first on sys.path
(pyproject's pythonpath), so the code under test is this checkout's, and its .venv is left as it is."""
import glob
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")


def find_python(version: str) -> str | None:
    """An interpreter of ``version``: on PATH, else pyenv's newest build of it."""
    on_path = shutil.which(f"python{version}")
    if on_path and subprocess.run([on_path, "-c", "pass"], capture_output=True).returncode == 0:   # not a shim
        return on_path
    builds = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")),
                    key=lambda path: [int(part) for part in Path(path).parts[-3].split(".") if part.isdigit()])
    return builds[-1] if builds else None


def requirements() -> list[str]:
    """The package's dependencies and its `test` extra's, as the installed labcore's metadata lists them
    (`./lab test` installs it again whenever pyproject.toml changes). The whole extra, not the part the unit
    group imports today: a list of our own would fall behind the tests."""
    wanted = []
    for line in importlib.metadata.requires("labcore") or []:
        requirement, _, marker = line.partition(";")
        if not marker or marker.replace(" ", "") in ('extra=="test"', "extra=='test'"):
            wanted.append(requirement.strip())
    return wanted


def ensure_venv(python: str, version: str) -> Path:
    """`.venv-pythons/X.Y` with ``requirements()``, made again only when they change (a stamp, as ./lab's)."""
    venv = ROOT / ".venv-pythons" / version
    stamp, want = venv / ".labcore-test", hashlib.sha256("\n".join(requirements()).encode()).hexdigest()[:16]
    if stamp.exists() and stamp.read_text() == want:
        return venv
    subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           *requirements()], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"pip install under Python {version}:\n{done.stderr[-3000:]}"
    stamp.write_text(want)
    return venv


@pytest.mark.parametrize("version", [v for v in SUPPORTED if v != f"{sys.version_info[0]}.{sys.version_info[1]}"])
def test_the_unit_group_passes_under(version):
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (pyenv install {version}, or your distribution's "
                    f"python{version}): the unit group was not run under it")
    venv = ensure_venv(python, version)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert done.returncode == 0 and " passed" in summary and "failed" not in summary, \
        f"Python {version} ({python}): {summary}\n{done.stdout[-4000:]}"
