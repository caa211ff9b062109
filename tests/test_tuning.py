import json
import shutil

import pandas as pd
import pytest

from lora_merge_utils import TINY, Study, tuning
from lora_merge_utils.cli import main
from lora_merge_utils.merging import MergeSpec
from lora_merge_utils.tuning import grid, select_on_validation

from .helpers import MINI_OVERRIDES, ROOT


def test_grid_labels_every_combination():
    specs = grid("ties", density=[0.3, 0.5], scale=[1.0])
    assert [s.label for s in specs] == ["ties density=0.3 scale=1", "ties density=0.5 scale=1"]
    assert specs[1].params == {"density": 0.5, "scale": 1.0}


@pytest.fixture(scope="module")
def study(tmp_path_factory, mini_profile, shared_study):
    """A study on a copy of the session's shared study (its adapters trained already; scores are cached here)."""
    root = tmp_path_factory.mktemp("tuning") / "study"
    shutil.copytree(shared_study, root, ignore=shutil.ignore_patterns(".training.lock"))
    return Study.open(mini_profile, root, progress=False)


def test_selection_refuses_the_test_split(study):
    with pytest.raises(ValueError, match="selected on the 'val' split only"):
        select_on_validation(study, grid("task_arithmetic", scale=[0.5, 1.0]), [("digits", "shapes")], split="test")


def test_selection_uses_validation_data_only(study, monkeypatch):
    candidates = grid("task_arithmetic", scale=[0.25, 0.5, 1.0])
    combos = [("digits", "shapes"), ("shapes", "gratings")]
    best, scores = select_on_validation(study, candidates, combos)
    assert list(scores["method"]) == [c.label for c in candidates]
    assert best.label == scores.loc[scores["val_mean_normalized"].idxmax(), "method"]
    # Shuffle every test split's labels: a selection that never reads the test split cannot change.
    for task in study.profile.tasks:
        labels = study.task(task).test.tensors[1]
        monkeypatch.setattr(labels, "data", labels.flip(0).clone())
    again, scores_again = select_on_validation(study, candidates, combos)
    assert again == best
    pd.testing.assert_frame_equal(scores, scores_again)


def test_merge_specs_carry_parameters_into_the_table(study):
    singles = study.singles_table()
    rows = study.merges_table(
        singles, methods=[MergeSpec("ta x0.8", "task_arithmetic", {"scale": 0.8})], combos=[("digits", "gratings")]
    )
    assert set(rows["method"]) == {"ta x0.8"} and set(rows["weights"]) == {"0.8 each"}
    assert rows["params"].iloc[0] == '{"scale": 0.8}'


def test_every_family_is_tuned_on_one_shared_grid():
    grids = tuning.tuning_grids("shared")
    assert set(grids) == set(tuning.DATA_FREE) | set(tuning.DATA_LIGHT)
    for family, candidates in grids.items():
        if family in tuning.DATA_LIGHT:
            assert len(candidates) == 1, family
            continue
        assert sorted({c.params["scale"] for c in candidates}) == list(tuning.LAMBDAS), family
        densities = sorted({c.params["density"] for c in candidates if "density" in c.params})
        assert densities in ([], list(tuning.DENSITIES)), family
    for family in ("TIES on factors (PEFT)", "DARE-TIES on factors (PEFT)", "magnitude pruning on factors (PEFT)"):
        assert len(grids[family]) == len(tuning.LAMBDAS) * len(tuning.DENSITIES), "PEFT's recipes get the same grid"
    # 1/K of pairs and triples lies inside the scale grid, which reaches the official sweeps' 3; densities 0.1 to 1.
    assert tuning.LAMBDAS[0] < 1 / 3 < 1 / 2 < tuning.LAMBDAS[-1] and tuning.LAMBDAS[-1] >= 3
    assert tuning.DENSITIES[0] <= 0.1 and tuning.DENSITIES[-1] == 1.0


def test_an_unknown_grid_is_refused():
    with pytest.raises(ValueError, match="Unknown tuning grid 'wide'"):
        tuning.tuning_grids("wide")


def test_tuning_merges_are_every_pair_or_an_even_spread():
    assert tuning.tuning_merges(TINY.tasks) == [(a, b) for i, a in enumerate(TINY.tasks) for b in TINY.tasks[i + 1 :]]
    spread = tuning.tuning_merges(TINY.tasks, 4)
    assert len(spread) == len(set(spread)) == 4 and spread[0] == TINY.tasks[:2]
    assert len({task for pair in spread for task in pair}) == len(TINY.tasks), "the spread reaches every task"


