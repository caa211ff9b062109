"""How often this book's 95% intervals cover the truth, measured by simulating its design.

The design: six tasks, three training seeds, every pair and every triple, each member task of a merge scored on the
same test images by every method (paired). A row's accuracy depends on its task, its partners, its seed and each
image's difficulty, on the logit scale; the true values are the population means over new tasks, partners, seeds and
images. :func:`simulate_coverage` draws many such studies and counts how often the intervals of
:mod:`lora_merge_utils.stats` contain the true mean accuracy of one method and the true difference between two.
``tests/test_stats.py`` fails if either rate falls below 0.93; chapter 3 prints both.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from .stats import Bootstrap, difference, estimate, pack

TASK_SD, PARTNER_SD, SEED_SD, ROW_SD, IMAGE_SD = 0.6, 0.3, 0.1, 0.1, 1.0
"""Standard deviations (logit scale) of the task, partner, seed, row and image effects of the simulated design."""
BASE_LOGIT = 1.2
"""The mean logit: about 77% accuracy, near the merges of the tiny profile."""


def simulated_grid(
    rng: np.random.Generator, tasks: int = 6, seeds: int = 3, images: int = 100, method_effect: float = 0.0
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """One simulated study: the rows (as :meth:`~lora_merge_utils.study.Study.merges_table` gives them) of two
    methods, ``a`` and ``b = a + method_effect`` on the logit scale with its own row noise, over every pair and
    triple of ``tasks`` tasks and ``seeds`` seeds, and the task names."""
    names = [f"t{i}" for i in range(tasks)]
    task_effect, partner_effect = rng.normal(0, TASK_SD, tasks), rng.normal(0, PARTNER_SD, tasks)
    seed_effect, difficulty = rng.normal(0, SEED_SD, seeds), rng.normal(0, IMAGE_SD, (tasks, images))
    out = {"a": [], "b": []}
    for combo in itertools.chain(itertools.combinations(range(tasks), 2), itertools.combinations(range(tasks), 3)):
        for scored in combo:
            for seed in range(seeds):
                partners = partner_effect[list(set(combo) - {scored})].sum()
                base = BASE_LOGIT + task_effect[scored] + partners + seed_effect[seed]
                for method, shift in (("a", 0.0), ("b", method_effect)):
                    logit = base + shift + rng.normal(0, ROW_SD) - difficulty[scored]
                    correct = rng.random(images) < 1 / (1 + np.exp(-logit))
                    out[method].append(
                        {
                            "members": "+".join(names[i] for i in combo),
                            "task": names[scored],
                            "seed": seed,
                            "num_images": images,
                            "num_classes": 10,
                            "correct": pack(correct),
                            "adapter_correct": pack(np.ones(images, bool)),
                            "head_correct": pack(np.zeros(images, bool)),
                        }
                    )
    return pd.DataFrame(out["a"]), pd.DataFrame(out["b"]), names


def population_mean(effect: float, draws: int = 20000) -> float:
    """The true mean accuracy of the simulated design with a method effect of ``effect`` (Monte Carlo over new tasks,
    partners, seeds and images)."""
    rng = np.random.default_rng(123)
    pair = rng.random(draws) < 1 / 3  # a pair's rows are a third of all rows (30 of 90 per seed)
    partners = rng.normal(0, PARTNER_SD, draws) + np.where(pair, 0.0, rng.normal(0, PARTNER_SD, draws))
    logit = (
        BASE_LOGIT
        + effect
        + rng.normal(0, TASK_SD, draws)
        + partners
        + rng.normal(0, SEED_SD, draws)
        + rng.normal(0, ROW_SD, draws)
        - rng.normal(0, IMAGE_SD, draws)
    )
    return float(np.mean(1 / (1 + np.exp(-logit))))


def simulate_coverage(studies: int = 160, method_effect: float = 0.3, seed: int = 7) -> dict[str, float]:
    """Draw ``studies`` simulated studies and return how often the 95% interval of method ``a``'s mean accuracy and
    that of the paired difference ``b - a`` contain the true values: ``{"mean": ..., "difference": ...,
    "studies": ...}``. About 10 seconds on two CPU cores for the default 160 studies."""
    if studies < 1:
        raise ValueError(f"simulate_coverage needs at least one study, got {studies}.")
    rng = np.random.default_rng(seed)
    truth_a, truth_b = population_mean(0.0), population_mean(method_effect)
    hit_mean = hit_difference = 0
    for _ in range(studies):
        rows_a, rows_b, names = simulated_grid(rng, method_effect=method_effect)
        images = rows_a.groupby("task")["num_images"].first().astype(int).to_dict()  # the grid's own sizes
        seeds = sorted(int(s) for s in rows_a["seed"].unique())
        boot = Bootstrap({t: images[t] for t in names}, seeds=seeds, replicates=100, seed=int(rng.integers(1e9)))
        level = estimate(rows_a, "accuracy", boot)
        gap = difference(rows_b, rows_a, "accuracy", boot)
        hit_mean += level.low <= truth_a <= level.high
        hit_difference += gap.low <= truth_b - truth_a <= gap.high
    return {"mean": hit_mean / studies, "difference": hit_difference / studies, "studies": studies}
