"""The study's tables: every merge of a grid scored (one row per merge x method x scored task x seed), cached merge
scores, and summaries. Scoring a single model lives in :mod:`lora_merge_utils.scoring`."""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from torch import nn
from torch.utils.data import Dataset

from . import adamerging, batches, combine, merging, methods, multitask, scoring, training
from ._progress import tqdm
from .artifacts import write_json
from .integrity import key_for, seal_holds, sealed
from .merging import merge_adapters
from .methods import DEFAULT_METHODS, MergeSpec, get_merge_method
from .multitask import MultiTaskModel
from .scoring import multitask_correctness, refit_heads
from .stats import pack, unpack

DECIMALS = 6


def weights_label(weights: Sequence[float] | None) -> str:
    """How a weight vector is written in the tables: ``"equal"`` or e.g. ``"0.7+0.3"``."""
    if weights is None:
        return "equal"
    return "+".join(f"{w:g}" for w in weights)


def merge_combinations(tasks: Sequence[str], sizes: Sequence[int] = (2, 3)) -> list[tuple[str, ...]]:
    """All merges of ``size`` adapters among ``tasks`` (15 pairs and 20 triples for six tasks), in a fixed order."""
    return [combo for size in sizes for combo in itertools.combinations(tasks, size)]


def source_version(*modules: ModuleType, start: bytes = b"") -> str:
    """A short hash of the source of ``modules`` (after ``start``, the version of code they build on): what a result
    computed by them is valid for."""
    digest = hashlib.sha256(start)
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


def code_version() -> str:
    """A hash of the code that turns adapters into merge scores (merging and its methods, the multi-task model,
    batching and scoring; :func:`source_version`): cached scores are valid only for the code that computed them, so
    editing ``merging.py`` recomputes."""
    return source_version(merging, methods, combine, adamerging, multitask, batches, scoring, training, _THIS)


_THIS = sys.modules[__name__]


class ScoreStore:
    """Merge results on disk, one small JSON file per (members, method, hyperparameters, heads), valid for one
    ``context`` (the split, the adapters' contents and :func:`code_version`). Each holds the accuracy and which test
    images were right, per task. Requests that overlap share their merges: chapter 4 reuses chapter 3's pairs,
    chapters 5 and 6 reuse both."""

    def __init__(self, directory: Path | str, context: str, key: bytes | None = None):
        self.directory = Path(directory)
        self.context = context
        self.key = key_for(self.directory, key)
        """The artifacts folder's seal key (:mod:`~lora_merge_utils.integrity`): an entry whose seal does not hold is
        scored again."""

    def _request(self, combo: Sequence[str], spec: MergeSpec) -> str:
        return json.dumps([self.context, list(combo), spec.key])

    def _path(self, combo: Sequence[str], spec: MergeSpec) -> Path:
        return self.directory / f"{hashlib.sha256(self._request(combo, spec).encode()).hexdigest()[:20]}.json"

    def get(self, combo: Sequence[str], spec: MergeSpec, sizes: dict[str, int] | None = None) -> dict[str, str] | None:
        """``{task: packed correctness}`` of a merge scored before, or ``None`` (then it is scored again and the entry
        rewritten) when there is none or the entry fails its checks: its seal (an entry edited, or filed under
        another request), and per task a
        hex string of exactly the bytes its recorded number of images needs, with no bit set past the last image, and
        that number the one in ``sizes`` (the images the caller scores) when given."""
        path, expected = self._path(combo, spec), sizes
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
            correct, sizes = entry["correct"], entry["num_images"]
            if entry.get("request") != self._request(combo, spec) or not seal_holds(entry, self.key):
                return None
            result = {task: str(correct[task]) for task in combo}
            for task, bits in result.items():
                n = int(sizes[task])
                if expected is not None and n != int(expected[task]):
                    return None
                raw = bytes.fromhex(bits)
                if len(raw) != (n + 7) // 8 or (n % 8 and raw[-1] & (0xFF >> (n % 8))):
                    return None
            return result
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable, edited or written by an older version: computed again and rewritten

    def put(self, combo: Sequence[str], spec: MergeSpec, correct: dict[str, str], sizes: dict[str, int]) -> None:
        """Save a merge's ``{task: packed correctness}`` of ``sizes[task]`` images each, sealed with the folder's
        key."""
        sizes = {task: int(sizes[task]) for task in correct}
        write_json(
            self._path(combo, spec),
            sealed(
                {
                    "members": list(combo),
                    "method": spec.method,
                    "params": spec.params_label,
                    "refit_heads": spec.refit_heads,
                    "correct": correct,
                    "num_images": sizes,
                    "request": self._request(combo, spec),
                },
                self.key,
            ),
        )


