"""Reading synapses, skeletons and hemilineages from files into a database, as one transaction.

Two kinds of input:

* the original synister export: ``synapses*.json``, ``skeletons*.json`` and
  ``hemi_lineages*.json`` (or ``hemilineages*.json``), each a JSON object keyed by id;
* synapse tables (CSV/TSV, Parquet, Feather), one row per synapse, whose transmitter label
  comes from a column, a fixed label, or the file name (``gaba.csv``). Every neuron a table
  names becomes a skeleton whose ``nt_known`` is that label.

Every file is parsed and checked before anything is written, then the whole batch goes to the
database in one :meth:`Database.import_records` call, so bad input leaves the database as it
was. Errors name the file, the line (CSV), row (Parquet/Feather) or key (JSON), and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..nt import UnknownTransmitter, canonical, canonical_set
from .base import Database
from .records import (
    HEMI_LINEAGE_COLUMNS,
    SKELETON_COLUMNS,
    SYNAPSE_COLUMNS,
    hemi_lineage_name,
)

EXPORT_KINDS = ("synapses", "skeletons", "hemi_lineages")
_EXPORT_PATTERN = re.compile(r"^(synapses|skeletons|hemi_?lineages).*\.json$", re.IGNORECASE)
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".feather")
#: Synapse fields a table column can be mapped to (positions go through ``coordinate_columns``).
TABLE_FIELDS = ("synapse_id", "skeleton_id", "confidence", "brain_region", "prepost")
#: Column names understood without a mapping (the male-VNC tables use body, conf, syn_id).
DEFAULT_COLUMN_NAMES: dict[str, str] = {
    "body": "skeleton_id",
    "bodyid": "skeleton_id",
    "body_id": "skeleton_id",
    "skid": "skeleton_id",
    "syn_id": "synapse_id",
    "conf": "confidence",
}
_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")


class BadInput(ValueError):
    """An input file cannot be imported; the message names the file, line/key and field."""


@dataclass(frozen=True)
class TableOptions:
    """How to read a synapse table.

    ``columns`` maps file column names to synister fields (:data:`TABLE_FIELDS`), on top of
    :data:`DEFAULT_COLUMN_NAMES`. ``coordinate_columns`` are the three position columns of the
    file, holding the axes named in ``axis_order`` (e.g. ``"xyz"``). ``units`` is ``"nm"`` or
    ``"voxels"``; voxels are multiplied by ``voxel_size_nm`` (z, y, x). The label comes from
    ``label_column``, else ``label``, else the file name's stem.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    coordinate_columns: tuple[str, str, str] = ("x", "y", "z")
    axis_order: str = "xyz"
    units: str = "nm"
    voxel_size_nm: tuple[float, float, float] | None = None
    label_column: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        for source, target in self.columns.items():
            if target not in TABLE_FIELDS:
                raise BadInput(
                    f"column mapping {source}->{target}: {target!r} is not a synapse field; "
                    f"fields: {', '.join(TABLE_FIELDS)} (positions: coordinate columns)"
                )
        if len(self.coordinate_columns) != 3:
            raise BadInput(f"need three coordinate columns, got {list(self.coordinate_columns)}")
        if sorted(self.axis_order.lower()) != ["x", "y", "z"]:
            raise BadInput(f"axis order must be a permutation of xyz, got {self.axis_order!r}")
        if self.units not in ("nm", "voxels"):
            raise BadInput(f"units must be 'nm' or 'voxels', got {self.units!r}")
        if self.units == "voxels":
            size = self.voxel_size_nm
            if size is None or len(size) != 3 or not all(float(s) > 0 for s in size):
                raise BadInput(
                    "coordinates in voxels need a voxel size in nm (z, y, x, all positive), "
                    f"got {size}"
                )
        if self.label is not None:
            _canonical_or_bad(self.label, "the fixed label")

    def position_columns(self) -> dict[str, str]:
        """File column for each axis z, y, x."""
        by_axis = dict(zip(self.axis_order.lower(), self.coordinate_columns, strict=True))
        return {axis: by_axis[axis] for axis in "zyx"}


