"""The six classification tasks of each profile, addressable by name.

``load_task(profile, name)`` returns an :class:`~lora_merge_utils.data.splits.ImageTask` whose ``train``, ``val`` and
``test`` splits are torch datasets yielding ``(image_tensor, label)``, already resized and normalised for the profile's
backbone. The profile's data source picks the loader: :mod:`.generated` for
:class:`~lora_merge_utils.profiles.GeneratedData` (tiny, built offline), :mod:`.hub` for
:class:`~lora_merge_utils.profiles.HubData` (full, Hugging Face Hub datasets). Related tasks (:data:`RELABELLINGS`) are
a main task's images under other labels: coarsenings of its classes, or
(:data:`~lora_merge_utils.data.attributes.CONFLICTING_RELABELLINGS`) a factor that cuts across them."""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..batches import InMemoryImages
from ..profiles import (  # all_tasks and check_task_name live with the profile (no torch): the CLI checks names
    GeneratedData,
    HubData,
    Profile,
    check_task_name,
    get_profile,
)
from .attributes import CONFLICTING_RELABELLINGS, AttributeRelabelling, attribute_labels
from .generated import TINY_BUILDERS, arrays_checksum, load_generated
from .hub import DATA_DIR_ENV, HUB_MIRROR_ENV, SAMPLE_CHECKSUMS, datasets_progress, load_hub
from .hub_sources import CORRUPTIONS, HUB_SOURCES, HubSource
from .splits import (
    HFImageDataset,
    ImageTask,
    balanced_split,
    labels_of,
    sample_cache_dir,
    stratified_sample,
    subsample,
    to_tensor,
    to_uint8_images,
)

__all__ = [  # the registry, and the names of the data modules a chapter or a practitioner reaches for
    "CONFLICTING_RELABELLINGS",
    "CORRUPTIONS",
    "HUB_SOURCES",
    "LOADERS",
    "RELABELLINGS",
    "SAMPLE_CHECKSUMS",
    "TINY_BUILDERS",
    "HFImageDataset",
    "HubSource",
    "ImageTask",
    "Relabelling",
    "arrays_checksum",
    "balanced_split",
    "datasets_progress",
    "load_task",
    "load_tasks",
    "relabel",
    "relabelled",
    "relabelling_of",
    "related_combos",
    "labels_of",
    "sample_cache_dir",
    "shares_images",
    "stratified_sample",
    "subsample",
    "to_tensor",
    "to_uint8_images",
    "with_labels",
]

LOADERS: dict[type, Callable[[Profile, str], ImageTask]] = {GeneratedData: load_generated, HubData: load_hub}
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
"""The relabelled tasks that coarsen their base task's classes (with
:data:`~lora_merge_utils.data.attributes.CONFLICTING_RELABELLINGS`, every relabelled task a profile can list in
``related_tasks``)."""


def relabelling_of(name: str) -> Relabelling | AttributeRelabelling | None:
    """The relabelling a task name stands for (a coarsening or a conflicting one), or ``None`` for a task of its
    own images. Both kinds name their ``base`` task and their ``class_names``."""
    return RELABELLINGS.get(name) or CONFLICTING_RELABELLINGS.get(name)


def related_combos(profile: Profile) -> list[tuple[str, ...]]:
    """Chapter 6's merges of each relabelled task, pairs then triples: with the task whose images it shares, then
    with the others; in triples, with that task and each other one, then with two of the others."""
    base = {r: relabelling_of(r).base for r in profile.related_tasks}
    others = {r: [o for o in profile.tasks if o != base[r]] for r in profile.related_tasks}
    pairs = [(b, r) for r, b in base.items()] + [(r, o) for r in profile.related_tasks for o in others[r]]
    triples = [(base[r], r, o) for r in profile.related_tasks for o in others[r]] + [
        (r, a, b) for r in profile.related_tasks for a, b in itertools.combinations(others[r], 2)
    ]
    return pairs + triples


