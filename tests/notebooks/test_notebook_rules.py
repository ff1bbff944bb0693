"""The rules every notebook in notebooks/ keeps (CONTRIBUTING.md), checked on the stored .ipynb files.

A notebook is narrative plus one short call into labcore per code cell, stored with the outputs of a real run
(`./lab execute`), ending with questions and a cleanup cell; at least one cell's output is compared by nbval.
The one exception is an exercise's solution cell (nbgrader's ``solution`` metadata): the student's own code,
a function the next cell's check runs, so it may be longer and shows no output of its own.
"""
import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_LINES = 3
LOOPS_AND_HELPERS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.For, ast.AsyncFor,
                     ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def code_cells(notebook, solutions: bool = True):
    return [(index, cell) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            and (solutions or not is_solution(cell))]


def is_solution(cell) -> bool:
    """An exercise cell the student writes (labcore.lessons.exercises checks what it does)."""
    return bool(cell.metadata.get("nbgrader", {}).get("solution"))


def statements(source: str) -> list[str]:
    """The lines that do something: imports name what a cell uses, they are not steps of their own."""
    return [line for line in source.splitlines() if line.strip() and not line.strip().startswith("#")
            and not re.match(r"\s*(from\s+\S+\s+)?import\s", line)]


def python_of(source: str) -> ast.AST:
    # Cells may use IPython syntax (%magic, !shell): turn it into the Python IPython itself would run.
    from IPython.core.inputtransformer2 import TransformerManager
    return ast.parse(TransformerManager().transform_cell(source))


@pytest.fixture(params=NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def notebook(request):
    return nbformat.read(request.param, as_version=4)


def test_every_code_cell_ran_and_kept_its_outputs(notebook):
    for index, cell in code_cells(notebook, solutions=False):
        assert cell.execution_count is not None, f"cell {index} was not run: `./lab execute NOTEBOOK`"
        assert cell.outputs, f"cell {index} has no stored output: one call per cell, showing its result"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"cell {index} stored an error: {errors[0].ename}: {errors[0].evalue}"


def test_every_code_cell_is_one_short_call(notebook):
    for index, cell in code_cells(notebook, solutions=False):
        assert len(statements(cell.source)) <= MAX_LINES, \
            f"cell {index} has more than {MAX_LINES} lines: move the code into labcore"
        tree = python_of(cell.source)
        helpers = [type(node).__name__ for node in ast.walk(tree) if isinstance(node, LOOPS_AND_HELPERS)]
        assert not helpers, f"cell {index} defines or loops ({', '.join(helpers)}): move it into labcore"
        stars = [node for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names)]
        assert not stars, f"cell {index} has a star import: import the module and name what you use"


def test_notebook_ends_with_questions_then_cleanup(notebook):
    *_, questions, cleanup = notebook.cells
    assert questions.cell_type == "markdown" and re.search(r"^#+ *Check your understanding", questions.source,
                                                           re.MULTILINE), \
        "the next-to-last cell is the markdown '## Check your understanding' with the questions"
    assert cleanup.cell_type == "code" and re.search(r"\bjournal\.cleanup\(", cleanup.source), \
        "the last cell calls labcore.kernel.journal.cleanup(), so a notebook leaves nothing behind"


def test_exercises_hold_a_solution_and_are_checked(notebook):
    """Each solution cell has nbgrader's markers around its reference solution, and the next code cell is
    a graded check that calls labcore.lessons.exercises (never a comparison of source text)."""
    cells = code_cells(notebook)
    for position, (index, cell) in enumerate(cells):
        if not is_solution(cell):
            continue
        assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, \
            f"cell {index}: the reference solution goes between ### BEGIN SOLUTION and ### END SOLUTION"
        following = cells[position + 1][1] if position + 1 < len(cells) else None
        assert following is not None and following.metadata.get("nbgrader", {}).get("grade"), \
            f"cell {index}: the next code cell is the graded check (nbgrader grade: true, points)"
        assert re.search(r"\bexercises\.check_\w+\(", following.source), \
            f"cell {index}: its check calls labcore.lessons.exercises.check_*"


def test_some_output_is_compared_by_nbval(notebook):
    marked = [index for index, cell in code_cells(notebook) if "# NBVAL_CHECK_OUTPUT" in cell.source]
    assert marked, "mark at least one cell with a stable result `# NBVAL_CHECK_OUTPUT`"


def test_sanitizers_hide_what_changes_between_runs():
    from nbval.plugin import get_sanitize_patterns
    patterns = get_sanitize_patterns((Path(__file__).parent / "sanitize.cfg").read_text())

    def sanitize(text):
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    assert sanitize("net -> net:[4026531840]") == "net -> net:[INODE]"
    assert sanitize("Pid     10063") == "Pid     PID"
    assert sanitize("pid 1 in the container") == "pid 1 in the container"     # the lesson stays visible
    assert sanitize("took 12.3 ms, then 0.52 s") == "took DURATION, then DURATION"
    assert sanitize("hostname: vm") == "hostname: HOSTNAME"
    assert sanitize("hostname: labcore-1") == "hostname: labcore-1"
    assert sanitize("container 1a2b3c4d5e6f at /tmp/labcore-x/rootfs") == "container HEXID at /tmp/TMPPATH"
    assert sanitize("http://127.0.0.1:8888/lab") == "http://127.0.0.1:PORT/lab"
