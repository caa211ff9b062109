"""The three editions from one source: the public book shows no solution, the committed student notebooks are in sync
with the chapters and usable as handed out, the instructor edition shows every solution, and grading works."""

import csv
import importlib.util
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from lora_merge_utils.exercises import CHECKS, EXERCISES, GRADE_RESULTS_ENV, chapter_exercises, check_exercise
from lora_merge_utils.grading import chapter_of, grade_folder

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STUDENT = _script("make_student")
EDITION = _script("build_edition")
PUBLIC = _script("check_public_build")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_committed_student_notebook_is_what_the_chapter_generates(path):
    committed = ROOT / "notebooks" / "student" / path.name
    assert committed.exists(), "run `make student` and commit notebooks/student/"
    expected = nbformat.writes(STUDENT.student_version(nbformat.read(path, as_version=4), path.name)) + "\n"
    assert committed.read_text(encoding="utf-8") == expected, "out of sync with the chapter: run `make student`"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_has_a_labelled_stub_per_exercise_and_no_answers(path):
    student = nbformat.read(ROOT / "notebooks" / "student" / path.name, as_version=4)
    chapter = int(path.name[:2])
    assert chapter_of(student, path) == chapter and student.metadata["lora_book"]["edition"] == "student"
    assert STUDENT.student_badge(path.name) in student.cells[0].source, "its badge opens the student copy"
    assert f"notebooks/{path.name})" not in student.cells[0].source, "not the copy with solutions"
    assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
    assert all(not c.outputs and c.execution_count is None for c in student.cells if c.cell_type == "code")
    stubs = [c for c in student.cells if "stub" in c.metadata.get("tags", [])]
    assert [c.metadata["exercise"] for c in stubs] == [e.id for e in chapter_exercises(chapter)]
    for cell in stubs:
        spec = EXERCISES[cell.metadata["exercise"]]
        if spec.kind == "prose":
            assert cell.cell_type == "markdown" and f"exercise {spec.id}" in cell.source
        else:
            assert cell.cell_type == "code" and cell.source.startswith(f"# Exercise {spec.id}:")
            assert (f"{spec.variable} = None" in cell.source) == spec.checked
    for index, cell in enumerate(student.cells):  # a stub sits right below its exercise (or the exercise's stub)
        if "stub" in cell.metadata.get("tags", []):
            above = student.cells[index - 1]
            assert above.metadata.get("exercise") == cell.metadata["exercise"]


def test_checks_say_right_or_not_yet_without_the_answer(capsys, tmp_path, monkeypatch):
    control = pd.DataFrame({"task": ["a", "b", "c"], "gain": [0.3, -0.1, 0.2]})
    monkeypatch.setenv(GRADE_RESULTS_ENV, str(tmp_path / "results.jsonl"))
    assert check_exercise("1.1", "b", control=control)
    assert not check_exercise("1.1", "a", control=control)
    assert not check_exercise("1.1", None, control=control)
    assert not check_exercise("1.1", ["b"], control=control), "a wrong type is 'not yet', not a traceback"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "✓ Exercise 1.1: correct."
    assert all(
        line.startswith("✗ Exercise 1.1: not") and "'b'" not in line and " b " not in line for line in printed[1:]
    )
    assert (tmp_path / "results.jsonl").read_text().count('"passed": false') == 3
    with pytest.raises(ValueError, match="graded by hand"):
        check_exercise("1.4", "because")
    with pytest.raises(ValueError, match="unknown exercise"):
        check_exercise("9.9", 1)


def test_every_check_takes_the_context_its_chapter_passes():
    for path in CHAPTERS:
        for cell in nbformat.read(path, as_version=4).cells:
            if "check" in cell.metadata.get("tags", []):
                exercise = cell.metadata["exercise"]
                names = [part.split("=")[0].strip() for part in cell.source.split(",")[2:]]
                parameters = list(CHECKS[exercise].__code__.co_varnames[1 : CHECKS[exercise].__code__.co_argcount])
                assert names == parameters, f"{path.name}: exercise {exercise} passes {names}, needs {parameters}"


