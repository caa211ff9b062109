import pandas as pd
import pytest
import torch

from lora_merge_utils import Study, run_study
from lora_merge_utils.evaluation import SINGLE_ADAPTER, merge_combinations, pairwise_matrix, summarize_merges

from .helpers import MINI_METHODS

SINGLES = {"task", "seed", "head_accuracy", "adapter_accuracy", "num_images"}
MERGES = {
    "members",
    "size",
    "method",
    "weights",
    "task",
    "seed",
    "accuracy",
    "adapter_accuracy",
    "head_accuracy",
    "normalized_accuracy",
    "chance_normalized",
}


def test_merge_combinations_of_six_tasks():
    combos = merge_combinations(list("abcdef"))
    assert sum(len(c) == 2 for c in combos) == 15 and sum(len(c) == 3 for c in combos) == 20


@pytest.fixture(scope="module")
def study_run(shared_study, mini_profile):
    """The session's shared study (:func:`tests.conftest.shared_study`) and its tables: the tests of this module only
    read it (a test that changes artifacts works on ``own_root``), so they pass in any order."""
    study = Study.open(mini_profile, shared_study, progress=False)
    singles = study.singles_table()
    return shared_study, {"singles": singles, "merges": study.merges_table(singles, MINI_METHODS, cache=True)}


@pytest.fixture
def own_root(copy_of_shared_study):
    """A private copy of the shared run's folder, for a test that deletes or adds artifacts."""
    return copy_of_shared_study


def test_run_study_writes_the_tables(study_run, mini_profile):
    root, tables = study_run
    singles = pd.read_csv(root / "results" / "singles.csv")
    merges = pd.read_csv(root / "results" / "merges.csv")
    assert SINGLES <= set(singles.columns) and list(singles["task"]) == list(mini_profile.tasks) * 2
    assert MERGES <= set(merges.columns) and "correct" not in merges.columns, "packed bits stay out of the CSV"
    # 3 pairs x 2 members + 1 triple x 3 members, for each method and each of 2 training seeds
    assert len(merges) == len(MINI_METHODS) * 2 * (3 * 2 + 3) and set(merges["seed"]) == {0, 1}
    per_seed = merges.groupby("seed")["accuracy"].apply(tuple)
    assert per_seed[0] != per_seed[1], "each seed merges its own adapters"
    assert set(merges["members"]) == {"digits+shapes", "digits+gratings", "shapes+gratings", "digits+shapes+gratings"}
    ratio = merges["accuracy"] / merges["adapter_accuracy"]
    assert (ratio - merges["normalized_accuracy"]).abs().max() < 1e-5
    for method in MINI_METHODS:
        assert (root / "results" / f"pairwise_heatmap_{method}.png").stat().st_size > 10_000
    for task in mini_profile.tasks:
        for seed in (0, 1):
            assert (root / "adapters" / task / f"seed-{seed}" / "adapter_model.safetensors").is_file()
        assert (root / "heads" / task / "head.safetensors").is_file()


def test_second_run_reuses_artifacts_and_gives_identical_tables(own_root, mini_profile):
    root = own_root
    adapter = root / "adapters" / "digits" / "seed-1" / "adapter_model.safetensors"
    stamp = adapter.stat().st_mtime_ns
    before = {name: (root / "results" / name).read_text() for name in ("singles.csv", "merges.csv")}
    run_study(mini_profile, root, methods=MINI_METHODS, progress=False)
    assert adapter.stat().st_mtime_ns == stamp, "a warm run must not retrain"
    for name, text in before.items():
        assert (root / "results" / name).read_text() == text, f"{name} differs between runs"


def test_a_killed_adapter_is_retrained(own_root, mini_profile):
    root = own_root
    (root / "adapters" / "shapes" / "seed-0" / "metrics.json").unlink()  # as if killed before the last file
    study = Study.open(mini_profile, root, progress=False)
    assert not study.store.has_adapter("shapes") and study.store.has_adapter("shapes", seed=1)
    study.ensure_adapter("shapes")
    assert study.store.has_adapter("shapes")


def test_summary_and_pairwise_matrix(study_run, mini_profile):
    _, tables = study_run
    summary = summarize_merges(tables["merges"])
    assert set(summary["size"]) == {2, 3}
    assert summary["worst_normalized"].le(summary["mean_normalized"]).all()
    matrix = pairwise_matrix(tables["merges"], "task_arithmetic", mini_profile.tasks)  # mean over seeds
    assert matrix.isna().values.diagonal().all() and matrix.notna().sum().sum() == 6


