"""Intervals for the study's numbers, with a coverage this design has been measured to have.

A result of the grid (one row per merge x method x scored task x training seed) varies with three things:

* **tasks**: a merge's rows depend on every task it contains, the one scored and its partners: a pair's two rows and
  a triple's three all share the merge's tasks. With six tasks, the tasks are the main source of uncertainty;
* **training seeds**: the rows of one seed move together;
* **test images**: each task's test images are one sample (the same images for every row of that task: methods,
  merges and the single adapter are compared on the same images, paired).

Every interval here is ``estimate ± t × SE``. ``t`` is Student's quantile with one degree of freedom fewer than the
tasks (a few clusters make a normal quantile too narrow). ``SE`` adds three variance parts, each counted once:

* the **tasks'**: a delete-one-task jackknife (the statistic recomputed without every row whose merge contains that
  task), less the rows' own noise it is expected to contain;
* the **seeds'**: a delete-one-seed jackknife, less the same;
* the rows' own **noise** (which test images a merged model gets right, and its adapters' training randomness),
  measured from the rows themselves and counted once (:mod:`lora_merge_utils.row_noise`).

A row sits in the deletions of two or three tasks, so a jackknife alone counts its noise several times over; the
previous edition added the two jackknifes and a bootstrap of the images as they were (``Bootstrap(variance="sum")``),
which counted it about five times, and made a paired difference's interval about 2.3 times wider than the evidence
needs where tasks differ little in how two methods compare. Where the rows give no noise estimate (one seed, or a
merge missing from a seed), the interval falls back to that sum. A simulation of this book's design with the
heterogeneity of its own rows (:func:`lora_merge_utils.coverage.simulate_intervals`; chapter 3 prints it, and
``benchmarks/benchmark_intervals.py`` prints more) measures each kind of interval's coverage and width.

Rows store which test images were right as packed bits (:func:`pack`), so an image replicate's accuracy is a weighted
count. A difference between two methods is "resolved" when its interval excludes zero; verdicts that are read
together are Holm-corrected as one family (:func:`holm`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

LEVEL = 0.95
VARIANCES = ("sum", "noise_corrected")
"""How :class:`Bootstrap` adds the variance parts of an interval (see its docstring)."""


def pack(correct: Sequence[bool] | np.ndarray) -> str:
    """Which images were right, as a hex string (8 images a byte)."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes().hex()


