"""A table of synapse positions read and checked: ids, neurons, positions in nm."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .bounds import TableLimits, checked_header, csv_parts, read_columns
from .columns import NEURON_COLUMNS, TableColumns, _listed, choose_columns
from .read import TableError, table_kind
from .values import duplicate_id_error, exact_ids, first_duplicate, numbers, position_list


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
    header: list[str] = field(default_factory=list)  # every column of the source

    def missing_neurons_note(self) -> str | None:
        """Why there is no per-neuron summary, where the table names no neuron (None: it
        does)."""
        if self.neuron_column is not None:
            return None
        return (
            f"{self.source}: no neuron column (looked for {', '.join(NEURON_COLUMNS)}; "
            f"columns: {', '.join(self.header)}): every position is predicted, but there is no "
            "per-neuron summary (neurons.parquet); name the column with --neuron-column"
        )

    def centers_zyx_nm(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Positions (z, y, x nm; N x 3) of ``rows`` (indices into :attr:`rows`; default
        all), a column at a time: no copy of the table's rows is made on the way."""
        count = len(self.rows) if rows is None else len(rows)
        centers = np.empty((count, 3))
        for axis, name in enumerate(("z_nm", "y_nm", "x_nm")):
            column = self.rows[name].to_numpy(dtype=np.float64)
            centers[:, axis] = column if rows is None else column[rows]
        return centers

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


def position_rows(
    frame: pd.DataFrame,
    where: str,
    columns: TableColumns,
    *,
    csv: bool,
    first_row: int = 0,
    integer_ids: bool = False,
) -> pd.DataFrame:
    """The checked rows of (a slice of) a table, ``first_row`` its first row number: ``row``,
    ``id`` (the row number without an id column), ``neuron_id`` (where there is a neuron
    column), the caller's ``x, y, z`` (in ``columns.units``) and ``x_nm, y_nm, z_nm``. Ids are
    int64 where whole numbers, else text (``integer_ids``: an error). Does not check that ids
    are unique (that needs the whole table: :func:`first_duplicate`)."""
    frame = frame.reset_index(drop=True)
    positions = columns.positions
    if len(positions) == 1:
        xyz = position_list(frame[positions[0]], where, positions[0], csv, first_row)
    else:
        xyz = np.stack([numbers(frame[c], where, c, csv, first_row) for c in positions], axis=1)
    voxel = columns.voxel_size_xyz_nm if columns.units == "voxels" else (1.0, 1.0, 1.0)
    rows = pd.DataFrame({"row": np.arange(first_row, first_row + len(frame), dtype=np.int64)})
    for role, name, missing_ok in (("id", columns.id, False), ("neuron_id", columns.neuron, True)):
        if name is not None:
            rows[role] = exact_ids(
                frame[name], where, name, csv, missing_ok, first_row, integers_only=integer_ids
            )
        elif role == "id":
            rows["id"] = rows["row"]
    for axis, name in enumerate("xyz"):
        rows[name] = xyz[:, axis]
    for axis, name in enumerate("xyz"):
        rows[f"{name}_nm"] = xyz[:, axis] * float(voxel[axis])
    return rows


def check_unique_ids(rows: pd.DataFrame, where: str, columns: TableColumns, csv: bool) -> None:
    """Raise naming the column and both rows when an id column holds an id twice."""
    if columns.id is None:
        return
    twice = first_duplicate(rows["id"])
    if twice is not None:
        raise duplicate_id_error(where, columns.id, rows["id"].iloc[twice[0]], *twice, csv)


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


def _keep_neurons(rows: pd.DataFrame, source: str, neuron: str | None, neurons):
    """The rows of the listed neurons, how many were listed, and those without a row."""
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
    if not keep.any():
        raise TableError(
            f"{source}, column {neuron}: none of the {len(wanted)} neurons listed in "
            f"--neurons has a row (first listed: {wanted[0]})"
        )
    missing = [v for v in wanted if v not in present]
    return rows[keep].reset_index(drop=True), len(wanted), missing


def _csv_in_chunks(
    path: Path, columns: TableColumns, limits: TableLimits, chunk_rows: int
) -> pd.DataFrame | None:
    """The checked rows of a CSV file read ``chunk_rows`` at a time (:func:`csv_parts`);
    None where the chunks disagree on whether an id column holds numbers or text (only the
    whole column can say: the caller reads the file whole)."""
    parts = csv_parts(
        path,
        columns,
        limits,
        chunk_rows,
        lambda frame, first: position_rows(frame, str(path), columns, csv=True, first_row=first),
    )
    if not parts:
        raise TableError(f"{path}: the table has no rows")
    for role in ("id", "neuron_id"):
        if role in parts[0] and len({str(part[role].dtype) for part in parts}) > 1:
            return None
    return pd.concat(parts, ignore_index=True)


def read_positions(
    table: str | Path | pd.DataFrame,
    *,
    id_column: str | None = None,
    neuron_column: str | None = None,
    position_columns: Sequence[str] | None = None,
    units: str = "nm",
    voxel_size: str | float | Sequence[float] | None = None,
    neurons: str | Path | Sequence | None = None,
    limits: TableLimits | None = None,
    chunk_rows: int | None = None,
) -> PositionTable:
    """Read and check a positions table (a file or a DataFrame).

    Columns are found by name (:data:`~synister.tables.columns.ID_COLUMNS`,
    :data:`~synister.tables.columns.NEURON_COLUMNS`,
    :data:`~synister.tables.columns.POSITION_COLUMNS`) unless given. ``units`` "voxels" needs
    ``voxel_size`` (one number or x,y,z nm). ``neurons`` (a file of ids, or ids) keeps only
    those neurons' rows. A file is read within ``limits`` (rows, bytes per row: see
    :func:`~synister.tables.bounds.read_columns`); ids are held to
    :func:`~synister.tables.text.text_problem`'s rule either way. With ``chunk_rows`` a CSV
    file is read and checked that many rows at a time (the rows are the same; the memory
    beyond them is a chunk's, not the file's: the service's workers read so).
    """
    options = {
        "id_column": id_column,
        "neuron_column": neuron_column,
        "position_columns": position_columns,
        "units": units,
        "voxel_size": voxel_size,
    }
    rows = None
    if isinstance(table, pd.DataFrame):
        source, csv, frame = "<DataFrame>", False, table.reset_index(drop=True)
        columns = choose_columns(list(frame.columns), source, **options)
        header = [str(c) for c in frame.columns]
    else:
        path = Path(table).expanduser()
        source, csv = str(path), table_kind(path) == "csv"
        limits = limits or TableLimits()
        header = checked_header(path, limits)
        columns = choose_columns(header, source, **options)
        rows = _csv_in_chunks(path, columns, limits, chunk_rows) if csv and chunk_rows else None
        frame = read_columns(path, columns, limits) if rows is None else None
    if rows is None:
        if len(frame) == 0:
            raise TableError(f"{source}: the table has no rows")
        rows = position_rows(frame, source, columns, csv=csv)
    check_unique_ids(rows, source, columns, csv)
    listed, missing = None, []
    if neurons is not None:
        rows, listed, missing = _keep_neurons(rows, source, columns.neuron, neurons)
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
        header=header,
    )
