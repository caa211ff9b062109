"""The row-level noise inside the jackknifes of :mod:`lora_merge_utils.stats`, measured so that it is counted once.

A row of the grid (one merge x method x scored task x seed) is a task-level signal plus noise of its own: which of its
test images the merged model happens to get right, and its adapters' training randomness. The delete-one-**task**
jackknife is built for the signal, but a row depends on every member of its merge, so it is left out two or three
times and its noise is counted that many times over (3.9 times for the mean of every pair and triple of six tasks).
The delete-one-**seed** jackknife counts that noise once more, and the bootstrap of images once more again. Where
tasks differ little in how two methods compare, as they do in this book, that noise is most of a paired difference's
variance, and the sum of the three parts made its interval two to three times wider than the estimator's spread.

This module measures the noise from the rows themselves, in a form every jackknife can be corrected by:

* each part's rows form a table of *units* (merge, task and everything else that is not the seed) by seeds; the
  residuals of that table's two-way fit (unit and seed means removed) estimate each row's noise variance, and, between
  rows of different parts on the same merge, task and seed (two methods scored on the same images), their covariance;
* a jackknife's expectation under that noise alone is ``trace(Q S)``, where ``Q`` is the jackknife's quadratic form
  for the statistic linearised at the observed data and ``S`` the noise covariance; and the noise's own contribution
  to the statistic's variance is ``w' S w``, with ``w`` the linearised statistic's weights.

The intervals of :mod:`lora_merge_utils.stats` then add each jackknife's structured part (its value less its expected
noise, at least zero) to the noise counted once. Rows that do not form a full unit-by-seed table (one seed, or a unit
missing from a seed) give no noise estimate; the interval then falls back to the sum of the parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

UNIT_COLUMNS = ("members", "task", "method", "params", "weights", "family", "size")
"""The columns that name a row's unit: every column of a merges table that may tell two rows of one seed apart."""
MATCH_COLUMNS = ("members", "task", "seed")
"""Rows of different parts that agree on these are scored on the same images by adapters of the same seed."""


@dataclass(frozen=True)
class Linearised:
    """A statistic ``sum(sign * mean(part))`` (a ratio of means where a part has a denominator), linearised: row
    values ``z`` and weights ``w`` with ``w . z`` equal to the statistic's first-order change, and the part of each
    row."""

    z: np.ndarray
    w: np.ndarray
    part: np.ndarray


def linearise(parts: list[tuple[np.ndarray | tuple[np.ndarray, np.ndarray], float]]) -> Linearised:
    """``parts``: for each part, its observed row values (or ``(numerator, denominator)`` row values of a ratio of
    means) and its sign. Rows whose value is not finite get weight 0."""
    zs, ws, ids = [], [], []
    for index, (values, sign) in enumerate(parts):
        if isinstance(values, tuple):
            num, den = (np.asarray(v, dtype=float) for v in values)
            ok = np.isfinite(num) & np.isfinite(den)
            mean_den = den[ok].mean()
            ratio = num[ok].mean() / mean_den
            z = np.where(ok, (num - ratio * den) / mean_den, 0.0)
        else:
            z = np.asarray(values, dtype=float)
            ok = np.isfinite(z)
            z = np.where(ok, z, 0.0)
        n = max(int(ok.sum()), 1)
        zs.append(z)
        ws.append(np.where(ok, sign / n, 0.0))
        ids.append(np.full(len(z), index))
    return Linearised(np.concatenate(zs), np.concatenate(ws), np.concatenate(ids))


@dataclass(frozen=True)
class NoiseCovariance:
    """Each row's noise variance, and the covariance of the pairs of rows (``first``, ``second``, ``first < second``)
    scored on the same images by adapters of one seed."""

    variance: np.ndarray
    first: np.ndarray
    second: np.ndarray
    covariance: np.ndarray

    def form(self, a: np.ndarray, b: np.ndarray | None = None) -> float:
        """``a' S b`` (``b`` defaults to ``a``)."""
        b = a if b is None else b
        cross = (a[self.first] * b[self.second] + a[self.second] * b[self.first]) * self.covariance
        return float((a * b * self.variance).sum() + cross.sum())


