"""Where artifacts live and how they are written: atomically, and only as safetensors or JSON.

Layout under an output root (``artifacts/<profile>`` by default)::

    heads/<task>/head.safetensors, metrics.json                 head-only baseline
    adapters/<task>/seed-<k>/adapter_config.json                PEFT format: PeftModel.from_pretrained(backbone, path)
                            /adapter_model.safetensors
                            /head.safetensors, metrics.json      the adapter's own head, accuracy, time, seed, versions
    results/singles.csv, merges.csv, *.png, scores/               tables, figures, cached merge and adapter results
    features/<task>/<split>-<images>.safetensors                the frozen backbone's features of a split

Every directory is assembled in a temporary sibling and renamed into place, so a run killed mid-way leaves no
half-written artifact and the next run simply redoes it. What a killed save does leave behind (its temporary
``.<name>.<pid>.<random>.tmp`` sibling, or a ``.<name>.old`` copy) is removed by
:func:`~lora_merge_utils.safe_io.remove_debris` when a study opens the folder or starts training into it, in the
folders above alone (:data:`~lora_merge_utils.safe_io.STUDY_FOLDERS`): anything else a user keeps in the same folder is
never touched, whatever its name.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
from pathlib import Path

import peft
import timm
import torch
from peft import PeftModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .backbone import backbone_identity, file_sha256
from .integrity import (
    KEY_NAME,
    SEAL_FIELD,
    bytes_digest,
    describe_missing_key,
    find_key,
    folder_key,
    key_for,
    seal_holds,
    sealed,
)
from .profiles import Profile, get_profile
from .safe_io import (  # crash-safe writing has its own module; these names stay importable from here
    atomic_dir,
    recover_interrupted,
    remove_debris,
    write_atomic,
)

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "head.safetensors", "metrics.json")
HEAD_FILES = ("head.safetensors", "metrics.json")
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_config.json", "head.safetensors", "heads.safetensors")
"""The files whose sha256 ``metrics.json`` records when they are saved, and checks when they are reused: the weights,
and the adapter's configuration (its ``lora_alpha`` scales every update)."""


def weight_checksums(directory: Path) -> dict[str, str]:
    """``{file name: sha256}`` of the weight files present in ``directory``."""
    return {name: file_sha256(Path(directory) / name) for name in WEIGHT_FILES if (Path(directory) / name).is_file()}


TRUST_ENV = "LORA_BOOK_TRUST_UNCHECKED"
"""Set to ``1`` to use saved folders whose ``metrics.json`` records no checksum for some of their files (saved by an
older version of this library): they are used as they are, unverified."""


def verify_checksums(directory: Path, metrics: dict, key: bytes | None = None) -> None:
    """Refuse a saved folder that is not what was saved: a ``metrics.json`` whose seal
    (:mod:`~lora_merge_utils.integrity`) does not hold (edited after it was saved, or copied in from another artifacts
    folder), or weight files that differ from the checksums it records (edited, replaced, or corrupted on disk). A
    folder whose ``metrics.json`` has no seal or records no checksum for one of its weight files (saved by an older
    version, or an edit that deleted them: that must not switch the check off), or whose artifacts folder's key
    cannot be found, is refused too, unless ``$LORA_BOOK_TRUST_UNCHECKED=1`` says to use it unverified. ``key``: the
    artifacts folder's key (a study passes its own), else the nearest ``.seal-key`` above ``directory``."""
    directory = Path(directory)
    trust = os.environ.get(TRUST_ENV) == "1"
    fix = f"Delete {directory} to train it again, or set {TRUST_ENV}=1 to use it unverified."
    if key is None and (SEAL_FIELD in metrics or not trust):
        key = find_key(directory)
    if SEAL_FIELD not in metrics:
        if not trust:
            raise ValueError(
                f"{directory / 'metrics.json'} has no seal, so what it says cannot be verified (an older save, or an "
                f"edited metrics.json). {fix}"
            )
    elif key is None:
        if not trust:
            raise ValueError(f"{directory / 'metrics.json'}: {describe_missing_key(directory / 'metrics.json')}. {fix}")
    elif not seal_holds(metrics, key):
        raise ValueError(
            f"{directory / 'metrics.json'} is not the record that was saved there: its seal does not hold, so it was "
            f"edited after it was saved, or copied in from another artifacts folder (each folder seals with its own "
            f"key, the hidden file {KEY_NAME} in its root: a folder copied without it cannot be checked; copy the "
            f"original {KEY_NAME} over this folder's). Restore it, or delete {directory} to train it again."
        )
    recorded = metrics.get("sha256")
    present = [name for name in WEIGHT_FILES if (directory / name).is_file()]
    unchecked = present if not isinstance(recorded, dict) else [n for n in present if n not in recorded]
    if unchecked and not trust:
        raise ValueError(
            f"{directory / 'metrics.json'} records no checksum for {', '.join(unchecked)}, so what is there cannot "
            f"be verified (an older save, or an edited metrics.json). {fix}"
        )
    for name, expected in (recorded if isinstance(recorded, dict) else {}).items():
        path = directory / name
        if not path.is_file() or file_sha256(path) != expected:
            raise ValueError(
                f"{path} is not the file that was saved there (its sha256 differs from the "
                f"one in metrics.json): it was edited, replaced or corrupted. Restore it, or delete "
                f"{directory} to train it again."
            )


