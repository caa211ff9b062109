"""Profiles: every setting that differs between the offline ``tiny`` world and the Colab ``full`` world.

A profile is a frozen dataclass addressed by name, the way timm addresses models: ``get_profile("tiny")``.
All other modules read their settings from it, so the training, merging and evaluation code is one code path.

Any field can be changed for one run without editing code, through ``$LORA_BOOK_OVERRIDES``: a JSON object (inline,
or the path of a JSON file) of dotted field names, e.g. ``{"data.train_size": 500, "train.adapter_epochs": 1}``.
Overrides are applied to whichever profile is picked by name, are listed by
:meth:`~lora_merge_utils.study.Study.describe`, and send artifacts to a folder of their own (``artifacts/full-<hash>``),
so a shrunk run never mixes with a real one.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .ranges import Range

if TYPE_CHECKING:  # torch is imported where it is used: the command line lists profiles without loading it
    import torch

PROFILE_ENV_VAR = "LORA_BOOK_PROFILE"
OVERRIDES_ENV_VAR = "LORA_BOOK_OVERRIDES"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build the frozen ViT.

    ``model_name`` is a timm model name. ``overrides`` are keyword arguments passed to ``timm.create_model``
    (the tiny profile uses them to shrink a ViT to 32 px). ``weights`` is either ``"asset:<file>"`` (weights shipped
    inside this package), ``"hub"`` (timm downloads the pretrained tag), or a path to a local weights file.
    """

    model_name: str
    weights: str
    overrides: dict = field(default_factory=dict)
    local_weights_env: str = "LORA_BOOK_BACKBONE_FILE"

    def __hash__(self) -> int:  # a dict field: hash its sorted JSON so profiles stay usable as cache keys
        return hash((self.model_name, self.weights, json.dumps(self.overrides, sort_keys=True), self.local_weights_env))


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyperparameters shared by every adapter of a profile."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    # A regex anchored at the blocks, not a list of bare names: a bare name can match a module outside the
    # attention and MLP layers (chapter 0's exercise 0.2 asks which one).
    target_modules: str = r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"

    def __post_init__(self) -> None:
        check_fields(self, "lora")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class FieldRule:
    """The values a profile field accepts: a number of a type in a range (each item of it, for a tuple), possibly
    ``None``, or a regular expression."""

    values: Range
    optional: bool = False
    each: bool = False
    empty: bool = False
    """Whether ``each`` accepts an empty tuple too (one that switches the work off)."""
    regex: bool = False

    def check(self, value: object, name: str) -> None:
        if value is None and self.optional:
            return
        if self.regex:
            try:
                _require(isinstance(value, str) and value != "", "")
                re.compile(value)  # type: ignore[arg-type]
            except (re.error, ValueError) as error:
                detail = f" ({error})" if isinstance(error, re.error) else ""
                raise ValueError(
                    f"{name} must be a regular expression of module names, got {value!r}{detail}."
                ) from None
            return
        if self.each:
            _require(
                isinstance(value, tuple | list) and (len(value) > 0 or self.empty),
                f"{name} must list {'zero' if self.empty else 'one'} or more values, each {self.values.words}, "
                f"got {value!r}.",
            )
            for item in value:  # type: ignore[union-attr]
                self.values.check(item, name)
            return
        self.values.check(value, name)

    @property
    def range(self) -> str:
        if self.regex:
            return "a regular expression"
        text = f"each {self.values.words}" if self.each else self.values.words
        return text + (", or null (all)" if self.optional else "")


def _int(low: int, high: int, **more) -> FieldRule:
    return FieldRule(Range(int, low, high), **more)


def _number(low: float, high: float, low_open: bool = False, high_open: bool = False, **more) -> FieldRule:
    return FieldRule(Range(float, low, high, low_open, high_open), **more)


IMAGES = 10_000_000
"""More images than any split of any dataset the book reads."""