@pytest.mark.parametrize("size", [2, 3, 4, 5, 6])
def test_a_cover_uses_every_task_equally_often_with_the_fewest_merges(size):
    merges = tuning.cover_merges("abcdef", size)
    uses = pd.Series([task for merge in merges for task in merge]).value_counts()
    assert set(uses.index) == set("abcdef") and uses.nunique() == 1
    assert len(merges) * size == len(uses) * uses.iloc[0] and len(set(merges)) == len(merges)
    assert len(merges) == {2: 3, 3: 2, 4: 3, 5: 6, 6: 1}[size]


def test_a_cover_refuses_a_size_it_cannot_make():
    with pytest.raises(ValueError, match=r"size must be from 1 to 6 \(the tasks given\), got 7"):
        tuning.cover_merges("abcdef", 7)


def test_the_paper_schedule_runs_on_the_exercises_pairs_first_and_on_pairs_only():
    assert tuning.schedule_pairs(TINY.tasks, 2) == [m for m in tuning.exercise_merges(TINY.tasks) if len(m) == 2]
    # more than the exercises' two: the other pairs follow (before, a third "pair" was an exercise's triple)
    five = tuning.schedule_pairs(TINY.tasks, 5)
    assert len(five) == len(set(five)) == 5 and all(len(pair) == 2 for pair in five)
    every = tuning.schedule_pairs(TINY.tasks, 1000)
    assert sorted(every) == sorted(tuning.tuning_merges(TINY.tasks)) and every[:5] == five
    assert tuning.schedule_pairs(TINY.tasks, 0) == []
    with pytest.raises(ValueError, match="count must be 0 or more, got -1"):
        tuning.schedule_pairs(TINY.tasks, -1)
    with pytest.raises(ValueError, match="merge among six tasks; this study has 3"):
        tuning.exercise_merges("abc")


def test_scale_candidates_keep_every_other_knob_as_chosen():
    family = grid("magnitude_prune", density=[0.3, 0.7], scale=[0.1, 0.5, 1.0])
    chosen = family[4]  # density 0.7, scale 0.5
    assert [s.params for s in tuning.scale_candidates(family, chosen)] == [
        {"density": 0.7, "scale": 0.1},
        {"density": 0.7, "scale": 0.5},
        {"density": 0.7, "scale": 1.0},
    ]
    with pytest.raises(ValueError, match="no scale to choose"):
        tuning.scale_candidates(family, MergeSpec("adamerging_short", "adamerging_short", {}))


def test_the_leading_families_are_the_shipped_tables_and_need_both_kinds():
    table, _ = tuning.load_tuning_table(tuning.shipped_table("tiny"))
    best_free, best_light = tuning.leading_families(table)
    score = table.groupby("family")["val_mean_normalized"].max()
    assert best_light in tuning.DATA_LIGHT and best_free not in tuning.DATA_LIGHT
    assert score[best_free] == score.drop(list(tuning.DATA_LIGHT)).max()
    with pytest.raises(ValueError, match="data-light"):
        tuning.leading_families(table[~table["family"].isin(list(tuning.DATA_LIGHT))])


def test_edge_warnings_say_when_a_grid_cannot_be_extended():
    candidates = grid("ties", density=[0.5, 1.0], scale=[0.5, 1.0])
    at_one = next(c for c in candidates if c.params == {"density": 1.0, "scale": 0.5})
    messages = tuning.edge_warnings(at_one, candidates)
    assert any("density=1 is the largest value allowed" in m and "cannot be extended" in m for m in messages)
    assert any("scale=0.5 is the smallest value tried" in m and "beyond the grid" in m for m in messages)


