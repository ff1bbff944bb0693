"""What tools/execute_notebooks.py stores and tools/book.py shows: check-only cells with their code folded."""
import nbformat

from tools.book import fold_hidden_code
from tools.execute_notebooks import make_stable, only_checks


def test_a_cell_that_only_prints_checked_facts_has_its_code_folded():
    check = nbformat.v4.new_code_cell('# NBVAL_CHECK_OUTPUT\nprint("fork failed:", pids.data["fork_failed"])')
    lesson = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nsteps.limit_cpu(0.25)")
    plain = nbformat.v4.new_code_cell('print("hi")')
    magic = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\n%time print(1)")
    assert [only_checks(cell) for cell in (check, lesson, plain, magic)] == [True, False, False, False]
    stable = make_stable(nbformat.v4.new_notebook(cells=[check, lesson]))
    assert stable.cells[0].metadata["jupyter"] == {"source_hidden": True}
    assert "jupyter" not in stable.cells[1].metadata


def test_the_book_folds_the_code_jupyterlab_shows_collapsed():
    hidden = nbformat.v4.new_code_cell("print(1)", metadata={"jupyter": {"source_hidden": True}})
    shown = nbformat.v4.new_code_cell("print(2)")
    folded = fold_hidden_code(nbformat.v4.new_notebook(cells=[hidden, shown]))
    assert folded.cells[0].metadata["tags"] == ["hide-input"] and "tags" not in folded.cells[1].metadata
