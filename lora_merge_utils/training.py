"""Seeded training loops: the head-only baseline (on cached backbone features) and one LoRA adapter + head per task."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from torch.utils.data import Dataset

from ._progress import tqdm
from .batches import autocast, grad_scaler, in_memory, iterate_batches, make_loader
from .instrumentation.workload import count
from .profiles import LoraSettings, Profile, TrainSettings, get_device


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | None = None,
    amp: bool = True,
    progress: bool | str = False,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen backbone over a dataset: ``(features float32 [N, D] on CPU, labels [N])``."""
    device = device or next(backbone.parameters()).device
    backbone.eval()
    feats, labels = [], []
    desc = progress if isinstance(progress, str) else "features"
    batches = iterate_batches(dataset, batch_size, device, num_workers)
    for x, y in tqdm(batches, desc=desc, disable=not progress, leave=False, total=-(-len(dataset) // batch_size)):
        with autocast(device, amp):
            feats.append(backbone(x).float().cpu())
        labels.append(torch.as_tensor(y))
        count("evaluated", len(y))
    return torch.cat(feats), torch.cat(labels)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then cosine decay to zero at ``total_steps``."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, warmup_steps))
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class TrainResult:
    """What a training loop returns besides the trained modules."""

    loss_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images_seen: int = 0
    l2: float | None = None
    """The head's L2 penalty, when chosen on validation features."""

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds else float("nan")

    def downsampled_curve(self, points: int = 50) -> tuple[list[float], int]:
        """The loss curve averaged down to about ``points`` points (rounded to 5 decimals), and the number of steps
        each point covers."""
        steps = max(1, len(self.loss_curve) // points)
        curve = self.loss_curve
        return [
            round(sum(curve[i : i + steps]) / len(curve[i : i + steps]), 5) for i in range(0, len(curve), steps)
        ], steps

    def record(self, points: int | None = None) -> dict:
        """The training fields of a saved ``metrics.json``: time, loss curve and, when chosen, the L2 penalty.

        ``points=None`` keeps every step of the curve (a head's fit: a few dozen L-BFGS steps); an adapter's curve
        of thousands of steps is averaged down to about ``points`` points, with the steps each covers and the
        training throughput."""
        fields: dict = {"train_seconds": round(self.seconds, 2)}
        if points is None:
            fields["loss_curve"] = [round(v, 5) for v in self.loss_curve]
        else:
            fields["train_images_per_second"] = round(self.images_per_second, 1)
            fields["loss_curve"], fields["loss_curve_step"] = self.downsampled_curve(points)
        if self.l2 is not None:
            fields["l2"] = self.l2
        return fields


def _fit_logistic(
    z: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    l2: float,
    max_iter: int,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple:
    """Multinomial logistic regression on standardised features by full-batch L-BFGS (to convergence), float64:
    minimises mean cross-entropy + ``l2 / 2 * ||W||^2``, from zero or from ``start`` (a neighbouring penalty's
    solution). Returns ``(W, b, final loss)``."""
    if start is None:
        start = (
            torch.zeros(num_classes, z.shape[1], dtype=torch.float64),
            torch.zeros(num_classes, dtype=torch.float64),
        )
    weight, bias = (p.clone().requires_grad_(True) for p in start)
    # A gradient of 1e-7 in the mean loss is far below what moves a prediction (sklearn stops at 1e-4).
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
    )

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(z @ weight.T + bias, y) + 0.5 * l2 * (weight**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        final = nn.functional.cross_entropy(z @ weight.T + bias, y) + 0.5 * l2 * (weight**2).sum()
    return weight.detach(), bias.detach(), float(final)


def train_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    settings: TrainSettings | None = None,
    seed: int = 0,
    progress: bool | str = False,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[nn.Linear, TrainResult]:
    """Train a linear classifier on frozen features: the head-only baseline (frozen backbone + linear head).

    A multinomial logistic regression, fitted to convergence by L-BFGS on standardised features (the
    standardisation is folded into the returned ``nn.Linear``), with its L2 penalty chosen on ``val`` from
    ``settings.head_l2`` (the first value when no validation features are given). Features are cached, so this
    takes seconds; the result is deterministic (``seed`` is accepted for symmetry with :func:`train_adapter`).
    Returns the head (on CPU, eval mode) and a :class:`TrainResult` whose ``loss_curve`` holds the final training
    loss of each L2 value tried (strongest first).
    """
    settings = settings or TrainSettings()
    if len(features) != len(labels):
        raise ValueError(f"features ({len(features)}) and labels ({len(labels)}) differ in length.")
    if not settings.head_l2 or min(settings.head_l2) < 0:
        raise ValueError(f"settings.head_l2 must list non-negative penalties, got {settings.head_l2}.")
    start = time.perf_counter()
    x = features.clone().double()  # clones: features from inference mode cannot take part in autograd
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z, y = (x - mean) / std, labels.clone().long()
    # From the strongest penalty down, each fit starting from the previous one (a regularisation path): the strong
    # penalties converge in a few steps and hand the weak ones a good start, several times faster than from zero.
    candidates = sorted(settings.head_l2, reverse=True) if val is not None else settings.head_l2[:1]
    result = TrainResult()
    best, previous = None, None
    for l2 in tqdm(
        candidates, desc=progress if isinstance(progress, str) else "head", disable=not progress, leave=False
    ):
        weight, bias, loss = _fit_logistic(z, y, num_classes, l2, settings.head_max_iter, previous)
        previous = (weight, bias)
        result.loss_curve.append(loss)
        score = 0.0
        if val is not None:
            zv = (val[0].double() - mean) / std
            score = float(((zv @ weight.T + bias).argmax(1) == val[1]).double().mean())
        if best is None or score > best[0]:
            best = (score, l2, weight, bias)
    _, result.l2, weight, bias = best
    head = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        folded = weight / std
        head.weight.copy_(folded.float())
        head.bias.copy_((bias - folded @ mean).float())
    result.images_seen = len(labels) * len(candidates)
    result.seconds = time.perf_counter() - start
    return head.eval().requires_grad_(False), result


def lora_config(settings: LoraSettings) -> LoraConfig:
    """The PEFT configuration of every adapter: LoRA on each block's attention and MLP linear layers."""
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
    )


def add_lora(backbone: nn.Module, settings: LoraSettings, seed: int = 0) -> PeftModel:
    """Wrap a *copy* of the backbone with a fresh LoRA adapter (the backbone passed in is never modified)."""
    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(backbone), lora_config(settings))
    return model


def train_adapter(
    backbone: nn.Module,
    train_set: Dataset,
    num_classes: int,
    profile: Profile,
    seed: int = 0,
    init_head: nn.Linear | None = None,
    device: torch.device | None = None,
    progress: bool | str = True,
) -> tuple[PeftModel, nn.Linear, TrainResult]:
    """Train one LoRA adapter and its own linear head on a task; the backbone's weights stay frozen.

    Args:
        backbone: The frozen backbone (not modified: the adapter is added to a copy).
        train_set: Torch dataset of ``(image_tensor, label)``.
        num_classes: Classes of the task.
        profile: Supplies the LoRA and optimisation settings and whether to use AMP.
        seed: Seeds the adapter's initialisation and the data order.
        init_head: Start the head from this one (e.g. the head-only baseline's, a linear-probe-then-finetune start).
        device: Where to train (default: CUDA if available).
        progress: Show a tqdm bar (a string sets its label).

    Returns:
        ``(peft_model, head, result)``: the PEFT-wrapped copy of the backbone (adapter named ``"default"``), the head
        (both on CPU, eval mode) and the per-step loss curve.
    """
    device = device or get_device()
    settings = profile.train
    model = add_lora(backbone, profile.lora, seed=seed).to(device)
    torch.manual_seed(seed)
    head = copy.deepcopy(init_head) if init_head is not None else nn.Linear(backbone.num_features, num_classes)
    head = head.to(device).requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=settings.adapter_lr, weight_decay=settings.adapter_weight_decay)
    # Images already decoded into memory need no worker processes; lazily decoded ones are decoded by the workers.
    lazy = not in_memory(train_set)
    loader = make_loader(
        train_set, settings.batch_size, shuffle=True, seed=seed, num_workers=profile.num_workers if lazy else 0
    )
    total = settings.adapter_epochs * len(loader)
    schedule = cosine_with_warmup(optimizer, total, warmup_steps=max(1, len(loader) // 4))
    use_amp = profile.amp and device.type == "cuda"
    scaler = grad_scaler(device, use_amp)
    result = TrainResult()
    model.train()
    start = time.perf_counter()
    desc = progress if isinstance(progress, str) else "adapter"
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    for _ in range(settings.adapter_epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, use_amp):
                loss = nn.functional.cross_entropy(head(model(x)).float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            result.loss_curve.append(loss.item())
            result.images_seen += len(y)
            count("trained", len(y))
            if lazy:
                count("decoded", len(y))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    result.seconds = time.perf_counter() - start
    model.eval()
    return model.cpu(), head.cpu().eval().requires_grad_(False), result


def train_joint_adapter(
    backbone: nn.Module,
    train_sets: dict[str, Dataset],
    num_classes: dict[str, int],
    profile: Profile,
    seed: int = 0,
    init_heads: dict[str, nn.Linear] | None = None,
    device: torch.device | None = None,
    progress: bool | str = True,
) -> tuple[PeftModel, dict[str, nn.Linear], TrainResult]:
    """Train one LoRA adapter shared by every task, each task with its own linear head: the upper bound of what one
    adapter can hold, to set merged adapters against.

    Each step takes one batch of every task and follows the mean of their cross-entropies (standard multi-task
    training with task-balanced batches; each task's part is backpropagated as it is computed, so a step holds one
    batch's activations). An epoch has as many steps as the largest task has batches; a smaller task starts over
    when it runs out (:func:`lora_merge_utils.course.plan.joint_images_per_epoch` counts the images). Optimiser,
    learning rate, schedule and epochs are the single adapters' (from the profile). Taking one task per step instead, at
    the single adapters' learning rate, diverges on the tiny profile's six tasks.

    Returns:
        ``(peft_model, heads, result)``: the PEFT-wrapped copy of the backbone (adapter named ``"default"``), the heads
        by task (on CPU, eval mode) and the per-step loss curve (mean over tasks).
    """
    if not train_sets:
        raise ValueError("train_joint_adapter needs at least one task's training set.")
    device = device or get_device()
    settings = profile.train
    model = add_lora(backbone, profile.lora, seed=seed).to(device)
    torch.manual_seed(seed)
    heads = {
        task: (
            copy.deepcopy(init_heads[task])
            if init_heads and task in init_heads
            else nn.Linear(backbone.num_features, num_classes[task])
        )
        .to(device)
        .requires_grad_(True)
        for task in train_sets
    }
    params = [p for p in model.parameters() if p.requires_grad] + [p for h in heads.values() for p in h.parameters()]
    optimizer = torch.optim.AdamW(params, lr=settings.adapter_lr, weight_decay=settings.adapter_weight_decay)
    loaders = {
        task: make_loader(data, settings.batch_size, shuffle=True, seed=seed + i, num_workers=0)
        for i, (task, data) in enumerate(train_sets.items())
    }
    steps = max(len(loader) for loader in loaders.values())
    total = settings.adapter_epochs * steps
    schedule = cosine_with_warmup(optimizer, total, warmup_steps=max(1, steps // 4))
    use_amp = profile.amp and device.type == "cuda"
    scaler = grad_scaler(device, use_amp)
    result = TrainResult()
    model.train()
    start = time.perf_counter()
    bar = tqdm(
        total=total, desc=progress if isinstance(progress, str) else "joint adapter", disable=not progress, leave=False
    )
    for _ in range(settings.adapter_epochs):
        batches = {task: iter(loader) for task, loader in loaders.items()}
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            total_loss = 0.0
            for task in loaders:
                try:
                    x, y = next(batches[task])
                except StopIteration:  # a smaller task starts over
                    batches[task] = iter(loaders[task])
                    x, y = next(batches[task])
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast(device, use_amp):
                    loss = nn.functional.cross_entropy(heads[task](model(x)).float(), y) / len(loaders)
                scaler.scale(loss).backward()
                total_loss += loss.item()
                result.images_seen += len(y)
                count("trained", len(y))
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            result.loss_curve.append(total_loss)
            bar.update(1)
    bar.close()
    result.seconds = time.perf_counter() - start
    model.eval()
    return model.cpu(), {t: h.cpu().eval().requires_grad_(False) for t, h in heads.items()}, result
