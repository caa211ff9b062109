"""The README's recipes for adding a merge method and a task, followed step by step (the chapter recipe is followed by
``tests/test_chapters.py``): what the recipe says to write is enough for the library and the command line to use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lora_merge_utils import combine, load_adapters, merge_adapters
from lora_merge_utils.cli import build_parser
from lora_merge_utils.merging import merged_delta
from lora_merge_utils.methods import MERGE_METHODS, MergeMethod


def test_a_merge_method_added_as_the_readme_says_merges_through_the_library_and_the_command_line(
    backbone, random_adapters, monkeypatch
):
    def halved_sum(factors, weights):  # step 1: the arithmetic, a function of combine
        return {layer: 0.5 * update for layer, update in combine.task_arithmetic(factors, weights).items()}

    monkeypatch.setattr(combine, "halved_sum", halved_sum, raising=False)
    method = MergeMethod("halved_sum", "half the weighted sum of the updates", combine="halved_sum")
    monkeypatch.setitem(MERGE_METHODS, "halved_sum", method)  # step 2: one MergeMethod

    model, _ = load_adapters(backbone, random_adapters)
    names = list(random_adapters)
    half = merged_delta(backbone, merge_adapters(model, names, method="halved_sum"))
    whole = merged_delta(backbone, merge_adapters(model, names, method="task_arithmetic"))
    assert half.keys() == whole.keys() and all(torch.allclose(half[k], 0.5 * whole[k], atol=1e-6) for k in whole)
    args = build_parser().parse_args(["merge", "a", "b", "--method", "halved_sum"])
    assert args.method == "halved_sum"
    with pytest.raises(ValueError, match="takes no density"):
        merge_adapters(model, names, method="halved_sum", density=0.5)  # knobs it did not declare are refused


def test_a_task_added_as_the_readme_says_loads_through_a_profile(tmp_path, monkeypatch):
    from lora_merge_utils import TINY
    from lora_merge_utils.data import generated
    from lora_merge_utils.data.tasks import check_profile_tasks, load_task
    from lora_merge_utils.profiles import apply_overrides

    def make_stripes(per_class, rng, split="train"):  # step 1: images, labels and class names
        names = ["horizontal", "vertical"]
        images, labels = [], []
        for label in range(len(names)):
            for _ in range(per_class):
                image = rng.integers(0, 64, size=(32, 32, 3), dtype=np.uint8)
                (image[::4] if label == 0 else image[:, ::4])[...] = 255
                images.append(image)
                labels.append(label)
        return np.stack(images), np.asarray(labels), names

    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path))  # the built arrays' cache
    monkeypatch.setitem(generated.TINY_BUILDERS, "stripes", generated._generated(make_stripes, "stripes, drawn"))
    sizes = {"train_per_class": 6, "val_per_class": 4, "test_per_class": 5}
    profile = apply_overrides(TINY, {"tasks": ["digits", "stripes"], "related_tasks": [], "data": sizes})  # step 3
    task = load_task(profile, "stripes")
    assert task.class_names == ["horizontal", "vertical"]
    image, label = task.train[0]
    assert tuple(image.shape) == (3, TINY.image_size, TINY.image_size) and label in (0, 1)
    assert len(task.train) == 12 and len(task.val) == 8 and len(task.test) >= 10
    check_profile_tasks(profile)  # what a study checks before any work: the new task passes
    with pytest.raises(ValueError, match="'stripes2', which the 'tiny' profile cannot build"):
        check_profile_tasks(apply_overrides(TINY, {"tasks": ["digits", "stripes2"], "related_tasks": []}))
