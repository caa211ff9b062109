"""The three editions from one source: the public book shows no solution, the committed student notebooks are in sync
with the chapters and usable as handed out, the instructor edition shows every solution, and grading works."""

import re

import nbformat
import pandas as pd
import pytest

from lora_merge_utils.course import exercises
from lora_merge_utils.course.exercises import EXERCISES, chapter_exercises, check_exercise, compare
from lora_merge_utils.course.grading import chapter_of

from .helpers import CHAPTERS, ROOT, load_script

pytestmark = pytest.mark.repository  # reads only the repository's own files

STUDENT = load_script("make_student")
EDITION = load_script("build_edition")
PUBLIC = load_script("check_public_build")


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


def test_self_checks_say_only_whether_the_form_is_right_and_return_nothing(capsys):
    """Capturing the self-check's output tells no more than the form: every answer of the right form gets the same
    line, right or wrong (a loop over candidates found exercise 0.2's answer in 144 tries when it said ✓)."""
    control = pd.DataFrame({"task": ["a", "b", "c"], "gain": [0.3, -0.1, 0.2]})
    results = [check_exercise("1.1", answer, control=control) for answer in ("b", "a", "zz", None, ["b"], 7)]
    assert results == [None] * 6, "a self-check returns nothing a loop could test"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == printed[1] == printed[2] and printed[0].startswith("✓ Exercise 1.1: answer_1_1 holds")
    assert "decided when your notebook is graded" in printed[0]
    assert printed[3].startswith("✗ Exercise 1.1: not answered yet")
    assert printed[4] == "✗ Exercise 1.1: store the str itself, not a list."
    assert printed[5].startswith("✗ Exercise 1.1: store the name")
    counts = {"0": 3, "1": 2, "2": 5}
    check_exercise("4.2", counts, triples=pd.DataFrame())  # keys from the run: none here, so the check says so
    assert "could not read its chapter's objects" in capsys.readouterr().out
    from lora_merge_utils.course.exercises import form_check

    assert (
        form_check("4.2", counts, {"0", "1", "2"}).message
        == form_check("4.2", {"0": 9, "1": 9, "2": 9}, {"0", "1", "2"}).message
    )
    assert "one entry for each of: 0, 1, 2" in form_check("4.2", {"0": 3}, {"0", "1", "2"}).message
    assert not form_check("0.1", 73728.5).passed and form_check("0.1", 73728.0).passed
    with pytest.raises(ValueError, match="graded by hand"):
        check_exercise("1.4", "because")
    with pytest.raises(ValueError, match="unknown exercise"):
        check_exercise("9.9", 1)


def test_any_value_equal_to_the_answer_counts():
    import numpy as np
    import torch

    for answer in (73728, np.int64(73728), 73728.0, torch.tensor(73728), np.array(73728)):
        assert compare("0.1", answer, 73728).passed, type(answer)
    assert not compare("0.1", 73728.5, 73728).passed
    assert compare("3.2", np.float32(0.4321), 0.43212).passed and not compare("3.2", 0.44, 0.43212).passed
    assert compare("4.2", {0: np.int64(3), 1: 2.0}, {"0": 3, "1": 2}).passed, "seeds as ints or strings"
    assert compare("6.1", ("a+b", "c+d"), ["a+b", "c+d"]).passed and not compare("6.1", "a+b", ["a+b", "c+d"]).passed
    assert compare(
        "2.1",
        {"r": np.int64(8), "lora_alpha": 16.0, "target_modules": "x"},
        {"r": 8, "lora_alpha": 16, "target_modules": "x"},
    ).passed

    class Yes:  # an answer whose == says yes to everything
        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

    verdict = compare("1.1", Yes(), "mnist")
    assert not verdict.passed and "holds a Yes" in verdict.message


def test_every_self_check_passes_only_the_objects_its_form_check_reads():
    """A check cell passes the objects a mapping's keys are read from, and nothing else: the package a submission
    imports cannot compute an answer from a run (the grader takes answers from the instructor's own run)."""
    import inspect

    for path in CHAPTERS:
        for cell in nbformat.read(path, as_version=4).cells:
            if "check" in cell.metadata.get("tags", []):
                exercise = cell.metadata["exercise"]
                names = [part.split("=")[0].strip() for part in cell.source.split(",")[2:]]
                reader = exercises._KEYS.get(exercise)
                needed = [] if reader is None else list(inspect.signature(reader).parameters)[:-1]
                assert names == needed, f"{path.name}: exercise {exercise} passes {names}, its check reads {needed}"
    assert not any(hasattr(exercises, name) for name in ("_FROM_RUN", "_bare_proj_extra", "_least_gain"))