def _codes(rows: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """One integer per row, equal for rows that agree on every one of ``columns`` the frame has (as text, so that
    lists and dicts compare by value)."""
    present = [c for c in columns if c in rows.columns]
    if not present:
        return np.zeros(len(rows), dtype=int)
    # each column's values numbered by their text, then the rows' tuples of numbers numbered in order of first
    # appearance (what groupby(sort=False).ngroup() numbers, at a fraction of its cost)
    codes = np.zeros(len(rows), dtype=np.int64)
    for column in present:
        values = rows[column]
        if values.dtype.kind in "iub":  # whole numbers: equal exactly when their text is
            column_codes = pd.factorize(values.to_numpy(), use_na_sentinel=False)[0]
        else:
            try:
                column_codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=False)
                textual = all(isinstance(u, str) for u in uniques)
            except TypeError:  # unhashable values: lists, dicts
                textual = False
            if not textual:  # compared by their text, as the rows' records print them
                column_codes = pd.factorize(values.astype(str).to_numpy(dtype=object), use_na_sentinel=False)[0]
        codes = pd.factorize(codes * (int(column_codes.max(initial=0)) + 1) + column_codes)[0]
    return codes


def noise_covariance(frames: list[pd.DataFrame], lin: Linearised) -> NoiseCovariance | None:
    """The rows' noise covariance from the two-way (unit x seed) residuals of ``lin.z`` within each part, or ``None``
    when a part is not a full unit-by-seed table with at least two units and two seeds."""
    residuals = np.zeros(len(lin.z))
    variance = np.zeros(len(lin.z))
    share = {}  # (units - 1)(seeds - 1) / (units * seeds): the part of the noise a two-way fit's residuals keep
    start = 0
    for index, rows in enumerate(frames):
        stop = start + len(rows)
        if "seed" not in rows.columns:
            return None
        ok = lin.w[start:stop] != 0
        unit = pd.factorize(_codes(rows, UNIT_COLUMNS)[ok])[0]  # the units of the rows that count, numbered 0..
        seed = pd.factorize(rows["seed"].to_numpy()[ok])[0]
        units, seeds = (int(unit.max()) + 1, int(seed.max()) + 1) if ok.any() else (0, 0)
        if units < 2 or seeds < 2:
            return None
        counts = np.zeros((units, seeds), dtype=int)
        np.add.at(counts, (unit, seed), 1)
        if (counts != 1).any():  # a unit missing from a seed, or two rows of one unit in a seed
            return None
        table = np.zeros((units, seeds))
        table[unit, seed] = lin.z[start:stop][ok]
        resid = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
        share[index] = (units - 1) * (seeds - 1) / (units * seeds)
        part_resid = np.zeros(stop - start)
        part_resid[ok] = resid[unit, seed]
        residuals[start:stop] = part_resid
        variance[start:stop] = np.where(ok, float((resid**2).mean()) / share[index], 0.0)
        start = stop
    key = _codes(pd.concat(frames, ignore_index=True), MATCH_COLUMNS)
    key = np.where(lin.w != 0, key, -1 - np.arange(len(key)))  # rows of weight 0 match nothing
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    bounds = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1], True])
    first, second = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi - lo > 1:
            group = np.sort(order[lo:hi])
            for i in range(len(group)):
                first.extend([group[i]] * (len(group) - i - 1))
                second.extend(group[i + 1 :])
    first, second = np.asarray(first, dtype=int), np.asarray(second, dtype=int)
    covariance = np.zeros(len(first))
    if len(first):
        # one covariance per pair of parts, pooled over their matched rows and scaled as the variances are: exact
        # where one part's units and seeds are among the other's (a paired difference, or pairs against all merges)
        parts = lin.part.max() + 1
        pair_of = lin.part[first] * parts + lin.part[second]
        for code in np.unique(pair_of):
            chosen = pair_of == code
            p, q = divmod(int(code), int(parts))
            products = residuals[first[chosen]] * residuals[second[chosen]]
            covariance[chosen] = products.mean() / min(share[p], share[q])
    return NoiseCovariance(variance, first, second, covariance)


def jackknife_noise(noise: NoiseCovariance, lin: Linearised, keeps: list[np.ndarray]) -> float:
    """What a delete-one jackknife over ``keeps`` (the rows each deletion keeps) of the linearised statistic is
    expected to measure from the rows' noise alone, ``trace(Q S)``: each deletion re-weights its kept rows to their
    part's mean."""
    weights = []
    for keep in keeps:
        w = np.zeros_like(lin.w)
        for part in np.unique(lin.part):
            in_part = (lin.part == part) & (lin.w != 0)
            kept = in_part & keep
            if not kept.any():
                break
            w[kept] = lin.w[in_part][0] * in_part.sum() / kept.sum()
        else:
            weights.append(w)
    if len(weights) < 2:
        return 0.0
    weights = np.asarray(weights)
    centred = weights - weights.mean(axis=0)
    g = len(weights)
    return (g - 1) / g * sum(noise.form(d) for d in centred)
