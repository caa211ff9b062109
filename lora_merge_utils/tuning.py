"""Choose merge hyperparameters (scale lambda, density, ...) on the validation split, never on the test split; say
when a choice lands on the edge of its grid; and show how a validation choice transfers to the test split.

Chapter 5's choices come from one table (:func:`tuning_table`): every merge family's candidates on one shared grid,
scored on the validation split of every pair of seed 0's adapters. The tiny profile's table is computed by
``python -m lora_merge_utils tune`` (``make tuning-table``) and ships with the package, since its 9,500 merges take
over an hour on two CPU cores; any other profile computes its table where it runs.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pandas as pd

from .methods import KNOBS, MERGE_METHODS, MergeSpec

SELECTION_SPLIT = "val"
BUDGET = "budget"

LAMBDAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
"""The scale grid every method shares, the merge's weight for each adapter (task arithmetic's lambda), from a fifth
of 1/K for pairs to 3, where the official sweeps of TSV-Merge and Iso-C stop."""
DENSITIES = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
"""The density grid every method with a density shares, from 0.1 to keeping every entry."""
COMPACT_LAMBDAS = (0.3, 0.5, 1.0)
"""The scale grid of the ``"compact"`` tuning grid (a profile whose session cannot afford the shared one)."""
COMPACT_DENSITIES = (0.2, 0.5, 0.9)
"""The density grid of the ``"compact"`` tuning grid."""
GRIDS = {"shared": (LAMBDAS, DENSITIES), "compact": (COMPACT_LAMBDAS, COMPACT_DENSITIES)}
"""The scale and density values of each tuning grid a profile can name in ``budget.tuning_grid``."""

DATA_FREE = {m.family: m.name for m in MERGE_METHODS.values() if m.family is not None}
"""Chapter 5's data-free merge families and their methods, from each method's
:attr:`~lora_merge_utils.methods.MergeMethod.family`; each is tuned on the scale grid, and on the density grid too
when it takes a density."""
DATA_LIGHT = {
    "refitted heads": MergeSpec("task_arithmetic +refit", "task_arithmetic", {}, refit_heads=True),
    "AdaMerging, short schedule": MergeSpec("adamerging_short", "adamerging_short", {}),
}
"""Chapter 5's data-light families, one setting each (their coefficients or heads are learned from training images)."""


def grid(method: str, refit_heads: bool = False, **values: Sequence) -> list[MergeSpec]:
    """Every combination of the given hyperparameter values as labelled specs.

    Example:
        >>> [spec.label for spec in grid("ties", density=[0.3, 0.5], scale=[0.5, 1.0])]
        ['ties density=0.3 scale=0.5', 'ties density=0.3 scale=1',
         'ties density=0.5 scale=0.5', 'ties density=0.5 scale=1']
        >>> grid("task_arithmetic", refit_heads=True)[0].label
        'task_arithmetic +refit'
    """
    names = sorted(values)
    specs = []
    for combo in itertools.product(*(values[n] for n in names)):
        params = dict(zip(names, combo))
        label = method + " " + " ".join(f"{n}={v:g}" for n, v in params.items()) if params else method
        specs.append(MergeSpec(label + (" +refit" if refit_heads else ""), method, params, refit_heads))
    return specs


def edge_warnings(best: MergeSpec, candidates: Sequence[MergeSpec]) -> list[str]:
    """A warning for every numeric hyperparameter of ``best`` that sits on the edge of the values tried (so the
    best setting may lie beyond the grid)."""
    warnings = []
    for name, value in best.params.items():
        tried = sorted(
            {c.params[name] for c in candidates if name in c.params and isinstance(c.params[name], int | float)}
        )
        if len(tried) > 1 and value in (tried[0], tried[-1]):
            side = "smallest" if value == tried[0] else "largest"
            knob = KNOBS.get(name)
            bound = None if knob is None else knob.values.low if side == "smallest" else knob.values.high
            if knob is not None and value == bound:
                reason = "the grid cannot be extended: no value beyond it is allowed"
                if name == "density":
                    reason = "the grid cannot be extended: density 1 keeps every entry"
                warnings.append(f"{best.method}: {name}={value:g} is the {side} value allowed; {reason}.")
                continue
            warnings.append(
                f"{best.method}: {name}={value:g} is the {side} value tried ({tried[0]:g}-{tried[-1]:g});"
                " the best setting may lie beyond the grid."
            )
    return warnings


