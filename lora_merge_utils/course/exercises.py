"""The book's exercises: what each one asks for, its points, its rubric, and a fair comparison of answers.

Every chapter ends with exercises. Those with one definite answer are *checked*: the student stores the answer in a
variable (``answer_3_1``). Two things read it:

* the **self-check** in the student's notebook (:func:`check_exercise`) says only whether the answer has the form the
  grader reads (a number, a name, a pair, a mapping with the right keys): every answer of that form gets the same
  line, so no loop over candidate answers learns anything from it;
* the **grader** (:mod:`lora_merge_utils.course.grading`) compares (:func:`compare`), in its own process, the plain
  value read out of the submission with the answer of the instructor's own run of the chapter: that alone decides
  whether it is right, and scores points.

Any value equal to the answer counts (a NumPy scalar, a whole float for a count, a 0-d tensor); where the type
matters the message says "right value, wrong type". The others are graded by hand, with the rubric line of each
exercise (the instructors' page shows this table).

>>> EXERCISES["3.1"].points, EXERCISES["3.1"].checked, EXERCISES["3.4"].kind
(2, True, 'prose')
>>> compare("0.1", 73728.0, 73728).passed  # a whole float for a count
True
>>> compare("1.1", ["mnist"], "mnist").message
'✗ Exercise 1.1: right value, wrong type: store the str itself, not a list.'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .chapters import CHAPTERS


@dataclass(frozen=True)
class Exercise:
    """One exercise of the book.

    ``kind`` is ``"code"`` or ``"prose"``; a checked exercise has an ``answer_type`` (``"int"``, ``"float"``,
    ``"str"``, ``"pair"`` of strings, ``"mapping"`` of numbers or ``"config"``), says in ``answer`` what its answer
    variable holds, and may allow a relative ``tolerance``; ``rubric`` is what earns full points when an instructor
    grades it by hand (or, for a checked exercise, what the check compares).
    """

    id: str
    level: str
    points: int
    kind: str
    rubric: str
    answer: str = ""
    answer_type: str | None = None
    tolerance: float = 0.0

    @property
    def checked(self) -> bool:
        """Whether the grader compares its answer (otherwise an instructor grades it with the rubric)."""
        return self.answer_type is not None

    @property
    def chapter(self) -> int:
        return int(self.id.split(".")[0])

    @property
    def variable(self) -> str:
        """The name a checked answer is stored under, e.g. ``answer_3_1``."""
        return "answer_" + self.id.replace(".", "_")


def _exercises(*rows: Exercise) -> dict[str, Exercise]:
    return {row.id: row for row in rows}


E = Exercise
EXERCISES: dict[str, Exercise] = _exercises(
    E(
        "0.1",
        "easy",
        2,
        "code",
        "the count, from the layer shapes",
        "the number of LoRA parameters at rank 4 (an int)",
        "int",
    ),
    E(
        "0.2",
        "easy",
        1,
        "code",
        "the module's full name",
        "the full name of the module a bare `proj` would also match (a string)",
        "str",
    ),
    E("0.3", "medium", 2, "code", "both grids plotted, and one sentence on whether the splits look alike"),
    E(
        "0.4",
        "open",
        2,
        "prose",
        "a pair, a reason tied to what the tasks' images share, and what chapter 3 would show if it is right",
    ),
    E(
        "1.1",
        "easy",
        1,
        "code",
        "the task's name",
        "the name of the task that gains least from pretraining (a string)",
        "str",
    ),
    E(
        "1.2",
        "easy",
        2,
        "code",
        "validation and test accuracy for every penalty, and whether the validation choice is the test-best",
    ),
    E(
        "1.3",
        "medium",
        3,
        "code",
        "the MLP trained on the cached features, its test accuracy beside the linear head's for every task, and what a"
        " stronger head means for the floor merges must clear",
    ),
    E(
        "1.4",
        "open",
        2,
        "prose",
        "a kind of task (counting, relations between parts, fine spatial detail) and why one pooled vector loses it",
    ),
    E(
        "2.1",
        "easy",
        1,
        "code",
        "the three values read from the file",
        'a dict with the keys "r", "lora_alpha" and "target_modules"',
        "config",
    ),
    E(
        "2.2",
        "easy",
        2,
        "code",
        "the task, read from the loss curves, and a change (more epochs or a learning-rate schedule) with a reason",
    ),
    E(
        "2.3",
        "medium",
        3,
        "code",
        "the rank-2 adapter trained, its accuracy beside rank 8's, and whether the difference exceeds the spread "
        "between seeds",
    ),
    E(
        "2.4",
        "open",
        2,
        "prose",
        "a comparison run or argued, and when a shared starting head matters for merging (heads are never merged; the "
        "backbone's features are)",
    ),
    E(
        "3.1",
        "easy",
        2,
        "code",
        "the task's name",
        "the name of the task that loses most when merged into a pair (a string)",
        "str",
    ),
    E(
        "3.2",
        "easy",
        2,
        "code",
        "the relative error",
        "the relative error of PEFT's `linear` merge on the last block's mlp.fc2 (a float)",
        "float",
        1e-3,
    ),
    E(
        "3.3",
        "medium",
        3,
        "code",
        "both tasks scored with weights 0.7/0.3 against equal weights, and who gains and who loses",
    ),
    E(
        "3.4",
        "open",
        2,
        "prose",
        "an explanation (the tasks' gains differ in size, updates of different norms) and a measurement that could "
        "refute it",
    ),
    E(
        "4.1",
        "easy",
        2,
        "code",
        "the task's name",
        "the name of the task that loses most when merged into a triple (a string)",
        "str",
    ),
    E(
        "4.2",
        "easy",
        2,
        "code",
        "a count per seed",
        "a dict: seed -> number of triples in which every member beats its baseline",
        "mapping",
    ),
    E(
        "4.3",
        "medium",
        3,
        "code",
        "the scaled sum scored on every seed, compared with the equal-weight merge, and whether one seed would have "
        "been enough",
    ),
    E(
        "4.4",
        "open",
        2,
        "prose",
        "a rule that uses only training or validation data (similarity, update norms, validation scores) and a way to "
        "test it on held-out merges",
    ),
    E(
        "5.1",
        "easy",
        2,
        "code",
        "the chosen values, the test scores beside them, and why the choice stays the validation one",
    ),
    E(
        "5.2",
        "easy",
        2,
        "code",
        "a share per family",
        "a dict: family -> share of triples beating the baseline on every member task",
        "mapping",
        1e-3,
    ),
    E("5.3", "medium", 3, "code", "the svd candidates scored on validation beside the others, and what rank does"),
    E("5.4", "medium", 3, "code", "a lambda chosen for pairs and one for triples, on validation, compared with 1/K"),
    E(
        "5.5",
        "open",
        2,
        "prose",
        "a resampling of the validation images (or several validation splits) and how often the choice changes",
    ),
    E(
        "6.1",
        "easy",
        2,
        "code",
        "the two pair names",
        "a pair of pair names: (least aligned, most aligned), e.g. ('a+b', 'c+d')",
        "pair",
    ),
    E(
        "6.2",
        "easy",
        2,
        "code",
        "the new distance computed, its correlation with retention beside the Fréchet one's, and whether it changes",
    ),
    E(
        "6.3",
        "medium",
        3,
        "code",
        "the cosines for attention and MLP layers, each correlated with retention, with the permutation test's "
        "p-values",
    ),
    E(
        "6.4",
        "open",
        2,
        "prose",
        "more independent pairs (tasks sharing images, several task sets, other ranks) and how the test would use them",
    ),
    E(
        "7.1",
        "easy",
        1,
        "code",
        "the ratio",
        "the merged model's time ratio to frozen + K heads at K = 3, batch 1 (a float)",
        "float",
        0.25,
    ),
    E("7.2", "easy", 2, "code", "K = 4 timed, and whether the speed-up over switching grows with K"),
    E(
        "7.3",
        "medium",
        3,
        "code",
        "merging and unmerging timed per request beside the strategies above, and when it is cheaper",
    ),
    E(
        "7.4",
        "open",
        2,
        "prose",
        "a case (many adapters, adapters that change often, per-request mixing) and why merging does not serve it",
    ),
)
del E

STUDENT_MINUTES: dict[int, int] = {chapter.number: chapter.student_minutes for chapter in CHAPTERS}
"""An estimate, not a measurement: minutes a student needs per chapter to read it, run it and answer its exercises
(reading at a textbook pace, plus about ten minutes per easy, twenty per medium and fifteen per open exercise)."""


def chapter_exercises(chapter: int | str) -> list[Exercise]:
    """The exercises of one chapter, in order."""
    return [e for e in EXERCISES.values() if e.chapter == int(chapter)]


# --- plain values and a fair comparison -----------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: NumPy and PyTorch scalars as numbers, 0-d arrays and tensors as their item,
    sequences as lists, mappings (a pandas Series too) as dicts with string keys; anything else becomes
    ``{"unsupported": "<type name>"}``. What the grader reads out of a submission, and all it compares: an object
    whose ``==`` says yes to everything is just an unsupported type here.

    Example:
        >>> import numpy as np
        >>> plain({1: np.int64(3), "a": (np.float32(0.5), "x")})
        {'1': 3, 'a': [0.5, 'x']}
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # 0-d NumPy arrays and tensors
        return plain(value.item())
    if hasattr(value, "to_dict") and not isinstance(value, type):  # a pandas Series
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if hasattr(value, "tolist") and not isinstance(value, type):  # NumPy arrays and tensors
        return plain(value.tolist())
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return {"unsupported": type(value).__name__}


@dataclass(frozen=True)
class Mark:
    """What a check says of one exercise's answer: whether it passed, and the line shown to the student (not a
    statistical :class:`~lora_merge_utils.course.verdicts.Verdict`, which is the chapters' answer to a question)."""

    passed: bool
    message: str


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _close(answer: Any, expected: Any, tolerance: float) -> bool:
    a, e = _number(answer), _number(expected)
    return a is not None and e is not None and math.isfinite(a) and math.isclose(a, e, rel_tol=tolerance, abs_tol=1e-12)


