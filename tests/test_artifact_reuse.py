"""A saved head or adapter is reused only if it is what was saved, for this task, backbone, seed and LoRA setting;
otherwise the study refuses it in one line and never trains over it unless asked. Each test edits its own copy."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest

from lora_merge_utils import Study
from lora_merge_utils.merging import MergeSpec


@pytest.fixture
def copy_of(mini_profile, copy_of_shared_study):
    """A copy of the session's shared study (heads, and adapters of every task and seed), reused with one seed."""
    return mini_profile.replace(seeds=1), copy_of_shared_study


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, other content: a header check alone would not see it
    path.write_bytes(bytes(data))


def test_a_saved_adapter_is_reused_untouched(copy_of):
    profile, root = copy_of
    weights = root / "adapters" / "digits" / "seed-0" / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert Study.open(profile, root, progress=False).ensure_adapter("digits") == weights.parent
    assert weights.stat().st_mtime_ns == stamp
    assert set(json.loads((weights.parent / "metrics.json").read_text())["sha256"]) == {
        "adapter_model.safetensors",
        "adapter_config.json",
        "head.safetensors",
    }


def test_an_edited_adapter_config_is_refused_and_changes_the_score_cache_key(copy_of):
    """lora_alpha scales every update: 16 -> 64 would report other accuracies with exit 0 if it were believed."""
    profile, root = copy_of
    study = Study.open(profile, root, progress=False)
    fingerprint = study.adapters_fingerprint(0)
    config = root / "adapters" / "digits" / "seed-0" / "adapter_config.json"
    settings = json.loads(config.read_text())
    settings["lora_alpha"] = 4 * settings["lora_alpha"]
    config.write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="adapter_config.json is not the file that was saved there"):
        study.ensure_adapter("digits")
    assert study.adapters_fingerprint(0) != fingerprint, "cached merge scores are not served for it"


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "head.safetensors"])
def test_edited_adapter_weights_are_refused(copy_of, name):
    profile, root = copy_of
    _flip_a_byte(root / "adapters" / "digits" / "seed-0" / name)
    with pytest.raises(ValueError, match=f"{name} is not the file that was saved there"):
        Study.open(profile, root, progress=False).ensure_adapter("digits")


def _rewrite_metrics(directory, change, seal=True):
    """Edit a metrics.json; with ``seal``, as someone holding the folder's key would (re-sealed), so that the checks
    behind the seal are what is tested."""
    from lora_merge_utils.integrity import find_key, sealed

    metrics = json.loads((directory / "metrics.json").read_text())
    change(metrics)
    if seal and "seal" in metrics:
        metrics = sealed(metrics, find_key(directory))
    (directory / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize("kind", ["adapters/digits/seed-0", "heads/digits"])
def test_a_save_without_checksums_is_refused_unless_trusted(copy_of, monkeypatch, kind):
    """Deleting the sha256 key used to switch the check off ("older saves pass")."""
    profile, root = copy_of
    _rewrite_metrics(root / kind, lambda m: m.pop("sha256"))
    study = Study.open(profile, root, progress=False)
    ensure = study.ensure_adapter if kind.startswith("adapters") else study.ensure_head
    with pytest.raises(ValueError, match="records no checksum for .*LORA_BOOK_TRUST_UNCHECKED=1"):
        ensure("digits")
    monkeypatch.setenv("LORA_BOOK_TRUST_UNCHECKED", "1")
    ensure("digits")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("accuracy"), "accuracy must be a number from 0 to 1, got 'nothing'"),
        (lambda m: m.__setitem__("accuracy", "high"), "accuracy must be a number from 0 to 1, got 'high'"),
        (lambda m: m.__setitem__("backbone", 3), "backbone must be the backbone's identity"),
    ],
)
def test_a_metrics_file_missing_a_field_or_of_a_wrong_type_is_refused_in_one_line(copy_of, change, message):
    profile, root = copy_of
    _rewrite_metrics(root / "adapters/digits/seed-0", change)
    with pytest.raises(ValueError, match=message) as error:
        Study.open(profile, root, progress=False).ensure_adapter("digits")
    assert "\n" not in str(error.value)


