"""Crash-safe files and folders: written beside their place and renamed into it, so a run killed at any moment leaves
either the old version or the new one, never half of one; what a killed save leaves behind is recognised and removed;
and a lock keeps two runs from training into one folder.

Nothing here knows what the files hold (that is :mod:`lora_merge_utils.artifacts`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


STUDY_FOLDERS = ("adapters", "heads", "features", "joint", "results", "verdicts")
"""The folders a study writes under its root (:class:`~lora_merge_utils.artifacts.ArtifactStore`,
:mod:`lora_merge_utils.course.verdicts`): the only places debris is looked for there, so that nothing of a user's in
the same folder (their notes, a ``.old`` folder of their own) is ever touched."""


def check_confined(root: Path | str, folders: tuple[str, ...] = STUDY_FOLDERS) -> None:
    """Refuse a study folder whose own folders (``root``'s :data:`STUDY_FOLDERS` and the folders directly in them)
    are symbolic links: a run writes only under the folder it was given, and a ``results`` that links elsewhere
    would get its tables. ``root`` itself may be a link: that is the folder the user named."""
    root = Path(root)
    for name in folders:
        top = root / name
        inner = []
        if top.is_dir() and not top.is_symlink():
            try:
                inner = [Path(entry.path) for entry in os.scandir(top) if entry.is_symlink()]
            except OSError:
                inner = []
        for path in ([top] if top.is_symlink() else []) + inner:
            raise ValueError(
                f"{path} is a symbolic link (to {os.path.realpath(path)}): a run writes only inside the folder it "
                f"was given, never through a link out of it. Replace the link with a real folder, or give that "
                "folder as --out."
            )


def remove_debris(
    root: Path | str,
    stale_after: float = STALE_SECONDS,
    old_copies: bool = True,
    folders: tuple[str, ...] | None = STUDY_FOLDERS,
) -> list[Path]:
    """Remove what saves killed mid-way left in ``root``'s ``folders`` (default: :data:`STUDY_FOLDERS`, what a study
    writes; ``None``: all of ``root``, for a folder that is the program's alone, like the data samples' cache), and
    return what was removed.

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
    tops = [root] if folders is None else [root / name for name in folders]
    for top in tops:
        if top.is_symlink() or not top.is_dir():
            continue  # a link out of the folder is not ours to clean
        for directory, subfolders, files in os.walk(top):
            for name in [*subfolders, *files]:
                path = Path(directory) / name
                if _is_debris(path, stale_after):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed.append(path)
                elif (
                    old_copies
                    and name in subfolders
                    and name.startswith(".")
                    and name.endswith(".old")
                    and len(name) > 5
                ):
                    final = path.with_name(name[1 : -len(".old")])
                    if final.exists():
                        shutil.rmtree(path, ignore_errors=True)
                        removed.append(path)
                    else:
                        recover_interrupted(final)
                else:
                    continue
                if name in subfolders:
                    subfolders.remove(name)  # not walked into
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
