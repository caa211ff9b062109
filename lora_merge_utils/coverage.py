"""How often this book's 95% intervals cover the truth, measured by simulating its design.

The design: six tasks, three training seeds, every pair and every triple, each member task of a merge scored on the
same test images by every method (paired). A row's accuracy depends on its task, its partners, its seed and each
image's difficulty, on the logit scale; the true values are the population means over new tasks, partners, seeds and
images. :func:`simulate_intervals` draws many such studies, with the method x task and task x seed heterogeneity
that :func:`heterogeneity` estimates from a study's own rows, and measures how often the intervals of
:mod:`lora_merge_utils.stats` contain the true mean accuracy of one method, the true difference between two and the
true share of the gain kept, how wide they are against the estimates' spread, and how often a difference is resolved.
``tests/test_stats.py`` fails if a mean's or a difference's coverage falls below 0.93; chapter 3 prints the table.
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


KINDS = ("mean", "difference", "gain kept")
"""The kinds of number whose intervals the simulation measures (method ``a``'s mean accuracy, the paired difference
``b - a``, and ``a``'s share of the gain kept)."""
ADAPTER_GAIN, HEAD_LOSS = 1.0, 0.6
"""With ``references=True``: a task's single adapter is this much above the merges' mean logit, and its head-only
baseline this much below (the tiny profile's adapters add about 5-20 points over their heads)."""


def simulated_grid(
    rng: np.random.Generator,
    tasks: int = 6,
    seeds: int = 3,
    images: int = 100,
    method_effect: float = 0.0,
    method_task_sd: float = 0.0,
    task_seed_sd: float = 0.0,
    references: bool = False,
    scored_partner_correlation: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """One simulated study: the rows (as :meth:`~lora_merge_utils.study.Study.merges_table` gives them) of two
    methods, ``a`` and ``b = a + method_effect`` on the logit scale with its own row noise, over every pair and
    triple of ``tasks`` tasks and ``seeds`` seeds, and the task names.

    Heterogeneity (logit scale): ``method_task_sd``, how much ``b``'s effect differs between tasks; ``task_seed_sd``,
    how much a task's rows move together within one seed. ``references=True`` draws each task's single adapter and
    head-only baseline per seed on the same images (``ADAPTER_GAIN``/``HEAD_LOSS``), as the book's rows have them,
    instead of always right and always wrong; the share of the gain kept then is a ratio with a noisy denominator.
    ``scored_partner_correlation`` correlates a task's effect on its own rows with its effect on its partners' (a
    task that is hard to score may also be a hard partner); 0 draws the numbers it always drew."""
    if not -1.0 <= scored_partner_correlation <= 1.0:
        raise ValueError(f"scored_partner_correlation must lie in [-1, 1]; got {scored_partner_correlation}.")
    names = [f"t{i}" for i in range(tasks)]
    task_effect, partner_effect = rng.normal(0, TASK_SD, tasks), rng.normal(0, PARTNER_SD, tasks)
    if scored_partner_correlation:
        rho = scored_partner_correlation
        partner_effect = PARTNER_SD * rho * task_effect / TASK_SD + np.sqrt(1 - rho**2) * partner_effect
    seed_effect, difficulty = rng.normal(0, SEED_SD, seeds), rng.normal(0, IMAGE_SD, (tasks, images))
    # drawn only when asked for, so that the default design draws the numbers it always drew
    method_task = rng.normal(0, method_task_sd, tasks) if method_task_sd else np.zeros(tasks)
    task_seed = rng.normal(0, task_seed_sd, (tasks, seeds)) if task_seed_sd else np.zeros((tasks, seeds))
    always, never = pack(np.ones(images, bool)), pack(np.zeros(images, bool))
    reference = {}
    if references:
        for task in range(tasks):
            for seed in range(seeds):
                level = BASE_LOGIT + task_effect[task] + seed_effect[seed] + task_seed[task, seed] - difficulty[task]
                for name, shift in (("adapter", ADAPTER_GAIN), ("head", -HEAD_LOSS)):
                    right = rng.random(images) < 1 / (1 + np.exp(-(level + shift)))
                    reference[name, task, seed] = pack(right)
    out = {"a": [], "b": []}
    for combo in itertools.chain(itertools.combinations(range(tasks), 2), itertools.combinations(range(tasks), 3)):
        for scored in combo:
            for seed in range(seeds):
                partners = partner_effect[list(set(combo) - {scored})].sum()
                base = BASE_LOGIT + task_effect[scored] + partners + seed_effect[seed] + task_seed[scored, seed]
                for method, shift in (("a", 0.0), ("b", method_effect + method_task[scored])):
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
                            "adapter_correct": reference.get(("adapter", scored, seed), always),
                            "head_correct": reference.get(("head", scored, seed), never),
                        }
                    )
    return pd.DataFrame(out["a"]), pd.DataFrame(out["b"]), names


