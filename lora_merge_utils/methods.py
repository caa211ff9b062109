"""The merge methods by name, each declaring what it is, what it needs and which knobs it takes; and the one check of
a merge request that the library (:func:`~lora_merge_utils.merging.merge_adapters`) and the command line (``merge``)
share.

Nothing here needs a model or torch: a request is checked against the declarations before any adapter is loaded, and
``python -m lora_merge_utils list`` prints them at once. Three kinds of implementation stand behind the names:

* ``combine``: a function of :mod:`lora_merge_utils.combine` on the true updates ``dW_i = scaling_i B_i A_i``;
* ``peft_combination``: a combination type of PEFT's ``add_weighted_adapter`` (some act on the A and B factors
  separately, ``level="factors"``);
* ``adapts``: AdaMerging's schedule, which learns its coefficients from unlabeled images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .ranges import Range

MAX_WEIGHT = 1e3
"""Largest merge weight (in absolute value) accepted — official sweeps stop at 3, and far larger weights overflow the
half-precision arithmetic a GPU merge runs in."""

MAX_SEED = 2**32 - 1
"""Largest seed accepted (NumPy's and PEFT's random generators take 32-bit seeds)."""


@dataclass(frozen=True)
class Knob:
    """A hyperparameter a merge method can take: its accepted values (a
    :class:`~lora_merge_utils.ranges.Range`, the same kind of record as a profile field's) and its default (``None``:
    required, or computed from the adapters, as said in ``help``)."""

    name: str
    help: str
    values: Range = field(default_factory=Range)
    default: object = None
    required: bool = False

    @property
    def range(self) -> str:
        """The accepted values in words, e.g. ``in (0, 1]`` or ``a whole number from 1 to 100000``."""
        return self.values.words

    def check(self, value: object, name: str) -> object:
        """``value`` converted to the knob's type if it is in range; a ``ValueError`` naming ``name`` otherwise."""
        return self.values.check(value, name)


_SHARE = Range(float, 0, 1, low_open=True)


KNOBS: dict[str, Knob] = {
    k.name: k
    for k in [
        Knob(
            "density",
            "fraction of each task's entries (or factor entries) kept",
            _SHARE,
            required=True,
        ),
        Knob(
            "trim_density",
            "share of each task's entries TIES's trim keeps after DARE's drop (MergeLM: 0.2; 1 skips the trim)",
            _SHARE,
            default=0.2,
        ),
        Knob(
            "common_fraction",
            "share of the spectrum given to the common subspace (1: all of it, which is Iso-C)",
            _SHARE,
            default=0.8,
        ),
        Knob(
            "svd_rank", "rank of the result (default: the largest input rank; at most the sum of ranks)", Range(int, 1)
        ),
        Knob("steps", "Adam steps (default: the method's schedule)", Range(int, 1, 100_000)),
        Knob("lr", "Adam's learning rate (default: the method's schedule)", Range(float, 0, 10, low_open=True)),
        Knob(
            "majority_sign_method",
            "how TIES elects each entry's sign",
            Range(str, choices=("total", "frequency")),
            default="total",
        ),
    ]
}
"""Every method-specific knob, by its keyword name (``--svd-rank`` on the command line for ``svd_rank``)."""

SEED = Knob(
    "seed", "seed of the method's randomness (DARE's drop, AdaMerging's batches)", Range(int, 0, MAX_SEED), default=0
)
"""Every method takes a seed (a run's property; methods without randomness ignore it)."""

ADAMERGING_PAPER = {"steps": 500, "lr": 1e-3, "init": 0.3, "batch_size": 32}
"""AdaMerging's official schedule — 500 Adam steps at lr 1e-3 from lambda = 0.3, each on two batches of 16 images per
task (one batch of 32 here: the same images per step; Adam's steps do not depend on the loss's overall scale)."""
ADAMERGING_SHORT = {"steps": 10, "lr": 0.02, "init": None, "batch_size": 16}
"""A schedule a hundred times cheaper, for chapters that merge dozens of times on a CPU — 10 steps at lr 0.02 on 16
images per task, from the merge weights given (plain averaging, 1/K, by default)."""

_SIGN = ("majority_sign_method",)


