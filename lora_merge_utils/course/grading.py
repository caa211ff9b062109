"""Grade a folder of submitted student notebooks: a row of points per student, computed outside their control.

    python -m lora_merge_utils grade submissions/ --out scores.csv [--jobs 2]

For each chapter found among the submissions, the instructor's own copy of the chapter (``notebooks/NN_*.ipynb``,
with its solutions) is executed once, and the answers its solutions store are the **reference**. Each submission
then runs top to bottom in a fresh kernel, in a scratch folder of its own that holds a copy of it and nothing else,
in a child process with a time limit per cell and per notebook; a cell that raises does not stop it. After the
answer cells of each checked exercise the grader adds a cell that prints the answer as plain JSON
(:func:`~lora_merge_utils.course.exercises.plain`), so answers given before a crash or a time-out still count. The
grader compares them with the reference **in its own process** (:func:`~lora_merge_utils.course.exercises.compare`):
nothing the submission's kernel says is a verdict, its check cells are ignored, and an answer object whose ``==`` always
says yes is read as an unsupported type.

Beside the CSV (one row per student: an ID, points per exercise, numeric totals, a status) the grader writes, in a
folder named after it, each submission executed (``.ipynb`` and ``.html``) and a feedback file listing each
exercise's verdict and the answer read, under a safe name of its own (:func:`file_stem`). A submission that hangs,
raises, exhausts memory, is not a notebook, names a chapter the book lacks or gives an answer that cannot be compared
gets a row that says so; every other submission is still graded, and the CSV is written even when grading is
interrupted (Ctrl-C, SIGTERM), beside a complete earlier one rather than over it (:func:`write_scores`).

Every run, the instructor's reference run included, happens in a bubblewrap sandbox that holds nothing of the
instructor's, wherever one can be made (:mod:`~lora_merge_utils.course.sandbox` says what it shows and what the
unsandboxed fallback cannot promise); the instructors' page says how to grade where none can.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..safe_io import write_atomic
from .chapters import CHAPTERS
from .exercises import EXERCISES, chapter_exercises, compare
from .sandbox import Sandbox, bwrap_problem, prepare

ANSWER_MARK = "LORA_BOOK_ANSWER "
READ_TAG = "grader-read"
STUDENT_ID_VARIABLE = "STUDENT_ID"
CHAPTER_SECONDS = {chapter.number: chapter.cold_seconds for chapter in CHAPTERS}
"""Each chapter's time from cold in the tiny profile on a 2-core CPU
(:attr:`~lora_merge_utils.course.chapters.Chapter.cold_seconds`), which the default time limits are set from."""


def default_timeouts(chapter: int) -> tuple[int, int]:
    """``(per cell, per notebook)`` seconds for a submission of ``chapter``: five times the chapter's measured CPU
    time from cold, and at least ten minutes (a student's extra cells and a busier machine fit; a loop that never
    ends does not)."""
    limit = max(600, 5 * CHAPTER_SECONDS.get(chapter, 600))
    return limit, limit


def chapter_of(notebook: dict, path: Path) -> int:
    """The chapter a submission belongs to: from its metadata, else from a file name starting with the number."""
    chapter = notebook.get("metadata", {}).get("lora_book", {}).get("chapter")
    if chapter is None:
        match = re.match(r"(\d+)_", path.name)
        if match is None:
            raise ValueError(
                f"{path.name}: no lora_book metadata, and the file name does not start with the chapter number "
                "(e.g. 03_...); hand out the student notebooks from notebooks/student/ unchanged in their metadata"
            )
        chapter = match.group(1)
    if (
        isinstance(chapter, bool)
        or not isinstance(chapter, int | str)
        or not re.fullmatch(r"[0-9]+", str(chapter).strip())
    ):
        raise ValueError(f"{path.name}: its lora_book metadata names chapter {str(chapter)[:40]!r}, not a number")
    number = int(str(chapter).strip())
    if number not in CHAPTER_SECONDS:
        raise ValueError(f"{path.name}: its metadata names chapter {number}, which this book does not have")
    return number


# --- what is added to a notebook, and what is read back ----------------------------------------------------------


def _reader(names: list[tuple[str, str]]) -> str:
    pairs = ", ".join(f"({exercise!r}, {variable!r})" for exercise, variable in names)
    return (
        "import json as _grader_json\n"
        "from lora_merge_utils.course.exercises import plain as _grader_plain\n"
        f"for _grader_exercise, _grader_name in [{pairs}]:\n"
        f"    print({ANSWER_MARK!r} + _grader_json.dumps([_grader_exercise, "
        "_grader_plain(globals().get(_grader_name))]))"
    )


def with_answer_readers(notebook, chapter: int):
    """A copy of ``notebook`` with a cell after each checked exercise's last code cell that prints its answer, and
    one at the end that prints every answer and the student's ID (``STUDENT_ID``)."""
    import nbformat

    notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
    checked = [e for e in chapter_exercises(chapter) if e.checked]
    last = {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and cell.metadata.get("exercise") in {e.id for e in checked}:
            last[cell.metadata["exercise"]] = index
    cells = []
    for index, cell in enumerate(notebook.cells):
        cells.append(cell)
        for exercise in [e for e in checked if last.get(e.id) == index]:
            reader = nbformat.v4.new_code_cell(_reader([(exercise.id, exercise.variable)]))
            reader.metadata["tags"] = [READ_TAG]
            cells.append(reader)
    final = nbformat.v4.new_code_cell(
        _reader([(e.id, e.variable) for e in checked] + [("student", STUDENT_ID_VARIABLE)])
    )
    final.metadata["tags"] = [READ_TAG]
    notebook.cells = cells + [final]
    return notebook


def read_answers(lines) -> dict[str, object]:
    """``{exercise: plain value}`` from answer lines (a later line for the same exercise wins)."""
    answers = {}
    for line in lines:
        if line.startswith(ANSWER_MARK):
            try:
                exercise, value = json.loads(line[len(ANSWER_MARK) :])
            except (ValueError, TypeError):
                continue
            if exercise in EXERCISES or exercise == "student":
                answers[exercise] = value
    return answers


# --- executing one notebook, in a child process -----------------------------------------------------------------


@dataclass
class Execution:
    """What running one notebook gave: answers read, cells that raised, and how it ended."""

    answers: dict = field(default_factory=dict)
    errors: int = 0
    status: str = "graded"
    executed: object | None = None
    """The executed notebook, as the grader read it (an ``nbformat`` node), or ``None``."""


LIMITS = {"answers": 5_000_000, "ending.txt": 10_000, "executed.ipynb": 200_000_000, "stderr": 1_000_000}
"""The most bytes the grader reads of each file a run leaves (a submission controls their size)."""


def read_left_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a file a run left in its scratch folder, read as the grader safely can: ``None`` unless it is a
    plain file (never through a link a submission planted to one of the instructor's files, never a device or a pipe
    that would never end), and at most ``limit`` bytes (the rest is cut)."""
    import stat

    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return file.read(limit)


def _execute_here(source: Path, executed: Path, answers_file: Path, cell_timeout: int) -> None:
    """Run in the child process: execute ``source`` in its folder, append each answer line to ``answers_file`` as
    soon as its cell ran, and save the executed notebook (also when the kernel dies or a cell times out)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    notebook = nbformat.read(source, as_version=4)

    def on_cell_executed(cell, **_):
        if READ_TAG in cell.metadata.get("tags", []):
            with answers_file.open("a", encoding="utf-8") as file:
                for output in cell.get("outputs", []):
                    for line in str(output.get("text", "")).splitlines():
                        if line.startswith(ANSWER_MARK):
                            file.write(line + "\n")

    env = dict(os.environ) | {"LORA_BOOK_PROGRESS": "0", "TQDM_DISABLE": "1"}
    client = NotebookClient(
        notebook,
        timeout=cell_timeout,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(source.parent)}},
        on_cell_executed=on_cell_executed,
    )
    ending = "graded"
    with open(source.parent / "kernel.log", "w") as log:  # the kernel's own log is not the grader's business
        try:
            client.execute(env=env, stderr=log)
        except CellTimeoutError:
            ending = f"a cell ran past {cell_timeout} s; answers given before it count"
        except DeadKernelError:
            ending = "the kernel died (out of memory, or a crash); answers given before it count"
    nbformat.write(notebook, executed)
    (source.parent / "ending.txt").write_text(ending, encoding="utf-8")


