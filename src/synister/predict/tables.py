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


def _listed(values) -> list | None:
    return None if values is None else list(values)


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
            "voxel_size_xyz_nm": _listed(self.voxel_size_xyz_nm),
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


def table_kind(path: Path) -> str:
    """``csv``, ``parquet`` or ``feather``, from the file name."""
    name = path.name.lower()
    for kind, endings in (("csv", _CSV), ("parquet", _PARQUET), ("feather", _FEATHER)):
        if name.endswith(endings):
            return kind
    raise TableError(
        f"{path}: unknown table type; use CSV ({', '.join(_CSV)}), Parquet "
        f"({', '.join(_PARQUET)}) or Feather ({', '.join(_FEATHER)})"
    )


def csv_separator(path: Path) -> str:
    return "\t" if ".tsv" in path.name.lower() else ","


def _find(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    for name in wanted:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


@dataclass(frozen=True)
class TableColumns:
    """Where a table keeps its ids, neurons and positions, and in which unit."""

    id: str | None  # None: row numbers are the ids
    neuron: str | None
    positions: tuple[str, ...]  # x, y, z or one list column of x, y, z
    units: str = "nm"
    voxel_size_xyz_nm: tuple[float, float, float] | None = None

    def source_columns(self) -> list[str]:
        """The columns to read, each once."""
        return list(dict.fromkeys(c for c in (self.id, self.neuron, *self.positions) if c))

    def text_columns(self) -> list[str]:
        """Id columns, read as text (ids are never parsed through floats)."""
        return [c for c in (self.id, self.neuron) if c is not None]

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "neuron": self.neuron,
            "positions": list(self.positions),
            "units": self.units,
            "voxel_size_xyz_nm": _listed(self.voxel_size_xyz_nm),
        }

    @classmethod
    def from_json(cls, data: dict) -> TableColumns:
        voxel = data.get("voxel_size_xyz_nm")
        return cls(
            data.get("id"),
            data.get("neuron"),
            tuple(data["positions"]),
            data.get("units", "nm"),
            None if voxel is None else tuple(float(v) for v in voxel),
        )


def choose_columns(
    columns: Sequence[str],
    where: str,
    *,
    id_column: str | None = None,
    neuron_column: str | None = None,
    position_columns: Sequence[str] | None = None,
    units: str = "nm",
    voxel_size: str | float | Sequence[float] | None = None,
) -> TableColumns:
    """The id, neuron and position columns of a table with these column names: the
    overrides, else found by name (:data:`ID_COLUMNS`, :data:`NEURON_COLUMNS`,
    :data:`POSITION_COLUMNS`); and the unit. Reads no rows."""
    if units not in UNITS:
        raise TableError(f"--units must be nm or voxels, got {units!r}")
    voxel = parse_voxel_size(voxel_size)
    columns = list(columns)
    for name, option in ((id_column, "--id-column"), (neuron_column, "--neuron-column")):
        if name is not None and name not in columns:
            raise TableError(f"{where}: no column {name!r} ({option}); columns: {columns}")
    if position_columns:
        positions = tuple(position_columns)
        if len(positions) not in (1, 3):
            raise TableError(
                f"{where}: --position-columns takes x,y,z or one list column, got {positions}"
            )
        missing = [c for c in positions if c not in columns]
        if missing:
            raise TableError(
                f"{where}: no column {missing[0]!r} (--position-columns); columns: {columns}"
            )
    else:
        found = [tuple(_find(columns, [c]) for c in group) for group in POSITION_COLUMNS]
        positions = next((group for group in found if None not in group), None)
        if positions is None:
            tried = " or ".join(",".join(group) for group in POSITION_COLUMNS)
            raise TableError(
                f"{where}: no position columns (looked for {tried}; name them with "
                f"--position-columns); columns: {columns}"
            )
    if units == "voxels" and voxel is None:
        raise TableError(
            f"{where}: columns {', '.join(positions)} are in voxels (--units voxels) but no "
            "--voxel-size was given (one number or x,y,z in nm, e.g. 8 or 4,4,40)"
        )
    return TableColumns(
        id_column or _find(columns, ID_COLUMNS),
        neuron_column or _find(columns, NEURON_COLUMNS),
        positions,
        units,
        None if voxel is None else tuple(float(v) for v in voxel),
    )


