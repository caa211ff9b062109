"""The time plan: its T4 budget for the full profile, and the rules its replay follows. (That the replay matches what
the chapters really do is checked by the full-profile smoke test.)"""

import dataclasses

from lora_merge_utils import FULL, TINY
from lora_merge_utils.cli import main
from lora_merge_utils.course.plan import T4, Session, Sizes, chapter_plan, sizes_of

from .helpers import ROOT


def test_the_full_profile_fits_a_t4_session_and_the_book_75_minutes():
    plan = chapter_plan(FULL, T4)
    assert len(plan) == 8
    assert plan["warm_minutes"].max() <= 25, plan[["chapter", "warm_minutes"]]
    assert plan["warm_minutes"].sum() <= 75, "the whole book in order with Drive, first downloads included"
    assert plan["peak_gpu_gb"].max() <= 12, "every chapter fits a T4 with room to spare"
    assert plan["download_mb"].sum() < 1700, "only the train and test splits are downloaded"
    assert (plan["alone_minutes"] >= plan["warm_minutes"] - 1e-9).all(), "a fresh runtime never does less"


def test_full_profile_sizes_are_class_balanced_samples():
    sizes = sizes_of(FULL)
    assert sizes.train["mnist"] == 2000 and sizes.test["mnist"] == 500 and sizes.val["mnist"] == 500
    assert sizes.train["resisc45"] == 44 * 45 and sizes.test["dtd"] == 10 * 47
    assert sizes.of("mnist", "test", 250) == 250 and sizes.of("dtd", "test", 250) == 5 * 47
    assert sizes.of("mnist", "test", 5000) == 500 and sizes.of("mnist", "test") == 500


def test_a_session_decodes_each_split_once_and_reuses_what_is_saved():
    sizes = Sizes({"a": 100}, {"a": 30}, {"a": 50}, {"a": 10})
    profile = TINY.replace(tasks=("a",), seeds=1)
    fresh = Session(profile, sizes)
    fresh.ensure_adapter("a")
    assert fresh.work["decoded"] == 180 and fresh.work["trained"] == profile.train.adapter_epochs * 100
    assert fresh.work["evaluated"] == 100 + 30 + 50 + 50, "features of train, val and test, then the adapter on test"
    fresh.dataset("a", "test", images=20)
    assert fresh.work["decoded"] == 180, "a sample of a decoded split is picked, not decoded"
    warm = Session(profile, sizes, saved=fresh.saved)
    warm.ensure_adapter("a")
    assert sum(warm.work.values()) == 0
    warm.merges([("a",)], ["m"], cache=True)
    warm.merges([("a",)], ["m"], cache=True)
    assert warm.work["merges"] == 1 and warm.work["evaluated"] == 50


def test_a_later_chapter_reads_the_features_and_adapter_results_an_earlier_one_saved():
    sizes = Sizes({"a": 100}, {"a": 30}, {"a": 50}, {"a": 10})
    profile = TINY.replace(tasks=("a",), seeds=1)
    earlier = Session(profile, sizes)
    earlier.singles()
    assert earlier.work["evaluated"] == 100 + 30 + 50 + 50, "features of every split, the adapter on test once"
    later = Session(profile, sizes, saved=earlier.saved)
    later.singles()
    later.features("a", "train")
    assert sum(later.work.values()) == 0, "nothing decoded, nothing evaluated"
    later.singles("val")
    assert later.work["evaluated"] == 30 and later.work["decoded"] == 30, "the adapter on val, once"
    alone = Session(profile, sizes)
    alone.singles()
    assert alone.work == earlier.work, "a fresh runtime does it all again"