def test_public_build_check_finds_a_planted_solution_in_every_kind_of_served_file(tmp_path):
    import base64
    import json

    notebook = nbformat.v4.new_notebook()
    image = base64.b64encode(b"\x89PNG a solution's figure").decode()
    solution = nbformat.v4.new_code_cell("answer_9 = sorted(something_long_enough)")
    solution.metadata["tags"] = ["solution", "remove-cell"]
    solution.metadata["exercise"] = "9.9"
    solution.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="the secret ranking: a 0.91, b 0.87\n"),
        nbformat.v4.new_output("display_data", data={"image/png": image}),
    ]
    notebook.cells = [nbformat.v4.new_markdown_cell("### Exercise"), solution]
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "page.html").write_text("<html><body><h3>Exercise</h3></body></html>")
    assert PUBLIC.solution_leaks(notebook, PUBLIC.served_files(clean)) == []
    planted = tmp_path / "site"
    (planted / "_sources").mkdir(parents=True)
    (planted / "page.html").write_text("<pre><span>the secret</span> <span>ranking: a 0.91, b 0.87</span></pre>")
    (planted / "_sources" / "chapter.ipynb").write_text(
        json.dumps({"cells": [{"source": ["answer_9 = sorted(", "something_long_enough)"]}]})
    )
    (planted / "searchindex.js").write_text('Search.setIndex({"text": "answer_9 = sorted(something_long_enough)"})')
    (planted / "notes.txt").write_text("the secret ranking: a 0.91, b 0.87")
    (planted / "figure.png").write_bytes(b"\x89PNG a solution's figure")
    found = PUBLIC.solution_leaks(notebook, PUBLIC.served_files(planted))
    for name in ("page.html", "chapter.ipynb", "searchindex.js", "notes.txt", "figure.png"):
        assert any(leak.startswith(f"{name}: solution 9.9") for leak in found), (name, found)


def test_a_word_of_the_search_index_is_not_a_solution_line(tmp_path):
    """Sphinx's search index maps words to page numbers: ``{"lora_alpha": 16}`` once matched the solution line
    ``"lora_alpha": 16,`` when the index was read as raw text. It is read as the strings it hands out."""
    notebook = nbformat.v4.new_notebook()
    solution = nbformat.v4.new_code_cell('config = {\n    "lora_alpha": 16,\n}')
    solution.metadata["tags"] = ["solution", "remove-cell"]
    solution.metadata["exercise"] = "2.1"
    notebook.cells = [solution]
    (tmp_path / "searchindex.js").write_text('Search.setIndex({"terms": {"lora_alpha": 16, "lora_b": [5, 14]}})')
    assert PUBLIC.solution_leaks(notebook, [tmp_path / "searchindex.js"]) == []
    (tmp_path / "searchindex.js").write_text('Search.setIndex({"titles": ["\\"lora_alpha\\": 16,"]})')
    assert PUBLIC.solution_leaks(notebook, [tmp_path / "searchindex.js"]), "a title holding the line is found"


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


def test_the_instructor_edition_s_staged_sources_hold_every_solution(tmp_path):
    """What `make instructor` builds: every chapter with its solutions, where the leak check finds each chapter's
    (so its silence on the public book means something)."""
    EDITION.stage("instructor", tmp_path)
    staged = [tmp_path / "notebooks" / path.name for path in CHAPTERS]
    for path, copy in zip(CHAPTERS, staged):
        assert PUBLIC.solution_leaks(nbformat.read(path, as_version=4), [copy]), f"{path.name}: no solution found"
        shown = nbformat.read(copy, as_version=4)
        assert all(
            "remove-cell" not in c.metadata.get("tags", [])
            for c in shown.cells
            if "solution" in c.metadata.get("tags", [])
        )
    assert "instructor edition" in (tmp_path / "_config.yml").read_text(encoding="utf-8")


