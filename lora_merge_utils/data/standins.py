"""Offline stand-ins for the full profile: six small datasets with the real hub datasets' schema, and a shallow
224-px ViT in the Hugging Face Hub's cache layout.

They let the full profile's real loading code run without network (in tests, in CI, on a laptop):

    from lora_merge_utils.data.standins import build_standins
    env = build_standins("standins")        # {"LORA_BOOK_DATA_DIR": ..., "HF_HUB_CACHE": ..., ...}

Each dataset is a ``DatasetDict`` saved with ``save_to_disk``, holding every split the real repository has (SVHN's
``extra``, the seven corruption splits of EuroSAT, RESISC45 and GTSRB), ``image``/``label`` columns, the real
``ClassLabel`` names, and images of the real mode, size and format: MNIST grey 28 px PNG, SVHN 32 px RGB PNG, EuroSAT
64 px JPEG, RESISC45 256 px JPEG, GTSRB PNG of varying size with unequal classes, DTD JPEG of 300-640 px. Pixels are
noise tinted by class, so a model can learn a little, but results on them mean nothing: the smoke profile
(``SMOKE_OVERRIDES``) marks itself ``smoke`` and the chapters skip the checks that need real data.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..profiles import FULL, Profile
from .hub import datasets_progress
from .hub_sources import HUB_SOURCES


@dataclass(frozen=True)
class ImageStyle:
    """How a dataset's images look on disk: PIL mode, side length range, file format, and class balance."""

    mode: str
    sides: tuple[int, int]
    format: str
    square: bool = True
    unequal_classes: bool = False


IMAGE_STYLES: dict[str, ImageStyle] = {
    "mnist": ImageStyle("L", (28, 28), "PNG"),
    "svhn": ImageStyle("RGB", (32, 32), "PNG"),
    "eurosat": ImageStyle("RGB", (64, 64), "JPEG"),
    "resisc45": ImageStyle("RGB", (256, 256), "JPEG"),
    "gtsrb": ImageStyle("RGB", (25, 243), "PNG", square=False, unequal_classes=True),
    "dtd": ImageStyle("RGB", (300, 640), "JPEG", square=False),
}

SMOKE_OVERRIDES: dict = {
    "smoke": True,
    "backbone.overrides": {"depth": 2, "embed_dim": 48, "num_heads": 2},
    "data.train_size": 100,
    "data.val_size": 20,
    "data.test_size": 50,
    "train.head_max_iter": 100,
    "train.adapter_epochs": 1,
    "train.batch_size": 32,
    "train.eval_batch_size": 64,
    "budget.tuning_images": 10,
    "budget.tuning_pairs": 2,
    "budget.comparison_images": 30,
    "budget.curve_sizes": [2, 4, 6],  # the full profile skips both leader curves; the smoke proves their path
    "budget.rank_sweep_leaders": True,
    "budget.timing_rounds": 3,
}
"""The full profile shrunk to prove the code path on a CPU — a 2-block ViT of width 48 that keeps ViT-B's layer names
and 224-px input, about 100 training, 20 validation and 50 test images per task (at least 2, 1 and 1 per class),
one adapter epoch, budgets that make chapter 5 score samples of the validation and test splits, and three rounds of
chapter 7's timings (the smoke proves the code path; the tiny run's twenty rounds are what the book shows). Like the
full profile it skips AdaMerging's paper schedule, which the tiny run's chapters run; unlike it, it runs chapter 5's
K curve (on three sizes) and chapter 6's leaders at every rank, so that their code and their replay in the time plan
are proven where a GPU session would run them."""


