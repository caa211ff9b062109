"""How similar are two tasks? Measured in data (backbone features) and in weights (the adapters' updates), and
related to how well their adapters merge (Spearman correlation with a bootstrap confidence interval)."""

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
    return pd.DataFrame([{"task_a": a, "task_b": b, "value": measure(a, b)}
                         for a, b in itertools.combinations(tasks, 2)])


def spearman_with_ci(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Spearman's rho of ``x`` and ``y`` with a percentile bootstrap confidence interval (pairs resampled with
    replacement, seeded). With 15 pairs the interval is wide: that width is part of the answer."""
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
