"""Grade a folder of submitted student notebooks: execute each one, collect its checks, write one CSV of scores.

    python -m lora_merge_utils grade submissions/ --out scores.csv

Each notebook runs top to bottom in a fresh kernel (errors in a cell do not stop it, as a partly finished
submission should still earn what it got right), with ``$LORA_BOOK_GRADE_RESULTS`` pointing at a file where every
:func:`~lora_merge_utils.exercises.check_exercise` call records its verdict. A checked exercise scores its points
if its last check passed; exercises graded by hand get an empty column for the instructor to fill in.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from .artifacts import write_atomic
from .exercises import EXERCISES, GRADE_RESULTS_ENV, chapter_exercises


def chapter_of(notebook: dict, path: Path) -> int:
    """The chapter a submission belongs to: from its metadata, else from a file name starting with the number."""
    chapter = notebook.get("metadata", {}).get("lora_book", {}).get("chapter")
    if chapter is None:
        match = re.match(r"(\d+)_", path.name)
        if match is None:
            raise ValueError(
                f"{path.name}: cannot tell which chapter this is (no lora_book metadata and the file "
                "name does not start with the chapter number, e.g. 03_...); hand out the student "
                "notebooks from notebooks/student/ unchanged in name or metadata."
            )
        chapter = match.group(1)
    return int(chapter)


def run_submission(path: Path, timeout: int = 1800, env: dict[str, str] | None = None) -> tuple[dict[str, bool], int]:
    """Execute one notebook; return ``({exercise: passed}, number of cells that raised)``."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="grade-") as scratch:
        results = Path(scratch) / "checks.jsonl"
        results.touch()
        kernel_env = (
            dict(os.environ)
            | (env or {})
            | {GRADE_RESULTS_ENV: str(results), "LORA_BOOK_PROGRESS": "0", "TQDM_DISABLE": "1"}
        )
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(path.parent)}},
        )
        # The kernel's own log (e.g. ipykernel's warning about TCP transport) is not the grader's business.
        with open(Path(scratch) / "kernel.log", "w") as log:
            client.execute(env=kernel_env, stderr=log)
        verdicts = {}
        for line in results.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            verdicts[record["exercise"]] = bool(record["passed"])  # the last check of an exercise counts
    errors = sum(any(o.get("output_type") == "error" for o in cell.get("outputs", [])) for cell in notebook.cells)
    return verdicts, errors


def grade_folder(
    folder: Path,
    out: Path,
    timeout: int = 1800,
    run: Callable[[Path], tuple[dict[str, bool], int]] | None = None,
    progress: Callable[[str], None] = print,
) -> list[dict[str, object]]:
    """Grade every ``*.ipynb`` in ``folder`` and write the scores to ``out`` (CSV); return the rows."""
    import nbformat

    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; give the folder that holds the submitted notebooks.")
    paths = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        raise ValueError(f"{folder} holds no .ipynb files; collect the submissions there first.")
    run = run or (lambda p: run_submission(p, timeout))
    rows = []
    for path in paths:
        chapter = chapter_of(nbformat.read(path, as_version=4), path)
        progress(f"grading {path.name} (chapter {chapter}) ...")
        verdicts, errors = run(path)
        row: dict[str, object] = {"submission": path.name, "chapter": chapter}
        auto = auto_max = 0
        for exercise in chapter_exercises(chapter):
            if exercise.checked:
                score = exercise.points if verdicts.get(exercise.id, False) else 0
                auto, auto_max = auto + score, auto_max + exercise.points
                row[f"ex_{exercise.id}"] = score
            else:
                row[f"ex_{exercise.id}"] = ""  # graded by hand
        total_max = sum(e.points for e in chapter_exercises(chapter))
        row |= {
            "checked_points": auto,
            "checked_max": auto_max,
            "hand_graded_max": total_max - auto_max,
            "cells_with_errors": errors,
        }
        rows.append(row)
        progress(f"  {auto}/{auto_max} checked points, {errors} cell(s) with errors")
    columns = (
        ["submission", "chapter"]
        + [f"ex_{e}" for e in EXERCISES]
        + ["checked_points", "checked_max", "hand_graded_max", "cells_with_errors"]
    )
    used = [c for c in columns if any(c in row for row in rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=used, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    text = buffer.getvalue()
    write_atomic(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return rows
