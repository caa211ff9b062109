"""A practitioner's own image-classification data, read offline into decoded tensors.

Two layouts are read, because they are the two a practitioner is likely to already have:

* an **image folder** -- ``DIR/train/``, ``DIR/val/``, ``DIR/test/``, each with one subfolder per class (the class
  name is the subfolder's name, classes sorted by name), images of any format Pillow reads inside;
* a **save_to_disk folder** -- what ``datasets.DatasetDict.save_to_disk(DIR)`` writes (recognised by
  ``DIR/dataset_dict.json``), with splits ``train``, ``val`` (or ``validation``) and ``test``.

Every image of every split is decoded by :func:`read_task` at once, into ``uint8`` tensors: a file Pillow cannot read
is then reported in seconds, not after an hour of training, and evaluating the same images under many merges never
decodes them again. Before decoding anything, the layout of the whole folder (splits, classes, columns, labels) is
checked, and every fault raises a :class:`ValueError` (:class:`FileNotFoundError` for a missing folder) that names the
task, the file, folder, split or column at fault, and the fix.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import TensorDataset

from .._progress import tqdm

SPLITS = ("train", "val", "test")
"""The splits every task needs (``train`` to fit adapters and heads, ``val`` to choose merge hyperparameters, and
``test`` to report on images nothing was chosen with)."""

IMAGE_FOLDER = "image folder"
SAVE_TO_DISK = "save_to_disk"
MIN_IMAGE_SIZE = 8
_VAL_ALIASES = ("val", "validation")
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_IMAGE_COLUMN_NAMES = ("image", "img")
_LABEL_COLUMN_NAMES = ("label", "labels")
_BATCH = 64


@dataclass(eq=False)  # tensors have no single truth value, so no generated __eq__
class OwnTask:
    """One of the practitioner's classification tasks, decoded: ``uint8 [N, 3, S, S]`` RGB images and ``int64``
    labels per split. Kept as ``uint8`` (a quarter of the memory of ``float32``) so that any backbone's
    normalisation can be applied by :meth:`dataset`."""

    name: str
    class_names: list[str]
    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    source: str
    """``"image folder"`` or ``"save_to_disk"``: the layout the data was read from."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{split}={len(self.labels[split])}" for split in SPLITS if split in self.labels)
        return f"OwnTask({self.name!r}, {self.num_classes} classes, {sizes}, from {self.source})"

    def dataset(self, split: str, mean: tuple[float, float, float], std: tuple[float, float, float]) -> TensorDataset:
        """The split as ``(float32 image, label)`` pairs, images normalised as ``(x / 255 - mean) / std`` with the
        backbone's own mean and std (a backbone fed other statistics than its pretraining's sees shifted inputs)."""
        if split not in SPLITS:
            raise ValueError(f"Task {self.name!r}: unknown split {split!r}. Fix: use one of {', '.join(SPLITS)}.")
        stats = {"mean": mean, "std": std}
        for what, values in stats.items():
            if len(values) != 3:
                raise ValueError(
                    f"Task {self.name!r}: {what} must have 3 values (R, G, B), got {values!r}. Fix: pass the "
                    "backbone's per-channel statistics."
                )
        if any(s <= 0 for s in std):
            raise ValueError(f"Task {self.name!r}: std must be positive, got {std!r}. Fix: pass the backbone's std.")
        return TensorDataset(normalised(self.images[split], mean, std), self.labels[split])


def normalised(images: torch.Tensor, mean: tuple[float, float, float], std: tuple[float, float, float]) -> torch.Tensor:
    """``uint8`` images as float32 ``(x / 255 - mean) / std``, in a new tensor."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    # The same operations as lora_merge_utils.batches.normalize, so the same bits for the same statistics.
    return images.to(torch.float32, copy=True).div_(255).sub_(m).div_(s)


_Source = tuple[str, "bytes | str | Path | None"]
"""Where an image is (for messages: a file, or a split and row) and its data (encoded bytes, a file path, or None for
a row without an image)."""


@dataclass
class _Split:
    """One split, checked but not decoded yet: its kept images' labels and a way to read them in that order."""

    labels: np.ndarray
    sources: Callable[[], Iterator[_Source]]
    mode: str | None = None
    """A ``datasets.Image(mode=...)`` to convert to first, as ``datasets`` itself would."""


