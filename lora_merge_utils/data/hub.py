"""The full profile's tasks from the Hugging Face Hub (:class:`~lora_merge_utils.profiles.HubData`).

Only the hub's ``train`` and ``test`` splits are downloaded (never SVHN's 1 GB ``extra`` split or the corruption
splits); a class-balanced sample of them is saved under ``<artifacts>/datasets`` with a checksum per file and reused
by every later chapter. A local ``save_to_disk`` copy in ``$LORA_BOOK_DATA_DIR/<task>`` is used instead of the hub
when it exists. Images are decoded lazily."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..backbone import file_sha256
from ..profiles import (
    HubData,
    Profile,
    progress_enabled,
)
from ..safe_io import tmp_prefix
from .hub_sources import HUB_SOURCES, HubSource
from .splits import HFImageDataset, ImageTask, sample_cache_dir, stratified_sample

DATA_DIR_ENV = "LORA_BOOK_DATA_DIR"


HUB_MIRROR_ENV = "LORA_BOOK_HUB_MIRROR"
"""A folder laid out like the hub (``<repo>/<data file paths>``) used instead of ``hf://datasets``: for tests, or a
machine without network that holds copies of the hub's parquet files."""


def local_data_dir(profile: Profile) -> Path | None:
    """``$LORA_BOOK_DATA_DIR`` or the profile's ``data.data_dir``: a folder of ``<task>/`` copies saved by
    ``DatasetDict.save_to_disk``."""
    value = os.environ.get(DATA_DIR_ENV) or getattr(profile.data, "data_dir", None)
    return Path(value).expanduser() if value else None


def _load_snippet(source: HubSource) -> str:
    config = f", {source.config!r}" if source.config else ""
    return f"datasets.load_dataset({source.repo!r}{config}, split=['train', 'test'])"


def _open_local_copy(path: Path, source: HubSource, name: str) -> dict:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"{path} is not a dataset saved with `save_to_disk` ({error}). Delete it and save it again: "
            f"`datasets.DatasetDict(zip(['train', 'test'], {_load_snippet(source)})).save_to_disk({str(path)!r})`."
        ) from None
    missing = [s for s in source.files if s not in data]
    if missing:
        raise ValueError(f"Local copy {path} lacks the split(s) {missing}; it has {list(data)}.")
    return {split: data[split] for split in source.files}


def _hub_files(source: HubSource) -> dict[str, list[tuple[str, int]]]:
    """``{split: [(url, bytes), ...]}`` of the data files of the splits the book reads, and nothing else."""
    import fsspec

    root = os.environ.get(HUB_MIRROR_ENV) or "hf://datasets"
    fs, base = fsspec.core.url_to_fs(f"{root.rstrip('/')}/{source.repo}")
    files = {}
    for split, pattern in source.files.items():
        matches = sorted(fs.glob(f"{base}/{pattern}"))
        if not matches:
            raise FileNotFoundError(f"No data files match {pattern!r} in {root}/{source.repo}.")
        files[split] = [(fs.unstrip_protocol(path), int(fs.size(path))) for path in matches]
    return files


@contextmanager
def datasets_progress(enabled: bool) -> Iterator[None]:
    """Show the ``datasets`` library's progress bars only when ``enabled`` (they go to stderr)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            datasets.enable_progress_bars()


def _download(source: HubSource, name: str) -> dict:
    """The hub's ``train`` and ``test`` splits only, printing how many bytes each costs."""
    import datasets

    try:
        files = _hub_files(source)
        sizes = ", ".join(f"{split} {sum(size for _, size in items) / 1e6:,.1f} MB" for split, items in files.items())
        skipped = f"; not downloading {', '.join(source.other_splits)}" if source.other_splits else ""
        print(f"{name}: downloading {sizes} from {source.title}{skipped}", flush=True)
        with datasets_progress(progress_enabled()):
            data = datasets.load_dataset(
                "parquet", data_files={split: [url for url, _ in items] for split, items in files.items()}
            )
    except (ConnectionError, OSError, ValueError) as error:
        raise FileNotFoundError(
            f"Could not load the {name!r} task from the Hugging Face Hub ({source.title}): "
            f"{type(error).__name__}: {str(error)[:300]}. The full profile needs network access or a local copy. "
            f"To make one on a machine with network: `datasets.DatasetDict(zip(['train', 'test'], "
            f"{_load_snippet(source)})).save_to_disk('{name}')`, copy the folder to $LORA_BOOK_DATA_DIR/{name}"
            f" and set ${DATA_DIR_ENV}. Offline, use the tiny profile instead (`--profile tiny`)."
        ) from error
    return {split: data[split] for split in source.files}


def _class_names(split, source: HubSource, name: str) -> list[str]:
    feature = split.features[source.label_column]
    names = list(getattr(feature, "names", None) or source.class_names)
    if len(names) != len(source.class_names):
        raise ValueError(
            f"The {name!r} data has {len(names)} classes where {len(source.class_names)} were expected "
            f"({source.title} changed?). Update HUB_SOURCES[{name!r}]."
        )
    return names


