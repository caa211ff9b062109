"""Accuracy of heads, adapters and merges, and the tidy tables of the study (one row per merge x method x task)."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from peft import PeftModel
from torch import nn
from torch.utils.data import Dataset

from ._progress import tqdm
from .batches import autocast, iterate_batches
from .merging import get_merge_method, merge_adapters
from .multitask import MultiTaskModel
from .workload import count

DECIMALS = 6


@torch.inference_mode()
def predict(model: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, batch_size: int = 256,
            device: torch.device | None = None, amp: bool = True, num_workers: int = 0) -> tuple[torch.Tensor, ...]:
    """``(predicted labels, true labels)`` of ``model`` (images -> logits) over a dataset."""
    device = device or torch.device("cpu")
    preds, labels = [], []
    for x, y in iterate_batches(dataset, batch_size, device, num_workers):
        with autocast(device, amp):
            preds.append(model(x).argmax(-1).cpu())
        labels.append(torch.as_tensor(y))
        count("evaluated", len(y))
    return torch.cat(preds), torch.cat(labels)


def accuracy(model: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, **kwargs) -> float:
    """Top-1 accuracy of ``model`` (images -> logits) on a dataset."""
    preds, labels = predict(model, dataset, **kwargs)
    return float((preds == labels).float().mean())


@torch.inference_mode()
def head_accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of a linear head on cached features."""
    return float((head(features).argmax(-1) == labels).float().mean())


def evaluate_multitask(model: MultiTaskModel, test_sets: dict[str, Dataset], **kwargs) -> dict[str, float]:
    """Score each task of a multi-task model on its own test set with its own head."""
    results = {}
    for task, dataset in test_sets.items():
        results[task] = accuracy(lambda x, t=task: model(x, tasks=[t])[t], dataset, **kwargs)
    return results


def adapter_accuracy(model: PeftModel, head: nn.Module, adapter: str, dataset: Dataset, **kwargs) -> float:
    """Accuracy of one adapter of a multi-adapter ``PeftModel`` with its head (the un-merged reference)."""
    model.set_adapter(adapter)
    return accuracy(lambda x: head(model(x)), dataset, **kwargs)


def weights_label(weights: Sequence[float] | None) -> str:
    """How a weight vector is written in the tables: ``"equal"`` or e.g. ``"0.7+0.3"``."""
    if weights is None:
        return "equal"
    return "+".join(f"{w:g}" for w in weights)


@dataclass(frozen=True)
class MergeSpec:
    """A merge method with its hyperparameters, under a label for tables: ``MergeSpec("ties d=0.5", "ties",
    {"density": 0.5})``. A plain method name stands for ``MergeSpec(name, name, {})``."""

    label: str
    method: str
    params: dict = field(default_factory=dict)

    @classmethod
    def of(cls, spec: MergeSpec | str) -> MergeSpec:
        return spec if isinstance(spec, MergeSpec) else cls(spec, spec, {})

    @property
    def params_label(self) -> str:
        return json.dumps(self.params, sort_keys=True)


def merge_combinations(tasks: Sequence[str], sizes: Sequence[int] = (2, 3)) -> list[tuple[str, ...]]:
    """All merges of ``size`` adapters among ``tasks`` (15 pairs and 20 triples for six tasks), in a fixed order."""
    return [combo for size in sizes for combo in itertools.combinations(tasks, size)]


def code_version() -> str:
    """A hash of the code that turns adapters into merge scores (merging, the multi-task model, batching and
    scoring): cached scores are valid only for the code that computed them, so editing ``merging.py`` recomputes."""
    import inspect
    import sys

    from . import batches, merging, multitask

    digest = hashlib.sha256()
    for module in (merging, multitask, batches, sys.modules[__name__]):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


class ScoreStore:
    """Merge scores on disk, one small JSON file per (members, method, hyperparameters), valid for one ``context``
    (the split, the adapters' contents and :func:`code_version`). Requests that overlap share their merges: chapter 4
    reuses chapter 3's pairs, chapters 5 and 6 reuse both."""

    def __init__(self, directory: Path | str, context: str):
        self.directory = Path(directory)
        self.context = context

    def _path(self, combo: Sequence[str], spec: MergeSpec) -> Path:
        request = json.dumps([self.context, list(combo), spec.method, spec.params_label])
        return self.directory / f"{hashlib.sha256(request.encode()).hexdigest()[:20]}.json"

    def get(self, combo: Sequence[str], spec: MergeSpec) -> dict[str, float] | None:
        path = self._path(combo, spec)
        if not path.is_file():
            return None
        try:
            return {task: float(value) for task, value in json.loads(path.read_text())["scores"].items()}
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: computed again and rewritten

    def put(self, combo: Sequence[str], spec: MergeSpec, scores: dict[str, float]) -> None:
        from .artifacts import write_json

        write_json(self._path(combo, spec), {"members": list(combo), "method": spec.method,
                                              "params": spec.params_label, "scores": scores})


