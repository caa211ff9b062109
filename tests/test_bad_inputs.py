"""Bad input, one row each: every case fails with a one-line message that names the problem (and the fix), before any
work starts. Library calls raise ``ValueError``; the command line exits with 2, prints ``error: ...`` and no traceback,
and leaves its output folder empty."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from peft import get_peft_model
from torch import nn

from lora_merge_utils import FULL, TINY, MultiTaskModel, load_task, merge_adapters
from lora_merge_utils.artifacts import read_json
from lora_merge_utils.cli import main
from lora_merge_utils.merging import MERGED_ADAPTER
from lora_merge_utils.profiles import LoraSettings, TrainSettings, apply_overrides, get_profile
from lora_merge_utils.training import lora_config

NAN, INF = math.nan, math.inf


@pytest.fixture(scope="module")
def two_adapters(backbone):
    model = get_peft_model(copy.deepcopy(backbone), lora_config(TINY.lora), adapter_name="first")
    model.add_adapter("second", lora_config(TINY.lora))
    return model


MERGE_CASES = [
    ("adapters as a string", dict(adapters="first"), "list of adapter names"),
    ("no adapter", dict(adapters=[]), "at least one adapter"),
    ("an adapter twice", dict(adapters=["first", "first"]), "repeat"),
    ("an unknown adapter", dict(adapters=["first", "third"]), "not loaded"),
    ("NaN weights", dict(weights=[NAN, NAN]), "finite"),
    ("an infinite weight", dict(weights=[INF, 1.0]), "finite"),
    ("a NaN scale", dict(scale=NAN), "finite"),
    ("weights that are not numbers", dict(weights=["a", "b"]), "must be numbers"),
    ("one weight for two adapters", dict(weights=[1.0]), "one weight per adapter"),
    ("weights and scale", dict(weights=[0.5, 0.5], scale=0.5), "either weights"),
    ("TIES without density", dict(method="ties"), "needs density"),
    ("density 0", dict(method="ties", density=0.0), "density must be in (0, 1]"),
    ("density above 1", dict(method="dare_ties", density=1.5), "density must be in (0, 1]"),
    ("density for averaging", dict(density=0.5), "takes no density"),
    ("svd rank 0", dict(method="svd", svd_rank=0), "svd_rank must be a whole number >= 1"),
    ("a fractional svd rank", dict(method="svd", svd_rank=2.5), "svd_rank must be a whole number"),
    ("svd rank above the summed rank", dict(method="svd", svd_rank=17), "from 1 to 16"),
    ("svd rank for TIES", dict(method="ties", density=0.5, svd_rank=4), "takes no svd_rank"),
    (
        "an unknown sign method",
        dict(method="knots_ties", density=0.5, majority_sign_method="vote"),
        "'total' or 'frequency'",
    ),
    ("an unknown method", dict(method="average"), "Unknown merge method"),
    ("a common fraction for TIES", dict(method="ties", density=0.5, common_fraction=0.5), "takes no common_fraction"),
    ("a trim density for averaging", dict(trim_density=0.5), "only dare_ties do"),
    ("a sign method for averaging", dict(majority_sign_method="frequency"), "takes no majority_sign_method"),
    ("a common fraction of 0", dict(method="iso_cts", common_fraction=0.0), "common_fraction must be in (0, 1]"),
    ("a weight that overflows", dict(weights=[1e30, 1.0]), "within +-1000"),
    ("a scale that overflows", dict(scale=-5e3), "scale must lie within +-1000"),
    ("a negative seed", dict(method="dare_linear", density=0.5, seed=-1), "seed must be a whole number from 0"),
    ("a seed past 32 bits", dict(seed=2**40), "seed must be a whole number from 0 to 4294967295"),
    ("AdaMerging steps of 0", dict(method="adamerging_short", steps=0), "steps must be a whole number from 1"),
    ("an AdaMerging lr of 0", dict(method="adamerging_short", lr=0.0), "lr must be in (0, 10]"),
]


@pytest.mark.parametrize("kwargs, message", [c[1:] for c in MERGE_CASES], ids=[c[0] for c in MERGE_CASES])
def test_merge_adapters_refuses(two_adapters, kwargs, message):
    kwargs = {"adapters": ["first", "second"], **kwargs}
    with pytest.raises(ValueError) as error:
        merge_adapters(two_adapters, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_merge_adapters_refuses_a_plain_module(backbone):
    with pytest.raises(ValueError, match="needs a peft.PeftModel"):
        merge_adapters(backbone, ["first"])


def test_merge_adapters_refuses_a_model_that_already_holds_the_result_name(two_adapters):
    model = copy.deepcopy(two_adapters)
    model.add_adapter(MERGED_ADAPTER, lora_config(TINY.lora))
    with pytest.raises(ValueError, match="already holds an adapter named '__merged__'.*delete_adapter"):
        merge_adapters(model, ["first", "second"], method="linear")


MULTITASK_CASES = [
    ("no head", {}, None, "at least one head"),
    ("a head of another width", {"a": nn.Linear(50, 3)}, None, "expects 50 features but the backbone gives 96"),
    (
        "an MLP head of another width",
        {"a": nn.Sequential(nn.Linear(50, 8), nn.ReLU(), nn.Linear(8, 3))},
        None,
        "expects 50 features",
    ),
    ("tasks=[]", {"a": nn.Linear(96, 3)}, [], "asks for no task"),
    ("an unknown task", {"a": nn.Linear(96, 3)}, ["b"], "No head for task(s) ['b']"),
]


@pytest.mark.parametrize("heads, tasks, message", [c[1:] for c in MULTITASK_CASES], ids=[c[0] for c in MULTITASK_CASES])
def test_multitask_model_refuses(backbone, heads, tasks, message):
    with pytest.raises(ValueError) as error:
        MultiTaskModel(backbone, heads)(torch.zeros(1, 3, 32, 32), tasks=tasks)
    assert message in str(error.value)


SETTINGS_CASES = [
    ("LoRA rank 0", lambda: LoraSettings(rank=0), "lora.rank must be a whole number from 1 to 1024, got 0"),
    ("LoRA alpha NaN", lambda: LoraSettings(alpha=NAN), "lora.alpha must be a finite number in (0, 10000]"),
    ("LoRA dropout 1", lambda: LoraSettings(dropout=1.0), "lora.dropout must be in [0, 1)"),
    ("zero epochs", lambda: TrainSettings(adapter_epochs=0), "train.adapter_epochs must be a whole number from 1"),
    ("a negative batch size", lambda: TrainSettings(batch_size=-1), "train.batch_size must be a whole number from 1"),
    ("a NaN learning rate", lambda: TrainSettings(adapter_lr=NAN), "train.adapter_lr must be a finite number"),
    ("no head penalty", lambda: TrainSettings(head_l2=()), "train.head_l2 must list one or more values"),
    ("an override of a missing field", lambda: apply_overrides(TINY, {"train.epochs": 1}), "has no field 'epochs'"),
    ("an override that breaks a setting", lambda: apply_overrides(TINY, {"lora.rank": 0}), "lora.rank"),
    ("no seeds", lambda: apply_overrides(TINY, {"seeds": 0}), "seeds must be a whole number from 1 to 100, got 0"),
    (
        "a fractional depth",
        lambda: apply_overrides(TINY, {"backbone.overrides.depth": 2.5}),
        "backbone.overrides.depth must be a whole number from 1 to 1024, got 2.5",
    ),
    (
        "target modules that are no regular expression",
        lambda: apply_overrides(TINY, {"lora.target_modules": "blocks.(("}),
        "lora.target_modules must be a regular expression",
    ),
    ("an empty training sample", lambda: apply_overrides(TINY, {"data.train_per_class": 0}), "data.train_per_class"),
    ("a zero hub sample", lambda: apply_overrides(FULL, {"data.val_size": 0}), "data.val_size must be"),
    ("a survey of 1 task", lambda: apply_overrides(TINY, {"budget.survey_sizes": [1, 2]}), "budget.survey_sizes"),
    ("an empty survey", lambda: apply_overrides(TINY, {"budget.survey_sizes": []}), "one or more values"),
    ("a K curve of 1 task", lambda: apply_overrides(TINY, {"budget.curve_sizes": [1]}), "budget.curve_sizes"),
    (
        "a switch given as a number",
        lambda: apply_overrides(TINY, {"budget.rank_sweep_leaders": 1}),
        "Override 'budget.rank_sweep_leaders': expected bool, got 1",
    ),
    ("an image size of 2", lambda: apply_overrides(TINY, {"image_size": 2}), "image_size must be a whole number"),
    ("a seed past 32 bits", lambda: apply_overrides(TINY, {"train.seed": 2**40}), "train.seed must be"),
    ("an unknown profile", lambda: get_profile("huge"), "Unknown profile 'huge'"),
    ("an unknown task", lambda: load_task(TINY, "cats"), "Unknown task 'cats'"),
]


@pytest.mark.parametrize("call, message", [c[1:] for c in SETTINGS_CASES], ids=[c[0] for c in SETTINGS_CASES])
def test_settings_and_names_are_refused(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)


@pytest.mark.parametrize(
    "content, message",
    [("[1, 2]", "holds a JSON list, not an object"), ("{not json", "is not valid JSON")],
    ids=["a list", "broken JSON"],
)
def test_metrics_files_that_are_not_json_objects_are_refused(tmp_path, content, message):
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_json(path)


CLI_CASES = [
    ("NaN weights", ["merge", "digits", "shapes", "--weights", "nan", "nan"], "--weights must be finite"),
    ("an infinite weight", ["merge", "digits", "shapes", "--weights", "inf", "1"], "--weights must be finite"),
    ("one weight for two tasks", ["merge", "digits", "shapes", "--weights", "1"], "1 weight(s) for 2 task(s)"),
    ("weights and scale", ["merge", "digits", "shapes", "--weights", "1", "1", "--scale", "1"], "not both"),
    ("TIES without density", ["merge", "digits", "shapes", "--method", "ties"], "needs --density"),
    ("density 2", ["merge", "digits", "shapes", "--method", "ties", "--density", "2"], "(0, 1]"),
    (
        "svd rank for TIES",
        ["merge", "digits", "shapes", "--method", "ties", "--density", "0.5", "--svd-rank", "4"],
        "takes no --svd-rank",
    ),
    (
        "zero AdaMerging steps",
        ["merge", "digits", "shapes", "--method", "adamerging", "--steps", "0"],
        "--steps must be a whole number from 1",
    ),
    (
        "AdaMerging steps for TIES",
        ["merge", "digits", "shapes", "--method", "ties", "--density", "0.5", "--steps", "5"],
        "takes no --steps; only adamerging, adamerging_short do",
    ),
    (
        "a common fraction for TIES",
        ["merge", "digits", "shapes", "--method", "ties", "--density", "0.5", "--common-fraction", "0.5"],
        "takes no --common-fraction",
    ),
    ("a weight that overflows", ["merge", "digits", "shapes", "--weights", "1e300", "1"], "within +-1000"),
    ("a seed past 32 bits", ["merge", "digits", "shapes", "--seed", str(2**40)], "--seed must be a whole number"),
    (
        "an unknown sign method",
        ["merge", "digits", "shapes", "--method", "ties", "--density", "0.5", "--majority-sign-method", "vote"],
        "--majority-sign-method must be 'total' or 'frequency'",
    ),
    (
        "a method run cannot give its required knob",
        ["run", "--methods", "task_arithmetic", "ties"],
        "--methods ties: ties needs --density, which `run` does not take",
    ),
    ("an unknown task to train", ["train-head", "--task", "cats"], "Unknown task 'cats'"),
    ("a task twice", ["merge", "digits", "digits"], "Tasks repeat"),
    ("an adapter seed out of range", ["merge", "digits", "shapes", "--adapter-seed", "3"], "--adapter-seed is a"),
    ("a training seed out of range", ["train-adapter", "--task", "digits", "--seed", "7"], "--seed is a training"),
    ("an unknown task", ["merge", "digits", "cats"], "Unknown task 'cats'"),
    ("a bogus device", ["train-head", "--task", "digits", "--device", "tpu0"], "is not a device"),
]


@pytest.mark.parametrize("argv, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_the_command_line_refuses_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main([*argv, "--profile", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists() or not any(out.rglob("*")), "nothing was trained or written"


@pytest.mark.parametrize(
    "argv",
    [
        ["merge", "digits", "shapes", "--adapter-seed", "-1"],
        ["merge", "digits", "shapes", "--seed", "-2"],
        ["train-adapter", "--task", "digits", "--seed", "-1"],
        ["tune", "--pairs", "0"],
        ["grade", "submissions", "--jobs", "0"],
        ["grade", "submissions", "--cell-timeout", "0"],
        ["grade", "submissions", "--notebook-timeout", "ten"],
    ],
)
def test_whole_number_ranges_are_the_parsers_own_refusal(tmp_path, capsys, argv):
    """A count or seed outside its range is refused while the arguments are read, in argparse's words, naming the
    option: before the profile is resolved or anything is opened."""
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--out", str(tmp_path / ("scores.csv" if argv[0] == "grade" else "out"))])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and f"error: argument {argv[-2]}: " in err and "whole number" in err, err
    assert not any(tmp_path.iterdir()), "nothing was written"


@pytest.mark.parametrize(
    "option, message",
    [(["--jobs", "100000"], "from 1 to 64"), (["--cell-timeout", str(10**30)], "at most 604800")],
)
def test_grading_limits_are_range_checked(tmp_path, capsys, option, message):
    (tmp_path / "submissions").mkdir()
    (tmp_path / "submissions" / "a.ipynb").write_text("{}")
    assert main(["grade", str(tmp_path / "submissions"), "--out", str(tmp_path / "scores.csv"), *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and not (tmp_path / "scores.csv").exists()


def test_unreadable_saved_files_and_a_full_disk_are_one_line_not_a_traceback(monkeypatch, capsys):
    """safetensors raises its own error on a full disk, torch an UnpicklingError on a pickled file: both are told."""
    import pickle

    from safetensors import SafetensorError

    from lora_merge_utils import cli

    for error in (SafetensorError("Error while serializing: No space left on device"), pickle.UnpicklingError("x")):

        def fail(args, error=error):
            raise error

        monkeypatch.setitem(cli.COMMANDS, "list", fail)
        assert cli.main(["list"]) == 2
        assert capsys.readouterr().err.startswith("error: ")

    def bug(args):
        raise KeyError("a bug of ours")

    monkeypatch.setitem(cli.COMMANDS, "list", bug)
    with pytest.raises(KeyError):  # not hidden: a bug must show its traceback
        cli.main(["list"])


def test_the_command_line_refuses_an_output_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "results.csv"
    target.write_text("keep me")
    assert main(["train-head", "--task", "digits", "--profile", "tiny", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err and target.read_text() == "keep me"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_the_command_line_refuses_cuda_without_a_gpu(tmp_path, capsys):
    assert (
        main(
            ["train-head", "--task", "digits", "--profile", "tiny", "--device", "cuda", "--out", str(tmp_path / "out")]
        )
        == 2
    )
    assert "no CUDA GPU" in capsys.readouterr().err


def test_a_training_lock_that_is_a_symbolic_link_is_refused_and_its_target_left_alone(tmp_path):
    """The lock file is written with the process id: through a link it would overwrite a file outside the folder."""
    from lora_merge_utils.safe_io import training_lock

    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    root = tmp_path / "out"
    root.mkdir()
    (root / ".training.lock").symlink_to(outside)
    with pytest.raises(OSError, match="is a symbolic link"):
        with training_lock(root):
            pass
    assert outside.read_text() == "keep me"


@pytest.mark.parametrize("case", ["a name too long", "a path too long", "a lock that is a folder", "a table folder"])
def test_paths_the_file_system_would_refuse_are_one_line_with_the_fix_before_any_work(tmp_path, capsys, case):
    """These gave raw errno text (`[Errno 36] File name too long`, `[Errno 21] Is a directory`), some only after
    minutes of work."""
    out = tmp_path / "out"
    argv = ["train-head", "--task", "digits"]
    fix = {
        "a name too long": "this file system allows 255. Choose a shorter name",
        "a path too long": "Choose a shorter path",
        "a lock that is a folder": "A folder stands where a file is expected (",
        "a table folder": "is a folder; give the path of a file to write",
    }[case]
    if case == "a name too long":
        out = tmp_path / ("x" * 300)
    elif case == "a path too long":
        out = tmp_path.joinpath(*["y" * 200] * 20)
    elif case == "a lock that is a folder":
        (out / ".training.lock").mkdir(parents=True)
    else:
        (tmp_path / "t.csv").mkdir()
        argv = ["tune", "--pairs", "1", "--table", str(tmp_path / "t.csv")]
    assert main([*argv, "--profile", "tiny", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fix in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "heads").exists(), "nothing was trained"


def test_a_cache_entry_that_is_a_folder_is_one_line_with_the_fix(copy_of_shared_study, capsys, monkeypatch):
    import json

    from .helpers import MINI_OVERRIDES

    monkeypatch.setenv("LORA_BOOK_OVERRIDES", json.dumps(MINI_OVERRIDES))
    for entry in (copy_of_shared_study / "results" / "scores").glob("*.json"):
        entry.unlink()
        entry.mkdir()
    argv = ["merge", "digits", "shapes", "--profile", "tiny", "--out", str(copy_of_shared_study), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Is a directory" in err and "move or delete that folder" in err and err.count("\n") == 1


@pytest.mark.parametrize("inside", ["results", "adapters/digits"])
def test_a_study_folder_that_links_out_of_the_output_is_refused_before_any_work(tmp_path, capsys, inside):
    """A `results/` that is a symbolic link to another folder used to get the tables."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "out"
    (root / inside).parent.mkdir(parents=True)
    (root / inside).symlink_to(elsewhere, target_is_directory=True)
    assert main(["train-head", "--task", "digits", "--profile", "tiny", "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{root / inside} is a symbolic link" in err and "Traceback" not in err and err.count("\n") == 1
    assert not any(elsewhere.iterdir()) and not (root / "heads").exists(), "nothing written, here or there"


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "", ".hidden", "x..y", "datasets"])
def test_a_profile_name_that_is_not_a_plain_folder_name_is_refused(name, tmp_path, monkeypatch):
    """A profile's name is its artifact folder's: `../../escaped` wrote outside $LORA_BOOK_ARTIFACTS."""
    from lora_merge_utils.profiles import TINY, apply_overrides

    monkeypatch.setenv("LORA_BOOK_ARTIFACTS", str(tmp_path / "base"))
    with pytest.raises(ValueError, match="name must be a plain folder name"):
        apply_overrides(TINY, {"name": name})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tasks": ["digits", "nope"]}, "tasks names 'nope', which the 'tiny' profile cannot build"),
        ({"tasks": ["digits"]}, "related_tasks names 'shapes_family', 'letters_font', 'gratings_frequency', whose"),
        ({"tasks": [1, 2]}, "tasks and related_tasks must be names"),
        ({"backbone.overrides.num_heads": 5}, "timm cannot build .*dim should be divisible by num_heads"),
        ({"backbone.overrides.bogus": 1}, "timm cannot build .*unexpected keyword argument 'bogus'"),
        ({"backbone.overrides.depth": 2}, "shipped weights of 'vit_tiny_patch16_224' do not fit .*depth=2"),
        ({"backbone.model_name": "x"}, "timm does not know the model 'x'"),
    ],
)
def test_a_profile_the_book_cannot_build_is_one_line_before_any_work(overrides, message, tmp_path, monkeypatch, capsys):
    """Tasks it cannot build and backbones timm cannot make are told in one line, exit 2, before anything is
    trained (`tasks: [digits, nope]` failed only after training digits; the others were tracebacks)."""
    import json

    from lora_merge_utils.cli import main

    monkeypatch.setenv("LORA_BOOK_OVERRIDES", json.dumps(overrides))
    out = tmp_path / "out"
    assert main(["train-head", "--task", "digits", "--profile", "tiny", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err and err.count("\n") == 1, err
    assert not out.exists() or not any(out.rglob("*.safetensors")), "nothing was trained"


def test_the_library_s_grid_refuses_a_method_without_its_required_value_before_any_work(tmp_path):
    from lora_merge_utils import run_study

    with pytest.raises(ValueError, match="Method 'ties' needs density="):
        run_study("tiny", tmp_path / "out", methods=("task_arithmetic", "ties"), progress=False)
    assert not (tmp_path / "out").exists(), "nothing trained or written"
