"""Reading a practitioner's own data (lora_merge_utils.own_adapters.data): both layouts give the same decoded tensors,
and every fault in them is reported with the task, the place and the fix, before any image is decoded."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from lora_merge_utils.own_adapters.data import SPLITS, OwnTask, read_task, read_tasks

CLASSES = ("cat", "ant", "bee")
"""Written in this order, so that reading them sorted is checked."""
SORTED = sorted(CLASSES)
COLOURS = {"ant": (200, 40, 40), "bee": (40, 200, 40), "cat": (40, 40, 200)}
WIDTH, HEIGHT = 20, 24
SIZE = 16
PER_CLASS = 4
GREY = ("train", "ant", 1)
RGBA = ("train", "bee", 2)
FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=SORTED)})


def picture(split: str, name: str, i: int) -> Image.Image:
    """A distinct noisy colour per class; one greyscale and one RGBA picture among them."""
    rng = np.random.default_rng([SPLITS.index(split), SORTED.index(name), i])
    noise = rng.integers(-40, 41, (HEIGHT, WIDTH, 3))
    image = Image.fromarray(np.clip(np.array(COLOURS[name]) + noise, 0, 255).astype(np.uint8))
    if (split, name, i) == GREY:
        return image.convert("L")
    if (split, name, i) == RGBA:
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)))
    return image


def write_folder(root: Path, ext: str = "png") -> Path:
    for split in SPLITS:
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(PER_CLASS):
                image = picture(split, name, i)
                image = image.convert("RGB") if ext == "jpg" and image.mode == "RGBA" else image
                image.save(root / split / name / f"{i:02d}.{ext}")
    return root


def folder_rows(folder: Path, split: str) -> tuple[list[dict], list[int]]:
    """A split of an image folder as save_to_disk rows (the files' own bytes), in sorted file order."""
    images, labels = [], []
    for label, name in enumerate(SORTED):
        for path in sorted((folder / split / name).iterdir()):
            images.append({"bytes": path.read_bytes(), "path": None})
            labels.append(label)
    return images, labels


def save(root: Path, splits: dict[str, dict], features: datasets.Features | None = FEATURES) -> Path:
    datasets.DatasetDict(
        {key: datasets.Dataset.from_dict(columns, features=features) for key, columns in splits.items()}
    ).save_to_disk(str(root))
    return root


def saved_from(folder: Path, root: Path, keys: dict[str, str] | None = None) -> Path:
    """The image folder's images written with DatasetDict.save_to_disk (``keys``: split -> name in the dict)."""
    keys = keys or {split: split for split in SPLITS}
    splits = {}
    for split, key in keys.items():
        images, labels = folder_rows(folder, split)
        splits[key] = {"image": images, "label": labels}
    return save(root, splits)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "folder")


@pytest.fixture
def saved(folder: Path, tmp_path: Path) -> Path:
    return saved_from(folder, tmp_path / "saved")


def expected_pixels(path: Path) -> torch.Tensor:
    image = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def test_image_folder_gives_uint8_rgb_images_sorted_classes_and_labels(folder):
    task = read_task("pets", folder, SIZE)
    assert isinstance(task, OwnTask) and task.name == "pets" and task.source == "image folder"
    assert task.class_names == SORTED and task.num_classes == 3
    assert "pets" in repr(task) and "train=12" in repr(task)
    for split in SPLITS:
        assert task.images[split].shape == (3 * PER_CLASS, 3, SIZE, SIZE) and task.images[split].dtype == torch.uint8
        assert task.labels[split].dtype == torch.int64
        assert task.labels[split].tolist() == [0] * PER_CLASS + [1] * PER_CLASS + [2] * PER_CLASS
    # Each image is its file, resized with Pillow's bilinear filter; the class colours land on the sorted classes.
    first_bee = task.images["val"][PER_CLASS]
    assert torch.equal(first_bee, expected_pixels(folder / "val" / "bee" / "00.png"))
    means = task.images["test"].float().mean(dim=(2, 3))
    assert means[:PER_CLASS, 0].min() > 150 and means[-PER_CLASS:, 2].min() > 150, "ant red, cat blue"


def test_greyscale_and_rgba_images_become_three_channels(folder):
    task = read_task("pets", folder, SIZE)
    grey = task.images["train"][GREY[2]]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    rgba = task.images["train"][PER_CLASS + RGBA[2]]
    assert torch.equal(rgba, expected_pixels(folder / "train" / "bee" / "02.png")), "alpha dropped"