FIELDS: dict[str, FieldRule] = {
    "image_size": _int(8, 1024),
    "seeds": _int(1, 100),
    "num_workers": _int(0, 64),
    "lora.rank": _int(1, 1024),
    "lora.alpha": _number(0, 1e4, low_open=True),
    "lora.dropout": _number(0, 1, high_open=True),
    "lora.target_modules": FieldRule(Range(str), regex=True),
    "train.head_l2": _number(0, 1e6, each=True),
    "train.head_max_iter": _int(1, 1_000_000),
    "train.adapter_epochs": _int(1, 1000),
    "train.adapter_lr": _number(0, 10, low_open=True),
    "train.adapter_weight_decay": _number(0, 10),
    "train.batch_size": _int(1, 65536),
    "train.eval_batch_size": _int(1, 65536),
    "train.seed": _int(0, 2**32 - 1),
    "data.train_per_class": _int(1, 100_000),
    "data.val_per_class": _int(1, 100_000),
    "data.test_per_class": _int(1, 100_000),
    "data.train_size": _int(1, IMAGES, optional=True),
    "data.val_size": _int(1, IMAGES),
    "data.test_size": _int(1, IMAGES, optional=True),
    "budget.tuning_images": _int(1, IMAGES, optional=True),
    "budget.tuning_grid": FieldRule(Range(str, choices=("shared", "compact"))),
    "budget.tuning_pairs": _int(1, 10_000, optional=True),
    "budget.comparison_images": _int(1, IMAGES, optional=True),
    "budget.refit_images": _int(1, IMAGES, optional=True),
    "budget.survey_sizes": _int(2, 64, each=True),
    "budget.curve_sizes": _int(2, 64, each=True, empty=True),
    "budget.timing_rounds": _int(1, 10_000),
    "budget.paper_schedule_pairs": _int(0, 10_000),
    "budget.rank_sweep_seeds": _int(1, 100, optional=True),
    "budget.rank_sweep_leaders": FieldRule(Range(bool)),
    "backbone.overrides.img_size": _int(8, 1024),
    "backbone.overrides.patch_size": _int(1, 1024),
    "backbone.overrides.embed_dim": _int(1, 65536),
    "backbone.overrides.depth": _int(1, 1024),
    "backbone.overrides.num_heads": _int(1, 1024),
    "backbone.overrides.mlp_ratio": _number(0, 64, low_open=True),
}
"""Every numeric profile field (dotted, as ``$LORA_BOOK_OVERRIDES`` names it) with the values it accepts: checked when
a profile is built or overridden, so that a bad value fails in one line before any work, in the library, the command
line and ``plan`` alike. ``python -c "from lora_merge_utils.profiles import field_table; print(field_table())"``
prints it."""


