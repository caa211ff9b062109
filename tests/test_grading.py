"""The grader as an instructor meets it, with honest, careless and hostile submissions: points computed outside the
submission's control, a row for every submission whatever it does, one scratch folder each, and the scores written
even when grading is interrupted. Short generated chapter-0 submissions (the setup cell, the context the checks read,
the checked exercises) run in seconds where the whole chapter would take minutes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from lora_merge_utils.course.exercises import chapter_exercises
from lora_merge_utils.course.grading import Execution, grade_folder
from lora_merge_utils.course.sandbox import bwrap_problem

from .helpers import ROOT, load_script

CHAPTER = sorted((ROOT / "notebooks").glob("00_*.ipynb"))[0]
CHECKED = [e for e in chapter_exercises(0) if e.checked]
FULL = sum(e.points for e in CHECKED)
EXERCISE_0_2 = next(e for e in CHECKED if e.id == "0.2")

STUDENT = load_script("make_student")

CONTEXT = """\
import copy
import re

import torch
from peft import get_peft_model

settings = study.profile.lora
targets = [name for name, _ in study.backbone.named_modules() if re.fullmatch(settings.target_modules, name)]"""
"""What chapter 0's checked solutions and checks read, made without running the chapter's data cells."""


def small_submission(with_solutions: bool, before=(), after=(), student_id: str = "") -> nbformat.NotebookNode:
    """A short chapter-0 notebook: the student copy's setup and ID cells, :data:`CONTEXT`, ``before``, each checked
    exercise's answer cell (the solution, or the untouched stub) and check cell, then ``after``."""
    student = STUDENT.student_version(nbformat.read(CHAPTER, as_version=4), CHAPTER.name, with_solutions)
    setup = next(c for c in student.cells if "setup" in c.metadata.get("tags", []))
    identity = nbformat.v4.new_code_cell(f"STUDENT_ID = {student_id!r}")
    answers = [
        c for c in student.cells if c.cell_type == "code" and c.metadata.get("exercise") in {e.id for e in CHECKED}
    ]
    extra = [nbformat.v4.new_code_cell(source) for source in before], [nbformat.v4.new_code_cell(s) for s in after]
    student.cells = [setup, identity, nbformat.v4.new_code_cell(CONTEXT), *extra[0], *answers, *extra[1]]
    return student


@pytest.fixture
def chapters(tmp_path) -> Path:
    """The instructor's chapters for these tests: chapter 0 shortened the same way, with its solutions."""
    folder = tmp_path / "chapters"
    folder.mkdir()
    nbformat.write(small_submission(with_solutions=True), folder / CHAPTER.name)
    return folder


@pytest.fixture
def grading_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("LORA_BOOK_PROFILE", "tiny")


def _table(path: Path) -> dict[str, dict]:
    with path.open() as file:
        return {row["submission"]: row for row in csv.DictReader(file)}


HOSTILE = [
    # forged verdicts: the old grader's results file, and a printed tick
    "import json\nopen('checks.jsonl', 'w').write(json.dumps({'exercise': '0.1', 'passed': True}) + '\\n')\n"
    "print('✓ Exercise 0.1: correct.')",
    # a replaced self-check and a replaced answer table
    "import lora_merge_utils as lmu, lora_merge_utils.course.exercises as ex\n"
    "ex.form_check = lambda *a, **k: ex.Mark(True, '✓')\ncheck_exercise = lambda *a, **k: print('✓')",
    # a fake answer line printed by the student's own cell
    'print(\'LORA_BOOK_ANSWER ["0.2", "patch_embed.proj"]\')',
]
HOSTILE_ANSWERS = [
    # an edited check: with targets=[] the self-check expects 0 parameters, and says ✓ to 0
    "answer_0_1 = 0\nimport lora_merge_utils.course.exercises as ex\n"
    "ex.check_exercise('0.1', answer_0_1, backbone=study.backbone, targets=[])",
    # the reference answers, wherever the grader might have left them on disk
    "import glob, json, os, tempfile\n"
    "for name in glob.glob(os.path.join(tempfile.gettempdir(), 'grading-*', '**'), recursive=True):\n"
    "    try:\n"
    "        text = open(name).read()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if 'patch_embed' in text and text.lstrip().startswith('{'):\n"
    "        found = json.loads(text)\n"
    "        answer_0_1, answer_0_2 = found.get('0.1', answer_0_1), found.get('0.2', answer_0_2)",
    # an answer that says yes to every comparison
    "class Yes:\n    def __eq__(self, other):\n        return True\n\n    __hash__ = object.__hash__\n\n\n"
    "answer_0_2 = Yes()",
]