def unpack(bits: str, n: int) -> np.ndarray:
    """The inverse of :func:`pack` for ``n`` images."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(bits), dtype=np.uint8))[:n].astype(bool)


@functools.lru_cache(maxsize=65536)
def _observed_accuracy(bits: str, n: int) -> float:
    """``unpack(bits, n).mean()``, once per packed string: a study's tables repeat the same single-adapter and
    head-only strings in every merge row, and an interval reads them again for every deletion. Counted as the bits
    of one integer (the same count over the same ``n``, so the same float), about ten times faster than unpacking."""
    raw = bytes.fromhex(bits)
    spare = 8 * len(raw) - n
    if n <= 0 or spare < 0:  # fewer bits than images: what unpack gives, and its mean
        return float(unpack(bits, n).mean())
    return (int.from_bytes(raw, "big") >> spare).bit_count() / n


@dataclass
class Bootstrap:
    """The uncertainty model of one study's tables: ``replicates`` seeded draws of each task's test images (shared by
    every statistic computed from it, so differences between methods are paired), and the tasks and seeds whose
    delete-one jackknife gives the rest of the variance. ``resample_tasks=False`` leaves tasks out (for one task's
    own interval). ``variance`` says how the parts are added: ``"sum"`` adds the three as they are;
    ``"noise_corrected"`` (the default) counts each row's own noise once (:mod:`lora_merge_utils.row_noise`), which
    the task and seed jackknifes and the image bootstrap otherwise each count again."""

    test_sizes: dict[str, int]
    seeds: Sequence[int]
    replicates: int = 1000
    seed: int = 0
    resample_tasks: bool = True
    variance: str = "noise_corrected"
    _counts: dict = field(default_factory=dict, repr=False)
    _accuracies: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.variance not in VARIANCES:
            raise ValueError(f"Unknown variance {self.variance!r}; use one of {', '.join(VARIANCES)}.")
        self.tasks = list(self.test_sizes)
        self.seeds = list(self.seeds)

    def _draws(self) -> dict[str, np.ndarray]:
        """Each task's ``[replicates, images]`` draw counts, drawn on first use and all at once in task order (so
        they do not depend on which task is asked for first): the noise-corrected intervals never need them."""
        if not self._counts:
            rng = np.random.default_rng(self.seed)
            for task, n in self.test_sizes.items():
                self._counts[task] = rng.multinomial(n, np.full(n, 1 / n), size=self.replicates).astype(np.float32)
        return self._counts

    def accuracy(self, task: str, correct: np.ndarray) -> np.ndarray:
        """The accuracy of each replicate's draw of ``task``'s test images."""
        counts = self._draws()[task]
        return counts @ correct.astype(np.float32) / counts.shape[1]

    def packed_accuracy(self, task: str, bits: str, n: int) -> np.ndarray:
        """:meth:`accuracy` of a packed row (:func:`pack`), computed once per task and string: a table repeats the
        same single-adapter and head-only strings in every merge row."""
        key = (task, bits, n)
        if key not in self._accuracies:
            self._accuracies[key] = self.accuracy(task, unpack(bits, n))
        return self._accuracies[key]


METRICS = ("accuracy", "normalized", "chance_normalized", "minus_head", "gain_kept")
"""Per row: merged accuracy; ``normalized`` = merged / single adapter; ``chance_normalized`` = (merged - chance) /
(single - chance), with chance = 1 / classes; ``minus_head`` = merged - head-only baseline (frozen backbone + head);
``gain_kept`` = (merged - head-only) / (single - head-only): the share of what the adapter adds over the floor
(one frozen backbone with the K head-only baselines) that the merge keeps. For a set of rows ``gain_kept`` is a ratio
of means, (mean merged - mean head-only) / (mean single - mean head-only): a row's own ratio has a denominator near
zero wherever the probe is almost as good as the adapter."""


def row_values(rows: pd.DataFrame, metric: str, boot: Bootstrap | None = None) -> np.ndarray:
    """The metric of every row: ``[rows]`` for the observed data, ``[replicates, rows]`` under ``boot``'s image
    draws."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; use one of {', '.join(METRICS)}.")
    if boot is None:
        return _observed_values(rows, metric)
    out = []
    for row in rows.itertuples(index=False):
        n = int(row.num_images)

        def acc(bits: str, task=row.task, n=n):
            return boot.packed_accuracy(task, bits, n)

        merged = acc(row.correct)
        if metric == "accuracy":
            out.append(merged)
            continue
        if metric == "minus_head":
            out.append(merged - acc(row.head_correct))
            continue
        single = acc(row.adapter_correct)
        if metric == "gain_kept":  # a row's own ratio (see METRICS); summaries take the ratio of means
            head = acc(row.head_correct)
            gain = single - head
            out.append((merged - head) / np.where(np.abs(gain) < 1e-9, np.nan, gain))
            continue
        chance = 1.0 / row.num_classes if metric == "chance_normalized" else 0.0
        room = single - chance  # an adapter at chance has nothing to keep: NaN, not a share of 1e9
        out.append((merged - chance) / np.where(room > 1e-9, room, np.nan))
    return np.stack(out, axis=-1)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval, standard error and the degrees of freedom of its t quantile."""

    value: float
    low: float
    high: float
    se: float = float("nan")
    df: float = float("inf")
    tasks_resampled: int = 0
    """How many tasks the jackknife left out in turn (0 means the rows' tasks could not be resampled, e.g. one merge of
    every task; the interval then covers seeds and images only)."""
    image_var: float = float("nan")
    """The rows' own noise in ``se ** 2`` (their test images and training; :mod:`lora_merge_utils.row_noise`), or the
    bootstrap of test images where the rows give no noise estimate."""
    task_var: float = float("nan")
    """The tasks' part of ``se ** 2`` (the delete-one-task jackknife less the rows' noise; 0 when tasks are not
    resampled)."""
    seed_var: float = float("nan")
    """The training seeds' part of ``se ** 2`` (the delete-one-seed jackknife less the rows' noise; 0 with one
    seed)."""

    @property
    def resolved(self) -> bool:
        """The interval excludes zero (for differences)."""
        return self.low > 0 or self.high < 0

    @property
    def p_value(self) -> float:
        """Two-sided p-value of "the true value is zero", from the same t distribution as the interval; 1 for an
        undefined estimate (NaN: it is evidence of nothing, and a Holm family still counts it)."""
        from scipy.stats import t

        if not np.isfinite(self.value):
            return 1.0
        if not np.isfinite(self.se) or self.se <= 0:
            return 0.0 if self.value != 0 else 1.0
        return float(2 * t.sf(abs(self.value) / self.se, self.df))

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def shares(self) -> dict[str, float]:
        """Each source's share of the variance, ``{"tasks": ..., "seeds": ..., "images": ...}``. ``"images"`` is the
        rows' own noise (:attr:`image_var`); the draw of test images that every seed shares counts with the tasks,
        whose jackknife removes it with each task (:func:`~lora_merge_utils.stats.image_variance` measures it).

        Example:
            >>> Estimate(0.0, -0.1, 0.1, 0.05, 5, 6, image_var=0.0005, task_var=0.0015, seed_var=0.0005).shares()
            {'tasks': 0.6, 'seeds': 0.2, 'images': 0.2}
        """
        parts = {"tasks": self.task_var, "seeds": self.seed_var, "images": self.image_var}
        total = sum(parts.values())
        return {name: round(part / total, 6) if total > 0 else float("nan") for name, part in parts.items()}

    def se_with_seeds(self, seeds_now: int, seeds: int) -> float:
        """The standard error with ``seeds`` training seeds instead of ``seeds_now`` (a power calculation): every
        seed shares the tasks, so their part stays; each seed brings its own draw of training noise and is scored on
        the same images, so the seeds' and the images' parts scale as ``seeds_now / seeds``.

        Example:
            >>> e = Estimate(0.0, -0.1, 0.1, 0.05, 5, 6, image_var=0.0005, task_var=0.0015, seed_var=0.0005)
            >>> round(e.se_with_seeds(2, 4), 4)  # 0.0015 + 0.001 / 2
            0.0447
        """
        return float(np.sqrt(self.task_var + (self.image_var + self.seed_var) * seeds_now / seeds))

    def se_with_images(self, images_now: float, images: float, image_var: float | None = None) -> float:
        """The standard error with ``images`` test images per task instead of ``images_now`` (a power calculation):
        the images' part of ``se ** 2``, ``image_var``, scales as ``images_now / images`` and the rest stays. Pass
        :func:`~lora_merge_utils.stats.image_variance` (the bootstrap of the images, the part every seed shares
        included); the default, the rows' own noise (:attr:`image_var`), leaves that shared part out.

        Example:
            >>> e = Estimate(0.0, -0.1, 0.1, 0.05, 5, 6, image_var=0.0005, task_var=0.0015, seed_var=0.0005)
            >>> round(e.se_with_images(200, 400), 4)  # 0.0015 + 0.0005 + 0.0005 / 2
            0.0474
            >>> round(e.se_with_images(200, 400, image_var=0.001), 4)  # 0.0025 - 0.001 + 0.001 / 2
            0.0447
        """
        part = self.image_var if image_var is None else image_var
        return float(np.sqrt(max(0.0, self.se**2 - part + part * images_now / images)))

    def smallest_resolvable(self, power: float = 0.8, level: float = LEVEL, se: float | None = None) -> float:
        """The smallest true difference this design would resolve (interval excluding zero) with probability
        ``power``: ``(t_{(1 + level) / 2} + t_{power}) * se`` on the interval's degrees of freedom (``se``: this
        estimate's, or another, e.g. from :meth:`se_with_seeds`).

        Example:
            >>> round(Estimate(0.0, -0.1, 0.1, 0.01, 5).smallest_resolvable(), 4)  # (2.571 + 0.920) * 0.01
            0.0349
        """
        from scipy.stats import t

        df = self.df if np.isfinite(self.df) else 1e9
        return float((t.ppf((1 + level) / 2, df) + t.ppf(power, df)) * (self.se if se is None else se))


def _observed_column(rows: pd.DataFrame, column: str) -> np.ndarray:
    """The accuracy each row's packed ``column`` records."""
    sizes = rows["num_images"].to_numpy()
    return np.array([_observed_accuracy(b, int(n)) for b, n in zip(rows[column].to_numpy(dtype=object), sizes)])