def _scores(rows: pd.DataFrame, candidates: Sequence[MergeSpec], column: str) -> pd.Series:
    return (
        rows.groupby("method", sort=False)["normalized_accuracy"]
        .mean()
        .reindex([c.label for c in candidates])
        .rename(column)
    )


def select_on_validation(
    study,
    candidates: Sequence[MergeSpec],
    combos: Sequence[Sequence[str]],
    model=None,
    heads=None,
    split: str = SELECTION_SPLIT,
    val_singles: pd.DataFrame | None = None,
    images: int | None | str = BUDGET,
    seed: int = 0,
    warn: bool = True,
) -> tuple[MergeSpec, pd.DataFrame]:
    """Score each candidate on the validation split of the given merges (adapters of training seed ``seed``) and
    return the best (highest mean normalized accuracy; ties go to the first candidate) with the table of scores.

    ``split`` exists only to be refused: asking to select on ``"test"`` raises a ``ValueError``, so a tuned result
    can always be reported on the untouched test split. ``images`` validation images per task are scored (default:
    the profile's ``budget.tuning_images``; ``None`` for all); ``val_singles`` must be computed on the same images.
    With ``warn``, a choice on the edge of its grid is printed (see :func:`edge_warnings`).
    """
    if split != SELECTION_SPLIT:
        raise ValueError(
            f"Hyperparameters are selected on the {SELECTION_SPLIT!r} split only (got {split!r}). Selecting on the "
            "test split would make the reported test accuracy optimistic."
        )
    if not candidates:
        raise ValueError("Give at least one candidate MergeSpec to select from.")
    if images == BUDGET:
        images = study.profile.budget.tuning_images
    if model is None:
        model, heads = study.load_all_adapters(seed=seed)
    if val_singles is None:
        val_singles = study.singles_table(model, heads, split=split, images=images, seeds=seed)
    rows = study.merges_table(
        val_singles[val_singles["seed"] == seed],
        methods=list(candidates),
        combos=combos,
        model=model,
        heads=heads,
        split=split,
        images=images,
        seeds=seed,
        cache=True,  # a disconnected session, or a second selection, reads the scores instead of merging again
    )
    scores = _scores(rows, candidates, "val_mean_normalized").reset_index()
    best = candidates[int(scores["val_mean_normalized"].to_numpy().argmax())]
    if warn:
        for message in edge_warnings(best, candidates):
            print(f"warning: {message}")
    return best, scores