def _population(effect: float, method_task_sd: float, task_seed_sd: float, draws: int = 200000) -> dict[str, float]:
    """True values of the heterogeneous design (Monte Carlo over new tasks, partners, seeds and images): method
    ``a``'s mean accuracy, ``b - a``, and ``a``'s share of the gain kept (a ratio of means)."""
    rng = np.random.default_rng(123)
    pair = rng.random(draws) < 1 / 3
    partners = rng.normal(0, PARTNER_SD, draws) + np.where(pair, 0.0, rng.normal(0, PARTNER_SD, draws))
    task = BASE_LOGIT + rng.normal(0, TASK_SD, draws) + rng.normal(0, SEED_SD, draws)
    task += rng.normal(0, task_seed_sd, draws) - rng.normal(0, IMAGE_SD, draws)
    merged = task + partners
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    a = sigmoid(merged + rng.normal(0, ROW_SD, draws)).mean()
    b = sigmoid(merged + effect + rng.normal(0, method_task_sd, draws) + rng.normal(0, ROW_SD, draws)).mean()
    single, head = sigmoid(task + ADAPTER_GAIN).mean(), sigmoid(task - HEAD_LOSS).mean()
    return {"mean": float(a), "difference": float(b - a), "gain kept": float((a - head) / (single - head))}


def _interval_of(kind: str, rows_a: pd.DataFrame, rows_b: pd.DataFrame, boot: Bootstrap):
    """The interval of one of :data:`KINDS` in a simulated study."""
    if kind == "mean":
        return estimate(rows_a, "accuracy", boot)
    if kind == "difference":
        return difference(rows_b, rows_a, "accuracy", boot)
    return estimate(rows_a, "gain_kept", boot)


def simulated_estimates(
    studies: int = 200,
    method_effect: float = 0.0,
    method_task_sd: float = 0.0,
    task_seed_sd: float = 0.0,
    variances: tuple[str, ...] = ("sum", "noise_corrected"),
    seed: int = 7,
    seeds: int = 3,
    kinds: tuple[str, ...] = KINDS,
    scored_partner_correlation: float = 0.0,
) -> pd.DataFrame:
    """Every interval of ``studies`` simulated studies (see :func:`simulate_intervals`), one row per study, variance
    and kind: the estimate, its interval, standard error, degrees of freedom and variance parts
    (:class:`~lora_merge_utils.stats.Estimate`), and the ``truth``. What another rule for the interval's width would
    do can be read from these rows without simulating again (``benchmarks/benchmark_intervals.py --multipliers``).
    ``kinds`` (of :data:`KINDS`) leaves the others' intervals out: the same studies are drawn, at a fraction of the
    cost where only differences are asked for. ``scored_partner_correlation`` as in :func:`simulated_grid` (the true
    values do not depend on it: a merge's partners are other tasks)."""
    if studies < 1:
        raise ValueError(f"The coverage simulation needs at least one study, got {studies}.")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"kinds must name some of {', '.join(KINDS)}; got {', '.join(unknown) or 'none'}.")
    rng = np.random.default_rng(seed)
    truth = _population(method_effect, method_task_sd, task_seed_sd)
    records = []
    for study in range(studies):
        rows_a, rows_b, names = simulated_grid(
            rng,
            seeds=seeds,
            method_effect=method_effect,
            method_task_sd=method_task_sd,
            task_seed_sd=task_seed_sd,
            references=True,
            scored_partner_correlation=scored_partner_correlation,
        )
        images = rows_a.groupby("task")["num_images"].first().astype(int).to_dict()
        seed_list = sorted(int(s) for s in rows_a["seed"].unique())
        boot_seed = int(rng.integers(1e9))
        for variance in variances:
            boot = Bootstrap(images, seeds=seed_list, replicates=100, seed=boot_seed, variance=variance)
            for kind in (k for k in KINDS if k in kinds):
                e = _interval_of(kind, rows_a, rows_b, boot)
                records.append({"study": study, "variance": variance, "kind": kind, **vars(e), "truth": truth[kind]})
    return pd.DataFrame(records)


