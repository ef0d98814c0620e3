"""Checking and normalising the record frames of :mod:`synister.db.base`, shared by all backends.

Input frames are checked once here so that every backend stores the same thing and reports bad
input the same way (naming the table, field and id); output frames get their documented dtypes
here so that every backend returns the same thing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..nt import UnknownTransmitter, canonical_set, is_unknown_label, set_key
from .base import SPLIT_PARTS, DatabaseError, DuplicateIdError

SYNAPSE_COLUMNS = (
    "synapse_id",
    "z",
    "y",
    "x",
    "skeleton_id",
    "brain_region",
    "prepost",
    "confidence",
)
SKELETON_COLUMNS = ("skeleton_id", "hemi_lineage_id", "nt_known")
HEMI_LINEAGE_COLUMNS = ("hemi_lineage_id", "hemi_lineage_name", "nt_guess")
PREPOST_VALUES = ("pre", "post")

#: Hemilineage names that mean "not known" (matched whole, case-insensitive): the original
#: database's NA, NONE, NEW<n>, UNKNOWN<n> with an optional suffix (FAFB v3: unknown,
#: unknown2, unknown4, unknown6_ventral, new, new2_ventral). Import stores them as None.
UNKNOWN_HEMI_LINEAGE_PATTERN = r"(NA|NONE|NEW|UNKNOWN)\d*(_.*)?"

MAX_IDS_IN_MESSAGE = 20


def ids_text(ids: Iterable[int]) -> str:
    """A short listing of ids for error messages (the full list travels on the exception)."""
    ids = list(ids)
    shown = ", ".join(str(i) for i in ids[:MAX_IDS_IN_MESSAGE])
    more = len(ids) - MAX_IDS_IN_MESSAGE
    return shown + (f" (and {more} more)" if more > 0 else "")


def duplicate_id_error(table: str, ids: Iterable[int], where: str) -> DuplicateIdError:
    ids = sorted({int(i) for i in ids})
    return DuplicateIdError(
        f"{table}: {len(ids)} id(s) {where}: {ids_text(ids)}; nothing was imported",
        ids=ids,
        table=table,
    )


def unknown_hemi_lineage(name, pattern: str | None = None) -> bool:
    """THE rule for "this hemilineage is not known", shared by import, splits and evaluation.

    True for a missing or empty name and for a name that ``pattern`` (a regular expression,
    matched against the whole name, case-insensitive; default
    :data:`UNKNOWN_HEMI_LINEAGE_PATTERN`) matches. Names stored as None are unknown whatever
    the pattern, so a pattern can add unknown names but not bring back the original's.
    """
    if _missing(name):
        return True
    name = str(name).strip()
    regex = _unknown_regex(UNKNOWN_HEMI_LINEAGE_PATTERN if pattern is None else pattern)
    return not name or regex.fullmatch(name) is not None


@functools.lru_cache(maxsize=16)
def _unknown_regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise DatabaseError(f"bad unknown-hemilineage pattern {pattern!r}: {error}") from None


def unknown_hemi_lineage_ids(hemi_lineages: pd.DataFrame, pattern: str | None = None) -> set[int]:
    """Ids of the hemilineages (a :meth:`Database.hemi_lineages` frame) that are not known by
    :func:`unknown_hemi_lineage`. A skeleton without a hemilineage is unknown as well; an id
    that has no row in the table is a known (if unnamed) grouping."""
    return {
        int(i)
        for i, name in zip(
            hemi_lineages["hemi_lineage_id"], hemi_lineages["hemi_lineage_name"], strict=True
        )
        if unknown_hemi_lineage(name, pattern)
    }


def hemi_lineage_name(name) -> str | None:
    """The stored form of a hemilineage name: None where :func:`unknown_hemi_lineage`."""
    return None if unknown_hemi_lineage(name) else str(name).strip()


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def objects(values: pd.Series, convert) -> pd.Series:
    """``convert`` applied to each value, kept as Python objects (None stays None; pandas'
    ``map`` would turn None back into NaN in a string column)."""
    return pd.Series([convert(v) for v in values.tolist()], index=values.index, dtype=object)


def _required(frame: pd.DataFrame, table: str, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatabaseError(
            f"{table}: missing column(s) {', '.join(missing)} (have: {', '.join(frame.columns)})"
        )


def _id_column(frame: pd.DataFrame, table: str, column: str, nullable: bool) -> pd.Series:
    """An id column as int64 (or nullable Int64); floats with fractions and text are refused.

    Integer input never passes through floats: connectome ids (e.g. male-VNC synapse ids, ~8e16)
    exceed 2**53 and would be rounded.
    """
    ids = _exact_ids(frame[column], table, column)
    missing = ids.isna().to_numpy()
    if missing.any() and not nullable:
        row = int(np.flatnonzero(missing)[0])
        raise DatabaseError(f"{table}: row {row}: field {column} is missing")
    return ids if nullable else ids.astype("int64")


def _exact_ids(values: pd.Series, table: str, column: str) -> pd.Series:
    """``values`` as Int64: integers and integer text exactly, whole floats through Float64."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("Int64")
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.map(lambda v: None if _missing(v) else str(v).strip())
        if text.dropna().str.fullmatch(r"[+-]?\d+").all():
            ints = [None if _missing(v) else int(v) for v in text.tolist()]
            return pd.Series(pd.array(ints, dtype="Int64"), index=values.index)
    try:
        floats = pd.to_numeric(values, errors="raise").astype("Float64")
    except (ValueError, TypeError):
        bad = pd.to_numeric(values, errors="coerce").isna() & values.notna()
        row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
        raise DatabaseError(
            f"{table}: row {row}: field {column} is not an integer id: {values.iloc[row]!r}"
        ) from None
    fractional = floats.notna().to_numpy() & (floats.fillna(0).to_numpy() % 1 != 0)
    if fractional.any():
        row = int(np.flatnonzero(fractional)[0])
        raise DatabaseError(
            f"{table}: row {row}: field {column} is not an integer: {floats.iloc[row]}"
        )
    return floats.astype("Int64")


