"""Ways to serve K tasks on every image with one backbone and K adapters, and their inference cost (chapter 7).

* ``frozen + K heads``: the frozen backbone and the K head-only baselines: one plain pass, no adapter at all (the
  strongest cheap alternative to merging, at head-only accuracy);
* ``merged``: one backbone with the K adapters merged in, K heads: one plain pass
  (:class:`~lora_merge_utils.multitask.MultiTaskModel`);
* ``mixed batch``: one PEFT model holding the K adapters, each image repeated K times in one batch, each copy routed
  through its task's adapter (PEFT's ``adapter_names=``): one pass over K times the images, LoRA branches included;
* ``switching``: the same PEFT model, activating each task's adapter in turn: K passes;
* ``separate``: K backbones, each with one adapter merged in: K plain passes, K copies of the weights.

:func:`~lora_merge_utils.instrumentation.benchmarking.interleaved_timings` times them in random order, round after
round, so that drifts of a shared machine hit every strategy alike; :func:`timing_summary` gives medians with bootstrap
intervals, and ratios against a reference with paired intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .instrumentation.benchmarking import interleaved_timings, parameter_bytes
from .merging import merge_adapters
from .multitask import MultiTaskModel


class _UnmergedAdapters(nn.Module):
    """One PEFT model holding the K adapters, and the K heads."""

    def __init__(self, peft_model, heads: dict[str, nn.Module]):
        super().__init__()
        self.model = peft_model
        self.heads = nn.ModuleDict(heads)
        self.passes = len(heads)


class AdapterSwitching(_UnmergedAdapters):
    """Serve K tasks by switching the active LoRA adapter of one PEFT model: K forward passes."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per task, ``{task: [N, classes]}``, for the batch ``x``, served the way this class describes."""
        out = {}
        for task, head in self.heads.items():
            self.model.set_adapter(task)
            out[task] = head(self.model(x))
        return out


class MixedBatch(_UnmergedAdapters):
    """Serve K tasks with PEFT's mixed-adapter batches: the batch repeated K times, copy k routed through adapter k
    (``adapter_names=``), one forward pass over K times the images."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per task, ``{task: [N, classes]}``, for the batch ``x``, served the way this class describes."""
        tasks = list(self.heads)
        names = [task for task in tasks for _ in range(len(x))]
        features = self.model(x.repeat(len(tasks), 1, 1, 1), adapter_names=names)
        return {task: self.heads[task](chunk) for task, chunk in zip(tasks, features.split(len(x)))}


class SeparateModels(nn.Module):
    """Serve K tasks with K plain backbones, each with its own adapter merged in: K forward passes."""

    def __init__(self, backbones: dict[str, nn.Module], heads: dict[str, nn.Module]):
        super().__init__()
        self.backbones = nn.ModuleDict(backbones)
        self.heads = nn.ModuleDict(heads)
        self.passes = len(backbones)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per task, ``{task: [N, classes]}``, for the batch ``x``, served the way this class describes."""
        return {task: self.heads[task](self.backbones[task](x)) for task in self.heads}


STRATEGIES = ("frozen + K heads", "merged", "mixed batch", "switching", "separate")
"""The ways chapter 7 serves K tasks, in the order its tables list them."""


def build_strategies(
    backbone: nn.Module,
    peft_model,
    heads: dict[str, nn.Module],
    tasks: Sequence[str],
    baseline_heads: dict[str, nn.Module],
) -> dict[str, nn.Module]:
    """The serving set-ups of :data:`STRATEGIES` for ``tasks`` (the PEFT model must hold one adapter per task;
    ``baseline_heads`` are the head-only baselines)."""
    tasks = list(tasks)
    chosen = {t: heads[t] for t in tasks}
    separate = {t: merge_adapters(peft_model, [t], weights=[1.0]) for t in tasks}
    return {
        "frozen + K heads": MultiTaskModel(backbone, {t: baseline_heads[t] for t in tasks}),
        "merged": MultiTaskModel(merge_adapters(peft_model, tasks), chosen),
        "mixed batch": MixedBatch(peft_model, chosen),
        "switching": AdapterSwitching(peft_model, chosen),
        "separate": SeparateModels(separate, chosen),
    }


def inference_cost(
    strategies: dict[str, nn.Module],
    k: int,
    image_size: int,
    batch_sizes=(1, 64),
    warmup: int = 3,
    rounds: int = 20,
    device: torch.device | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Every strategy timed on the same random batch, interleaved (see
    :func:`~lora_merge_utils.instrumentation.benchmarking.interleaved_timings`), for each batch size: one row per
    (strategy, batch, round) with ``seconds``, plus ``K``, ``parameters`` and ``memory_mb``."""
    device = device or torch.device("cpu")
    tables = []
    for batch in batch_sizes:
        x = torch.randn(batch, 3, image_size, image_size, device=device, generator=None)
        calls = {}
        for name, module in strategies.items():
            module.to(device).eval()
            calls[name] = (lambda m=module, x=x: m(x), getattr(module, "passes", 1) * batch)
        timings = interleaved_timings(calls, rounds=rounds, warmup=warmup, device=device, seed=seed)
        tables.append(timings.assign(batch=batch))
    table = pd.concat(tables, ignore_index=True).assign(K=k)
    sizes = {
        name: (sum(p.numel() for p in m.parameters()), parameter_bytes(m) / 2**20) for name, m in strategies.items()
    }
    table["parameters"] = table["strategy"].map(lambda s: sizes[s][0])
    table["memory_mb"] = table["strategy"].map(lambda s: sizes[s][1])
    return table


def timing_summary(
    timings: pd.DataFrame, reference: str, replicates: int = 2000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """Per (K, batch, strategy): median milliseconds with a bootstrap interval over rounds, images per second, and
    the median ratio ``strategy / reference`` with a paired interval (rounds resampled together)."""
    rng = np.random.default_rng(seed)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    records = []
    for (k, batch), group in timings.groupby(["K", "batch"], sort=False):
        wide = group.pivot(index="round", columns="strategy", values="seconds")
        draws = rng.integers(0, len(wide), size=(replicates, len(wide)))
        for strategy in wide.columns:
            seconds = wide[strategy].to_numpy()
            medians = np.median(seconds[draws], axis=1)
            ratio = wide[strategy].to_numpy() / wide[reference].to_numpy()
            ratios = np.median(ratio[draws], axis=1)
            records.append(
                {
                    "K": k,
                    "batch": batch,
                    "strategy": strategy,
                    "median_ms": 1000 * float(np.median(seconds)),
                    "low_ms": 1000 * float(np.percentile(medians, q[0])),
                    "high_ms": 1000 * float(np.percentile(medians, q[1])),
                    "images_per_s": batch / float(np.median(seconds)),
                    f"vs {reference}": float(np.median(ratio)),
                    "ratio_low": float(np.percentile(ratios, q[0])),
                    "ratio_high": float(np.percentile(ratios, q[1])),
                }
            )
    return pd.DataFrame(records)
