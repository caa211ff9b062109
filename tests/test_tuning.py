import shutil

import pandas as pd
import pytest

from lora_merge_utils import Study
from lora_merge_utils.merging import MergeSpec
from lora_merge_utils.tuning import grid, select_on_validation


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