def test_an_adapter_config_dropped_from_the_checksums_is_refused(copy_of):
    profile, root = copy_of
    _rewrite_metrics(root / "adapters/digits/seed-0", lambda m: m["sha256"].pop("adapter_config.json"))
    with pytest.raises(ValueError, match="no checksum for adapter_config.json"):
        Study.open(profile, root, progress=False).ensure_adapter("digits")


def _edit_config_resealed(directory, change):
    """Edit an adapter's config as someone holding the folder's key would: checksums recomputed, metrics re-sealed,
    so that the checks behind the seal are what is tested."""
    from lora_merge_utils.artifacts import weight_checksums

    config = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps(change(config)))
    _rewrite_metrics(directory, lambda m: m.__setitem__("sha256", weight_checksums(directory)))


@pytest.mark.parametrize("kind", ["adapters/digits/seed-0", "heads/digits"])
def test_a_head_with_another_number_of_classes_is_refused_even_with_its_checksum(copy_of, kind):
    import torch

    from lora_merge_utils.artifacts import save_head, weight_checksums

    profile, root = copy_of
    directory = root / kind
    save_head(torch.nn.Linear(96, 7), directory / "head.safetensors")
    _rewrite_metrics(directory, lambda m: m.__setitem__("sha256", weight_checksums(directory)))
    study = Study.open(profile, root, progress=False)
    ensure = study.ensure_adapter if kind.startswith("adapters") else study.ensure_head
    with pytest.raises(ValueError, match="has 7 outputs but the task has 10 classes"):
        ensure("digits")


def test_adapter_weights_of_another_rank_than_the_config_are_refused(copy_of):
    profile, root = copy_of
    _edit_config_resealed(root / "adapters/digits/seed-0", lambda c: c | {"r": 2 * c["r"]})
    with pytest.raises(ValueError, match="rank .* but its adapter_config.json says r="):
        Study.open(profile, root, progress=False).ensure_adapter("digits")


def test_an_interrupted_save_is_mended_only_under_the_lock(copy_of):
    """A reader that finds a save between its two renames leaves it alone; the study mends it holding the lock, and
    reuses the previous, whole version without training."""
    profile, root = copy_of
    final = root / "adapters/digits/seed-0"
    aside = final.with_name(".seed-0.old")
    final.rename(aside)
    study = Study.open(profile, root, progress=False)
    assert not study.store.has_adapter("digits", 0) and aside.is_dir(), "no lock held: nothing moved"
    stamp = (aside / "adapter_model.safetensors").stat().st_mtime_ns
    assert study.ensure_adapter("digits") == final
    assert (final / "adapter_model.safetensors").stat().st_mtime_ns == stamp and not aside.exists()


def test_another_tasks_adapter_copied_in_is_refused_and_kept(copy_of):
    profile, root = copy_of
    target = root / "adapters" / "digits" / "seed-0"
    shutil.rmtree(target)
    shutil.copytree(root / "adapters" / "shapes" / "seed-0", target)
    with pytest.raises(ValueError, match="task 'shapes' \\(this study: 'digits'\\).*not replaced silently"):
        Study.open(profile, root, progress=False).ensure_adapter("digits")
    assert json.loads((target / "metrics.json").read_text())["task"] == "shapes", "nothing was overwritten"


def test_an_adapter_trained_with_other_lora_settings_is_refused_unless_retrained(copy_of):
    profile, root = copy_of
    other = profile.replace(lora=replace(profile.lora, alpha=4 * profile.lora.alpha))
    study = Study.open(other, root, progress=False)
    with pytest.raises(ValueError, match="lora.alpha 16 \\(this study: 64\\)"):
        study.ensure_adapter("digits")
    directory = study.ensure_adapter("digits", retrain=True)
    assert json.loads((directory / "metrics.json").read_text())["lora"]["alpha"] == 64


