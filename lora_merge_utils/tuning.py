"""Choose merge hyperparameters (scale lambda, density, ...) on the validation split, never on the test split; say
when a choice lands on the edge of its grid; and show how a validation choice transfers to the test split."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pandas as pd

from .methods import MergeSpec

SELECTION_SPLIT = "val"
BUDGET = "budget"


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
