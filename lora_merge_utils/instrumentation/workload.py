"""Tallies of the work this process has done: images decoded, trained on and evaluated, merges built.

The time plan (:mod:`lora_merge_utils.course.plan`) predicts these counts for every chapter; the full-profile smoke test
compares its prediction with the tallies of a real run, so the plan cannot drift from what the chapters do.
"""

from __future__ import annotations

from collections import Counter

KINDS = ("decoded", "trained", "adapted", "evaluated", "timed", "merges")
"""``decoded``: images read and resized; ``trained``: images through a LoRA training step (forward and backward);
``adapted``: images through an AdaMerging step (forward, and backward through the merged weights to the merge
coefficients: a third more arithmetic than a LoRA step); ``evaluated``: images through a backbone without gradients
(mixed precision on a GPU); ``timed``: images through a backbone in the timing loops of chapter 7 (full precision);
``merges``: merged backbones built."""

_TALLY: Counter = Counter()


def count(kind: str, amount: int = 1) -> None:
    """Add ``amount`` to the tally of ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"Unknown kind of work {kind!r}; use one of {', '.join(KINDS)}.")
    _TALLY[kind] += int(amount)


def work_done() -> dict[str, int]:
    """The tallies so far, every kind included."""
    return {kind: _TALLY[kind] for kind in KINDS}


def reset_work() -> None:
    """Start the tallies from zero."""
    _TALLY.clear()
