import numpy as np
import pytest
import torch
from PIL import Image

from lora_merge_utils import FULL, TINY, load_task
from lora_merge_utils.data.tasks import (
    TINY_BUILDERS,
    balanced_split,
    relabelling_of,
    related_combos,
    shares_images,
)
from lora_merge_utils.profiles import GeneratedData, HubData


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
    small = GeneratedData(train_per_class=5, val_per_class=2, test_per_class=3)
    first = TINY_BUILDERS[name](small, 0)
    second = TINY_BUILDERS[name](small, 0)
    for split in ("train", "val", "test"):
        for a, b in zip(first[0][split], second[0][split]):
            np.testing.assert_array_equal(a, b)


def test_generated_tasks_are_kept_on_disk_and_rebuilt_when_unreadable(tmp_path, monkeypatch):
    from lora_merge_utils.data.generated import _built_splits

    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path))
    small = TINY.replace(data=GeneratedData(train_per_class=5, val_per_class=2, test_per_class=3))
    built, names, _ = _built_splits(small, "shapes")
    (saved,) = (tmp_path / "datasets" / "generated").glob("shapes-*.safetensors")
    again, names_again, _ = _built_splits(small, "shapes")
    assert names_again == names
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(built[split][0], again[split][0])
        np.testing.assert_array_equal(built[split][1], again[split][1])
    saved.write_bytes(b"not a safetensors file")
    rebuilt, _, _ = _built_splits(small, "shapes")
    np.testing.assert_array_equal(rebuilt["train"][0], built["train"][0])
    other = small.replace(data=GeneratedData(train_per_class=6, val_per_class=2, test_per_class=3))
    assert len(_built_splits(other, "shapes")[0]["train"][1]) == 6 * len(names), "other settings, another file"


def test_real_image_splits_do_not_overlap():
    idx = balanced_split(np.repeat(np.arange(3), 10), 2, 5, seed=0, val_per_class=2)
    assert not set(idx["train"]) & set(idx["test"]) and not set(idx["val"]) & (set(idx["train"]) | set(idx["test"]))
    assert len(idx["test"]) == 6 and len(idx["val"]) == 6 and len(idx["train"]) == 15


@pytest.mark.parametrize("name", ["digits", "textures"])
def test_validation_split_is_held_out_and_balanced(name):
    task = load_task(TINY, name)
    x_val, y_val = task.val.tensors
    counts = np.bincount(y_val.numpy(), minlength=task.num_classes)
    assert counts.min() == counts.max() == TINY.data.val_per_class
    train_rows = {row.numpy().tobytes() for row in task.train.tensors[0]}
    assert not any(row.numpy().tobytes() in train_rows for row in x_val), "no validation image is a training image"
    with pytest.raises(ValueError, match="Unknown split"):
        task.split("holdout")


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError, match="Valid tasks: digits, mnist"):
        load_task(TINY, "cifar")


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _save_stand_in(directory, columns=("image", "label"), n=40):
    import datasets

    rng = np.random.default_rng(0)
    features = datasets.Features({columns[0]: datasets.Image(), columns[1]: datasets.ClassLabel(names=NAMES)})
    split = {
        columns[0]: [Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)) for _ in range(n)],
        columns[1]: [i % 10 for i in range(n)],
    }
    data = datasets.DatasetDict({s: datasets.Dataset.from_dict(split, features=features) for s in ("train", "test")})
    data.save_to_disk(str(directory))


SMALL_HUB = FULL.replace(image_size=32, data=HubData(train_size=20, val_size=10, test_size=None))


def test_full_loader_reads_a_local_copy(tmp_path, monkeypatch):
    _save_stand_in(tmp_path / "mnist")
    monkeypatch.setenv("LORA_BOOK_DATA_DIR", str(tmp_path))
    task = load_task(SMALL_HUB, "mnist")
    assert task.class_names == NAMES, "class names come from the data's ClassLabel"
    x, y = task.train[3]
    assert x.shape == (3, 32, 32)
    assert len(task.test) == 40, "test_size None keeps the whole test split"
    assert (len(task.val), len(task.train)) == (10, 20), "val_size and train_size: 1 and 2 per class"
    assert not _encoded(task.val) & _encoded(task.train), "validation is carved out of the training split, disjoint"