@dataclass
class ImportSummary:
    """What one import added.

    ``skeletons_without_transmitter``: imported skeletons whose ``nt_known`` was missing,
    null, empty or the original's ``["none"]``; they are stored as "unknown" and take no part
    in splits, so the count is shown rather than passed over.
    """

    files: list[str]
    synapses: int
    skeletons: int
    hemi_lineages: int
    skeletons_already_stored: int = 0
    skeletons_without_transmitter: int = 0

    def as_dict(self) -> dict:
        return {
            "files": self.files,
            "synapses": self.synapses,
            "skeletons": self.skeletons,
            "hemi_lineages": self.hemi_lineages,
            "skeletons_already_stored": self.skeletons_already_stored,
            "skeletons_without_transmitter": self.skeletons_without_transmitter,
        }


@dataclass
class _Batch:
    """Parsed input: record frames carrying ``_file`` and ``_at`` (line/row/key text)."""

    synapses: list[pd.DataFrame] = field(default_factory=list)
    skeletons: list[pd.DataFrame] = field(default_factory=list)
    hemi_lineages: list[pd.DataFrame] = field(default_factory=list)
    labels: list[pd.DataFrame] = field(default_factory=list)  # skeleton_id, nt, _file, _at
    files: list[str] = field(default_factory=list)


def _canonical_or_bad(name, where: str) -> str:
    try:
        return canonical(name)
    except UnknownTransmitter as error:
        raise BadInput(f"{where}: {error}") from None


def _place(frame: pd.DataFrame, row: int) -> str:
    return f"{frame['_file'].iloc[row]}, {frame['_at'].iloc[row]}"


# ---- the original JSON export ------------------------------------------------------------------


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


# ---- synapse tables ----------------------------------------------------------------------------


