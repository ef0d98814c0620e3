"""Where synapses come from, and the frozen copy of them sorted by block.

A source (a CSV/Parquet/Feather table, or the synapses of a database, optionally one split
part) is read once, in batches, and staged with each synapse's block; DuckDB then sorts the
staged rows by block into one Parquet file (row groups of 8,192 rows, with min/max
statistics of ``_block``) and counts the synapses per block. Why DuckDB: it sorts out of core
within a memory limit, so a table of 244 million synapses never has to fit in memory, and a
worker reads its block as a contiguous row range (one or two row groups) instead of scanning
the whole table per block, as filtering an unsorted table would. The copy also freezes the
input: a resumed run predicts exactly the synapses it planned, whatever changed in the source.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .adapters import STATUS_OUTSIDE, Columns, discover_columns, patch_status
from .layout import BlockGrid

DATABASE_PREFIXES = ("sqlite:", "postgresql:", "postgres:", "mongodb:", "mongodb+srv:")
TABLE_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".feather": "ipc",
    ".arrow": "ipc",
    ".ipc": "ipc",
}
BATCH_ROWS = 262_144
ROW_GROUP_ROWS = 8_192
COMPUTED = ("x_nm", "y_nm", "z_nm")
STAGED_EXTRA = ("_row", "_block", "_sz", "_sy", "_sx")


@dataclass
class Source:
    """The synapses to predict: a table file, or a database (all, or one split / part)."""

    location: str  # table path, or database URL
    split: str | None = None
    part: str | None = None

    @property
    def is_database(self) -> bool:
        return self.location.startswith(DATABASE_PREFIXES)

    def public(self) -> dict:
        """What identifies the source, safe to store and print (no password)."""
        if self.is_database:
            from ...evaluate import public_url

            return {"database": public_url(self.location), "split": self.split, "part": self.part}
        path = Path(self.location).resolve()
        stat = path.stat()
        return {"table": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def table_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = TABLE_FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise ValueError(
            f"{path}: unknown table format; use .csv, .tsv, .parquet or .feather (or a database "
            "URL sqlite:///..., postgresql://..., mongodb://...)"
        )
    return fmt


def open_source(source: Source, **column_options) -> tuple[Columns, Iterator[pa.RecordBatch], str]:
    """Columns and (lazily read) batches of ``source`` (``column_options``: see
    :func:`discover_columns`); the last item names the source in errors."""
    if source.is_database:
        given = [k for k, v in column_options.items() if v is not None and v != "nm"]
        if given:
            raise ValueError(
                f"{', '.join(given)}: column and unit options apply to tables; a database "
                "holds synapse_id, skeleton_id and positions in nm"
            )
        return _database_batches(source)
    if source.split or source.part:
        raise ValueError("--split/--part select synapses of a database; the source is a table")
    path = Path(source.location)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: synapse table not found")
    fmt = table_format(path)
    where = str(path)
    names: list[str] = []
    try:
        if fmt == "csv":
            delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
            parse = pacsv.ParseOptions(delimiter=delimiter)
            dataset = ds.dataset(path, format=ds.CsvFileFormat(parse_options=parse))
        else:
            dataset = ds.dataset(path, format=fmt)
    except pa.ArrowInvalid as err:
        raise ValueError(_arrow_error(err, names, where)) from err
    names = dataset.schema.names
    columns = discover_columns(names, where, **column_options)
    scanner = dataset.scanner(columns=columns.source_columns(), batch_size=BATCH_ROWS)
    return columns, _checked_batches(scanner.to_batches(), names, where), where


def _arrow_error(err: Exception, names: list[str], where: str) -> str:
    """pyarrow's CSV message with the column's name and the line, e.g. text in a numeric
    column after the rows the types were inferred from."""
    text = str(err)
    found = re.search(r"column #(\d+): Row #(\d+): (.*)", text)
    if found and int(found.group(1)) < len(names):
        column = names[int(found.group(1))]
        return f"{where}: column {column!r} line {found.group(2)}: {found.group(3)}"
    return f"{where}: {text}"


def _checked_batches(batches, names: list[str], where: str) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except pa.ArrowInvalid as err:
        raise ValueError(_arrow_error(err, names, where)) from err


def _position_names(columns: Columns) -> list[str]:
    return [columns.position] if isinstance(columns.position, str) else list(columns.position)


def _database_batches(source: Source):
    where = f"database {source.public()['database']}"
    if source.split:
        where += f" split {source.split!r}" + (f" part {source.part!r}" if source.part else "")
    elif source.part:
        raise ValueError("--part needs --split (the split whose part to predict)")
    columns = Columns("synapse_id", "skeleton_id", ("x", "y", "z"), "nm")

    def batches() -> Iterator[pa.RecordBatch]:  # the database is read only when staging
        from ...db import open_database

        with open_database(source.location) as db:
            frame = db.synapses(split=source.split, part=source.part)
        if len(frame) == 0:
            raise ValueError(f"{where}: no synapses")
        table = pa.table(
            {
                "synapse_id": pa.array(frame["synapse_id"].to_numpy(np.int64)),
                "skeleton_id": pa.array(frame["skeleton_id"].astype("Int64"), type=pa.int64()),
                "x": frame["x"].to_numpy(np.float64),
                "y": frame["y"].to_numpy(np.float64),
                "z": frame["z"].to_numpy(np.float64),
            }
        )
        yield from table.to_batches(BATCH_ROWS)

    return columns, batches(), where


def positions_xyz_nm(batch: pa.RecordBatch, columns: Columns, where: str, first_row: int):
    """(N, 3) x, y, z nm of a batch; a non-numeric or missing value names its row."""
    if isinstance(columns.position, str):
        values = batch[columns.position]
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        if np.any(lengths != 3):
            row = int(np.flatnonzero(lengths != 3)[0])
            raise ValueError(
                f"{where}: column {columns.position!r} row {first_row + row} does not hold "
                "3 numbers (x, y, z)"
            )
        flat = pc.list_flatten(values)
        xyz = _as_float(flat, columns.position, where, first_row, 3).reshape(-1, 3)
    else:
        xyz = np.stack(
            [_as_float(batch[name], name, where, first_row) for name in columns.position], axis=1
        )
    bad = np.flatnonzero(~np.all(np.isfinite(xyz), axis=1))
    if bad.size:
        raise ValueError(
            f"{where}: row {first_row + int(bad[0])} has no finite position "
            f"({_position_names(columns)}: {xyz[bad[0]].tolist()})"
        )
    if columns.units == "voxels":
        xyz = xyz * np.asarray(columns.voxel_size_xyz_nm, dtype=np.float64)
    return xyz


def _as_float(values, name: str, where: str, first_row: int, per_row: int = 1) -> np.ndarray:
    try:
        return np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), float)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        texts = values.to_pylist()
        for i, text in enumerate(texts):
            try:
                float(text)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{where}: column {name!r} row {first_row + i // per_row} is not a number: "
                    f"{text!r}"
                ) from None
        raise


def stage(
    batches: Iterator[pa.RecordBatch],
    columns: Columns,
    volume,
    grid: BlockGrid,
    patch_vox: Sequence[int],
    staged_file: Path,
    where: str,
) -> int:
    """Write the synapses with their nm positions, row number, block (-1: outside the volume)
    and patch start to ``staged_file``; returns how many."""
    patch = np.asarray(patch_vox, dtype=np.int64)
    carried = [c for c in columns.source_columns() if c not in COMPUTED]
    writer = None
    first_row = 0
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            xyz = positions_xyz_nm(batch, columns, where, first_row)
            starts = volume.patch_starts_vox(xyz[:, ::-1], patch)
            status = patch_status(starts, patch, volume.shape_vox)
            block = grid.linear_index(starts + patch // 2)
            block[status == STATUS_OUTSIDE] = -1
            arrays = [batch[c] for c in carried] + [xyz[:, 0], xyz[:, 1], xyz[:, 2]]
            arrays += [
                np.arange(first_row, first_row + batch.num_rows, dtype=np.int64),
                block,
                starts[:, 0],
                starts[:, 1],
                starts[:, 2],
            ]
            table = pa.Table.from_arrays(arrays, names=[*carried, *COMPUTED, *STAGED_EXTRA])
            if writer is None:
                writer = pq.ParquetWriter(staged_file, table.schema)
            writer.write_table(table)
            first_row += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if first_row == 0:
        raise ValueError(f"{where}: holds no synapses")
    return first_row


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def sort_by_block(
    staged_file: Path,
    sorted_file: Path,
    columns: Columns,
    tmp_dir: Path,
    where: str,
    memory_limit: str = "2GB",
) -> pd.DataFrame:
    """Sort the staged synapses by block (those outside the volume, block -1, first) into
    ``sorted_file``.

    Returns per block with synapses (ascending, -1 included): ``block``, ``n``, ``first_row``
    and the patch starts' bounding box ``lo_z..hi_x`` (exclusive of the patch size). Raises
    when an id column holds an id twice.
    """
    import duckdb

    staged = _literal(staged_file)
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = {_literal(tmp_dir)}")
        if columns.id is not None:
            twice = con.execute(
                f"SELECT {_quote(columns.id)} AS id, count(*) AS n FROM read_parquet({staged}) "
                f"GROUP BY 1 HAVING count(*) > 1 ORDER BY n DESC LIMIT 5"
            ).fetchall()
            if twice:
                listed = ", ".join(f"{i!r} ({n} times)" for i, n in twice)
                raise ValueError(f"{where}: column {columns.id!r} repeats ids: {listed}")
        kept = [c for c in columns.source_columns() if c not in COMPUTED]
        selected = ", ".join(_quote(c) for c in [*kept, *COMPUTED, "_row", "_block"])
        con.execute(
            f"COPY (SELECT {selected} FROM read_parquet({staged}) ORDER BY _block, _row) "
            f"TO {_literal(sorted_file)} "
            f"(FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, COMPRESSION zstd)"
        )
        blocks = con.execute(
            f"SELECT _block AS block, count(*) AS n, min(_sz) AS lo_z, min(_sy) AS lo_y, "
            f"min(_sx) AS lo_x, max(_sz) AS hi_z, max(_sy) AS hi_y, max(_sx) AS hi_x "
            f"FROM read_parquet({staged}) GROUP BY _block ORDER BY _block"
        ).df()
    finally:
        con.close()
    blocks["first_row"] = np.cumsum(blocks["n"].to_numpy()) - blocks["n"].to_numpy()
    return blocks.astype({"block": np.int64, "n": np.int64, "first_row": np.int64})


class BlockRows:
    """Reads one block's rows from the sorted copy: a contiguous row range."""

    def __init__(self, sorted_file: Path, blocks: pd.DataFrame):
        self.file = pq.ParquetFile(sorted_file)
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.group_ends = np.cumsum(sizes)
        self.first_row = dict(
            zip(blocks["block"].tolist(), blocks["first_row"].tolist(), strict=True)
        )
        self.count = dict(zip(blocks["block"].tolist(), blocks["n"].tolist(), strict=True))

    def read(self, linear: int) -> pa.Table:
        """All rows of block ``linear`` (-1: those outside the volume)."""
        n = self.count.get(int(linear), 0)
        if n == 0:
            return self.file.schema_arrow.empty_table()
        start = self.first_row[int(linear)]
        first = int(np.searchsorted(self.group_ends, start, side="right"))
        last = int(np.searchsorted(self.group_ends, start + n - 1, side="right"))
        table = self.file.read_row_groups(list(range(first, last + 1)))
        offset = start - (int(self.group_ends[first - 1]) if first else 0)
        return table.slice(offset, n)
