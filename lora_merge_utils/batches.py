"""Getting images to the model: DataLoaders, datasets decoded once into memory, batches on a device, autocast.

Evaluation reads the same test images for every merge of the grid. Decoding and resizing them each time (up to
10 ms per image for the full profile's large JPEGs) would run in series with the GPU, so :func:`decode_all` decodes a
split once, into ``uint8`` tensors (150 kB per 224-px image), and :func:`iterate_batches` slices batches from memory
and normalises them on the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ._progress import tqdm
from .instrumentation.workload import count

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` in [0, 255] -> float normalised like the backbone's pretraining (mean = std = 0.5)."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    # One float copy changed in place: the same operations, so the same bits, as ``(x / 255 - mean) / std`` with a new
    # tensor at each step, in a third of the time for 224-px batches (the copy keeps the caller's images unchanged).
    return images.to(torch.float32, copy=True).div_(255).sub_(mean).div_(std)


class InMemoryImages(Dataset):
    """A split decoded once: ``uint8`` images ``[N, 3, H, W]`` and their labels. Items come out normalised, exactly as
    the lazily decoded dataset would give them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"InMemoryImages needs uint8 [N, 3, H, W] images and N labels, got {images.dtype} "
                f"{tuple(images.shape)} and {len(labels)} labels."
            )
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return normalize(self.images[index : index + 1])[0], int(self.labels[index])


class _Raw(Dataset):
    """The undecoded view of a dataset that can hand out ``uint8`` images (see ``HFImageDataset.decode``)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset.decode(index), int(self.dataset.labels[index])


def in_memory(dataset: Dataset) -> bool:
    """Whether batches can be sliced from tensors (no decoding, no DataLoader)."""
    return isinstance(dataset, InMemoryImages | TensorDataset)


def decode_all(dataset: Dataset, num_workers: int = 0, batch_size: int = 64, progress: bool | str = False) -> Dataset:
    """Decode and resize every image of ``dataset`` once, with ``num_workers`` processes; in-memory datasets are
    returned as they are. The result gives exactly the same items as ``dataset``."""
    if in_memory(dataset):
        return dataset
    if not hasattr(dataset, "decode"):
        raise TypeError(f"{type(dataset).__name__} cannot be decoded into memory: it has no decode(index) method.")
    loader = make_loader(_Raw(dataset), batch_size, shuffle=False, num_workers=num_workers)
    desc = progress if isinstance(progress, str) else "decoding"
    images, labels = [], []
    for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
        images.append(x)
        labels.append(y)
    count("decoded", len(dataset))
    return InMemoryImages(torch.cat(images), torch.cat(labels))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0) -> DataLoader:
    """A DataLoader whose shuffling depends on ``seed`` only."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=False,
    )


def iterate_batches(
    dataset: Dataset, batch_size: int, device: torch.device, num_workers: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(normalised images on device, labels on CPU)`` in dataset order: sliced from memory when the dataset is in
    memory (``uint8`` images cross to the device and are normalised there), else from a DataLoader."""
    if isinstance(dataset, InMemoryImages):
        for start in range(0, len(dataset), batch_size):
            images = dataset.images[start : start + batch_size].to(device, non_blocking=True)
            yield normalize(images), dataset.labels[start : start + batch_size]
    elif isinstance(dataset, TensorDataset):
        x_all, y_all = dataset.tensors[:2]
        for start in range(0, len(dataset), batch_size):
            yield x_all[start : start + batch_size].to(device, non_blocking=True), y_all[start : start + batch_size]
    else:
        for x, y in make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers):
            count("decoded", len(y))
            yield x.to(device, non_blocking=True), torch.as_tensor(y)


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The reduced precision autocast uses on ``device``: bfloat16 on GPUs that run it natively (Ampere and newer),
    float16 on older ones (a Colab T4), ``None`` (full precision) on a CPU, where autocast is slower than fp32 for a
    small ViT and would change the tiny profile's numbers."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast(device: torch.device | str, enabled: bool = True):
    """Mixed precision on a GPU when ``enabled`` (:func:`amp_dtype`); a no-op on a CPU.

    Example (on a CPU nothing changes):
        >>> import torch
        >>> with autocast("cpu"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    dtype = amp_dtype(device) if enabled else None
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def grad_scaler(device: torch.device | str, enabled: bool = True) -> torch.amp.GradScaler:
    """The gradient scaler that goes with :func:`autocast`: on for float16, whose small gradients would underflow to
    zero without it; off (a pass-through) for bfloat16 and full precision."""
    return torch.amp.GradScaler("cuda", enabled=enabled and amp_dtype(device) == torch.float16)