def _observed_values(rows: pd.DataFrame, metric: str) -> np.ndarray:
    """:func:`row_values` of the observed data, a column at a time: the same arithmetic on each row, element-wise,
    so the same bits as row by row."""
    merged = _observed_column(rows, "correct")
    if metric == "accuracy":
        return merged
    if metric == "minus_head":
        return merged - _observed_column(rows, "head_correct")
    single = _observed_column(rows, "adapter_correct")
    if metric == "gain_kept":
        head = _observed_column(rows, "head_correct")
        gain = single - head
        return (merged - head) / np.where(np.abs(gain) < 1e-9, np.nan, gain)
    chance = 1.0 / rows["num_classes"].to_numpy(dtype=float) if metric == "chance_normalized" else 0.0
    room = single - chance
    return (merged - chance) / np.where(room > 1e-9, room, np.nan)


def _adapter_gain(rows: pd.DataFrame, boot: Bootstrap | None) -> np.ndarray:
    """Single adapter minus head-only accuracy, per row (and replicate)."""
    if boot is None:
        return _observed_column(rows, "adapter_correct") - _observed_column(rows, "head_correct")
    out = []
    for row in rows.itertuples(index=False):
        n = int(row.num_images)
        single = boot.packed_accuracy(row.task, row.adapter_correct, n)
        out.append(single - boot.packed_accuracy(row.task, row.head_correct, n))
    return np.stack(out, axis=-1)


