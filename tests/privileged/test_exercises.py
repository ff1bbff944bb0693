"""The exercises' checks on the real kernel, with the reference solutions as the notebooks store them.

Each solution cell of notebooks 03-09 is run as it is (the student's version would be the same cell), then
its check cell: the check must pass with full points. With the solution replaced by nbgrader's
``raise NotImplementedError()`` (the blank student version), the same check must score zero and say which
step to write. (02's exercise needs the notebook's daemon; test_nbgrader.py grades 09 as a class would.)
"""
import re
from pathlib import Path

import nbformat
import pytest

from tests.conftest import privileged

pytestmark = privileged
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
QUICK = ("03", "04", "05", "06", "09")          # blanks for these; 07 and 08 start containers, run once


def exercises_of(prefix: str):
    """(grade_id, solution source, check source) for each exercise of notebook ``prefix``."""
    path = next(NOTEBOOKS.glob(f"{prefix}-*.ipynb"))
    cells = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    found = []
    for cell, following in zip(cells, cells[1:]):
        if cell.metadata.get("nbgrader", {}).get("solution"):
            found.append((cell.metadata["nbgrader"]["grade_id"], cell.source, following.source))
    return found


CASES = [(prefix, *exercise) for prefix in ("03", "04", "05", "06", "07", "08", "09")
         for exercise in exercises_of(prefix)]


def run_cells(solution: str, check: str):
    """Run the solution cell, then the check cell; return the check cell's last expression (the Check)."""
    namespace = {"guest": None}                      # 07's check sets the container beside the VM's boot, if any
    exec(compile(solution, "<solution>", "exec"), namespace)
    *body, last = check.strip().splitlines()
    exec(compile("\n".join(body), "<check>", "exec"), namespace)
    return eval(compile(last, "<check>", "eval"), namespace)


def blank(solution: str) -> str:
    """What `nbgrader generate_assignment` leaves of a solution: its markers' contents replaced."""
    return re.sub(r"( *)### BEGIN SOLUTION\n.*?### END SOLUTION", r"\1# YOUR CODE HERE\n\1raise NotImplementedError()",
                  solution, flags=re.DOTALL)


@pytest.mark.parametrize("prefix,grade_id,solution,check", CASES, ids=[case[1] for case in CASES])
def test_the_reference_solution_passes_its_check(prefix, grade_id, solution, check):
    result = run_cells(solution, check)
    assert result.passed and result.score() == result.points, str(result)
    assert "✓" in str(result).splitlines()[0]


@pytest.mark.parametrize("prefix,grade_id,solution,check", [case for case in CASES if case[0] in QUICK],
                         ids=[case[1] for case in CASES if case[0] in QUICK])
def test_the_blank_student_version_scores_zero_and_says_what_to_write(prefix, grade_id, solution, check):
    result = run_cells(blank(solution), check)
    assert not result.passed and result.score() == 0
    assert "NotImplementedError" in str(result) and str(result).startswith("✗")


def test_every_notebook_from_03_to_09_has_two_exercises_or_more():
    assert all(len(exercises_of(prefix)) >= 2 for prefix in ("03", "04", "05", "06", "07", "08", "09"))