def test_merge_scores_are_cached_per_merge_and_shared_between_requests(study_run, own_root, mini_profile, monkeypatch):
    import shutil

    from lora_merge_utils.instrumentation.workload import work_done

    root, tables = own_root, study_run[1]
    shutil.rmtree(root / "results" / "scores")  # the shared run filled the cache: start this test without it
    study = Study.open(mini_profile, root, progress=False)
    singles = tables["singles"]
    start = work_done()["merges"]
    pairs = study.merges_table(singles, methods=("task_arithmetic",), sizes=(2,), cache=True)
    assert work_done()["merges"] - start == 3 * 2, "3 pairs for each of 2 training seeds"
    both = study.merges_table(singles, methods=("task_arithmetic",), sizes=(2, 3), cache=True)
    assert work_done()["merges"] - start == 4 * 2, "the pairs come from the cache: only the triples are merged"
    pd.testing.assert_frame_equal(both[both["size"] == 2].reset_index(drop=True), pairs)
    assert len(list((root / "results" / "scores").glob("*.json"))) == 8
    val_singles = study.singles_table(split="val")
    study.merges_table(val_singles, methods=("task_arithmetic",), sizes=(2,), cache=True, split="val")
    assert work_done()["merges"] - start == 14, "another split is another request"
    with pytest.raises(ValueError, match="on the same split and images"):
        study.merges_table(singles, methods=("linear",), sizes=(2,), split="val")
    monkeypatch.setattr("lora_merge_utils.study.code_version", lambda: "edited merging code")
    again = study.merges_table(singles, methods=("task_arithmetic",), sizes=(2,), cache=True)
    assert work_done()["merges"] - start == 20, "edited code is never served stale scores"
    pd.testing.assert_frame_equal(again, pairs)


def test_a_split_is_decoded_once_per_session_and_its_features_computed_once(own_root, mini_profile):
    from lora_merge_utils.instrumentation.workload import work_done

    study = Study.open(mini_profile, own_root, progress=False)
    first = study.dataset("digits", "test")
    assert study.dataset("digits", "test") is first
    sample = study.dataset("digits", "test", images=20)
    assert len(sample) == 20 and study.dataset("digits", "test", images=20) is sample
    saved = study.store.features_path("digits", "test", len(first))
    assert saved.is_file(), "the run saved the features it computed"
    saved.unlink()
    start = work_done()["evaluated"]
    features, labels = study.features("digits", "test")
    study.features("digits", "test")
    assert work_done()["evaluated"] - start == len(first), "features are computed once"
    later = Study.open(mini_profile, own_root, progress=False)  # a later chapter
    again = later.features("digits", "test")
    assert work_done()["evaluated"] - start == len(first), "and read back by the sessions after"
    assert torch.equal(again[0], features) and torch.equal(again[1], labels)
    saved.write_bytes(b"not safetensors")
    assert torch.equal(Study.open(mini_profile, own_root, progress=False).features("digits", "test")[0], features)
    assert work_done()["evaluated"] - start == 2 * len(first), "a damaged file is computed again"


def test_an_adapter_s_own_results_are_scored_once_and_read_back(own_root, mini_profile):
    from lora_merge_utils.instrumentation.workload import work_done

    study = Study.open(mini_profile, own_root, progress=False)
    start = work_done()["evaluated"]
    table = study.singles_table()
    assert work_done()["evaluated"] == start, "training saved each adapter's test results; features are saved too"
    val = study.singles_table(split="val", seeds=0)
    first = work_done()["evaluated"] - start
    assert first > 0
    pd.testing.assert_frame_equal(study.singles_table(split="val", seeds=0), val)
    assert work_done()["evaluated"] - start == first, "scored once, then read back"
    assert set(table["task"]) == set(mini_profile.tasks)
    assert study.single_store("digits", 0).get(("digits",), SINGLE_ADAPTER) is not None
    from lora_merge_utils.artifacts import save_head

    save_head(torch.nn.Linear(96, 10), study.store.adapter_dir("digits", 0) / "head.safetensors")
    assert study.single_store("digits", 0).get(("digits",), SINGLE_ADAPTER) is None, "other weights, no old results"