@dataclass(frozen=True)
class _Members:
    """The tasks each row depends on (its merge's members, or its task for rows of one task), held once per distinct
    merge: ``sets[codes[i]]`` is row ``i``'s. A study's rows repeat a few dozen merges, and every deletion of the task
    jackknife asks each row whether it holds the task left out."""

    codes: np.ndarray
    sets: tuple[frozenset[str], ...]

    def __len__(self) -> int:
        return len(self.codes)

    def tasks(self) -> set[str]:
        return set().union(*self.sets)

    def without(self, task: str) -> np.ndarray:
        """Which rows do not depend on ``task``."""
        return np.array([task not in s for s in self.sets], dtype=bool)[self.codes]


def _members(rows: pd.DataFrame) -> _Members:
    column = rows["members"] if "members" in rows.columns else rows["task"]
    codes, uniques = pd.factorize(column.to_numpy(dtype=object), use_na_sentinel=False)
    split = "members" in rows.columns
    sets = tuple(frozenset(str(u).split("+")) if split else frozenset({u}) for u in uniques)
    return _Members(np.asarray(codes, dtype=np.intp), sets)


def _jackknife(statistic, groups: list[tuple[np.ndarray, ...]]) -> tuple[float, int]:
    """Delete-one jackknife variance of ``statistic(*masks)`` over ``groups`` (one tuple of row masks per level
    left out; levels whose removal leaves nothing are skipped) and the number of levels used."""
    thetas = []
    for masks in groups:
        if all(mask.any() for mask in masks):
            thetas.append(statistic(*masks))
    thetas = np.asarray([t for t in thetas if np.isfinite(t)])
    n = len(thetas)
    return ((n - 1) / n * float(((thetas - thetas.mean()) ** 2).sum()) if n > 1 else 0.0), n


