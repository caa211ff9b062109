"""The offline stand-ins have what the full profile's loaders meet on the real hub: split names, columns, class
names, image modes, sizes and formats; and the backbone stand-in loads through timm's own hub code path."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lora_merge_utils.data.standins import IMAGE_STYLES, build_backbone, build_dataset
from lora_merge_utils.data.tasks import CORRUPTIONS, HUB_SOURCES


def _images(split) -> list[Image.Image]:
    import datasets

    raw = split.cast_column("image", datasets.Image(decode=False))["image"]
    return [Image.open(io.BytesIO(row["bytes"])) for row in raw]


@pytest.mark.parametrize(
    ("task", "mode", "fmt"),
    [
        ("mnist", "L", "PNG"),
        ("svhn", "RGB", "PNG"),
        ("eurosat", "RGB", "JPEG"),
        ("resisc45", "RGB", "JPEG"),
        ("gtsrb", "RGB", "PNG"),
        ("dtd", "RGB", "JPEG"),
    ],
)
def test_each_stand_in_has_the_real_schema(tmp_path, task, mode, fmt):
    import datasets

    data = datasets.load_from_disk(str(build_dataset(task, tmp_path / task, per_class={"train": 2, "test": 1})))
    source = HUB_SOURCES[task]
    assert set(data) == {"train", "test", *source.other_splits}
    assert data["train"].features["label"].names == list(source.class_names)
    assert list(data["train"].features) == ["image", "label"]
    images = _images(data["train"])
    assert {image.mode for image in images} == {mode} and {image.format for image in images} == {fmt}
    low, high = IMAGE_STYLES[task].sides
    assert all(low <= side <= high for image in images for side in image.size)
    counts = np.bincount(data["train"]["label"], minlength=len(source.class_names))
    assert (counts.min() < counts.max()) == (task == "gtsrb"), "only GTSRB has unequal classes"


def test_stand_in_splits_follow_the_hub():
    assert HUB_SOURCES["svhn"].other_splits == ("extra",)
    assert all(HUB_SOURCES[t].other_splits == CORRUPTIONS for t in ("eurosat", "resisc45", "gtsrb"))
    assert HUB_SOURCES["dtd"].other_splits == () and len(HUB_SOURCES["dtd"].class_names) == 47
    assert [len(HUB_SOURCES[t].class_names) for t in ("mnist", "svhn", "eurosat", "resisc45", "gtsrb")] == [
        10,
        10,
        10,
        45,
        43,
    ]


def test_backbone_stand_in_loads_through_timms_hub_path_offline(tmp_path):
    """A fresh process, so that huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE at import as it does on Colab."""
    weights = build_backbone(tmp_path / "hub", overrides={"depth": 1, "embed_dim": 32, "num_heads": 2})
    assert weights.name == "model.safetensors" and "models--timm--vit_base_patch16_224.augreg_in21k" in str(weights)
    code = (
        "import lora_merge_utils as lmu, json; from lora_merge_utils.profiles import FULL, apply_overrides;"
        "m = lmu.create_backbone(apply_overrides(FULL, {'backbone.overrides': json.loads("
        '\'{"depth": 1, "embed_dim": 32, "num_heads": 2}\')}));'
        "print(len(m.blocks), m.num_features, [n for n, _ in m.named_modules()][-8:])"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("LORA_BOOK_")}
    env |= {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.startswith("1 32") and "blocks.0.mlp.fc2" in result.stdout