def execute(
    notebook,
    scratch: Path,
    cell_timeout: int,
    notebook_timeout: int,
    sandbox: Sandbox | None = None,
    artifacts: Path | None = None,
    share_artifacts: bool = False,
) -> Execution:
    """Execute ``notebook`` (answer readers added) in ``scratch``, a folder of its own, in a child process run as
    ``sandbox`` says (:mod:`~lora_merge_utils.course.sandbox`; by default the grader's own Python, unsandboxed); stop
    it after ``notebook_timeout`` seconds. ``artifacts`` is a shared artifacts folder (see
    :meth:`~lora_merge_utils.course.sandbox.Sandbox.command`). Never raises for what the notebook does."""
    import nbformat

    scratch.mkdir(parents=True, exist_ok=True)
    source, executed, answers_file = scratch / "submission.ipynb", scratch / "executed.ipynb", scratch / "answers"
    nbformat.write(notebook, source)
    answers_file.touch()
    arguments = ["-m", "lora_merge_utils.course.grading", "execute", source.name, executed.name, answers_file.name]
    sandbox = sandbox or Sandbox("none", Path(__file__).resolve().parents[2])
    command, environment = sandbox.command([*arguments, str(cell_timeout)], scratch, artifacts, share_artifacts)
    # The child's error output goes to a file beside the scratch folder, never into it (a run cannot reach it) and
    # never into the grader's memory whole; no standard input (the instructor's terminal is not the run's).
    stderr_path = scratch.parent / f".{scratch.name}-stderr"
    with open(stderr_path, "wb") as stderr_file:
        child = subprocess.Popen(
            command,
            cwd=scratch,
            env=environment,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        )
    with _RUNNING_LOCK:
        _RUNNING.add(child)
    result = Execution()
    try:
        child.wait(timeout=notebook_timeout)
        if child.returncode != 0:
            said = _text(read_left_file(stderr_path, LIMITS["stderr"])).strip().splitlines() or ["?"]
            result.status = "the grader could not run it: " + said[-1][:200]
    except subprocess.TimeoutExpired:
        _kill(child)
        result.status = f"stopped after {notebook_timeout} s; answers given before that count"
    finally:
        _kill(child)
        with _RUNNING_LOCK:
            _RUNNING.discard(child)
        stderr_path.unlink(missing_ok=True)
    # Everything below comes from files the run could replace (by links, devices, pipes or huge files): each is read
    # without following a link, only if it is a plain file, and only up to its limit.
    ending = read_left_file(scratch / "ending.txt", LIMITS["ending.txt"])
    if result.status == "graded" and ending is not None:
        result.status = _text(ending)[:500]
    result.answers = read_answers(_text(read_left_file(answers_file, LIMITS["answers"])).splitlines())
    left = read_left_file(executed, LIMITS["executed.ipynb"])
    try:
        done = nbformat.reads(_text(left), as_version=4) if left is not None else None
    except Exception:  # any way the left file fails to be a notebook: the answers still count
        done = None
    if done is not None:
        result.executed = done
        result.errors = sum(
            any(o.get("output_type") == "error" for o in cell.get("outputs", []))
            for cell in done.cells
            if READ_TAG not in cell.metadata.get("tags", [])
        )
    return result


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()