@pytest.mark.subprocess
def test_adapters_trained_side_by_side_are_the_ones_trained_one_after_another(
    tmp_path, shared_study, mini_profile, monkeypatch
):
    """Two worker processes of one thread each give the same bytes as one process on one thread (the shared study,
    built that way), and hand their work tallies back."""
    from lora_merge_utils.instrumentation.workload import work_done

    monkeypatch.setattr("lora_merge_utils.study.job_slots", lambda device: 2)
    study = Study.open(mini_profile, tmp_path / "side-by-side", progress=False)
    for task in mini_profile.tasks:
        study.ensure_head(task)
    start = work_done()["trained"]
    dirs = study.ensure_adapters(list(mini_profile.tasks))
    expected = sum(len(study.task(t).train) for t in mini_profile.tasks) * mini_profile.train.adapter_epochs * 2
    assert work_done()["trained"] - start == expected
    for (task, seed), directory in dirs.items():
        reference = shared_study / "adapters" / task / f"seed-{seed}"
        for name in ("adapter_model.safetensors", "head.safetensors"):
            assert (directory / name).read_bytes() == (reference / name).read_bytes(), (task, seed, name)


def test_a_chapter_check_stops_the_tiny_world_warns_on_real_data_and_is_skipped_by_the_smoke(capsys, tmp_path):
    import torch

    from lora_merge_utils import FULL, TINY
    from lora_merge_utils.course.checks import check, expects_real_results
    from lora_merge_utils.course.expectations import EXPECTED

    def study(profile):
        return Study(profile, tmp_path, backbone=None, device=torch.device("cpu"))

    claim, expected = "every adapter reaches 80% test accuracy", EXPECTED["adapter_accuracy"]
    assert check(study(TINY), claim, True, expected) and check(study(FULL), claim, True, expected)
    assert check(FULL, claim, True, expected), "a profile will do where there is no study"
    assert capsys.readouterr().out == "", "a check that holds says nothing"
    with pytest.raises(AssertionError, match="every adapter reaches 80%.*tiny profile.*\n.*dtd 0.61"):
        check(study(TINY), claim, False, expected, details="dtd 0.61")
    assert check(study(FULL), claim, False, expected, details="dtd 0.61") is False
    out = capsys.readouterr().out
    assert out.startswith("⚠ Not as expected: every adapter reaches 80%") and expected in out and "dtd 0.61" in out
    smoke = study(FULL.replace(smoke=True))
    assert check(smoke, claim, False, expected)
    assert "smoke run: skipped the check that every adapter reaches 80%" in capsys.readouterr().out
    assert expects_real_results(study(FULL), claim) and not expects_real_results(smoke, claim)
    assert "smoke run: skipped the check that every adapter" in capsys.readouterr().out
    with pytest.raises(TypeError, match="a study or a profile"):
        check("tiny", claim, True, expected)


def test_a_variant_shares_what_does_not_depend_on_the_adapters(own_root, mini_profile):
    """A rank-sweep variant: its own folder beside the study's, the study's heads, decoded images and features; its
    adapters trained at the new rank; and nothing it may not share can be changed."""
    from lora_merge_utils.instrumentation.workload import work_done

    study = Study.open(mini_profile, own_root, progress=False)
    task = mini_profile.tasks[0]
    study.features(task, "train")
    variant = study.variant({"lora.rank": 2, "lora.alpha": 4, "seeds": 1})
    assert variant.profile.lora.rank == 2 and variant.seeds == [0]
    assert variant.root.parent == own_root.parent and variant.root != own_root
    assert variant._features is study._features and variant.backbone is study.backbone
    assert all(variant.store.has_head(t) for t in mini_profile.tasks), "the head-only baselines are copied"
    start = work_done()
    model, _ = variant.load_all_adapters([task], seed=0)
    assert work_done()["trained"] > start["trained"], "the variant trains its own adapter"
    assert {m.r[task] for m in model.modules() if hasattr(m, "lora_A") and task in m.r} == {2}
    with pytest.raises(ValueError, match="changes only the adapters"):
        study.variant({"data.train_size": 10})