def test_public_build_check_finds_a_solution_on_a_page(tmp_path):
    notebook = nbformat.v4.new_notebook()
    solution = nbformat.v4.new_code_cell("answer_9 = sorted(something_long_enough)")
    solution.metadata["tags"] = ["solution", "remove-cell"]
    solution.outputs = [nbformat.v4.new_output("stream", name="stdout", text="the secret ranking: a 0.91, b 0.87\n")]
    notebook.cells = [nbformat.v4.new_markdown_cell("### Exercise"), solution]
    page = tmp_path / "page.html"
    page.write_text("<html><body><h3>Exercise</h3></body></html>")
    assert PUBLIC.solution_leaks(notebook, page) == []
    page.write_text("<pre><span>the secret</span> <span>ranking: a 0.91, b 0.87</span></pre>")
    assert PUBLIC.solution_leaks(notebook, page) == ["solution ?: 'the secret ranking: a 0.91, b 0.87'"]


def test_instructor_edition_shows_every_solution_with_its_output():
    for path in CHAPTERS:
        original = nbformat.read(path, as_version=4)
        shown = EDITION.instructor_notebook(nbformat.read(path, as_version=4))
        solutions = [c for c in shown.cells if "solution" in c.metadata.get("tags", [])]
        assert solutions and all("remove-cell" not in c.metadata["tags"] for c in solutions)
        before = [c.get("outputs") for c in original.cells if "solution" in c.metadata.get("tags", [])]
        assert [c.get("outputs") for c in solutions] == before, "outputs kept"
        headings = [c.source for c in shown.cells if c.source.startswith("#### Solution ")]
        assert len(headings) == len(chapter_exercises(int(path.name[:2])))


CONTEXT = """\
import copy
import re

import torch
from peft import get_peft_model

settings = study.profile.lora
targets = [name for name, _ in study.backbone.named_modules() if re.fullmatch(settings.target_modules, name)]"""
"""What chapter 0's checked solutions and checks read, made without running the chapter's data cells."""


def small_submission(with_solutions: bool) -> nbformat.NotebookNode:
    """A short chapter-0 submission: the student copy's setup cell, the context its checks need (:data:`CONTEXT`),
    and each checked exercise with its answer cell (the solution, or the untouched stub) and its check cell. It runs
    in seconds instead of the whole chapter, and grades like the whole chapter would."""
    chapter = CHAPTERS[0]
    student = STUDENT.student_version(nbformat.read(chapter, as_version=4), chapter.name, with_solutions)
    checked = {e.id for e in chapter_exercises(0) if e.checked}
    setup = next(c for c in student.cells if "setup" in c.metadata.get("tags", []))
    answers = [c for c in student.cells if c.cell_type == "code" and c.metadata.get("exercise") in checked]
    student.cells = [setup, nbformat.v4.new_code_cell(CONTEXT), *answers]
    return student


@pytest.mark.subprocess
def test_grading_a_folder_gives_each_submission_its_score(tmp_path, monkeypatch):
    """One student answered everything, one handed in the notebook untouched: full and zero checked points."""
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    nbformat.write(small_submission(with_solutions=True), submissions / "ada.ipynb")
    nbformat.write(small_submission(with_solutions=False), submissions / "bob.ipynb")
    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("LORA_BOOK_PROFILE", "tiny")
    out = tmp_path / "scores.csv"
    rows = grade_folder(submissions, out, timeout=600, progress=lambda _: None)
    assert [r["submission"] for r in rows] == ["ada.ipynb", "bob.ipynb"]
    with out.open() as file:
        table = list(csv.DictReader(file))
    checked = [e for e in chapter_exercises(0) if e.checked]
    full = sum(e.points for e in checked)
    assert table[0]["checked_points"] == str(full) and table[0]["checked_max"] == str(full) and full > 0
    assert table[1]["checked_points"] == "0"
    assert all(table[0][f"ex_{e.id}"] == str(e.points) and table[1][f"ex_{e.id}"] == "0" for e in checked)
    assert all(row[f"ex_{e.id}"] == "" for row in table for e in chapter_exercises(0) if not e.checked)
    assert table[0]["cells_with_errors"] == table[1]["cells_with_errors"] == "0"


def test_grading_refuses_a_folder_without_notebooks_and_a_notebook_of_no_chapter(tmp_path):
    with pytest.raises(ValueError, match="holds no .ipynb files"):
        grade_folder(tmp_path, tmp_path / "scores.csv")
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "homework.ipynb")
    with pytest.raises(ValueError, match="cannot tell which chapter"):
        grade_folder(tmp_path, tmp_path / "scores.csv", run=lambda p: ({}, 0))
    assert not (tmp_path / "scores.csv").exists(), "nothing written when a submission cannot be graded"
