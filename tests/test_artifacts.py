import copy
import json
import re

import pytest
import torch
from peft import PeftModel

from lora_merge_utils import TINY, create_backbone, load_adapters
from lora_merge_utils.artifacts import ArtifactStore, check_adapter_dir
from lora_merge_utils.safe_io import atomic_dir, training_lock

from .helpers import make_random_adapter


def test_saved_adapter_is_plain_peft_format_and_round_trips(backbone, tmp_path, random_adapters):
    directory = random_adapters["a"]
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors", "metrics.json"} <= {
        p.name for p in directory.iterdir()
    }
    plain = PeftModel.from_pretrained(copy.deepcopy(backbone), str(directory)).eval()
    ours, heads = load_adapters(backbone, {"a": directory})
    ours.set_adapter("a")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ours(x), rtol=0, atol=0)
        assert not torch.allclose(plain(x), backbone(x)), "the adapter changes the output"
    assert heads["a"].out_features == 3


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "adapters" / "digits"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "adapter_config.json").write_text("{}")
            raise RuntimeError("killed mid-way")
    assert not target.exists()
    assert list((tmp_path / "adapters").iterdir()) == []


def test_atomic_dir_replaces_an_old_version(tmp_path):
    target = tmp_path / "x"
    for version in ("1", "2"):
        with atomic_dir(target) as tmp:
            (tmp / "v").write_text(version)
    assert (target / "v").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_a_save_killed_between_its_two_renames_keeps_the_previous_version(tmp_path, random_adapters):
    store = ArtifactStore(tmp_path / "root")
    final = store.adapter_dir("digits", 0)
    final.parent.mkdir(parents=True)
    # The state a kill leaves after `final` was moved aside and before the new version was moved in.
    old = final.with_name(f".{final.name}.old")
    random_adapters["a"].rename(old)
    assert not store.has_adapter("digits", 0) and old.is_dir(), "without the lock it may be a save in progress"
    with training_lock(store.root):
        assert store.has_adapter("digits", 0), "the previous, whole version is put back by the lock's holder"
    assert not old.exists() and check_adapter_dir(final)["accuracy"] == 0.5


