"""Ways to serve K tasks with one backbone and K adapters, to compare their inference cost (chapter 7).

* ``switching``: one PEFT model holding the K adapters; for each task, activate its adapter and run a pass (K passes).
* ``merged``: one backbone with the K adapters merged in, K heads, one pass (:class:`MultiTaskModel`).
* ``separate``: K backbones, each with one adapter merged and unloaded; one pass each (K passes, K copies).
* ``base``: the frozen backbone and one head, one pass: the reference cost of a single task.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from .benchmarking import parameter_bytes, time_call
from .merging import merge_adapters
from .multitask import MultiTaskModel
from .workload import count


class AdapterSwitching(nn.Module):
    """Serve K tasks by switching the active LoRA adapter of one PEFT model: K forward passes."""

    def __init__(self, peft_model, heads: dict[str, nn.Module]):
        super().__init__()
        self.model = peft_model
        self.heads = nn.ModuleDict(heads)
        self.passes = len(heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for task, head in self.heads.items():
            self.model.set_adapter(task)
            out[task] = head(self.model(x))
        return out


class SeparateModels(nn.Module):
    """Serve K tasks with K plain backbones, each with its own adapter merged in: K forward passes."""

    def __init__(self, backbones: dict[str, nn.Module], heads: dict[str, nn.Module]):
        super().__init__()
        self.backbones = nn.ModuleDict(backbones)
        self.heads = nn.ModuleDict(heads)
        self.passes = len(backbones)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {task: self.heads[task](self.backbones[task](x)) for task in self.heads}


def build_strategies(backbone: nn.Module, peft_model, heads: dict[str, nn.Module],
                     tasks: Sequence[str]) -> dict[str, nn.Module]:
    """The four serving set-ups for ``tasks`` (the PEFT model must hold one adapter per task)."""
    tasks = list(tasks)
    chosen = {t: heads[t] for t in tasks}
    separate = {t: merge_adapters(peft_model, [t], weights=[1.0]) for t in tasks}
    return {
        "base": MultiTaskModel(backbone, {tasks[0]: heads[tasks[0]]}),
        "switching": AdapterSwitching(peft_model, chosen),
        "merged": MultiTaskModel(merge_adapters(peft_model, tasks), chosen),
        "separate": SeparateModels(separate, chosen),
    }


def inference_cost(strategies: dict[str, nn.Module], k: int, image_size: int, batch_sizes=(1, 64),
                   warmup: int = 3, repeats: int = 20, device: torch.device | None = None) -> pd.DataFrame:
    """Latency and throughput of each strategy for each batch size: median, p10 and p90 seconds per call,
    images per second (K task predictions per image), parameters and their memory."""
    device = device or torch.device("cpu")
    rows = []
    for name, module in strategies.items():
        module.to(device).eval()
        for batch in batch_sizes:
            x = torch.randn(batch, 3, image_size, image_size, device=device)
            timing = time_call(lambda m=module, x=x: m(x), warmup=warmup, repeats=repeats, device=device)
            count("timed", (warmup + repeats) * batch * getattr(module, "passes", 1))
            rows.append({
                "strategy": name, "tasks": 1 if name == "base" else k, "batch": batch,
                "median_ms": 1000 * timing["median"], "p10_ms": 1000 * timing["p10"], "p90_ms": 1000 * timing["p90"],
                "images_per_s": batch / timing["median"],
                "parameters": sum(p.numel() for p in module.parameters()),
                "memory_mb": parameter_bytes(module) / 2**20,
            })
    return pd.DataFrame(rows)