def _check_columns(split, source: HubSource, name: str) -> None:
    for column in (source.image_column, source.label_column):
        if column not in split.column_names:
            raise ValueError(
                f"The {name!r} data has no column {column!r} (columns: {split.column_names}). "
                f"Update HUB_SOURCES[{name!r}] to the dataset's schema."
            )


def _sample(profile: Profile, name: str, source: HubSource) -> tuple[dict, str]:
    """``({"train", "val", "test"}: HF datasets, origin)``: the saved sample if there is one, else drawn from the
    local copy or the hub and saved."""
    import datasets

    data: HubData = profile.data
    local = local_data_dir(profile)
    local_copy = local / name if local is not None and (local / name).exists() else None
    origin = str(local_copy) if local_copy is not None else f"hub:{source.title}"
    sizes = {"val": data.val_size, "train": data.train_size, "test": data.test_size}
    key = hashlib.sha256(json.dumps([origin, sizes, profile.train.seed, 1]).encode()).hexdigest()[:12]
    cache = sample_cache_dir() / f"{name}-{key}"
    if (cache / "dataset_dict.json").is_file() and not _sample_intact(cache):
        print(
            f"{name}: the saved sample {cache.parent.name}/{cache.name} differs from what was saved; drawing it again"
        )
        shutil.rmtree(cache, ignore_errors=True)
    if not (cache / "dataset_dict.json").is_file():
        raw = _open_local_copy(local_copy, source, name) if local_copy is not None else _download(source, name)
        for split in raw.values():
            _check_columns(split, source, name)
        seed = profile.train.seed
        # Validation images come out of the hub's training split, disjoint from the training sample.
        picks = stratified_sample(
            raw["train"][source.label_column], {"val": sizes["val"], "train": sizes["train"]}, seed
        )
        picks["test"] = stratified_sample(raw["test"][source.label_column], {"test": sizes["test"]}, seed)["test"]
        empty = [split for split, index in picks.items() if len(index) == 0]
        if empty:
            raise ValueError(
                f"{name}: the {' and '.join(empty)} sample would be empty: the source has {len(raw['train']):,} "
                f"training and {len(raw['test']):,} test images, too few for validation {sizes['val']} + training "
                f"{sizes['train']} + test {sizes['test']}. Lower data.val_size (or the other sizes) in the profile."
            )
        sample = datasets.DatasetDict(
            {
                split: raw["test" if split == "test" else "train"].select(picks[split].tolist())
                for split in ("train", "val", "test")
            }
        )
        _save_atomically(sample, cache)
        print(
            f"{name}: saved a sample of {', '.join(f'{len(v):,} {k}' for k, v in sample.items())} images "
            f"to {cache.parent.name}/{cache.name}",
            flush=True,
        )
    saved = datasets.load_from_disk(str(cache))
    return {split: saved[split] for split in ("train", "val", "test")}, origin


SAMPLE_CHECKSUMS = "checksums.json"
"""The sha256 of every file of a saved hub sample, written with it; a sample whose files differ is drawn again."""


def _sample_intact(directory: Path) -> bool:
    try:
        recorded = json.loads((directory / SAMPLE_CHECKSUMS).read_text())
    except (OSError, ValueError):
        return False
    present = {str(f.relative_to(directory)) for f in directory.rglob("*") if f.is_file()} - {SAMPLE_CHECKSUMS}
    return (
        isinstance(recorded, dict)
        and set(recorded) == present
        and all(file_sha256(directory / name) == digest for name, digest in recorded.items())
    )


def _save_atomically(sample, directory: Path) -> None:
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Named with this process's id, like every atomic save: a killed run's folder is debris once its process is gone.
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(directory), suffix=".tmp", dir=directory.parent))
    try:
        with datasets_progress(False):
            sample.save_to_disk(str(tmp))
        checksums = {str(f.relative_to(tmp)): file_sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        (tmp / SAMPLE_CHECKSUMS).write_text(json.dumps(checksums, indent=1))
        shutil.rmtree(directory, ignore_errors=True)  # an incomplete sample left by a killed run
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_hub(profile: Profile, name: str) -> ImageTask:
    """A full-profile task from its saved sample, a local copy or the hub (a class-balanced sample, saved for reuse)."""
    if name not in HUB_SOURCES:
        raise ValueError(f"No hub source for task {name!r}; sources exist for {', '.join(HUB_SOURCES)}.")
    source = HUB_SOURCES[name]
    splits, origin = _sample(profile, name, source)
    names = _class_names(splits["train"], source, name)
    wrapped = {
        split: HFImageDataset(data, source.image_column, source.label_column, profile.image_size)
        for split, data in splits.items()
    }
    where = "from the Hugging Face Hub" if origin.startswith("hub:") else "from a local copy"
    return ImageTask(name, names, wrapped["train"], wrapped["test"], f"{source.title} {where}", val=wrapped["val"])