def evaluate_merges(
    model: PeftModel | None,
    heads: dict[str, nn.Module],
    test_sets: dict[str, Dataset],
    singles: pd.DataFrame,
    methods: Sequence[str | MergeSpec] = ("task_arithmetic", "linear"),
    sizes: Sequence[int] = (2, 3),
    combos: Sequence[Sequence[str]] | None = None,
    device: torch.device | None = None,
    batch_size: int = 256,
    amp: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    scores: ScoreStore | None = None,
) -> pd.DataFrame:
    """Merge every combination with every method and score each member task with its own head.

    Args:
        model: ``PeftModel`` holding one adapter per task (named by task); may be ``None`` when ``scores`` holds
            every merge asked for.
        heads: The adapters' heads by task.
        test_sets: The split to score on, per task (the test split, or the validation split when tuning). Decode
            them once into memory (:func:`lora_merge_utils.batches.decode_all`) to score many merges fast.
        singles: The singles table on the same split (``task``, ``head_accuracy``, ``adapter_accuracy``).
        methods: Merge method names (see :data:`lora_merge_utils.merging.MERGE_METHODS`) or :class:`MergeSpec`
            objects carrying hyperparameters, e.g. ``MergeSpec("ties d=0.5", "ties", {"density": 0.5})``.
        sizes: Numbers of adapters per merge; ignored when ``combos`` is given.
        combos: The merges to evaluate, as tuples of task names (default: every combination of ``sizes``).
        scores: Where to look up merges scored before and to save new ones.

    Returns:
        One row per merge x method x member task with ``members, size, method, params, weights, task, accuracy,
        adapter_accuracy, head_accuracy, normalized_accuracy, beats_head``.
    """
    specs = [MergeSpec.of(m) for m in methods]
    for spec in specs:
        get_merge_method(spec.method)
    device = device or torch.device("cpu")
    combos = [tuple(c) for c in combos] if combos is not None else merge_combinations(list(heads), sizes)
    reference = singles.set_index("task")
    rows = []
    jobs = [(combo, spec) for combo in combos for spec in specs]
    for combo, spec in tqdm(jobs, desc="merges", disable=not progress):
        result = scores.get(combo, spec) if scores is not None else None
        if result is None:
            if model is None:
                raise ValueError("evaluate_merges needs the PeftModel for merges that are not in `scores`.")
            merged = merge_adapters(model, combo, method=spec.method, **spec.params).to(device)
            multitask = MultiTaskModel(merged, {t: heads[t] for t in combo}).to(device).eval()
            result = evaluate_multitask(multitask, {t: test_sets[t] for t in combo}, device=device,
                                        batch_size=batch_size, amp=amp, num_workers=num_workers)
            if scores is not None:
                scores.put(combo, spec, result)
        for task in combo:
            single = reference.loc[task]
            rows.append({
                "members": "+".join(combo),
                "size": len(combo),
                "method": spec.label,
                "params": spec.params_label,
                "weights": weights_label(spec.params.get("weights")) if "scale" not in spec.params
                else f"{spec.params['scale']:g} each",
                "task": task,
                "accuracy": round(result[task], DECIMALS),
                "adapter_accuracy": single["adapter_accuracy"],
                "head_accuracy": single["head_accuracy"],
                "normalized_accuracy": round(result[task] / single["adapter_accuracy"], DECIMALS),
                "beats_head": bool(result[task] > single["head_accuracy"]),
            })
    return pd.DataFrame(rows)


def summarize_merges(merges: pd.DataFrame) -> pd.DataFrame:
    """Per method and merge size: mean and worst normalized accuracy, and how often a merge beats the head baseline."""
    grouped = merges.groupby(["method", "size"], sort=False)
    summary = grouped.agg(
        mean_normalized=("normalized_accuracy", "mean"),
        worst_normalized=("normalized_accuracy", "min"),
        mean_accuracy=("accuracy", "mean"),
        beats_head=("beats_head", "mean"),
        rows=("task", "size"),
    ).reset_index()
    return summary.round(4)


def pairwise_matrix(merges: pd.DataFrame, method: str, tasks: Sequence[str]) -> pd.DataFrame:
    """Task x partner matrix of normalized accuracy in pair merges: row = task scored, column = the other adapter."""
    pairs = merges[(merges["size"] == 2) & (merges["method"] == method)]
    matrix = pd.DataFrame(float("nan"), index=list(tasks), columns=list(tasks))
    for _, row in pairs.iterrows():
        members = row["members"].split("+")
        partner = members[1] if members[0] == row["task"] else members[0]
        matrix.loc[row["task"], partner] = row["normalized_accuracy"]
    return matrix
