"""The time plan: its T4 budget for the full profile, and the rules its replay follows. (That the replay matches what
the chapters really do is checked by the full-profile smoke test.)"""

from lora_merge_utils import FULL, TINY
from lora_merge_utils.cli import main
from lora_merge_utils.plan import T4, Session, Sizes, chapter_plan, sizes_of


def test_the_full_profile_fits_a_t4_session_and_the_book_two_hours():
    plan = chapter_plan(FULL, T4)
    assert len(plan) == 8
    assert plan["warm_minutes"].max() <= 25, plan[["chapter", "warm_minutes"]]
    assert plan["warm_minutes"].sum() < 120, "the whole book, first downloads included"
    assert plan["download_mb"].sum() < 1700, "only the train and test splits are downloaded"
    assert (plan["alone_minutes"] >= plan["warm_minutes"] - 1e-9).all(), "a fresh runtime never does less"


def test_full_profile_sizes_are_class_balanced_samples():
    sizes = sizes_of(FULL)
    assert sizes.train["mnist"] == 2000 and sizes.test["mnist"] == 1000 and sizes.val["mnist"] == 500
    assert sizes.train["resisc45"] == 44 * 45 and sizes.test["dtd"] == 21 * 47
    assert sizes.of("mnist", "test", 250) == 250 and sizes.of("dtd", "test", 250) == 5 * 47
    assert sizes.of("mnist", "test", 5000) == 1000 and sizes.of("mnist", "test") == 1000


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


def test_plan_command_prints_every_chapter(capsys):
    assert main(["plan", "--profile", "full"]) == 0
    out = capsys.readouterr().out
    assert "Colab T4" in out and "Merge methods side by side" in out and "whole book in order" in out


def test_the_readme_states_the_plan():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    plan = chapter_plan(FULL, T4)
    for index, row in plan.iterrows():
        warm, alone = round(row["warm_minutes"]), round(row["alone_minutes"])
        line = rf"^\| {index} {re.escape(row['chapter'])}.*\| {warm} \| {alone} \|$"
        assert re.search(line, text, flags=re.M), f"README: chapter {index} should say {warm} / {alone} T4 minutes"
    assert f"**{round(plan['warm_minutes'].sum())}**" in text
