"""The unit group under every Python the lab supports, not only the one `./lab test` runs with. pyproject.toml
says `requires-python = ">=3.10"`; SUPPORTED is what is tested. Each interpreter found on this machine gets a
venv of its own, `.venv-pythons/X.Y` (about 800 MB each; pip needs the package registry the first time), with
the package's dependencies and its `test` extra, as .venv has them, and runs `pytest tests/unit` there.

Found means `pythonX.Y` on PATH, or pyenv's build of it ($PYENV_ROOT/versions/X.Y.*). One not found is skipped,
with how to get it. The package is not installed into those venvs: pytest puts the checkout first on sys.path
(pyproject's pythonpath), so the code under test is this checkout's, and its .venv is left as it is."""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml takes tomllib (Python 3.11)")


def find_python(version: str) -> str | None:
    """An interpreter of ``version``: on PATH, else pyenv's newest build of it."""
    on_path = shutil.which(f"python{version}")
    if on_path and subprocess.run([on_path, "-c", "pass"], capture_output=True).returncode == 0:   # not a shim
        return on_path
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    builds = sorted(glob.glob(f"{pyenv}/versions/{version}.*/bin/python{version}"),
                    key=lambda path: [int(part) for part in Path(path).parts[-3].split(".") if part.isdigit()])
    return builds[-1] if builds else None


def requirements() -> list[str]:
    """pyproject.toml's dependencies and its `test` extra, as written: markers and all (`python_version < ...`),
    for the venv's own pip to weigh for its interpreter. The whole extra, not the part the unit group imports
    today: a list of our own would fall behind the tests."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["test"]


def ensure_venv(python: str, version: str) -> Path:
    """`.venv-pythons/X.Y` with ``requirements()``, made again when they or the interpreter change (a stamp)."""
    venv = ROOT / ".venv-pythons" / version
    built_by = subprocess.run([python, "-c", "import sys; print(sys.executable, sys.version)"],
                              capture_output=True, text=True, check=True).stdout
    stamp = venv / ".labcore-test"
    want = hashlib.sha256("\n".join([built_by, *requirements()]).encode()).hexdigest()[:16]
    if stamp.exists() and stamp.read_text() == want:
        return venv
    made = subprocess.run([python, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
    assert made.returncode == 0, (f"{python} -m venv: {made.stderr.strip()[-2000:]}\nfix: install its venv "
                                  f"module (Debian, Ubuntu: apt-get install python{version}-venv)")
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
