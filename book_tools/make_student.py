"""Write the student edition of the chapters: every solution replaced by a labelled stub, every output cleared.

    python scripts/make_student.py            # -> notebooks/student/*.ipynb (committed; a test keeps them in sync)

In a chapter, each exercise is a markdown cell whose metadata names it (``"exercise": "3.1"``), followed by its
solution cells (tagged ``solution``) and, for a checked exercise, a check cell (tagged ``check``). The student copy
keeps the exercise and its check, and puts in place of the solution:

* for code: a code cell that names the exercise and, when it is checked, starts ``answer_3_1 = None`` for the
  student to fill in;
* for a prose question: a markdown cell to write the answer in.

Its Colab badge opens the student copy, and its metadata says ``"edition": "student"`` (the grader reads the chapter
from there).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lora_merge_utils.course.exercises import EXERCISES  # noqa: E402

STUDENT_DIR = ROOT / "notebooks" / "student"
EDITION_NOTE = (
    "*Student edition*: each exercise below has an empty cell for your answer. For a checked exercise, the cell "
    "after your answer prints ✓ when the answer has the form the grader reads, ✗ with what to change otherwise; "
    "whether it is right is decided by the instructor's grader. Put your student ID in `STUDENT_ID` below the setup "
    "cell."
)
STUDENT_ID = (
    'STUDENT_ID = ""  # your student ID, as your course asks for it (the grader reads it; without it, your file name)'
)


def _execute_notebooks():
    from book_tools import execute_notebooks

    return execute_notebooks


def student_badge(name: str) -> str:
    """The Colab URL of the student copy of chapter ``name`` (from ``_config.yml``'s repository)."""
    execute = _execute_notebooks()
    url, branch = execute.repository()
    return execute.COLAB.format(owner_repo=url.split("github.com/")[-1], branch=branch, name=f"student/{name}")


def stub(cell) -> nbformat.NotebookNode:
    """The empty answer cell a student gets in place of one solution cell."""
    exercise = EXERCISES[cell.metadata["exercise"]]
    if cell.cell_type == "markdown" or exercise.kind == "prose":
        new = nbformat.v4.new_markdown_cell(
            f"**Your answer to exercise {exercise.id}:** *double-click this cell and write it here.*"
        )
    else:
        lines = [f"# Exercise {exercise.id}: your code here."]
        if exercise.checked:
            lines += [f"# Store your answer in {exercise.variable}: {exercise.answer}.", f"{exercise.variable} = None"]
        new = nbformat.v4.new_code_cell("\n".join(lines))
    new.id = "stub-" + exercise.id.replace(".", "-")  # stable ids keep the committed copies in sync
    new.metadata["exercise"] = exercise.id
    new.metadata["tags"] = ["stub"]
    return new


def student_version(notebook, name: str, with_solutions: bool = False) -> nbformat.NotebookNode:
    """The student copy of chapter ``name``. ``with_solutions`` keeps the solutions in the answer cells instead of
    stubs: a submission that answered everything, as the grading tests need."""
    notebook = nbformat.from_dict(notebook)
    cells, answered = [], set()
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "solution" in tags:
            if with_solutions:
                cell.metadata["tags"] = [t for t in tags if t not in ("solution", "remove-cell")]
            else:
                if cell.metadata["exercise"] in answered:
                    continue  # one answer cell per exercise, however many cells its solution has
                answered.add(cell.metadata["exercise"])
                cell = stub(cell)
        elif "check" in tags:
            cell.metadata["tags"] = ["check"]
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        cells.append(cell)
    setup = next(i for i, c in enumerate(cells) if "setup" in c.metadata.get("tags", []))
    identity = nbformat.v4.new_code_cell(STUDENT_ID)
    identity.id, identity.metadata["tags"] = "student-id", ["student-id"]
    cells.insert(setup + 1, identity)
    first = cells[0]
    execute = _execute_notebooks()
    url, branch = execute.repository()
    own = execute.COLAB.format(owner_repo=url.split("github.com/")[-1], branch=branch, name=name)
    first.source = first.source.replace(own, student_badge(name))
    title, _, rest = first.source.partition("\n")
    first.source = f"{title} (student edition)\n\n{EDITION_NOTE}\n{rest}"
    notebook.cells = cells
    notebook.metadata.setdefault("lora_book", {})["edition"] = "student"
    return notebook


def write_if_changed(notebook, path: Path) -> bool:
    """Write ``notebook`` to ``path`` atomically unless it already holds exactly that; return whether it changed."""
    text = nbformat.writes(notebook) + "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


GUIDE = ROOT / "book" / "instructors.md"


def guide_tables() -> dict[str, str]:
    """The tables of the instructors' page that come from the exercise table, the measured CPU times and the plan:
    ``{marker name: markdown}``."""
    from lora_merge_utils.course.exercises import chapter_table, exercise_table
    from lora_merge_utils.course.grading import CHAPTER_SECONDS
    from lora_merge_utils.course.plan import chapter_plan

    plan = chapter_plan("full")
    t4 = {int(n[:2]): (w, a) for n, w, a in zip(plan["notebook"], plan["warm_minutes"], plan["alone_minutes"])}
    cpu = {chapter: seconds / 60 for chapter, seconds in CHAPTER_SECONDS.items()}
    return {"chapter table": chapter_table(cpu, t4), "exercise table": exercise_table()}


def with_guide_tables(text: str) -> str:
    """``text`` (the instructors' page) with each generated table between its markers replaced."""
    for name, table in guide_tables().items():
        start = re.search(rf"<!-- {name}: generated .*? -->\n", text)
        end = text.index(f"<!-- end of {name} -->")
        if start is None:
            raise SystemExit(f"{GUIDE}: the '<!-- {name}: generated ...' marker is missing")
        text = text[: start.end()] + table + "\n" + text[end:]
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=STUDENT_DIR)
    args = parser.parse_args()
    guide = GUIDE.read_text(encoding="utf-8")
    if with_guide_tables(guide) != guide:
        GUIDE.write_text(with_guide_tables(guide), encoding="utf-8")
        print(f"wrote {GUIDE.relative_to(ROOT)} (its generated tables)")
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        notebook = student_version(nbformat.read(path, as_version=4), path.name)
        changed = write_if_changed(notebook, args.out / path.name)
        print(f"{'wrote' if changed else 'unchanged'} {args.out.name}/{path.name}")


if __name__ == "__main__":
    main()