def _encoded(dataset) -> set[bytes]:
    import datasets

    return {row["bytes"] for row in dataset.data.cast_column("image", datasets.Image(decode=False))["image"]}


def test_a_split_too_small_for_the_sample_is_a_clear_error(tmp_path, monkeypatch):
    _save_stand_in(tmp_path / "mnist")
    monkeypatch.setenv("LORA_BOOK_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="train sample would be empty.*Lower data.val_size"):
        load_task(FULL.replace(image_size=32), "mnist")


def test_full_loader_reports_a_wrong_schema(tmp_path, monkeypatch):
    _save_stand_in(tmp_path / "svhn", columns=("img", "label"))
    monkeypatch.setenv("LORA_BOOK_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="no column 'image'"):
        load_task(SMALL_HUB, "svhn")


def test_full_loader_offline_without_copy_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_BOOK_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="save_to_disk"):
        load_task(FULL.replace(image_size=32), "dtd")


def test_hub_loader_downloads_only_the_splits_it_reads_and_keeps_a_sample(tmp_path, monkeypatch, capsys):
    """The hub path end to end against a folder laid out like the hub (``$LORA_BOOK_HUB_MIRROR``): only the train
    and test parquet files are read (SVHN's ``extra`` here is not even a parquet file), their bytes are printed, and
    the class-balanced sample saved under the artifacts folder serves the next load without the hub."""
    import datasets

    from lora_merge_utils.data import tasks as tasks_module

    _save_stand_in(tmp_path / "copy")
    saved = datasets.load_from_disk(str(tmp_path / "copy"))
    folder = tmp_path / "mirror" / "ufldl-stanford" / "svhn" / "cropped_digits"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        saved[split].to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    (folder / "extra-00000-of-00002.parquet").write_bytes(b"not parquet: reading it would fail")
    monkeypatch.setenv("LORA_BOOK_HUB_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("LORA_BOOK_PROGRESS", "0")

    task = load_task(SMALL_HUB, "svhn")
    printed = capsys.readouterr().out
    sizes = {split: (folder / f"{split}-00000-of-00001.parquet").stat().st_size / 1e6 for split in ("train", "test")}
    assert f"train {sizes['train']:,.1f} MB, test {sizes['test']:,.1f} MB" in printed
    assert "not downloading extra" in printed and "saved a sample of 20 train, 10 val, 40 test" in printed
    assert task.class_names == NAMES and "Hugging Face Hub" in task.description
    assert (len(task.train), len(task.val), len(task.test)) == (20, 10, 40)

    import shutil

    shutil.rmtree(tmp_path / "mirror")
    tasks_module._CACHE.clear()
    again = load_task(SMALL_HUB, "svhn")
    assert "downloading" not in capsys.readouterr().out, "the saved sample is reused"
    np.testing.assert_array_equal(again.labels("train"), task.labels("train"))
    assert torch.equal(again.test[5][0], task.test[5][0])


def test_decoded_once_gives_exactly_the_lazy_items(tmp_path, monkeypatch):
    from lora_merge_utils.batches import InMemoryImages, decode_all, iterate_batches
    from lora_merge_utils.data.tasks import subsample

    _save_stand_in(tmp_path / "mnist")
    monkeypatch.setenv("LORA_BOOK_DATA_DIR", str(tmp_path))
    lazy = load_task(SMALL_HUB, "mnist").test
    decoded = decode_all(lazy, num_workers=0)
    assert isinstance(decoded, InMemoryImages) and decoded.images.dtype == torch.uint8
    for i in (0, 7, 39):
        x_lazy, y_lazy = lazy[i]
        x_mem, y_mem = decoded[i]
        assert torch.equal(x_lazy, x_mem) and y_lazy == y_mem
    batches = list(iterate_batches(decoded, 16, torch.device("cpu")))
    assert [len(y) for _, y in batches] == [16, 16, 8]
    assert torch.equal(batches[1][0][0], lazy[16][0])
    sample = subsample(lazy, 20, seed=0)
    assert len(sample) == 20 and np.bincount(sample.labels, minlength=10).tolist() == [2] * 10
    assert torch.equal(decode_all(sample).images, subsample(decoded, 20, seed=0).images), "same sample either way"
    assert subsample(lazy, None) is lazy and subsample(lazy, 1000) is lazy


def test_normalising_in_place_gives_the_per_channel_formulas_bits_and_leaves_the_images_alone():
    """The fast path of ``normalize`` must change no image: every byte value, against the per-channel formula."""
    from lora_merge_utils.batches import MEAN, STD, normalize

    images = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 16, 16)
    kept = images.clone()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.equal(normalize(images), (images.float().div(255) - mean) / std)
    assert torch.equal(images, kept)


def test_a_generated_dataset_cache_with_changed_labels_is_built_again(tmp_path, monkeypatch):
    """Shifted labels under a valid safetensors header used to give 2% accuracy with exit 0: the cache records a
    checksum of its arrays and one that differs is rebuilt from the generator."""
    from safetensors.numpy import load_file, save_file

    from lora_merge_utils.data.generated import _built_splits

    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path))
    small = TINY.replace(data=GeneratedData(train_per_class=5, val_per_class=2, test_per_class=3))
    built, _, _ = _built_splits(small, "shapes")
    (saved,) = (tmp_path / "datasets" / "generated").glob("shapes-*.safetensors")
    arrays = load_file(saved)
    arrays["test.labels"] = (arrays["test.labels"] + 1) % 6
    save_file(arrays, str(saved))
    again, _, _ = _built_splits(small, "shapes")
    np.testing.assert_array_equal(again["test"][1], built["test"][1])
    np.testing.assert_array_equal(load_file(saved)["test.labels"], built["test"][1])  # saved over