@dataclass(frozen=True)
class _SingleAdapter:
    """The request a :class:`ScoreStore` files one adapter's own result under (in the place of a merge's
    :class:`~lora_merge_utils.methods.MergeSpec`)."""

    method: str = "single adapter"
    params_label: str = "{}"
    refit_heads: bool = False

    @property
    def key(self) -> str:
        return json.dumps([self.method])


SINGLE_ADAPTER = _SingleAdapter()
"""Files a task's own adapter's correctness in a :class:`ScoreStore` (``store.get((task,), SINGLE_ADAPTER)``)."""


@dataclass
class MergeInputs:
    """What some merge specs need besides the adapters and the images they are scored on."""

    unlabeled: dict[str, torch.Tensor] | None = None
    """Per task, unlabeled training images (normalised, ``[N, 3, H, W]``), for AdaMerging."""
    refit_sets: dict[str, Dataset] | None = None
    """Per task, labelled training images for refitting heads on a merged backbone."""
    refit_l2: dict[str, float] | None = None
    """Per task, the L2 penalty of the refitted head (the baseline head's, chosen on validation data)."""
    num_classes: dict[str, int] | None = None
    settings: object | None = None
    """The :class:`~lora_merge_utils.profiles.TrainSettings` of the head fits."""


def _score_merge(
    model: PeftModel,
    heads: dict[str, nn.Module],
    combo: tuple[str, ...],
    spec: MergeSpec,
    test_sets: dict[str, Dataset],
    inputs: MergeInputs,
    device,
    batch_size,
    amp,
    num_workers,
) -> dict[str, str]:
    method = get_merge_method(spec.method)
    extra = {}
    if method.data != "none":
        if inputs.unlabeled is None:
            raise ValueError(f"Method {spec.method!r} needs {method.data}; pass them in MergeInputs.")
        extra = {
            "unlabeled": {t: inputs.unlabeled[t] for t in combo},
            "heads": {t: heads[t] for t in combo},
            "amp": amp,
        }
    merged = merge_adapters(model, combo, method=spec.method, **spec.params, **extra).to(device)
    chosen = {t: heads[t] for t in combo}
    if spec.refit_heads:
        if inputs.refit_sets is None:
            raise ValueError("refit_heads=True needs labelled training images (MergeInputs.refit_sets).")
        chosen = refit_heads(
            merged,
            {t: inputs.refit_sets[t] for t in combo},
            inputs.num_classes,
            inputs.settings,
            device,
            batch_size,
            amp,
            l2=inputs.refit_l2,
        )
    multitask = MultiTaskModel(merged, chosen).to(device).eval()
    correct = multitask_correctness(
        multitask,
        {t: test_sets[t] for t in combo},
        device=device,
        batch_size=batch_size,
        amp=amp,
        num_workers=num_workers,
    )
    return {task: pack(c) for task, c in correct.items()}