def _matches(spec: Exercise, answer: Any, expected: Any) -> bool:
    kind = spec.answer_type
    if kind in ("int", "float"):
        return _close(answer, expected, spec.tolerance)
    if kind == "str":
        return isinstance(answer, str) and answer == expected
    if kind == "pair":
        return isinstance(answer, list) and len(answer) == 2 and answer == expected
    if kind == "mapping":
        return (
            isinstance(answer, dict)
            and set(answer) == set(expected)
            and all(_close(answer[k], expected[k], spec.tolerance) for k in expected)
        )
    if kind == "config":
        return (
            isinstance(answer, dict)
            and set(answer) == set(expected)
            and all(answer[k] == expected[k] or _close(answer[k], expected[k], 0.0) for k in expected)
        )
    raise ValueError(f"exercise {spec.id} is graded by hand, not compared")


def _type_name(value: Any) -> str:
    return {list: "list", dict: "dict", str: "str", int: "int", float: "float", type(None): "None"}.get(
        type(value), "value"
    )


def compare(exercise: str, answer: Any, expected: Any) -> Mark:
    """Whether ``answer`` is ``expected`` for a checked exercise, with the message a student sees (never the
    expected value). Both are made :func:`plain` first."""
    spec = _spec(exercise)
    if spec.answer_type is None:
        raise ValueError(f"exercise {exercise} is graded by hand, not checked; the instructors' page has its rubric")
    answer, expected = plain(answer), plain(expected)
    if answer is None:
        return Mark(False, f"✗ Exercise {exercise}: not answered yet: store {spec.answer} in {spec.variable}.")
    if _matches(spec, answer, expected):
        if spec.answer_type == "int" and isinstance(answer, float):
            return Mark(True, f"✓ Exercise {exercise}: correct (a whole number; an int says it best).")
        return Mark(True, f"✓ Exercise {exercise}: correct.")
    wrapped = answer[0] if isinstance(answer, list) and len(answer) == 1 else None
    if wrapped is not None and _matches(spec, wrapped, expected):
        return Mark(
            False,
            f"✗ Exercise {exercise}: right value, wrong type: store the {_type_name(wrapped)} itself, not a list.",
        )
    if isinstance(answer, dict) and "unsupported" in answer:
        return Mark(
            False, f"✗ Exercise {exercise}: {spec.variable} holds a {answer['unsupported']}; store {spec.answer}."
        )
    return Mark(False, f"✗ Exercise {exercise}: not yet. {spec.variable} should hold {spec.answer}; look again.")


