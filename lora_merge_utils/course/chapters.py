"""The book's chapters, one record each: everything the course tooling and the tests know of a chapter, in one place.

The time plan (:mod:`~lora_merge_utils.course.plan`), the GPU memory plan (:mod:`~lora_merge_utils.course.memory`),
grading's time limits (:mod:`~lora_merge_utils.course.grading`), the exercise table's student minutes
(:mod:`~lora_merge_utils.course.exercises`), the chapters whose verdicts the book corrects together, and the test
groups of the repository's ``conftest.py`` all read :data:`CHAPTERS`. Adding a chapter is one record here, one
notebook in ``notebooks/``, and the calls it makes replayed in :data:`lora_merge_utils.course.plan.REPLAYS`; a test
checks that every notebook has exactly one record and every record one notebook.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chapter:
    """One chapter notebook and what the tooling needs to know of it.

    Attributes:
        number: Its number (``0`` for ``00_introduction_and_data.ipynb``).
        file: The notebook's file name in ``notebooks/``.
        title: Its title, as the time plan prints it.
        trains: ``"adapters"`` for the chapter that trains every adapter of the profile, else ``""`` (the others load
            them, or train only what is theirs alone).
        cold_seconds: Its time from cold in the tiny profile on a 2-core CPU (``make notebooks``), measured at the
            machine's slower speed, which grading's default time limits are set from.
        memory: Its GPU peak as the memory plan counts it: backbone-sized copies on the GPU, its largest step
            (``"evaluate"``, ``"train"`` or ``"adapt"``), and that step's batch (a number, or ``"eval_batch"``,
            ``"batch"``, ``"adamerging"``: the profile's).
        student_minutes: An estimate, not a measurement: minutes a student needs to read it, run it and answer its
            exercises.
        records_verdicts: Whether it records headline verdicts that the conclusions quote and the book corrects as
            one family.
        test_group: The group its nbval cells run in under xdist (2: beside the first group, which holds every other
            chapter in order).
    """

    number: int
    file: str
    title: str
    trains: str
    cold_seconds: int
    memory: tuple[float, str, str]
    student_minutes: int
    records_verdicts: bool = False
    test_group: int = 1

    @property
    def prefix(self) -> str:
        """``"05"``: how the file name starts."""
        return f"{self.number:02d}"


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(0, "00_introduction_and_data.ipynb", "Introduction and data", "", 24, (2, "evaluate", "0"), 60),
    Chapter(
        1, "01_head_finetuning_baseline.ipynb", "Head finetuning baseline", "", 55, (2, "evaluate", "eval_batch"), 75
    ),
    Chapter(
        2, "02_training_the_adapters.ipynb", "Training the six adapters", "adapters", 409, (4, "train", "batch"), 90
    ),
    Chapter(3, "03_pairwise_merges.ipynb", "Pairwise merges", "", 46, (3, "evaluate", "eval_batch"), 90),
    Chapter(4, "04_triple_merges.ipynb", "Triple merges", "", 83, (4, "train", "batch"), 75, records_verdicts=True),
    Chapter(
        5,
        "05_merge_methods.ipynb",
        "Merge methods side by side",
        "",
        450,
        (6, "adapt", "adamerging"),
        120,
        records_verdicts=True,
        test_group=2,
    ),
    Chapter(
        6,
        "06_task_similarity.ipynb",
        "Does similarity predict interference?",
        "",
        320,
        (4, "train", "batch"),
        90,
        records_verdicts=True,
    ),
    Chapter(7, "07_inference_cost.ipynb", "What does merging buy at inference?", "", 39, (8, "evaluate", "64"), 75),
)
"""Every chapter, in order."""

RANK_SWEEP = (2, 8, 32)
"""The LoRA ranks chapter 6 compares on every pair (every seed); the time plan replays the same sweep."""


def by_number(number: int) -> Chapter:
    """The chapter numbered ``number``; a ``KeyError`` names the numbers there are."""
    for chapter in CHAPTERS:
        if chapter.number == number:
            return chapter
    raise KeyError(f"no chapter {number}; the book has chapters {', '.join(str(c.number) for c in CHAPTERS)}")


def by_file(name: str) -> Chapter:
    """The chapter whose notebook is called ``name``."""
    for chapter in CHAPTERS:
        if chapter.file == name:
            return chapter
    raise KeyError(f"no chapter notebook {name!r}; the book's are {', '.join(c.file for c in CHAPTERS)}")


def verdict_chapters() -> tuple[int, ...]:
    """The chapters whose verdicts the book corrects as one family (their numbers, in order)."""
    return tuple(c.number for c in CHAPTERS if c.records_verdicts)


def adapter_chapter() -> Chapter:
    """The chapter that trains every adapter of the profile."""
    (chapter,) = [c for c in CHAPTERS if c.trains == "adapters"]
    return chapter