def write_metrics(directory: Path, metrics: dict, key: bytes | None = None) -> dict:
    """Write ``metrics.json`` into ``directory`` with the sha256 of its weight files and sealed with ``key`` (by
    default the key of the artifacts folder above it, made in ``directory``'s parent if there is none); returns what
    was written."""
    directory = Path(directory)
    key = key_for(directory.parent, key)
    record = sealed({**metrics, "sha256": weight_checksums(directory)}, key)
    write_json(directory / "metrics.json", record)
    return record


METRICS_FIELDS = {"accuracy": "a number from 0 to 1", "backbone": "the backbone's identity (text)"}
"""What every saved folder's ``metrics.json`` must hold for the tables that read it."""


def check_metrics(directory: Path, metrics: dict) -> None:
    """Refuse a ``metrics.json`` missing a field the tables read, or holding one of the wrong type (one line naming
    the file, the field and the fix), rather than failing later with a traceback."""
    accuracy = metrics.get("accuracy")
    wrong = [
        name
        for name, ok in (
            ("accuracy", isinstance(accuracy, int | float) and not isinstance(accuracy, bool) and 0 <= accuracy <= 1),
            ("backbone", isinstance(metrics.get("backbone"), str)),
        )
        if not ok
    ]
    if wrong:
        name = wrong[0]
        raise ValueError(
            f"{Path(directory) / 'metrics.json'}: {name} must be {METRICS_FIELDS[name]}, got "
            f"{metrics.get(name, 'nothing')!r}. Delete {directory} to train it again."
        )


def check_head_classes(directory: Path, head: nn.Linear, classes: int) -> None:
    """Refuse a saved head whose number of outputs is not the task's number of classes (what a checksum cannot
    tell: the file may be whole and still belong to another task)."""
    if head.out_features != classes:
        raise ValueError(
            f"{directory / 'head.safetensors'} has {head.out_features} outputs but the task has {classes} classes: "
            f"it was saved for another task. Delete {directory} to train it again."
        )


def check_reuse(directory: Path, metrics: dict, expected: dict, kind: str, key: bytes | None = None) -> None:
    """Refuse a saved head or adapter made for something else (another task, backbone, seed or LoRA setting), or
    whose weights changed since they were saved: reusing it would report wrong numbers, and training over it would
    destroy someone's work. Fields a folder does not record (older saves) are not compared. ``key``: as
    :func:`verify_checksums` takes it."""
    verify_checksums(directory, metrics, key)
    check_metrics(directory, metrics)
    differ = [
        line
        for key, value in expected.items()
        if key in metrics and metrics[key] != value
        for line in _differences(key, metrics[key], value)
    ]
    if differ:
        raise ValueError(
            f"{directory} holds a {kind} saved for {'; '.join(differ)}"
            + (
                " (made_with.code: the library's training code, which another version of it changed)"
                if any(d.startswith("made_with.code ") for d in differ)
                else ""
            )
            + f". It is not replaced silently: retrain it explicitly (retrain=True; the CLI's --retrain), delete "
            f"{directory} (or the whole artifacts folder) to train again, or use another artifacts folder."
        )


