"""The exercises graded as a class would grade them, by nbgrader (issue 15).

In a temporary nbgrader course, a small assignment made of notebook 09's exercise cells (its solution and
check cells, as they are stored) goes through nbgrader's own commands: ``generate_assignment`` makes the
student version (solutions replaced by ``raise NotImplementedError()``), and ``autograde`` runs three
submissions in a fresh kernel: the reference solutions score full marks, the blank student version scores
zero, and a partly right answer scores the partial credit its check cell printed, with the hint in its output.
09's exercises are the quick ones (a child that drops a capability, one that loads a seccomp filter), and they
run wherever a user namespace may be made; on a confined host they are refused, so this test is skipped there.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

nbgrader = pytest.importorskip("nbgrader", reason="nbgrader is the `grading` extra: ./lab test installs it")

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "notebooks" / "09-security.ipynb"
ASSIGNMENT, NOTEBOOK = "ex09", "exercises"
# The capability exercise half done: out of the effective and permitted sets, but not the bounding set.
HALF_DONE = '''
from labcore.kernel import capabilities


def drop_sys_chroot():
    keep = [name for name in capabilities.held_by_this_process() if name != "CAP_SYS_CHROOT"]
    capabilities.set_capabilities(keep)
'''


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    from labcore.lessons import hosts
    if hosts.current().kind == hosts.CONFINED:
        pytest.skip("this host refuses user namespaces: the exercises are refused here, and not graded")
    course = tmp_path_factory.mktemp("course")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.course_id = 'labcore'\n"
        f"c.CourseDirectory.db_assignments = [dict(name={ASSIGNMENT!r})]\n"
        "c.CourseDirectory.db_students = [dict(id='reference'), dict(id='blank'), dict(id='partial')]\n"
        "c.ExecutePreprocessor.timeout = 300\n")
    write_assignment(course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
    nbgrader_run(course, "generate_assignment", ASSIGNMENT, "--force")
    return course


def write_assignment(path: Path) -> None:
    """The exercise cells of 09, with their outputs cleared, as a notebook of their own."""
    stored = nbformat.read(SOURCE, as_version=4)
    cells = [cell for cell in stored.cells if "nbgrader" in cell.metadata]
    for cell in cells:
        cell.outputs, cell.execution_count = [], None
    notebook = nbformat.v4.new_notebook(cells=cells, metadata=stored.metadata)
    path.parent.mkdir(parents=True)
    nbformat.write(notebook, path)


def nbgrader_run(course: Path, *args: str) -> str:
    # The kernel imports this checkout's labcore; nbgrader runs `alembic` (its database's migrations) from PATH.
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def submit(course: Path, student: str, notebook) -> None:
    path = course / "submitted" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(notebook, path)


@pytest.fixture(scope="module")
def graded(course):
    """Three submissions, autograded: {student: (score, max_score)}."""
    released = nbformat.read(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    submit(course, "reference", nbformat.read(course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4))
    submit(course, "blank", released)
    partial = nbformat.read(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    cell = next(c for c in partial.cells if c.metadata["nbgrader"].get("grade_id") == "ex09-cap")
    cell.source = HALF_DONE.strip()
    submit(course, "partial", partial)
    nbgrader_run(course, "autograde", ASSIGNMENT, "--force")
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return {student: (gradebook.find_submission(ASSIGNMENT, student).score,
                          gradebook.find_submission(ASSIGNMENT, student).max_score)
                for student in ("reference", "blank", "partial")}


def test_the_student_version_has_no_solutions(course):
    released = nbformat.read(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    solutions = [cell for cell in released.cells if cell.metadata.get("nbgrader", {}).get("solution")]
    assert len(solutions) == 2
    for cell in solutions:
        assert "BEGIN SOLUTION" not in cell.source and "raise NotImplementedError()" in cell.source
        assert "load_seccomp" not in cell.source and "drop_bounding_set" not in cell.source


def test_the_reference_solutions_score_full_marks(graded):
    score, max_score = graded["reference"]
    assert max_score == 4 and score == max_score


def test_the_blank_student_version_scores_zero(graded):
    assert graded["blank"] == (0, 4)


def test_a_partly_right_answer_gets_partial_marks_and_the_hint(graded, course):
    assert graded["partial"] == (1.5, 4)       # 3 of the capability check's 4 lines, none of the seccomp one
    autograded = nbformat.read(course / "autograded" / "partial" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    check = next(c for c in autograded.cells if c.metadata["nbgrader"].get("grade_id") == "ex09-cap-check")
    shown = json.dumps(check.outputs)
    assert "CAP_SYS_CHROOT is out of the bounding set" in shown and "hint:" in shown and "drop_bounding_set" in shown


def test_validate_tells_the_student_which_checks_do_not_pass_yet(course):
    """`nbgrader validate` (the student's Validate button) counts a check below its points as failed."""
    passing = nbgrader_run(course, "validate", str(course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"))
    blank = nbgrader_run(course, "validate", str(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"))
    assert "Success! Your notebook passes all the tests." in passing
    assert "VALIDATION FAILED ON 2 CELL(S)" in blank and "exercises.check_drop_capability" in blank