@pytest.mark.subprocess
def test_points_come_from_the_grader_not_from_the_submission(tmp_path, chapters, grading_env):
    """Right answers score in full, an untouched notebook scores nothing, and a submission that forges verdicts,
    replaces the checks, edits a check's arguments or answers with an always-equal object scores nothing either."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(small_submission(True, student_id="s1234"), folder / "ada.ipynb")
    nbformat.write(small_submission(False), folder / "bob.ipynb")
    nbformat.write(small_submission(False, before=HOSTILE, after=HOSTILE_ANSWERS), folder / "eve.ipynb")
    out = tmp_path / "scores.csv"
    rows = grade_folder(folder, out, jobs=2, chapters_dir=chapters, progress=lambda _: None)
    table = _table(out)
    assert [r["submission"] for r in rows] == ["ada.ipynb", "bob.ipynb", "eve.ipynb"]
    assert out.read_text().splitlines()[0].startswith("student,submission,chapter,ex_0.1")
    ada, bob, eve = table["ada.ipynb"], table["bob.ipynb"], table["eve.ipynb"]
    assert (ada["student"], bob["student"], eve["student"]) == ("s1234", "bob", "eve"), "ID from the notebook or name"
    assert ada["checked_points"] == str(FULL) and ada["checked_max"] == str(FULL) and ada["status"] == "graded"
    assert bob["checked_points"] == "0" and eve["checked_points"] == "0", (bob, eve)
    assert all(row[f"ex_{e.id}"] == "" for row in table.values() for e in chapter_exercises(0) if not e.checked)
    assert ada["total_max"] == str(sum(e.points for e in chapter_exercises(0)))
    assert ada["cells_with_errors"] == bob["cells_with_errors"] == "0"
    results = tmp_path / "scores"
    assert (results / "s1234.ada.ipynb").is_file() and (results / "s1234.ada.html").is_file()
    feedback = (results / "eve.eve-feedback.md").read_text()
    assert "0.1: 0/2 points" in feedback and "0.2: 0/1 points" in feedback and "holds a Yes" in feedback
    assert "graded by hand" in feedback


@pytest.mark.subprocess
def test_a_bad_submission_gets_a_row_and_every_other_one_is_still_graded(tmp_path, chapters, grading_env):
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(small_submission(True), folder / "a_good.ipynb")
    nbformat.write(small_submission(True, after=["1 / 0"]), folder / "b_raises.ipynb")
    nbformat.write(small_submission(True, after=["import time\ntime.sleep(600)"]), folder / "c_hangs.ipynb")
    nbformat.write(small_submission(True, after=["import os\nos._exit(1)"]), folder / "d_dies.ipynb")
    deleter = (
        "import pathlib\n"
        "for p in [*pathlib.Path('.').glob('*.ipynb'), *pathlib.Path('..').glob('**/*.ipynb')]:\n    p.unlink()"
    )
    nbformat.write(small_submission(True, before=[deleter]), folder / "e_deletes.ipynb")
    (folder / "f_garbage.ipynb").write_text("this is not a notebook")
    plain = nbformat.v4.new_notebook()
    plain.cells = [nbformat.v4.new_code_cell("print(1)")]
    nbformat.write(plain, folder / "homework.ipynb")
    before = sorted(p.name for p in folder.iterdir())
    out = tmp_path / "scores.csv"
    grade_folder(
        folder, out, jobs=2, cell_timeout=30, notebook_timeout=60, chapters_dir=chapters, progress=lambda _: None
    )
    table = _table(out)
    assert sorted(p.name for p in folder.iterdir()) == before, "no submission reached another's files"
    assert table["a_good.ipynb"]["checked_points"] == str(FULL)
    assert (
        table["b_raises.ipynb"]["checked_points"] == str(FULL) and table["b_raises.ipynb"]["cells_with_errors"] == "1"
    )
    hangs, dies = table["c_hangs.ipynb"], table["d_dies.ipynb"]
    assert "ran past 30 s" in hangs["status"], hangs
    assert hangs["checked_points"] == str(FULL), "answers given before the hang count"
    assert "kernel died" in dies["status"] and dies["checked_points"] == str(FULL), dies
    assert table["e_deletes.ipynb"]["checked_points"] == str(FULL)
    assert table["f_garbage.ipynb"]["status"].startswith("not a notebook") and table["f_garbage.ipynb"]["chapter"] == ""
    assert table["homework.ipynb"]["status"].startswith("cannot tell which chapter")


def test_the_output_is_checked_before_any_notebook_runs(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), folder / "00_x.ipynb")

    def never(*args):
        raise AssertionError("a notebook ran")

    (tmp_path / "taken").mkdir()
    (tmp_path / "file").write_text("")
    for out, message in [
        (tmp_path / "taken", "is a folder"),
        (tmp_path / "scores.txt", "should be a .csv file"),
        (tmp_path / "file" / "scores.csv", "is not a writable folder"),
    ]:
        with pytest.raises(ValueError, match=message):
            grade_folder(folder, out, run=never, chapters_dir=tmp_path, progress=lambda _: None)
    with pytest.raises(ValueError, match="holds no .ipynb files"):
        grade_folder(tmp_path / "taken", tmp_path / "scores.csv", run=never)
    with pytest.raises(ValueError, match="--jobs 0"):
        grade_folder(folder, tmp_path / "scores.csv", jobs=0, run=never)


def test_rows_can_be_graded_without_kernels(tmp_path):
    """The bookkeeping alone, with a stand-in for execution: what the grader does with what a run gave."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(small_submission(False), folder / "ada.ipynb")
    reference = {"0.1": 100, "0.2": "patch_embed.proj"}

    def run(notebook, scratch, cell_timeout, notebook_timeout):
        assert scratch.parent.exists() and cell_timeout >= 600
        return Execution(answers={"0.1": 100.0, "0.2": ["patch_embed.proj"], "student": "  "})

    import lora_merge_utils.course.grading as grading

    original = grading.reference_answers
    grading.reference_answers = lambda *a, **k: reference
    try:
        rows = grade_folder(folder, tmp_path / "scores.csv", run=run, chapters_dir=tmp_path, progress=lambda _: None)
    finally:
        grading.reference_answers = original
    assert rows[0]["student"] == "ada" and rows[0]["ex_0.1"] == 2 and rows[0]["ex_0.2"] == 0
    assert "right value, wrong type" in (tmp_path / "scores" / "ada.ada-feedback.md").read_text()