def _read_table_file(path: Path) -> tuple[pd.DataFrame, str, int]:
    """The raw table, the word for its positions (line/row) and the number of the first one."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(
                path,
                sep="\t" if suffix == ".tsv" else ",",
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                skipinitialspace=True,
            )
            return frame, "line", 2  # line 1 is the header
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path), "row", 1
        if suffix == ".feather":
            return pd.read_feather(path), "row", 1
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise BadInput(f"{path}: cannot read table: {error}") from None
    raise BadInput(
        f"{path}: unknown table format {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}"
    )


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _integer_column(values: pd.Series, where, name: str, nullable: bool) -> pd.Series:
    """Exact int64 ids (text is parsed as integers, never through floats: 64-bit ids survive)."""
    missing = values.isna().to_numpy()
    if missing.any() and not nullable:
        raise BadInput(f"{where(_first_bad(missing))}: field {name!r} is missing")
    if pd.api.types.is_integer_dtype(values.dtype):
        return pd.array(values, dtype="Int64")
    if pd.api.types.is_float_dtype(values.dtype):
        bad = ~missing & ~np.isclose(values.fillna(0) % 1, 0)
        if bad.any():
            row = _first_bad(bad)
            raise BadInput(f"{where(row)}: field {name!r} is not an integer: {values.iloc[row]}")
        return pd.array(values.round(), dtype="Int64")
    text = values.astype(str).str.strip()
    bad = ~missing & ~text.str.match(_INTEGER_TEXT).to_numpy()
    if bad.any():
        row = _first_bad(bad)
        raise BadInput(f"{where(row)}: field {name!r} is not an integer: {values.iloc[row]!r}")
    out = pd.array([pd.NA] * len(values), dtype="Int64")
    out[~missing] = text[~missing].astype("int64").to_numpy()
    return out


def _float_column(values: pd.Series, where, name: str, required: bool) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    bad = np.isnan(numbers) & values.notna().to_numpy() | np.isinf(numbers)
    if required:
        bad |= np.isnan(numbers)
    if bad.any():
        row = _first_bad(bad)
        value = values.iloc[row]
        problem = "is missing" if pd.isna(value) else f"is not a number: {value!r}"
        raise BadInput(f"{where(row)}: field {name!r} {problem}")
    return numbers


def read_table(
    path: Path | str, options: TableOptions = TableOptions()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A synapse table as (synapses, labels); both carry ``_file`` and ``_at``.

    ``labels`` has one row per neuron: skeleton_id and its transmitter ``nt``.
    """
    path = Path(path)
    raw, unit, first = _read_table_file(path)
    raw.columns = [str(c).strip() for c in raw.columns]

    def where(row: int) -> str:
        return f"{path}, {unit} {row + first}"

    mapping = {k: v for k, v in DEFAULT_COLUMN_NAMES.items() if k in raw.columns}
    mapping = {k: v for k, v in mapping.items() if v not in raw.columns}
    mapping.update(options.columns)
    for source in options.columns:
        if source not in raw.columns:
            raise BadInput(
                f"{path}: column {source!r} (mapped to {options.columns[source]}) not found; "
                f"columns: {', '.join(raw.columns)}"
            )
    fields = {target: source for source, target in mapping.items()}
    fields.update(
        {name: name for name in TABLE_FIELDS if name in raw.columns and name not in fields}
    )
    positions = options.position_columns()
    needed = {"synapse_id": fields.get("synapse_id"), "skeleton_id": fields.get("skeleton_id")}
    needed.update({f"position {axis}": column for axis, column in positions.items()})
    for role, column in needed.items():
        if column is None or column not in raw.columns:
            hint = f"column {column!r}" if column else "a column"
            raise BadInput(
                f"{path}: {hint} for {role} not found (columns: {', '.join(raw.columns)}); "
                "map columns with e.g. body=skeleton_id, syn_id=synapse_id"
            )

    synapses = pd.DataFrame(
        {
            "synapse_id": _integer_column(
                raw[fields["synapse_id"]], where, fields["synapse_id"], False
            )
        }
    )
    scale = np.ones(3) if options.units == "nm" else np.asarray(options.voxel_size_nm, float)
    for axis, size in zip("zyx", scale, strict=True):
        column = positions[axis]
        synapses[axis] = _float_column(raw[column], where, column, True) * size
    skeleton_column = fields["skeleton_id"]
    synapses["skeleton_id"] = _integer_column(raw[skeleton_column], where, skeleton_column, True)
    for name in ("brain_region", "prepost"):
        if name in fields:
            text = raw[fields[name]].map(lambda v: None if pd.isna(v) else str(v).strip())
            synapses[name] = text.astype(object)
        else:
            synapses[name] = None
    if synapses["prepost"].notna().any():
        synapses["prepost"] = synapses["prepost"].map(lambda v: v.lower() if v else None)
        bad = synapses["prepost"].notna() & ~synapses["prepost"].isin(["pre", "post"])
        if bad.any():
            row = _first_bad(bad.to_numpy())
            raise BadInput(
                f"{where(row)}: field {fields['prepost']!r} must be 'pre' or 'post', "
                f"not {raw[fields['prepost']].iloc[row]!r}"
            )
    if "confidence" in fields:
        synapses["confidence"] = _float_column(
            raw[fields["confidence"]], where, fields["confidence"], False
        )
    else:
        synapses["confidence"] = np.nan
    synapses["_file"] = str(path)
    synapses["_at"] = f"{unit} " + (synapses.index + first).astype(str)

    labels = _table_labels(path, raw, options, where)
    labelled = synapses[["skeleton_id", "_file", "_at"]].assign(nt=labels)
    labelled = labelled.loc[labelled["skeleton_id"].notna()]
    _reject_conflicting_labels(labelled)
    labelled = labelled.drop_duplicates("skeleton_id").reset_index(drop=True)
    labelled["skeleton_id"] = labelled["skeleton_id"].astype("int64")
    return synapses, labelled


def _table_labels(path: Path, raw: pd.DataFrame, options: TableOptions, where) -> np.ndarray:
    if options.label_column is not None:
        if options.label_column not in raw.columns:
            raise BadInput(
                f"{path}: label column {options.label_column!r} not found "
                f"(columns: {', '.join(raw.columns)})"
            )
        values = raw[options.label_column]
        missing = values.isna().to_numpy()
        if missing.any():
            raise BadInput(
                f"{where(_first_bad(missing))}: field {options.label_column!r} is missing"
            )
        names = {}
        for value in values.unique():
            row = _first_bad((values == value).to_numpy())
            names[value] = _canonical_or_bad(value, f"{where(row)}: field {options.label_column!r}")
        return values.map(names).to_numpy()
    if options.label is not None:
        return np.full(len(raw), canonical(options.label), dtype=object)
    try:
        return np.full(len(raw), canonical(path.stem), dtype=object)
    except UnknownTransmitter:
        raise BadInput(
            f"{path}: the file name {path.stem!r} is not a transmitter; name the file after its "
            "transmitter (gaba.csv) or give a label column or a fixed label"
        ) from None


