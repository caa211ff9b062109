"""Relabellings that conflict with their base labels: the tiny world's images labelled by a factor the generator drew
independently of the class (the font a letter is rendered in, how fine a grating's stripes are).

:data:`~lora_merge_utils.data.tasks.RELABELLINGS` are coarsenings (a digit's parity, a shape's family): what tells two
new classes apart is part of what tells the base classes apart, so an adapter for the base task already serves them.
A conflicting relabelling asks the shared images for a factor the base task must ignore: the letters task learns to
read a letter whatever its face, the font task to read the face whatever the letter. They are set on letters and
gratings, the tiny tasks where chapter 2's adapters add most over the head.

The factor is not stored with the images. It is read back by drawing the task again with a random generator that
records one kind of draw (:class:`RecordingGenerator`): the generator code and the images stay as they are, and
:func:`attribute_labels` refuses to label images it did not draw again bit for bit, so a change to a generator
cannot silently shift the labels.

This module sits outside the code whose hash every saved head and adapter records
(:func:`~lora_merge_utils.study.trainer_code_version`), so defining these tasks does not refuse saved work.
"""

# No `from __future__ import annotations`: the API page documents RecordingGenerator's signature from its evaluated
# annotations (a class's string annotations stay unresolved there).
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..profiles import GeneratedData, Profile, get_profile
from . import synthetic
from .generated import MIN_TEST_IMAGES, _built_splits  # generated.py is hashed: reuse, not rename

SPLIT_STREAMS = {"train": 0, "test": 1, "val": 2}
"""The index of each split's random stream (``default_rng([seed, index])``), as :mod:`.generated` draws them."""


class RecordingGenerator:
    """A ``numpy.random.Generator`` that also keeps the values of one kind of draw: calls of ``method`` with
    exactly ``args`` (and no keywords). Every draw is passed through, so code given it makes what it would make with
    the generator alone."""

    def __init__(self, rng: np.random.Generator, method: str, args: tuple) -> None:
        self._rng, self._method, self._args = rng, method, args
        self.draws: list = []

    def __getattr__(self, name: str):
        attribute = getattr(self._rng, name)
        if name != self._method:
            return attribute

        def draw(*args, **kwargs):
            value = attribute(*args, **kwargs)
            if args == self._args and not kwargs:
                self.draws.append(value)
            return value

        return draw


@dataclass(frozen=True)
class AttributeRelabelling:
    """A task on ``base``'s images labelled by one of the generator's draws, one per image (the ``args`` of ``method``
    in ``make``): ``bucket`` turns the drawn values into class indices of ``class_names``."""

    base: str
    make: Callable
    method: str
    args: tuple
    bucket: Callable[[np.ndarray], np.ndarray]
    class_names: tuple[str, ...]
    description: str


_FONT_FAMILY = np.array([0, 0, 0, 1, 1, 1, 2, 2])  # synthetic._FONT_FILES: three Sans, three Serif, two Mono faces
_FINE_FROM = (0.12 + 0.45) / 2  # the middle of make_gratings' frequency range, in radians per pixel

CONFLICTING_RELABELLINGS: dict[str, AttributeRelabelling] = {
    "letters_font": AttributeRelabelling(
        "letters",
        synthetic.make_letters,
        "integers",
        (len(synthetic._FONT_FILES),),
        lambda drawn: _FONT_FAMILY[np.asarray(drawn, dtype=int)],
        ("sans", "serif", "mono"),
        "the letters task's images, labelled by the family of the face each letter is rendered in",
    ),
    "gratings_frequency": AttributeRelabelling(
        "gratings",
        synthetic.make_gratings,
        "uniform",
        (0.12, 0.45),
        lambda drawn: (np.asarray(drawn, dtype=float) >= _FINE_FROM).astype(int),
        ("coarse stripes", "fine stripes"),
        "the gratings task's images, labelled by their spatial frequency: below or above the middle of its range",
    ),
}
"""Every relabelling whose classes cut across its base task's, defined before any of their results were seen."""


_LABELS: dict[tuple, dict[str, np.ndarray]] = {}


def attribute_labels(profile: Profile | str | None, name: str) -> dict[str, np.ndarray]:
    """The labels of a conflicting relabelling for each split of its base task, image for image (read once per
    session and settings: drawing a task again takes a second or two).

    The base task is drawn again with a :class:`RecordingGenerator` and its images compared with the task's own: a
    generator that no longer draws the same images (or draws the factor more or less than once per image) is refused
    with an error instead of labelling images it did not make."""
    profile = get_profile(profile)
    key = (name, CONFLICTING_RELABELLINGS.get(name), profile.data, profile.train.seed)
    if key not in _LABELS:
        _LABELS[key] = _read_labels(profile, name)
    return {split: labels.copy() for split, labels in _LABELS[key].items()}


def _read_labels(profile: Profile, name: str) -> dict[str, np.ndarray]:
    if name not in CONFLICTING_RELABELLINGS:
        raise ValueError(f"No conflicting relabelling {name!r}; there are {', '.join(CONFLICTING_RELABELLINGS)}.")
    spec = CONFLICTING_RELABELLINGS[name]
    if not isinstance(profile.data, GeneratedData):
        raise ValueError(
            f"{name} labels images by what the tiny world's generator drew; the {profile.name!r} profile's images "
            "are not generated (use a profile with generated data, such as 'tiny')."
        )
    splits, class_names, _ = _built_splits(profile, spec.base)
    per_class = {
        "train": profile.data.train_per_class,
        "val": profile.data.val_per_class,
        "test": max(profile.data.test_per_class, -(-MIN_TEST_IMAGES // len(class_names))),
    }
    labels = {}
    for split, (images, _) in splits.items():
        rng = RecordingGenerator(
            np.random.default_rng([profile.train.seed, SPLIT_STREAMS[split]]), spec.method, spec.args
        )
        drawn_images, _, _ = spec.make(per_class[split], rng, split=split)
        if drawn_images.shape != images.shape or not np.array_equal(drawn_images, images):
            raise RuntimeError(
                f"{name}: drawing {spec.base}'s {split} split again did not give its images, so its labels cannot be "
                f"read back; update {__name__} to the generator's new draws."
            )
        if len(rng.draws) != len(images):
            raise RuntimeError(
                f"{name}: {len(rng.draws)} draws of {spec.method}{spec.args} for {len(images)} images; "
                f"update {__name__} to the generator's new draws."
            )
        labels[split] = spec.bucket(np.asarray(rng.draws))
    return labels