def check_fields(obj: object, prefix: str) -> None:
    """Check the fields of ``obj`` (a settings dataclass, or ``backbone.overrides``) named ``<prefix>.<field>`` in
    :data:`FIELDS`; a ``ValueError`` names the first bad one and its range."""
    values = obj if isinstance(obj, dict) else {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    for name, value in values.items():
        rule = FIELDS.get(f"{prefix}.{name}" if prefix else name)
        if rule is not None:
            rule.check(value, f"{prefix}.{name}" if prefix else name)


def field_table() -> str:
    """:data:`FIELDS` as a two-column text table."""
    width = max(map(len, FIELDS))
    return "\n".join(f"{name:{width}s}  {rule.range}" for name, rule in FIELDS.items())


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings for the head-only baseline and for the adapters."""

    head_l2: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    """L2 penalties tried for the logistic-regression heads; the one best on the validation split is kept."""
    head_max_iter: int = 500
    adapter_epochs: int = 6
    adapter_lr: float = 5e-3
    adapter_weight_decay: float = 1e-4
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "train")


GENERATED_IMAGE_SIZE = 32
"""The side of every generated task's images (:mod:`lora_merge_utils.data.synthetic` draws them at this size): a
profile of generated tasks has this ``image_size``."""


_DEFERRED: contextvars.ContextVar[bool] = contextvars.ContextVar("profile_checks_deferred", default=False)
"""Set while :func:`apply_overrides` applies its keys one at a time: the checks that relate two fields wait for the
last key (``image_size`` and ``backbone.overrides.img_size`` change together)."""


def _check_sizes(profile: Profile) -> None:
    """The image sizes agree: generated tasks are drawn at :data:`GENERATED_IMAGE_SIZE`, and a backbone built for
    ``img_size`` is fed images of that size."""
    _require(
        not isinstance(profile.data, GeneratedData) or profile.image_size == GENERATED_IMAGE_SIZE,
        f"image_size {profile.image_size} does not apply to generated tasks: they are drawn at "
        f"{GENERATED_IMAGE_SIZE} px, so image_size must be {GENERATED_IMAGE_SIZE} (a run would ignore it and label "
        "its artifacts folder with it).",
    )
    side = dict(profile.backbone.overrides).get("img_size")
    sides = tuple(side) if isinstance(side, list | tuple) else (side, side)
    _require(
        side is None or sides == (profile.image_size, profile.image_size),
        f"backbone.overrides.img_size {side} is not image_size {profile.image_size}: the backbone would be built for "
        "other images than it is fed. Change both together.",
    )


@dataclass(frozen=True)
class GeneratedData:
    """Tasks built offline (tiny profile) from data that installed packages carry or that we generate.

    Sizes are images **per class**; generated tasks get at least 300 test images whatever ``test_per_class`` says.
    """

    train_per_class: int = 300
    val_per_class: int = 50
    test_per_class: int = 40

    def __post_init__(self) -> None:
        check_fields(self, "data")


@dataclass(frozen=True)
class HubData:
    """Tasks read from Hugging Face Hub datasets (full profile), or from local ``save_to_disk`` copies of them.

    Sizes are images **per task**, drawn class-balanced (``size // classes`` per class, fewer where a class has fewer)
    with the profile's seed; ``None`` keeps the whole split. Validation images come out of the hub's training
    split, disjoint from the training images. Only the hub's ``train`` and ``test`` splits are downloaded.
    """

    train_size: int | None = 2000
    val_size: int = 500
    test_size: int | None = 1000
    data_dir: str | None = None
    """A folder of ``<task>/`` copies saved with ``DatasetDict.save_to_disk`` (``$LORA_BOOK_DATA_DIR`` wins)."""

    def __post_init__(self) -> None:
        check_fields(self, "data")


@dataclass(frozen=True)
class Budget:
    """How many images per task the chapters that try many merge settings score, so that they fit a session.

    ``None`` uses the whole split. The full profile chooses hyperparameters on a sample of the validation split, and
    both profiles compare merge methods (chapter 5) on a sample of the test split; every method of that comparison is
    scored on the same sample.
    """

    tuning_images: int | None = None
    """Validation images per task used to choose merge hyperparameters."""
    tuning_grid: str = "shared"
    """The grid hyperparameters are chosen on, ``"shared"`` (one scale grid and one density grid for every method,
    :data:`~lora_merge_utils.tuning.LAMBDAS` and :data:`~lora_merge_utils.tuning.DENSITIES`) or ``"compact"`` (three
    values of each, for a session that cannot afford the shared grid, and without the families
    :attr:`~lora_merge_utils.methods.MergeMethod.compact_grid` leaves out)."""
    tuning_pairs: int | None = None
    """How many pairs hyperparameters are chosen on, ``None`` for every pair (see
    :func:`~lora_merge_utils.tuning.tuning_merges`)."""
    comparison_images: int | None = None
    """Test images per task used by chapter 5's comparison of merge methods."""
    refit_images: int | None = None
    """Labelled training images per task used to refit heads on a merged backbone."""
    survey_sizes: tuple[int, ...] = (2, 3)
    """The merge sizes on which chapter 5 surveys every method (the leading methods are always scored on pairs and
    triples)."""
    curve_sizes: tuple[int, ...] = (2, 3, 4, 5, 6)
    """The merge sizes along which chapter 5 follows its best data-free and best data-light methods beside task
    arithmetic, each scale chosen again on validation for every size above 2 (pairs keep the tuning table's choice;
    sizes above the number of tasks are left out, and ``()`` skips the curve)."""
    timing_rounds: int = 20
    """Rounds of chapter 7's interleaved timings (each round times every strategy once)."""
    paper_schedule_pairs: int = 2
    """On how many pairs chapter 5 runs AdaMerging on the paper's schedule beside the short one. The exercises' two
    come first, then the other pairs, and every pair where it is at least their number
    (:func:`~lora_merge_utils.tuning.schedule_pairs`). Each such merge costs about fifty times a short merge; 0 skips
    the comparison."""
    rank_sweep_seeds: int | None = None
    """How many training seeds chapter 6's rank sweep trains its adapters of other ranks with (the first ones),
    ``None`` for every seed. Its comparisons' variance is mostly the tasks' (the chapter prints each part and what
    one more seed would narrow), and each seed of the sweep costs as much training as a seed of the six adapters
    twice over."""
    rank_sweep_leaders: bool = True
    """Whether chapter 6's rank sweep also merges by chapter 5's best data-free and best data-light method, on
    chapter 5's sample of test images (``budget.comparison_images``)."""

    def __post_init__(self) -> None:
        check_fields(self, "budget")


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the two worlds.

    Attributes:
        name: ``"tiny"`` or ``"full"``.
        image_size: Side of the square images fed to the backbone.
        backbone: How to build and load the ViT.
        tasks: The six task names, in a fixed order (the order of every table and plot).
        similar_pairs: Task pairs built to be similar, used to test the study's similarity claim.
        related_tasks: Tasks on a main task's images with other labels (``lora_merge_utils.data.tasks.RELABELLINGS``,
            coarsenings of its classes, and, for generated images only, ``CONFLICTING_RELABELLINGS``, labels that cut
            across them): the study's sense of "similar", trained and merged like the six, outside the six-task grid.
        data: Where the tasks come from and how many images each split keeps (:class:`GeneratedData` or
            :class:`HubData`).
        lora / train: Hyperparameters.
        budget: How many images the chapters that try many merge settings score (see :class:`Budget`).
        seeds: Training seeds per adapter: every adapter is trained this many times, and the tables' intervals
            resample them.
        amp: Use mixed precision on CUDA.
        num_workers: DataLoader worker processes for decoding images (0 decodes in the main process).
        smoke: A shrunk run that only proves the code path works (stand-in data, a shallow backbone): its numbers
            mean nothing, and checks that need real pretrained weights are skipped, saying so.
        calibrated_checks: The chapters' checks of what the world shows (:func:`~lora_merge_utils.course.checks.check`)
            were calibrated on this profile's data, so a failed check stops the chapter: it means a bug. Otherwise (real
            data) a failed check prints what published work leads us to expect and the chapter goes on.
        overrides: The ``$LORA_BOOK_OVERRIDES`` applied to this profile, as ``(dotted name, JSON value)`` pairs.
    """

    name: str
    image_size: int
    backbone: BackboneSpec
    tasks: tuple[str, ...]
    similar_pairs: tuple[tuple[str, str], ...]
    data: GeneratedData | HubData
    related_tasks: tuple[str, ...] = ()
    lora: LoraSettings = LoraSettings()
    train: TrainSettings = TrainSettings()
    budget: Budget = Budget()
    seeds: int = 1
    amp: bool = True
    num_workers: int = 0
    smoke: bool = False
    calibrated_checks: bool = False
    overrides: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # The name is a folder under $LORA_BOOK_ARTIFACTS (Profile.label): never a path out of it.
        _require(
            isinstance(self.name, str)
            and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name) is not None
            and ".." not in self.name
            and self.name != "datasets",  # the data samples' folder beside the profiles' ones
            f"name must be a plain folder name (letters, digits, '_', '-', '.'; no '..'; not 'datasets'), got "
            f"{self.name!r}.",
        )
        check_fields(self, "")
        check_fields(self.backbone.overrides, "backbone.overrides")
        _require(
            all(isinstance(t, str) and t for t in (*self.tasks, *self.related_tasks)),
            f"tasks and related_tasks must be names (strings), got {list(self.tasks) + list(self.related_tasks)}.",
        )
        _require(len(set(self.tasks)) == len(self.tasks) > 0, f"tasks must name tasks once each, got {self.tasks}.")
        if not _DEFERRED.get():
            _check_sizes(self)

    def replace(self, **changes) -> Profile:
        """A copy with some fields changed (profiles are frozen)."""
        return replace(self, **changes)

    @property
    def label(self) -> str:
        """The name, plus a short hash of the overrides if any — the name of this variant's artifact folder."""
        if not self.overrides:
            return self.name
        digest = hashlib.sha256(json.dumps(self.overrides).encode()).hexdigest()[:8]
        return f"{self.name}-{digest}"


