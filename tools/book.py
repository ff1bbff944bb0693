"""The course as a book: a static HTML site of the executed notebooks, built with Jupyter Book.

    tools/book.py [--out DIR]        (`./lab book`; default build/book; prints the site's index.html)

Jupyter Book 1 (Sphinx with MyST-NB, from PyPI) builds offline: the site's theme and scripts come with the
packages, and nothing is fetched at build time. The notebooks are shown with their stored outputs (those of
the lab VM, `./lab execute --vm`); none is executed here.

The book's own pages and settings are in book/. The build stages them in DIR/src with the notebooks and
diagrams/, writes _toc.yml with the notebooks in course order (the NN- of their names: whichever exist),
then Sphinx writes the site to DIR/html. ``check(site)`` is what `./lab test` asks of the result: every
notebook has its page, every page its diagrams and folded answers, and every link and image resolves.
"""
from __future__ import annotations

import argparse
import html.parser
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGES_AFTER = ["run-it-for-real"]          # after the course: how to run it yourself


def notebooks() -> list[Path]:
    """notebooks/NN-*.ipynb in course order: 00-start-here first, whichever numbers exist."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))


def toc(names: list[str]) -> str:
    """_toc.yml (jb-book format): the intro, the notebooks as the course, then the pages after it."""
    lines = ["format: jb-book", "root: intro", "parts:", "- caption: The course", "  chapters:"]
    lines += [f"  - file: notebooks/{name}" for name in names]
    lines += ["- caption: Run it yourself", "  chapters:"]
    lines += [f"  - file: {page}" for page in PAGES_AFTER]
    return "\n".join(lines) + "\n"


def stage(src: Path) -> Path:
    """book/, the notebooks and diagrams/ in one directory, as Jupyter Book wants them: under its root."""
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(BOOK, src)
    (src / "notebooks").mkdir()
    for path in notebooks():
        nbformat.write(fold_hidden_code(nbformat.read(path, as_version=4)), src / "notebooks" / path.name)
    shutil.copytree(ROOT / "diagrams", src / "diagrams")
    (src / "_toc.yml").write_text(toc([path.stem for path in notebooks()]))
    return src


def fold_hidden_code(notebook):
    """Code that JupyterLab shows collapsed (source_hidden) is folded in the book too: MyST-NB's hide-input."""
    for cell in notebook.cells:
        if cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"):
            tags = cell.metadata.setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    return notebook


def build(out: Path) -> Path:
    """Stage and build; the path of the site's index.html."""
    src = stage(out / "src")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jupyter_book), "build", str(src), "--path-output", str(out), "--builder", "html",
                    "--keep-going", "--quiet"], check=True)
    site = out / "_build" / "html"
    if (out / "html").exists():
        shutil.rmtree(out / "html")
    site.rename(out / "html")
    shutil.rmtree(out / "_build")
    return out / "html" / "index.html"


# --- what a finished site must have -------------------------------------------------------------------------

class Page(html.parser.HTMLParser):
    """The links, images, <details> and output diagrams of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links, self.images, self.details, self.output_images = [], [], 0, 0
        self.depth_in_output = 0
        self.stack: list[bool] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        output = "cell_output" in (attrs.get("class") or "")
        if tag not in VOID:
            self.stack.append(output)
            self.depth_in_output += output
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("img", "link", "script") and (attrs.get("src") or (tag == "link" and attrs.get("href"))):
            self.images.append(attrs.get("src") or attrs["href"])
        if tag == "img" and self.depth_in_output:
            self.output_images += 1
        if tag == "svg" and self.depth_in_output:
            self.output_images += 1
        if tag == "details":
            self.details += 1

    def handle_endtag(self, tag):
        if tag not in VOID and self.stack:
            self.depth_in_output -= self.stack.pop()


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(errors="replace"))
    return page


def stored(path: Path) -> tuple[int, int]:
    """(outputs that hold a diagram, <details> blocks in markdown) of a notebook."""
    notebook = nbformat.read(path, as_version=4)
    diagrams = sum(1 for cell in notebook.cells for output in cell.get("outputs", [])
                   if {"image/svg+xml", "image/png"} & set(output.get("data", {}))
                   or re.search(r"<(img|svg)\b", output.get("data", {}).get("text/html", "")))
    details = sum(cell.source.count("<details") for cell in notebook.cells if cell.cell_type == "markdown")
    return diagrams, details


def check(site: Path) -> list[str]:
    """What is wrong with a built site: missing pages, diagrams or folded answers, broken links."""
    problems = []
    for path in notebooks():
        page_path = site / "notebooks" / f"{path.stem}.html"
        if not page_path.exists():
            problems.append(f"no page for {path.name}")
            continue
        page, (diagrams, details) = read_page(page_path), stored(path)
        if page.output_images < diagrams:
            problems.append(f"{page_path.name}: {diagrams} diagrams stored, {page.output_images} on the page")
        if page.details < details:
            problems.append(f"{page_path.name}: {details} folded answers stored, {page.details} on the page")
    for page_path in sorted(site.rglob("*.html")):
        if page_path.relative_to(site).parts[0] == "_static":     # the theme's templates, not pages
            continue
        page = read_page(page_path)
        problems += [f"{page_path.relative_to(site)}: broken link {target}"
                     for target in page.links + page.images if not resolves(site, page_path, target)]
    return problems


def resolves(site: Path, page: Path, target: str) -> bool:
    """A link within the site names a file that is there (and an #anchor on that page); others pass."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith(("mailto:", "data:", "javascript:")):
        return True                 # outside the site: not fetched (no network), not a broken page
    path = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if path.is_dir():
        path = path / "index.html"
    if not path.exists() or site.resolve() not in [path, *path.parents]:
        return False
    if parts.fragment and path.suffix == ".html":
        return re.search(rf'id="{re.escape(unquote(parts.fragment))}"', path.read_text(errors="replace")) is not None
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/book.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="default: build/book")
    out = parser.parse_args(argv).out.resolve()
    index = build(out)
    problems = check(index.parent)
    for problem in problems:
        print(f"book: {problem}", file=sys.stderr)
    print(index)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
