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
from .batches import autocast, in_memory, iterate_batches, make_loader
from .profiles import LoraSettings, Profile, TrainSettings, get_device
from .workload import count


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


def _cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
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

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.seconds if self.seconds else float("nan")


def train_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    settings: TrainSettings | None = None,
    seed: int = 0,
    progress: bool | str = False,
) -> tuple[nn.Linear, TrainResult]:
    """Train a linear classifier on frozen features (the study's head-finetuning baseline).

    Features are cached, so many epochs cost seconds. Returns the head (on CPU) and its loss curve per epoch.
    """
    settings = settings or TrainSettings()
    if len(features) != len(labels):
        raise ValueError(f"features ({len(features)}) and labels ({len(labels)}) differ in length.")
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], num_classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.head_lr, weight_decay=settings.head_weight_decay)
    batch = settings.batch_size * 4
    steps_per_epoch = -(-len(labels) // batch)
    total = settings.head_epochs * steps_per_epoch
    schedule = _cosine_with_warmup(optimizer, total, warmup_steps=steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult()
    start = time.perf_counter()
    desc = progress if isinstance(progress, str) else "head"
    for _ in tqdm(range(settings.head_epochs), desc=desc, disable=not progress, leave=False):
        running = 0.0
        # Index the cached feature tensor directly: a DataLoader would fetch and collate row by row.
        order = torch.randperm(len(labels), generator=generator)
        for step in range(steps_per_epoch):
            idx = order[step * batch:(step + 1) * batch]
            x, y = features[idx], labels[idx]
            loss = nn.functional.cross_entropy(head(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item() * len(y)
            result.images_seen += len(y)
        result.loss_curve.append(running / len(labels))
    result.seconds = time.perf_counter() - start
    return head.eval(), result


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
    loader = make_loader(train_set, settings.batch_size, shuffle=True, seed=seed,
                         num_workers=profile.num_workers if lazy else 0)
    total = settings.adapter_epochs * len(loader)
    schedule = _cosine_with_warmup(optimizer, total, warmup_steps=max(1, len(loader) // 4))
    use_amp = profile.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
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
