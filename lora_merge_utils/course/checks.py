"""The chapters' checks of what their world shows: the book's policy for a result that is not what it expected.

The tiny world is ours and fixed, so a check that fails there is a bug and stops the chapter; on real data the world
may differ from what published work reports, so the chapter says so and goes on; a smoke run (stand-ins for real
weights and data) has nothing real to check and says that it skips it. The profile says which it is
(:attr:`~lora_merge_utils.profiles.Profile.calibrated_checks`, :attr:`~lora_merge_utils.profiles.Profile.smoke`).

Example:
    >>> from lora_merge_utils.profiles import TINY
    >>> check(TINY, "two is more than one", 2 > 1, expected="arithmetic")
    True
"""

from __future__ import annotations

from typing import Any

from ..profiles import Profile


def _profile(run: Any) -> Profile:
    """The profile of ``run``: a :class:`~lora_merge_utils.profiles.Profile`, or anything that has one (a study)."""
    profile = run if isinstance(run, Profile) else getattr(run, "profile", None)
    if not isinstance(profile, Profile):
        raise TypeError(f"check needs a study or a profile, got {type(run).__name__}.")
    return profile


def expects_real_results(run: Any, check: str) -> bool:
    """Whether a check that needs real pretrained weights and real data should run on ``run`` (a study or a profile):
    ``True``, except in a smoke run, where it prints that ``check`` is skipped and why, and returns ``False``."""
    if _profile(run).smoke:
        print(f"smoke run: skipped the check that {check} (it needs real pretrained weights and real data)")
        return False
    return True


def check(run: Any, claim: str, holds: bool, expected: str, details: Any = None) -> bool:
    """A chapter's check of what its world shows, e.g. ``check(study, "adapters beat the baseline on 5 of 6 tasks",
    wins >= 5, expected="...")``; returns whether it holds.

    Where the checks were calibrated (the tiny profile) a check that fails stops the chapter with an
    ``AssertionError``: the world is ours and fixed, so a failure means a bug. On real data it prints a warning saying
    what was expected there and why (``expected``: the figure published work reports, with its source) and the
    chapter goes on. A smoke run skips it, saying so. ``details`` (a table, say) is shown with the failure.
    """
    profile = _profile(run)
    if profile.smoke:
        print(f"smoke run: skipped the check that {claim} (it needs real pretrained weights and real data)")
        return True
    if holds:
        return True
    shown = f"\n{details}" if details is not None else ""
    if profile.calibrated_checks:
        raise AssertionError(f"The check that {claim} failed in the {profile.name} profile.{shown}")
    print(f"\u26a0 Not as expected: {claim} does not hold on this run. {expected}{shown}")
    return False
