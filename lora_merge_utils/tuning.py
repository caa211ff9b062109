"""Choose merge hyperparameters (scale lambda, density) on the validation split, never on the test split."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pandas as pd

from .evaluation import MergeSpec

SELECTION_SPLIT = "val"


def grid(method: str, **values: Sequence) -> list[MergeSpec]:
    """Every combination of the given hyperparameter values as labelled specs, e.g.
    ``grid("ties", density=[0.3, 0.5], scale=[0.5, 1.0])``."""
    names = sorted(values)
    specs = []
    for combo in itertools.product(*(values[n] for n in names)):
        params = dict(zip(names, combo))
        label = method + " " + " ".join(f"{n}={v:g}" for n, v in params.items()) if params else method
        specs.append(MergeSpec(label, method, params))
    return specs


def select_on_validation(study, candidates: Sequence[MergeSpec], combos: Sequence[Sequence[str]],
                         model=None, heads=None, split: str = SELECTION_SPLIT,
                         val_singles: pd.DataFrame | None = None, images: int | None | str = "budget"
                         ) -> tuple[MergeSpec, pd.DataFrame]:
    """Score each candidate on the validation split of the given merges and return the best (highest mean normalized
    accuracy; ties go to the first candidate) with the table of scores.

    ``split`` exists only to be refused: asking to select on ``"test"`` raises a ``ValueError``, so a tuned result
    can always be reported on the untouched test split. ``images`` validation images per task are scored (default:
    the profile's ``budget.tuning_images``; ``None`` for all); ``val_singles`` must be computed on the same images.
    """
    if split != SELECTION_SPLIT:
        raise ValueError(
            f"Hyperparameters are selected on the {SELECTION_SPLIT!r} split only (got {split!r}). Selecting on the "
            "test split would make the reported test accuracy optimistic."
        )
    if not candidates:
        raise ValueError("Give at least one candidate MergeSpec to select from.")
    if images == "budget":
        images = study.profile.budget.tuning_images
    if model is None:
        model, heads = study.load_all_adapters()
    if val_singles is None:
        val_singles = study.singles_table(model, heads, split=split, images=images)
    rows = study.merges_table(val_singles, methods=list(candidates), combos=combos, model=model, heads=heads,
                              split=split, images=images)
    scores = (rows.groupby("method", sort=False)["normalized_accuracy"].mean()
              .reindex([c.label for c in candidates]).rename("val_mean_normalized").reset_index())
    best = candidates[int(scores["val_mean_normalized"].to_numpy().argmax())]
    return best, scores
