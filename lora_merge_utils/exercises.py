"""The book's exercises: what each one asks for, its points, and checks that say "right" or "not yet".

Every chapter ends with exercises. Those with one definite answer are *checked*: the student stores the answer in a
variable and calls :func:`check_exercise`, which recomputes the expected answer from the student's own run (so the
check works in both profiles) and prints whether the answer matches, never the expected value itself. The others are
graded by hand with the rubric of the instructors' page.

>>> EXERCISES["3.1"].points, EXERCISES["3.1"].checked, EXERCISES["3.4"].kind
(2, True, 'prose')
>>> check_exercise("0.2", "patch_embed.proj", backbone=None, quiet=True)
False

When ``$LORA_BOOK_GRADE_RESULTS`` names a file, every check appends its verdict there as one JSON line: that is how
``python -m lora_merge_utils grade`` collects the scores of an executed submission.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

GRADE_RESULTS_ENV = "LORA_BOOK_GRADE_RESULTS"


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``kind`` is ``"code"`` or ``"prose"``; ``answer`` says what a checked answer variable holds."""

    id: str
    level: str
    points: int
    kind: str = "code"
    answer: str = ""

    @property
    def checked(self) -> bool:
        """Whether :func:`check_exercise` can grade it (otherwise an instructor does)."""
        return self.id in CHECKS

    @property
    def variable(self) -> str:
        """The name a checked answer is stored under, e.g. ``answer_3_1``."""
        return "answer_" + self.id.replace(".", "_")


def _exercises(*rows: tuple) -> dict[str, Exercise]:
    return {row[0]: Exercise(*row) for row in rows}


EXERCISES: dict[str, Exercise] = _exercises(
    ("0.1", "easy", 2, "code", "the number of LoRA parameters at rank 4 (an int)"),
    ("0.2", "easy", 1, "code", "the full name of the module a bare `proj` would also match (a string)"),
    ("0.3", "medium", 2, "code"),
    ("0.4", "open", 2, "prose"),
    ("1.1", "easy", 1, "code", "the name of the task that gains least from pretraining (a string)"),
    ("1.2", "easy", 2, "code"),
    ("1.3", "medium", 3, "code"),
    ("1.4", "open", 2, "prose"),
    ("2.1", "easy", 1, "code", 'a dict with the keys "r", "lora_alpha" and "target_modules"'),
    ("2.2", "easy", 2, "code"),
    ("2.3", "medium", 3, "code"),
    ("2.4", "open", 2, "prose"),
    ("3.1", "easy", 2, "code", "the name of the task that loses most when merged into a pair (a string)"),
    ("3.2", "easy", 2, "code", "the relative error of PEFT's `linear` merge on the last block's mlp.fc2 (a float)"),
    ("3.3", "medium", 3, "code"),
    ("3.4", "open", 2, "prose"),
    ("4.1", "easy", 2, "code", "the name of the task that loses most when merged into a triple (a string)"),
    ("4.2", "easy", 2, "code", "a dict: seed -> number of triples in which every member beats its baseline"),
    ("4.3", "medium", 3, "code"),
    ("4.4", "open", 2, "prose"),
    ("5.1", "easy", 2, "code"),
    ("5.2", "easy", 2, "code", "a dict: family -> share of triples beating the baseline on every member task"),
    ("5.3", "medium", 3, "code"),
    ("5.4", "medium", 3, "code"),
    ("5.5", "open", 2, "prose"),
    ("6.1", "easy", 2, "code", "a pair of pair names: (least aligned, most aligned), e.g. ('a+b', 'c+d')"),
    ("6.2", "easy", 2, "code"),
    ("6.3", "medium", 3, "code"),
    ("6.4", "open", 2, "prose"),
    ("7.1", "easy", 1, "code", "the merged model's time ratio to frozen + K heads at K = 3, batch 1 (a float)"),
    ("7.2", "easy", 2, "code"),
    ("7.3", "medium", 3, "code"),
    ("7.4", "open", 2, "prose"),
)


def chapter_exercises(chapter: int | str) -> list[Exercise]:
    """The exercises of one chapter, in order."""
    return [e for e in EXERCISES.values() if e.id.split(".")[0] == str(int(chapter))]


# --- what each checked exercise expects, recomputed from the objects of the student's own run ---------------------


def _lora_parameters(backbone, targets, rank: int = 4) -> int:
    modules = dict(backbone.named_modules())
    return sum(rank * (modules[name].in_features + modules[name].out_features) for name in targets)


def _bare_proj_extra(backbone) -> set[str]:
    import torch

    return {
        name
        for name, module in backbone.named_modules()
        if re.search(r"(^|\.)proj$", name) and not isinstance(module, torch.nn.Linear)
    }


def _least_gain(control) -> str:
    return str(control.sort_values("gain").iloc[0]["task"])


def _adapter_config(study) -> dict:
    path = study.store.adapter_dir(study.profile.tasks[0], 0) / "adapter_config.json"
    return json.loads(path.read_text())