def _spec(exercise: str) -> Exercise:
    if exercise not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise!r}; the exercises are {', '.join(EXERCISES)}")
    return EXERCISES[exercise]


# --- the self-check: the form of an answer, never its value --------------------------------------------------------


_KEYS: dict[str, Callable[..., set]] = {
    "2.1": lambda **_: {"r", "lora_alpha", "target_modules"},
    "4.2": lambda triples, **_: {str(int(seed)) for seed in triples["seed"].unique()},
    "5.2": lambda survey, **_: {str(family) for family in survey[survey["size"] == 3]["family"].unique()},
}
"""The keys a mapping answer must have, read from the objects its chapter's check cell passes. Only keys: the
package a submission imports carries no way to compute an answer (the grader takes those from the instructor's own
run of the chapter)."""


def check_exercise(exercise: str, answer: Any, **context: Any) -> None:
    """The self-check of a checked exercise: print whether ``answer`` has the form the grader reads (✓) or what to
    change (✗), and nothing about whether it is right. Every answer of the right form prints the same line, so the
    self-check is no oracle: a loop over candidate answers that captures its output learns nothing. ``context`` is
    the objects of the student's own run that the chapter's check cell passes; a mapping's keys are read from them.
    The grader decides what is right (:func:`compare`); this returns nothing."""
    spec = _spec(exercise)
    if not spec.checked:
        raise ValueError(f"exercise {exercise} is graded by hand, not checked; the instructors' page has its rubric")
    keys = None
    if exercise in _KEYS:
        try:
            keys = _KEYS[exercise](**context)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            print(
                f"✗ Exercise {exercise}: the check could not read its chapter's objects ({type(error).__name__}); "
                "run the chapter's cells above first."
            )
            return
    print(form_check(exercise, answer, keys).message)