@dataclass
class _Plan:
    """A task whose layout has been checked: everything the decoding needs, and nothing decoded."""

    name: str
    source: str
    class_names: list[str]
    splits: dict[str, _Split]


def read_task(
    name: str, directory: str | Path, image_size: int, max_images: int | None = None, progress: bool = False
) -> OwnTask:
    """Read a task from an image folder or a save_to_disk folder (detected), decoding every kept image now.

    ``max_images`` keeps at most that many images per split, class-balanced and deterministic: round-robin over the
    classes, the first images of each class (in sorted file order, or dataset order) first -- so a quick trial run
    sees every class and the same images each time.
    """
    return _decode_plan(_plan(name, directory, image_size, max_images), image_size, progress)


def read_tasks(
    data: dict[str, str | Path], image_size: int, max_images: int | None = None, progress: bool = False
) -> dict[str, OwnTask]:
    """Read several tasks (name -> folder). Every task's layout is checked before any image is decoded, so a typo in
    the last task's path is reported before minutes of decoding the first."""
    if not data:
        raise ValueError("No tasks given: data is empty. Fix: pass {task name: folder} for at least one task.")
    plans = [_plan(name, directory, image_size, max_images) for name, directory in data.items()]
    return {plan.name: _decode_plan(plan, image_size, progress) for plan in plans}


def _plan(name: str, directory: str | Path, image_size: int, max_images: int | None) -> _Plan:
    """Check the arguments and the folder's layout, and say what to decode."""
    _check_sizes(name, image_size, max_images)
    root = Path(directory).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"Task {name!r}: the folder {root} does not exist. Fix: check the path given for {name!r}; it must be an "
            "image folder (train/, val/, test/ of class folders) or a folder written by DatasetDict.save_to_disk."
        )
    if not root.is_dir():
        raise ValueError(
            f"Task {name!r}: {root} is a file, not a folder. Fix: give the folder that holds train/, val/, test/ "
            "(an image folder) or dataset_dict.json (a DatasetDict.save_to_disk folder), not a file inside it."
        )
    if (root / "dataset_dict.json").is_file():
        return _plan_saved(name, root, max_images)
    if any((root / split).is_dir() for split in (*SPLITS, "validation")):
        return _plan_folder(name, root, max_images)
    raise ValueError(_unrecognised(name, root))


def _check_sizes(name: str, image_size: int, max_images: int | None) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"Task {name!r}: image_size must be an integer of at least {MIN_IMAGE_SIZE} pixels, got {image_size!r}. "
            "Fix: pass the backbone's input size (e.g. 224)."
        )
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(
            f"Task {name!r}: max_images must be a positive integer or None, got {max_images!r}. Fix: pass None to "
            "read every image, or the number of images to keep per split."
        )


def _unrecognised(name: str, root: Path) -> str:
    """Why a folder is neither layout, with what it does hold."""
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    found = ", ".join(entries[:12]) + (f", ... ({len(entries)} in all)" if len(entries) > 12 else "")
    hint = ""
    if (root / "state.json").is_file() or (root / "dataset_info.json").is_file():
        hint = (
            " It looks like a single Dataset saved with save_to_disk; save a DatasetDict with train, val and test "
            "splits instead."
        )
    inside = [
        p
        for p in sorted(root.iterdir())
        if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "train").is_dir())
    ]
    if inside:
        hint += f" The folder {inside[0]} looks like one: did you mean it?"
    return (
        f"Task {name!r}: {root} is neither layout this reads. Looked for {root / 'dataset_dict.json'} (a folder "
        f"written by DatasetDict.save_to_disk) and for the folders {', '.join(s + '/' for s in SPLITS)} (an image "
        f"folder); found {found or 'nothing'}.{hint} Fix: point to the folder that holds them, or arrange the images "
        "as train/<class>/*.png, val/<class>/*.png, test/<class>/*.png."
    )


# --- image folder ---------------------------------------------------------------------------------------------------