def _read(path: Path, text_columns: Sequence[str]) -> pd.DataFrame:
    kind = table_kind(path)
    try:
        if kind == "csv":
            return pd.read_csv(path, sep=csv_separator(path), dtype={c: str for c in text_columns})
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_feather(path)
    except FileNotFoundError:
        raise TableError(f"{path}: no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TableError(f"{path}: not a readable {kind} table ({first})") from None


def table_header(path: Path) -> list[str]:
    """Column names without reading the rows."""
    kind = table_kind(path)
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    try:
        if kind == "csv":
            return list(pd.read_csv(path, sep=csv_separator(path), nrows=0).columns)
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


def first_duplicate(ids: pd.Series) -> tuple[int, int] | None:
    """The first row whose id comes again, and the row where it does (positions)."""
    duplicated = ids.duplicated(keep=False).to_numpy()
    if not duplicated.any():
        return None
    first = int(np.flatnonzero(duplicated)[0])
    again = (ids.iloc[first + 1 :] == ids.iloc[first]).to_numpy(dtype=bool)
    return first, first + 1 + int(np.flatnonzero(again)[0])


def duplicate_id_error(where: str, column: str, value, first: int, second: int, csv: bool):
    """The error for an id on two rows (``first``, ``second``: row numbers)."""
    return TableError(
        f"{where}, column {column}: id {value} is on {_row_name(first, csv)} and "
        f"{_row_name(second, csv)}; ids must be unique (or leave the id column out with "
        "--id-column to use row numbers)"
    )


def position_rows(
    frame: pd.DataFrame, where: str, columns: TableColumns, *, csv: bool, first_row: int = 0
) -> pd.DataFrame:
    """The checked rows of (a slice of) a table, ``first_row`` its first row number: ``row``,
    ``id`` (the row number without an id column), ``neuron_id`` (where there is a neuron
    column), the caller's ``x, y, z`` (in ``columns.units``) and ``x_nm, y_nm, z_nm``. Does not
    check that ids are unique (that needs the whole table: :func:`first_duplicate`)."""
    frame = frame.reset_index(drop=True)
    positions = columns.positions
    if len(positions) == 1:
        xyz = _position_list(frame[positions[0]], where, positions[0], csv, first_row)
    else:
        xyz = np.stack([_numbers(frame[c], where, c, csv, first_row) for c in positions], axis=1)
    voxel = columns.voxel_size_xyz_nm if columns.units == "voxels" else (1.0, 1.0, 1.0)
    rows = pd.DataFrame({"row": np.arange(first_row, first_row + len(frame), dtype=np.int64)})
    if columns.id is None:
        rows["id"] = rows["row"]
    else:
        rows["id"] = _exact_ids(frame[columns.id], where, columns.id, csv, False, first_row)
    if columns.neuron is not None:
        neuron = columns.neuron
        rows["neuron_id"] = _exact_ids(frame[neuron], where, neuron, csv, True, first_row)
    for axis, name in enumerate("xyz"):
        rows[name] = xyz[:, axis]
    for axis, name in enumerate("xyz"):
        rows[f"{name}_nm"] = xyz[:, axis] * float(voxel[axis])
    return rows


def _exact_ids(
    values: pd.Series, where: str, column: str, csv: bool, missing_ok: bool, first: int = 0
):
    """Whole-number ids as int64 (never through floats: FlyWire root ids exceed 2**53), any
    other text as strings; missing ones raise unless ``missing_ok`` (then <NA>)."""
    if pd.api.types.is_integer_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        return values.astype("Int64" if missing_ok else np.int64)
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if (finite != np.floor(finite)).any() or (finite.abs() >= 2**53).any():
            i = int(np.flatnonzero(values.notna() & (values != np.floor(values)))[0])
            raise TableError(
                f"{where}, column {column}, {_row_name(first + i, csv)}: id {values.iloc[i]!r} is "
                "not a whole number (store ids as integers or text)"
            )
        values = values.astype("Int64")
    text = values.astype("string").str.strip()
    absent = text.isna() | (text == "")
    if absent.any() and not missing_ok:
        i = int(np.flatnonzero(absent.to_numpy())[0])
        raise TableError(f"{where}, column {column}, {_row_name(first + i, csv)}: no id")
    present = text[~absent]
    if present.str.fullmatch(r"-?\d+").all() and (present.str.len() <= 19).all():
        numbers = [int(v) for v in present]
        if all(abs(v) <= _INT64_MAX for v in numbers):
            result = pd.Series(pd.NA, index=values.index, dtype="Int64")
            result[~absent] = numbers
            return result if missing_ok else result.astype(np.int64)
    return text.where(~absent, pd.NA)


def _numbers(values: pd.Series, where: str, column: str, csv: bool, first: int = 0) -> np.ndarray:
    """A coordinate column as float64; text or a missing value raises naming the row."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        what = values.iloc[i]
        problem = "is empty" if pd.isna(what) else f"{str(what)!r} is not a number"
        raise TableError(f"{where}, column {column}, {_row_name(first + i, csv)}: {problem}")
    return numeric.to_numpy(dtype=np.float64)


def _position_list(
    values: pd.Series, where: str, column: str, csv: bool, first: int = 0
) -> np.ndarray:
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
                f"{where}, column {column}, {_row_name(first + i, csv)}: expected three numbers "
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
    options = {
        "id_column": id_column,
        "neuron_column": neuron_column,
        "position_columns": position_columns,
        "units": units,
        "voxel_size": voxel_size,
    }
    if isinstance(table, pd.DataFrame):
        source, csv, frame = "<DataFrame>", False, table.reset_index(drop=True)
        columns = choose_columns(list(frame.columns), source, **options)
    else:
        path = Path(table).expanduser()
        source, csv = str(path), table_kind(path) == "csv"
        columns = choose_columns(table_header(path), source, **options)
        frame = _read(path, columns.text_columns())
    if len(frame) == 0:
        raise TableError(f"{source}: the table has no rows")
    rows = position_rows(frame, source, columns, csv=csv)
    if columns.id is not None:
        twice = first_duplicate(rows["id"])
        if twice is not None:
            raise duplicate_id_error(source, columns.id, rows["id"].iloc[twice[0]], *twice, csv)
    neuron = columns.neuron
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
        id_column=columns.id,
        neuron_column=columns.neuron,
        position_columns=columns.positions,
        units=columns.units,
        voxel_size_xyz_nm=columns.voxel_size_xyz_nm,
        neurons_listed=listed,
        neurons_missing=missing,
    )