def form_check(exercise: str, answer: Any, keys: set[str] | None = None) -> Mark:
    """Whether ``answer`` has the form the grader reads for ``exercise`` (its type; for a mapping, ``keys`` when
    given, and numbers as values), with the line a student sees: the same line for every answer of that form.

    Example:
        >>> form_check("1.1", "mnist").message == form_check("1.1", "letters").message
        True
        >>> form_check("1.1", ["mnist"]).message
        '✗ Exercise 1.1: store the str itself, not a list.'
    """
    spec = _spec(exercise)
    value = plain(answer)
    name = f"✗ Exercise {exercise}:"
    if value is None:
        return Mark(False, f"{name} not answered yet: store {spec.answer} in {spec.variable}.")
    if isinstance(value, dict) and set(value) == {"unsupported"}:
        return Mark(False, f"{name} {spec.variable} holds a {value['unsupported']}; store {spec.answer}.")
    if spec.answer_type in ("int", "float", "str") and isinstance(value, list) and len(value) == 1:
        return Mark(False, f"{name} store the {_type_name(value[0])} itself, not a list.")
    problem = _form_problem(spec, value, keys)
    if problem:
        return Mark(False, f"{name} {problem}")
    return Mark(
        True,
        f"✓ Exercise {exercise}: {spec.variable} holds {spec.answer}, the form the grader reads; whether it is "
        "right is decided when your notebook is graded.",
    )


def _form_problem(spec: Exercise, value: Any, keys: set[str] | None) -> str | None:
    kind = spec.answer_type
    number = _number(value)
    if kind in ("int", "float"):
        if number is None or not math.isfinite(number):
            return f"store {spec.answer}, a finite number."
        if kind == "int" and number != int(number):
            return f"store a whole number: {spec.answer}."
        return None
    if kind == "str":
        return None if isinstance(value, str) and value.strip() else f"store {spec.answer}."
    if kind == "pair":
        pair = isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)
        return None if pair else f"store {spec.answer}."
    if not isinstance(value, dict):
        return f"store {spec.answer}."
    if keys is not None and set(value) != keys:
        return f"store {spec.answer}, with one entry for each of: {', '.join(sorted(keys))}."
    if kind == "mapping" and not all(_number(v) is not None and math.isfinite(_number(v)) for v in value.values()):
        return f"store {spec.answer}, with a number for each entry."
    return None


# --- the instructors' page, generated from the table --------------------------------------------------------------


def exercise_table() -> str:
    """The markdown table of every exercise (points, level, kind, how it is graded, the rubric line) that the
    instructors' page shows between its ``exercise table`` markers."""
    rows = ["| exercise | level | kind | points | graded by | full points for |", "|---|---|---|---|---|---|"]
    for e in EXERCISES.values():
        graded = "the grader" if e.checked else "hand"
        rows.append(f"| {e.id} | {e.level} | {e.kind} | {e.points} | {graded} | {e.rubric} |")
    return "\n".join(rows)


def chapter_table(cpu_minutes: Mapping[int, float], t4_minutes: Mapping[int, tuple[float, float]]) -> str:
    """The markdown table of points and times per chapter for the instructors' page: points (checked and by hand),
    the student's working time (an estimate), and the compute time on a CPU (tiny) and a T4 (full)."""
    rows = [
        "| chapter | points (checked + by hand) | student time (estimate) | compute, CPU (tiny) | compute, T4 (full) |",
        "|---|---|---|---|---|",
    ]
    for chapter, minutes in STUDENT_MINUTES.items():
        own = chapter_exercises(chapter)
        checked = sum(e.points for e in own if e.checked)
        warm, alone = t4_minutes[chapter]
        rows.append(
            f"| {chapter} | {checked + sum(e.points for e in own if not e.checked)} ({checked} + "
            f"{sum(e.points for e in own if not e.checked)}) | {minutes} min | {cpu_minutes[chapter]:.1f} min | "
            f"{warm:.0f} / {alone:.0f} min |"
        )
    return "\n".join(rows)
