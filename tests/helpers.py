"""Helpers the tests import (fixtures stay in conftest.py, which pytest loads by itself and tests never import)."""

from __future__ import annotations

import copy
import importlib.util
import types
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from torch import nn

from lora_merge_utils import TINY
from lora_merge_utils.artifacts import save_adapter
from lora_merge_utils.backbone import backbone_identity
from lora_merge_utils.profiles import Profile, apply_overrides

ROOT = Path(__file__).resolve().parent.parent
"""The repository's root."""
NOTEBOOKS_DIR = ROOT / "notebooks"
"""The folder of the chapters (and of their student copies, in ``student/``)."""
CHAPTERS = sorted(NOTEBOOKS_DIR.glob("[0-9]*.ipynb"))
"""The chapter notebooks' paths, in the book's order."""
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
"""The book's ``_config.yml``, parsed."""

MINI_OVERRIDES: dict = {
    "tasks": ["digits", "shapes", "gratings"],
    "related_tasks": ["digits_parity", "shapes_family", "gratings_frequency"],  # a coarsening and a conflicting kind
    "data": {"train_per_class": 12, "val_per_class": 10, "test_per_class": 8},
    "train": {"head_l2": [1e-3, 1e-1], "adapter_epochs": 1, "batch_size": 32, "eval_batch_size": 128},
    "seeds": 2,
}
"""The tiny profile shrunk for tests (three tasks and relabellings of their images of both kinds, few images, one short
epoch, two training seeds), as ``$LORA_BOOK_OVERRIDES`` would give it: in-process studies and ``python -m
lora_merge_utils run`` subprocesses use the same one, so every test can compare with the one study the session builds
(``shared_study``)."""
MINI_METHODS = ("task_arithmetic", "linear", "tsv")
"""The methods of the shared study's grid: the exact sum, PEFT's factor-wise one, and one that decomposes (SVD), whose
bytes the kill/resume and scale-out tests pin too."""


def load_script(name: str) -> types.ModuleType:
    """The tool behind ``scripts/<name>.py``: the module ``book_tools.<name>``, imported by name (each script is a
    thin wrapper around it)."""
    return importlib.import_module(f"book_tools.{name}")


def needs_chromium(test):
    """Skip ``test`` without Chromium and playwright (``scripts/check_rendered_pages.py`` decides, and says why)."""
    check = load_script("check_rendered_pages")
    return pytest.mark.skipif(not check.chromium_available(), reason=check.SKIP_MESSAGE)(test)


def mini_profile() -> Profile:
    return apply_overrides(TINY, MINI_OVERRIDES)


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
