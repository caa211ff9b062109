"""Intervals for the study's numbers: a bootstrap that resamples what varies, paired where methods are compared.

A result of the grid (one row per merge x method x scored task x training seed) varies with three things, and the
bootstrap resamples all three in every replicate:

* **test images**: each task's test images are drawn again with replacement (the same draw for every row of that
  task, so methods, merges and the single adapter are compared on the same images: paired);
* **training seeds**: the seeds are drawn again with replacement (rows of a seed move together);
* **tasks**: the scored tasks are drawn again with replacement. A task appears in several merges (each of six tasks
  is in five pairs), so its rows are not independent: resampling tasks as clusters keeps that dependence.

Rows store which test images were right as packed bits (:func:`pack`), so a replicate's accuracy is a weighted
count. A difference between two methods is "resolved" only when its interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

LEVEL = 0.95


def pack(correct: Sequence[bool] | np.ndarray) -> str:
    """Which images were right, as a hex string (8 images a byte)."""
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes().hex()


def unpack(bits: str, n: int) -> np.ndarray:
    """The inverse of :func:`pack` for ``n`` images."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(bits), dtype=np.uint8))[:n].astype(bool)


@dataclass
class Bootstrap:
    """``replicates`` draws of test images (per task), training seeds and tasks, seeded, shared by every statistic
    computed from it (so differences between methods are paired)."""

    test_sizes: dict[str, int]
    seeds: Sequence[int]
    replicates: int = 1000
    seed: int = 0
    resample_tasks: bool = True
    _counts: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.tasks = list(self.test_sizes)
        self.seeds = list(self.seeds)
        for task, n in self.test_sizes.items():
            self._counts[task] = rng.multinomial(n, np.full(n, 1 / n), size=self.replicates).astype(np.float32)
        self.seed_weights = rng.multinomial(
            len(self.seeds), np.full(len(self.seeds), 1 / len(self.seeds)), size=self.replicates
        ).astype(float)
        tasks = len(self.tasks)
        self.task_weights = (
            rng.multinomial(tasks, np.full(tasks, 1 / tasks), size=self.replicates).astype(float)
            if self.resample_tasks
            else np.ones((self.replicates, tasks))
        )

    def accuracy(self, task: str, correct: np.ndarray) -> np.ndarray:
        """The accuracy of each replicate's draw of ``task``'s test images."""
        counts = self._counts[task]
        return counts @ correct.astype(np.float32) / counts.shape[1]

    def weights(self, tasks: Iterable[str], seeds: Iterable[int]) -> np.ndarray:
        """``[replicates, rows]``: each row's weight in each replicate (its task's and its seed's multiplicity)."""
        task_index = {t: i for i, t in enumerate(self.tasks)}
        seed_index = {s: i for i, s in enumerate(self.seeds)}
        t = np.array([task_index[x] for x in tasks])
        s = np.array([seed_index[x] for x in seeds])
        return self.task_weights[:, t] * self.seed_weights[:, s]


METRICS = ("accuracy", "normalized", "chance_normalized", "minus_head")
"""Per row: merged accuracy; ``normalized`` = merged / single adapter; ``chance_normalized`` = (merged - chance) /
(single - chance), with chance = 1 / classes; ``minus_head`` = merged - head-only baseline (frozen backbone + head)."""


def row_values(rows: pd.DataFrame, metric: str, boot: Bootstrap | None = None) -> np.ndarray:
    """The metric of every row: ``[rows]`` for the observed data, ``[replicates, rows]`` under ``boot``."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; use one of {', '.join(METRICS)}.")
    out = []
    for row in rows.itertuples(index=False):
        n = int(row.num_images)

        def acc(bits: str, task=row.task, n=n):
            correct = unpack(bits, n)
            return boot.accuracy(task, correct) if boot is not None else correct.mean()

        merged = acc(row.correct)
        if metric == "accuracy":
            out.append(merged)
            continue
        if metric == "minus_head":
            out.append(merged - acc(row.head_correct))
            continue
        single = acc(row.adapter_correct)
        chance = 1.0 / row.num_classes if metric == "chance_normalized" else 0.0
        out.append((merged - chance) / np.maximum(single - chance, 1e-9))
    return np.stack(out, axis=-1)


def _mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return (values * weights).sum(-1) / np.maximum(weights.sum(-1), 1e-12)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def resolved(self) -> bool:
        """The interval excludes zero (for differences)."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _interval(point: float, replicates: np.ndarray, level: float = LEVEL) -> Estimate:
    low, high = np.nanpercentile(replicates, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return Estimate(float(point), float(low), float(high))


def estimate(rows: pd.DataFrame, metric: str, boot: Bootstrap, level: float = LEVEL) -> Estimate:
    """The mean of ``metric`` over ``rows`` with its bootstrap interval."""
    point = float(np.mean(row_values(rows, metric)))
    weights = boot.weights(rows["task"], rows["seed"])
    return _interval(point, _mean(row_values(rows, metric, boot), weights), level)


def difference(
    rows_a: pd.DataFrame, rows_b: pd.DataFrame, metric: str, boot: Bootstrap, level: float = LEVEL
) -> Estimate:
    """``mean(a) - mean(b)`` of ``metric``, paired: both means use the same replicates (images, seeds, tasks)."""
    a, b = row_values(rows_a, metric, boot), row_values(rows_b, metric, boot)
    point = float(np.mean(row_values(rows_a, metric)) - np.mean(row_values(rows_b, metric)))
    diff = _mean(a, boot.weights(rows_a["task"], rows_a["seed"])) - _mean(
        b, boot.weights(rows_b["task"], rows_b["seed"])
    )
    return _interval(point, diff, level)


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


def verdict(e: Estimate, better: str, worse: str) -> str:
    """Plain words for a paired difference ``better - worse``: which is ahead, or that it is not resolved.

    Example:
        >>> verdict(Estimate(0.02, 0.005, 0.035), "TIES", "averaging")
        'TIES beats averaging by +0.020 [+0.005, +0.035]'
        >>> verdict(Estimate(0.01, -0.004, 0.024), "TIES", "averaging")
        'not resolved: +0.010 [-0.004, +0.024] includes 0'
    """
    if e.low > 0:
        return f"{better} beats {worse} by {e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"
    if e.high < 0:
        return f"{worse} beats {better} by {-e.value:+.3f} [{-e.high:+.3f}, {-e.low:+.3f}]"
    return f"not resolved: {e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}] includes 0"