TINY = Profile(
    name="tiny",
    image_size=32,
    backbone=BackboneSpec(
        model_name="vit_tiny_patch16_224",
        weights="asset:tiny_vit_formula.safetensors",
        overrides=dict(img_size=32, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0, global_pool="avg"),
    ),
    tasks=("digits", "mnist", "letters", "shapes", "textures", "gratings"),
    similar_pairs=(("digits", "mnist"),),
    data=GeneratedData(train_per_class=300, val_per_class=50, test_per_class=40),
    related_tasks=("digits_parity", "shapes_family", "letters_font", "gratings_frequency"),
    train=TrainSettings(adapter_epochs=4, adapter_lr=1e-2),
    # Chapter 5 compares methods on 200 test images per task (of 300-400), which saves it nearly half of the images
    # it scores: the bootstrap of the images puts their share of its comparisons' variance at 7-42%, so with every
    # image each would resolve an effect 2-10% smaller (chapter 5's power table prints both).
    budget=Budget(refit_images=1000, rank_sweep_seeds=2, comparison_images=200),
    seeds=3,
    calibrated_checks=True,
)
"""The offline profile: a 0.69 M-parameter ViT (32 px, patch 8, width 96, depth 6) pretrained by
``scripts/pretrain_tiny_backbone.py`` on formula-driven synthetic images (fractals, contours, strokes), and six small
tasks built from data that installed packages carry or that we generate; every adapter trained with three seeds. The
whole grid runs in minutes on a 2-core CPU."""