@pytest.mark.subprocess
def test_sigterm_writes_the_rows_graded_so_far(tmp_path, chapters):
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(small_submission(True), folder / "a_quick.ipynb")
    nbformat.write(small_submission(True, after=["import time\ntime.sleep(600)"]), folder / "b_slow.ipynb")
    out = tmp_path / "scores.csv"
    env = dict(os.environ, LORA_BOOK_ARTIFACTS=str(tmp_path / "artifacts"), LORA_BOOK_PROFILE="tiny")
    grader = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lora_merge_utils",
            "grade",
            str(folder),
            "--out",
            str(out),
            "--chapters",
            str(chapters),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (tmp_path / "scores" / "a_quick.a_quick-feedback.md").exists():
        assert grader.poll() is None and time.monotonic() < deadline, grader.communicate()
        time.sleep(0.5)
    time.sleep(3)  # b_slow is running its endless cell by now
    grader.send_signal(signal.SIGTERM)
    stdout, stderr = grader.communicate(timeout=120)
    assert grader.returncode == 143, stderr  # told "terminated", as every other command is on SIGTERM
    assert stderr.count("\n") <= 1 and "Traceback" not in stderr, stderr
    assert (
        stderr.strip()
        == "terminated: grade stopped; the rows graded so far are written and the others marked not graded"
    )
    table = _table(out)
    assert table["a_quick.ipynb"]["checked_points"] == str(FULL)
    assert table["b_slow.ipynb"]["status"] == "not graded: grading was interrupted"


