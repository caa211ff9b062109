"""Build the instructor or the student edition of the book (the public edition is the repository root itself).

    python scripts/build_edition.py instructor   # -> _build/instructor/_build/html: solutions and their outputs
    python scripts/build_edition.py student      # -> _build/student/_build/html: the student notebooks

All three editions come from one source, the chapters in ``notebooks/``:

* **public** (``make html``/``make book``): solution cells carry the ``remove-cell`` tag, so neither their code nor
  their output reaches the page; exercises, hints and check calls do;
* **instructor** (``make instructor``): a staged copy in which every solution is shown under a "Solution" heading,
  with the output it produced when the chapters were executed;
* **student** (``make student``): the committed ``notebooks/student/`` copies (``scripts/make_student.py``), whose
  launch buttons open the student notebooks; without the conclusions page, which pastes the chapters' results.

Both staged editions are built with ``-W`` (warnings are errors), like the public one.
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
TITLES = {"instructor": "instructor edition", "student": "student edition"}


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


def stage(edition: str, staging: Path) -> None:
    """Copy the book's sources into ``staging`` with the edition's notebooks and title."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in SHARED:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, staging / name)
    config = (ROOT / "_config.yml").read_text(encoding="utf-8")
    config = re.sub(
        r'^title: "(.*)"$', lambda m: f'title: "{m.group(1)} ({TITLES[edition]})"', config, count=1, flags=re.M
    )
    chapters = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    if edition == "instructor":
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
    out = (args.out or ROOT / "_build" / args.edition).resolve()
    staging = out / "src"
    stage(args.edition, staging)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(staging), "-W", "--keep-going", "--path-output", str(out)]
    result = subprocess.run(command, cwd=staging)
    if result.returncode == 0:
        print(f"{TITLES[args.edition]}: {out / '_build' / 'html' / 'index.html'}")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
