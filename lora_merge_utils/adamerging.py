"""AdaMerging (Yang et al., ICLR 2024): learn how much of each adapter every layer takes, from unlabeled images.

Layer-wise AdaMerging writes the merged weight of each target layer ``l`` as ``W_l + sum_k lambda_{l,k} dW_{l,k}`` and
chooses the ``lambda`` (clamped to [0, 1]) by minimising the entropy of each task's head on unlabeled images of that
task, summed over tasks, with Adam; the heads stay frozen. Confident predictions are a proxy for accurate ones, and
no label is used. It follows the official code (``EnnengYang/AdaMerging``, ``src/main_layer_wise_adamerging.py``) on
LoRA updates; :data:`PAPER` and :data:`SHORT` are the two schedules the merge methods ``adamerging`` and
``adamerging_short`` use. The official code adapts on the unlabeled *test* images it is then scored on; this book
adapts on unlabeled training images (see :meth:`lora_merge_utils.study.Study.merge_inputs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from .batches import autocast, grad_scaler
from .instrumentation.workload import count
from .methods import ADAMERGING_PAPER, ADAMERGING_SHORT

PAPER = ADAMERGING_PAPER
"""The official schedule (:data:`lora_merge_utils.methods.ADAMERGING_PAPER`)."""
SHORT = ADAMERGING_SHORT
"""The short schedule (:data:`lora_merge_utils.methods.ADAMERGING_SHORT`)."""


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of the softmax of ``logits`` (``[N, classes]``)."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()


def adamerging(
    plain: nn.Module,
    factors: dict,
    unlabeled: dict[str, torch.Tensor],
    heads: dict[str, nn.Module],
    init: Sequence[float],
    steps: int = 10,
    lr: float = 0.02,
    batch_size: int = 16,
    seed: int = 0,
    amp: bool = True,
) -> nn.Module:
    """Merge the updates ``factors`` (``{layer: [(B'_k, A_k)]}``, tasks in the order of ``unlabeled``) into ``plain``
    (a copy of the frozen backbone, changed in place) with layer-wise coefficients learned on ``unlabeled`` images
    (``{task: [N, 3, H, W]}``, normalised) through the tasks' ``heads``, and return it.

    Each step draws ``batch_size`` images of every task and passes them through the merged backbone together (its
    weights are the same for every task: one pass instead of one per task), each task's features through its own
    head; the loss is the sum of the tasks' mean entropies.

    The learned coefficients are kept on the result as ``merged.lora_book_coefficients`` (``{layer: [K]}``). On a
    GPU the forward and backward passes run in mixed precision when ``amp`` (:func:`~lora_merge_utils.batches.autocast`,
    with a gradient scaler for float16); on a CPU in full precision.
    """
    if steps < 0 or lr <= 0 or batch_size < 1:
        raise ValueError(f"AdaMerging needs steps >= 0, lr > 0 and batch_size >= 1 (got {steps}, {lr}, {batch_size}).")
    adapters = list(unlabeled)
    deltas = {name: torch.stack([b @ a for b, a in pairs]) for name, pairs in factors.items()}
    plain.eval().requires_grad_(False)
    device = next(plain.parameters()).device
    base = {name: plain.get_submodule(name).weight.detach().clone() for name in deltas}
    coefficients = torch.nn.Parameter(torch.tensor([list(init)] * len(deltas), dtype=torch.float32, device=device))
    optimizer = torch.optim.Adam([coefficients], lr=lr)
    heads = {task: heads[task].to(device).eval().requires_grad_(False) for task in adapters}
    generator = torch.Generator().manual_seed(seed)
    scaler = grad_scaler(device, amp)

    def weights(lam: torch.Tensor) -> dict[str, torch.Tensor]:
        lam = lam.clamp(0.0, 1.0)
        return {
            f"{name}.weight": base[name] + torch.einsum("k,kij->ij", lam[i].to(delta.dtype), delta)
            for i, (name, delta) in enumerate(deltas.items())
        }

    for _ in range(steps):
        batches = []
        for task in adapters:
            images = unlabeled[task]
            batches.append(images[torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)])
            count("adapted", len(batches[-1]))
        with autocast(device, amp):
            features = functional_call(plain, weights(coefficients), (torch.cat(batches).to(device),))
            logits = [heads[task](part) for task, part in zip(adapters, features.split([len(b) for b in batches]))]
        loss = sum(entropy(task_logits.float()) for task_logits in logits)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    with torch.no_grad():
        final = weights(coefficients)
        for name in deltas:
            plain.get_submodule(name).weight.copy_(final[f"{name}.weight"])
    plain.lora_book_coefficients = {
        name: coefficients[i].detach().clamp(0, 1).cpu().tolist() for i, name in enumerate(deltas)
    }
    return plain