@pytest.mark.subprocess
def test_hostile_and_duplicate_ids_odd_metadata_and_odd_answers_each_end_as_their_own_row(tmp_path, monkeypatch):
    """Any ID becomes a safe file name of its own (none overwrites another's files or escapes the scores folder),
    the original is in the CSV escaped against formula injection, a shared ID is reported, and metadata or answers
    the grader cannot use end as that row's status while every other submission is graded."""
    import lora_merge_utils.course.grading as grading

    folder = tmp_path / "submissions"
    folder.mkdir()
    given = {
        "a": "jane.doe",
        "b": "jane.smith",
        "c": "../../escaped",
        "d": "=1+2*3",
        "e": "jane.doe",
        "f": "ok",
        "g": "ok too",
        "h": "huge",
    }
    for stem, student in given.items():
        notebook = small_submission(False)
        notebook.metadata["test_student"] = student
        if stem == "f":
            notebook.metadata["lora_book"]["chapter"] = 99
        if stem == "g":
            notebook.metadata["lora_book"]["chapter"] = []
        nbformat.write(notebook, folder / f"{stem}.ipynb")

    def run(notebook, scratch, cell_timeout, notebook_timeout):
        student = notebook.metadata["test_student"]
        answer = 10**400 if student == "huge" else 100
        return Execution(answers={"0.1": answer, "0.2": "patch_embed.proj", "student": student})

    monkeypatch.setattr(grading, "reference_answers", lambda *a, **k: {"0.1": 100, "0.2": "patch_embed.proj"})
    out = tmp_path / "scores.csv"
    rows = grade_folder(folder, out, run=run, chapters_dir=tmp_path, progress=lambda _: None)
    by_file = {row["submission"]: row for row in rows}
    assert len(rows) == len(given)
    assert "chapter 99" in by_file["f.ipynb"]["status"] and "not a number" in by_file["g.ipynb"]["status"]
    assert by_file["h.ipynb"]["ex_0.1"] == 0 and by_file["h.ipynb"]["ex_0.2"] == EXERCISE_0_2.points
    assert "could not be compared" in next((tmp_path / "scores").glob("huge.h*-feedback.md")).read_text()
    assert "the same student ID is given by e.ipynb" in by_file["a.ipynb"]["status"]
    assert "the same student ID is given by a.ipynb" in by_file["e.ipynb"]["status"]
    feedback = sorted(p.name for p in (tmp_path / "scores").iterdir())
    assert len(feedback) == len(given), feedback  # one file each: none overwrote another
    assert not (tmp_path / "escaped").exists() and not any(tmp_path.glob("*escaped*"))
    table = _table(out)
    assert table["d.ipynb"]["student"] == "'=1+2*3" and table["c.ipynb"]["student"] == "../../escaped"
    assert table["b.ipynb"]["checked_points"] == str(FULL) and table["b.ipynb"]["answer_0.2"] == '"patch_embed.proj"'
    assert table["h.ipynb"]["answer_0.1"].startswith("1000") and table["h.ipynb"]["answer_0.1"].endswith("…")


