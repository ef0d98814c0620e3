"""Tables of synapse positions as the field shares them (FlyWire, neuPrint, CATMAID exports):
CSV, Parquet or Feather, columns found by name, positions in nm or voxels.

Every problem is one line that names the file, the column and, where it matters, the row, and
is found before anything is predicted or written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: column names tried in this order (case-insensitive); the first present is used
ID_COLUMNS = ("id", "synapse_id", "syn_id")
NEURON_COLUMNS = ("pre_pt_root_id", "bodyId", "body", "skeleton_id", "skid")
POSITION_COLUMNS = (("x", "y", "z"), ("pre_x", "pre_y", "pre_z"), ("pre_pt_position",))
UNITS = ("nm", "voxels")
_CSV = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
_PARQUET = (".parquet", ".pq")
_FEATHER = (".feather", ".arrow", ".ipc")
_INT64_MAX = np.iinfo(np.int64).max


class TableError(ValueError):
    """A positions table (or its options) that cannot be used; one line naming file, column
    and row."""


@dataclass
class PositionTable:
    """A checked table of positions: ``rows`` has ``row`` (the row number in the source),
    ``id``, ``neuron_id`` (where there is a neuron column), the caller's ``x, y, z`` unchanged
    (in ``units``) and ``x_nm, y_nm, z_nm``."""

    source: str
    rows: pd.DataFrame
    id_column: str | None  # None: row numbers are the ids
    neuron_column: str | None
    position_columns: tuple[str, ...]
    units: str
    voxel_size_xyz_nm: tuple[float, float, float] | None
    neurons_listed: int | None = None  # ids in --neurons, where given
    neurons_missing: list[str] = field(default_factory=list)  # listed, without a row

    @property
    def centers_zyx_nm(self) -> np.ndarray:
        return self.rows[["z_nm", "y_nm", "x_nm"]].to_numpy(dtype=np.float64)

    def describe(self) -> dict:
        """How the table was read (for reports and run manifests), JSON-able."""
        return {
            "source": self.source,
            "rows": int(len(self.rows)),
            "id_column": self.id_column,
            "neuron_column": self.neuron_column,
            "position_columns": list(self.position_columns),
            "units": self.units,
            "voxel_size_xyz_nm": None
            if self.voxel_size_xyz_nm is None
            else list(self.voxel_size_xyz_nm),
            "neurons_listed": self.neurons_listed,
            "neurons_missing": self.neurons_missing[:100],
        }


def parse_voxel_size(text: str | float | Sequence[float] | None) -> tuple[float, ...] | None:
    """``--voxel-size``: one number (isotropic) or x,y,z, in nm."""
    if text is None:
        return None
    if isinstance(text, int | float):
        values = [float(text)]
    elif isinstance(text, str):
        try:
            values = [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
        except ValueError:
            raise TableError(
                f"--voxel-size {text!r}: expected one number or x,y,z in nm, e.g. 8 or 4,4,40"
            ) from None
    else:
        values = [float(v) for v in text]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise TableError(
            f"--voxel-size {text!r}: expected one positive number or x,y,z in nm, e.g. 8 or 4,4,40"
        )
    return tuple(values)


def _kind(path: Path) -> str:
    name = path.name.lower()
    for kind, endings in (("csv", _CSV), ("parquet", _PARQUET), ("feather", _FEATHER)):
        if name.endswith(endings):
            return kind
    raise TableError(
        f"{path}: unknown table type; use CSV ({', '.join(_CSV)}), Parquet "
        f"({', '.join(_PARQUET)}) or Feather ({', '.join(_FEATHER)})"
    )


def _find(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    for name in wanted:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _choose_columns(
    columns: Sequence[str],
    where: str,
    id_column: str | None,
    neuron_column: str | None,
    position_columns: Sequence[str] | None,
) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(id, neuron, positions) column names: the overrides, else found by name."""
    for name, option in ((id_column, "--id-column"), (neuron_column, "--neuron-column")):
        if name is not None and name not in columns:
            raise TableError(f"{where}: no column {name!r} ({option}); columns: {list(columns)}")
    if position_columns:
        positions = tuple(position_columns)
        if len(positions) not in (1, 3):
            raise TableError(
                f"{where}: --position-columns takes x,y,z or one list column, got {positions}"
            )
        missing = [c for c in positions if c not in columns]
        if missing:
            raise TableError(
                f"{where}: no column {missing[0]!r} (--position-columns); columns: {list(columns)}"
            )
    else:
        found = [tuple(_find(columns, [c]) for c in group) for group in POSITION_COLUMNS]
        positions = next((group for group in found if None not in group), None)
        if positions is None:
            tried = " or ".join(",".join(group) for group in POSITION_COLUMNS)
            raise TableError(
                f"{where}: no position columns (looked for {tried}; name them with "
                f"--position-columns); columns: {list(columns)}"
            )
    ids = id_column or _find(columns, ID_COLUMNS)
    neurons = neuron_column or _find(columns, NEURON_COLUMNS)
    return ids, neurons, positions