def _dead_pid() -> int:
    """The id of a process that has exited (it could be reused, but not within a test)."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _contents(root) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_leftovers_of_killed_saves_are_removed_and_nothing_whole_is_touched(tmp_path, random_adapters):
    import os
    import time

    from lora_merge_utils.artifacts import write_json
    from lora_merge_utils.safe_io import remove_debris, training_lock

    root = tmp_path / "root"
    store = ArtifactStore(root)
    for seed, name in enumerate(["a", "b", "c"]):
        store.adapter_dir("digits", seed).parent.mkdir(parents=True, exist_ok=True)
        random_adapters[name].rename(store.adapter_dir("digits", seed))
    write_json(store.results_dir / "scores" / "abc.json", {"correct": {}})
    whole = _contents(root)
    dead, parent = _dead_pid(), store.adapter_dir("digits", 0).parent
    # What kills leave: a half-assembled adapter folder and half-written files of a dead process...
    half = parent / f".seed-3.{dead}.k2j4h1_x.tmp"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"half")
    debris = [
        half,
        store.results_dir / f".merges.csv.{dead}.abcd1234.tmp",
        store.results_dir / "scores" / f".f00.json.{dead}.qwer5678.tmp",
    ]
    for path in debris[1:]:
        path.write_text("half")
    # ...a temporary name of an older version (no process id), long stale...
    stale = store.results_dir / ".singles.csv.zxcv0987.tmp"
    stale.write_text("half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    # ...and the moved-aside copy of a folder that was replaced, killed before it was deleted.
    replaced = parent / ".seed-1.old"
    replaced.mkdir()
    (replaced / "metrics.json").write_text("{}")
    # Writers that are alive (this process), and fresh temporary names without a process id, are left alone.
    alive = [store.results_dir / f".summary.csv.{os.getpid()}.tyui4567.tmp", store.results_dir / ".x.csv.ghjk.tmp"]
    for path in alive:
        path.write_text("being written")

    assert set(store.remove_debris()) == {*debris, stale}, "opening a store removes dead writers' files"
    assert replaced.exists(), "an .old copy is left to the holder of the training lock"
    with training_lock(root):
        assert not replaced.exists()
    assert all(path.exists() for path in alive)
    for path in alive:
        path.unlink()
    (root / ".training.lock").unlink()
    assert _contents(root) == whole, "every whole file is as it was, and nothing else is left"
    assert remove_debris(root) == []


def test_saved_folders_get_the_usual_permissions(tmp_path):
    import os

    with atomic_dir(tmp_path / "x") as tmp:
        (tmp / "v").write_text("1")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o777 & ~mask


def test_missing_adapter_directory_names_the_command_that_trains_it(tmp_path):
    """The hint is a real command for the real layout (adapters/<task>/seed-<k>): the CLI parses it as written."""
    import shlex

    from lora_merge_utils.cli import build_parser

    with pytest.raises(FileNotFoundError, match=r"`(python -m lora_merge_utils train-adapter [^`]*)`") as error:
        check_adapter_dir(tmp_path / "adapters" / "ghost" / "seed-1")
    command = re.search(r"`python -m lora_merge_utils ([^`]*)`", str(error.value)).group(1)
    args = build_parser().parse_args(shlex.split(command))
    assert (args.task, args.seed, args.out) == ("ghost", 1, tmp_path)
    with pytest.raises(FileNotFoundError, match="adapters/<task>/seed-<k>"):
        check_adapter_dir(tmp_path / "elsewhere")


def test_incomplete_adapter_directory(random_adapters):
    (random_adapters["a"] / "head.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing head.safetensors"):
        check_adapter_dir(random_adapters["a"])


def test_corrupt_adapter_weights(random_adapters, backbone):
    path = random_adapters["b"] / "adapter_model.safetensors"
    path.write_bytes(b"\x07" * 64)
    with pytest.raises(ValueError, match="corrupt"):
        load_adapters(backbone, {"b": random_adapters["b"]})


def test_corrupt_metrics(random_adapters):
    (random_adapters["c"] / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        check_adapter_dir(random_adapters["c"])


def test_adapters_of_another_backbone_are_refused(tmp_path, backbone):
    other = create_backbone(TINY, pretrained=False)
    directory = make_random_adapter(other, tmp_path / "other", seed=0)
    with pytest.raises(ValueError, match="trained on backbone"):
        load_adapters(backbone, {"other": directory})
    metrics = json.loads((directory / "metrics.json").read_text())
    assert metrics["backbone"].startswith("vit_tiny_patch16_224@")


def test_nothing_of_a_users_in_the_output_folder_is_ever_touched(tmp_path):
    """Debris is looked for only in the folders a study writes. A user's own folders and files beside them, whatever
    their names look like (a ``.old`` folder, a dead process's ``.tmp`` name, a stale ``.tmp``), stay as they are."""
    import os
    import time

    from lora_merge_utils.safe_io import remove_debris, training_lock

    root = tmp_path / "U"
    (root / "notes" / ".notes.old").mkdir(parents=True)
    (root / "notes" / ".notes.old" / "todo.txt").write_text("mine")
    (root / "sub" / ".photos.old").mkdir(parents=True)
    (root / "sub" / ".photos.old" / "cat.jpg").write_bytes(b"jpg")
    (root / "deep" / "x").mkdir(parents=True)
    (root / "deep" / f".report.{_dead_pid()}.draft.tmp").write_text("draft")
    stale = root / "deep" / "x" / ".settings.json.tmp"
    stale.write_text("{}")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    (root / ".mine.old").mkdir()
    mine = _contents(root)
    ours = root / "results" / f".merges.csv.{_dead_pid()}.abcd1234.tmp"
    ours.parent.mkdir()
    ours.write_text("half")
    assert ArtifactStore(root).remove_debris() == [ours], "only what a study wrote"
    with training_lock(root):
        pass
    assert remove_debris(root) == []
    (root / ".training.lock").unlink()
    assert (
        _contents(root) == mine and (root / "sub" / ".photos.old").is_dir() and not (root / "sub" / "photos").exists()
    )