def _plan_folder(name: str, root: Path, max_images: int | None) -> _Plan:
    split_dirs = _folder_splits(name, root)
    class_dirs = {split: _class_dirs(name, folder) for split, folder in split_dirs.items()}
    class_names = _same_classes(name, split_dirs, class_dirs)
    splits = {}
    for split, folder in split_dirs.items():
        files, labels = [], []
        for label, class_name in enumerate(class_names):
            images = _class_images(name, split, folder / class_name)
            files += images
            labels += [label] * len(images)
        kept = _balanced_first(np.asarray(labels, dtype=np.int64), max_images)
        chosen = [files[i] for i in kept]
        splits[split] = _Split(np.asarray(labels, dtype=np.int64)[kept], partial(_file_sources, chosen))
    return _Plan(name, IMAGE_FOLDER, class_names, splits)


def _folder_splits(name: str, root: Path) -> dict[str, Path]:
    """``{split: folder}``, with ``validation/`` accepted for ``val``."""
    found = [p.name for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    folders = {}
    for split in SPLITS:
        names = _VAL_ALIASES if split == "val" else (split,)
        present = [n for n in names if (root / n).is_dir()]
        if len(present) > 1:
            raise ValueError(
                f"Task {name!r}: {root} has both val/ and validation/, so which is the validation split is unclear. "
                "Fix: merge them into val/ and remove validation/."
            )
        if not present:
            raise ValueError(
                f"Task {name!r}: the split folder {root / split} is missing (found the folders: "
                f"{', '.join(found) or 'none'}). Fix: create {split}/ with one subfolder of images per class, "
                "the same class folders as the other splits."
            )
        folders[split] = root / present[0]
    return folders


def _class_dirs(name: str, folder: Path) -> list[str]:
    """The class folders of one split; images lying loose in the split folder are a mistake, not ignored."""
    entries = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    loose = [p for p in entries if p.is_file() and _is_image_name(p)]
    if loose:
        raise ValueError(
            f"Task {name!r}: {len(loose)} image(s) lie directly in the split folder {folder}, e.g. {loose[0]}, "
            "outside any class folder, so they have no class. Fix: move each into the subfolder named after its "
            f"class ({folder}/<class>/)."
        )
    classes = [p.name for p in entries if p.is_dir()]
    if not classes:
        raise ValueError(
            f"Task {name!r}: the split folder {folder} has no images: it has no class subfolders. Fix: put each "
            f"class's images in {folder}/<class name>/."
        )
    return classes


def _same_classes(name: str, split_dirs: dict[str, Path], class_dirs: dict[str, list[str]]) -> list[str]:
    """The sorted class names, if every split has the same class folders."""
    every = set().union(*class_dirs.values())
    missing = {split: sorted(every - set(names)) for split, names in class_dirs.items()}
    faults = [f"{split_dirs[split]} lacks {_quoted(names)}" for split, names in missing.items() if names]
    if faults:
        raise ValueError(
            f"Task {name!r}: the class folders differ between splits: {'; '.join(faults)}. Fix: give every split the "
            "same class folders (with images in each), or remove the class from every split."
        )
    return sorted(every)


def _class_images(name: str, split: str, folder: Path) -> list[Path]:
    """A class folder's image files (subfolders included), in sorted path order; an empty one is a mistake."""
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and not _hidden(p.relative_to(folder))),
        key=lambda p: p.relative_to(folder).parts,
    )
    images = [p for p in files if _is_image_name(p)]
    if not images:
        others = sorted({p.suffix.lower() or p.name for p in files})
        seen = f"only files Pillow does not read ({', '.join(others)})" if others else "no files"
        raise ValueError(
            f"Task {name!r}: the class folder {folder} of split {split!r} has no images ({seen}). Fix: add images "
            "Pillow reads (png, jpg, ...) -- converting others to png -- or remove this class from every split."
        )
    return images


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in Image.registered_extensions()


def _file_sources(files: list[Path]) -> Iterator[_Source]:
    for path in files:
        yield str(path), path


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


# --- save_to_disk folder --------------------------------------------------------------------------------------------


