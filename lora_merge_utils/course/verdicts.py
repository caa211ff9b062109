"""The book's headline verdicts, read as one family.

Each chapter corrects its own headline verdicts together (Holm's method, :func:`~lora_merge_utils.stats.holm`). A
reader of the conclusions, though, reads the verdicts of chapters 4, 5 and 6 at once, and the more verdicts one reads,
the more of them cross a threshold by chance. So each of those chapters records its verdicts with their p-values
(:func:`record_verdicts`, one JSON file per chapter under ``<artifacts>/verdicts/``; a chapter run again replaces its
own file), and chapter 7 reads them all (:func:`read_verdicts`) and corrects them as one family (:func:`book_family`).

Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = record_verdicts(root, 4, {"triples": Verdict("triples against the floor", 0.03, True)})
    >>> _ = record_verdicts(root, 5, {"ties": Verdict("TIES against averaging", 0.02, True)})
    >>> _ = record_verdicts(root, 6, {"rank": Verdict("rank 2 against rank 8", 0.5, False)})
    >>> table, missing = read_verdicts(root)
    >>> book_family(table)["book-wide"].tolist(), missing
    (['not resolved', 'not resolved', 'not resolved in its chapter'], [])
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import row_noise, stats
from ..artifacts import read_json, write_json
from ..evaluation import code_version, source_version
from ..integrity import KEY_NAME, find_key, folder_key, seal_holds, sealed
from ..stats import LEVEL, Estimate, holm_p_values


def verdicts_code_version() -> str:
    """A hash of the code a verdict depends on: the code that scores merges
    (:func:`~lora_merge_utils.evaluation.code_version`), the statistics that turn scores into estimates and p-values
    (:mod:`~lora_merge_utils.stats` and :mod:`~lora_merge_utils.row_noise`), and this module. A record written by
    other code is stale (:func:`stale_chapters`), so an edit to the intervals or the tests asks for chapters 4-6 to
    run again too."""
    return source_version(stats, row_noise, sys.modules[__name__], start=code_version().encode())


@dataclass(frozen=True)
class Verdict:
    """One headline verdict as its chapter reads it."""

    question: str
    """What is tested, in words and without a direction (e.g. ``"triples against the floor"``): the test is
    two-sided, and the estimate's sign says which way it went."""
    p_value: float
    """Two-sided p-value of "no effect", from the same test as the chapter's verdict."""
    resolved_in_chapter: bool
    """Whether the chapter calls it resolved, after the chapter's own correction for its family."""
    estimate: str = ""
    """The measurement as the chapter shows it, e.g. ``"+0.068 [+0.051, +0.084]"`` (a rank correlation for a
    permutation test)."""
    resolvable: float | None = None
    """The smallest true difference the chapter's design would resolve with 80% power (``None`` where the test gives
    none, e.g. a permutation test)."""

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"a verdict needs its question in words, got {self.question!r}.")
        if not isinstance(self.resolved_in_chapter, (bool, np.bool_)):
            raise TypeError(
                f"resolved_in_chapter of {self.question!r} must be True or False, got {self.resolved_in_chapter!r}."
            )
        try:
            p = float(self.p_value)
        except (TypeError, ValueError):
            p = math.nan
        if not 0.0 <= p <= 1.0:  # NaN fails too
            raise ValueError(f"the verdict {self.question!r} has p-value {self.p_value!r}; it must lie in [0, 1].")
        object.__setattr__(self, "p_value", p)  # plain Python types, so that the record is valid JSON
        object.__setattr__(self, "resolved_in_chapter", bool(self.resolved_in_chapter))
        if self.resolvable is not None:
            size = float(self.resolvable)
            object.__setattr__(self, "resolvable", size if math.isfinite(size) else None)

    @classmethod
    def of(cls, question: str, e: Estimate, resolved_in_chapter: bool | None = None) -> Verdict:
        """The verdict of a paired difference ``e`` (resolved in its chapter if its interval excludes zero, unless
        ``resolved_in_chapter`` says otherwise, e.g. after the chapter's Holm correction). Word ``question`` without
        a direction ("A against B"): the estimate's sign gives it."""
        if not np.isfinite(e.se):
            raise ValueError(f"{question!r}: the estimate has no finite standard error ({e}), so it has no p-value.")
        resolved = e.resolved if resolved_in_chapter is None else resolved_in_chapter
        estimate = f"{e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"
        return cls(question, e.p_value, bool(resolved), estimate, e.smallest_resolvable(0.8))


def verdicts_file(root: Path | str, chapter: int) -> Path:
    """Where chapter ``chapter`` records its verdicts under the artifacts folder ``root``."""
    return Path(root) / "verdicts" / f"chapter-{chapter}.json"


