"""The Colab student's path without the GPU and the network: every chapter executed in the ``full`` profile against
offline stand-ins with the real datasets' schema (``lora_merge_utils.data.standins``), on this CPU.

The chapters run in order sharing one artifact folder, as they do on Colab with artifacts kept on Google Drive; one
chapter also runs alone on a fresh folder, as on a new runtime without Drive. Each run's work tallies (images decoded,
trained, evaluated, timed; merges) must match what the time plan (``lora_merge_utils.course.plan``) predicts, so the
plan's T4 minutes follow the chapters.

A Colab student runs the chapters under Colab's package versions, so that is where they run here too, once: these
tests are marked ``colab``, which only the run under those versions selects (``tests/test_colab_versions.py``, part
of ``make test``); ``pytest -m smoke`` runs them under this environment's versions when asked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lora_merge_utils.course.plan import CHAPTERS, T4, Session, chapter_plan, sizes_of
from lora_merge_utils.instrumentation.workload import KINDS
from lora_merge_utils.profiles import FULL, apply_overrides

from .helpers import CHAPTERS as NOTEBOOKS
from .helpers import ROOT, load_script


def _close(measured: dict, planned: dict) -> list[str]:
    """Kinds of work where the run and the plan disagree by more than 2% (one solution picks a triple whose size
    the plan cannot know in advance)."""
    return [
        f"{kind}: ran {measured[kind]}, planned {planned[kind]}"
        for kind in KINDS
        if abs(measured[kind] - planned[kind]) > 0.02 * planned[kind] + 150
    ]


def _stderr(notebook) -> list[str]:
    return [
        output.get("text", "")[:300]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stderr"
    ]


@pytest.fixture(scope="module")
def script():
    return load_script("execute_notebooks")


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Path:
    """One build of the stand-ins for both runs (each run keeps its own artifacts)."""
    return tmp_path_factory.mktemp("standins")


@pytest.fixture(scope="module")
def smoke_profile():
    from lora_merge_utils.data.standins import SMOKE_OVERRIDES

    return apply_overrides(FULL, SMOKE_OVERRIDES)


def test_the_chapters_are_the_plans_chapters():
    assert sorted(CHAPTERS) == [path.name for path in NOTEBOOKS]


def _run_in_order(directory, script, smoke_profile, notebooks, standins) -> dict[str, str]:
    """Execute ``notebooks`` in order in the smoke run, sharing one artifact folder as Drive would; check that none
    writes to stderr and that each one's work is what the plan predicts; return what each printed."""
    env = script.smoke_environment(directory, standins)
    assert json.loads(env["LORA_BOOK_OVERRIDES"])["smoke"] is True and env["LORA_BOOK_PROFILE"] == "full"
    printed, works = {}, {}
    for path in notebooks:
        _, works[path.name], notebook = script.smoke_chapter(path, env, timeout=600)
        assert not _stderr(notebook), f"{path.name} wrote to stderr: {_stderr(notebook)}"
        printed[path.name] = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    # Which families chapter 5 runs on every seed depends on its validation choices: the plan is told them.
    choices = re.search(r"best data-free: (.+?); best data-light: (.+?)\n", printed.get("05_merge_methods.ipynb", ""))
    plan = chapter_plan(smoke_profile, T4, **({"chapter5_choices": choices.groups()} if choices else {}))
    plan = plan.set_index("notebook")
    for name, work in works.items():
        assert not _close(work, plan.loc[name]), f"{name}: {_close(work, plan.loc[name])}"
    assert "profile: full" in printed[NOTEBOOKS[0].name] and "smoke run" in printed[NOTEBOOKS[0].name]
    assert "smoke run: skipped the check that the pretrained backbone" in printed["01_head_finetuning_baseline.ipynb"]
    assert "datasets/" in printed[NOTEBOOKS[0].name], "chapter 0 saves the sample of every task"
    return printed


@pytest.mark.smoke
@pytest.mark.colab
def test_every_chapter_runs_in_the_full_profile_in_order(tmp_path, script, smoke_profile, standins):
    printed = _run_in_order(tmp_path, script, smoke_profile, NOTEBOOKS, standins)
    assert re.search(r"best data-free: (.+?); best data-light: (.+?)\n", printed["05_merge_methods.ipynb"]), (
        "chapter 5 prints the families it chose"
    )


@pytest.mark.smoke
@pytest.mark.colab
def test_a_chapter_runs_alone_on_a_fresh_runtime(tmp_path, script, smoke_profile, standins):
    """Chapter 4 opened first, with nothing saved: it loads the data, trains heads and adapters, then merges."""
    env = script.smoke_environment(tmp_path, standins)
    path = ROOT / "notebooks" / "04_triple_merges.ipynb"
    _, work, notebook = script.smoke_chapter(path, env, timeout=600)
    alone = Session(smoke_profile, sizes_of(smoke_profile))
    CHAPTERS[path.name][1](alone, T4)
    assert work["trained"] > 0 and not _close(work, alone.work), _close(work, alone.work)
    assert (tmp_path / "artifacts").is_dir() and any((tmp_path / "artifacts").glob("full-*/adapters/*"))