def shares_images(combo: Sequence[str]) -> bool:
    """Whether a merge holds a relabelled task together with the task whose images it shares."""
    return any(getattr(relabelling_of(t), "base", None) in combo for t in combo)


def relabel(dataset: Dataset, groups: np.ndarray) -> Dataset:
    """``dataset`` with each label ``y`` replaced by ``groups[y]`` (the images are shared, not copied)."""
    if isinstance(dataset, TensorDataset | InMemoryImages):
        return with_labels(dataset, np.asarray(groups)[labels_of(dataset).numpy()])
    if isinstance(dataset, HFImageDataset):
        out = copy.copy(dataset)
        out.labels = groups[dataset.labels]
        return out
    raise TypeError(f"Cannot relabel a {type(dataset).__name__}.")


def with_labels(dataset: Dataset, labels: np.ndarray) -> Dataset:
    """``dataset`` with its ``i``-th label replaced by ``labels[i]`` (the images are shared, not copied)."""
    if len(labels) != len(dataset):
        raise ValueError(f"{len(labels)} labels for a split of {len(dataset)} images.")
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if isinstance(dataset, TensorDataset):
        return TensorDataset(dataset.tensors[0], labels)
    if isinstance(dataset, InMemoryImages):
        return InMemoryImages(dataset.images, labels)
    raise TypeError(f"Cannot relabel a {type(dataset).__name__} image by image.")


def relabelled(profile: Profile, name: str, split: str, dataset: Dataset) -> Dataset:
    """``dataset``, the whole ``split`` of relabelled task ``name``'s base task in its order, under ``name``'s
    labels."""
    spec = relabelling_of(name)
    if isinstance(spec, Relabelling):
        return relabel(dataset, np.asarray(spec.groups))
    return with_labels(dataset, attribute_labels(profile, name)[split])


def _load_relabelled(profile: Profile, name: str) -> ImageTask:
    spec = relabelling_of(name)
    base = load_task(profile, spec.base)
    if isinstance(spec, Relabelling) and len(spec.groups) != base.num_classes:
        raise ValueError(f"{name}: {len(spec.groups)} groups for the {base.num_classes} classes of {spec.base!r}.")
    splits = {split: relabelled(profile, name, split, base.split(split)) for split in ("train", "val", "test")}
    return ImageTask(name, list(spec.class_names), splits["train"], splits["test"], spec.description, splits["val"])


_CACHE: dict[tuple, ImageTask] = {}


def check_profile_tasks(profile: Profile) -> None:
    """Refuse, before any work, a profile whose tasks this book cannot build: an unknown task name (it failed only
    when that task's turn came, after training the others) or a relabelled task whose images' task is not among its
    tasks (it failed after training). One error names every problem and its fix. A built-similar pair outside the
    tasks is only not marked (chapter 3), so it passes."""
    from .generated import TINY_BUILDERS
    from .hub_sources import HUB_SOURCES

    known = TINY_BUILDERS if isinstance(profile.data, GeneratedData) else HUB_SOURCES
    problems = []
    unknown = [t for t in profile.tasks if t not in known]
    if unknown:
        problems.append(
            f"tasks names {', '.join(map(repr, unknown))}, which the {profile.name!r} profile cannot build "
            f"(choose among {', '.join(known)})"
        )
    strays = [t for t in profile.related_tasks if getattr(relabelling_of(t), "base", None) not in profile.tasks]
    if strays:
        problems.append(
            f"related_tasks names {', '.join(map(repr, strays))}, whose images' task is not among tasks "
            '(override related_tasks too, e.g. "related_tasks": [])'
        )
    drawn = [t for t in profile.related_tasks if t in CONFLICTING_RELABELLINGS]
    if drawn and not isinstance(profile.data, GeneratedData):
        problems.append(
            f"related_tasks names {', '.join(map(repr, drawn))}, labelled by what the tiny world's generator drew, "
            "in a profile whose images are not generated (list only coarsenings there, e.g. "
            + ", ".join(map(repr, RELABELLINGS))
            + ")"
        )
    if problems:
        raise ValueError("; ".join(problems) + ".")


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
