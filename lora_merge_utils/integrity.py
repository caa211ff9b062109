"""Seals that an edit cannot forge: every record a run trusts when it reads it back carries an HMAC-SHA256 under a
key that belongs to its artifacts folder.

A plain sha256 beside a record says only that the record is whole: whoever edits the record (``"accuracy": 0.99``,
a ``lora_alpha`` changed, a cached merge rewritten as all correct) can recompute it. A seal can only be made with the
folder's key, a random file (:data:`KEY_NAME`) in the folder's root that no record contains. An edited record, a
record copied in from another artifacts folder, or a record whose seal was deleted is refused (or, for caches,
computed again), with one line that says so.

What it does not do: stop someone who reads the key and recomputes the seal on purpose. The key is an ordinary file
with the folder's permissions, so that a folder copied whole (to Drive, to a colleague) still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

KEY_NAME = ".seal-key"
"""The file in an artifacts folder's root that holds its key (32 random bytes, hex)."""

SEAL_FIELD = "seal"
"""The field of a sealed JSON record that holds its seal."""

SEARCH_LEVELS = 4
"""How many folders above a record its key is looked for (``adapters/<task>/seed-<k>`` is three below the root)."""


def folder_key(root: Path | str) -> bytes:
    """The key of the artifacts folder ``root``: read from ``root/.seal-key``, or made there the first time something
    is sealed in it (whole or not at all, with the umask's permissions; of two processes making it at once, the
    first one's key is the folder's)."""
    path = Path(root) / KEY_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(32) + "\n"
        tmp = path.with_name(f".{KEY_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text(text)
            os.link(tmp, path)  # fails if another process linked its key first; then that key is read below
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links (some network drives): create it exclusively instead
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                pass
            else:
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(text)
        finally:
            tmp.unlink(missing_ok=True)
    key = _read_key(path)
    for _ in range(40):  # made by another process on a file system without hard links: it may be writing it still
        if key is not None or not path.is_file() or path.stat().st_size:
            break
        time.sleep(0.05)
        key = _read_key(path)
    if key is None:
        raise ValueError(
            f"{path} is not this folder's seal key (it must hold 64 hex digits). Restore it, or delete it together "
            "with everything sealed under it (heads, adapters, features, results) to start this folder again."
        )
    return key


def find_key(path: Path | str) -> bytes | None:
    """The key of the artifacts folder a record at ``path`` lives in: the nearest :data:`KEY_NAME` in the record's
    folder or up to :data:`SEARCH_LEVELS` above it; ``None`` when there is none (a folder saved by an older version,
    or moved out of its artifacts folder)."""
    folder = Path(path).absolute()
    for candidate in [folder, *folder.parents][: SEARCH_LEVELS + 1]:
        key_file = candidate / KEY_NAME
        if key_file.is_file():
            key = _read_key(key_file)
            if key is None:
                raise ValueError(
                    f"{key_file} is not a seal key (it must hold 64 hex digits): restore it, or delete it with "
                    "everything sealed under it to start that folder again."
                )
            return key
    return None


def key_for(folder: Path | str, key: bytes | None = None) -> bytes:
    """``key`` if given, else the key of the artifacts folder ``folder`` lies in (:func:`find_key`), made in
    ``folder`` itself (:func:`folder_key`) when there is none: what a save given no key seals with."""
    if key is not None:
        return key
    return find_key(folder) or folder_key(folder)


def seal(record: dict, key: bytes) -> str:
    """The HMAC-SHA256 (hex) of ``record`` without its own :data:`SEAL_FIELD`, written as canonical JSON."""
    body = {k: v for k, v in record.items() if k != SEAL_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def sealed(record: dict, key: bytes) -> dict:
    """``record`` with its seal added."""
    return {**{k: v for k, v in record.items() if k != SEAL_FIELD}, SEAL_FIELD: seal(record, key)}


def seal_holds(record: dict, key: bytes | None) -> bool:
    """Whether ``record`` carries the seal ``key`` makes of it (``False`` without a key or without a seal)."""
    given = record.get(SEAL_FIELD)
    if key is None or not isinstance(given, str):
        return False
    return hmac.compare_digest(given, seal(record, key))


def bytes_digest(*parts: bytes) -> str:
    """A sha256 of several byte strings, each length-prefixed (so that no two splits of the same bytes collide)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def _read_key(path: Path) -> bytes | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        return None
    return bytes.fromhex(text)


def describe_missing_key(path: Path | str) -> str:
    """Why a sealed record at ``path`` cannot be checked when no key is found above it."""
    return (
        f"no {KEY_NAME} was found in {Path(path).parent} or the {SEARCH_LEVELS} folders above it, so it cannot be "
        "checked: keep the folder inside the artifacts folder it was saved in (the key lies in that folder's root)"
    )
