"""Where artifacts live and how they are written: atomically, and only as safetensors or JSON.

Layout under an output root (``artifacts/<profile>`` by default)::

    heads/<task>/head.safetensors, metrics.json                 head-only baseline
    adapters/<task>/seed-<k>/adapter_config.json                PEFT format: PeftModel.from_pretrained(backbone, path)
                            /adapter_model.safetensors
                            /head.safetensors, metrics.json      the adapter's own head, accuracy, time, seed, versions
    results/singles.csv, merges.csv, *.png, scores/               tables, figures, cached merge results

Every directory is assembled in a temporary sibling and renamed into place, so a run killed mid-way leaves no
half-written artifact and the next run simply redoes it. What a killed save does leave behind (its temporary
``.<name>.<pid>.<random>.tmp`` sibling, or a ``.<name>.old`` copy) is removed by :func:`remove_debris` when a study
opens the folder or starts training into it.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import peft
import timm
import torch
from peft import PeftModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .backbone import backbone_identity, file_sha256
from .profiles import Profile, get_profile

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


def verify_checksums(directory: Path, metrics: dict) -> None:
    """Refuse weight files that differ from what was saved (edited, replaced, or corrupted on disk), and a folder
    whose ``metrics.json`` records no checksum for one of its weight files (a deleted ``sha256`` key must not switch
    the check off) unless ``$LORA_BOOK_TRUST_UNCHECKED=1`` says to use it unverified."""
    directory = Path(directory)
    recorded = metrics.get("sha256")
    present = [name for name in WEIGHT_FILES if (directory / name).is_file()]
    unchecked = present if not isinstance(recorded, dict) else [n for n in present if n not in recorded]
    if unchecked and os.environ.get(TRUST_ENV) != "1":
        raise ValueError(
            f"{directory / 'metrics.json'} records no checksum for {', '.join(unchecked)}, so what is there cannot "
            f"be verified (an older save, or an edited metrics.json). Delete {directory} to train it again, or set "
            f"{TRUST_ENV}=1 to use it unverified."
        )
    for name, expected in (recorded if isinstance(recorded, dict) else {}).items():
        path = directory / name
        if not path.is_file() or file_sha256(path) != expected:
            raise ValueError(
                f"{path} is not the file that was saved there (its sha256 differs from the "
                f"one in metrics.json): it was edited, replaced or corrupted. Restore it, or delete "
                f"{directory} to train it again."
            )


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


class FolderBusy(OSError):
    """Another process is training into the same artifacts folder."""


_HELD: dict[Path, tuple[int, int]] = {}  # root -> (file descriptor, depth): the lock is re-entrant in one process


@contextmanager
def training_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/.training.lock`` while training into ``root``, so that two runs pointed at one folder cannot
    both train (each would save over the other's work). The second gets :class:`FolderBusy` at once, naming the
    process that holds the lock. Where ``fcntl`` is missing (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    root = Path(root).resolve()
    if root in _HELD:
        fd, depth = _HELD[root]
        _HELD[root] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _HELD[root]
            _HELD[root] = (fd, depth - 1)
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".training.lock"
    try:  # never through a symbolic link: the lock file is written, and must stay inside the folder
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as error:
        if path.is_symlink():
            raise OSError(
                f"{path} is a symbolic link; the training lock must be a plain file in the output folder. Remove "
                "the link and run again."
            ) from None
        raise error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise FolderBusy(
            f"Another run (process {holder}) is training into {root}; wait for it to finish, or give "
            "this run another output folder."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _HELD[root] = (fd, 1)
    remove_debris(root)  # what earlier, killed runs left half-saved (no other trainer can be mid-save now)
    try:
        yield
    finally:
        if _HELD[root][1] == 1:
            del _HELD[root]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        else:
            _HELD[root] = (fd, _HELD[root][1] - 1)


@contextmanager
def lock_held_by_launch(root: Path) -> Iterator[None]:
    """For the other processes of one ``accelerate launch``: their main process holds ``root``'s training lock for
    all of them, so :func:`training_lock` lets them train into ``root`` (each its own jobs) instead of refusing its
    own launch. Enter it only after the main process has taken the lock; a run launched separately is still
    refused by that lock."""
    root = Path(root).resolve()
    if root in _HELD:  # this process holds the lock itself
        yield
        return
    _HELD[root] = (-1, 1)  # no descriptor of our own: the launch's main process holds the file lock
    try:
        yield
    finally:
        del _HELD[root]


def holds_lock(path: Path) -> bool:
    """Whether this process holds the :func:`training_lock` of a folder that contains ``path``."""
    resolved = Path(path).resolve()
    return any(resolved == root or root in resolved.parents for root in _HELD)


def recover_interrupted(final: Path) -> None:
    """Put back the previous version of a directory when a run was killed between :func:`atomic_dir`'s two renames
    (``final`` moved aside to ``.<name>.old``, the new one not yet in place): that version is whole. Only the holder
    of the folder's :func:`training_lock` does it: for anyone else the two renames may be another run's save in
    progress (putting the old copy back would make that save fail and lose its result)."""
    final = Path(final)
    old = final.with_name(f".{final.name}.old")
    if old.is_dir() and not final.exists() and holds_lock(final):
        os.replace(old, final)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on success replace ``final`` by it, on error delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted(final)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(final), suffix=".tmp", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private to its owner; a saved folder should not be
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tmp_prefix(final: Path) -> str:
    """``.<name>.<pid>.``: the writer's process id in a temporary name tells later runs whether its writer is
    still alive (see :func:`remove_debris`)."""
    return f".{final.name}.{os.getpid()}."


_TMP_WITH_PID = re.compile(r"^\..+\.(?P<pid>\d+)\.[^.]+\.tmp$")
_TMP_ANY = re.compile(r"^\..+\.[^.]+\.tmp$")
STALE_SECONDS = 3600.0
"""Age after which a temporary name without a process id (written by an older version) counts as debris."""


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else, or the platform cannot tell: assume alive
        return True
    return True


def _is_debris(path: Path, stale_after: float) -> bool:
    match = _TMP_WITH_PID.match(path.name)
    if match:
        return not _process_alive(int(match["pid"]))
    if _TMP_ANY.match(path.name):
        try:
            return time.time() - path.lstat().st_mtime > stale_after
        except FileNotFoundError:
            return False
    return False


def remove_debris(root: Path | str, stale_after: float = STALE_SECONDS, old_copies: bool = True) -> list[Path]:
    """Remove what saves killed mid-way left under ``root``, and return what was removed.

    * ``.<name>.<pid>.<random>.tmp`` files and folders of :func:`write_atomic` and :func:`atomic_dir` whose process
      is gone (a writer that is alive, here or in another process, is left alone; older names without a process id
      only once they are ``stale_after`` seconds old). Process ids are those of this machine: a folder shared by
      two machines writing at once is not supported anyway (see :func:`training_lock`).
    * with ``old_copies``, ``.<name>.old``: removed when ``<name>`` is whole beside it, put back as ``<name>`` when
      it is missing (see :func:`recover_interrupted`). Only safe for the holder of :func:`training_lock`: another
      trainer's save could be between its two renames.

    Nothing else is touched: every other file is either whole or was never renamed into place.
    """
    root = Path(root)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for directory, folders, files in os.walk(root):
        for name in [*folders, *files]:
            path = Path(directory) / name
            if _is_debris(path, stale_after):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
            elif old_copies and name in folders and name.startswith(".") and name.endswith(".old") and len(name) > 5:
                final = path.with_name(name[1 : -len(".old")])
                if final.exists():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
                else:
                    recover_interrupted(final)
            else:
                continue
            if name in folders:
                folders.remove(name)  # not walked into
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path``, with the usual permissions (``0o666`` less the
    umask, as ``open`` would give; a temporary file alone would be private to its owner)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
        :func:`remove_debris`; ``.old`` copies are handled under :func:`training_lock`)."""
        return remove_debris(self.root, old_copies=False)

    def has_head(self, task: str) -> bool:
        return all((self.head_dir(task) / f).is_file() for f in HEAD_FILES)


