"""How one test run is laid out over the machine: every test and chapter cell, under ``pytest -n 2`` (``make test``).

* **Groups.** Each item runs in one group, and a group runs on one xdist worker (:func:`group_of`): a test module's
  tests stay together (their module fixtures are built once), the chapters executed by nbval run in two ordered
  groups, and every test of a Jupyter Book build is in ``tests/test_built_book.py``, so each edition is built once.
* **Order.** Groups are queued longest first (:data:`HEAVY_FIRST`), so the two workers start on the two long chains
  and the many short modules fill in around them.
* **One thread per worker.** Two workers of one thread each get about a third more done on two cores than one
  process of two threads (the tiny ViT's matrices are too small for a second thread to pay), and two chapter kernels
  never fight for one core. Kernels and subprocesses inherit the setting.
* **Chapters from cold.** The chapters executed by nbval share one artifacts folder made for the run
  (:func:`chapter_artifacts`), as a reader's first ``make notebooks`` does: a local run never reuses adapters that
  older code trained into ``notebooks/artifacts``.
* **The chapters' one dependency.** Chapter 2 trains the adapters that chapters 5-7 read. When the two chapter
  groups run on different workers, chapter 5's first cell waits until chapter 2 has finished on the other worker
  (:func:`pytest_runtest_setup`), so the adapters are trained once, by chapter 2, as a reader's run does.

The groups are computed from node ids (:class:`GroupScheduling`, through xdist's ``pytest_xdist_make_scheduler``
hook) rather than from ``xdist_group`` marks, which pytest 9.2 no longer lets xdist 3.8 apply. Markers
(``--strict-markers``; select with ``-m``) are listed in ``pyproject.toml``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:  # before anything imports torch: its thread pool is sized once
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_variable] = "1"

from lora_merge_utils.course.chapters import CHAPTERS, adapter_chapter  # noqa: E402 (no torch: threads set above)

TRAINS_ADAPTERS = adapter_chapter().prefix
"""The chapter that trains every adapter of the profile (the others load them)."""
SECOND_CHAPTER_GROUP = tuple(c.prefix for c in CHAPTERS if c.test_group == 2)
"""Chapters that run in the second chapter group (:attr:`Chapter.test_group`): chapter 5 (the longest) beside the
others, which follow each other in the first."""
NAMED_GROUPS = {
    "tests/test_full_profile_smoke.py": "smoke",  # run under Colab's versions (test_colab_versions), or with -m smoke
    "tests/test_built_book.py": "book",
}
"""Groups by the start of a node id (the first match counts); everything else is grouped by its module."""
HEAVY_FIRST = ("chapters-1", "tests/test_colab_versions.py", "chapters-2", "smoke", "book")
"""Groups queued before the rest, longest chain first: the first chapter group on one worker; the run under Colab's
versions (the unit tests and the full-profile smoke) on the other, then chapter 5, whose adapters chapter 2 has
trained by then; every other group keeps its collection order."""
WAIT_SECONDS = 1800


def chapter_of(nodeid: str) -> str | None:
    """``"05"`` for a cell of ``notebooks/05_*.ipynb`` executed by nbval, else ``None``."""
    path = nodeid.split("::", 1)[0]
    folder, _, name = path.rpartition("/")
    if folder.endswith("notebooks") and name.endswith(".ipynb") and name[:2].isdigit():
        return name[:2]
    return None


def group_of(nodeid: str) -> str:
    """The group an item runs in: its chapter group, a named group, or its module."""
    chapter = chapter_of(nodeid)
    if chapter is not None:
        return "chapters-2" if chapter in SECOND_CHAPTER_GROUP else "chapters-1"
    named = next((group for start, group in NAMED_GROUPS.items() if nodeid.startswith(start)), None)
    return named or nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's scope scheduling with this run's groups as scopes, queued in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False  # the order of pytest_collection_modifyitems below
    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if chapter_of(item.nodeid) is not None or item.nodeid.split("::", 1)[0].endswith(".ipynb"):
            item.add_marker(pytest.mark.notebook)  # a chapter's cell, or a notebook page's
    rank = {name: index for index, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: in-group order is kept


def _done_marker(config: pytest.Config, chapter: str) -> Path:
    """A file every worker of this run sees: in the run's base temporary folder, the parent of each worker's own
    (which pytest removes with its old runs)."""
    return Path(config.option.basetemp).parent / f"chapter-{chapter}.done"


def chapter_artifacts(config: pytest.Config) -> Path:
    """The artifacts folder of this run's chapters: new with the run, seen by every worker (beside their own
    temporary folders)."""
    if WORKER:
        return Path(config.option.basetemp).parent / "chapter-artifacts"
    return config._tmp_path_factory.getbasetemp() / "chapter-artifacts"


def pytest_runtest_setup(item: pytest.Item) -> None:
    chapter = chapter_of(item.nodeid)
    if chapter is not None:  # before the chapter's kernel starts (nbval starts it with its first cell)
        os.environ["LORA_BOOK_ARTIFACTS"] = str(chapter_artifacts(item.config))
    if not WORKER or chapter not in SECOND_CHAPTER_GROUP:
        return
    chapters = [chapter_of(other.nodeid) for other in item.session.items]
    first = next(other for other, c in zip(item.session.items, chapters) if c in SECOND_CHAPTER_GROUP)
    if item is not first or TRAINS_ADAPTERS not in chapters:
        return
    deadline = time.monotonic() + WAIT_SECONDS
    while not _done_marker(item.config, TRAINS_ADAPTERS).exists() and time.monotonic() < deadline:
        time.sleep(1)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    ends_chapter = nextitem is None or chapter_of(nextitem.nodeid) != TRAINS_ADAPTERS
    if WORKER and chapter_of(item.nodeid) == TRAINS_ADAPTERS and ends_chapter:
        _done_marker(item.config, TRAINS_ADAPTERS).touch()
