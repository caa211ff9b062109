"""A multi-task model: one (merged) backbone, one linear head per task, one forward pass for all tasks."""

from __future__ import annotations

import copy

import torch
from torch import nn


class MultiTaskModel(nn.Module):
    """One backbone shared by K tasks, each with its own head.

    ``model(x)`` runs the backbone once and returns ``{task: logits}`` for every head (or only the ``tasks`` asked
    for). The heads are copies, so the caller's heads are never changed.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lora_merge_utils import create_backbone
        >>> model = MultiTaskModel(create_backbone("tiny"), {"digits": nn.Linear(96, 10), "shapes": nn.Linear(96, 6)})
        >>> {task: tuple(logits.shape) for task, logits in model(torch.zeros(4, 3, 32, 32)).items()}
        {'digits': (4, 10), 'shapes': (4, 6)}
    """

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module]):
        super().__init__()
        if not heads:
            raise ValueError("A MultiTaskModel needs at least one head.")
        width = getattr(backbone, "num_features", None)
        for name, head in heads.items():
            # The first linear layer of a head (itself, or inside a small MLP) fixes the width it reads.
            first = next((m for m in head.modules() if isinstance(m, nn.Linear)), None)
            if width is not None and first is not None and first.in_features != width:
                raise ValueError(
                    f"Head {name!r} expects {first.in_features} features but the backbone gives {width}: "
                    "it was trained on another backbone."
                )
        self.backbone = backbone
        self.heads = nn.ModuleDict({name: _copy(head) for name, head in heads.items()})

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: torch.Tensor, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Logits per task, ``{task: [N, classes]}``, from one pass of the backbone over ``x`` (``tasks``: a subset of
        the heads; ``None`` for all)."""
        if tasks is not None and not tasks:
            raise ValueError(f"tasks=[] asks for no task: pass None for every head, or name some of {self.tasks}.")
        names = self.tasks if tasks is None else list(tasks)
        unknown = [name for name in names if name not in self.heads]
        if unknown:
            raise ValueError(f"No head for task(s) {unknown}; this model has heads for {self.tasks}.")
        features = self.backbone(x)
        return {name: self.heads[name](features) for name in names}


def _copy(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)