def _plan_saved(name: str, root: Path, max_images: int | None) -> _Plan:
    import datasets

    keys = _saved_split_keys(name, root, _listed_splits(name, root))
    for split, key in keys.items():
        if _no_shards(root / key):  # datasets writes an empty split without data files, then fails to load it
            raise _empty_split(name, split)
    try:
        data = datasets.load_from_disk(str(root))
    except Exception as err:  # whatever datasets raises, the user needs the folder and the cause
        raise ValueError(
            f"Task {name!r}: datasets.load_from_disk could not read {root} ({type(err).__name__}: {err}). Fix: "
            "write the folder again with DatasetDict.save_to_disk, with the same datasets version as here "
            f"({datasets.__version__})."
        ) from err
    if not isinstance(data, datasets.DatasetDict):
        raise ValueError(
            f"Task {name!r}: {root} holds a single Dataset, not a DatasetDict. Fix: save a DatasetDict with splits "
            "train, val and test (datasets.DatasetDict(train=..., val=..., test=...).save_to_disk(...))."
        )
    columns = {split: _columns(name, split, data[key]) for split, key in keys.items()}
    class_names = _saved_class_names(name, {split: data[keys[split]] for split in keys}, columns)
    splits = {}
    for split, key in keys.items():
        image_column, label_column = columns[split]
        dataset = data[key]
        labels = _saved_labels(name, split, dataset, label_column, len(class_names))
        kept = _balanced_first(labels, max_images)
        feature = dataset.features[image_column]
        mode = feature.mode if isinstance(feature, datasets.Image) else None
        images = _undecoded(name, split, dataset, image_column)
        splits[split] = _Split(labels[kept], partial(_row_sources, root, split, image_column, images, kept), mode)
    return _Plan(name, SAVE_TO_DISK, class_names, splits)


def _listed_splits(name: str, root: Path) -> list[str]:
    """The splits ``dataset_dict.json`` lists: read before loading, so that a missing split is named first."""
    path = root / "dataset_dict.json"
    try:
        splits = json.loads(path.read_text())["splits"]
        if not isinstance(splits, list) or not all(isinstance(split, str) for split in splits):
            raise TypeError(f"'splits' is {splits!r}, not a list of names")
    except Exception as err:  # unreadable, not JSON, no "splits": the same fix
        raise ValueError(
            f"Task {name!r}: {path} does not list the splits ({type(err).__name__}: {err}). Fix: write the folder "
            "again with DatasetDict.save_to_disk."
        ) from err
    return splits


def _no_shards(split_dir: Path) -> bool:
    """Whether a saved split has no data files (how ``save_to_disk`` writes a split of 0 rows)."""
    try:
        return json.loads((split_dir / "state.json").read_text()).get("_data_files") == []
    except Exception:  # an unreadable state.json is load_from_disk's to report
        return False


def _empty_split(name: str, split: str) -> ValueError:
    return ValueError(
        f"Task {name!r}: split {split!r} has no images (0 rows). Fix: give every split images of every class."
    )


def _saved_split_keys(name: str, root: Path, found: list[str]) -> dict[str, str]:
    """``{split: key in the DatasetDict}``, with ``validation`` accepted for ``val``."""
    keys = {}
    for split in SPLITS:
        names = _VAL_ALIASES if split == "val" else (split,)
        present = [n for n in names if n in found]
        if len(present) > 1:
            raise ValueError(
                f"Task {name!r}: {root} has both a 'val' and a 'validation' split, so which to use is unclear. Fix: "
                "keep one (e.g. del dataset_dict['validation']) and save_to_disk again."
            )
        if not present:
            fix = (
                "split one off the training split, e.g. parts = dd['train'].train_test_split(test_size=0.1, "
                "stratify_by_column='label', seed=0); dd['train'], dd['val'] = parts['train'], parts['test']"
                if split == "val"
                else f"add a {split!r} split to the DatasetDict"
            )
            raise ValueError(
                f"Task {name!r}: the DatasetDict in {root} has no {split!r} split (found: {_quoted(found) or 'none'})."
                f" Fix: {fix}, and save_to_disk again."
            )
        keys[split] = present[0]
    return keys


