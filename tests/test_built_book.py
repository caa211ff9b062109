"""Every test that needs a Jupyter Book build, in one module (one xdist group, see conftest.py), so that the book is
built once per test run: the public book as `make html` renders it (what the Pages workflow publishes, read by the
leak check and, where Chromium is installed, by the rendered-page checks). The instructor and student editions are
checked from their staged sources (``tests/test_editions.py``): `make instructor` and `make student` build them from
those sources with the same command and settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lora_merge_utils import plots

from .helpers import CHAPTERS, ROOT, load_script, needs_chromium

CHECK = load_script("check_rendered_pages")

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def public_book(tmp_path_factory) -> Path:
    """The public book as `make html` renders it (a staged copy without solutions, stored outputs, nothing executed;
    warnings are errors), built once for the tests that read its pages."""
    out = tmp_path_factory.mktemp("book")
    command = [sys.executable, str(ROOT / "scripts" / "build_edition.py"), "public", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out / "_build" / "html"


def test_public_book_builds_and_no_solution_reaches_it(public_book):
    """The real build, as `make html` runs it (warnings are errors), then the leak check on every chapter page."""
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_public_build.py"), str(public_book)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no solution code, output or image in the" in check.stdout and "(8 chapters)" in check.stdout
    for chapter in CHAPTERS:
        page = (public_book / "notebooks" / f"{chapter.stem}.html").read_text(encoding="utf-8")
        assert "colab.research.google.com/github" in page and f"notebooks/student/{chapter.name}" in page, (
            "the page's Colab badge opens the student copy"
        )
        assert f"blob/main/notebooks/{chapter.name}" not in page, "no link opens the chapter with its solutions"
    downloads = list((public_book / "_sources").rglob("*.ipynb"))
    assert downloads and all('"solution"' not in p.read_text(encoding="utf-8") for p in downloads)


@needs_chromium
def test_every_table_and_code_block_fits_the_content_column(public_book):
    reports = CHECK.check_pages(public_book, CHECK.default_pages(public_book))
    assert reports
    problems = [p for r in reports for p in r.problems]
    assert not problems, "\n".join(problems)


@needs_chromium
def test_the_column_width_the_figures_are_drawn_for_is_the_page_s(public_book):
    reports = CHECK.check_pages(public_book, ["book/intro.html"])
    assert reports[0].column == pytest.approx(plots.CONTENT_WIDTH_PX, abs=1), (
        "the theme's content column changed: update plots.CONTENT_WIDTH_PX (and MAX_WIDTH_IN)"
    )


@needs_chromium
def test_pages_read_on_a_phone(public_book):
    """At 390 px no page scrolls sideways, every table wider than the screen scrolls in a box of its own with its
    header, and no control of the page (the "Back to top" button) covers a table's cells."""
    reports = CHECK.check_pages(public_book, CHECK.default_pages(public_book), width=CHECK.PHONE_WIDTH, height=844)
    assert reports and all(r.phone is not None for r in reports)
    problems = [p for r in reports for p in r.problems]
    assert not problems, "\n".join(problems)
    assert any(not t["fits"] for r in reports for t in r.phone["tables"]), "some table is wider than a phone"


def test_math_is_served_from_the_build(public_book):
    """MathJax is copied into the book and loaded from there, so an offline build shows rendered math, not TeX."""
    page = (public_book / "notebooks" / "05_merge_methods.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in page and "cdn.jsdelivr.net/npm/mathjax" not in page
    assert (public_book / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_setup_and_glue_cells_are_collapsed_and_check_cells_absent(public_book):
    page = (public_book / "notebooks" / "05_merge_methods.html").read_text(encoding="utf-8")
    assert page.count("tag_hide-input") >= 2, "the setup cell and the code above What we found are collapsed"
    assert "check_exercise(" not in page, "no check cell without its solution on a public page"


def test_public_pages_and_downloads_carry_no_scaffolding(public_book):
    """What the review found on the public pages: bare True outputs under check(study, ...), nbval markers, cells that
    only guard results for CI, the setup cell's output, and a download that stopped in a NameError at its first check
    cell. The executed sources keep all of it for CI; the site shows none of it."""
    import json

    from bs4 import BeautifulSoup

    for chapter in CHAPTERS:
        soup = BeautifulSoup(
            (public_book / "notebooks" / f"{chapter.stem}.html").read_text(encoding="utf-8"), "html.parser"
        )
        outputs = [o.get_text().strip() for o in soup.select("div.cell_output")]
        assert "True" not in outputs and "False" not in outputs, f"{chapter.name}: a bare boolean output"
        text = soup.get_text()
        assert "NBVAL" not in text and "guarded" not in text, f"{chapter.name}: test scaffolding on the page"
        setup = soup.select_one("div.tag_setup")
        assert setup is not None and not setup.select("div.cell_output"), f"{chapter.name}: the setup cell's output"
        download = json.loads((public_book / "_sources" / "notebooks" / chapter.name).read_text(encoding="utf-8"))
        sources = ["".join(c["source"]) for c in download["cells"] if c["cell_type"] == "code"]
        assert not any("check_exercise(" in s or "NBVAL" in s for s in sources), f"{chapter.name}: download"