def _worst_in_pairs(pairs, tasks) -> str:
    from .evaluation import pairwise_matrix

    return str(pairwise_matrix(pairs, "task_arithmetic", tasks).mean(axis=1).idxmin())


def _linear_error_last_fc2(per_layer, backbone) -> float:
    return float(per_layer["linear"][f"blocks.{len(backbone.blocks) - 1}.mlp.fc2"])


def _worst_in_triples(triples) -> str:
    return str(triples[triples.method == "task_arithmetic"].groupby("task")["normalized_accuracy"].mean().idxmin())


def _all_beat_per_seed(triples) -> dict[int, int]:
    rows = triples[triples.method == "task_arithmetic"]
    counts = rows.groupby(["seed", "members"])["beats_head"].all().groupby("seed").sum()
    return {int(seed): int(count) for seed, count in counts.items()}


def _share_all_beat(survey) -> dict[str, float]:
    rows = survey[survey["size"] == 3]
    shares = rows.groupby(["family", "members"])["beats_head"].all().groupby("family").mean()
    return {str(family): float(share) for family, share in shares.items()}


def _alignment_extremes(weight_similarity) -> tuple[str, str]:
    ordered = weight_similarity.sort_values()
    return str(ordered.index[0]), str(ordered.index[-1])


def _merged_ratio(summary) -> float:
    row = summary[(summary["strategy"] == "merged") & (summary["K"] == 3) & (summary["batch"] == 1)]
    return float(row["vs frozen + K heads"].iloc[0])


def _same_number(answer: Any, expected: float, rel: float = 1e-3) -> bool:
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return False
    return math.isfinite(value) and math.isclose(value, expected, rel_tol=rel, abs_tol=1e-12)


def _same_numbers(answer: Any, expected: Mapping, rel: float = 1e-3) -> bool:
    if not isinstance(answer, Mapping) and not hasattr(answer, "to_dict"):
        return False
    answer = dict(answer.to_dict() if hasattr(answer, "to_dict") else answer)
    keys = {str(k): v for k, v in answer.items()}
    return set(keys) == {str(k) for k in expected} and all(
        _same_number(keys[str(k)], v, rel) for k, v in expected.items()
    )


def _check_config(answer: Any, study) -> bool:
    config = _adapter_config(study)
    if not isinstance(answer, Mapping) or set(answer) != {"r", "lora_alpha", "target_modules"}:
        return False
    return (
        answer["r"] == config["r"]
        and _same_number(answer["lora_alpha"], config["lora_alpha"])
        and answer["target_modules"] == config["target_modules"]
    )


Check = Callable[..., bool]

CHECKS: dict[str, Check] = {
    "0.1": lambda a, backbone, targets: isinstance(a, int) and a == _lora_parameters(backbone, targets),
    "0.2": lambda a, backbone: isinstance(a, str) and backbone is not None and {a} == _bare_proj_extra(backbone),
    "1.1": lambda a, control: a == _least_gain(control),
    "2.1": lambda a, study: _check_config(a, study),
    "3.1": lambda a, pairs, tasks: a == _worst_in_pairs(pairs, tasks),
    "3.2": lambda a, per_layer, backbone: _same_number(a, _linear_error_last_fc2(per_layer, backbone)),
    "4.1": lambda a, triples: a == _worst_in_triples(triples),
    "4.2": lambda a, triples: _same_numbers(a, _all_beat_per_seed(triples), rel=0),
    "5.2": lambda a, survey: _same_numbers(a, _share_all_beat(survey)),
    "6.1": lambda a, weight_similarity: (
        tuple(a) == _alignment_extremes(weight_similarity) if isinstance(a, (tuple, list)) else False
    ),
    "7.1": lambda a, summary: _same_number(a, _merged_ratio(summary)),
}


def check_exercise(exercise: str, answer: Any, quiet: bool = False, **context: Any) -> bool:
    """Check a stored answer against the student's own run; print ✓ or ✗ (never the expected answer).

    ``context`` passes the chapter's objects the check recomputes the answer from (the call in each chapter's
    check cell lists them). ``None`` (the stub's value) counts as not answered yet.
    """
    if exercise not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise!r}; the exercises are {', '.join(EXERCISES)}")
    if exercise not in CHECKS:
        raise ValueError(f"exercise {exercise} is graded by hand, not checked; the instructors' page has its rubric")
    spec = EXERCISES[exercise]
    if answer is None:
        passed, message = False, f"✗ Exercise {exercise}: not answered yet: store {spec.answer} in {spec.variable}."
    else:
        try:
            passed = bool(CHECKS[exercise](answer, **context))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            passed = False
        message = (
            f"✓ Exercise {exercise}: correct."
            if passed
            else f"✗ Exercise {exercise}: not yet. {spec.variable} should hold {spec.answer}; look again."
        )
    if not quiet:
        print(message)
    _record(exercise, passed)
    return passed


def _record(exercise: str, passed: bool) -> None:
    path = os.environ.get(GRADE_RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"exercise": exercise, "passed": passed}) + "\n")