def _columns(name: str, split: str, dataset) -> tuple[str, str]:
    """``(image column, label column)`` of one split: by feature type first, by name second."""
    import datasets

    if dataset.num_rows == 0:
        raise _empty_split(name, split)
    features = dataset.features
    image = _pick_column(name, split, features, "image", lambda f: isinstance(f, datasets.Image), _IMAGE_COLUMN_NAMES)
    label = _pick_column(
        name, split, features, "label", lambda f: isinstance(f, datasets.ClassLabel), _LABEL_COLUMN_NAMES
    )
    feature = features[label]
    if not isinstance(feature, datasets.ClassLabel) and not (
        isinstance(feature, datasets.Value) and feature.dtype in _INT_DTYPES
    ):
        raise ValueError(
            f"Task {name!r}: the label column {label!r} of split {split!r} is {feature}, not integer class indices "
            f"(columns: {_describe(features)}). Fix: make it a ClassLabel, e.g. dataset.class_encode_column({label!r})"
            " for class-name strings, and save_to_disk again."
        )
    return image, label


def _pick_column(name: str, split: str, features, what: str, is_kind: Callable, names: tuple[str, ...]) -> str:
    """The one column of a kind (``datasets.Image`` / ``ClassLabel``), else the first of ``names`` present."""
    kind = "Image" if what == "image" else "ClassLabel"
    typed = [column for column, feature in features.items() if is_kind(feature)]
    if len(typed) == 1:
        return typed[0]
    if len(typed) > 1:
        named = [column for column in names if column in typed]
        if named:
            return named[0]
        raise ValueError(
            f"Task {name!r}: split {split!r} has several {kind} columns ({_quoted(typed)}), so which holds the "
            f"{what}s is unclear. Fix: keep one (dataset.remove_columns([...])) or rename it to {names[0]!r}, and "
            "save_to_disk again."
        )
    for column in names:
        if column in features:
            return column
    raise ValueError(
        f"Task {name!r}: split {split!r} has no {what} column: no column is a datasets.{kind} and none is named "
        f"{' or '.join(repr(n) for n in names)} (columns: {_describe(features)}). Fix: cast the {what} column to "
        f"datasets.{kind}(...) (dataset.cast_column(column, datasets.{kind}(...))) or rename it to {names[0]!r}, and "
        "save_to_disk again."
    )


def _describe(features) -> str:
    return ", ".join(f"{column!r}: {feature}" for column, feature in features.items())


def _saved_class_names(name: str, splits: dict, columns: dict[str, tuple[str, str]]) -> list[str]:
    """The ClassLabel names (the same in every split that has them), else ``"0"`` ... ``"max label"``."""
    import datasets

    named = {}
    for split, dataset in splits.items():
        feature = dataset.features[columns[split][1]]
        if isinstance(feature, datasets.ClassLabel):
            named[split] = list(feature.names)
    if named:
        first, names = next(iter(named.items()))
        for split, other in named.items():
            if other != names:
                raise ValueError(
                    f"Task {name!r}: the class names differ between splits: {first!r} has {names}, {split!r} has "
                    f"{other}. Fix: cast every split's label column to the same datasets.ClassLabel(names=[...]) "
                    "(mapping the labels to it), and save_to_disk again."
                )
        return names
    top = max(int(np.max(_label_array(splits[split], columns[split][1]), initial=-1)) for split in splits)
    return [str(i) for i in range(top + 1)]


def _label_array(dataset, column: str) -> np.ndarray:
    """A label column as int64, read from Arrow without decoding any image; -1 where a label is missing."""
    array = dataset.select_columns([column]).with_format("arrow")[:].column(column)
    return np.asarray(array.fill_null(-1).to_numpy(), dtype=np.int64)


def _saved_labels(name: str, split: str, dataset, column: str, num_classes: int) -> np.ndarray:
    labels = _label_array(dataset, column)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"Task {name!r}: split {split!r}, column {column!r}: {len(bad)} label(s) outside 0..{num_classes - 1} "
            f"(there are {num_classes} class names), first at row {row}: {labels[row]} (-1 is a missing label). "
            "Fix: drop unlabelled rows, or relabel to 0..K-1 and give the label column the K class names "
            "(dataset.cast_column(column, datasets.ClassLabel(names=[...]))), and save_to_disk again."
        )
    return labels