def test_an_interrupted_grading_never_replaces_a_complete_earlier_one(tmp_path):
    from lora_merge_utils.course.grading import write_scores

    out = tmp_path / "scores.csv"
    done = [{"student": "ada", "submission": "ada.ipynb", "chapter": 0, "status": "graded"}]
    assert write_scores(done, out) == out
    before = out.read_text()
    partial = [dict(done[0], status="not graded: grading was interrupted")]
    written = write_scores(partial, out, complete=False)
    assert written == tmp_path / "scores-interrupted.csv" and out.read_text() == before
    assert "interrupted" in written.read_text()
    out.write_text(out.read_text().replace(",graded,", ",not graded: grading was interrupted,"))
    assert write_scores(partial, out, complete=False) == out, "an incomplete earlier CSV is replaced"


def test_a_reference_run_that_fails_leaves_a_complete_earlier_csv_as_it_was(tmp_path, monkeypatch):
    """A broken instructor's chapter (any error, not only a missing answer) marks its submissions not graded, says
    why, and writes beside a complete earlier CSV rather than over it."""
    import lora_merge_utils.course.grading as grading

    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(small_submission(False), folder / "ada.ipynb")
    out = tmp_path / "scores.csv"
    grading.write_scores([{"student": "ada", "submission": "ada.ipynb", "chapter": 0, "status": "graded"}], out)
    before = out.read_text()

    def broken(*args, **kwargs):
        raise OSError("the chapters folder went away")

    monkeypatch.setattr(grading, "reference_answers", broken)
    rows = grade_folder(folder, out, run=None, chapters_dir=tmp_path, progress=lambda _: None)
    assert rows[0]["status"].startswith("not graded: no reference answers (OSError")
    assert out.read_text() == before and (tmp_path / "scores-interrupted.csv").is_file()


# --- the sandbox: nothing of the instructor's within a submission's reach -------------------------------------------

SANDBOX_PROBLEM = bwrap_problem()
needs_sandbox = pytest.mark.skipif(
    SANDBOX_PROBLEM is not None and not os.environ.get("CI"),  # CI installs bubblewrap: there, a missing one fails
    reason=f"no bubblewrap sandbox here: {SANDBOX_PROBLEM}",
)

SEARCH_FOR_SOLUTIONS = """\
import json, os, pathlib, time
import lora_merge_utils

package = pathlib.Path(lora_merge_utils.__file__).resolve()
places = [pathlib.Path({chapters!r}), package.parents[1] / "notebooks", package.parents[2] / "notebooks"]
found = [path for place in places if place.is_dir() for path in sorted(place.glob("*.ipynb"))]
started = time.monotonic()
for folder, inner, files in os.walk("/") if not found else ():  # every file system the submission can see
    if folder in ("/proc", "/sys", "/dev", os.getcwd()) or time.monotonic() - started > 30:
        inner[:] = []
        continue
    found += [pathlib.Path(folder, name) for name in files if name.endswith(".ipynb")]
for path in found:
    try:
        cells = json.loads(path.read_text())["cells"]
    except Exception:
        continue
    for cell in cells:
        meta = cell.get("metadata", {{}})
        if meta.get("exercise") in CHECKED and cell["cell_type"] == "code" and "check" not in meta.get("tags", []):
            exec("".join(cell["source"]))  # an exercise's answer cell: the instructor's holds the solution
print("notebooks searched:", len(found))"""
"""A submission that looks for the instructor's solutions: where the chapters are (the instructor's path, which a
student may know), beside the package it imports, then on every file system it can see; it runs what it finds."""