def simulate_intervals(
    studies: int = 200,
    method_effect: float = 0.0,
    method_task_sd: float = 0.0,
    task_seed_sd: float = 0.0,
    variances: tuple[str, ...] = ("sum", "noise_corrected"),
    seed: int = 7,
    seeds: int = 3,
    kinds: tuple[str, ...] = KINDS,
    scored_partner_correlation: float = 0.0,
) -> pd.DataFrame:
    """How the 95% intervals of each ``variances`` way of adding the parts (:class:`~lora_merge_utils.stats.Bootstrap`)
    behave in ``studies`` simulated studies of the book's design with the given heterogeneity, for three kinds of
    number: method ``a``'s mean accuracy, the paired difference ``b - a``, and ``a``'s share of the gain kept, with
    ``seeds`` training seeds (one, as the full profile has, leaves the seeds' part and the rows' noise estimate out);
    ``kinds`` and ``scored_partner_correlation`` as in :func:`simulated_estimates`.

    One row per (variance, kind): ``coverage`` (how often the interval holds the truth), ``width / spread`` (the mean
    half-width over the 95th percentile of the estimate's distance from the truth: 1.0 is an interval exactly as
    wide as the evidence needs, an oracle's), and ``resolved`` (how often a difference's interval excludes 0: the
    power at ``method_effect``, or the rate of false wins when it is 0), with the ``truth`` and the number of
    ``studies``. About 0.03 s a study for ``"noise_corrected"`` (0.02 s for differences alone) and 0.07 s for
    ``"sum"`` on one core."""
    found = simulated_estimates(
        studies, method_effect, method_task_sd, task_seed_sd, variances, seed, seeds, kinds, scored_partner_correlation
    )
    records = []
    for (variance, kind), rows in found.groupby(["variance", "kind"], sort=False):
        truth = float(rows["truth"].iloc[0])
        value, low, high = (rows[column].to_numpy() for column in ("value", "low", "high"))
        spread = float(np.quantile(np.abs(value - truth), 0.95))
        records.append(
            {
                "variance": variance,
                "kind": kind,
                "coverage": float(np.mean((low <= truth) & (truth <= high))),
                "width / spread": float(np.mean((high - low) / 2) / spread) if spread > 0 else float("nan"),
                "resolved": float(np.mean((low > 0) | (high < 0))) if kind == "difference" else float("nan"),
                "truth": truth,
                "studies": studies,
            }
        )
    return pd.DataFrame(records)


def _row_logit_slope() -> float:
    """How much a row's logit accuracy moves per unit shift of its images' logits in the simulated design: the mean
    over images of the logistic slope, over the slope at the row's accuracy (about 0.85: averaging over images of
    varied difficulty compresses a shift)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    weights = weights / weights.sum()
    p = 1 / (1 + np.exp(-(BASE_LOGIT - IMAGE_SD * nodes)))
    mean = float((weights * p).sum())
    return float((weights * p * (1 - p)).sum() / (mean * (1 - mean)))


def heterogeneity(rows: pd.DataFrame, first: str, second: str) -> dict[str, float]:
    """The heterogeneity of a study's own rows, for :func:`simulated_grid`, from a merges table that scores methods
    ``first`` and ``second`` once each on the same merges and tasks: ``method x task`` (how much ``second - first``
    differs between tasks) and ``task x seed`` (how much a task's rows of one method move together within a seed,
    beyond the seed; 0 with one seed, where it cannot be told from the task's own effect and a design of one seed
    simulates it as part of that), each with the rows' own noise taken out (moment estimates, at least 0). Measured on
    the logit of each row's accuracy and returned on the simulation's scale, the logit of each image (a row's logit
    moves about 0.85 times as much)."""
    n = rows["num_images"].astype(float)
    accuracy = (rows["accuracy"] * n + 0.5) / (n + 1)  # no infinite logits at 0% or 100%
    table = rows.assign(logit=np.log(accuracy / (1 - accuracy)))
    key = ["members", "task", "seed"]
    if table.duplicated([*key, "method"]).any():
        raise ValueError("heterogeneity needs one row per merge, task, seed and method; pass one setting per method.")
    wide = table.pivot_table(index=key, columns="method", values="logit")
    if first not in wide or second not in wide:
        raise ValueError(f"heterogeneity needs rows of both {first!r} and {second!r}; got {sorted(wide.columns)}.")
    gap = (wide[second] - wide[first]).dropna().reset_index(name="gap")
    by_task = gap.groupby("task")["gap"]
    noise = float((by_task.var(ddof=1) / by_task.size()).mean())
    method_task = float(np.sqrt(max(0.0, by_task.mean().var(ddof=1) - noise)))
    slope = _row_logit_slope()
    if table["seed"].nunique() < 2:
        return {"method x task": method_task / slope, "task x seed": 0.0}
    one = table[table["method"] == first].copy()
    one["centred"] = one["logit"] - one.groupby(["members", "task"])["logit"].transform("mean")
    cells = one.groupby(["task", "seed"])["centred"]
    cell_mean = cells.mean().unstack()
    interaction = cell_mean.sub(cell_mean.mean(axis=0), axis=1)
    seeds = cell_mean.shape[1]
    # centring on each merge's mean leaves (seeds - 1) / seeds of the noise in a cell, and none of it in `between`'s
    # expectation beyond what `within` measures once rescaled
    within = float((cells.var(ddof=1) / cells.size()).mean()) * seeds / (seeds - 1)
    between = float((interaction.to_numpy() ** 2).sum() / ((cell_mean.shape[0] - 1) * (seeds - 1)))
    task_seed = float(np.sqrt(max(0.0, between - within)))
    return {"method x task": method_task / slope, "task x seed": task_seed / slope}