FULL = Profile(
    name="full",
    image_size=224,
    backbone=BackboneSpec(model_name="vit_base_patch16_224.augreg_in21k", weights="hub"),
    tasks=("mnist", "svhn", "eurosat", "resisc45", "gtsrb", "dtd"),
    similar_pairs=(("mnist", "svhn"), ("eurosat", "resisc45")),
    # 500 test images per task: the six tasks carry most of every comparison's variance (chapter 5's power table
    # prints the images' share in the tiny profile), and the images are most of a T4 session's evaluations.
    data=HubData(train_size=2000, val_size=500, test_size=500),
    related_tasks=("mnist_parity", "eurosat_landuse"),
    lora=LoraSettings(rank=8, alpha=16, dropout=0.1),
    train=TrainSettings(adapter_epochs=2, adapter_lr=5e-4, batch_size=64, eval_batch_size=256),
    budget=Budget(
        tuning_images=80,
        tuning_grid="compact",
        tuning_pairs=3,  # three pairs that use every task once
        comparison_images=100,
        refit_images=200,
        survey_sizes=(2,),
        paper_schedule_pairs=0,  # one pair would add about 6 T4 minutes to chapter 5 (see `plan`)
        # chapter 5's K curve would add about 11 T4 minutes to chapter 5; chapter 6's leaders at every rank about 4
        # (12 on a fresh runtime, which computes chapter 5's tuning table first): `plan` with LORA_BOOK_OVERRIDES
        curve_sizes=(),
        rank_sweep_leaders=False,
        # chapter 7's ratios differ from 1 by a factor of two and more; 10 rounds resolve a few percent
        timing_rounds=10,
    ),
    num_workers=2,
)
"""The Colab GPU profile: timm ViT-B/16 pretrained on ImageNet-21k at 224 px and six Hugging Face Hub datasets
(MNIST and SVHN are the similar digit pair, EuroSAT and RESISC45 the similar remote-sensing pair, GTSRB and DTD stand
apart). Each task keeps a class-balanced sample: about 2,000 training images, 500 validation images (held out of the
hub's training split) and 500 test images (from the hub's test split). ``python -m lora_merge_utils plan --profile
full`` prints the expected time of every chapter on a Colab T4."""

PROFILES: dict[str, Profile] = {"tiny": TINY, "full": FULL}


def _running_on_colab_gpu() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    import torch

    return torch.cuda.is_available()


def default_profile_name() -> str:
    """``$LORA_BOOK_PROFILE`` if set, else ``full`` on a Colab GPU runtime, else ``tiny``."""
    env = os.environ.get(PROFILE_ENV_VAR)
    if env:
        return env
    return "full" if _running_on_colab_gpu() else "tiny"


def get_profile(name: str | Profile | None = None) -> Profile:
    """Return the profile called ``name`` (``"tiny"`` or ``"full"``) with ``$LORA_BOOK_OVERRIDES`` applied;
    ``None`` picks :func:`default_profile_name`; a :class:`Profile` is returned as it is.

    Example:
        >>> profile = get_profile("tiny")
        >>> profile.tasks
        ('digits', 'mnist', 'letters', 'shapes', 'textures', 'gratings')
        >>> profile.lora.rank, profile.seeds
        (8, 3)
    """
    if isinstance(name, Profile):
        return name
    if name is None:
        name = default_profile_name()
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(
            f"Unknown profile {name!r}. Valid profiles: {', '.join(sorted(PROFILES))}. "
            f"Pass one of them, or set ${PROFILE_ENV_VAR} to one of them."
        ) from None
    overrides = read_overrides()
    return apply_overrides(profile, overrides) if overrides else profile


def all_tasks(profile: Profile) -> tuple[str, ...]:
    """The profile's six tasks, then its relabelled ones (``related_tasks``)."""
    return tuple(profile.tasks) + tuple(profile.related_tasks)


