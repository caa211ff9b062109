"""The chapter registry (lora_merge_utils.course.chapters) is the one place a chapter's facts live: every notebook
has exactly one record and every record one notebook, and every tool that needs a chapter fact reads it there."""

from __future__ import annotations

import pytest

from lora_merge_utils.course import chapters, exercises, grading, memory, plan

from .helpers import CHAPTERS, ROOT

pytestmark = pytest.mark.repository  # reads only the repository's own files

NOTEBOOKS = [p.name for p in CHAPTERS]


def test_every_notebook_has_exactly_one_record_and_every_record_one_notebook():
    files = [c.file for c in chapters.CHAPTERS]
    assert sorted(files) == NOTEBOOKS and len(set(files)) == len(files)
    assert [c.number for c in chapters.CHAPTERS] == list(range(len(NOTEBOOKS)))
    assert all(c.file.startswith(c.prefix + "_") for c in chapters.CHAPTERS)


def test_every_tool_reads_the_registry():
    """A new chapter gets its time plan, memory row, grading limit and student minutes from its record, not a
    default: each table below is derived from the registry, so none can miss a chapter."""
    numbers = [c.number for c in chapters.CHAPTERS]
    assert sorted(plan.REPLAYS) == numbers, "every chapter's calls are replayed by the time plan"
    assert list(plan.CHAPTERS) == [c.file for c in chapters.CHAPTERS]
    assert list(memory.CHAPTER_STEPS) == [c.file for c in chapters.CHAPTERS]
    assert grading.CHAPTER_SECONDS == {c.number: c.cold_seconds for c in chapters.CHAPTERS}
    assert exercises.STUDENT_MINUTES == {c.number: c.student_minutes for c in chapters.CHAPTERS}
    assert {e.chapter for e in exercises.EXERCISES.values()} <= set(numbers), "an exercise of a chapter that is not"


def test_the_registry_s_facts_are_the_chapters_own():
    """The adapter chapter trains every adapter, and chapter 6 sweeps the registry's ranks (it imports them)."""
    trainer = chapters.adapter_chapter()
    source = (ROOT / "notebooks" / trainer.file).read_text(encoding="utf-8")
    assert "ensure_adapters(" in source
    sweep = (ROOT / "notebooks" / chapters.by_number(6).file).read_text(encoding="utf-8")
    assert "import RANK_SWEEP as RANKS" in sweep
    with pytest.raises(KeyError, match="no chapter 99; the book has chapters 0, 1"):
        chapters.by_number(99)