def _image(style: ImageStyle, label: int, classes: int, rng: np.random.Generator) -> bytes:
    if style.square:
        width = height = int(rng.integers(style.sides[0], style.sides[1] + 1))
    else:
        width, height = (int(v) for v in rng.integers(style.sides[0], style.sides[1] + 1, size=2))
    hue = np.array([np.sin(label * 2.4), np.sin(label * 2.4 + 2.1), np.sin(label * 2.4 + 4.2)]) * 60 + 128
    # Smooth noise (drawn small, then upscaled) compresses like a photograph rather than like static.
    small = np.clip(hue + rng.normal(0, 40, size=(max(2, height // 8), max(2, width // 8), 3)), 0, 255)
    image = Image.fromarray(small.astype(np.uint8)).resize((width, height), Image.BILINEAR).convert(style.mode)
    buffer = io.BytesIO()
    image.save(buffer, format=style.format, **({"quality": 90} if style.format == "JPEG" else {}))
    return buffer.getvalue()


def _counts(style: ImageStyle, classes: int, per_class: int) -> list[int]:
    if not style.unequal_classes:
        return [per_class] * classes
    return [per_class + (label % 3) * max(1, per_class // 2) for label in range(classes)]


def build_dataset(task: str, directory: Path | str, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Save a stand-in of one full-profile task to ``directory`` (``save_to_disk``), every real split included."""
    import datasets

    source = HUB_SOURCES[task]
    style = IMAGE_STYLES[task]
    per_class = {"train": 12, "test": 5, **(per_class or {})}
    classes = len(source.class_names)
    features = datasets.Features(
        {
            source.image_column: datasets.Image(),
            source.label_column: datasets.ClassLabel(names=list(source.class_names)),
        }
    )
    rng = np.random.default_rng([seed, len(task)])
    splits = {}
    for split in list(source.files) + list(source.other_splits):
        counts = _counts(style, classes, per_class.get(split, 1))
        labels = [label for label, n in enumerate(counts) for _ in range(n)]
        images = [{"bytes": _image(style, label, classes, rng), "path": None} for label in labels]
        splits[split] = datasets.Dataset.from_dict(
            {source.image_column: images, source.label_column: labels}, features=features
        )
    directory = Path(directory)
    with datasets_progress(False):
        datasets.DatasetDict(splits).save_to_disk(str(directory))
    return directory


def build_backbone(
    hub_cache: Path | str, profile: Profile = FULL, overrides: dict | None = None, seed: int = 0
) -> Path:
    """Write random weights for the profile's timm model (with ``overrides``, e.g. a shallow depth) as
    ``model.safetensors`` in the Hugging Face Hub cache layout under ``hub_cache``, so that timm's own
    ``pretrained=True`` path loads it with ``HF_HUB_OFFLINE=1``. The checkpoint keeps timm's keys, the 21k head
    included, as the real file does."""
    import timm
    from safetensors.torch import save_file

    spec = profile.backbone
    config = timm.models.get_pretrained_cfg(spec.model_name).to_dict()
    repo = config["hf_hub_id"]
    torch.manual_seed(seed)
    model = timm.create_model(
        spec.model_name, pretrained=False, num_classes=config["num_classes"], **{**spec.overrides, **(overrides or {})}
    )
    commit = "0" * 40
    folder = Path(hub_cache) / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(
        json.dumps({"architecture": config["architecture"], "num_classes": config["num_classes"]})
    )
    return snapshot / "model.safetensors"


def build_standins(
    root: Path | str, tasks: list[str] | None = None, per_class: dict[str, int] | None = None, seed: int = 0
) -> dict[str, str]:
    """Build every stand-in under ``root`` (``root/data/<task>``, ``root/hub``) and return the environment that
    points the full profile at them: ``LORA_BOOK_DATA_DIR``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``,
    ``HF_DATASETS_OFFLINE`` and ``LORA_BOOK_OVERRIDES`` (the :data:`SMOKE_OVERRIDES`)."""
    root = Path(root)
    for task in tasks or FULL.tasks:
        if not (root / "data" / task / "dataset_dict.json").is_file():
            build_dataset(task, root / "data" / task, per_class, seed)
    model_file = build_backbone(root / "hub", FULL, SMOKE_OVERRIDES["backbone.overrides"], seed)
    return {
        "LORA_BOOK_DATA_DIR": str(root / "data"),
        "HF_HUB_CACHE": str(model_file.parents[3]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LORA_BOOK_OVERRIDES": json.dumps(SMOKE_OVERRIDES),
    }