def _reject_conflicting_labels(labels: pd.DataFrame) -> None:
    """Raise when one neuron carries two labels, naming the two places."""
    per_neuron = labels.groupby("skeleton_id")["nt"].nunique()
    conflicted = per_neuron.index[per_neuron > 1]
    if len(conflicted):
        neuron = conflicted[0]
        rows = labels.loc[labels["skeleton_id"] == neuron].drop_duplicates("nt")
        a, b = rows.iloc[0], rows.iloc[1]
        raise BadInput(
            f"neuron {neuron} is labelled {a['nt']} at {a['_file']}, {a['_at']} and {b['nt']} at "
            f"{b['_file']}, {b['_at']}" + _more(len(conflicted), "neurons")
        )


def _more(count: int, what: str) -> str:
    return f" ({count - 1} more {what} like it)" if count > 1 else ""


# ---- gathering and importing -------------------------------------------------------------------


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files to import: files as given; a folder gives its export JSON files, else its tables."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            exports = sorted(p for p in path.iterdir() if p.is_file() and export_kind(p))
            tables = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
            )
            if not exports and not tables:
                raise BadInput(
                    f"{path}: folder holds no export files (synapses*.json, skeletons*.json, "
                    f"hemi_lineages*.json) and no tables ({', '.join(TABLE_SUFFIXES)})"
                )
            files.extend(exports or tables)
        elif path.is_file():
            files.append(path)
        else:
            raise BadInput(f"{path}: no such file or folder")
    return files


def read_inputs(
    paths: Iterable[Path | str], options: TableOptions = TableOptions(), progress: bool = False
) -> _Batch:
    """Parse every input file (nothing is written)."""
    batch = _Batch()
    files = expand_paths(paths)
    for path in tqdm(files, desc="reading", unit="file", disable=None if progress else True):
        batch.files.append(str(path))
        if path.suffix.lower() == ".json":
            frame = read_export_file(path)
            getattr(batch, export_kind(path)).append(frame)
        else:
            synapses, labels = read_table(path, options)
            batch.synapses.append(synapses)
            batch.labels.append(labels)
    return batch


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
    return pd.concat(frames, ignore_index=True) if frames else None


def _reject_repeats(frame: pd.DataFrame, id_name: str, what: str) -> None:
    repeated = frame[id_name].duplicated(keep=False).to_numpy()
    if repeated.any():
        rows = np.flatnonzero(repeated)
        first_id = frame[id_name].iloc[rows[0]]
        same = np.flatnonzero((frame[id_name] == first_id).to_numpy())
        n_ids = frame[id_name].iloc[rows].nunique()
        raise BadInput(
            f"{what} id {first_id} appears twice: {_place(frame, same[0])} and "
            f"{_place(frame, same[1])}" + _more(n_ids, "repeated ids")
        )


def _reject_stored(frame: pd.DataFrame, id_name: str, stored: Iterable[int], what: str) -> None:
    stored = pd.Index(stored)
    clash = frame[id_name].isin(stored).to_numpy()
    if clash.any():
        row = _first_bad(clash)
        raise BadInput(
            f"{what} id {frame[id_name].iloc[row]} ({_place(frame, row)}) is already stored in the "
            f"database" + _more(int(clash.sum()), "ids")
        )


