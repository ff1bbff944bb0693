"""Re-run notebooks top to bottom and store their outputs, so that a re-run changes only what really changed.

    tools/execute_notebooks.py [NOTEBOOK...]        (default: every notebooks/*.ipynb; `./lab execute`)

Each notebook runs in its own directory, in a fresh kernel of this very Python (the .venv's ipykernel, not
whatever `python3` kernelspec a user installed), with up to 300 s per cell. What is stored:

* outputs and execution counts, as the kernel produced them;
* not the volatile parts: run timings, widget models (their ids are random; a widget's text/HTML copy
  stays), the exact Python version; kernelspec and language_info are fixed values;
* the code of a cell that only prints facts for nbval (``# NBVAL_CHECK_OUTPUT`` and print calls) folded
  (``"jupyter": {"source_hidden": true}``): its output stays in the lesson, its code does not interrupt it.

A cell that fails stops its notebook, which is then left as it was; the exit status is 1 and the message
names the notebook and the cell.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import ipykernel.kernelspec
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 300          # seconds: the slowest steps pull an image or boot a VM
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python", "file_extension": ".py", "mimetype": "text/x-python",
                 "codemirror_mode": {"name": "ipython", "version": 3}, "pygments_lexer": "ipython3",
                 "nbconvert_exporter": "python"}


class ThisPython(KernelSpecManager):
    """The python3 kernel is always this interpreter's ipykernel, as nbval's --nbval-current-env does."""

    def get_kernel_spec(self, kernel_name):
        return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                      **ipykernel.kernelspec.get_kernel_dict())


def execute(path: Path) -> str | None:
    """Run every cell of one notebook; store it and return None, or return what failed and where."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, record_timing=False, store_widget_state=False,
                            km=AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisPython()))
    with client.setup_kernel(cwd=str(path.parent), cleanup_kc=True):
        for index, cell in enumerate(notebook.cells):
            try:
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
                return f"{path}: cell {index} failed: {err}"
    nbformat.write(make_stable(notebook), path)
    return None


def make_stable(notebook):
    """Drop what changes from run to run though the lesson did not; fix what depends on the machine."""
    notebook.metadata.pop("widgets", None)
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = dict(LANGUAGE_INFO)
    notebook.nbformat_minor = max(notebook.nbformat_minor, 5)   # 4.5 is the first with cell ids
    for index, cell in enumerate(notebook.cells):
        cell.setdefault("id", f"cell-{index:02d}")       # nbformat 4.5 wants ids; random ones would churn
        for volatile in ("execution", "ExecuteTime"):
            cell.metadata.pop(volatile, None)
        for output in cell.get("outputs", []):
            # A widget view names a model that dies with the kernel: keep its text/HTML copy only.
            output.get("data", {}).pop(WIDGET_VIEW, None)
        if only_checks(cell):
            cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
    return notebook


def only_checks(cell) -> bool:
    """A code cell marked for nbval whose statements are all print(...) calls: it repeats facts for the
    tests, and the reader needs its output, not its code."""
    if cell.cell_type != "code" or "# NBVAL_CHECK_OUTPUT" not in cell.source:
        return False
    try:
        body = ast.parse(cell.source).body
    except SyntaxError:                 # IPython syntax (%magic): not a plain print cell
        return False
    return bool(body) and all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                              and getattr(node.value.func, "id", None) == "print" for node in body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    paths = parser.parse_args(argv).notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    failures = []
    for path in paths:
        print(f"executing {path}", file=sys.stderr, flush=True)
        failure = execute(path.resolve())
        if failure:
            failures.append(failure)
            print(failure, file=sys.stderr, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