def test_jpg_images_and_subfolders_are_read(tmp_path):
    root = write_folder(tmp_path / "jpg", ext="jpg")
    (root / "test" / "ant" / "more").mkdir()
    picture("test", "ant", 0).save(root / "test" / "ant" / "more" / "extra.png")
    (root / "test" / "ant" / "notes.txt").write_text("not an image: skipped")
    task = read_task("pets", root, SIZE)
    assert task.images["train"].shape == (12, 3, SIZE, SIZE)
    assert task.labels["test"].tolist() == [0] * 5 + [1] * 4 + [2] * 4


def test_exif_orientation_and_16_bit_grey_are_honoured(folder):
    left_red = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    left_red[:, : WIDTH // 2, 0] = 255
    left_red[:, WIDTH // 2 :, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated by 180 degrees: the red half shows on the right
    Image.fromarray(left_red).save(folder / "val" / "ant" / "00.png", exif=exif)
    Image.fromarray(np.full((HEIGHT, WIDTH), 65535, dtype=np.uint16)).save(folder / "val" / "ant" / "01.png")
    task = read_task("pets", folder, SIZE)
    rotated = task.images["val"][0]
    assert rotated[0, :, -1].min() == 255 and rotated[2, :, 0].min() == 255
    assert task.images["val"][1].min() == 255, "16-bit white stays white"


def test_both_layouts_give_identical_tensors(folder, saved):
    from_folder = read_task("pets", folder, SIZE)
    from_disk = read_task("pets", saved, SIZE, progress=True)
    assert from_disk.source == "save_to_disk" and from_disk.class_names == from_folder.class_names
    for split in SPLITS:
        assert torch.equal(from_disk.images[split], from_folder.images[split]), split
        assert torch.equal(from_disk.labels[split], from_folder.labels[split]), split


def test_validation_is_accepted_for_val_in_both_layouts(folder, tmp_path):
    saved = saved_from(folder, tmp_path / "saved", {"train": "train", "val": "validation", "test": "test"})
    (folder / "val").rename(folder / "validation")
    for root in (folder, saved):
        assert read_task("pets", root, SIZE).labels["val"].tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_fallback_columns_by_name_and_numbered_classes(folder, tmp_path):
    splits = {}
    for split in SPLITS:
        images, labels = folder_rows(folder, split)
        splits[split] = {"img": [row["bytes"] for row in images], "labels": labels, "note": ["x"] * len(labels)}
    features = datasets.Features(
        {"img": datasets.Value("binary"), "labels": datasets.Value("int64"), "note": datasets.Value("string")}
    )
    task = read_task("pets", save(tmp_path / "saved", splits, features), SIZE)
    assert task.class_names == ["0", "1", "2"]
    assert torch.equal(task.images["test"], read_task("pets", folder, SIZE).images["test"])


def test_dataset_normalises_with_the_given_statistics(folder):
    task = read_task("pets", folder, SIZE)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    dataset = task.dataset("val", mean, std)
    x, y = dataset.tensors
    assert x.dtype == torch.float32 and x.shape == (12, 3, SIZE, SIZE) and torch.equal(y, task.labels["val"])
    raw = task.images["val"].double() / 255
    expected = (raw - torch.tensor(mean).double().view(1, 3, 1, 1)) / torch.tensor(std).double().view(1, 3, 1, 1)
    torch.testing.assert_close(x.double(), expected, rtol=0, atol=1e-5)
    assert task.images["val"].dtype == torch.uint8, "the stored images are left as they are"
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        task.dataset("valid", mean, std)
    with pytest.raises(ValueError, match="std must be positive"):
        task.dataset("val", mean, (0.2, 0.0, 0.2))


def test_max_images_keeps_the_first_images_round_robin_over_classes(folder):
    full = read_task("pets", folder, SIZE)
    few = read_task("pets", folder, SIZE, max_images=5)
    for split in SPLITS:
        assert few.labels[split].tolist() == [0, 0, 1, 1, 2]
        assert torch.equal(few.images[split], full.images[split][[0, 1, 4, 5, 8]])
    assert len(read_task("pets", folder, SIZE, max_images=100).labels["train"]) == 12


def test_max_images_follows_dataset_order_in_save_to_disk(folder, tmp_path):
    images, labels = folder_rows(folder, "train")
    order = np.random.default_rng(0).permutation(len(labels))
    shuffled = {"image": [images[i] for i in order], "label": [labels[i] for i in order]}
    saved = save(tmp_path / "saved", {"train": shuffled, "val": shuffled, "test": shuffled})
    few = read_task("pets", saved, SIZE, max_images=4)
    firsts = {c: [row for row, label in enumerate(shuffled["label"]) if label == c] for c in range(3)}
    rows = sorted(firsts[0][:2] + firsts[1][:1] + firsts[2][:1])
    assert few.labels["train"].tolist() == [shuffled["label"][row] for row in rows]
    assert torch.equal(few.images["train"], read_task("pets", saved, SIZE).images["train"][rows])


def test_read_tasks_reads_every_task_in_order(folder, saved):
    tasks = read_tasks({"b": saved, "a": str(folder)}, SIZE, max_images=3)
    assert list(tasks) == ["b", "a"] and [t.source for t in tasks.values()] == ["save_to_disk", "image folder"]
    assert all(len(t.labels[s]) == 3 for t in tasks.values() for s in SPLITS)
    with pytest.raises(ValueError, match="No tasks given"):
        read_tasks({}, SIZE)


def test_read_tasks_checks_every_layout_before_decoding(folder, tmp_path):
    (folder / "train" / "ant" / "00.png").write_bytes(b"broken")
    with pytest.raises(FileNotFoundError, match="'second'.*does not exist"):
        read_tasks({"first": folder, "second": tmp_path / "nowhere"}, SIZE)


# --- errors -----------------------------------------------------------------------------------------------------------


def test_missing_folder_and_a_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Task 'pets': the folder .*nowhere does not exist"):
        read_task("pets", tmp_path / "nowhere", SIZE)
    (tmp_path / "data.zip").write_bytes(b"")
    with pytest.raises(ValueError, match=r"data\.zip is a file, not a folder"):
        read_task("pets", tmp_path / "data.zip", SIZE)


def test_unrecognised_layout_says_what_was_looked_for(folder, tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat").mkdir()
    with pytest.raises(ValueError, match=r"neither layout.*dataset_dict\.json.*train/, val/, test/.*found cat/"):
        read_task("pets", tmp_path / "photos", SIZE)
    with pytest.raises(
        ValueError, match=r"found folder/, photos/\. The folder .*folder looks like one: did you mean it\?"
    ):
        read_task("pets", tmp_path, SIZE)
    datasets.Dataset.from_dict({"label": [0]}).save_to_disk(str(tmp_path / "single"))
    with pytest.raises(ValueError, match="single Dataset"):
        read_task("pets", tmp_path / "single", SIZE)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "dataset_dict.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.dataset_dict\.json does not list the splits"):
        read_task("pets", tmp_path / "broken", SIZE)


def test_missing_split_names_it_and_the_splits_found(folder, tmp_path):
    import shutil

    shutil.rmtree(folder / "test")
    with pytest.raises(ValueError, match=r"split folder .*test is missing \(found the folders: train, val\)"):
        read_task("pets", folder, SIZE)
    images, labels = folder_rows(folder, "train")
    rows = {"image": images, "label": labels}
    saved = save(tmp_path / "saved", {"train": rows, "test": rows})
    with pytest.raises(ValueError, match=r"no 'val' split \(found: 'train', 'test'\).*train_test_split"):
        read_task("pets", saved, SIZE)


def test_both_val_and_validation_is_ambiguous(folder):
    (folder / "validation").mkdir()
    with pytest.raises(ValueError, match="both val/ and validation/"):
        read_task("pets", folder, SIZE)


def test_a_split_without_images(folder, tmp_path):
    import shutil

    images, labels = folder_rows(folder, "train")
    rows = {"image": images, "label": labels}
    try:
        saved = save(tmp_path / "saved", {"train": rows, "val": rows, "test": {"image": [], "label": []}})
    except ZeroDivisionError:  # datasets 4.0 (Colab's) cannot save a split of 0 images: no such folder to read
        saved = None
    if saved is not None:
        with pytest.raises(ValueError, match=r"split 'test' has no images \(0 rows\)"):
            read_task("pets", saved, SIZE)
    for name in CLASSES:
        shutil.rmtree(folder / "val" / name)
    with pytest.raises(ValueError, match=r"split folder .*val has no images"):
        read_task("pets", folder, SIZE)


def test_a_class_folder_without_images(folder):
    for path in (folder / "test" / "bee").iterdir():
        path.rename(path.with_suffix(".heic"))
    with pytest.raises(ValueError, match=r"class folder .*test.bee of split 'test' has no images .*\.heic"):
        read_task("pets", folder, SIZE)


def test_images_outside_class_folders(folder):
    picture("train", "ant", 0).save(folder / "train" / "stray.png")
    with pytest.raises(ValueError, match=r"directly in the split folder .*train.*stray\.png"):
        read_task("pets", folder, SIZE)


def test_classes_that_differ_between_splits_are_named(folder):
    import shutil

    shutil.rmtree(folder / "val" / "ant")
    (folder / "test" / "dog").mkdir()
    picture("test", "ant", 0).save(folder / "test" / "dog" / "00.png")
    with pytest.raises(ValueError, match=r"differ between splits: .*train lacks 'dog'; .*val lacks 'ant', 'dog'"):
        read_task("pets", folder, SIZE)


def test_class_names_that_differ_between_saved_splits(folder, tmp_path):
    images, labels = folder_rows(folder, "train")
    other = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y", "z"])})
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"image": images, "label": labels}, features=FEATURES),
            "val": datasets.Dataset.from_dict({"image": images, "label": labels}, features=other),
            "test": datasets.Dataset.from_dict({"image": images, "label": labels}, features=FEATURES),
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match=r"class names differ between splits: 'train' has .*'val' has \['x'"):
        read_task("pets", tmp_path / "saved", SIZE)