def test_one_adapter_trained_on_every_task_is_saved_checked_and_scored_like_a_merge(own_root, mini_profile):
    """The joint upper bound: one adapter, a head per task, the same steps as the tasks' own adapters together;
    saved with checksums and reloaded without training; its rows read like a merge of every task; one per training
    seed when the adapters are trained with ``joint=True``."""
    from lora_merge_utils.instrumentation.workload import work_done
    from lora_merge_utils.study import JOINT

    study = Study.open(mini_profile, own_root, progress=False)
    start = work_done()["trained"]
    model, heads = study.joint_adapter(seed=0)
    trained = work_done()["trained"] - start
    from lora_merge_utils.course.plan import joint_images_per_epoch

    sizes = {t: len(study.dataset(t, "train")) for t in mini_profile.tasks}
    per_epoch = joint_images_per_epoch(sizes, mini_profile.train.batch_size)
    assert all(per_epoch[t] >= sizes[t] for t in sizes), "every image of every task, each epoch"
    assert trained == mini_profile.train.adapter_epochs * sum(per_epoch.values()), "as the plan counts it"
    assert list(model.peft_config) == ["default"] and set(heads) == set(mini_profile.tasks)
    again, heads_again = study.joint_adapter(seed=0)
    assert work_done()["trained"] - start == trained, "reloaded, not trained again"
    assert all(torch.equal(heads[t].weight, heads_again[t].weight) for t in heads)
    singles = study.singles_table(seeds=0)
    rows = study.joint_table(singles, seed=0)
    assert set(rows["method"]) == {JOINT} and list(rows["task"]) == list(mini_profile.tasks)
    assert rows["size"].eq(len(mini_profile.tasks)).all() and rows["accuracy"].between(0, 1).all()
    start = work_done()["trained"]  # the shared study's own adapters are saved: only joint ones are trained below
    study.ensure_adapters(list(mini_profile.tasks), seeds=[0], joint=True)
    assert work_done()["trained"] == start, "seed 0's joint adapter is saved: not trained again"
    study.ensure_adapters(list(mini_profile.tasks), joint=True)
    assert work_done()["trained"] - start == (mini_profile.seeds - 1) * trained, "every other seed's joint adapter"
    assert (own_root / "joint" / "seed-1" / "metrics.json").is_file()
    heads_file = own_root / "joint" / "seed-0" / "heads.safetensors"
    heads_file.write_bytes(heads_file.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="is not the file that was saved"):
        study.joint_adapter(seed=0)


def test_an_adapter_at_chance_gives_an_undefined_share_that_no_summary_averages_away():
    """(merged - chance) / (adapter - chance) has nothing to divide by when the adapter is at chance: the row says
    NaN (not a ZeroDivisionError, not 1e9), and its group's mean says NaN rather than the mean of the other rows."""
    import numpy as np
    import pandas as pd

    from lora_merge_utils.evaluation import merge_row, reference_rows
    from lora_merge_utils.stats import pack, row_values

    right = np.array([True, False, False, False])
    rows = []
    for task, adapter_right in (("a", right), ("b", ~right[::-1])):  # four classes: "a"'s adapter is at chance
        single = pd.Series(
            {
                "adapter_accuracy": float(adapter_right.mean()),
                "head_accuracy": 0.5,
                "num_classes": 4,
                "adapter_correct": pack(adapter_right),
                "head_correct": pack(right),
            }
        )
        rows.append(merge_row(("a", "b"), "m", "{}", "", task, 0, single, right))
    merges = pd.DataFrame(rows)
    assert np.isnan(merges["chance_normalized"].iloc[0]) and merges["chance_normalized"].iloc[1] == 0.0
    summary = summarize_merges(merges)
    assert np.isnan(summary["mean_chance_normalized"].iloc[0])
    assert not np.isnan(summary["mean_normalized"].iloc[0]), "the plain share is defined"
    assert np.isnan(reference_rows(merges, "floor", "head_correct")["chance_normalized"].iloc[0])
    values = row_values(merges.assign(correct=pack(right)), "chance_normalized")
    assert np.isnan(values[0]) and np.isfinite(values[1])


def test_the_trainer_s_code_version_ignores_comments_and_docstrings():
    """Editing prose in training.py must not refuse every saved adapter; editing code must."""
    from lora_merge_utils.study import _code_only

    base = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    assert _code_only(base) == _code_only("def f(x):\n    # why\n    return x + 1  # note\n")
    assert _code_only(base) != _code_only("def f(x):\n    return x + 2\n")
