"""Helpers the tests import (fixtures stay in conftest.py, which pytest loads by itself and tests never import)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from lora_merge_utils import TINY
from lora_merge_utils.artifacts import save_adapter
from lora_merge_utils.backbone import backbone_identity


def make_random_adapter(
    backbone: nn.Module,
    directory: Path,
    seed: int,
    rank: int = 4,
    num_classes: int = 3,
    target_modules: str | None = None,
) -> Path:
    """Save an adapter with random (non-zero) A and B factors, as training would leave it, plus a head."""
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, init_lora_weights=False, target_modules=target_modules or TINY.lora.target_modules
    )
    model = get_peft_model(copy.deepcopy(backbone), config)
    head = nn.Linear(backbone.num_features, num_classes)
    return save_adapter(model, head, {"backbone": backbone_identity(backbone), "accuracy": 0.5}, directory)
