import numpy as np
import pytest
import torch
from PIL import Image

from lora_merge_utils import FULL, TINY, load_task
from lora_merge_utils.tasks import TINY_BUILDERS, balanced_split


@pytest.mark.parametrize("name", TINY.tasks)
def test_tiny_task_splits(name):
    task = load_task(TINY, name)
    x, y = task.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert -1.01 <= float(x.min()) and float(x.max()) <= 1.01
    assert len(task.test) >= 300
    counts = np.bincount(task.test.tensors[1].numpy(), minlength=task.num_classes)
    assert counts.min() == counts.max(), "test split is class-balanced"
    assert task.train.tensors[1].max() < task.num_classes == len(task.class_names)


@pytest.mark.parametrize("name", TINY.tasks)
def test_tiny_task_builders_are_deterministic(name):
    small = TINY.replace(train_per_class=5, test_per_class=3, val_per_class=2)
    first = TINY_BUILDERS[name](small, 0)
    second = TINY_BUILDERS[name](small, 0)
    for split in ("train", "val", "test"):
        for a, b in zip(first[0][split], second[0][split]):
            np.testing.assert_array_equal(a, b)


def test_real_image_splits_do_not_overlap():
    idx = balanced_split(np.repeat(np.arange(3), 10), 2, 5, seed=0, val_per_class=2)
    assert not set(idx["train"]) & set(idx["test"]) and not set(idx["val"]) & (set(idx["train"]) | set(idx["test"]))
    assert len(idx["test"]) == 6 and len(idx["val"]) == 6 and len(idx["train"]) == 15


@pytest.mark.parametrize("name", ["digits", "textures"])
def test_validation_split_is_held_out_and_balanced(name):
    task = load_task(TINY, name)
    x_val, y_val = task.val.tensors
    counts = np.bincount(y_val.numpy(), minlength=task.num_classes)
    assert counts.min() == counts.max() == TINY.val_per_class
    train_rows = {row.numpy().tobytes() for row in task.train.tensors[0]}
    assert not any(row.numpy().tobytes() in train_rows for row in x_val), "no validation image is a training image"
    with pytest.raises(ValueError, match="Unknown split"):
        task.split("holdout")


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError, match="Valid tasks: digits, mnist"):
        load_task(TINY, "cifar")


def _save_stand_in(directory, columns=("image", "label"), n=20):
    import datasets

    rng = np.random.default_rng(0)
    features = datasets.Features({columns[0]: datasets.Image(),
                                  columns[1]: datasets.ClassLabel(names=["zero", "one"])})
    split = {columns[0]: [Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)) for _ in range(n)],
             columns[1]: [i % 2 for i in range(n)]}
    data = datasets.DatasetDict({s: datasets.Dataset.from_dict(split, features=features) for s in ("train", "test")})
    data.save_to_disk(str(directory))


def test_full_loader_reads_a_local_copy(tmp_path, monkeypatch):
    _save_stand_in(tmp_path / "mnist")
    monkeypatch.setenv("LORA_BOOK_DATA_DIR", str(tmp_path))
    task = load_task(FULL.replace(image_size=32), "mnist")
    assert task.class_names == ["zero", "one"]
    x, y = task.train[3]
    assert x.shape == (3, 32, 32)
    assert len(task.test) == 20
    assert len(task.val) > 0 and len(task.train) > 0
    assert len(task.val) + len(task.train) <= 20, "validation is carved out of the training split, disjoint"


def test_full_loader_reports_a_wrong_schema(tmp_path, monkeypatch):
    _save_stand_in(tmp_path / "svhn", columns=("img", "label"))
    monkeypatch.setenv("LORA_BOOK_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="no column 'image'"):
        load_task(FULL.replace(image_size=32), "svhn")


def test_full_loader_offline_without_copy_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_BOOK_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="save_to_disk"):
        load_task(FULL.replace(image_size=32), "dtd")