def _kill(child: subprocess.Popen) -> None:
    """End a child and its kernel (its whole process group)."""
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()


# --- the reference: the instructor's own run of the chapter -------------------------------------------------------


def default_chapters_dir() -> Path | None:
    """The chapters of the repository this package was installed from (an editable install or a clone)."""
    folder = Path(__file__).resolve().parents[2] / "notebooks"
    return folder if folder.is_dir() else None


def reference_answers(
    chapter: int,
    chapters_dir: Path,
    work: Path,
    cell_timeout: int,
    notebook_timeout: int,
    sandbox: Sandbox | None = None,
    artifacts: Path | None = None,
):
    """The answers the instructor's copy of ``chapter`` stores, from one run of it (as ``sandbox`` says, writing to
    the shared ``artifacts`` folder where one is set, so that submissions start from what it trained). They are kept
    in the grader's memory only: the run's folder (the executed chapter, its answer lines) is deleted before this
    returns, so no submission finds them on disk."""
    import nbformat

    (path,) = sorted(Path(chapters_dir).glob(f"{chapter:02d}_*.ipynb")) or [None]
    if path is None:
        raise ValueError(
            f"{chapters_dir} holds no chapter {chapter} (expected {chapter:02d}_*.ipynb); pass --chapters."
        )
    notebook = with_answer_readers(nbformat.read(path, as_version=4), chapter)
    scratch = work / f"reference-{chapter:02d}"
    try:
        run = execute(notebook, scratch, cell_timeout, notebook_timeout, sandbox, artifacts, share_artifacts=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    expected = {e.id for e in chapter_exercises(chapter) if e.checked}
    missing = sorted(expected - {k for k, v in run.answers.items() if v is not None})
    if missing or run.status != "graded":
        raise ValueError(
            f"The instructor's run of {path.name} did not give every reference answer ({run.status}; missing "
            f"{', '.join(missing) or 'none'}): run the chapter yourself and fix it before grading."
        )
    return run.answers


# --- grading a folder --------------------------------------------------------------------------------------------


def check_output(out: Path) -> None:
    """Refuse an unusable ``--out`` before any notebook runs."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the CSV file to write, e.g. scores.csv.")
    if out.suffix.lower() != ".csv":
        raise ValueError(f"--out {out} should be a .csv file (the scores table), e.g. scores.csv.")
    parent = out.parent if str(out.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise ValueError(f"--out {out}: {existing} is not a writable folder; choose another place for the scores.")


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def file_stem(student: str, submission: Path) -> str:
    """The stem of a submission's files beside the scores: its student ID and its file name, each reduced to letters,
    digits, ``_`` and ``-`` (at most 40 characters; a part that had to change gets a hash of what it was, so two IDs
    never share a name). Unique in a batch whatever the IDs are, since no two submissions share a file name; never a
    path (no ``/``, no ``..``, no leading dot), and never one whose suffix is mistaken for an extension.

    Example:
        >>> file_stem("jane.doe", Path("03_jane.ipynb")) != file_stem("jane.smith", Path("03_jane.ipynb"))
        True
        >>> file_stem("a--b", Path("c.ipynb")) != file_stem("a", Path("b--c.ipynb"))
        True
        >>> "/" in file_stem("../../etc/passwd", Path("a.ipynb"))
        False
    """

    def part(text: str) -> str:
        safe = _UNSAFE.sub("_", text).strip("_-")[:40] or "x"
        return safe if safe == text else f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    return f"{part(student)}.{part(submission.stem)}"  # part() never makes a ".": no two pairs meet in one name


def csv_cell(value: object) -> object:
    """A text cell as a spreadsheet shows it and never runs: one starting with ``=``, ``+``, ``-``, ``@`` or a
    control character gets a leading ``'`` (OWASP's rule against formula injection); numbers pass unchanged.

    Example:
        >>> csv_cell("=1+2*3"), csv_cell("ada"), csv_cell(-2)
        ("'=1+2*3", 'ada', -2)
    """
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r", "\n"):
        return "'" + value
    return value


COLUMNS_BEFORE = ["student", "submission", "chapter"]
COLUMNS_AFTER = ["checked_points", "checked_max", "hand_graded_max", "total_max", "status", "cells_with_errors"]


def _student_id(path: Path, answers: dict) -> str:
    given = answers.get("student")
    return given.strip() if isinstance(given, str) and given.strip() else path.stem


def _row(path: Path, chapter: int | None, run: Execution | None, reference: dict | None, status: str):
    row: dict[str, object] = {
        "student": path.stem,
        "submission": path.name,
        "chapter": "" if chapter is None else chapter,
    }
    feedback = []
    if chapter is not None:
        row["student"] = _student_id(path, run.answers if run else {})
        checked = hand = 0
        for exercise in chapter_exercises(chapter):
            if not exercise.checked:
                row[f"ex_{exercise.id}"] = ""  # graded by hand
                hand += exercise.points
                feedback.append(f"- {exercise.id} ({exercise.points} points): graded by hand.")
                continue
            answered = run is not None and exercise.id in run.answers
            verdict = _compare(exercise.id, run.answers[exercise.id], reference[exercise.id]) if answered else None
            points = exercise.points if verdict is not None and verdict.passed else 0
            row[f"ex_{exercise.id}"] = points
            row[f"answer_{exercise.id}"] = _shown(run.answers[exercise.id]) if answered else ""
            checked += points
            message = verdict.message if verdict is not None else f"✗ Exercise {exercise.id}: no answer was read."
            given = f" Your answer: {row[f'answer_{exercise.id}']}." if answered else ""
            feedback.append(f"- {exercise.id}: {points}/{exercise.points} points. {message}{given}")
        maximum = sum(e.points for e in chapter_exercises(chapter) if e.checked)
        row |= {"checked_points": checked, "checked_max": maximum, "hand_graded_max": hand, "total_max": maximum + hand}
    row |= {"status": status, "cells_with_errors": "" if run is None else run.errors}
    return row, feedback


ANSWER_CHARACTERS = 200
"""The most of an answer the CSV and the feedback show (an answer can be a large structure)."""


def _shown(answer: object) -> str:
    """An answer as the grader read it (plain JSON), cut to :data:`ANSWER_CHARACTERS`."""
    try:
        text = json.dumps(answer, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(answer)
    return text if len(text) <= ANSWER_CHARACTERS else text[: ANSWER_CHARACTERS - 1] + "…"


def _compare(exercise: str, answer: object, expected: object):
    """:func:`~lora_merge_utils.course.exercises.compare`, with an answer it cannot compare (a number too large for
    a float, a structure nested too deep) read as a wrong answer that says why."""
    from .exercises import Mark

    try:
        return compare(exercise, answer, expected)
    except (ArithmeticError, RecursionError, TypeError, ValueError) as error:
        return Mark(False, f"✗ Exercise {exercise}: the answer could not be compared ({type(error).__name__}).")


_ARTIFACTS_ENV = "LORA_BOOK_ARTIFACTS"
"""The shared artifacts folder's variable (:data:`lora_merge_utils.artifacts.ARTIFACTS_ENV`, whose module imports
torch: a grading child process starts without it)."""
MAX_JOBS = 64
"""Most submissions graded at once (each runs a kernel of its own)."""
MAX_SECONDS = 7 * 24 * 3600
"""Longest time limit accepted (larger ones overflow the timers that enforce them)."""


def grade_folder(
    folder: Path,
    out: Path,
    jobs: int = 1,
    cell_timeout: int | None = None,
    notebook_timeout: int | None = None,
    chapters_dir: Path | None = None,
    progress: Callable[[str], None] = print,
    run: Callable | None = None,
    sandbox: str = "auto",
) -> list[dict[str, object]]:
    """Grade every ``*.ipynb`` in ``folder``; write the scores to ``out`` (CSV) and, in the folder ``out`` names
    without its suffix, each executed submission and its feedback. Returns the rows.

    Every notebook, the instructor's included, runs as ``sandbox`` says (one of
    :data:`~lora_merge_utils.course.sandbox.MODES`; ``auto`` is a bubblewrap sandbox wherever one works, and says so
    where none does). ``run`` replaces the execution of a submission (``run(notebook, scratch, cell_timeout,
    notebook_timeout) -> Execution``), for tests. Time limits default to :func:`default_timeouts` of each chapter.
    """
    import nbformat

    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; give the folder that holds the submitted notebooks.")
    check_output(out)
    if not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"--jobs {jobs}: give a number of parallel gradings from 1 to {MAX_JOBS}.")
    for value, name in ((cell_timeout, "--cell-timeout"), (notebook_timeout, "--notebook-timeout")):
        if value is not None and not 0 < value <= MAX_SECONDS:
            raise ValueError(f"{name} {value}: give a positive number of seconds, at most {MAX_SECONDS} (a week).")
    paths = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        raise ValueError(f"{folder} holds no .ipynb files; collect the submissions there first.")
    chapters_dir = Path(chapters_dir) if chapters_dir is not None else default_chapters_dir()
    results = out.with_suffix("")
    work = Path(tempfile.mkdtemp(prefix="grading-"))
    repository = Path(__file__).resolve().parents[2]
    hidden = [folder, results, Path(tempfile.gettempdir()), *([chapters_dir] if chapters_dir else [])]
    hidden += [repository] * _is_repository(repository)
    try:
        box = prepare(sandbox, work, hidden)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    progress(_describe(box, sandbox))
    shared = Path(os.environ[_ARTIFACTS_ENV]).expanduser().resolve() if os.environ.get(_ARTIFACTS_ENV) else None
    run = run or functools.partial(execute, sandbox=box, artifacts=shared)
    results.mkdir(parents=True, exist_ok=True)
    rows: dict[Path, dict] = {}
    lock = threading.Lock()

    def limits(chapter: int) -> tuple[int, int]:
        cell, whole = default_timeouts(chapter)
        return cell_timeout or cell, notebook_timeout or whole

    def reference_for(chapter: int) -> dict:
        with lock:  # one reference run per chapter, shared by the submissions of that chapter
            if chapter not in references:
                try:
                    if chapters_dir is None:
                        raise ValueError("no instructor chapters to compute reference answers from: pass --chapters")
                    progress(f"reference run of chapter {chapter} (once) ...")
                    references[chapter] = reference_answers(
                        chapter, chapters_dir, work, *limits(chapter), sandbox=box, artifacts=shared
                    )
                except Exception as error:  # every submission of this chapter says so; the others are graded
                    progress(f"chapter {chapter}: {error}")
                    references[chapter] = ValueError(f"no reference answers ({type(error).__name__}: {error})")
            found = references[chapter]
        if isinstance(found, ValueError):
            raise found
        return found

    def grade(index: int, path: Path) -> None:
        try:
            notebook = nbformat.read(path, as_version=4)
        except Exception as error:  # any way a file fails to be a notebook
            row, feedback = _row(path, None, None, None, f"not a notebook: {type(error).__name__}")
        else:
            try:
                chapter = chapter_of(notebook, path)
            except ValueError as error:
                chapter, reason = None, str(error).split(": ", 1)[-1]
                row, feedback = _row(path, None, None, None, f"cannot tell which chapter this is: {reason}")
            try:
                reference = None if chapter is None else reference_for(chapter)
            except ValueError as error:
                chapter, row, feedback = None, *_row(path, None, None, None, f"not graded: {error}")
            if chapter is not None:
                progress(f"grading {path.name} (chapter {chapter}) ...")
                # A folder of its own, whose parent holds nothing else: no relative path reaches another submission.
                own = Path(tempfile.mkdtemp(prefix=f"grading-{index:04d}-"))
                try:
                    outcome = run(with_answer_readers(notebook, chapter), own / "submission", *limits(chapter))
                    try:
                        _keep(outcome, results / file_stem(_student_id(path, outcome.answers), path), path.name)
                    except Exception as error:  # the answers count whether or not the executed copy could be kept
                        outcome.status += f"; its executed copy could not be saved ({type(error).__name__})"
                finally:
                    shutil.rmtree(own, ignore_errors=True)
                if stop.is_set():  # stopped by an interruption, not by the submission: not graded
                    return
                row, feedback = _row(path, chapter, outcome, reference, outcome.status)
        stem = file_stem(str(row["student"]), path)
        (results / f"{stem}-feedback.md").write_text(
            f"# {row['student']}: {path.name}\n\nStatus: {row['status']}.\n\n" + "\n".join(feedback) + "\n",
            encoding="utf-8",
        )
        with lock:
            rows[path] = row
        progress(
            f"  {path.name}: {row.get('checked_points', 0)}/{row.get('checked_max', 0)} checked points "
            f"({row['status']})"
        )

    def grade_safely(index: int, path: Path) -> None:
        try:
            grade(index, path)
        except Exception as error:  # whatever one submission does, the batch goes on and its row says what happened
            with lock:
                rows.setdefault(path, _row(path, None, None, None, f"not graded: {type(error).__name__}: {error}")[0])

    references: dict[int, dict | ValueError] = {}
    stop = threading.Event()
    # SIGTERM ends grading like Ctrl-C does: with the rows graded so far written. Only where nothing handles it yet:
    # the command line's handler already raises (a KeyboardInterrupt saying "terminated") and remembers the stop.
    own_handler = threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    )
    if own_handler:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    interrupted: KeyboardInterrupt | None = None
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        # Every reference run first, one after another: while an instructor's chapter runs, no submission does.
        for chapter in sorted({_chapter_or_none(path) for path in paths} - {None}):
            try:
                reference_for(chapter)
            except ValueError:
                pass  # each submission of that chapter says why in its row
        for future in [pool.submit(grade_safely, i, p) for i, p in enumerate(paths)]:
            future.result()
    except KeyboardInterrupt as interruption:
        interrupted = interruption
        stop.set()
        progress("interrupted: stopping the notebooks still running and writing the rows graded so far")
        pool.shutdown(wait=False, cancel_futures=True)
        with _RUNNING_LOCK:
            for child in list(_RUNNING):
                _kill(child)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if own_handler:
            signal.signal(signal.SIGTERM, previous)
        with lock:
            for path in paths:
                if path not in rows:
                    rows[path] = _row(path, None, None, None, "not graded: grading was interrupted")[0]
            ordered = _mark_shared_ids([rows[p] for p in paths])
        complete = interrupted is None and not any(str(row["status"]).startswith("not graded") for row in ordered)
        written = write_scores(ordered, out, complete=complete)
        if written != out:
            progress(f"{out} holds a complete earlier grading and stays as it was; this run's rows are in {written}")
        shutil.rmtree(work, ignore_errors=True)
    if interrupted is not None:
        raise interrupted  # after the rows are written: the caller says how grading ended
    return ordered


def _is_repository(folder: Path) -> bool:
    """Whether ``folder`` (where the package was imported from) is the book's repository: its chapters or history."""
    return (folder / "notebooks").is_dir() or (folder / ".git").exists()