@dataclass(frozen=True)
class MergeMethod:
    """A merge method addressable by name: what it is, how it is implemented, what it needs and which knobs it takes.

    Exactly one of ``combine``, ``peft_combination`` and ``adapts`` is set: merging dispatches on which one, never on
    the method's name.
    """

    name: str
    description: str
    combine: str | None = None
    """Ours — the name of a function of :mod:`lora_merge_utils.combine` on the true updates."""
    peft_combination: str | None = None
    """PEFT's — the ``add_weighted_adapter`` combination type."""
    adapts: dict | None = None
    """AdaMerging's schedule (:data:`ADAMERGING_PAPER` or :data:`ADAMERGING_SHORT`): coefficients learned from
    unlabeled images."""
    knobs: tuple[str, ...] = ()
    """The method-specific knobs it takes (names of :data:`KNOBS`), besides the merge weights and the seed."""
    level: str = "updates"
    """``"updates"``: acts on the true updates ``dW_i``; ``"factors"``: on the A and B factors separately (not exact
    even for a plain sum)."""
    needs_equal_rank: bool = False
    random: bool = False
    """Its result depends on the seed."""
    data: str = "none"
    """What the method needs besides the adapters — ``"none"``, or ``"unlabeled training images"``."""
    family: str | None = None
    """The data-free merge family it stands for in chapter 5's tuning table (:data:`lora_merge_utils.tuning.DATA_FREE`),
    or ``None`` for a method the table does not tune."""
    dense_svd_sets: tuple[int, int] = (0, 0)
    """How many sets of dense float64 SVDs of every target layer one merge runs, per member task and for the merge,
    as the official TSV and Iso code do: cheap on the tiny backbone, about 13 s of a T4 per set at ViT-B/16 scale
    (the time plan prices them). ``tsv_full`` decomposes each task's update and then both concatenated bases (about one
    set each), ``iso_c_full`` the sum, ``iso_cts_full`` the sum and each task's update."""
    compact_grid: bool = True
    """Whether its family is tuned and surveyed on the compact grid too, a GPU session's (``budget.tuning_grid``).
    The official dense recipes and KnOTS's configuration of DARE-TIES, which chapter 5 adds to set published numbers
    beside their own recipes, are left out of it to keep the full profile inside its T4 budget (see ``plan``)."""

    def __post_init__(self) -> None:
        implementations = [self.combine, self.peft_combination, self.adapts]
        if sum(i is not None for i in implementations) != 1:
            raise ValueError(f"Method {self.name!r} must name exactly one implementation.")
        unknown = set(self.knobs) - set(KNOBS)
        if unknown:
            raise ValueError(f"Method {self.name!r} declares unknown knobs {sorted(unknown)}.")


def _ours(name: str, description: str, *knobs: str, **more) -> MergeMethod:
    return MergeMethod(name, description, combine=name, knobs=knobs, **more)


def _peft(name: str, description: str, combination: str, *knobs: str, factors: bool = True, **more) -> MergeMethod:
    level = "factors" if factors else "updates"
    return MergeMethod(
        name, description, peft_combination=combination, knobs=knobs, level=level, needs_equal_rank=factors, **more
    )