def test_heads_and_adapters_made_with_other_training_settings_or_data_are_refused(copy_of):
    """A folder trained with other epochs, learning rate or images per class is not reused as if it were this
    study's: it reported the old accuracies with the new settings' labels."""
    profile, root = copy_of
    longer = profile.replace(train=replace(profile.train, adapter_epochs=profile.train.adapter_epochs + 1))
    with pytest.raises(ValueError, match="made_with.adapter_epochs 1 \\(this study: 2\\).*not replaced silently"):
        Study.open(longer, root, progress=False).ensure_adapter("digits")
    Study.open(longer, root, progress=False).ensure_head("digits")  # a head does not depend on the adapters' epochs
    fewer = profile.replace(data=replace(profile.data, train_per_class=profile.data.train_per_class // 2))
    with pytest.raises(
        ValueError, match="holds a head saved for made_with.data.train_per_class 12 \\(this study: 6\\)"
    ):
        Study.open(fewer, root, progress=False).ensure_head("digits")
    saved = json.loads((root / "adapters" / "digits" / "seed-0" / "metrics.json").read_text())
    assert saved["made_with"]["data"]["train_per_class"] == profile.data.train_per_class


def test_another_tasks_head_copied_in_is_refused(copy_of):
    profile, root = copy_of
    for name in ("head.safetensors", "metrics.json"):
        shutil.copy(root / "heads" / "shapes" / name, root / "heads" / "digits" / name)
    with pytest.raises(ValueError, match="holds a head saved for task 'shapes'"):
        Study.open(profile, root, progress=False).ensure_head("digits")


def test_an_edited_head_is_refused(copy_of):
    profile, root = copy_of
    _flip_a_byte(root / "heads" / "digits" / "head.safetensors")
    with pytest.raises(ValueError, match="head.safetensors is not the file that was saved there"):
        Study.open(profile, root, progress=False).ensure_head("digits")


@pytest.mark.subprocess
def test_two_runs_into_one_folder_cannot_both_train(tmp_path, mini_profile):
    """A real second process holds the folder's training lock: this run refuses to train, names it, and writes
    nothing; once that process is gone, training goes ahead."""
    import subprocess
    import sys
    import time

    from lora_merge_utils.safe_io import FolderBusy

    root = tmp_path / "root"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\nfrom lora_merge_utils.safe_io import training_lock\n"
                f"with training_lock({str(root)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        study = Study.open(mini_profile.replace(seeds=1), root, progress=False)
        with pytest.raises(FolderBusy, match=f"process {holder.pid}\\) is training into"):
            study.ensure_adapter("digits")
        assert not (root / "heads").exists() and not (root / "adapters").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert study.ensure_adapter("digits").is_dir()


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    from lora_merge_utils.safe_io import training_lock

    with training_lock(tmp_path), training_lock(tmp_path):
        pass
    with training_lock(tmp_path):  # released: taken again
        pass


@pytest.mark.parametrize(
    "edit",
    [
        "every image right, seal kept",
        "every image right, sealed with another folder's key",
        "every image right, plain sha256 recomputed",
        "another image count, sealed with this folder's key",
        "bits cut short, sealed",
        "not hex, sealed",
        "no seal",
        "another merge's entry copied over it",
    ],
)
def test_an_edited_score_cache_entry_is_scored_again_not_believed(copy_of, edit):
    """A cached merge score that was edited without the folder's key, copied from elsewhere, cut short or garbled is
    never served: the merge is scored again, the entry rewritten, and the table is the one the adapters give."""
    import hashlib

    from lora_merge_utils.instrumentation.workload import work_done
    from lora_merge_utils.integrity import find_key, sealed

    profile, root = copy_of
    study = Study.open(profile, root, progress=False)
    singles = study.singles_table(seeds=0)
    honest = study.merges_table(singles, methods=("task_arithmetic",), sizes=(2,), cache=True, seeds=0)
    pair = tuple(honest["members"].iloc[0].split("+"))
    entry_path = study.score_store(0)._path(pair, MergeSpec.of("task_arithmetic"))  # the entry this table read
    entry = json.loads(entry_path.read_text())
    task = entry["members"][0]
    n = entry["num_images"][task]
    key = find_key(entry_path)
    all_right = (b"\xff" * (n // 8) + (bytes([0xFF << (8 - n % 8) & 0xFF]) if n % 8 else b"")).hex()
    if edit.startswith("every image right"):
        entry["correct"][task] = all_right
        if "another folder" in edit:
            entry = sealed(entry, bytes(32))
        elif "sha256" in edit:
            entry["sha256"] = hashlib.sha256(json.dumps([entry["correct"], entry["num_images"]]).encode()).hexdigest()
    elif edit.startswith("another image count"):  # bits for n + 8 images, claimed consistently
        entry["correct"][task] = entry["correct"][task] + "ff"
        entry["num_images"][task] = n + 8
        entry = sealed(entry, key)
    elif edit.startswith("bits cut short"):
        entry["correct"][task] = entry["correct"][task][:-4]
        entry = sealed(entry, key)
    elif edit.startswith("not hex"):
        entry["correct"][task] = "zz" + entry["correct"][task][2:]
        entry = sealed(entry, key)
    elif edit == "no seal":
        del entry["seal"]
    else:
        other = tuple(next(m for m in honest["members"] if m != "+".join(pair)).split("+"))
        entry = json.loads(study.score_store(0)._path(other, MergeSpec.of("task_arithmetic")).read_text())
    entry_path.write_text(json.dumps(entry))
    start = work_done()["merges"]
    again = study.merges_table(singles, methods=("task_arithmetic",), sizes=(2,), cache=True, seeds=0)
    pd.testing.assert_frame_equal(again, honest)
    assert work_done()["merges"] - start >= 1, "the edited merge was scored again"
    assert study.score_store(0).get(tuple(entry["members"]), MergeSpec.of("task_arithmetic")) is not None


def test_an_edited_accuracy_is_refused_and_not_printed(copy_of, capsys):
    """metrics.json's accuracy is what `train-adapter` prints and the tables read: edited to 0.99 without the
    folder's key, it is refused in one line, nothing is retrained over it, and the CLI exits non-zero."""
    from lora_merge_utils.cli import main

    profile, root = copy_of
    directory = root / "adapters/digits/seed-0"
    _rewrite_metrics(directory, lambda m: m.__setitem__("accuracy", 0.99), seal=False)
    with pytest.raises(ValueError, match="metrics.json is not the record that was saved there: its seal") as error:
        Study.open(profile, root, progress=False).ensure_adapter("digits")
    assert "\n" not in str(error.value)
    assert json.loads((directory / "metrics.json").read_text())["accuracy"] == 0.99, "kept as it is"
    _rewrite_metrics(root / "heads/digits", lambda m: m.__setitem__("accuracy", 0.99), seal=False)
    with pytest.raises(ValueError, match="heads/digits/metrics.json is not the record that was saved"):
        Study.open(profile, root, progress=False).ensure_head("digits")
    assert main(["train-adapter", "--task", "digits", "--out", str(root), "--quiet"]) != 0
    assert "0.99" not in capsys.readouterr().out


def test_a_deleted_seal_is_refused_unless_trusted(copy_of, monkeypatch):
    profile, root = copy_of
    _rewrite_metrics(root / "adapters/digits/seed-0", lambda m: m.pop("seal"), seal=False)
    study = Study.open(profile, root, progress=False)
    with pytest.raises(ValueError, match="has no seal.*LORA_BOOK_TRUST_UNCHECKED=1"):
        study.ensure_adapter("digits")
    monkeypatch.setenv("LORA_BOOK_TRUST_UNCHECKED", "1")
    study.ensure_adapter("digits")


def test_an_adapter_copied_in_from_another_artifacts_folder_is_refused(copy_of, tmp_path):
    """Each folder seals with its own key: a whole adapter folder made elsewhere (same task, same settings) is not
    this folder's, so its numbers are not believed here."""
    from lora_merge_utils.integrity import KEY_NAME

    profile, root = copy_of
    other = tmp_path / "other"
    shutil.copytree(root, other)
    (other / KEY_NAME).write_text("ab" * 32 + "\n")  # another folder, another key
    elsewhere = Study.open(profile, other, progress=False)
    elsewhere.ensure_head("digits", retrain=True)
    elsewhere.ensure_adapter("digits", retrain=True)
    target = root / "adapters/digits/seed-0"
    shutil.rmtree(target)
    shutil.copytree(other / "adapters/digits/seed-0", target)
    with pytest.raises(ValueError, match="copied in from another artifacts folder"):
        Study.open(profile, root, progress=False).ensure_adapter("digits")


def test_a_config_that_contradicts_its_metrics_is_refused_even_resealed(copy_of):
    """lora_alpha 64 in the config, 16 in metrics.json, checksums recomputed and sealed with the folder's key: the
    two files state the same fact, so the contradiction is caught where the seal cannot be."""
    profile, root = copy_of
    _edit_config_resealed(root / "adapters/digits/seed-0", lambda c: c | {"lora_alpha": 4 * c["lora_alpha"]})
    with pytest.raises(ValueError, match="says alpha 64 \\(metrics.json: 16\\).*do not belong together") as error:
        Study.open(profile, root, progress=False).ensure_adapter("digits")
    assert "\n" not in str(error.value)


def test_another_peft_type_is_refused_in_one_line(copy_of):
    profile, root = copy_of
    _edit_config_resealed(root / "adapters/digits/seed-0", lambda c: c | {"peft_type": "BOGUS"})
    with pytest.raises(ValueError, match="peft_type 'BOGUS': only LoRA adapters"):
        Study.open(profile, root, progress=False).ensure_adapter("digits")


def test_a_lora_factor_of_the_wrong_shape_is_refused_before_peft_loads_it(copy_of):
    """A lora_B one row too tall (checksums recomputed, resealed) used to end in PEFT's size-mismatch traceback."""
    import torch
    from safetensors.torch import load_file, save_file

    from lora_merge_utils.artifacts import weight_checksums

    profile, root = copy_of
    directory = root / "adapters/digits/seed-0"
    state = load_file(str(directory / "adapter_model.safetensors"))
    name = next(k for k in state if "lora_B" in k)
    state[name] = torch.cat([state[name], state[name][:1]])
    save_file(state, str(directory / "adapter_model.safetensors"))
    _rewrite_metrics(directory, lambda m: m.__setitem__("sha256", weight_checksums(directory)))
    study = Study.open(profile, root, progress=False)
    with pytest.raises(ValueError, match=f"{name} has shape .* but this backbone wants") as error:
        study.load_all_adapters(["digits"])
    assert "\n" not in str(error.value)


def test_edited_features_are_computed_again_not_believed(copy_of):
    """A saved features file whose tensors were changed (its metadata kept) is recomputed: the head fitted on it
    would otherwise report another accuracy."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    profile, root = copy_of
    study = Study.open(profile, root, progress=False)
    honest = study.features("digits", "test")
    path = next((root / "features" / "digits").glob("test-*.safetensors"))
    with safe_open(str(path), framework="pt") as saved:
        metadata = saved.metadata()
    save_file({"features": torch.zeros_like(honest[0]), "labels": honest[1]}, str(path), metadata=metadata)
    again = Study.open(profile, root, progress=False).features("digits", "test")
    assert torch.equal(again[0], honest[0]) and not torch.equal(again[0], torch.zeros_like(honest[0]))


def test_a_head_and_an_adapter_made_by_other_code_are_refused(copy_of, monkeypatch):
    """The trainer's code is part of what made them: an adapter trained by an older training loop is not reused as
    if today's had trained it."""
    import lora_merge_utils.study as study_module

    profile, root = copy_of
    monkeypatch.setattr(study_module, "trainer_code_version", lambda: "other-code")
    with pytest.raises(ValueError, match="made_with.code '[0-9a-f]{16}' \\(this study: 'other-code'\\)"):
        Study.open(profile, root, progress=False).ensure_head("digits")
    with pytest.raises(ValueError, match="made_with.code"):
        Study.open(profile, root, progress=False).ensure_adapter("digits")


def test_a_study_checks_its_records_with_its_own_key_whatever_lies_in_between(copy_of):
    """A key a direct library call left in a subfolder (adapters/<task>/.seal-key) must not stand in for the
    study's own: the study checks with the key of its root."""
    from lora_merge_utils.integrity import KEY_NAME

    profile, root = copy_of
    (root / "adapters" / "digits" / KEY_NAME).write_text("cd" * 32 + "\n")
    study = Study.open(profile, root, progress=False)
    assert study.ensure_adapter("digits") == root / "adapters/digits/seed-0"
    study.load_all_adapters(["digits"])


def test_a_folder_copied_without_its_key_says_so_and_gets_no_new_key(copy_of):
    from lora_merge_utils.integrity import KEY_NAME

    profile, root = copy_of
    (root / KEY_NAME).unlink()
    with pytest.raises(ValueError, match=f"copied without that hidden file. Copy {KEY_NAME} from the folder"):
        Study.open(profile, root, progress=False).ensure_head("digits")
    assert not (root / KEY_NAME).exists(), "no new key that would make the old records uncheckable for good"