def _describe(box: Sandbox, asked: str) -> str:
    """The line that tells the instructor how submissions run."""
    if box.mode == "bwrap":
        return "submissions run in a bubblewrap sandbox: none can see your files, another submission or the network"
    if asked == "none":
        return "submissions run unsandboxed (--sandbox none), with your permissions"
    return (
        f"no sandbox ({bwrap_problem()}): submissions run with your permissions and can read your files, the "
        "chapters included; see the instructors' page, or pass --sandbox none to choose this knowingly"
    )


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _chapter_or_none(path: Path) -> int | None:
    """The chapter of the submission at ``path``, or ``None`` where it cannot be told (its row will say why)."""
    import nbformat

    try:
        return chapter_of(nbformat.read(path, as_version=4), path)
    except Exception:  # any file that is not a notebook of a chapter
        return None


def _mark_shared_ids(rows: list[dict]) -> list[dict]:
    """Rows whose student ID another submission also gives say so in their status (each keeps its own files)."""
    by_id: dict[str, list[str]] = {}
    for row in rows:
        by_id.setdefault(str(row["student"]), []).append(str(row["submission"]))
    for row in rows:
        others = [name for name in by_id[str(row["student"])] if name != row["submission"]]
        if others:
            row["status"] = f"{row['status']}; the same student ID is given by {', '.join(others)}"
    return rows


