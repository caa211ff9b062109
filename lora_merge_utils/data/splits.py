"""Image datasets and their splits, whatever the source: the :class:`ImageTask` a loader returns, the lazily decoded
:class:`HFImageDataset`, and the class-balanced splitting and sampling every loader uses."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..artifacts import artifacts_base
from ..batches import MEAN, STD, InMemoryImages, normalize


@dataclass
class ImageTask:
    """One classification task: its name, class names and torch-dataset splits of ``(image_tensor, label)``."""

    name: str
    class_names: list[str]
    train: Dataset
    test: Dataset
    description: str = ""
    val: Dataset | None = None
    """Held out from training — for choosing hyperparameters (merge weights, density, ...), never the test split."""

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
    index = stratified_sample(labels_of(dataset).numpy(), {"sample": images}, seed)["sample"]
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[index] for t in dataset.tensors))
    if isinstance(dataset, InMemoryImages):
        return InMemoryImages(dataset.images[index], dataset.labels[index])
    return dataset.select(index)


def labels_of(dataset: Dataset) -> torch.Tensor:
    """A dataset's labels, without decoding its images."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, HFImageDataset | InMemoryImages):
        return torch.as_tensor(np.asarray(dataset.labels))
    raise TypeError(f"Cannot read the labels of a {type(dataset).__name__}: it does not expose them.")


def tensor_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    """uint8 images and integer labels as a torch dataset of ``(normalised image tensor, label)``."""
    return TensorDataset(to_tensor(images), torch.as_tensor(labels, dtype=torch.long))


def sample_cache_dir() -> Path:
    """Where class-balanced samples of hub datasets are kept: ``<artifacts base>/datasets`` (so keeping artifacts on
    Google Drive keeps the data too; see :func:`lora_merge_utils.artifacts.artifacts_base`)."""
    return artifacts_base() / "datasets"