def test_the_shipped_tiny_table_covers_the_shared_grid_on_every_pair():
    path = tuning.shipped_table("tiny")
    assert path is not None, "make tuning-table writes it"
    table, header = tuning.load_tuning_table(path)
    grids = tuning.tuning_grids("shared")
    assert header["profile"] == "tiny" and header["grid"] == "shared" and header["seed"] == 0
    assert header["lambdas"] == list(tuning.LAMBDAS) and header["densities"] == list(tuning.DENSITIES)
    assert header["merges"] == [list(pair) for pair in tuning.tuning_merges(TINY.tasks)]
    assert sorted(table["method"]) == sorted(c.label for candidates in grids.values() for c in candidates)
    assert table["merges"].eq(15).all() and table["val_mean_normalized"].between(0, 2).all()
    for family, rows in table.groupby("family"):
        assert rows.loc[rows["val_mean_normalized"].idxmax(), "chosen"], f"{family}: the choice is the best score"
    assert tuning.shipped_table("tiny-0123abcd") is None, "an overridden profile computes its own table"
    command = tuning.tune_command("tiny", "shared", None, "lora_merge_utils/assets/tuning-tiny.csv")
    assert header["command"] == command, "the header says how to write the table again"
    make_recipe = (ROOT / "Makefile").read_text().split("\ntuning-table:", 1)[1].split("\n\n", 1)[0]
    assert all(
        part in make_recipe.replace("$(TUNING_TABLE)", str(path.relative_to(ROOT)))
        for part in ("tune --profile tiny --grid shared", "--table lora_merge_utils/assets/tuning-tiny.csv")
    ), make_recipe


def test_a_table_with_two_choices_in_a_family_is_refused(tmp_path):
    table = pd.DataFrame(
        {"family": ["Iso-C"] * 2, "method": ["a", "b"], "val_mean_normalized": [0.9, 0.8], "merges": 3, "chosen": True}
    )
    tuning.save_tuning_table(table, {"command": "make tuning-table"}, tmp_path / "t.csv")
    with pytest.raises(ValueError, match="exactly one choice.*make tuning-table"):
        tuning.load_tuning_table(tmp_path / "t.csv")
    with pytest.raises(ValueError, match="not a readable tuning table"):
        tuning.load_tuning_table(tmp_path / "missing.csv")


@pytest.fixture
def small_grids(monkeypatch):
    """Two data-free families on a grid of two scales and two densities, no data-light family: a table in seconds."""
    monkeypatch.setattr(tuning, "DATA_FREE", {"TIES": "ties", "Iso-C": "iso_c"})
    monkeypatch.setattr(tuning, "DATA_LIGHT", {})
    monkeypatch.setitem(tuning.GRIDS, "shared", ((0.5, 1.0), (0.5, 1.0)))


def test_a_computed_table_marks_each_familys_best_and_round_trips(study, small_grids, tmp_path):
    table = tuning.compute_tuning_table(study)
    assert list(table.columns) == tuning.TABLE_COLUMNS and len(table) == 4 + 2
    assert table["merges"].eq(3).all(), "every pair of the three tasks"
    for _, rows in table.groupby("family"):
        assert rows["chosen"].sum() == 1 and rows.loc[rows["val_mean_normalized"].idxmax(), "chosen"]
    header = tuning.table_header(study, "shared", None)
    assert header["adapters"] == study.adapters_fingerprint(0) and len(header["merges"]) == 3
    tuning.save_tuning_table(table, header, tmp_path / "t.csv")
    again, header_again = tuning.load_tuning_table(tmp_path / "t.csv")
    pd.testing.assert_frame_equal(again, table, atol=1e-6)
    assert header_again == header


def test_a_profile_without_a_shipped_table_computes_its_own(study, small_grids):
    table, chosen, header = tuning.tuning_table(study)
    assert header["source"] == "computed here" and set(chosen) == {"TIES", "Iso-C"}
    for family, spec in chosen.items():
        assert table.loc[(table["family"] == family) & table["chosen"], "method"].item() == spec.label


def test_the_tune_command_writes_the_table_and_says_how_to_write_it_again(study, small_grids, monkeypatch, capsys):
    monkeypatch.setenv("LORA_BOOK_OVERRIDES", json.dumps(MINI_OVERRIDES))
    out = study.root
    assert main(["tune", "--profile", "tiny", "--out", str(out), "--quiet", "--table", str(out / "t.csv")]) == 0
    table, header = tuning.load_tuning_table(out / "t.csv")
    assert len(table) == 6 and header["command"].endswith(f"--grid shared --table {out / 't.csv'}")
    printed = capsys.readouterr().out
    assert "Each family's choice" in printed and "wrote" in printed


@pytest.mark.parametrize(
    "arguments, message", [(["--table", "t.txt"], "give a .csv"), (["--table", "."], "give a .csv")]
)
def test_the_tune_command_refuses_bad_arguments_before_any_work(arguments, message, tmp_path, capsys):
    assert main(["tune", "--profile", "tiny", "--out", str(tmp_path), *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing trained or written"