def _differences(key: str, saved, wanted) -> list[str]:
    """``key saved (this study: wanted)``, for each differing field of two records (``made_with.data.train_per_class
    300 (this study: 150)``), so that a message names what differs rather than printing both records whole."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        return [
            line
            for field in dict.fromkeys([*wanted, *saved])
            if saved.get(field) != wanted.get(field)
            for line in _differences(f"{key}.{field}", saved.get(field), wanted.get(field))
        ]
    return [f"{key} {saved!r} (this study: {wanted!r})"]


ARTIFACTS_ENV = "LORA_BOOK_ARTIFACTS"


def artifacts_base() -> Path:
    """``$LORA_BOOK_ARTIFACTS`` (e.g. a Google Drive folder, so every chapter finds what earlier ones trained), else
    ``artifacts`` under the current directory."""
    return Path(os.environ.get(ARTIFACTS_ENV, "artifacts")).expanduser()


def default_root(profile: Profile | str | None = None) -> Path:
    """``<artifacts base>/<profile label>``: ``artifacts/tiny``, ``artifacts/full``, or ``artifacts/full-<hash>`` for a
    profile changed by ``$LORA_BOOK_OVERRIDES`` (see :func:`artifacts_base`)."""
    return artifacts_base() / get_profile(profile).label


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file() and not f.is_symlink())


def _human(size: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def storage_report(base: Path | str | None = None) -> str:
    """One line on what an artifacts folder (default :func:`artifacts_base`, e.g. the book's Google Drive folder)
    holds and the space each part takes: the datasets' samples and each profile's artifacts.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     (Path(folder) / "tiny").mkdir()
        ...     _ = (Path(folder) / "tiny" / "head.safetensors").write_bytes(bytes(2500))
        ...     print(storage_report(folder).replace(folder, "FOLDER"))
        FOLDER holds 2.5 kB: tiny 2.5 kB
    """
    base = Path(base) if base is not None else artifacts_base()
    if not base.is_dir():
        return f"{base} holds nothing yet"
    parts = {entry.name: _folder_bytes(entry) for entry in sorted(base.iterdir()) if entry.is_dir()}
    total = _folder_bytes(base)
    detail = ", ".join(f"{name} {_human(size)}" for name, size in parts.items())
    return f"{base} holds {_human(total)}" + (f": {detail}" if detail else "")


def library_versions() -> dict[str, str]:
    """Versions recorded in every metrics file."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "peft": peft.__version__,
    }


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def read_json(path: Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete its directory and rerun to rebuild it.") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path} holds a JSON {type(data).__name__}, not an object; delete its directory and rerun to rebuild it."
        )
    return data


def save_head(head: nn.Linear, path: Path) -> None:
    """Save a linear head's weights as safetensors, atomically (read back with :func:`load_head`)."""
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, str(tmp)))


def load_head(path: Path) -> nn.Linear:
    """A linear head from ``head.safetensors`` (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; retrain this task (delete its directory and rerun).")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is corrupt ({error}); delete its directory and rerun to retrain it.") from None
    if set(state) != {"weight", "bias"}:
        raise ValueError(f"{path} is not a linear head (keys {sorted(state)}); delete its directory and rerun.")
    out_features, in_features = state["weight"].shape
    head = nn.Linear(in_features, out_features)
    head.load_state_dict(state)
    return head.eval().requires_grad_(False)


class ArtifactStore:
    """Paths and completeness checks for one output root."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def key(self) -> bytes:
        """This root's seal key (:func:`~lora_merge_utils.integrity.folder_key`), made the first time it is needed;
        never made anew in a root that already holds sealed records (a folder copied without its key): those could
        then never be checked, so that is refused, unless ``$LORA_BOOK_TRUST_UNCHECKED=1``."""
        if not (self.root / KEY_NAME).exists() and os.environ.get(TRUST_ENV) != "1":
            sealed_record = next(self._sealed_records(), None)
            if sealed_record is not None:
                raise ValueError(
                    f"{self.root} holds records sealed with a key ({sealed_record}) but not the key itself, "
                    f"{self.root / KEY_NAME}: it was copied without that hidden file. Copy {KEY_NAME} from the folder "
                    f"it came from, or set {TRUST_ENV}=1 to use its records unverified (a new key is then made)."
                )
        return folder_key(self.root)

    def _sealed_records(self):
        for pattern in ("heads/*/metrics.json", "adapters/*/*/metrics.json", "joint/*/metrics.json"):
            for path in self.root.glob(pattern):
                if any(part.startswith(".") for part in path.relative_to(self.root).parts[:-1]):
                    continue  # a save in progress (or its debris), not a saved record
                try:
                    if SEAL_FIELD in json.loads(path.read_text()):
                        yield path
                except (OSError, ValueError):
                    continue

    def adapter_dir(self, task: str, seed: int = 0) -> Path:
        """``adapters/<task>/seed-<k>``: one PEFT adapter directory per training seed index."""
        return self.root / "adapters" / task / f"seed-{seed}"

    def head_dir(self, task: str) -> Path:
        return self.root / "heads" / task

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def has_adapter(self, task: str, seed: int = 0) -> bool:
        recover_interrupted(self.adapter_dir(task, seed))  # only under the training lock (see the function)
        return all((self.adapter_dir(task, seed) / f).is_file() for f in ADAPTER_FILES)

    def interrupted(self, task: str, seed: int = 0) -> bool:
        """Whether a save of this adapter stopped between its two renames (its previous version lies aside)."""
        final = self.adapter_dir(task, seed)
        return final.with_name(f".{final.name}.old").is_dir() and not final.exists()

    def remove_debris(self) -> list[Path]:
        """Remove the temporary files and folders that killed saves left under this root (see
        :func:`~lora_merge_utils.safe_io.remove_debris`; ``.old`` copies are handled under
        :func:`~lora_merge_utils.safe_io.training_lock`)."""
        return remove_debris(self.root, old_copies=False)

    def has_head(self, task: str) -> bool:
        return all((self.head_dir(task) / f).is_file() for f in HEAD_FILES)

    def features_path(self, task: str, split: str, images: int) -> Path:
        """``features/<task>/<split>-<images>.safetensors``: the frozen backbone's features of ``images`` images of a
        split (:func:`save_features`)."""
        return self.root / "features" / task / f"{split}-{images}.safetensors"


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _features_record(identity: dict[str, str], features: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"identity": dict(identity), "tensors": bytes_digest(_tensor_bytes(features), _tensor_bytes(labels))}