def test_the_student_edition_s_staged_sources_are_the_student_notebooks(tmp_path):
    """What `make student` builds: the committed student copies under notebooks/student/ (so its launch buttons
    open them), every prose link pointing at them, no conclusions page (it pastes the chapters' results), and no
    solution anywhere."""
    EDITION.stage("student", tmp_path)
    toc = (tmp_path / "_toc.yml").read_text(encoding="utf-8")
    assert "notebooks/student/" in toc and "book/conclusions" not in toc
    assert all(f"notebooks/student/{path.stem}" in toc for path in CHAPTERS)
    staged = sorted((tmp_path / "notebooks" / "student").glob("*.ipynb"))
    assert [p.name for p in staged] == [p.name for p in CHAPTERS]
    pages = sorted((tmp_path / "book").glob("*.md"))
    assert not any("../notebooks/0" in page.read_text(encoding="utf-8") for page in pages)
    chapters = [nbformat.read(path, as_version=4) for path in CHAPTERS]
    prose = "\n".join(" ".join(line.split()) for page in pages for line in page.read_text().splitlines())
    others = PUBLIC.public_text(chapters) + "\n" + prose  # as the public build's check reads a whole site
    for path, chapter in zip(CHAPTERS, chapters):
        assert not PUBLIC.solution_leaks(chapter, staged + pages, others), path.name


def test_the_instructors_page_shows_the_exercise_table_as_it_is():
    """Points, levels, kinds and rubric lines on the instructors' page come from lora_merge_utils.course.exercises; a
    test fails when the page disagrees (run `python scripts/make_student.py`)."""
    page = (ROOT / "book" / "instructors.md").read_text(encoding="utf-8")
    assert STUDENT.with_guide_tables(page) == page, "book/instructors.md is out of date: run scripts/make_student.py"
    for exercise in EXERCISES.values():
        assert f"| {exercise.id} | {exercise.level} | {exercise.kind} | {exercise.points} |" in page
    for chapter in range(8):
        points = sum(e.points for e in chapter_exercises(chapter))
        assert re.search(rf"^\| {chapter} \| {points} \(", page, flags=re.M), f"chapter {chapter}: {points} points"
    assert "an estimate" in page.lower()


def _names(code: str) -> tuple[set[str], set[str]]:
    """(names a cell assigns, imports or defines; names it reads) of a code cell, shell and magic lines left out."""
    import ast

    tree = ast.parse("\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!"))))
    stored, loaded = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (stored if isinstance(node.ctx, ast.Store | ast.Del) else loaded).add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            stored.add(node.name)
        elif isinstance(node, ast.alias):
            stored.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            stored.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            stored.add(node.name)
    return stored, loaded


def test_the_public_edition_s_staged_chapters_read_without_scaffolding_and_run_without_their_solutions(tmp_path):
    """What the public site serves, page and download: no solution or check cell (a check calls an answer that is
    gone: the download stopped in a NameError), no cell that only guards results for CI, no nbval marker, no bare
    True under check(study, ...), no setup output, and an exercises' introduction that says where the self-check is.
    Every name a remaining cell reads is defined by a remaining cell (or is a builtin)."""
    import builtins

    EDITION.stage("public", tmp_path)
    for path in CHAPTERS:
        source = nbformat.read(path, as_version=4)
        assert any("NBVAL" in c.source for c in source.cells if c.cell_type == "code") or path.stem.startswith("01")
        staged = nbformat.read(tmp_path / "notebooks" / path.name, as_version=4)
        code = [c for c in staged.cells if c.cell_type == "code"]
        assert not [c for c in staged.cells if {"solution", "check"} & set(c.metadata.get("tags", []))], path.name
        assert not any("NBVAL" in c.source for c in code), path.name
        guards = [c for c in code if EDITION.GUARD.match(c.source)]
        assert all("remove-cell" in c.metadata.get("tags", []) for c in guards), f"{path.name}: a guard on the page"
        assert not any(o.get("data", {}).get("text/plain") in ("True", "False") for c in code for o in c.outputs), (
            f"{path.name}: a bare boolean output"
        )
        assert all(not c.outputs for c in code if "setup" in c.metadata.get("tags", [])), path.name
        prose = "\n".join(c.source for c in staged.cells if c.cell_type == "markdown")
        if EDITION.SELF_CHECK_SENTENCE in "\n".join(c.source for c in source.cells):
            assert EDITION.PUBLIC_SELF_CHECK in prose, path.name
        defined = set(dir(builtins)) | {"display", "get_ipython"}
        for cell in code:
            stored, loaded = _names(cell.source)
            defined |= stored
            assert loaded <= defined | _later_definitions(code), f"{path.name}: {sorted(loaded - defined)} undefined"


def _later_definitions(cells) -> set[str]:
    """Names defined anywhere in the chapter (a function body may read a name defined by a later cell)."""
    return set().union(*(_names(c.source)[0] for c in cells))
