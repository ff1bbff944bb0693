"""The course as a book (`./lab book`, tools/book.py): it builds offline, has a page per notebook in course
order with its stored diagrams and folded answers, the page on running it for real, and no broken link."""
import re

import pytest

from tools import book

pytest.importorskip("jupyter_book", reason="jupyter-book is not installed (pip install 'jupyter-book<2')")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return book.build(tmp_path_factory.mktemp("labcore-book")).parent


def test_every_page_has_its_diagrams_and_answers_and_every_link_resolves(site):
    assert book.check(site) == []


def test_the_navigation_is_the_course_in_order_then_how_to_run_it(site):
    index = (site / "intro.html").read_text()
    order = [path.stem for path in book.notebooks()]
    assert order[0] == "00-start-here" and order == sorted(order)
    positions = [index.index(f'href="notebooks/{name}.html"') for name in order]
    assert positions == sorted(positions)
    assert index.index('href="run-it-for-real.html"') > positions[-1]
    assert "./lab up" in re.sub(r"<[^>]+>", "", (site / "run-it-for-real.html").read_text())


def test_the_intro_draws_the_course_map(site):
    intro = book.read_page(site / "intro.html")
    assert any(re.search(r"course-map\.svg$", source) for source in intro.images)


def test_toc_lists_whichever_notebooks_exist():
    toc = book.toc(["00-start-here", "09-security"])
    assert "  - file: notebooks/00-start-here\n  - file: notebooks/09-security\n" in toc
    assert toc.index("09-security") < toc.index("run-it-for-real")


def test_check_finds_a_missing_diagram_and_a_broken_link(tmp_path, monkeypatch):
    notebook = tmp_path / "notebooks" / "00-x.ipynb"
    notebook.parent.mkdir()
    notebook.write_text('{"cells": [{"cell_type": "code", "id": "a", "execution_count": 1, "metadata": {}, "source": "", '
                        '"outputs": [{"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBO",'
                        ' "text/plain": "<diagram: x>"}}]}, {"cell_type": "markdown", "id": "b", "metadata": {}, "source": '
                        '"<details><summary>Answer</summary>42</details>"}], "metadata": {}, "nbformat": 4, '
                        '"nbformat_minor": 5}')
    site = tmp_path / "html"
    (site / "notebooks").mkdir(parents=True)
    (site / "notebooks" / "00-x.html").write_text('<div class="cell_output"><p>no picture</p></div>'
                                                  '<a href="../missing.html">x</a><a href="#top">top</a>')
    monkeypatch.setattr(book, "ROOT", tmp_path)
    assert book.check(site) == ["00-x.html: 1 diagrams stored, 0 on the page",
                                "00-x.html: 1 folded answers stored, 0 on the page",
                                "notebooks/00-x.html: broken link ../missing.html",
                                "notebooks/00-x.html: broken link #top"]