def _label_skeletons(
    labels: pd.DataFrame, skeletons: pd.DataFrame | None, db: Database
) -> tuple[pd.DataFrame, int]:
    """New skeletons for labelled neurons; a label that disagrees with a stored or imported
    ``nt_known`` is an error naming both places. Returns (new skeletons, count already stored)."""
    _reject_conflicting_labels(labels)
    labels = labels.drop_duplicates("skeleton_id").reset_index(drop=True)
    known = []
    if skeletons is not None:
        known.append(skeletons.assign(_source=skeletons["_file"] + ", " + skeletons["_at"]))
    stored = db.skeletons(skeleton_ids=labels["skeleton_id"].tolist())
    if len(stored):
        known.append(stored.assign(_source="the database"))
    n_stored = len(stored)
    if known:
        known_frame = pd.concat(known, ignore_index=True)
        merged = labels.merge(known_frame[["skeleton_id", "nt_known", "_source"]], on="skeleton_id")
        differs = [
            frozenset(k) != frozenset([nt])
            for k, nt in zip(merged["nt_known"], merged["nt"], strict=True)
        ]
        if any(differs):
            row = merged.loc[differs].iloc[0]
            known_text = ",".join(sorted(row["nt_known"])) or "unknown"
            raise BadInput(
                f"neuron {row['skeleton_id']} is labelled {row['nt']} at {row['_file']}, "
                f"{row['_at']} but {known_text} in {row['_source']}"
                + _more(sum(differs), "neurons")
            )
        labels = labels.loc[~labels["skeleton_id"].isin(known_frame["skeleton_id"])]
    new = pd.DataFrame(
        {
            "skeleton_id": labels["skeleton_id"].astype("int64").to_numpy(),
            "hemi_lineage_id": pd.array([pd.NA] * len(labels), dtype="Int64"),
            "nt_known": [frozenset([nt]) for nt in labels["nt"]],
        }
    )
    return new, n_stored


def _public(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    if frame is None or frame.empty:
        return None
    return frame.drop(columns=[c for c in frame.columns if c.startswith("_")]).reset_index(
        drop=True
    )


def import_files(
    db: Database,
    paths: Sequence[Path | str],
    options: TableOptions = TableOptions(),
    progress: bool = False,
) -> ImportSummary:
    """Import export JSON files, synapse tables or folders of them into ``db``, all or nothing.

    Raises :class:`BadInput` naming the file and line/key/field for malformed input, ids repeated
    in the input or already stored, and neurons labelled two ways; the database is unchanged then.
    """
    if not paths:
        raise BadInput("nothing to import: give export JSON files, tables or folders")
    batch = read_inputs(paths, options, progress)
    synapses = _concat(batch.synapses)
    skeletons = _concat(batch.skeletons)
    hemi_lineages = _concat(batch.hemi_lineages)
    if synapses is not None:
        _reject_repeats(synapses, "synapse_id", "synapse")
        found = db.synapses(synapse_ids=synapses["synapse_id"].tolist())
        _reject_stored(synapses, "synapse_id", found["synapse_id"], "synapse")
    if skeletons is not None:
        _reject_repeats(skeletons, "skeleton_id", "skeleton")
        found = db.skeletons(skeleton_ids=skeletons["skeleton_id"].tolist())
        _reject_stored(skeletons, "skeleton_id", found["skeleton_id"], "skeleton")
    if hemi_lineages is not None:
        _reject_repeats(hemi_lineages, "hemi_lineage_id", "hemi lineage")
        stored = db.hemi_lineages()["hemi_lineage_id"]
        _reject_stored(hemi_lineages, "hemi_lineage_id", stored, "hemi lineage")
    n_stored = 0
    if batch.labels:
        labelled, n_stored = _label_skeletons(
            pd.concat(batch.labels, ignore_index=True), skeletons, db
        )
        skeletons = (
            pd.concat([_public(skeletons), labelled], ignore_index=True)
            if skeletons is not None
            else labelled
        )
    synapses, skeletons, hemi_lineages = map(_public, (synapses, skeletons, hemi_lineages))
    db.import_records(synapses=synapses, skeletons=skeletons, hemi_lineages=hemi_lineages)
    return ImportSummary(
        files=batch.files,
        synapses=0 if synapses is None else len(synapses),
        skeletons=0 if skeletons is None else len(skeletons),
        hemi_lineages=0 if hemi_lineages is None else len(hemi_lineages),
        skeletons_already_stored=n_stored,
        skeletons_without_transmitter=0
        if skeletons is None
        else int(sum(not known for known in skeletons["nt_known"])),
    )