def save_adapter(peft_model, head: nn.Linear, metrics: dict, directory: Path) -> Path:
    """Save an adapter in PEFT format plus its head and metrics, atomically, and return the directory."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        head_state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        save_file(head_state, str(tmp / "head.safetensors"))
        metrics = {**metrics, "sha256": weight_checksums(tmp)}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return directory


def save_joint_adapter(peft_model, heads: dict[str, nn.Linear], metrics: dict, directory: Path) -> Path:
    """Save an adapter shared by several tasks (PEFT format) with every task's head in ``heads.safetensors`` and
    its metrics, atomically, and return the directory."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        state = {
            f"{task}.{k}": v.detach().cpu().contiguous() for task, h in heads.items() for k, v in h.state_dict().items()
        }
        save_file(state, str(tmp / "heads.safetensors"))
        metrics = {**metrics, "tasks": list(heads), "sha256": weight_checksums(tmp)}
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return directory


def load_joint_adapter(backbone: nn.Module, directory: Path) -> tuple[PeftModel, dict[str, nn.Linear], dict]:
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
    if not metrics.get("sha256"):
        raise ValueError(f"{directory / 'metrics.json'} records no checksums; delete {directory} to train it again.")
    verify_checksums(directory, metrics)
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


def check_adapter_dir(directory: Path) -> dict:
    """Validate an adapter directory and return its metrics; a clear error names what is missing or corrupt."""
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
    metrics = read_json(directory / "metrics.json")
    verify_checksums(directory, metrics)
    check_metrics(directory, metrics)
    return metrics


def load_adapters(backbone: nn.Module, adapter_dirs: dict[str, Path | str]):
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
        metrics = check_adapter_dir(directory)
        trained_on = metrics.get("backbone")
        if trained_on != identity:
            raise ValueError(
                f"Adapter {name!r} in {directory} was trained on backbone {trained_on!r}, but this backbone is "
                f"{identity!r}. Adapters can only be merged on the backbone they were trained on: load the matching "
                "backbone, or retrain the adapter on this one."
            )
        if model is None:
            model = PeftModel.from_pretrained(copy.deepcopy(backbone), str(directory), adapter_name=name)
        else:
            model.load_adapter(str(directory), adapter_name=name)
        heads[name] = load_head(directory / "head.safetensors")
    model.eval()
    return model, heads