def record_verdicts(root: Path | str, chapter: int, verdicts: dict[str, Verdict]) -> Path:
    """Save ``verdicts`` (name -> :class:`Verdict`) as chapter ``chapter``'s record, atomically, replacing the
    chapter's earlier record; returns the file."""
    if not isinstance(chapter, int) or chapter < 0:
        raise ValueError(f"chapter must be a chapter number (an int >= 0), got {chapter!r}.")
    if not verdicts:
        raise ValueError(f"chapter {chapter} records no verdict; pass at least one name -> Verdict.")
    for name, v in verdicts.items():
        if not isinstance(v, Verdict):
            raise TypeError(f"verdict {name!r} is a {type(v).__name__}; build it with Verdict(...) or Verdict.of(...).")
    path = verdicts_file(root, chapter)
    # a list, not an object: the chapter's order survives write_json's sorted keys
    record = {
        "chapter": chapter,
        "code_version": verdicts_code_version(),
        "recorded": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    record |= {"verdicts": [{"name": name, **asdict(v)} for name, v in verdicts.items()]}
    write_json(path, sealed(record, folder_key(root)))
    return path


def read_verdicts(root: Path | str, chapters: Sequence[int] | None = None) -> tuple[pd.DataFrame, list[int]]:
    """Every recorded verdict of ``chapters`` (default: every chapter that recorded some under ``root``), one row
    each (columns ``chapter``, ``name``, :class:`Verdict`'s fields and the ``code_version`` of the package that
    recorded it, from :func:`verdicts_code_version`), and the chapters of ``chapters`` that have recorded none yet (run
    them first). Which chapters form the book's family is the book's to say
    (:func:`lora_merge_utils.course.chapters.verdict_chapters`)."""
    if chapters is None:
        recorded = (Path(root) / "verdicts").glob("chapter-*.json")
        chapters = sorted(int(m[1]) for p in recorded if (m := re.fullmatch(r"chapter-(\d+)\.json", p.name)))
    rows, missing = [], []
    for chapter in chapters:
        path = verdicts_file(root, chapter)
        if not path.is_file():
            missing.append(chapter)
            continue
        record = read_json(path)
        if not seal_holds(record, find_key(Path(root))):  # the artifacts folder's own key
            raise ValueError(
                f"{path} is not the record chapter {chapter} wrote: its seal does not hold (edited, copied from "
                f"another artifacts folder or without its {KEY_NAME}, or written by an older version). Delete it and "
                f"run chapter {chapter} again to write it."
            )
        try:
            if record["chapter"] != chapter:
                raise ValueError(f"it holds chapter {record['chapter']}'s verdicts")
            for fields in record["verdicts"]:
                fields = dict(fields)
                name = fields.pop("name")
                rows.append(
                    {
                        "chapter": chapter,
                        "name": name,
                        **asdict(Verdict(**fields)),
                        "code_version": record.get("code_version", ""),
                    }
                )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(
                f"{path} is not a record of verdicts ({error}); delete it and run chapter {chapter} again to write it."
            ) from None
    columns = ["chapter", "name", "question", "p_value", "resolved_in_chapter", "estimate", "resolvable"]
    columns.append("code_version")
    return pd.DataFrame(rows, columns=columns), missing


def stale_chapters(table: pd.DataFrame) -> list[int]:
    """The chapters of ``table`` (from :func:`read_verdicts`) whose verdicts were recorded by other code than the
    code installed now (:func:`verdicts_code_version`): run them again before reading them."""
    return sorted(int(c) for c in table.loc[table["code_version"] != verdicts_code_version(), "chapter"].unique())


def book_family(table: pd.DataFrame, alpha: float = 1 - LEVEL) -> pd.DataFrame:
    """``table`` (from :func:`read_verdicts`) with the verdicts corrected as one family by Holm's method: column
    ``book-wide`` is ``"stands"`` for a verdict resolved in its chapter that survives, ``"not resolved"`` for one
    that does not, and ``"not resolved in its chapter"`` otherwise (the correction only ever removes verdicts)."""
    if table.empty:
        return table.assign(**{"book-wide": pd.Series(dtype=str)})
    keys = list(zip(table["chapter"], table["name"]))
    if len(set(keys)) != len(keys):
        raise ValueError("two verdicts share a chapter and a name; give each verdict of a chapter its own name.")
    stands = holm_p_values(dict(zip(keys, table["p_value"].astype(float))), alpha)
    book = [
        ("stands" if stands[key] else "not resolved") if resolved else "not resolved in its chapter"
        for key, resolved in zip(keys, table["resolved_in_chapter"])
    ]
    return table.assign(**{"book-wide": book})
