"""Reading the original synister's JSON export: ``synapses*.json``, ``skeletons*.json`` and
``hemi_lineages*.json`` (or ``hemilineages*.json``), each a JSON object keyed by id, into record
frames of :mod:`synister.db.base` (plus ``_file`` and ``_at``, the key, for messages)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..nt import UnknownTransmitter, canonical_set
from ..tables import TableError as BadInput
from .records import (
    HEMI_LINEAGE_COLUMNS,
    SKELETON_COLUMNS,
    SYNAPSE_COLUMNS,
    hemi_lineage_name,
)

EXPORT_KINDS = ("synapses", "skeletons", "hemi_lineages")
_EXPORT_PATTERN = re.compile(r"^(synapses|skeletons|hemi_?lineages).*\.json$", re.IGNORECASE)
_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")


def export_kind(path: Path) -> str | None:
    """``synapses``, ``skeletons`` or ``hemi_lineages`` for an export file name, else None."""
    match = _EXPORT_PATTERN.match(path.name)
    if not match:
        return None
    kind = match.group(1).lower()
    return "hemi_lineages" if kind.startswith("hemi") else kind


def _load_json_object(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise BadInput(
            f"{path}: line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
        ) from None
    except UnicodeDecodeError as error:
        raise BadInput(f"{path}: not UTF-8 text ({error.reason})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object keyed by id, found {type(data).__name__}")
    return data


def _json_id(key: str, path: Path, what: str) -> int:
    if not _INTEGER_TEXT.match(str(key).strip()):
        raise BadInput(f"{path}: key {key!r}: a {what} id must be an integer")
    return int(key)


def _json_number(record: dict, name: str, where: str, required: bool) -> float:
    value = record.get(name)
    if value is None:
        if required:
            raise BadInput(f"{where}: field {name!r} is missing")
        return np.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"{where}: field {name!r} must be a number, got {value!r}")
    return float(value)


def _json_optional_id(record: dict, name: str, where: str):
    value = record.get(name)
    if value is None:
        return pd.NA
    if isinstance(value, bool) or not (
        isinstance(value, int)
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and _INTEGER_TEXT.match(value.strip()))
    ):
        raise BadInput(f"{where}: field {name!r} must be an integer id or null, got {value!r}")
    return int(value)


def _json_nt_set(record: dict, name: str, where: str) -> frozenset[str]:
    value = record.get(name)
    if value is not None and not isinstance(value, str | list):
        raise BadInput(f"{where}: field {name!r} must be a list of transmitters or null")
    try:
        return canonical_set(value)
    except UnknownTransmitter as error:
        raise BadInput(f"{where}: field {name!r}: {error}") from None


def _json_text(record: dict, name: str, where: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(f"{where}: field {name!r} must be text or null, got {value!r}")
    return value


def read_export_file(path: Path | str, kind: str | None = None) -> pd.DataFrame:
    """One export file as a record frame of :mod:`synister.db.base` plus ``_file``, ``_at``."""
    path = Path(path)
    kind = kind or export_kind(path)
    if kind not in EXPORT_KINDS:
        raise BadInput(
            f"{path}: cannot tell what the file holds; export files are named synapses*.json, "
            "skeletons*.json or hemi_lineages*.json"
        )
    data = _load_json_object(path)
    rows = []
    id_name = {"synapses": "synapse_id", "skeletons": "skeleton_id"}.get(kind, "hemi_lineage_id")
    for key, record in data.items():
        ident = _json_id(key, path, id_name.removesuffix("_id"))
        where = f"{path}, key {key!r}"
        if not isinstance(record, dict):
            raise BadInput(f"{where}: record must be a JSON object, got {record!r}")
        if kind == "synapses":
            prepost = _json_text(record, "prepost", where)
            if prepost is not None and prepost.strip().lower() not in ("pre", "post"):
                raise BadInput(f"{where}: field 'prepost' must be 'pre' or 'post', not {prepost!r}")
            rows.append(
                (
                    ident,
                    _json_number(record, "z", where, True),
                    _json_number(record, "y", where, True),
                    _json_number(record, "x", where, True),
                    _json_optional_id(record, "skeleton_id", where),
                    _json_text(record, "brain_region", where),
                    prepost.strip().lower() if prepost else None,
                    _json_number(record, "confidence", where, False),
                )
            )
        elif kind == "skeletons":
            rows.append(
                (
                    ident,
                    _json_optional_id(record, "hemi_lineage_id", where),
                    _json_nt_set(record, "nt_known", where),
                )
            )
        else:
            rows.append(
                (
                    ident,
                    hemi_lineage_name(_json_text(record, "hemi_lineage_name", where)),
                    _json_nt_set(record, "nt_guess", where),
                )
            )
    columns = {
        "synapses": list(SYNAPSE_COLUMNS),
        "skeletons": list(SKELETON_COLUMNS),
        "hemi_lineages": list(HEMI_LINEAGE_COLUMNS),
    }[kind]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame[id_name] = frame[id_name].astype("int64")
    for name in ("skeleton_id", "hemi_lineage_id"):
        if name in frame.columns and name != id_name:
            frame[name] = pd.array(frame[name].tolist(), dtype="Int64")
    frame["_file"] = str(path)
    frame["_at"] = "key " + frame[id_name].astype(str)
    return frame
