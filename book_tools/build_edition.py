"""Build one of the book's three editions from the chapters in ``notebooks/``, each from a staged copy.

    python scripts/build_edition.py public       # -> _build/html (make html): no solution anywhere
    python scripts/build_edition.py instructor   # -> _build/instructor/_build/html: solutions and their outputs
    python scripts/build_edition.py student      # -> _build/student/_build/html: the student notebooks

* **public** (``make html``/``make book``; what the Pages workflow publishes): the chapters with their outputs and
  without their solution cells, which are dropped from the staged copy, so no served file can hold them: not a
  page, not a notebook offered for download, not the search index. The chapters' *Open in Colab* badges open the
  student copies; Jupyter Book's own launch button, which would open the chapter with its solutions, is left out.
  ``scripts/check_public_build.py`` then checks every file the site serves.
* **instructor** (``make instructor``): every solution shown under a "Solution" heading, with the output it produced
  when the chapters were executed.
* **student** (``make student``): the committed ``notebooks/student/`` copies (``scripts/make_student.py``), whose
  launch buttons open the student notebooks; without the conclusions page, which pastes the chapters' results.

Every edition is built nitpicky with ``-W`` (``-n -W``): a warning, or a name in the API pages that resolves
nowhere (ours, or a library's through ``book/_inventories``), fails the build.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SHARED = ["book", "_static", "_toc.yml"]
TITLES = {"public": "", "instructor": "instructor edition", "student": "student edition"}


def instructor_notebook(notebook) -> nbformat.NotebookNode:
    """A chapter with its solutions shown: ``remove-cell`` dropped, a heading before each exercise's solution."""
    cells, seen = [], set()
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "solution" in tags:
            exercise = cell.metadata["exercise"]
            if exercise not in seen:
                seen.add(exercise)
                cells.append(nbformat.v4.new_markdown_cell(f"#### Solution {exercise} *(instructor edition)*"))
            cell.metadata["tags"] = [t for t in tags if t != "remove-cell"]
        elif "check" in tags:
            cell.metadata["tags"] = ["check"]  # the instructor sees that the solution passes its check
        cells.append(cell)
    notebook.cells = cells
    return notebook


GUARD = re.compile(r"^# .*\bguarded\b", re.IGNORECASE)
"""The first line of a cell that only asserts the chapter's key results for CI (it prints nothing)."""
TEST_MARKER = re.compile(r"^# NBVAL_\w+\n?", re.MULTILINE)
"""nbval's markers (``# NBVAL_CHECK_OUTPUT``): for the test run, not for readers."""
SELF_CHECK_SENTENCE = "the cell after it checks that your answer"
PUBLIC_SELF_CHECK = "in the student copy (the *Open in Colab* badge opens it) the cell after it checks that your answer"


def public_notebook(notebook) -> nbformat.NotebookNode:
    """A chapter as a reader of the public site meets it, on the page and as the notebook offered for download: no
    solution cells and no check cells (which call the answers that are gone, so the download would stop in a
    ``NameError``); none of the scaffolding the executed sources keep for CI: no cell that only guards the key
    results on the page (the download keeps it: a later cell may read what it computes), no nbval marker, no bare
    ``True`` under a ``check(study, ...)``, and no setup output; and an exercises' introduction that says where the
    self-check is."""
    cells = []
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "solution" in tags or "check" in tags:
            continue
        if cell.cell_type == "code":
            if GUARD.match(cell.source) and not cell.outputs:
                # off the page; kept in the download, where a later cell may read what it computes
                cell.metadata["tags"] = [*tags, "remove-cell"]
            cell.source = TEST_MARKER.sub("", cell.source)
            if "setup" in tags:
                cell.outputs = []
            elif "check(study," in cell.source:
                cell.outputs = [o for o in cell.outputs if not _bare_boolean(o)]
        elif SELF_CHECK_SENTENCE in cell.source:
            cell.source = cell.source.replace(SELF_CHECK_SENTENCE, PUBLIC_SELF_CHECK)
        cells.append(cell)
    notebook.cells = cells
    return notebook


def _bare_boolean(output) -> bool:
    return output.get("output_type") == "execute_result" and output.get("data", {}).get("text/plain") in (
        "True",
        "False",
    )


def stage(edition: str, staging: Path) -> None:
    """Copy the book's sources into ``staging`` with the edition's notebooks and title."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in SHARED:
        source = ROOT / name
        if source.is_dir():  # not what a notebook page wrote when it ran (book/own-adapters/: data and adapters)
            shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns("own-adapters"))
        else:
            shutil.copy2(source, staging / name)
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    if TITLES[edition]:
        config = re.sub(
            r'^title: "(.*)"$', lambda m: f'title: "{m.group(1)} ({TITLES[edition]})"', config, count=1, flags=re.M
        )
    chapters = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    if edition == "public":
        (staging / "notebooks").mkdir()
        for path in chapters:
            nbformat.write(public_notebook(nbformat.read(path, as_version=4)), staging / "notebooks" / path.name)
        # Jupyter Book's launch button opens the page's own source on GitHub: the chapter with its solutions.
        config = re.sub(r"^(\s*colab_url:).*$", r'\1 ""', config, count=1, flags=re.M)
    elif edition == "instructor":
        (staging / "notebooks").mkdir()
        for path in chapters:
            nbformat.write(instructor_notebook(nbformat.read(path, as_version=4)), staging / "notebooks" / path.name)
    else:
        missing = [p.name for p in chapters if not (ROOT / "notebooks" / "student" / p.name).exists()]
        if missing:
            raise SystemExit(
                f"notebooks/student/ lacks {', '.join(missing)}: run `make student` (or "
                "python scripts/make_student.py) first."
            )
        # Staged under notebooks/student/ so that the launch buttons open the student copies in the repository.
        shutil.copytree(
            ROOT / "notebooks" / "student",
            staging / "notebooks" / "student",
            ignore=shutil.ignore_patterns("artifacts", ".*"),
        )
        config = config.replace('"notebooks/student", ', "")  # the public build skips them; this one is them
        toc = (staging / "_toc.yml").read_text(encoding="utf-8")
        toc = re.sub(r"file: notebooks/", "file: notebooks/student/", toc)
        # The conclusions paste the chapters' results, which student copies do not hold (and should not give away).
        toc = re.sub(r"^\s*- file: book/conclusions\n", "", toc, flags=re.M)
        (staging / "_toc.yml").write_text(toc, encoding="utf-8")
        for page in (staging / "book").glob("*.md"):  # the prose pages link to the chapters they introduce
            text = page.read_text(encoding="utf-8")
            page.write_text(text.replace("../notebooks/0", "../notebooks/student/0"), encoding="utf-8")
    (staging / "_config.yml").write_text(config, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("edition", choices=sorted(TITLES))
    parser.add_argument("--out", type=Path, default=None, help="default: _build/<edition>")
    args = parser.parse_args()
    # The public site is the repository's _build/html, where readers, `make check-pages` and Pages look for it.
    out = (args.out or (ROOT if args.edition == "public" else ROOT / "_build" / args.edition)).resolve()
    staging = out / "_build" / "public-src" if args.edition == "public" else out / "src"
    stage(args.edition, staging)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(staging), "-n", "-W", "--keep-going", "--path-output", str(out)]
    result = subprocess.run(command, cwd=staging)
    if result.returncode == 0:
        print(f"{TITLES[args.edition] or 'public book'}: {out / '_build' / 'html' / 'index.html'}")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
