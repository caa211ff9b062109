"""The accepted values of a number or a choice, in one place for everything that checks a setting: a merge method's
knobs (:mod:`~lora_merge_utils.methods`) and a profile's fields (:mod:`~lora_merge_utils.profiles`).

Example:
    >>> Range(float, 0, 1, low_open=True).check(0.5, "density")
    0.5
    >>> Range(int, 1, 10).words
    'a whole number from 1 to 10'
    >>> Range(bool).check(1, "budget.rank_sweep_leaders")
    Traceback (most recent call last):
    ...
    ValueError: budget.rank_sweep_leaders must be true or false, got 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """A type and its bounds (``low_open``/``high_open``: the bound itself is excluded), or a set of ``choices``."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    @property
    def words(self) -> str:
        """The accepted values in words, e.g. ``in (0, 1]`` or ``a whole number from 1 to 100000``."""
        if self.choices:
            return " or ".join(repr(c) for c in self.choices)
        if self.kind is bool:
            return "true or false"
        if self.kind is int:
            return (
                f"a whole number from {self.low:d} to {self.high:d}"
                if self.high is not None
                else f"a whole number >= {self.low:d}"
            )
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def check(self, value: object, name: str) -> object:
        """``value`` converted to the type if it is accepted; a ``ValueError`` naming ``name`` otherwise."""
        if self.choices:
            if value not in self.choices:
                raise ValueError(f"{name} must be {self.words}, got {value!r}.")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be {self.words}, got {value!r}.")
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be {self.words}, got {value!r}.")
        else:
            try:
                value = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number {self.words}, got {value!r}.") from None
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number {self.words}, got {value!r}.")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise ValueError(f"{name} must be {self.words}, got {value!r}.")
        return value
