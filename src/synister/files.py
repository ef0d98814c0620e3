"""Files written whole or not at all, their content hash, and values as JSON.

Every file synister writes that a crash must not leave half-written (checkpoints, model.json,
calibration files, run manifests, parts and shards of prediction runs, configs) goes through
:func:`write_atomic`: the content is written to a hidden temporary file in the same folder,
flushed to disk (``fsync``), then renamed over the target, which POSIX makes atomic; on any
error the temporary file is removed and the old file, if any, stays as it was.
:func:`replace_folder` does the same for a folder (a model bundle, a zarr group).

JSON has one rule for numbers it cannot hold: :func:`jsonable` turns NaN and infinities into
``null`` (and numpy scalars into Python numbers, tuples and sets into lists), so every JSON
file synister writes is standard JSON that any reader parses; values that must be finite (a
temperature, a threshold) are checked where they are made, not here.

This module is the bottom layer: it imports nothing from synister.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "file_sha256",
    "jsonable",
    "remove_temporaries",
    "replace_folder",
    "write_atomic",
    "write_bytes",
    "write_json",
    "write_text",
]


def _temporary(path: Path, kind: str = "tmp") -> Path:
    """A hidden name beside ``path`` that no other process uses (listings of ``*.parquet``,
    ``model_checkpoint_*`` and the like never match it)."""
    return path.with_name(f".{path.name}.{kind}{os.getpid()}")


_TEMPORARY_NAME = re.compile(r"\..+\.(tmp|old)[0-9]+")


def remove_temporaries(folder: str | Path) -> int:
    """Remove what killed writers left in ``folder`` (``kill -9`` runs no cleanup): the hidden
    temporaries of :func:`write_atomic` and :func:`replace_folder`. Call it only where no
    other process writes in ``folder`` now (a run's driver before its workers start).
    Returns how many were removed."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in entries:
        if _TEMPORARY_NAME.fullmatch(entry.name):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
            removed += 1
    return removed


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk; a folder that cannot be opened
    for it (some file systems) is left to the system."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        handle = os.open(path, flags)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(handle)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(handle)


def write_atomic(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Write ``path`` whole or not at all: ``writer(tmp)`` writes the content to a temporary
    file beside it (any library's writer: ``torch.save``, ``pq.write_table``, ...), which is
    then flushed to disk and renamed over ``path``. When ``writer`` fails, the temporary file
    is removed and ``path`` keeps its old content. Returns ``path``."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        writer(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """``data`` into ``path``, atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) into ``path``, atomically (see :func:`write_atomic`)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, content: Any, *, indent: int | None = 1) -> Path:
    """``content`` as JSON (see :func:`jsonable`: NaN and infinities become null) into
    ``path``, atomically, ending with a newline."""
    text = json.dumps(jsonable(content), indent=indent, allow_nan=False)
    return write_text(path, text + "\n")


def replace_folder(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Make folder ``path`` whole or not at all: ``writer(tmp)`` fills a fresh temporary
    folder beside it, which then replaces ``path`` (an existing folder is moved aside first and
    removed after). On an error nothing changes. Returns ``path``."""
    path = Path(path)
    tmp, old = _temporary(path), _temporary(path, "old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        writer(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    _fsync(path.parent)
    return path


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (a file's identity: copies keep it, any edit changes it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def jsonable(value: Any) -> Any:
    """``value`` in plain JSON types: dict keys as strings, tuples and lists as lists, sets as
    sorted lists, numpy scalars and arrays as Python values, NaN, infinities and ``pd.NA`` as
    None, anything else as its ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [jsonable(v) for v in items]
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":
        value = value.tolist()  # numpy scalars and arrays
        if isinstance(value, list):
            return jsonable(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if type(value).__name__ == "NAType":  # pandas.NA, without importing pandas
        return None
    return str(value)