def test_dense_float64_svds_are_priced_at_the_gpu_s_float64_rate():
    from lora_merge_utils.course.plan import Spec, dense_svd_seconds, svd_flops

    flops = 12 * (svd_flops(2304, 768) + svd_flops(768, 768) + 2 * svd_flops(3072, 768))  # ViT-B/16's 48 layers
    assert dense_svd_seconds(FULL, 1, T4) == flops / T4.float64
    assert 5 < dense_svd_seconds(FULL, 1, T4) < 60 and dense_svd_seconds(TINY, 1, T4) < 0.1
    sizes = Sizes({"a": 100, "b": 20}, {"a": 30, "b": 30}, {"a": 50, "b": 50}, {"a": 10, "b": 10})
    session = Session(FULL.replace(tasks=("a", "b"), seeds=1), sizes)
    session.merges([("a", "b")], [Spec("iso_c_full", svd_sets=(0, 1)), Spec("iso_cts_full", svd_sets=(1, 1))])
    assert session.svd_sets == 1 + 3, "Iso-C: the sum's; Iso-CTS: the sum's and each task's"


def test_plan_command_prints_every_chapter(capsys):
    assert main(["plan", "--profile", "full"]) == 0
    out = capsys.readouterr().out
    assert "Colab T4" in out and "Merge methods side by side" in out and "whole book in order" in out


def test_the_readme_states_the_plan():
    import re

    text = (ROOT / "README.md").read_text()
    plan = chapter_plan(FULL, T4)
    for index, row in plan.iterrows():
        warm, alone, memory = round(row["warm_minutes"]), round(row["alone_minutes"]), f"{row['peak_gpu_gb']:.1f}"
        line = rf"^\| {index} {re.escape(row['chapter'])}.*\| {warm} \| {alone} \| {re.escape(memory)} \|$"
        assert re.search(line, text, flags=re.M), (
            f"README: chapter {index} should say {warm} / {alone} T4 minutes and {memory} GB"
        )
    assert f"**{round(plan['warm_minutes'].sum())}**" in text


def test_activation_memory_is_measured_for_the_full_backbone_and_measurable_for_any():
    import json

    from lora_merge_utils.course.memory import KINDS, MEASURED, chapter_memory, measure_activations
    from lora_merge_utils.course.memory import _architecture as architecture

    record = json.loads(MEASURED.read_text())
    assert record["backbone"] == FULL.backbone.model_name and record["image_size"] == FULL.image_size
    half, full = record["megabytes_per_image"], record["megabytes_per_image_full_precision"]
    assert all(0 < half[kind] < full[kind] for kind in KINDS), "half precision keeps less"
    assert half["train"] > 10 * half["evaluate"], "a backward pass keeps every block's activations"
    tiny = measure_activations(architecture(TINY), TINY.image_size, TINY.lora.rank, half=False)
    assert set(tiny) == set(KINDS) and all(v > 0 for v in tiny.values())
    assert tiny["train"] < half["train"] / 10, "the 32-px ViT keeps far less per image than ViT-B/16 at 224 px"
    memory = chapter_memory(FULL)
    assert memory["02_training_the_adapters.ipynb"] > memory["03_pairwise_merges.ipynb"], "training needs most"


def test_the_plan_prices_chapters_with_rates_a_gpu_check_measured(tmp_path, capsys):
    import json

    import pytest

    from lora_merge_utils.course.plan import measured_throughput

    rates = {"amp": 2 * T4.train, "fp32": T4.train}
    record = {
        "device": "Test GPU",
        "train_images_per_second": rates,
        "adapt_images_per_second": rates,
        "evaluate_images_per_second": {"amp": 2 * T4.evaluate, "fp32": T4.timed},
    }
    path = tmp_path / "gpu_measurements.json"
    path.write_text(json.dumps(record))
    faster = measured_throughput(path)
    assert faster.train == 2 * T4.train and faster.evaluate == 2 * T4.evaluate and "Test GPU" in faster.name
    plan, quick = chapter_plan(FULL, T4), chapter_plan(FULL, faster)
    chapter = "02_training_the_adapters.ipynb"
    assert (
        quick.set_index("notebook").loc[chapter, "warm_minutes"]
        < plan.set_index("notebook").loc[chapter, "warm_minutes"]
    )
    assert main(["plan", "--measured", str(path)]) == 0 and "Test GPU" in capsys.readouterr().out
    assert (faster.merge, faster.float64) == (T4.merge, T4.float64), "a file without merge timings keeps the base's"
    path.write_text(json.dumps(record | {"merge_seconds": {"ties": 0.25, "tsv": 0.5}, "float64_flops": 1e12}))
    timed = measured_throughput(path)
    assert (timed.merge, timed.float64) == (0.5, 1e12), "the slowest merge prices every merge"
    for bad in (0.0, -5.0, float("nan")):  # json writes nan as NaN, which json reads back
        path.write_text(json.dumps(record | {"train_images_per_second": {"amp": bad, "fp32": 1.0}}))
        with pytest.raises(ValueError, match="train figure is .*not a positive number"):
            measured_throughput(path)
    assert main(["plan", "--measured", str(path)]) == 2 and "not a positive number" in capsys.readouterr().err
    for text in ("{}", "garbage"):
        path.write_text(text)
        with pytest.raises(ValueError, match=f"{path.name} is not a gpu_check.py measurement file"):
            measured_throughput(path)


