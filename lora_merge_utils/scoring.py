"""Scoring models: predictions, which test images each model gets right, accuracy; and heads refitted on a
merged backbone's features."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from peft import PeftModel
from torch import nn
from torch.utils.data import Dataset

from .batches import autocast, iterate_batches
from .instrumentation.workload import count


@torch.inference_mode()
def predict(
    model: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    batch_size: int = 256,
    device: torch.device | None = None,
    amp: bool = True,
    num_workers: int = 0,
) -> tuple[torch.Tensor, ...]:
    """``(predicted labels, true labels)`` of ``model`` (images -> logits) over a dataset."""
    device = device or torch.device("cpu")
    preds, labels = [], []
    for x, y in iterate_batches(dataset, batch_size, device, num_workers):
        with autocast(device, amp):
            preds.append(model(x).argmax(-1).cpu())
        labels.append(torch.as_tensor(y))
        count("evaluated", len(y))
    return torch.cat(preds), torch.cat(labels)


def correctness(model: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, **kwargs) -> np.ndarray:
    """Which images of ``dataset`` the model classifies right (bool ``[N]``, in dataset order)."""
    preds, labels = predict(model, dataset, **kwargs)
    return (preds == labels).numpy()


def accuracy(model: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, **kwargs) -> float:
    """Top-1 accuracy of ``model`` (images -> logits) on a dataset."""
    return float(correctness(model, dataset, **kwargs).mean())


@torch.inference_mode()
def head_correctness(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Which cached feature rows a linear head classifies right."""
    return (head(features).argmax(-1) == labels).numpy()


def head_accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of a linear head on cached features."""
    return float(head_correctness(head, features, labels).mean())


def multitask_correctness(model, test_sets: dict[str, Dataset], **kwargs) -> dict[str, np.ndarray]:
    """For each task of a :class:`~lora_merge_utils.MultiTaskModel`, which of its test images it gets right with
    its own head."""
    return {
        task: correctness(lambda x, t=task: model(x, tasks=[t])[t], dataset, **kwargs)
        for task, dataset in test_sets.items()
    }


def evaluate_multitask(model, test_sets: dict[str, Dataset], **kwargs) -> dict[str, float]:
    """Score each task of a multi-task model on its own test set with its own head."""
    return {task: float(c.mean()) for task, c in multitask_correctness(model, test_sets, **kwargs).items()}


def adapter_accuracy(model: PeftModel, head: nn.Module, adapter: str, dataset: Dataset, **kwargs) -> float:
    """Accuracy of one adapter of a multi-adapter ``PeftModel`` with its head (the un-merged reference)."""
    return float(adapter_correctness(model, head, adapter, dataset, **kwargs).mean())


def adapter_correctness(model: PeftModel, head: nn.Module, adapter: str, dataset: Dataset, **kwargs) -> np.ndarray:
    """Which images one adapter of a multi-adapter ``PeftModel`` gets right with its head."""
    model.set_adapter(adapter)
    return correctness(lambda x: head(model(x)), dataset, **kwargs)


def refit_heads(
    backbone: nn.Module,
    train_sets: dict[str, Dataset],
    num_classes: dict[str, int],
    settings,
    device: torch.device,
    batch_size: int = 256,
    amp: bool = True,
    l2: dict[str, float] | None = None,
) -> dict[str, nn.Linear]:
    """A new linear head per task, fitted like the head-only baseline on the features of ``backbone`` (a merged one)
    of each task's labelled ``train_sets``: the merge moved the features, the heads follow. Each fit uses the L2
    penalty ``l2[task]`` (the one validation chose for that task's baseline head; the fit works on standardised
    features, so it carries over), else the first of ``settings.head_l2``. Costs one pass over those images and one
    logistic regression per task; adds no parameter."""
    from dataclasses import replace

    from .training import extract_features, train_head

    heads = {}
    for task, dataset in train_sets.items():
        x, y = extract_features(backbone, dataset, batch_size, device, amp)
        task_settings = replace(settings, head_l2=(l2[task],)) if l2 and task in l2 else settings
        head, _ = train_head(x, y, num_classes[task], task_settings)
        heads[task] = head.to(device)
    return heads