def merge_row(
    members: Sequence[str],
    method: str,
    params: str,
    weights: str,
    task: str,
    seed: int,
    single: pd.Series,
    right: np.ndarray,
) -> dict:
    """One row of a merges table: a member ``task`` of the merge ``members`` scored with ``right`` (one boolean per
    test image) against its ``single`` row (adapter and head-only accuracy, classes, packed correctness)."""
    acc, chance = float(right.mean()), 1.0 / single["num_classes"]
    return {
        "members": "+".join(members),
        "size": len(members),
        "method": method,
        "params": params,
        "weights": weights,
        "task": task,
        "seed": seed,
        "accuracy": round(acc, DECIMALS),
        "adapter_accuracy": single["adapter_accuracy"],
        "head_accuracy": single["head_accuracy"],
        "normalized_accuracy": round(_share(acc, single["adapter_accuracy"], 0.0), DECIMALS),
        "chance_normalized": round(_share(acc, single["adapter_accuracy"], chance), DECIMALS),
        "beats_head": bool(acc > single["head_accuracy"]),
        "num_images": len(right),
        "num_classes": int(single["num_classes"]),
        "correct": pack(right),
        "adapter_correct": single["adapter_correct"],
        "head_correct": single["head_correct"],
    }


def evaluate_merges(
    model: PeftModel | None,
    heads: dict[str, nn.Module],
    test_sets: dict[str, Dataset],
    singles: pd.DataFrame,
    methods: Sequence[str | MergeSpec] = DEFAULT_METHODS,
    sizes: Sequence[int] = (2, 3),
    combos: Sequence[Sequence[str]] | None = None,
    device: torch.device | None = None,
    batch_size: int = 256,
    amp: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    scores: ScoreStore | None = None,
    inputs: MergeInputs | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Merge every combination with every method and score each member task with its own head.

    Args:
        model: ``PeftModel`` holding one adapter per task (named by task); may be ``None`` when ``scores`` holds
            every merge asked for.
        heads: The adapters' heads by task.
        test_sets: The split to score on, per task (the test split, or the validation split when tuning). Decode
            them once into memory (:func:`lora_merge_utils.batches.decode_all`) to score many merges fast.
        singles: The singles table on the same images and seed (``task``, ``head_accuracy``,
            ``adapter_accuracy``, and the packed ``head_correct`` / ``adapter_correct``).
        methods: Merge method names (see :data:`lora_merge_utils.methods.MERGE_METHODS`) or
            :class:`~lora_merge_utils.methods.MergeSpec` objects carrying hyperparameters, e.g.
            ``MergeSpec("ties d=0.5", "ties", {"density": 0.5})``.
        sizes: Numbers of adapters per merge; ignored when ``combos`` is given.
        combos: The merges to evaluate, as tuples of task names (default: every combination of ``sizes``).
        scores: Where to look up merges scored before and to save new ones.
        inputs: Unlabeled or labelled images for the methods that need them (AdaMerging, refitted heads).
        seed: The adapters' training seed index, written in the ``seed`` column.

    Returns:
        One row per merge x method x member task with ``members, size, method, params, weights, task, seed,
        accuracy, adapter_accuracy, head_accuracy, normalized_accuracy, chance_normalized, beats_head, num_images,
        num_classes`` and the packed ``correct``, ``adapter_correct``, ``head_correct`` (for intervals).
    """
    specs = [MergeSpec.of(m) for m in methods]
    device = device or torch.device("cpu")
    combos = [tuple(c) for c in combos] if combos is not None else merge_combinations(list(heads), sizes)
    for spec in specs:  # every request checked before the first merge: a typo should not surface an hour in
        for size in sorted({len(c) for c in combos}):
            spec.check(size)
    reference = singles.set_index("task")
    for task, dataset in test_sets.items():
        if task in reference.index and len(dataset) != int(reference.loc[task, "num_images"]):
            raise ValueError(
                f"The singles table scored {int(reference.loc[task, 'num_images'])} {task!r} images but the merges "
                f"would be scored on {len(dataset)}: compute the singles table on the same split and images."
            )
    inputs = inputs or MergeInputs()
    rows = []
    jobs = [(combo, spec) for combo in combos for spec in specs]
    for combo, spec in tqdm(jobs, desc="merges", disable=not progress):
        result = scores.get(combo, spec, {t: int(reference.loc[t, "num_images"]) for t in combo}) if scores else None
        if result is None:
            if model is None:
                raise ValueError("evaluate_merges needs the PeftModel for merges that are not in `scores`.")
            result = _score_merge(model, heads, combo, spec, test_sets, inputs, device, batch_size, amp, num_workers)
            if scores is not None:
                scores.put(combo, spec, result, {task: len(test_sets[task]) for task in combo})
        scale = spec.params.get("scale")
        weights = weights_label(spec.params.get("weights")) if scale is None else f"{scale:g} each"
        for task in combo:
            single = reference.loc[task]
            right = unpack(result[task], int(single["num_images"]))
            rows.append(merge_row(combo, spec.label, spec.params_label, weights, task, seed, single, right))
    return pd.DataFrame(rows)


def _share(accuracy: float, adapter_accuracy: float, floor: float) -> float:
    """``(accuracy - floor) / (adapter_accuracy - floor)``, or NaN where the adapter is not above ``floor`` (at chance
    it has nothing to keep: the share is undefined, not infinite)."""
    room = float(adapter_accuracy) - floor
    return (float(accuracy) - floor) / room if room > 1e-9 else float("nan")


BITS = ("correct", "adapter_correct", "head_correct")
"""Columns holding packed per-image correctness: kept in memory for intervals, left out of saved CSV tables."""


def summarize_merges(merges: pd.DataFrame) -> pd.DataFrame:
    """Per method and merge size: mean and worst normalized accuracy (plain and chance-corrected), and how often a
    merge beats the head-only baseline (frozen backbone + head). Intervals: :mod:`lora_merge_utils.stats`. A row
    whose share is undefined (its adapter at chance) makes its group's mean and worst NaN: never averaged away."""
    grouped = merges.groupby(["method", "size"], sort=False)
    summary = grouped.agg(
        mean_normalized=("normalized_accuracy", lambda v: v.mean(skipna=False)),
        worst_normalized=("normalized_accuracy", lambda v: v.min(skipna=False)),
        mean_chance_normalized=("chance_normalized", lambda v: v.mean(skipna=False)),
        mean_accuracy=("accuracy", "mean"),
        mean_head_accuracy=("head_accuracy", "mean"),
        beats_head=("beats_head", "mean"),
        rows=("task", "size"),
    ).reset_index()
    return summary.round(4)


def pairwise_matrix(
    merges: pd.DataFrame, method: str, tasks: Sequence[str], value: str = "normalized_accuracy"
) -> pd.DataFrame:
    """Task x partner matrix of a value (mean over seeds) in pair merges: row = task scored, column = the other
    adapter."""
    pairs = merges[(merges["size"] == 2) & (merges["method"] == method)]
    means = pairs.groupby(["members", "task"], sort=False)[value].mean()
    matrix = pd.DataFrame(float("nan"), index=list(tasks), columns=list(tasks))
    for (members, task), v in means.items():
        a, b = members.split("+")
        matrix.loc[task, b if a == task else a] = v
    return matrix


def without_bits(table: pd.DataFrame) -> pd.DataFrame:
    """The table without its packed-correctness columns (for CSV files and display)."""
    return table.drop(columns=[c for c in BITS if c in table.columns])


def reference_rows(merges: pd.DataFrame, label: str, source: str) -> pd.DataFrame:
    """Rows that put a reference in a method's place, for the same (merge, task, seed) cells: ``source`` =
    ``"head_correct"`` for the floor (frozen backbone + K heads: every task keeps its head-only accuracy, one pass,
    no interference) or ``"adapter_correct"`` for the ceiling (each task routed through its own adapter)."""
    first = merges[merges["method"] == merges["method"].iloc[0]].copy()
    first["method"] = label
    first["params"] = "{}"
    first["correct"] = first[source]
    first["accuracy"] = first["head_accuracy" if source == "head_correct" else "adapter_accuracy"]
    chance = 1.0 / first["num_classes"]
    for column, floor in (("normalized_accuracy", 0.0), ("chance_normalized", chance)):
        room = (first["adapter_accuracy"] - floor).where(lambda r: r > 1e-9)  # NaN at chance: undefined, as above
        first[column] = ((first["accuracy"] - floor) / room).round(DECIMALS)
    first["beats_head"] = first["accuracy"] > first["head_accuracy"]
    return first
