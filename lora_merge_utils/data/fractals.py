"""FractalDB-style synthetic images: the pretraining data of the tiny backbone.

Kataoka et al. (2020, "Pre-training without Natural Images") pretrain vision models on images of fractals drawn by
iterated function systems (IFS): each category is one random IFS, its instances are small perturbations of it.
Nakashima et al. (2022) showed ViTs learn useful features this way. We follow that recipe at 32 px so the tiny
backbone never sees the six tasks' data or any natural image.
"""

from __future__ import annotations

import numpy as np


def sample_ifs(rng: np.random.Generator, min_fill: float = 0.12, max_tries: int = 500) -> np.ndarray:
    """Draw one IFS (``n`` affine maps as rows ``a b c d e f``) whose attractor fills at least ``min_fill`` of its box.

    The filling-rate filter is FractalDB's: it rejects IFS that collapse to a point or a thin line.
    """
    for _ in range(max_tries):
        n_maps = int(rng.integers(2, 5))
        params = rng.uniform(-1.0, 1.0, size=(n_maps, 6))
        if _fill_rate(params) >= min_fill:
            return params
    raise RuntimeError("Could not draw an IFS that fills its box; lower min_fill.")


def _probabilities(params: np.ndarray) -> np.ndarray:
    det = np.abs(params[:, 0] * params[:, 3] - params[:, 1] * params[:, 2]) + 1e-3
    return det / det.sum()


def chaos_game(params: np.ndarray, rng: np.random.Generator, n_points: int = 4096, chains: int = 256) -> np.ndarray:
    """Points on the IFS attractor, by running ``chains`` random walks in parallel (vectorised chaos game)."""
    probs = _probabilities(params)
    steps = n_points // chains
    burn_in = 12
    xy = rng.uniform(-1, 1, size=(chains, 2))
    points = np.empty((steps, chains, 2))
    for step in range(burn_in + steps):
        choice = rng.choice(len(params), size=chains, p=probs)
        a, b, c, d, e, f = params[choice].T
        xy = np.stack([a * xy[:, 0] + b * xy[:, 1] + e, c * xy[:, 0] + d * xy[:, 1] + f], axis=1)
        if step >= burn_in:
            points[step - burn_in] = xy
    points = points.reshape(-1, 2)
    return points[np.isfinite(points).all(axis=1)]


def _normalise(points: np.ndarray) -> np.ndarray:
    low, high = np.percentile(points, [1, 99], axis=0)
    span = np.maximum(high - low, 1e-6)
    return (points - low) / span.max()


def _fill_rate(params: np.ndarray, size: int = 32) -> float:
    rng = np.random.default_rng(0)
    points = _normalise(chaos_game(params, rng, n_points=2048, chains=128))
    if len(points) == 0:
        return 0.0
    idx = np.clip((points * (size - 1)).astype(int), 0, size - 1)
    canvas = np.zeros((size, size), dtype=bool)
    canvas[idx[:, 1], idx[:, 0]] = True
    return float(canvas.mean())


def render(params: np.ndarray, rng: np.random.Generator, size: int = 32, supersample: int = 2) -> np.ndarray:
    """One ``size x size x 3`` uint8 image of the attractor: random colour, placement and scale on a dark background."""
    big = size * supersample
    points = _normalise(chaos_game(params, rng))
    scale = rng.uniform(0.6, 0.95)
    offset = rng.uniform(0, 1 - scale, size=2)
    idx = np.clip(((points * scale + offset) * (big - 1)).astype(int), 0, big - 1)
    canvas = np.zeros((big, big), dtype=np.float32)
    np.add.at(canvas, (idx[:, 1], idx[:, 0]), 1.0)
    canvas = np.minimum(canvas / max(np.percentile(canvas[canvas > 0], 50), 1e-6), 1.0)
    canvas = canvas.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    colour = rng.uniform(0.3, 1.0, size=3)
    background = rng.uniform(0.0, 0.25, size=3)
    image = background + canvas[..., None] * (colour - background)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def perturb(params: np.ndarray, rng: np.random.Generator, spread: float = 0.1) -> np.ndarray:
    """An instance of a category: one parameter of one map scaled by a factor near 1 (FractalDB's jitter)."""
    params = params.copy()
    row, col = rng.integers(len(params)), rng.integers(6)
    params[row, col] *= rng.uniform(1 - spread, 1 + spread)
    return params


def make_fractal_dataset(
    num_classes: int, per_class: int, seed: int = 0, size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """``num_classes`` IFS categories with ``per_class`` rendered instances each: ``(images uint8 NHWC, labels)``."""
    rng = np.random.default_rng(seed)
    categories = [sample_ifs(rng) for _ in range(num_classes)]
    images = np.empty((num_classes * per_class, size, size, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(num_classes), per_class)
    for i, label in enumerate(labels):
        images[i] = render(perturb(categories[label], rng), rng, size=size)
    return images, labels