def _text_column(frame: pd.DataFrame, column: str, lower: bool = False) -> pd.Series:
    """A text column as Python str objects with None for missing (vectorised: imports are big)."""
    if column not in frame.columns:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    values = frame[column]
    missing = values.isna().to_numpy()
    text = values.astype(str).str.strip()
    if lower:
        text = text.str.lower()
    out = text.to_numpy(dtype=object, copy=True)
    out[missing] = None
    return pd.Series(out, index=frame.index, dtype=object)


def _nt_key_column(frame: pd.DataFrame, table: str, column: str, id_column: str) -> pd.Series:
    """Transmitter sets as their order-free text key ("" = unknown), checked against nt.py."""
    if column not in frame.columns:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    keys = []
    for ident, value in zip(frame[id_column].to_numpy(), frame[column].to_numpy(), strict=True):
        if value is None or (not isinstance(value, Iterable) and pd.isna(value)):
            keys.append("")
            continue
        if not isinstance(value, str) and not isinstance(value, Iterable):
            value = str(value)
        if isinstance(value, str) and (not value.strip() or value.strip().lower() == "nan"):
            keys.append("")
            continue
        try:
            keys.append(set_key(canonical_set(value)))
        except UnknownTransmitter as error:
            raise DatabaseError(f"{table}: {id_column} {ident}: field {column}: {error}") from None
    return pd.Series(keys, index=frame.index, dtype=object)


def _reject_repeats(ids: pd.Series, table: str) -> None:
    repeated = ids[ids.duplicated(keep=False)].unique()
    if len(repeated):
        raise duplicate_id_error(table, repeated, "repeated in the input")