def test_an_unreadable_image_is_named(folder, tmp_path):
    saved = saved_from(folder, tmp_path / "saved")
    (folder / "test" / "cat" / "03.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Pillow cannot read the image .*test.cat.03\.png.*re-save"):
        read_task("pets", folder, SIZE)
    images, labels = folder_rows(folder, "val")
    images[2] = {"bytes": b"not a png", "path": None}
    rows = {"image": images, "label": labels}
    broken = save(tmp_path / "broken", {"train": rows, "val": rows, "test": rows})
    with pytest.raises(ValueError, match=r"Pillow cannot read the image split 'train', row 2 \(column 'image'\)"):
        read_task("pets", broken, SIZE)
    assert read_task("pets", saved, SIZE, max_images=2).num_classes == 3, "a row never kept is never decoded"


def test_a_row_without_an_image(folder, tmp_path):
    images, labels = folder_rows(folder, "val")
    images[5] = None
    rows = {"image": images, "label": labels}
    saved = save(tmp_path / "saved", {"train": rows, "val": rows, "test": rows})
    with pytest.raises(ValueError, match=r"split 'train', row 5 \(column 'image'\) has no image"):
        read_task("pets", saved, SIZE)


def test_missing_image_or_label_columns_are_listed(folder, tmp_path):
    images, labels = folder_rows(folder, "val")
    no_image = {split: {"text": ["a"] * len(labels), "label": labels} for split in SPLITS}
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=SORTED)})
    with pytest.raises(ValueError, match=r"split 'train' has no image column.*'text': Value\('string'\)"):
        read_task("pets", save(tmp_path / "a", no_image, features), SIZE)
    no_label = {split: {"image": images, "target": labels} for split in SPLITS}
    features = datasets.Features({"image": datasets.Image(), "target": datasets.Value("int64")})
    with pytest.raises(ValueError, match=r"has no label column.*'target': Value\('int64'\).*ClassLabel"):
        read_task("pets", save(tmp_path / "b", no_label, features), SIZE)
    names = {split: {"image": images, "label": [SORTED[i] for i in labels]} for split in SPLITS}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    with pytest.raises(ValueError, match=r"label column 'label' .* not integer class indices.*class_encode_column"):
        read_task("pets", save(tmp_path / "c", names, features), SIZE)


def test_labels_out_of_range(folder, tmp_path):
    images, labels = folder_rows(folder, "val")
    rows = {"image": images, "label": labels}
    missing = {"image": images, "label": [*labels[:7], -1, *labels[8:]]}
    saved = save(tmp_path / "saved", {"train": rows, "val": rows, "test": missing})
    with pytest.raises(ValueError, match=r"split 'test', column 'label': 1 label\(s\) outside 0\.\.2 .*row 7: -1"):
        read_task("pets", saved, SIZE)


def test_bad_sizes(folder):
    with pytest.raises(ValueError, match="Task 'pets': image_size must be .* at least 8 pixels, got 4"):
        read_task("pets", folder, 4)
    with pytest.raises(ValueError, match="max_images must be a positive integer"):
        read_task("pets", folder, SIZE, max_images=0)
