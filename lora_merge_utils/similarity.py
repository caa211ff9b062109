"""How similar are two tasks? Measured in data (backbone features) and in weights (the adapters' updates), and
related to how well their adapters merge: Spearman correlation over all pairs, tested by permuting task labels
(the pairs share tasks, so they are not independent samples), with a leave-one-pair-out range."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import linalg, stats


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``[N, D]`` (the formula of FID):
    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``. 0 for identical distributions."""
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def frechet_by_pair(features: dict[str, torch.Tensor]) -> pd.Series:
    """The Fréchet distance between the frozen-backbone features of every pair of tasks, indexed ``"a+b"`` in the
    order of ``features`` (small = similar data, as the backbone sees it)."""
    return pd.Series(
        {f"{a}+{b}": frechet_distance(features[a], features[b]) for a, b in itertools.combinations(features, 2)},
        name="frechet_distance",
    )


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al., 2019) of two representations ``[N, D1]``, ``[N, D2]`` of
    the same N inputs: 1 when one is an orthogonal transform and rescaling of the other, near 0 when unrelated."""
    if len(x) != len(y):
        raise ValueError(f"CKA compares representations of the same inputs: got {len(x)} and {len(y)} rows.")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (x.T @ y).norm() ** 2
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()))


def weight_cosine(deltas_a: dict[str, torch.Tensor], deltas_b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Cosine similarity of two adapters' updates per layer, plus ``"overall"`` over all layers flattened together."""
    layers = sorted(set(deltas_a) & set(deltas_b))
    if not layers:
        raise ValueError("The two adapters share no target layer.")
    result = {}
    for name in layers:
        a, b = deltas_a[name].flatten().double(), deltas_b[name].flatten().double()
        result[name] = float(a @ b / (a.norm() * b.norm()))
    flat_a = torch.cat([deltas_a[n].flatten().double() for n in layers])
    flat_b = torch.cat([deltas_b[n].flatten().double() for n in layers])
    result["overall"] = float(flat_a @ flat_b / (flat_a.norm() * flat_b.norm()))
    return result


def pairwise(tasks: Sequence[str], measure) -> pd.DataFrame:
    """``measure(a, b)`` for every unordered pair, as a tidy table ``task_a, task_b, value``."""
    return pd.DataFrame(
        [{"task_a": a, "task_b": b, "value": measure(a, b)} for a, b in itertools.combinations(tasks, 2)]
    )


def _pair_key(a: str, b: str, index) -> str:
    return f"{a}+{b}" if f"{a}+{b}" in index else f"{b}+{a}"


def permutation_test(similarity: pd.Series, retention: pd.Series, tasks: Sequence[str]) -> dict[str, float]:
    """Spearman's rho between a similarity and a retention over all task pairs (both indexed ``"a+b"``), with a
    two-sided permutation p-value that permutes the **task labels** of the similarity (a Mantel test: all
    ``len(tasks)!`` relabellings, 720 for six tasks). Pairs share tasks, so resampling pairs as if they were
    independent (a plain bootstrap) understates the uncertainty; relabelling tasks keeps that structure."""
    pairs = list(retention.index)
    y = retention.to_numpy(dtype=float)
    x = similarity.reindex(pairs).to_numpy(dtype=float)
    observed = float(stats.spearmanr(x, y).statistic)
    extreme, total = 0, 0
    for perm in itertools.permutations(tasks):
        relabel = dict(zip(tasks, perm))
        permuted = [
            similarity[_pair_key(relabel[a], relabel[b], similarity.index)] for a, b in (p.split("+") for p in pairs)
        ]
        rho = stats.spearmanr(permuted, y).statistic
        extreme += abs(rho) >= abs(observed) - 1e-12
        total += 1
    return {"rho": observed, "p": extreme / total, "permutations": total, "n": len(pairs)}


def leave_one_out(similarity: pd.Series, retention: pd.Series) -> tuple[float, float]:
    """The smallest and largest Spearman rho when each pair in turn is left out: how much one pair moves it."""
    pairs = list(retention.index)
    rhos = []
    for drop in pairs:
        keep = [p for p in pairs if p != drop]
        rhos.append(stats.spearmanr(similarity.reindex(keep), retention.reindex(keep)).statistic)
    return float(min(rhos)), float(max(rhos))


def spearman_with_ci(
    x: Sequence[float], y: Sequence[float], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Spearman's rho of ``x`` and ``y`` with a percentile bootstrap interval that resamples pairs as if they were
    independent. For task pairs they are not (see :func:`permutation_test`); this is kept to show the difference."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"Need two equally long samples of at least 3 values, got {len(x)} and {len(y)}.")
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if np.unique(x[idx]).size > 1 and np.unique(y[idx]).size > 1:
            boots.append(stats.spearmanr(x[idx], y[idx]).statistic)
    low, high = np.nanpercentile(boots, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return {"rho": rho, "low": float(low), "high": float(high), "n": len(x)}