def _read(path: Path, text_columns: Sequence[str]) -> pd.DataFrame:
    kind = _kind(path)
    try:
        if kind == "csv":
            sep = "\t" if ".tsv" in path.name.lower() else ","
            return pd.read_csv(path, sep=sep, dtype={c: str for c in text_columns})
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_feather(path)
    except FileNotFoundError:
        raise TableError(f"{path}: no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TableError(f"{path}: not a readable {kind} table ({first})") from None


def _header(path: Path) -> list[str]:
    """Column names without reading the rows."""
    kind = _kind(path)
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    try:
        if kind == "csv":
            sep = "\t" if ".tsv" in path.name.lower() else ","
            return list(pd.read_csv(path, sep=sep, nrows=0).columns)
        import pyarrow.parquet as pq

        if kind == "parquet":
            return list(pq.read_schema(path).names)
        import pyarrow.feather as feather

        return list(feather.read_table(path).schema.names)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TableError(f"{path}: not a readable {kind} table ({first})") from None


def _row_name(i: int, csv: bool) -> str:
    return f"line {i + 2}" if csv else f"row {i}"


def _exact_ids(values: pd.Series, where: str, column: str, csv: bool, missing_ok: bool):
    """Whole-number ids as int64 (never through floats: FlyWire root ids exceed 2**53), any
    other text as strings; missing ones raise unless ``missing_ok`` (then <NA>)."""
    if pd.api.types.is_integer_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        return values.astype("Int64" if missing_ok else np.int64)
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if (finite != np.floor(finite)).any() or (finite.abs() >= 2**53).any():
            i = int(np.flatnonzero(values.notna() & (values != np.floor(values)))[0])
            raise TableError(
                f"{where}, column {column}, {_row_name(i, csv)}: id {values.iloc[i]!r} is "
                "not a whole number (store ids as integers or text)"
            )
        values = values.astype("Int64")
    text = values.astype("string").str.strip()
    absent = text.isna() | (text == "")
    if absent.any() and not missing_ok:
        i = int(np.flatnonzero(absent.to_numpy())[0])
        raise TableError(f"{where}, column {column}, {_row_name(i, csv)}: no id")
    present = text[~absent]
    if present.str.fullmatch(r"-?\d+").all() and (present.str.len() <= 19).all():
        numbers = [int(v) for v in present]
        if all(abs(v) <= _INT64_MAX for v in numbers):
            result = pd.Series(pd.NA, index=values.index, dtype="Int64")
            result[~absent] = numbers
            return result if missing_ok else result.astype(np.int64)
    return text.where(~absent, pd.NA)


def _numbers(values: pd.Series, where: str, column: str, csv: bool) -> np.ndarray:
    """A coordinate column as float64; text or a missing value raises naming the row."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        what = values.iloc[i]
        problem = "is empty" if pd.isna(what) else f"{str(what)!r} is not a number"
        raise TableError(f"{where}, column {column}, {_row_name(i, csv)}: {problem}")
    return numeric.to_numpy(dtype=np.float64)


def _position_list(values: pd.Series, where: str, column: str, csv: bool) -> np.ndarray:
    """One list column of x, y, z (FlyWire's ``pre_pt_position``), from lists or text."""
    out = np.empty((len(values), 3))
    for i, value in enumerate(values):
        if isinstance(value, str):
            parts = [p for p in re.split(r"[\[\]\(\),;\s]+", value) if p]
        elif value is None or (np.ndim(value) == 0 and pd.isna(value)):
            parts = []
        else:
            parts = list(np.asarray(value).reshape(-1))
        try:
            numbers = [float(p) for p in parts]
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) != 3 or not all(np.isfinite(numbers)):
            raise TableError(
                f"{where}, column {column}, {_row_name(i, csv)}: expected three numbers "
                f"x, y, z, got {value!r}"
            )
        out[i] = numbers
    return out


def read_neuron_ids(path: str | Path) -> list[str]:
    """``--neurons``: neuron ids, one per line (or separated by commas or spaces); lines
    starting with # and a header word such as ``bodyId`` are skipped."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TableError(f"{path}: no such file (--neurons)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise TableError(f"{path}: cannot read the neuron ids (--neurons): {error}") from None
    ids = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        ids.extend(v.strip().strip("\"'") for v in re.split(r"[,\s]+", line) if v.strip())
    if (
        ids
        and not ids[0].lstrip("-").isdigit()
        and ids[0].lower() in {c.lower() for c in (*NEURON_COLUMNS, "neuron_id", "neuron", "id")}
    ):
        ids = ids[1:]
    if not ids:
        raise TableError(f"{path}: no neuron id in the file (--neurons)")
    return ids


def read_positions(
    table: str | Path | pd.DataFrame,
    *,
    id_column: str | None = None,
    neuron_column: str | None = None,
    position_columns: Sequence[str] | None = None,
    units: str = "nm",
    voxel_size: str | float | Sequence[float] | None = None,
    neurons: str | Path | Sequence | None = None,
) -> PositionTable:
    """Read and check a positions table (a file or a DataFrame).

    Columns are found by name (:data:`ID_COLUMNS`, :data:`NEURON_COLUMNS`,
    :data:`POSITION_COLUMNS`) unless given. ``units`` "voxels" needs ``voxel_size`` (one number
    or x,y,z nm). ``neurons`` (a file of ids, or ids) keeps only those neurons' rows.
    """
    if units not in UNITS:
        raise TableError(f"--units must be nm or voxels, got {units!r}")
    voxel = parse_voxel_size(voxel_size)
    if isinstance(table, pd.DataFrame):
        source, csv, frame = "<DataFrame>", False, table.reset_index(drop=True)
        columns = list(frame.columns)
        ids, neuron, positions = _choose_columns(
            columns, source, id_column, neuron_column, position_columns
        )
    else:
        path = Path(table).expanduser()
        source, csv = str(path), _kind(path) == "csv"
        columns = _header(path)
        ids, neuron, positions = _choose_columns(
            columns, source, id_column, neuron_column, position_columns
        )
        frame = _read(path, [c for c in (ids, neuron) if c is not None])
    if units == "voxels" and voxel is None:
        raise TableError(
            f"{source}: columns {', '.join(positions)} are in voxels (--units voxels) but no "
            "--voxel-size was given (one number or x,y,z in nm, e.g. 8 or 4,4,40)"
        )
    if len(frame) == 0:
        raise TableError(f"{source}: the table has no rows")
    if len(positions) == 1:
        xyz = _position_list(frame[positions[0]], source, positions[0], csv)
    else:
        xyz = np.stack([_numbers(frame[c], source, c, csv) for c in positions], axis=1)
    scale = np.asarray(voxel if units == "voxels" else (1.0, 1.0, 1.0))
    rows = pd.DataFrame({"row": np.arange(len(frame), dtype=np.int64)})
    if ids is None:
        rows["id"] = rows["row"]
    else:
        rows["id"] = _exact_ids(frame[ids], source, ids, csv, missing_ok=False)
        duplicated = rows["id"].duplicated(keep=False).to_numpy()
        if duplicated.any():
            first, second = np.flatnonzero(duplicated)[:2]
            raise TableError(
                f"{source}, column {ids}: id {rows['id'].iloc[first]} is on "
                f"{_row_name(int(first), csv)} and {_row_name(int(second), csv)}; ids must "
                "be unique (or leave the id column out with --id-column to use row numbers)"
            )
    if neuron is not None:
        rows["neuron_id"] = _exact_ids(frame[neuron], source, neuron, csv, missing_ok=True)
    for axis, name in enumerate("xyz"):
        rows[name] = xyz[:, axis]
    for axis, name in enumerate("xyz"):
        rows[f"{name}_nm"] = xyz[:, axis] * scale[axis]
    listed, missing = None, []
    if neurons is not None:
        if neuron is None:
            raise TableError(
                f"{source}: --neurons needs a neuron column (looked for "
                f"{', '.join(NEURON_COLUMNS)}; name it with --neuron-column)"
            )
        wanted = read_neuron_ids(neurons) if isinstance(neurons, str | Path) else list(neurons)
        wanted = list(dict.fromkeys(str(v) for v in wanted))
        have = rows["neuron_id"].astype("string")
        keep = have.isin(wanted).fillna(False).to_numpy(dtype=bool)
        present = set(have[keep].dropna())
        missing = [v for v in wanted if v not in present]
        listed = len(wanted)
        if not keep.any():
            raise TableError(
                f"{source}, column {neuron}: none of the {listed} neurons listed in "
                f"--neurons has a row (first listed: {wanted[0]})"
            )
        rows = rows[keep].reset_index(drop=True)
    return PositionTable(
        source=source,
        rows=rows,
        id_column=ids,
        neuron_column=neuron,
        position_columns=tuple(positions),
        units=units,
        voxel_size_xyz_nm=None if voxel is None else tuple(float(v) for v in voxel),
        neurons_listed=listed,
        neurons_missing=missing,
    )