def _undecoded(name: str, split: str, dataset, column: str):
    """The image column alone, as undecoded ``{"bytes", "path"}`` values, so that decoding (and its errors, with the
    row index) is ours."""
    import datasets

    feature = dataset.features[column]
    try:
        return dataset.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    except Exception as err:  # the cast fails in many ways; the column and its feature are what matter
        raise ValueError(
            f"Task {name!r}: the image column {column!r} of split {split!r} is {feature}, which does not hold images "
            f"({type(err).__name__}: {err}). Fix: store encoded images (png/jpg bytes) or file paths in it, cast to "
            "datasets.Image(), and save_to_disk again."
        ) from err


def _row_sources(root: Path, split: str, column: str, images, rows: np.ndarray) -> Iterator[_Source]:
    """The kept rows' encoded images (or paths, for images saved as references), in row order."""
    for start in range(0, len(rows), _BATCH):
        chunk = rows[start : start + _BATCH]
        for row, value in zip(chunk, images[chunk.tolist()][column]):
            where = f"split {split!r}, row {int(row)} (column {column!r})"
            if value is None or (value.get("bytes") is None and not value.get("path")):
                yield where, None
            elif value.get("bytes") is not None:
                yield where, value["bytes"]
            else:
                path = Path(value["path"])
                yield f"{where}, file {path}", path if path.is_absolute() or path.exists() else root / path


# --- shared ---------------------------------------------------------------------------------------------------------


def _balanced_first(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` items, round-robin over the classes in label order, each class's first items
    first; in their original order. Every item when ``limit`` is ``None`` or not smaller."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rank = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        rank[where] = np.arange(len(where))
    order = np.lexsort((labels, rank))  # by rank within the class, then by class
    return np.sort(order[:limit])


def _decode_plan(plan: _Plan, image_size: int, progress: bool) -> OwnTask:
    """Decode every kept image of every split of a checked task."""
    total = sum(len(split.labels) for split in plan.splits.values())
    images = {}
    with tqdm(total=total, desc=f"{plan.name}: reading images", disable=not progress, leave=False) as bar:
        for name, split in plan.splits.items():
            out = torch.empty((len(split.labels), 3, image_size, image_size), dtype=torch.uint8)
            for i, (where, data) in enumerate(split.sources()):
                out[i] = torch.from_numpy(_decode(plan.name, where, data, image_size, split.mode)).permute(2, 0, 1)
                bar.update(1)
            images[name] = out
    labels = {name: torch.from_numpy(split.labels.astype(np.int64)) for name, split in plan.splits.items()}
    return OwnTask(plan.name, list(plan.class_names), images, labels, plan.source)


def _decode(
    task: str, where: str, data: bytes | str | Path | None, image_size: int, mode: str | None = None
) -> np.ndarray:
    """One image as ``uint8 [S, S, 3]``: EXIF orientation applied (as ``datasets`` does, so that both layouts give
    the same pixels), converted to RGB, resized with Pillow's antialiased bilinear filter."""
    if data is None:
        raise ValueError(
            f"Task {task!r}: {where} has no image (it is empty). Fix: drop the row (dataset.filter) or give it an "
            "image, and save_to_disk again."
        )
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if mode and image.mode != mode:
                image = image.convert(mode)
            image = _rgb(image).resize((image_size, image_size), Image.Resampling.BILINEAR)
            return np.array(image, dtype=np.uint8)  # a writable copy, as torch wants
    except Exception as err:  # Pillow raises many types for a bad file; all mean the same to the user
        raise ValueError(
            f"Task {task!r}: Pillow cannot read the image {where} ({type(err).__name__}: {err}). Fix: replace it "
            "with a readable copy (e.g. re-save it as png) or delete it."
        ) from err


def _rgb(image: Image.Image) -> Image.Image:
    """Exactly 3 channels: grey, palette, RGBA (alpha dropped) and CMYK converted; 16-bit grey scaled to 8 bits
    (a plain conversion would clip it to white)."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I"):
        grey = np.clip(np.asarray(image, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")  # 2-D uint8: mode L
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # converting straight to RGB warns about the transparency
    return image.convert("RGB")