def test_a_saved_hub_sample_whose_files_changed_is_drawn_again(tmp_path, monkeypatch, capsys):
    from lora_merge_utils.data import tasks as tasks_module

    _save_stand_in(tmp_path / "data" / "mnist")
    monkeypatch.setenv("LORA_BOOK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path / "artifacts"))
    first = load_task(SMALL_HUB, "mnist")
    (sample,) = [p for p in (tmp_path / "artifacts" / "datasets").iterdir() if p.name.startswith("mnist-")]
    assert (sample / tasks_module.SAMPLE_CHECKSUMS).is_file()
    capsys.readouterr()
    tasks_module._CACHE.clear()
    load_task(SMALL_HUB, "mnist")
    assert "saved a sample" not in capsys.readouterr().out, "an intact sample is reused"
    arrow = next(sample.rglob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[-9] ^= 0xFF
    arrow.write_bytes(bytes(data))
    tasks_module._CACHE.clear()
    again = load_task(SMALL_HUB, "mnist")
    printed = capsys.readouterr().out
    assert "differs from what was saved; drawing it again" in printed and "saved a sample" in printed
    np.testing.assert_array_equal(again.labels("test"), first.labels("test"))


@pytest.mark.parametrize("profile", [TINY, FULL], ids=["tiny", "full"])
def test_related_merges_hold_each_relabelled_task_with_its_images_task_and_with_the_others(profile):
    """Chapter 6's relabelled merges: each relabelled task once with its images' task and once with each other task
    (pairs), with its images' task and each other one, and with every two others (triples); no merge twice."""
    combos = related_combos(profile)
    assert len(combos) == len(set(map(frozenset, combos))), "no merge twice"
    for task in profile.related_tasks:
        base = relabelling_of(task).base
        others = [t for t in profile.tasks if t != base]
        mine = [set(c) for c in combos if task in c]
        pairs, triples = [c for c in mine if len(c) == 2], [c for c in mine if len(c) == 3]
        assert sorted(map(sorted, pairs)) == sorted(sorted({task, o}) for o in [base, *others])
        assert sum(base in c for c in triples) == len(others)
        assert sum(base not in c for c in triples) == len(others) * (len(others) - 1) // 2
        assert all(shares_images(sorted(c)) == (base in c) for c in mine)