WRECK_THE_BATCH = """\
import os, pathlib, subprocess, sys

targets = {{pathlib.Path({folder!r}), pathlib.Path({scores!r})}}
for pid in filter(str.isdigit, os.listdir("/proc")):  # the grader's arguments name the folders it grades into
    try:
        arguments = pathlib.Path(f"/proc/{{pid}}/cmdline").read_bytes().decode(errors="replace").split("\\0")
    except OSError:
        continue
    targets |= {{pathlib.Path(a) for a in arguments if a.startswith("/") and pathlib.Path(a).is_dir()}}
for target in targets:
    for path in (target.glob("**/*") if target.is_dir() else []):
        if path.suffix in (".ipynb", ".csv", ".md", ".html") and os.access(path.parent, os.W_OK):
            path.unlink()
later = "import time; time.sleep(15); open({csv!r}, 'a').write('mallory,forged,0,2,1\\\\n')"
subprocess.Popen([sys.executable, "-c", later, {marker!r}], start_new_session=True)  # outlives the kernel?"""
"""A submission that deletes the other submissions and the grader's outputs it can find (through ``/proc``, and at
the paths a student may know), and leaves a ``setsid`` child behind that would forge the CSV after grading."""


def _alive_with(marker: str) -> list[int]:
    """Processes on this machine whose command line holds ``marker``."""
    alive = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                alive.append(int(entry.name))
        except OSError:
            continue
    return alive


@needs_sandbox
@pytest.mark.subprocess
def test_in_the_sandbox_no_forgery_search_or_wrecker_scores_or_reaches_another_row(tmp_path, chapters, grading_env):
    """The two forgeries (the reference answers on disk, the chapters beside the package), a search of every file
    system the submission sees, and a submission that deletes what it finds through /proc and leaves a setsid child
    behind: none scores more than an untouched notebook, and every other row is what it would be alone."""
    folder, out = tmp_path / "submissions", tmp_path / "scores.csv"
    folder.mkdir()
    marker = f"wrecker-{os.getpid()}-{time.monotonic_ns()}"
    checked = f"CHECKED = {[e.id for e in CHECKED]!r}"
    search = SEARCH_FOR_SOLUTIONS.format(chapters=str(chapters))
    wreck = WRECK_THE_BATCH.format(folder=str(folder), scores=str(out.with_suffix("")), csv=str(out), marker=marker)
    nbformat.write(small_submission(True, student_id="ada"), folder / "a_solved.ipynb")
    nbformat.write(small_submission(False), folder / "b_untouched.ipynb")
    nbformat.write(small_submission(False, after=[checked, search, *HOSTILE_ANSWERS[1:2]]), folder / "c_eve.ipynb")
    nbformat.write(small_submission(False, before=[wreck]), folder / "d_mallory.ipynb")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    progress: list[str] = []
    grade_folder(folder, out, jobs=2, chapters_dir=chapters, progress=progress.append, sandbox="bwrap")
    assert "bubblewrap sandbox" in progress[0]
    assert not _alive_with(marker), "a process the submission started outlived it"
    table = _table(out)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before, "a submission reached the others"
    assert table["a_solved.ipynb"]["checked_points"] == str(FULL) and table["a_solved.ipynb"]["status"] == "graded"
    for name in ("b_untouched.ipynb", "c_eve.ipynb", "d_mallory.ipynb"):
        assert table[name]["checked_points"] == "0", (name, table[name])
    assert table["c_eve.ipynb"]["cells_with_errors"] == "0", "the search ran to its end and found nothing to run"
    kept = sorted(p.name for p in (tmp_path / "scores").iterdir())
    assert len(kept) == 4 * 3, kept  # each submission's executed .ipynb, .html and feedback, none deleted
    assert "forged" not in out.read_text()