MERGE_METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in [
        _ours(
            "task_arithmetic",
            "exact weighted sum of the updates, W + sum_i w_i dW_i (average: w_i = 1/K)",
            family="task arithmetic, scaled sum",
        ),
        _ours(
            "ties",
            "TIES on the true updates: keep each task's largest entries (whole model), elect signs, disjoint mean",
            "density",
            *_SIGN,
            family="TIES",
        ),
        _ours(
            "dare_linear",
            "DARE on the true updates: random drop to density and rescale, then weighted sum",
            "density",
            random=True,
        ),
        _ours(
            "dare_ties",
            "DARE on the true updates, then TIES-Merging in full (trim to trim_density, sign election, disjoint "
            "mean), as MergeLM does it",
            "density",
            "trim_density",
            *_SIGN,
            random=True,
            family="DARE-TIES",
        ),
        _ours(
            "dare_ties_no_trim",
            "DARE-TIES as KnOTS configures it (the published LoRA merges' DARE-TIES): DARE, then sign election and "
            "disjoint mean with no trim",
            "density",
            *_SIGN,
            random=True,
            family="DARE-TIES (KnOTS config, no trim)",
            compact_grid=False,
        ),
        _ours(
            "magnitude_prune",
            "keep each task's largest entries of the true update (whole model), then weighted sum",
            "density",
            family="magnitude pruning",
        ),
        _ours(
            "knots_ties",
            "KnOTS: the updates in a shared SVD basis, TIES on S V_i (whole model), mapped back",
            "density",
            *_SIGN,
            family="KnOTS-TIES",
        ),
        _ours(
            "core_ties",
            "Core Space TIES (for LoRA): each task's update as a small core matrix in bases shared by all tasks, TIES "
            "on the core matrices (per layer), mapped back",
            "density",
            *_SIGN,
            family="Core Space TIES",
        ),
        _ours(
            "tsv",
            "TSV-Merge: each task's singular vectors, made orthogonal across tasks, then summed",
            family="TSV-Merge (span)",
        ),
        _ours(
            "tsv_full",
            "TSV-Merge as the official code (dense: min(m, n)/K components per task, null-space ones included)",
            family="TSV-Merge (official)",
            dense_svd_sets=(1, 2),
            compact_grid=False,
        ),
        _ours("iso_c", "Iso-C: the weighted sum with a flat (isotropic) spectrum", family="Iso-C (span)"),
        _ours(
            "iso_cts",
            "Iso-CTS: common subspace of the sum plus task-specific subspaces, flat spectrum",
            "common_fraction",
            family="Iso-CTS (span)",
        ),
        _ours(
            "iso_c_full",
            "Iso-C over the paper's space (every direction of the dense sum, its null space's included)",
            family="Iso-C (official)",
            dense_svd_sets=(0, 1),
            compact_grid=False,
        ),
        _ours(
            "iso_cts_full",
            "Iso-CTS over the paper's space (dense SVDs; on LoRA updates the task-specific directions are arbitrary)",
            "common_fraction",
            family="Iso-CTS (official)",
            dense_svd_sets=(1, 1),
            compact_grid=False,
        ),
        _peft("linear", "PEFT linear: weighted sums of the A and of the B factors separately (not exact)", "linear"),
        _peft("cat", "PEFT cat: concatenated factors, exact, rank grows to the sum of ranks", "cat", factors=False),
        _peft("svd", "PEFT svd: exact sum truncated to svd_rank by SVD", "svd", "svd_rank", factors=False),
        _peft(
            "ties_on_factors",
            "PEFT ties: TIES on the A and on the B factors separately (not the updates)",
            "ties",
            "density",
            *_SIGN,
            family="TIES on factors (PEFT)",
        ),
        _peft(
            "dare_linear_on_factors",
            "PEFT dare_linear: DARE on the A and B factors separately",
            "dare_linear",
            "density",
            random=True,
        ),
        _peft(
            "dare_ties_on_factors",
            "PEFT dare_ties: DARE and TIES on the A and B factors separately",
            "dare_ties",
            "density",
            *_SIGN,
            random=True,
            family="DARE-TIES on factors (PEFT)",
        ),
        _peft(
            "magnitude_prune_on_factors",
            "PEFT magnitude_prune: on the A and B factors separately",
            "magnitude_prune",
            "density",
            family="magnitude pruning on factors (PEFT)",
        ),
        MergeMethod(
            "adamerging",
            "AdaMerging, the paper's schedule (500 Adam steps at lr 1e-3 from 0.3): a coefficient per layer and task, "
            "learned by minimising the entropy of the heads' predictions on unlabeled training images",
            adapts=ADAMERGING_PAPER,
            knobs=("steps", "lr"),
            data="unlabeled training images",
        ),
        MergeMethod(
            "adamerging_short",
            "AdaMerging on a short schedule (10 Adam steps at lr 0.02 from the merge weights, 1/K): a hundred times "
            "cheaper than the paper's",
            adapts=ADAMERGING_SHORT,
            knobs=("steps", "lr"),
            data="unlabeled training images",
        ),
    ]
}
"""Every merge method by name (``python -m lora_merge_utils list`` prints them)."""

DEFAULT_METHODS: tuple[str, ...] = ("task_arithmetic", "linear")
"""The methods the study compares unless told otherwise — the exact weighted sum and PEFT's default (factor-wise)."""


def get_merge_method(name: str) -> MergeMethod:
    """The method called ``name``; a ``ValueError`` lists the valid names."""
    try:
        return MERGE_METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown merge method {name!r}. Valid methods: {', '.join(MERGE_METHODS)}.") from None


def takers(knob: str) -> list[str]:
    """The methods that take ``knob``."""
    return [m.name for m in MERGE_METHODS.values() if knob in m.knobs]


@dataclass(frozen=True)
class Naming:
    """How a check's messages name things: as keyword arguments (the library) or as flags (the command line)."""

    flags: bool = False

    def knob(self, name: str) -> str:
        return "--" + name.replace("_", "-") if self.flags else name

    def argument(self, name: str) -> str:
        """How a call gives the knob: ``--density`` or ``density=``."""
        return self.knob(name) if self.flags else f"{name}="

    def method(self, name: str) -> str:
        return f"--method {name}" if self.flags else f"Method {name!r}"

    @property
    def member(self) -> str:
        return "task" if self.flags else "adapter"


LIBRARY, COMMAND_LINE = Naming(), Naming(flags=True)


