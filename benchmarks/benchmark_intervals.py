"""Print how the book's 95% intervals behave in simulated studies of its design: coverage, width against the spread
the evidence needs, and how often a difference is resolved, for each way of adding the variance parts
(:class:`lora_merge_utils.stats.Bootstrap`'s ``variance``) and each kind of number (a mean, a paired difference, the
share of the gain kept).

    python benchmarks/benchmark_intervals.py                       # no heterogeneity: the easiest case
    python benchmarks/benchmark_intervals.py --from-study          # the heterogeneity of this study's own rows
    python benchmarks/benchmark_intervals.py --method-task-sd 0.3 --effects 0 0.1 --studies 400
    python benchmarks/benchmark_intervals.py --from-study --scored-partner-correlation 0.9 --effects 0 0.3

``--from-study`` estimates the method x task and task x seed heterogeneity (logit scale) from the study's task
arithmetic and PEFT-linear pairs and triples (read from its score cache; anything missing is trained and scored
first, which takes minutes). ``--scored-partner-correlation`` draws each task's effect on its own rows and on its
partners' correlated (:func:`lora_merge_utils.coverage.simulated_grid`): a design the study's rows do not estimate,
in which a rule that treats the two as independent fails. Figures are printed, never asserted; about 0.03 s a study
for the book's way of adding the parts, 0.07 s for the sum, on one core.

``--multipliers`` keeps the book's standard errors and compares three rules for the interval's half-width, on the same
simulated studies: the book's ``t`` quantile on the tasks' degrees of freedom; a Satterthwaite quantile, whose
degrees of freedom weigh each variance part by its own (tasks - 1, seeds - 1, the rows' noise as many); and one
constant per kind of number, calibrated to 95% coverage on an independent set of studies at the first effect.

    python benchmarks/benchmark_intervals.py --multipliers --from-study --effects 0 0.1 0.3

``--rules`` sets the book's interval beside intervals that cluster the rows differently, on the same simulated
studies: its member jackknife on Satterthwaite's degrees of freedom, and a jackknife that leaves out each *scored*
task only (the rows' noise then sits in it once; each is less its expected noise, plus the noise counted once and the
seeds' part, as the book adds them), on 5 degrees of freedom or on Satterthwaite's. The scored-task jackknife ignores
a task's effect as a partner: it is the narrowest valid interval only where methods do not interact with partners,
and wrong for a mean. Slower (about 0.05 s a study and kind).

    python benchmarks/benchmark_intervals.py --rules --method-task-sd 0.027 --effects 0 0.1 0.3 --studies 400
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

SEEDS = 3
"""Training seeds of the simulated design (the tiny profile's)."""


def study_heterogeneity() -> dict[str, float]:
    """The heterogeneity of the study that ``$LORA_BOOK_PROFILE``/``$LORA_BOOK_ARTIFACTS`` name."""
    import lora_merge_utils as lmu
    from lora_merge_utils.coverage import heterogeneity

    study = lmu.Study.open()
    singles = study.singles_table()
    rows = study.merges_table(singles, methods=("linear", "task_arithmetic"), sizes=(2, 3), cache=True)
    return heterogeneity(rows, "linear", "task_arithmetic")


def satterthwaite_df(rows: pd.DataFrame) -> np.ndarray:
    """Each interval's Satterthwaite degrees of freedom: its parts' variances over their own degrees of freedom (the
    tasks' part on tasks - 1, the seeds' on seeds - 1; the rows' noise, estimated from every row, as many)."""
    parts = rows["task_var"] ** 2 / (rows["tasks_resampled"] - 1).clip(lower=1)
    parts = parts.where(rows["task_var"] > 0, 0.0) + (rows["seed_var"] ** 2 / (SEEDS - 1)).where(
        rows["seed_var"] > 0, 0
    )
    return np.where(parts > 0, rows["se"] ** 4 / parts.where(parts > 0, 1.0), np.inf)


def compare_multipliers(found: pd.DataFrame, calibration: pd.DataFrame) -> pd.DataFrame:
    """Coverage and width / spread of each rule (see the module docstring) for each effect and kind of number."""
    from scipy.stats import t as student

    constant = {
        kind: float(np.quantile(np.abs(rows["value"] - rows["truth"]) / rows["se"], 0.95))
        for kind, rows in calibration.groupby("kind")
    }
    records = []
    for (effect, kind), rows in found.groupby(["effect", "kind"], sort=False):
        error = np.abs(rows["value"] - rows["truth"]).to_numpy()
        halves = {
            "t on the tasks (the book)": ((rows["high"] - rows["low"]) / 2).to_numpy(),
            "Satterthwaite": student.ppf(0.975, np.minimum(satterthwaite_df(rows), 1e9)) * rows["se"].to_numpy(),
            f"calibrated constant {constant[kind]:.2f}": constant[kind] * rows["se"].to_numpy(),
        }
        records += _rule_records(effect, kind, error, halves)
    return pd.DataFrame(records)


def _rule_records(effect: float, kind: str, error: np.ndarray, halves: dict[str, np.ndarray]) -> list[dict]:
    """One record per rule: how often its half-widths cover ``error`` (|estimate - truth|), and their mean width over
    the spread the evidence needs (the 95th percentile of ``error``)."""
    spread = float(np.quantile(error, 0.95))
    return [
        {
            "effect": effect,
            "kind": kind,
            "rule": rule,
            "coverage": float(np.mean(error <= half)),
            "width / spread": float(np.mean(half) / spread),
        }
        for rule, half in halves.items()
    ]


def _scored_task_parts(rows_a: pd.DataFrame, rows_b: pd.DataFrame, kind: str) -> tuple[float, float]:
    """The delete-one-scored-task jackknife of one simulated number and the rows' noise it is expected to hold."""
    from lora_merge_utils import stats
    from lora_merge_utils.row_noise import jackknife_noise, linearise, noise_covariance

    parts = {"mean": [(rows_a, 1.0)], "difference": [(rows_b, 1.0), (rows_a, -1.0)], "gain kept": [(rows_a, 1.0)]}[kind]
    metric = "gain_kept" if kind == "gain kept" else "accuracy"
    observed = []
    for rows, sign in parts:
        if metric == "gain_kept":
            observed.append(((stats.row_values(rows, "minus_head"), stats._adapter_gain(rows, None)), sign))
        else:
            observed.append((stats.row_values(rows, metric), sign))

    def statistic(*masks):
        total = 0.0
        for (values, sign), mask in zip(observed, masks):
            if isinstance(values, tuple):
                total += sign * values[0][mask].mean() / values[1][mask].mean()
            else:
                total += sign * values[mask].mean()
        return total

    scored = [rows["task"].to_numpy() for rows, _ in parts]
    tasks = sorted(set(scored[0]))
    jackknifed, _ = stats._jackknife(statistic, [tuple(s != task for s in scored) for task in tasks])
    lin = linearise(observed)
    noise = noise_covariance([rows for rows, _ in parts], lin)
    keeps = [np.concatenate([s != task for s in scored]) for task in tasks]
    return jackknifed, jackknife_noise(noise, lin, keeps)


def compare_rules(args, sds: dict[str, float]) -> pd.DataFrame:
    """Coverage and width / spread of the book's interval and the ``--rules`` alternatives (module docstring), for
    each effect and kind of number, on the same simulated studies."""
    from scipy.stats import t as student

    from lora_merge_utils.coverage import KINDS, _interval_of, _population, simulated_grid
    from lora_merge_utils.stats import Bootstrap

    records = []
    for effect in args.effects:
        rng = np.random.default_rng(7)
        truth = _population(effect, sds["method x task"], sds["task x seed"])
        found = []
        for _ in range(args.studies):
            rows_a, rows_b, _ = simulated_grid(
                rng,
                seeds=SEEDS,
                method_effect=effect,
                method_task_sd=sds["method x task"],
                task_seed_sd=sds["task x seed"],
                references=True,
                scored_partner_correlation=args.scored_partner_correlation,
            )
            images = rows_a.groupby("task")["num_images"].first().astype(int).to_dict()
            boot = Bootstrap(images, seeds=list(range(SEEDS)), replicates=100, seed=int(rng.integers(1e9)))
            for kind in KINDS:
                e = _interval_of(kind, rows_a, rows_b, boot)
                scored, scored_noise = _scored_task_parts(rows_a, rows_b, kind)
                found.append({"kind": kind, **vars(e), "scored": scored, "scored_noise": scored_noise})
        found = pd.DataFrame(found)
        found["truth"] = found["kind"].map(truth)
        for kind, rows in found.groupby("kind", sort=False):
            error = np.abs(rows["value"] - rows["truth"]).to_numpy()
            noise = rows["image_var"]
            scored_part = (rows["scored"] - rows["scored_noise"]).clip(lower=0)
            scored_var = scored_part + noise + rows["seed_var"]
            seed_df = (rows["seed_var"] ** 2 / (SEEDS - 1)).where(rows["seed_var"] > 0, 0.0)
            scored_df = np.where(
                scored_part + seed_df > 0,
                scored_var**2 / (scored_part**2 / 5 + seed_df).where(scored_part**2 / 5 + seed_df > 0, 1.0),
                np.inf,
            )
            quantile = lambda df: student.ppf(0.975, np.minimum(df, 1e9))  # noqa: E731
            halves = {
                "the book": ((rows["high"] - rows["low"]) / 2).to_numpy(),
                "the book, Satterthwaite": quantile(satterthwaite_df(rows)) * rows["se"].to_numpy(),
                "scored task only, t on 5 df": quantile(5) * np.sqrt(scored_var.to_numpy()),
                "scored task only, Satterthwaite": quantile(scored_df) * np.sqrt(scored_var.to_numpy()),
            }
            records += _rule_records(effect, kind, error, halves)
    return pd.DataFrame(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200, help="simulated studies per effect (default 200)")
    parser.add_argument("--effects", type=float, nargs="+", default=[0.0, 0.1], help="method effects, logit scale")
    parser.add_argument("--method-task-sd", type=float, default=0.0)
    parser.add_argument("--task-seed-sd", type=float, default=0.0)
    parser.add_argument("--from-study", action="store_true", help="take both SDs from the study's own rows")
    parser.add_argument(
        "--scored-partner-correlation",
        type=float,
        default=0.0,
        help="correlation of a task's effect on its own rows and on its partners' (default 0)",
    )
    parser.add_argument("--multipliers", action="store_true", help="compare rules for the width (module docstring)")
    parser.add_argument("--rules", action="store_true", help="compare ways of clustering the rows (module docstring)")
    args = parser.parse_args()
    from lora_merge_utils.coverage import simulate_intervals, simulated_estimates

    sds = {"method x task": args.method_task_sd, "task x seed": args.task_seed_sd}
    if args.from_study:
        sds = study_heterogeneity()
    print(
        "heterogeneity (logit SD): "
        + ", ".join(f"{k} {v:.3f}" for k, v in sds.items())
        + f"; scored x partner correlation {args.scored_partner_correlation:+.2f}"
    )
    if args.rules:
        start = time.perf_counter()
        table = compare_rules(args, sds)
        print(f"{args.studies} studies per effect in {time.perf_counter() - start:.0f} s; coverage / width ÷ spread:")
        table["cell"] = table["coverage"].map("{:.3f}".format) + " / " + table["width / spread"].map("{:.2f}".format)
        print(table.pivot(index="rule", columns=["kind", "effect"], values="cell").to_string())
        return
    if args.multipliers:

        def estimates(effect: float, seed: int) -> pd.DataFrame:
            return simulated_estimates(
                args.studies,
                effect,
                sds["method x task"],
                sds["task x seed"],
                ("noise_corrected",),
                seed=seed,
                seeds=SEEDS,
                scored_partner_correlation=args.scored_partner_correlation,
            ).assign(effect=effect)

        start = time.perf_counter()
        calibration = estimates(args.effects[0], seed=1)  # not the studies it is judged on
        found = pd.concat([estimates(effect, seed=7) for effect in args.effects], ignore_index=True)
        print(f"{args.studies} studies per effect, and as many to calibrate, in {time.perf_counter() - start:.0f} s")
        print(compare_multipliers(found, calibration).round(3).to_string(index=False))
        return
    tables = []
    for effect in args.effects:
        start = time.perf_counter()
        table = simulate_intervals(
            args.studies,
            effect,
            method_task_sd=sds["method x task"],
            task_seed_sd=sds["task x seed"],
            scored_partner_correlation=args.scored_partner_correlation,
        )
        tables.append(table.assign(effect=effect))
        print(f"method effect {effect:+.2f}: {args.studies} studies in {time.perf_counter() - start:.0f} s")
    shown = pd.concat(tables, ignore_index=True)[
        ["effect", "variance", "kind", "coverage", "width / spread", "resolved", "studies"]
    ]
    print(shown.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