def check_synapses(frame: pd.DataFrame) -> pd.DataFrame:
    """The synapse frame to store: columns of :data:`SYNAPSE_COLUMNS`, checked and typed."""
    table = "synapses"
    _required(frame, table, ("synapse_id", "z", "y", "x"))
    frame = frame.reset_index(drop=True)
    out = pd.DataFrame({"synapse_id": _id_column(frame, table, "synapse_id", nullable=False)})
    for axis in ("z", "y", "x"):
        values = pd.to_numeric(frame[axis], errors="coerce").astype("float64")
        bad = values.isna() | ~np.isfinite(values.fillna(0))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DatabaseError(
                f"{table}: synapse_id {out.synapse_id.iloc[row]}: field {axis} (nm) is not a "
                f"finite number: {frame[axis].iloc[row]!r}"
            )
        out[axis] = values
    if "skeleton_id" in frame.columns:
        out["skeleton_id"] = _id_column(frame, table, "skeleton_id", nullable=True)
    else:
        out["skeleton_id"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    out["brain_region"] = _text_column(frame, "brain_region")
    prepost = _text_column(frame, "prepost", lower=True)
    bad = prepost.notna() & ~prepost.isin(PREPOST_VALUES)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatabaseError(
            f"{table}: synapse_id {out.synapse_id.iloc[row]}: field prepost must be 'pre' or "
            f"'post', not {frame['prepost'].iloc[row]!r}"
        )
    out["prepost"] = prepost.astype(object)
    if "confidence" in frame.columns:
        out["confidence"] = pd.to_numeric(frame["confidence"], errors="coerce").astype("float64")
    else:
        out["confidence"] = np.full(len(frame), np.nan)
    _reject_repeats(out.synapse_id, table)
    return out


def check_skeletons(frame: pd.DataFrame) -> pd.DataFrame:
    """The skeleton frame to store, with ``nt_known`` as its text key ("" = unknown)."""
    table = "skeletons"
    _required(frame, table, ("skeleton_id",))
    frame = frame.reset_index(drop=True)
    out = pd.DataFrame({"skeleton_id": _id_column(frame, table, "skeleton_id", nullable=False)})
    if "hemi_lineage_id" in frame.columns:
        out["hemi_lineage_id"] = _id_column(frame, table, "hemi_lineage_id", nullable=True)
    else:
        out["hemi_lineage_id"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    out["nt_known"] = _nt_key_column(frame, table, "nt_known", "skeleton_id")
    _reject_repeats(out.skeleton_id, table)
    return out


def check_hemi_lineages(frame: pd.DataFrame) -> pd.DataFrame:
    """The hemilineage frame to store, with ``nt_guess`` as its text key ("" = unknown)."""
    table = "hemi_lineages"
    _required(frame, table, ("hemi_lineage_id",))
    frame = frame.reset_index(drop=True)
    ids = _id_column(frame, table, "hemi_lineage_id", nullable=False)
    out = pd.DataFrame({"hemi_lineage_id": ids})
    names = frame["hemi_lineage_name"] if "hemi_lineage_name" in frame.columns else None
    out["hemi_lineage_name"] = (
        pd.Series([None] * len(frame), dtype=object)
        if names is None
        else objects(names, hemi_lineage_name)
    )
    out["nt_guess"] = _nt_key_column(frame, table, "nt_guess", "hemi_lineage_id")
    _reject_repeats(out.hemi_lineage_id, table)
    return out


def check_split_parts(name: str, parts: pd.DataFrame) -> pd.DataFrame:
    """Split rows (synapse_id int64, part str) with known parts and each synapse once."""
    if not isinstance(name, str) or not name.strip():
        raise DatabaseError(f"split name must be a non-empty string, not {name!r}")
    table = f"split {name!r}"
    _required(parts, table, ("synapse_id", "part"))
    parts = parts.reset_index(drop=True)
    out = pd.DataFrame({"synapse_id": _id_column(parts, table, "synapse_id", nullable=False)})
    out["part"] = parts["part"].astype(str).str.strip().str.lower()
    bad = ~out.part.isin(SPLIT_PARTS)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatabaseError(
            f"{table}: synapse_id {out.synapse_id.iloc[row]}: part must be one of "
            f"{', '.join(SPLIT_PARTS)}, not {parts['part'].iloc[row]!r}"
        )
    repeated = out.synapse_id[out.synapse_id.duplicated()].unique()
    if len(repeated):
        raise DatabaseError(f"{table}: synapse id(s) listed twice: {ids_text(repeated)}")
    return out


def check_parts_filter(split: str | None, part) -> list[str] | None:
    """The list of parts a query asks for (None = all); ``part`` without ``split`` is an error."""
    if part is None:
        return None
    if split is None:
        raise DatabaseError("a part filter needs a split name (split=...)")
    parts = [part] if isinstance(part, str) else list(part)
    unknown = [p for p in parts if p not in SPLIT_PARTS]
    if unknown:
        raise DatabaseError(f"unknown split part(s) {unknown}; parts are {', '.join(SPLIT_PARTS)}")
    return parts


def check_positions(positions_nm) -> np.ndarray:
    positions = np.asarray(positions_nm, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise DatabaseError(
            f"positions_nm must be an (N, 3) z,y,x array, got shape {positions.shape}"
        )
    return positions


def check_classes(run: str, classes) -> list[str]:
    """A prediction run's class order as a list of names: distinct and not empty."""
    classes = [str(c) for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise DatabaseError(f"prediction run {run!r}: classes must be distinct and non-empty")
    return classes


def check_predictions(synapse_ids, probabilities, n_classes: int, run: str):
    """A prediction batch as (int64 ids, float64 (N, n_classes)), the last of repeated ids kept."""
    ids = np.asarray(synapse_ids, dtype=np.int64).reshape(-1)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(ids), n_classes):
        raise DatabaseError(
            f"prediction run {run!r}: probabilities must have shape ({len(ids)}, {n_classes}) "
            f"(one row per synapse id, one column per class), got {probs.shape}"
        )
    # keep the last prediction of an id repeated within the batch, as an upsert would
    reverse_unique = np.unique(ids[::-1], return_index=True)[1]
    keep = np.sort(len(ids) - 1 - reverse_unique)
    return ids[keep], probs[keep]


def nt_set(key) -> frozenset[str]:
    """A stored transmitter key (or the original's list) as a frozenset; unknown = empty."""
    if key is None or (isinstance(key, float) and np.isnan(key)):
        return frozenset()
    if isinstance(key, str):
        return frozenset(n for n in key.split(",") if n and not is_unknown_label(n))
    return frozenset(str(n).lower() for n in key if n and not is_unknown_label(n))


def nt_sets(values: pd.Series) -> pd.Series:
    """:func:`nt_set` of each value, computed once per distinct text key (queries are big)."""
    cache: dict[str, frozenset[str]] = {}
    out = []
    for value in values.tolist():
        if isinstance(value, str):
            if value not in cache:
                cache[value] = nt_set(value)
            out.append(cache[value])
        else:
            out.append(nt_set(value))
    return pd.Series(out, index=values.index, dtype=object)


def finish_synapses(frame: pd.DataFrame, with_part: bool) -> pd.DataFrame:
    """Give a synapse query result its documented columns and dtypes."""
    columns = [*SYNAPSE_COLUMNS, "nt_known", "hemi_lineage_id"] + (["part"] if with_part else [])
    frame = frame.reindex(columns=columns)
    out = pd.DataFrame(
        {
            "synapse_id": frame.synapse_id.astype("int64"),
            "z": frame.z.astype("float64"),
            "y": frame.y.astype("float64"),
            "x": frame.x.astype("float64"),
            "skeleton_id": pd.array(frame.skeleton_id.tolist(), dtype="Int64"),
            "brain_region": _as_objects(frame.brain_region),
            "prepost": _as_objects(frame.prepost),
            "confidence": pd.to_numeric(frame.confidence).astype("float64"),
            "nt_known": nt_sets(frame.nt_known),
            "hemi_lineage_id": pd.array(frame.hemi_lineage_id.tolist(), dtype="Int64"),
        }
    )
    if with_part:
        out["part"] = _as_objects(frame.part)
    return out.sort_values("synapse_id", kind="stable").reset_index(drop=True)


def finish_skeletons(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reindex(columns=list(SKELETON_COLUMNS))
    out = pd.DataFrame(
        {
            "skeleton_id": frame.skeleton_id.astype("int64"),
            "hemi_lineage_id": pd.array(frame.hemi_lineage_id.tolist(), dtype="Int64"),
            "nt_known": nt_sets(frame.nt_known),
        }
    )
    return out.sort_values("skeleton_id", kind="stable").reset_index(drop=True)


def finish_hemi_lineages(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reindex(columns=list(HEMI_LINEAGE_COLUMNS))
    out = pd.DataFrame(
        {
            "hemi_lineage_id": frame.hemi_lineage_id.astype("int64"),
            "hemi_lineage_name": objects(frame.hemi_lineage_name, hemi_lineage_name),
            "nt_guess": nt_sets(frame.nt_guess),
        }
    )
    return out.sort_values("hemi_lineage_id", kind="stable").reset_index(drop=True)


def _as_objects(values: pd.Series) -> pd.Series:
    out = values.to_numpy(dtype=object, copy=True)
    out[pd.isna(out)] = None
    return pd.Series(out, index=values.index, dtype=object)


def stats_key(key: str) -> str:
    """The key of a transmitter set in :meth:`Database.stats`: its text key, "unknown" if empty."""
    return key or "unknown"