def save_features(
    path: Path, features: torch.Tensor, labels: torch.Tensor, identity: dict[str, str], key: bytes | None = None
) -> None:
    """Save a split's frozen-backbone features and labels as safetensors, atomically, with ``identity`` (what they were
    computed from: backbone, data, device, code) and a seal of it and of the tensors (``key``: by default the key of
    the artifacts folder above) in the file's metadata; :func:`load_features` reads them back only for the same
    identity and an intact seal."""
    path = Path(path)
    key = key_for(path.parent, key)
    tensors = {"features": features.detach().cpu().contiguous(), "labels": labels.detach().cpu().contiguous()}
    # one metadata entry, its keys sorted: safetensors writes several entries in an order that varies between runs
    record = sealed(_features_record(identity, tensors["features"], tensors["labels"]), key)
    metadata = {"identity": json.dumps(record, sort_keys=True)}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_features(
    path: Path, identity: dict[str, str], key: bytes | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(features, labels)`` saved by :func:`save_features` for this ``identity``, or ``None`` (then they are computed
    again and saved over) when there are none, they were computed from something else, the file is unreadable, or its
    seal does not hold (edited, copied from another artifacts folder, or saved by an older version)."""
    path = Path(path)
    if not path.is_file():
        return None
    key = key if key is not None else find_key(path.parent)
    try:
        with safe_open(str(path), framework="pt") as saved:
            stored = json.loads((saved.metadata() or {}).get("identity", "null"))
            if not isinstance(stored, dict) or stored.get("identity") != dict(identity):
                return None
            if set(saved.keys()) != {"features", "labels"}:
                return None
            features, labels = saved.get_tensor("features"), saved.get_tensor("labels")
    except (SafetensorError, OSError, ValueError):
        return None
    if features.ndim != 2 or labels.shape != (len(features),):
        return None
    if not seal_holds({**_features_record(identity, features, labels), SEAL_FIELD: stored.get(SEAL_FIELD)}, key):
        return None
    return features, labels


def save_adapter(peft_model, head: nn.Linear, metrics: dict, directory: Path, key: bytes | None = None) -> Path:
    """Save an adapter in PEFT format plus its head and metrics (sealed with ``key``, by default the key of the
    artifacts folder it is saved in: :func:`write_metrics`), atomically, and return the directory."""
    directory = Path(directory)
    key = key_for(directory.parent, key)
    with atomic_dir(directory) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        head_state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        save_file(head_state, str(tmp / "head.safetensors"))
        write_metrics(tmp, metrics, key)
    return directory


def save_joint_adapter(
    peft_model, heads: dict[str, nn.Linear], metrics: dict, directory: Path, key: bytes | None = None
) -> Path:
    """Save an adapter shared by several tasks (PEFT format) with every task's head in ``heads.safetensors`` and
    its metrics (sealed as :func:`save_adapter` seals them), atomically, and return the directory."""
    directory = Path(directory)
    key = key_for(directory.parent, key)
    with atomic_dir(directory) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        state = {
            f"{task}.{k}": v.detach().cpu().contiguous() for task, h in heads.items() for k, v in h.state_dict().items()
        }
        save_file(state, str(tmp / "heads.safetensors"))
        write_metrics(tmp, {**metrics, "tasks": list(heads)}, key)
    return directory


def load_joint_adapter(
    backbone: nn.Module, directory: Path, key: bytes | None = None
) -> tuple[PeftModel, dict[str, nn.Linear], dict]:
    """``(peft_model, heads, metrics)`` of an adapter saved by :func:`save_joint_adapter`, after checking that every
    file is there and is the file that was saved, and that it was trained on ``backbone``."""
    directory = Path(directory)
    missing = [
        f
        for f in ("adapter_config.json", "adapter_model.safetensors", "heads.safetensors", "metrics.json")
        if not (directory / f).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{directory} is incomplete: missing {', '.join(missing)}. Delete it to train it again."
        )
    metrics = read_json(directory / "metrics.json")
    verify_checksums(directory, metrics, key)
    if metrics.get("backbone") != backbone_identity(backbone):
        raise ValueError(f"{directory} was trained on another backbone ({metrics.get('backbone')!r}); delete it.")
    state = load_file(str(directory / "heads.safetensors"))
    heads = {}
    for task in metrics["tasks"]:
        weight, bias = state[f"{task}.weight"], state[f"{task}.bias"]
        head = nn.Linear(weight.shape[1], weight.shape[0])
        head.load_state_dict({"weight": weight, "bias": bias})
        heads[task] = head.eval().requires_grad_(False)
    model = PeftModel.from_pretrained(copy.deepcopy(backbone), str(directory)).eval()
    return model, heads, metrics


def _train_command(directory: Path) -> str:
    """The command that trains the adapter saved at ``directory`` (``<root>/adapters/<task>/seed-<k>``)."""
    match = re.fullmatch(r"seed-(\d+)", directory.name)
    if match and directory.parent.parent.name == "adapters":
        root = directory.parent.parent.parent
        return (
            f"python -m lora_merge_utils train-adapter --task {directory.parent.name} --seed {match.group(1)} "
            f"--out {root}"
        )
    return (
        "python -m lora_merge_utils train-adapter --task <task> --seed <k> (adapters live in adapters/<task>/seed-<k>)"
    )


def check_adapter_dir(directory: Path, key: bytes | None = None) -> dict:
    """Validate an adapter directory and return its metrics; a clear error names what is missing or corrupt.
    ``key``: as :func:`verify_checksums` takes it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Adapter directory {directory} does not exist. Train it first (`{_train_command(directory)}`), or check "
            "the path."
        )
    missing = [f for f in ADAPTER_FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Adapter directory {directory} is incomplete: missing {', '.join(missing)}. Delete it and retrain "
            f"(`{_train_command(directory)}`)."
        )
    config = read_json(directory / "adapter_config.json")
    try:
        with safe_open(str(directory / "adapter_model.safetensors"), framework="pt") as handle:
            if not list(handle.keys()):
                raise ValueError("no tensors")
            ranks = {handle.get_slice(k).get_shape()[0] for k in handle.keys() if "lora_A" in k}
    except (SafetensorError, ValueError, OSError):
        raise ValueError(
            f"{directory / 'adapter_model.safetensors'} is corrupt. Delete {directory} and retrain the adapter."
        ) from None
    if not config.get("rank_pattern") and ranks and ranks != {config.get("r")}:
        raise ValueError(
            f"{directory / 'adapter_model.safetensors'} holds LoRA factors of rank {sorted(ranks)} but its "
            f"adapter_config.json says r={config.get('r')!r}: the two files do not belong together. Delete "
            f"{directory} and retrain the adapter (`{_train_command(directory)}`)."
        )
    if config.get("peft_type") != "LORA":
        raise ValueError(
            f"{directory / 'adapter_config.json'} says peft_type {config.get('peft_type')!r}: only LoRA adapters "
            f'("LORA") are merged here. Delete {directory} and retrain the adapter (`{_train_command(directory)}`).'
        )
    metrics = read_json(directory / "metrics.json")
    verify_checksums(directory, metrics, key)
    check_metrics(directory, metrics)
    check_config_matches(directory, config, metrics)
    return metrics