def check_merge_request(
    method: str | MergeMethod,
    count: int,
    options: Mapping[str, object],
    weights: Sequence[float] | None = None,
    scale: float | None = None,
    seed: int = 0,
    naming: Naming = LIBRARY,
) -> tuple[list[float], dict[str, object]]:
    """Check a merge of ``count`` adapters before any model is touched, and resolve it.

    ``options`` are the method-specific knobs given (``None`` values count as not given). Returns the merge weights
    (``weights``, or ``scale`` for all, or ``1/K``) and every knob the method takes, defaults filled in (``None``
    where the default depends on the adapters). A ``ValueError`` of one line names the first problem and the fix,
    with the library's keyword names or the command line's flags (``naming``).

    Example:
        >>> check_merge_request("ties", 2, {"density": 0.5})
        ([0.5, 0.5], {'density': 0.5, 'majority_sign_method': 'total'})
        >>> check_merge_request("ties", 2, {"density": 0.5, "common_fraction": 0.5})
        Traceback (most recent call last):
        ...
        ValueError: Method 'ties' takes no common_fraction; only iso_cts, iso_cts_full do.
        >>> check_merge_request("ties", 2, {}, naming=COMMAND_LINE)
        Traceback (most recent call last):
        ...
        ValueError: --method ties needs --density, in (0, 1]: fraction of each task's entries (or factor entries) kept.
    """
    spec = method if isinstance(method, MergeMethod) else get_merge_method(method)
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if key not in spec.knobs:
            if key not in KNOBS:
                raise ValueError(f"{naming.method(spec.name)} has no knob {naming.knob(key)}; it takes {_list(spec)}.")
            raise ValueError(
                f"{naming.method(spec.name)} takes no {naming.knob(key)}; only {', '.join(takers(key))} do."
            )
    resolved: dict[str, object] = {}
    for key in spec.knobs:
        knob = KNOBS[key]
        if key in given:
            resolved[key] = knob.check(given[key], naming.knob(key))
        elif knob.required:
            raise ValueError(f"{naming.method(spec.name)} needs {naming.argument(key)}, {knob.range}: {knob.help}.")
        else:
            resolved[key] = knob.default
    SEED.check(seed, naming.knob("seed"))
    return _weights(count, weights, scale, naming), resolved


def _list(spec: MergeMethod) -> str:
    return ", ".join(spec.knobs) if spec.knobs else "none besides the weights and the seed"


def _weights(count: int, weights: Sequence[float] | None, scale: float | None, naming: Naming) -> list[float]:
    weights_name, scale_name = naming.knob("weights"), naming.knob("scale")
    if weights is not None and scale is not None:
        raise ValueError(
            f"Give either {naming.argument('weights')} (one per {naming.member}) or {naming.argument('scale')} (the "
            "same weight for all), not both."
        )
    if count < 1:
        raise ValueError(f"Give at least one {naming.member} to merge.")
    if weights is None:
        if scale is None:
            return [1.0 / count] * count
        weights, weights_name = [scale] * count, scale_name
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
        raise ValueError(f"{weights_name} must be a list of numbers, one per {naming.member}, got {weights!r}.")
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(f"{weights_name} must be numbers, got {list(weights)!r}.") from None
    if not all(math.isfinite(w) for w in values):
        raise ValueError(f"{weights_name} must be finite numbers, got {values}.")
    if any(abs(w) > MAX_WEIGHT for w in values):
        raise ValueError(
            f"{weights_name} must lie within +-{MAX_WEIGHT:g} (official sweeps stop at 3; larger weights overflow "
            f"half precision), got {values}."
        )
    if len(values) != count:
        raise ValueError(
            f"{weights_name} gives {len(values)} weight(s) for {count} {naming.member}(s); give one weight per "
            f"{naming.member}, or none for equal weights 1/K."
        )
    return values


@dataclass(frozen=True)
class MergeSpec:
    """A merge request: ``MergeSpec("ties d=0.5", "ties", {"density": 0.5})``, optionally with each task's head
    refitted on the merged backbone's features (``refit_heads=True``). A plain method name stands for
    ``MergeSpec(name, name, {})``."""

    label: str
    method: str
    params: dict = field(default_factory=dict)
    refit_heads: bool = False

    def __hash__(self) -> int:
        return hash((self.label, self.method, self.params_label, self.refit_heads))

    @classmethod
    def of(cls, spec: MergeSpec | str) -> MergeSpec:
        return spec if isinstance(spec, MergeSpec) else cls(spec, spec, {})

    @property
    def params_label(self) -> str:
        return json.dumps(self.params, sort_keys=True)

    @property
    def key(self) -> str:
        """What identifies the merge's result (the label is for display only)."""
        return json.dumps([self.method, self.params, self.refit_heads], sort_keys=True)

    def check(self, count: int) -> None:
        """Check the request for a merge of ``count`` adapters (:func:`check_merge_request`) without a model."""
        params = dict(self.params)
        weights, scale, seed = params.pop("weights", None), params.pop("scale", None), params.pop("seed", 0)
        check_merge_request(self.method, count, params, weights, scale, seed)