def check_task_name(profile: Profile, name: str) -> None:
    """Raise a ``ValueError`` listing the valid names if ``name`` is not one of the profile's tasks."""
    if name not in all_tasks(profile):
        raise ValueError(
            f"Unknown task {name!r} for the {profile.name!r} profile. Valid tasks: {', '.join(all_tasks(profile))}."
        )


def read_overrides() -> dict:
    """``$LORA_BOOK_OVERRIDES`` as a dict: an inline JSON object, or the path of a JSON file holding one."""
    value = os.environ.get(OVERRIDES_ENV_VAR, "").strip()
    if not value:
        return {}
    source = "it"
    if not value.startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"${OVERRIDES_ENV_VAR} is neither a JSON object nor an existing file: {value!r}.")
        source, value = str(path), path.read_text()
    try:
        overrides = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"${OVERRIDES_ENV_VAR}: {source} is not valid JSON ({error}).") from None
    if not isinstance(overrides, dict):
        raise ValueError(
            f'${OVERRIDES_ENV_VAR} must hold a JSON object of dotted names, e.g. {{"data.train_size": 500}}.'
        )
    return overrides


def apply_overrides(profile: Profile, overrides: dict) -> Profile:
    """A copy of ``profile`` with dotted fields replaced, e.g. ``{"train.adapter_epochs": 1,
    "backbone.overrides.depth": 2}``; names and value types are checked, and the overrides are recorded in
    :attr:`Profile.overrides`.

    Example:
        >>> small = apply_overrides(get_profile("full"), {"data.train_size": 500, "seeds": 3})
        >>> small.data.train_size, small.seeds, small.label.startswith("full-")
        (500, 3, True)
        >>> apply_overrides(get_profile("full"), {"data.train_sise": 500})
        Traceback (most recent call last):
        ...
        ValueError: ...
    """
    token = _DEFERRED.set(True)
    try:
        for key, value in sorted(overrides.items()):
            profile = _set_path(profile, key.split("."), value, key)
    finally:
        _DEFERRED.reset(token)
    _check_sizes(profile)
    recorded = dict(profile.overrides)
    recorded.update({key: json.dumps(value, sort_keys=True) for key, value in overrides.items()})
    return replace(profile, overrides=tuple(sorted(recorded.items())))


def _set_path(obj, parts: list[str], value, key: str):
    head, rest = parts[0], parts[1:]
    if isinstance(obj, dict):  # e.g. backbone.overrides.depth: timm keyword arguments, free-form
        if rest:
            raise ValueError(f"Override {key!r}: {head!r} holds a plain value, not fields.")
        return {**obj, head: value}
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"Override {key!r}: {type(obj).__name__} has no fields to set.")
    names = [f.name for f in dataclasses.fields(obj) if f.name != "overrides" or isinstance(obj, BackboneSpec)]
    if head not in names:
        raise ValueError(f"Override {key!r}: {type(obj).__name__} has no field {head!r}. Valid: {', '.join(names)}.")
    current = getattr(obj, head)
    new = _set_path(current, rest, value, key) if rest else _checked(current, value, key)
    return replace(obj, **{head: new})


def _checked(current, value, key: str):
    """The JSON value, converted to the field's type where that is lossless; a clear error otherwise."""
    if dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise ValueError(f"Override {key!r}: give a JSON object of its fields, got {value!r}.")
        for name, item in value.items():
            current = _set_path(current, [name], item, f"{key}.{name}")
        return current
    if isinstance(current, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(current, bool | type(None)):
            raise ValueError(f"Override {key!r}: expected {type(current).__name__}, got {value!r}.")
        return value
    if isinstance(current, tuple):
        if not isinstance(value, list):
            raise ValueError(f"Override {key!r}: expected a list, got {value!r}.")
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if isinstance(current, float) and isinstance(value, int | float):
        return float(value)
    if current is None or value is None or isinstance(value, type(current)):
        return value
    raise ValueError(f"Override {key!r}: expected {type(current).__name__}, got {value!r}.")


def progress_enabled() -> bool:
    """Progress bars are on unless ``$LORA_BOOK_PROGRESS`` is ``0`` (the notebook execute command turns them off so
    stored outputs hold results, not bars)."""
    return os.environ.get("LORA_BOOK_PROGRESS", "1").lower() not in ("0", "false", "no", "off")


def get_device() -> torch.device:
    """CUDA when available, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