def check_config_matches(directory: Path, config: dict, metrics: dict) -> None:
    """Refuse an ``adapter_config.json`` that says otherwise than its ``metrics.json`` about the LoRA it holds (rank,
    ``lora_alpha``, which modules): the two files state the same fact, and the config is what PEFT obeys."""
    lora = metrics.get("lora")
    if not isinstance(lora, dict):
        return  # an older save, or an adapter trained outside a study: nothing recorded to compare
    targets = config.get("target_modules")
    said = {
        "rank": config.get("r"),
        "alpha": config.get("lora_alpha"),
        "target_modules": sorted(targets) if isinstance(targets, list | set) else targets,
    }
    recorded = {**lora, "target_modules": _sorted_if_list(lora.get("target_modules"))}
    differ = [
        f"{name} {said[name]!r} (metrics.json: {recorded[name]!r})"
        for name in said
        if recorded.get(name, said[name]) != said[name]
    ]
    if differ:
        raise ValueError(
            f"{directory / 'adapter_config.json'} says {'; '.join(differ)}: the two files do not belong together "
            f"(an edited config). Restore it, or delete {directory} and retrain the adapter "
            f"(`{_train_command(directory)}`)."
        )


def _sorted_if_list(value):
    return sorted(value) if isinstance(value, list) else value