def _mean(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The mean over rows (the last axis): NaN where a row is, so an undefined row is never averaged away."""
    values = values if mask is None else values[..., mask]
    return np.mean(values, axis=-1)


def _undefined_rows(observed: list) -> int:
    """How many observed rows have no value (a share of an adapter at chance, a gain of zero)."""
    arrays = [array for values, _ in observed for array in (values if isinstance(values, tuple) else (values,))]
    return sum(int((~np.isfinite(array)).sum()) for array in arrays)


def _part_values(rows: pd.DataFrame, metric: str, boot: Bootstrap | None = None):
    """A part's row values, or ``(numerator, denominator)`` row values for ``gain_kept``, a ratio of means."""
    if metric == "gain_kept":  # (merged - head) over (single - head)
        return row_values(rows, "minus_head", boot), _adapter_gain(rows, boot)
    return row_values(rows, metric, boot)


def _part_mean(part, mask: np.ndarray | None = None) -> np.ndarray:
    if isinstance(part, tuple):
        return _mean(part[0], mask) / _mean(part[1], mask)
    return _mean(part, mask)


def _image_bootstrap(parts: list[tuple[pd.DataFrame, float]], metric: str, boot: Bootstrap) -> float:
    """The variance of ``sum(sign * mean)`` over ``boot``'s draws of test images, the same draw for every seed."""
    replicated = [(_part_values(rows, metric, boot), sign) for rows, sign in parts]
    return float(np.nanvar(sum(sign * _part_mean(part) for part, sign in replicated), ddof=1))


def image_variance(rows: pd.DataFrame, metric: str, boot: Bootstrap, minus: pd.DataFrame | None = None) -> float:
    """The variance of :func:`estimate` (with ``minus``: of :func:`difference`, ``rows - minus``) over the bootstrap
    of test images alone, every seed scored on the same draw: what the test images carry of its uncertainty. That
    includes the part every seed shares, which the interval counts in its tasks' jackknife (a task's rows all use
    its images) and :attr:`Estimate.image_var`, the rows' own noise, leaves out. A power calculation of the test
    images' count scales this (:meth:`Estimate.se_with_images`)."""
    parts = [(rows, 1.0)] + ([] if minus is None else [(minus, -1.0)])
    return _image_bootstrap(parts, metric, boot)


def _interval(parts: list[tuple[pd.DataFrame, float]], metric: str, boot: Bootstrap, level: float = LEVEL) -> Estimate:
    """The interval of ``sum(sign * mean(metric over rows))`` over ``parts`` (one part: an estimate; two with signs
    +1 and -1: a paired difference)."""
    from scipy.stats import t as student

    def values(rows, boot=None):
        return _part_values(rows, metric, boot)

    mean = _part_mean
    observed = [(values(rows), sign) for rows, sign in parts]
    if _undefined_rows(observed):
        # as the plain summaries do (evaluation.summarize_merges): NaN, never the mean of the rows that are defined
        return Estimate(float("nan"), float("nan"), float("nan"))

    def statistic(*masks):
        return sum(sign * float(mean(part, mask)) for (part, sign), mask in zip(observed, masks))

    def image_bootstrap() -> float:
        return _image_bootstrap(parts, metric, boot)

    point = statistic(*[np.ones(len(rows), bool) for rows, _ in parts])
    tasks_of = [_members(rows) for rows, _ in parts]
    seeds_of = [rows["seed"].to_numpy() for rows, _ in parts]
    task_var, seed_var, df, clusters = 0.0, 0.0, float("inf"), 0
    tasks = sorted(set().union(*[m.tasks() for m in tasks_of if len(m)]))
    if boot.resample_tasks and len(tasks) > 1:
        deletions = [tuple(members.without(task) for members in tasks_of) for task in tasks]
        jackknifed, used = _jackknife(statistic, deletions)
        if used > 1:
            task_var, df, clusters = jackknifed, used - 1, used
    seeds = sorted(set().union(*[set(s.tolist()) for s in seeds_of]))
    if len(seeds) > 1:
        seed_var, used = _jackknife(statistic, [tuple(s != seed for s in seeds_of) for seed in seeds])
        if not np.isfinite(df):
            df = used - 1
    corrected = None
    if boot.variance == "noise_corrected" and clusters:
        corrected = _noise_corrected(parts, observed, tasks_of, seeds_of, tasks, seeds, task_var, seed_var)
    if corrected is None:
        image_var = image_bootstrap()
    else:
        image_var, task_var, seed_var = corrected
    se = float(np.sqrt(max(0.0, image_var + task_var + seed_var)))  # identical parts: a rounding below 0
    q = float(student.ppf((1 + level) / 2, df)) if np.isfinite(df) else float(student.ppf((1 + level) / 2, 1e9))
    return Estimate(point, point - q * se, point + q * se, se, df, clusters, image_var, task_var, seed_var)


def _noise_corrected(parts, observed, tasks_of, seeds_of, tasks, seeds, task_var, seed_var):
    """``(noise, tasks' part, seeds' part)``: each jackknife less the rows' noise it is expected to contain, at least
    zero, and that noise counted once instead of the image bootstrap (:mod:`lora_merge_utils.row_noise`); ``None``
    where the rows give no noise estimate."""
    from .row_noise import jackknife_noise, linearise, noise_covariance

    lin = linearise(observed)
    noise = noise_covariance([rows for rows, _ in parts], lin)
    if noise is None:
        return None
    task_keeps = [np.concatenate([members.without(task) for members in tasks_of]) for task in tasks]
    sizes = np.cumsum([0] + [len(members) for members in tasks_of])
    if any(not keep[a:b].any() for keep in task_keeps for a, b in zip(sizes[:-1], sizes[1:])):
        # a task in every row of a part is never left out, so its images' draw is in no jackknife: keep the bootstrap
        return None
    seed_keeps = [np.concatenate([s != seed for s in seeds_of]) for seed in seeds]
    task_part = max(0.0, task_var - jackknife_noise(noise, lin, task_keeps))
    seed_part = max(0.0, seed_var - jackknife_noise(noise, lin, seed_keeps)) if len(seeds) > 1 else 0.0
    return noise.form(lin.w), task_part, seed_part


def estimate(rows: pd.DataFrame, metric: str, boot: Bootstrap, level: float = LEVEL) -> Estimate:
    """The mean of ``metric`` over ``rows`` with its interval (see the module docstring)."""
    return _interval([(rows, 1.0)], metric, boot, level)


def difference(
    rows_a: pd.DataFrame, rows_b: pd.DataFrame, metric: str, boot: Bootstrap, level: float = LEVEL
) -> Estimate:
    """``mean(a) - mean(b)`` of ``metric``, paired: both means use the same images, and each task or seed left out
    by the jackknife is left out of both."""
    return _interval([(rows_a, 1.0), (rows_b, -1.0)], metric, boot, level)


def holm(estimates: dict[str, Estimate], alpha: float = 1 - LEVEL) -> dict[str, bool]:
    """Which differences stay resolved when read together as one family, by Holm's step-down correction of their
    p-values (``alpha`` for the family).

    Example:
        >>> pairs, triples = Estimate(0.01, -0.02, 0.04, 0.012, 5), Estimate(0.029, 0.0007, 0.0573, 0.011, 5)
        >>> triples.resolved, holm({"pairs": pairs, "triples": triples})
        (True, {'pairs': False, 'triples': False})
    """
    return holm_p_values({name: e.p_value for name, e in estimates.items()}, alpha)


def holm_p_values(p_values: dict, alpha: float = 1 - LEVEL) -> dict:
    """:func:`holm` on p-values (of any test: an interval's t, a permutation test): the smallest must be at most
    ``alpha / n``, the next ``alpha / (n - 1)``, and so on; every p-value after the first that fails stays unresolved.

    Example:
        >>> holm_p_values({"a": 0.001, "b": 0.03, "c": 0.04})
        {'a': True, 'b': False, 'c': False}
    """
    bad = {name: p for name, p in p_values.items() if not 0.0 <= p <= 1.0}  # NaN fails too
    if bad:
        raise ValueError(f"p-values must lie in [0, 1]; got {bad}. Pass each test's two-sided p-value.")
    ordered = sorted(p_values, key=lambda name: p_values[name])
    resolved, still = {}, True
    for rank, name in enumerate(ordered):
        still = still and p_values[name] <= alpha / (len(ordered) - rank)
        resolved[name] = still
    return {name: resolved[name] for name in p_values}


def summary_with_intervals(
    rows: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], boot: Bootstrap, level: float = LEVEL
) -> pd.DataFrame:
    """Per group of ``by``: each metric's mean and its interval (columns ``<metric>``, ``<metric>_low``,
    ``<metric>_high``) and the number of rows."""
    records = []
    for key, group in rows.groupby(list(by), sort=False):
        record = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for metric in metrics:
            e = estimate(group, metric, boot, level)
            record |= {metric: e.value, f"{metric}_low": e.low, f"{metric}_high": e.high}
        record["rows"] = len(group)
        records.append(record)
    return pd.DataFrame(records)