def _keep(run: Execution, stem: Path, name: str) -> None:
    """Save the executed submission beside the scores, as ``.ipynb`` and ``.html``, without the grader's cells."""
    import nbformat

    if run.executed is None:
        return
    notebook = nbformat.from_dict(json.loads(json.dumps(run.executed)))
    notebook.cells = [c for c in notebook.cells if READ_TAG not in c.metadata.get("tags", [])]
    # stem.name + suffix, not with_suffix: an ID like jane.doe must not lose its ".doe"
    nbformat.write(notebook, stem.parent / f"{stem.name}.ipynb")
    try:
        import warnings

        from nbconvert import HTMLExporter

        with warnings.catch_warnings():  # glued values' mimetype has no HTML form: not the instructor's business
            warnings.simplefilter("ignore", UserWarning)
            html, _ = HTMLExporter().from_notebook_node(notebook)
        (stem.parent / f"{stem.name}.html").write_text(html, encoding="utf-8")
    except ImportError:
        pass  # the .ipynb is there; nbconvert comes with the book's extras


def write_scores(rows: list[dict], out: Path, complete: bool = True) -> Path:
    """One CSV row per submission: ``student`` first (the ID an LMS gradebook matches), numbers as numbers, each
    checked exercise's answer as read (last, ``answer_<id>``), text escaped against formula injection
    (:func:`csv_cell`), written atomically. An incomplete grading (interrupted, or with rows not graded) never
    replaces an earlier CSV whose every row was graded: it goes beside it, as ``<name>-interrupted.csv``. Returns the
    path written."""
    exercises = [f"ex_{e}" for e in EXERCISES if any(f"ex_{e}" in row for row in rows)]
    answers = [f"answer_{e}" for e in EXERCISES if any(f"answer_{e}" in row for row in rows)]
    columns = COLUMNS_BEFORE + exercises + COLUMNS_AFTER + answers
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in rows)
    text = buffer.getvalue()
    out = Path(out)
    if not complete and _fully_graded(out):
        out = out.with_name(f"{out.stem}-interrupted.csv")
    write_atomic(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out


def _fully_graded(path: Path) -> bool:
    """Whether ``path`` is a scores CSV in which no row is marked not graded."""
    try:
        with Path(path).open(encoding="utf-8", newline="") as file:
            statuses = [row.get("status") or "" for row in csv.DictReader(file)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return bool(statuses) and not any(status.startswith("not graded") for status in statuses)


def _main(argv: list[str]) -> int:
    """``python -m lora_merge_utils.course.grading execute SOURCE EXECUTED ANSWERS CELL_TIMEOUT``: the child process."""
    if len(argv) != 5 or argv[0] != "execute":
        print(
            "usage: python -m lora_merge_utils.course.grading execute SOURCE EXECUTED ANSWERS CELL_TIMEOUT",
            file=sys.stderr,
        )
        return 2
    _execute_here(Path(argv[1]).resolve(), Path(argv[2]).resolve(), Path(argv[3]).resolve(), int(argv[4]))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