def transfer_table(
    study,
    candidates: Sequence[MergeSpec],
    combos: Sequence[Sequence[str]],
    val_scores: pd.DataFrame,
    model=None,
    heads=None,
    images: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """How a validation choice transfers: every candidate's validation score beside its score on the **test**
    split of the same merges, with the validation choice and the test-best marked. For reading only: the test
    column is never used to choose."""
    if model is None:
        model, heads = study.load_all_adapters(seed=seed)
    test_singles = study.singles_table(model, heads, images=images, seeds=seed)
    rows = study.merges_table(
        test_singles,
        methods=list(candidates),
        combos=combos,
        model=model,
        heads=heads,
        images=images,
        seeds=seed,
        cache=True,
    )
    table = val_scores.set_index("method").join(_scores(rows, candidates, "test_mean_normalized")).reset_index()
    table["chosen on val"] = table["val_mean_normalized"] == table["val_mean_normalized"].max()
    table["best on test"] = table["test_mean_normalized"] == table["test_mean_normalized"].max()
    return table


def tuning_grids(name: str) -> dict[str, list[MergeSpec]]:
    """Every family's candidates on the tuning grid called ``name`` (see :data:`GRIDS`): the data-free families on
    its scale values (and density values, for the methods that take a density; the compact grid leaves out the
    families a GPU session cannot afford, :attr:`~lora_merge_utils.methods.MergeMethod.compact_grid`), the
    data-light ones as they are.

    Example:
        >>> grids = tuning_grids("shared")
        >>> len(grids["TIES"]), len(grids["Iso-C (span)"]), len(grids["Iso-C (official)"]), len(grids["refitted heads"])
        (63, 9, 9, 1)
        >>> "Iso-C (official)" in tuning_grids("compact")  # dense float64 SVDs: left out of a GPU session's grid
        False
    """
    if name not in GRIDS:
        raise ValueError(f"Unknown tuning grid {name!r}; choose one of {', '.join(map(repr, GRIDS))}.")
    from .methods import get_merge_method

    lambdas, densities = GRIDS[name]
    grids = {}
    for family, method in DATA_FREE.items():
        if name == "compact" and not get_merge_method(method).compact_grid:
            continue
        values = {"scale": lambdas}
        if "density" in get_merge_method(method).knobs:
            values["density"] = densities
        grids[family] = grid(method, **values)
    return grids | {family: [spec] for family, spec in DATA_LIGHT.items()}


def tuning_merges(tasks: Sequence[str], pairs: int | None = None) -> list[tuple[str, ...]]:
    """The merges hyperparameters are chosen on: every pair of ``tasks``, or ``pairs`` of them that use every task
    as evenly as they can (each next pair the one whose tasks have been used least; ties go to the earlier pair), for
    a profile whose session cannot afford all of them.

    Example:
        >>> len(tuning_merges("abcdef")), tuning_merges("abcdef", 4)
        (15, [('a', 'b'), ('c', 'd'), ('e', 'f'), ('a', 'c')])
    """
    every = list(itertools.combinations(tasks, 2))
    if pairs is None or pairs >= len(every):
        return every
    if pairs < 1:
        raise ValueError(f"pairs must be at least 1, got {pairs}.")
    uses = dict.fromkeys(tasks, 0)
    chosen: list[tuple[str, ...]] = []
    for _ in range(pairs):
        pair = min((p for p in every if p not in chosen), key=lambda p: uses[p[0]] + uses[p[1]])
        chosen.append(pair)
        for task in pair:
            uses[task] += 1
    return chosen


def cover_merges(tasks: Sequence[str], size: int) -> list[tuple[str, ...]]:
    """The fewest merges of ``size`` of ``tasks`` that use every task equally often, on which a hyperparameter is
    chosen for merges of that size: each next merge the one whose tasks have been used least (ties go to the earlier
    merge in ``itertools.combinations`` order), until every task has been used ``lcm(size, len(tasks)) /
    len(tasks)`` times.

    Example:
        >>> cover_merges("abcdef", 3)
        [('a', 'b', 'c'), ('d', 'e', 'f')]
        >>> cover_merges("abcdef", 4)
        [('a', 'b', 'c', 'd'), ('a', 'b', 'e', 'f'), ('c', 'd', 'e', 'f')]
        >>> len(cover_merges("abcdef", 5)), cover_merges("abcdef", 6)
        (6, [('a', 'b', 'c', 'd', 'e', 'f')])
    """
    if not 1 <= size <= len(tasks):
        raise ValueError(f"size must be from 1 to {len(tasks)} (the tasks given), got {size}.")
    every = list(itertools.combinations(tasks, size))
    uses = dict.fromkeys(tasks, 0)
    chosen: list[tuple[str, ...]] = []
    for _ in range(math.lcm(size, len(tasks)) // size):
        merge = min((m for m in every if m not in chosen), key=lambda m: sum(uses[t] for t in m))
        chosen.append(merge)
        for task in merge:
            uses[task] += 1
    if len(set(uses.values())) > 1:  # the greedy order can fail for some sizes; never silently uneven
        raise ValueError(f"Found no even cover of {len(tasks)} tasks by merges of {size}: uses {uses}.")
    return chosen


def exercise_merges(tasks: Sequence[str]) -> list[tuple[str, ...]]:
    """The two pairs and two triples on which chapter 5's exercises choose (fewer than the tuning table's merges, so
    that a student's answer runs in seconds). Needs six tasks or more.

    Example:
        >>> exercise_merges("abcdef")
        [('a', 'd'), ('b', 'e'), ('a', 'c', 'f'), ('b', 'd', 'e')]
    """
    if len(tasks) < 6:
        raise ValueError(f"Chapter 5's exercises merge among six tasks; this study has {len(tasks)}.")
    t = tasks
    return [(t[0], t[3]), (t[1], t[4]), (t[0], t[2], t[5]), (t[1], t[3], t[4])]


def schedule_pairs(tasks: Sequence[str], count: int) -> list[tuple[str, ...]]:
    """The ``count`` pairs on which chapter 5 sets AdaMerging's paper schedule beside its short one
    (``budget.paper_schedule_pairs``): the exercises' two pairs first, then every other pair in
    ``itertools.combinations`` order; every pair where ``count`` is at least their number.

    Example:
        >>> schedule_pairs("abcdef", 3)
        [('a', 'd'), ('b', 'e'), ('a', 'b')]
        >>> len(schedule_pairs("abcdef", 99)), schedule_pairs("abcdef", 0)
        (15, [])
    """
    if count < 0:
        raise ValueError(f"count must be 0 or more, got {count}.")
    first = [merge for merge in exercise_merges(tasks) if len(merge) == 2]
    every = first + [pair for pair in itertools.combinations(tasks, 2) if pair not in first]
    return every[:count]


def scale_candidates(candidates: Sequence[MergeSpec], chosen: MergeSpec) -> list[MergeSpec]:
    """The candidates of a family's grid that differ from its ``chosen`` spec in the scale alone: the choice to make
    again for merges of another size, where the same per-adapter scale weighs the sum differently (the density, or
    any other knob, stays as chosen on pairs).

    Example:
        >>> family = grid("ties", density=[0.3, 0.5], scale=[0.5, 1.0])
        >>> [spec.label for spec in scale_candidates(family, family[1])]
        ['ties density=0.3 scale=0.5', 'ties density=0.3 scale=1']
    """
    others = {k: v for k, v in chosen.params.items() if k != "scale"}
    found = [
        spec
        for spec in candidates
        if spec.method == chosen.method
        and "scale" in spec.params
        and {k: v for k, v in spec.params.items() if k != "scale"} == others
    ]
    if not found:
        raise ValueError(f"No candidate differs from {chosen.label!r} in its scale alone: it has no scale to choose.")
    return found


TABLE_COLUMNS = ["family", "method", "val_mean_normalized", "merges", "chosen"]
"""The columns of a tuning table, which holds each candidate's mean normalized accuracy over the tuning merges and
whether it is its family's choice."""


def compute_tuning_table(
    study,
    grid_name: str | None = None,
    pairs: int | None | str = BUDGET,
    seed: int = 0,
    families: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Score every candidate of the tuning grid (default: the profile's ``budget.tuning_grid``) on the validation
    split of the tuning merges (:func:`tuning_merges`; default: the profile's ``budget.tuning_pairs``) and mark each
    family's choice. Every merge's score is cached (``results/scores``), so an interrupted run resumes."""
    budget = study.profile.budget
    grids = tuning_grids(grid_name or budget.tuning_grid)
    if families is not None:
        grids = {family: grids[family] for family in families}
    merges = tuning_merges(study.profile.tasks, budget.tuning_pairs if pairs == BUDGET else pairs)
    model, heads = study.load_all_adapters(seed=seed)
    val_singles = study.singles_table(model, heads, split=SELECTION_SPLIT, images=budget.tuning_images, seeds=seed)
    parts = []
    for family, candidates in grids.items():
        best, scores = select_on_validation(
            study, candidates, merges, model=model, heads=heads, val_singles=val_singles, seed=seed, warn=False
        )
        parts.append(scores.assign(family=family, merges=len(merges), chosen=scores["method"] == best.label))
    return pd.concat(parts, ignore_index=True)[TABLE_COLUMNS]


def tune_command(profile_name: str, grid_name: str, pairs: int | None, table: Path | str | None = None) -> str:
    """The ``python -m lora_merge_utils tune`` command line that computes a tuning table with these settings."""
    return " ".join(
        ["python -m lora_merge_utils tune", f"--profile {profile_name}", f"--grid {grid_name}"]
        + ([f"--pairs {pairs}"] if pairs is not None else [])
        + ([f"--table {table}"] if table is not None else [])
    )


def table_header(study, grid_name: str, pairs: int | None, seed: int = 0, table: Path | str | None = None) -> dict:
    """What a tuning table was computed from: the profile, the grid, the merges and images, the adapters and the
    scoring code (so a reader can tell whether it still describes their adapters), and the command that writes it
    again (``table``: the path it was written to, if not the study's results folder)."""
    from .evaluation import code_version

    return {
        "profile": study.profile.label,
        "grid": grid_name,
        "lambdas": list(GRIDS[grid_name][0]),
        "densities": list(GRIDS[grid_name][1]),
        "merges": [list(m) for m in tuning_merges(study.profile.tasks, pairs)],
        "seed": seed,
        "images": study.profile.budget.tuning_images,
        "adapters": study.adapters_fingerprint(seed),
        "code_version": code_version(),
        "command": tune_command(study.profile.name, grid_name, pairs, table),
    }


def save_tuning_table(table: pd.DataFrame, header: dict, path: Path | str) -> None:
    """Write ``table`` as CSV at ``path`` and ``header`` beside it (``.json``), each atomically."""
    from .artifacts import write_json
    from .safe_io import write_atomic

    path = Path(path)
    write_atomic(path, lambda tmp: table[TABLE_COLUMNS].to_csv(tmp, index=False, float_format="%.6f"))
    write_json(path.with_suffix(".json"), header)


def load_tuning_table(path: Path | str) -> tuple[pd.DataFrame, dict]:
    """A tuning table and its header, as :func:`save_tuning_table` wrote them; a ``ValueError`` says what is wrong
    with a file that is not one."""
    path = Path(path)
    try:
        table = pd.read_csv(path)
        header = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable tuning table ({error}); write it again with its command.") from None
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing or table.groupby("family")["chosen"].sum().ne(1).any():
        raise ValueError(
            f"{path} is not a tuning table (missing columns {missing} or a family without exactly one choice); "
            f"write it again with: {header.get('command', 'python -m lora_merge_utils tune')}"
        )
    return table, header


def shipped_table(profile_label: str) -> Path | None:
    """The tuning table that ships with the package for a profile (``assets/tuning-<label>.csv``), if any."""
    path = Path(str(resources.files("lora_merge_utils") / "assets" / f"tuning-{profile_label}.csv"))
    return path if path.exists() else None


def tuning_table(study, seed: int = 0) -> tuple[pd.DataFrame, dict[str, MergeSpec], dict]:
    """Chapter 5's choices: the tuning table, each family's chosen :class:`~lora_merge_utils.methods.MergeSpec`, and
    the table's header (its ``"source"`` says where the table came from).

    The table ships with the package for the tiny profile (computed by ``python -m lora_merge_utils tune``); any
    other profile's is computed here, on its ``budget.tuning_grid`` and ``budget.tuning_pairs``.
    """
    budget = study.profile.budget
    grids = tuning_grids(budget.tuning_grid)
    path = shipped_table(study.profile.label)
    if path is not None:
        table, header = load_tuning_table(path)
        header["source"] = f"read from {path.name}, which the command `{header['command']}` wrote"
    else:
        table = compute_tuning_table(study, seed=seed)
        header = table_header(study, budget.tuning_grid, budget.tuning_pairs, seed)
        header["source"] = "computed here"
    if set(table["family"]) != set(grids) or set(table["method"]) != {c.label for f in grids.values() for c in f}:
        raise ValueError(
            f"The tuning table ({header['source']}) does not hold the candidates of the {budget.tuning_grid!r} grid; "
            f"write it again with: {header['command']}"
        )
    return table, chosen_specs(table, grids), header


def chosen_specs(table: pd.DataFrame, grids: dict[str, list[MergeSpec]]) -> dict[str, MergeSpec]:
    """Each family's chosen candidate in a tuning table, as the :class:`~lora_merge_utils.methods.MergeSpec` of
    ``grids`` that carries its label."""
    chosen = {}
    for family, candidates in grids.items():
        label = table.loc[(table["family"] == family) & table["chosen"], "method"].iloc[0]
        chosen[family] = next(c for c in candidates if c.label == label)
    return chosen


def leading_families(table: pd.DataFrame) -> tuple[str, str]:
    """The best data-free and the best data-light family of a tuning table, each by its chosen candidate's validation
    score (ties go to the family listed first): chapter 5's leaders, which chapters 5 and 6 follow along K and rank.

    Example:
        >>> table = pd.DataFrame({"family": ["TIES", "TIES", "magnitude pruning", "refitted heads"],
        ...                       "val_mean_normalized": [0.91, 0.95, 0.93, 0.92]})
        >>> leading_families(table)
        ('TIES', 'refitted heads')
    """
    score = table.groupby("family", sort=False)["val_mean_normalized"].max()
    free = [family for family in score.index if family not in DATA_LIGHT]
    light = [family for family in score.index if family in DATA_LIGHT]
    if not free or not light:
        raise ValueError("A tuning table names at least one data-free and one data-light family; this one does not.")
    return max(free, key=lambda f: score[f]), max(light, key=lambda f: score[f])


def choice_warnings(table: pd.DataFrame, grid_name: str) -> list[str]:
    """:func:`edge_warnings` for every family's choice in a tuning table."""
    grids = tuning_grids(grid_name)
    return [
        message for family, best in chosen_specs(table, grids).items() for message in edge_warnings(best, grids[family])
    ]