def intervals_for_display(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``summary`` (from :func:`summary_with_intervals`) for the page: each metric and its two bounds in one column,
    ``"0.963 [0.950, 0.978]"``, named without underscores. A third as many columns, so the table fits the book's
    content column instead of scrolling sideways.

    Example:
        >>> table = pd.DataFrame({"method": ["ties"], "normalized": [0.9634], "normalized_low": [0.95],
        ...                       "normalized_high": [0.978], "rows": [90]})
        >>> intervals_for_display(table).to_dict("records")
        [{'method': 'ties', 'normalized [95% interval]': '0.963 [0.950, 0.978]', 'rows': 90}]
    """
    shown = pd.DataFrame(index=summary.index)
    for column in summary.columns:
        if column.endswith(("_low", "_high")) and column.rsplit("_", 1)[0] in summary.columns:
            continue
        if f"{column}_low" in summary.columns and f"{column}_high" in summary.columns:
            shown[f"{column.replace('_', ' ')} [{LEVEL:.0%} interval]"] = [
                f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                for v, lo, hi in zip(summary[column], summary[f"{column}_low"], summary[f"{column}_high"])
            ]
        else:
            shown[column] = summary[column]
    return shown


def verdict(e: Estimate, better: str, worse: str, resolved: bool | None = None, power: float = 0.8) -> str:
    """Plain words for a paired difference ``better - worse``: which is ahead, or that it is not resolved, and the
    smallest true difference this design would resolve with probability ``power``
    (:meth:`Estimate.smallest_resolvable`; left out where ``e`` has no standard error), so that "not resolved" reads
    as "smaller than that, or not there". ``resolved`` overrides the interval's own reading (e.g. with
    :func:`holm`'s verdict for a family); the power stays the uncorrected one.

    Example:
        >>> verdict(Estimate(0.02, 0.005, 0.035, 0.0058, 5), "TIES", "averaging")
        'TIES beats averaging by +0.020 [+0.005, +0.035] (80% power from ±0.020)'
        >>> verdict(Estimate(0.01, -0.004, 0.024, 0.0054, 5), "TIES", "averaging")
        'not resolved: +0.010 [-0.004, +0.024] includes 0: smaller than ±0.019, or not there (80% power)'
        >>> verdict(Estimate(0.02, 0.001, 0.04), "TIES", "averaging", resolved=False)
        'not resolved once corrected for the other verdicts: +0.020 [+0.001, +0.040]'
        >>> verdict(Estimate(float("nan"), float("nan"), float("nan")), "TIES", "averaging")[:10]
        'undefined:'
    """
    if not np.isfinite(e.value):
        return "undefined: a row has no value (an adapter at chance, or no gain to keep), and none is averaged away"
    size = e.smallest_resolvable(power) if np.isfinite(e.se) and e.se > 0 else float("nan")
    known = bool(np.isfinite(size))
    smallest = f"±{size:.3f}" if known else ""
    share = f"{power:.0%}"
    if resolved is False and e.resolved:
        text = f"not resolved once corrected for the other verdicts: {e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"
        return text + (f" ({share} power from {smallest} before the correction)" if known else "")
    if e.low > 0 or e.high < 0:
        sign = 1 if e.low > 0 else -1
        first, second = (better, worse) if sign > 0 else (worse, better)
        low, high = (e.low, e.high) if sign > 0 else (-e.high, -e.low)
        text = f"{first} beats {second} by {sign * e.value:+.3f} [{low:+.3f}, {high:+.3f}]"
        return text + (f" ({share} power from {smallest})" if known else "")
    text = f"not resolved: {e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}] includes 0"
    return text + (f": smaller than {smallest}, or not there ({share} power)" if known else "")