def check_factor_shapes(directory: Path, backbone: nn.Module) -> None:
    """Refuse LoRA factors whose shapes do not fit the backbone's layers (``lora_A`` is ``[r, in]``, ``lora_B``
    ``[out, r]``), before PEFT would fail deep inside loading them; ``directory`` holds a checked adapter."""
    modules = dict(backbone.named_modules())
    with safe_open(str(Path(directory) / "adapter_model.safetensors"), framework="pt") as handle:
        for name in handle.keys():
            match = re.fullmatch(
                r"(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.[^.]+)?\.weight", name
            )
            if match is None:
                continue
            layer = modules.get(match["module"])
            shape = tuple(handle.get_slice(name).get_shape())
            fits = (
                isinstance(layer, nn.Linear)
                and len(shape) == 2
                and (shape[1] == layer.in_features if match["factor"] == "A" else shape[0] == layer.out_features)
            )
            if not fits:
                wanted = (
                    "no such linear layer in this backbone"
                    if not isinstance(layer, nn.Linear)
                    else f"[r, {layer.in_features}]"
                    if match["factor"] == "A"
                    else f"[{layer.out_features}, r]"
                )
                raise ValueError(
                    f"{Path(directory) / 'adapter_model.safetensors'}: {name} has shape {list(shape)}, but this "
                    f"backbone wants {wanted}: the adapter does not belong to this backbone or was edited. Delete "
                    f"{directory} and retrain the adapter (`{_train_command(Path(directory))}`)."
                )


def load_adapters(backbone: nn.Module, adapter_dirs: dict[str, Path | str], key: bytes | None = None):
    """Load several saved adapters onto one copy of ``backbone`` as a ``PeftModel`` with adapters named by task.

    Each directory is validated first (files present, not corrupt, trained on this very backbone), so a mistake
    surfaces as a clear ``FileNotFoundError``/``ValueError`` instead of an error from deep inside PEFT. The backbone
    passed in is not modified. Returns ``(peft_model, heads)`` where ``heads`` maps task name to its linear head.
    """
    if not adapter_dirs:
        raise ValueError("Give at least one adapter directory to load.")
    identity = backbone_identity(backbone)
    model = None
    heads: dict[str, nn.Linear] = {}
    for name, directory in adapter_dirs.items():
        directory = Path(directory)
        metrics = check_adapter_dir(directory, key)
        trained_on = metrics.get("backbone")
        if trained_on != identity:
            raise ValueError(
                f"Adapter {name!r} in {directory} was trained on backbone {trained_on!r}, but this backbone is "
                f"{identity!r}. Adapters can only be merged on the backbone they were trained on: load the matching "
                "backbone, or retrain the adapter on this one."
            )
        check_factor_shapes(directory, backbone)
        if model is None:
            model = PeftModel.from_pretrained(copy.deepcopy(backbone), str(directory), adapter_name=name)
        else:
            model.load_adapter(str(directory), adapter_name=name)
        heads[name] = load_head(directory / "head.safetensors")
    model.eval()
    return model, heads