@needs_sandbox
@pytest.mark.subprocess
def test_links_a_submission_plants_in_its_folder_are_never_followed_by_the_grader(tmp_path, chapters, grading_env):
    """The grader reads what a run leaves in its scratch folder with the instructor's permissions: a link planted
    there to the instructor's chapter must not bring its solutions into the feedback, and a link to a device that
    never ends must not hang the grading."""
    folder, out = tmp_path / "submissions", tmp_path / "scores.csv"
    folder.mkdir()
    chapter = next(chapters.glob("*.ipynb"))
    plant = (
        "import os\n"
        f"os.symlink({str(chapter)!r}, 'executed.ipynb')\n"
        "os.remove('answers')\n"
        "os.symlink('/dev/zero', 'answers')"
    )
    nbformat.write(small_submission(False, after=[plant]), folder / "mallory.ipynb")
    nbformat.write(small_submission(True), folder / "solved.ipynb")
    grade_folder(folder, out, jobs=2, chapters_dir=chapters, progress=lambda _: None, sandbox="bwrap")
    table = _table(out)
    assert table["mallory.ipynb"]["checked_points"] == "0" and table["solved.ipynb"]["checked_points"] == str(FULL)
    assert "Solution 0.2" in chapter.read_text(), "the marker this test looks for"
    kept = list((tmp_path / "scores").glob("mallory*"))
    assert kept, "mallory's feedback is written"
    for path in kept:
        assert "Solution 0.2" not in path.read_text(errors="replace"), f"{path.name} holds the instructor's solution"


@pytest.mark.subprocess
def test_without_a_sandbox_the_same_search_finds_the_solutions(tmp_path, chapters, grading_env):
    """The control for the test above: unsandboxed (``--sandbox none``), the search finds the instructor's chapters
    and scores in full, so the sandbox, not a search that cannot work, is what stops it."""
    folder, out = tmp_path / "submissions", tmp_path / "scores.csv"
    folder.mkdir()
    checked = f"CHECKED = {[e.id for e in CHECKED]!r}"
    search = SEARCH_FOR_SOLUTIONS.format(chapters=str(chapters))
    nbformat.write(small_submission(False, after=[checked, search]), folder / "eve.ipynb")
    progress: list[str] = []
    grade_folder(folder, out, chapters_dir=chapters, progress=progress.append, sandbox="none")
    assert "unsandboxed" in progress[0]
    assert _table(out)["eve.ipynb"]["checked_points"] == str(FULL)


def test_the_sandbox_refuses_to_show_a_hidden_folder_and_names_the_fix(tmp_path, monkeypatch):
    """Chapters inside the Python installation the sandbox must show would be readable: refused, before any run."""
    import lora_merge_utils.course.sandbox as sandbox

    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: None)
    monkeypatch.setattr(sandbox, "python_folders", lambda: (tmp_path,))
    with pytest.raises(ValueError, match=r"lies inside .* --sandbox none"):
        sandbox.prepare("bwrap", tmp_path / "work", hidden=[tmp_path / "chapters"])
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: "bubblewrap is not installed (apt install bubblewrap)")
    with pytest.raises(ValueError, match="apt install bubblewrap.*--sandbox none"):
        sandbox.prepare("bwrap", tmp_path / "work", hidden=[])
    assert sandbox.prepare("auto", tmp_path / "work").mode == "none"
    staged = tmp_path / "work" / "lib" / "lora_merge_utils"
    assert (staged / "__init__.py").is_file() and not list(staged.rglob("*.ipynb"))


def test_the_sandbox_mounts_its_empty_tmp_before_a_python_that_lives_under_tmp(tmp_path):
    """bubblewrap lays mounts in order, a later one over an earlier one: an empty /tmp mounted after the Python
    installation would hide a virtual environment under /tmp (a fresh clone's), and no Python would start."""
    from lora_merge_utils.course.sandbox import _base_arguments

    venv = tmp_path / ".venv"
    arguments = _base_arguments(tmp_path / "lib", (venv,))
    shown = next(i for i, a in enumerate(arguments) if a == str(venv) and arguments[i - 2] == "--ro-bind")
    assert arguments.index("--tmpfs") < shown, arguments


def test_the_grader_names_the_artifacts_variable_the_library_reads():
    from lora_merge_utils.artifacts import ARTIFACTS_ENV
    from lora_merge_utils.course import grading

    assert grading._ARTIFACTS_ENV == ARTIFACTS_ENV