def test_gpu_check_stops_at_once_without_a_gpu():
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():  # pragma: no cover - the GPU machine runs the real thing
        return
    script = ROOT / "scripts" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().startswith("gpu-check: no CUDA GPU here")


def test_the_replay_counts_each_adamerging_schedule_at_its_own_steps():
    from lora_merge_utils.course.plan import Spec
    from lora_merge_utils.methods import ADAMERGING_PAPER, ADAMERGING_SHORT

    sizes = Sizes({"a": 100, "b": 20}, {"a": 30, "b": 30}, {"a": 50, "b": 50}, {"a": 10, "b": 10})
    profile = TINY.replace(tasks=("a", "b"), seeds=1)
    adapted = {}
    for kind in ("adamerging", "adamerging_paper"):
        session = Session(profile, sizes)
        session.merges([("a", "b")], [Spec("m", kind)])
        adapted[kind] = session.work["adapted"]
    short, paper = ADAMERGING_SHORT, ADAMERGING_PAPER
    assert adapted["adamerging"] == short["steps"] * 2 * short["batch_size"]
    # each step takes a batch of every task, at most the task's unlabeled training images (b has 20)
    assert adapted["adamerging_paper"] == paper["steps"] * (paper["batch_size"] + 20)


def test_the_leader_curves_cost_what_their_merges_cost_and_nothing_when_off():
    on = chapter_plan(TINY, T4).set_index("notebook")["merges"]
    # the same profile with both switched off (not an override, which would name another profile without a table)
    off = TINY.replace(budget=dataclasses.replace(TINY.budget, curve_sizes=(), rank_sweep_leaders=False))
    off = chapter_plan(off, T4).set_index("notebook")["merges"]
    # chapter 5: two families' 9 scales on the validation covers of K = 3..6 (2 + 3 + 6 + 1 merges), then on test
    # both re-scaled families' 20 triples (the plan cannot know a scale chosen again equals the pairs', whose triples
    # the survey scored: it counts them) and all four families' K = 4..6
    assert on["05_merge_methods.ipynb"] - off["05_merge_methods.ipynb"] == 2 * 9 * 12 + 2 * 20 + 4 * (15 + 6 + 1)
    # chapter 6: three methods on 15 pairs at the two other ranks, for each of the sweep's seeds (rank 8: cached)
    seeds = TINY.budget.rank_sweep_seeds
    assert on["06_task_similarity.ipynb"] - off["06_task_similarity.ipynb"] == 3 * 15 * 2 * seeds
    unchanged = [name for name in on.index if name not in ("05_merge_methods.ipynb", "06_task_similarity.ipynb")]
    assert (on[unchanged] == off[unchanged]).all()


def test_each_pair_of_the_paper_schedule_costs_the_plan_one_merge_up_to_every_pair():
    def merges(pairs: int) -> int:
        profile = TINY.replace(budget=dataclasses.replace(TINY.budget, paper_schedule_pairs=pairs))
        return int(chapter_plan(profile, T4).set_index("notebook").loc["05_merge_methods.ipynb", "merges"])

    # the short schedule's merges of those pairs are the survey's (cached); the paper's are new
    assert merges(3) - merges(2) == 1 and merges(15) - merges(2) == 13 and merges(1000) == merges(15)
