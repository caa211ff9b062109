"""Print how the book's 95% intervals behave in simulated studies of its design: coverage, width against the spread
the evidence needs, and how often a difference is resolved, for each way of adding the variance parts
(:class:`lora_merge_utils.stats.Bootstrap`'s ``variance``) and each kind of number (a mean, a paired difference, the
share of the gain kept).

    python benchmarks/benchmark_intervals.py                       # no heterogeneity: the easiest case
    python benchmarks/benchmark_intervals.py --from-study          # the heterogeneity of this study's own rows
    python benchmarks/benchmark_intervals.py --method-task-sd 0.3 --effects 0 0.1 --studies 400

``--from-study`` estimates the method x task and task x seed heterogeneity (logit scale) from the study's task
arithmetic and PEFT-linear pairs and triples (read from its score cache; anything missing is trained and scored
first, which takes minutes). Figures are printed, never asserted; about 0.2 s a study and variance on one core.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd


def study_heterogeneity() -> dict[str, float]:
    """The heterogeneity of the study that ``$LORA_BOOK_PROFILE``/``$LORA_BOOK_ARTIFACTS`` name."""
    import lora_merge_utils as lmu
    from lora_merge_utils.coverage import heterogeneity

    study = lmu.Study.open()
    singles = study.singles_table()
    rows = study.merges_table(singles, methods=("linear", "task_arithmetic"), sizes=(2, 3), cache=True)
    return heterogeneity(rows, "linear", "task_arithmetic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=200, help="simulated studies per effect (default 200)")
    parser.add_argument("--effects", type=float, nargs="+", default=[0.0, 0.1], help="method effects, logit scale")
    parser.add_argument("--method-task-sd", type=float, default=0.0)
    parser.add_argument("--task-seed-sd", type=float, default=0.0)
    parser.add_argument("--from-study", action="store_true", help="take both SDs from the study's own rows")
    args = parser.parse_args()
    from lora_merge_utils.coverage import simulate_intervals

    sds = {"method x task": args.method_task_sd, "task x seed": args.task_seed_sd}
    if args.from_study:
        sds = study_heterogeneity()
    print("heterogeneity (logit SD): " + ", ".join(f"{k} {v:.3f}" for k, v in sds.items()))
    tables = []
    for effect in args.effects:
        start = time.perf_counter()
        table = simulate_intervals(
            args.studies, effect, method_task_sd=sds["method x task"], task_seed_sd=sds["task x seed"]
        )
        tables.append(table.assign(effect=effect))
        print(f"method effect {effect:+.2f}: {args.studies} studies in {time.perf_counter() - start:.0f} s")
    shown = pd.concat(tables, ignore_index=True)[
        ["effect", "variance", "kind", "coverage", "width / spread", "resolved", "studies"]
    ]
    print(shown.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
