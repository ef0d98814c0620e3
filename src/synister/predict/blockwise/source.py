"""Where synapses come from, and the frozen copy of them sorted by block.

A source (a CSV/Parquet/Feather table, or the synapses of a database, optionally one split
part) is read once, in batches; each batch is checked and converted exactly as
``predict-positions`` reads a table (:func:`synister.tables.position_rows`: the same
columns, units and one-line errors) and staged with each synapse's block. DuckDB then sorts the
staged rows by block into one Parquet file (row groups of 8,192 rows) and counts the synapses
per block. Why DuckDB: it sorts out of core within a memory limit, so a table of 244 million
synapses never has to fit in memory, and a worker reads its block as a contiguous row range (one
or two row groups) instead of scanning the whole table per block, as filtering an unsorted table
would. The copy also freezes the input: a resumed run predicts exactly the synapses it planned,
whatever changed in the source.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ...tables import (
    TableColumns,
    TableError,
    choose_columns,
    csv_separator,
    duplicate_id_error,
    position_rows,
    table_header,
    table_kind,
)
from ...volumes.sanity import (
    OUTSIDE_VOLUME,
    SAMPLE,
    STATUSES,
    PositionCheck,
    check_positions,
    patch_status,
)
from .layout import BlockGrid

DATABASE_PREFIXES = ("sqlite:", "postgresql:", "postgres:", "mongodb:", "mongodb+srv:")
BATCH_ROWS = 262_144
ROW_GROUP_ROWS = 8_192
#: id columns of the staged rows (text where the source holds text: see :func:`stage`)
ID_COLUMNS = ("id", "neuron_id")
STAGED_EXTRA = ("_block", "_sz", "_sy", "_sx")
#: the database's columns (see :meth:`synister.db.Database.synapses`)
DATABASE_COLUMNS = TableColumns("synapse_id", "skeleton_id", ("x", "y", "z"))


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
            from ...db import public_url

            return {"database": public_url(self.location), "split": self.split, "part": self.part}
        path = Path(self.location).expanduser().resolve()
        stat = path.stat()
        return {"table": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@dataclass
class Batches:
    """A source opened: its columns, its rows in batches (pandas, as the file holds them; read
    lazily) and what names it in errors."""

    columns: TableColumns
    frames: Iterator[pd.DataFrame]
    where: str
    csv: bool = False


def open_source(source: Source, **column_options) -> Batches:
    """Columns and batches of ``source``; ``column_options`` are those of
    :func:`synister.tables.choose_columns` (tables only)."""
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
    path = Path(source.location).expanduser()
    where, kind = str(path), table_kind(path)
    header = table_header(path)  # names stripped of blanks, as predict-positions reads them
    columns = choose_columns(header, where, **column_options)
    wanted = columns.source_columns()
    if kind == "csv":  # all as text: the values are checked as predict-positions checks them
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in wanted}, strings_can_be_null=True
        )
        parse = pacsv.ParseOptions(delimiter=csv_separator(path))
        read = pacsv.ReadOptions(column_names=header, skip_rows=1)
        fmt = ds.CsvFileFormat(parse_options=parse, convert_options=convert, read_options=read)
    else:
        fmt = "parquet" if kind == "parquet" else "ipc"
    try:
        dataset = ds.dataset(path, format=fmt)
    except (pa.ArrowInvalid, OSError) as error:
        raise TableError(f"{path}: not a readable {kind} table ({_first_line(error)})") from None
    stored = {name.strip(): name for name in dataset.schema.names}
    projection = {name: ds.field(stored[name]) for name in wanted}
    scanner = dataset.scanner(columns=projection, batch_size=BATCH_ROWS)
    return Batches(columns, _frames(scanner.to_batches(), where, kind), where, kind == "csv")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _frames(batches, where: str, kind: str) -> Iterator[pd.DataFrame]:
    try:
        for batch in batches:
            if batch.num_rows:
                yield batch.to_pandas()
    except (pa.ArrowInvalid, OSError) as error:
        raise TableError(f"{where}: not a readable {kind} table ({_first_line(error)})") from None


def _database_batches(source: Source) -> Batches:
    where = f"database {source.public()['database']}"
    if source.split:
        where += f" split {source.split!r}" + (f" part {source.part!r}" if source.part else "")
    elif source.part:
        raise ValueError("--part needs --split (the split whose part to predict)")

    def frames() -> Iterator[pd.DataFrame]:  # the database is read only when staging
        from ...db import open_database

        with open_database(source.location) as db:
            frame = db.synapses(split=source.split, part=source.part)
        for first in range(0, len(frame), BATCH_ROWS):
            yield frame.iloc[first : first + BATCH_ROWS]

    return Batches(DATABASE_COLUMNS, frames(), where)


def stage(
    batches: Batches,
    volume,
    grid: BlockGrid,
    patch_vox: Sequence[int],
    staged_file: Path,
) -> tuple[int, dict[str, bool], PositionCheck]:
    """Write the checked rows (:func:`~synister.tables.position_rows`) with their block
    (-1: outside the volume) and patch start to ``staged_file``; returns how many, per id
    column held as text whether every batch found whole numbers only (then the whole column is
    numbers, as ``predict-positions`` would read it: :func:`sort_by_block` casts it), and where
    the positions fall in the volume (:func:`~synister.volumes.sanity.check_positions`, its
    likely cause judged on the first :data:`~synister.volumes.sanity.SAMPLE` rows)."""
    patch = np.asarray(patch_vox, dtype=np.int64)
    writer = None
    first_row = 0
    numeric: dict[str, bool] = {}
    counts = dict.fromkeys(STATUSES, 0)
    low, high = np.full(3, np.inf), np.full(3, -np.inf)
    sample, sample_status = [], []
    try:
        for frame in batches.frames:
            rows = position_rows(
                frame, batches.where, batches.columns, csv=batches.csv, first_row=first_row
            )
            for name in ID_COLUMNS:
                if name in rows and not pd.api.types.is_integer_dtype(rows[name].dtype):
                    numeric[name] = False
                elif name in rows and (name in numeric or _text(frame, batches.columns, name)):
                    numeric.setdefault(name, True)
                if name in numeric:  # one type in every batch; decided in sort_by_block
                    rows[name] = rows[name].astype("string")
            centers = rows[["z_nm", "y_nm", "x_nm"]].to_numpy(dtype=np.float64)
            starts = volume.patch_starts_vox(centers, patch)
            status = patch_status(starts, patch, volume.shape_vox)
            for name in STATUSES:
                counts[name] += int((status == name).sum())
            low, high = np.fmin(low, centers.min(axis=0)), np.fmax(high, centers.max(axis=0))
            if first_row < SAMPLE:
                sample.append(centers[: SAMPLE - first_row])
                sample_status.append(status[: SAMPLE - first_row])
            block = grid.linear_index(starts + patch // 2)
            block[status == "outside_volume"] = -1
            rows["_block"] = block
            for axis, name in enumerate(("_sz", "_sy", "_sx")):
                rows[name] = starts[:, axis]
            table = pa.Table.from_pandas(rows, preserve_index=False).replace_schema_metadata()
            if writer is None:
                writer = pq.ParquetWriter(staged_file, table.schema)
            writer.write_table(table.cast(writer.schema))
            first_row += len(rows)
    finally:
        if writer is not None:
            writer.close()
    if first_row == 0:
        raise TableError(f"{batches.where}: the table has no rows")
    columns, sample_status = batches.columns, np.concatenate(sample_status)
    check = check_positions(
        volume, np.concatenate(sample), patch, units=columns.units,
        voxel_size_xyz_nm=columns.voxel_size_xyz_nm, status=sample_status,
    )  # fmt: skip
    if first_row > len(sample_status):  # the counts and range of every row
        scale = first_row / len(sample_status)
        check = replace(
            check, count=first_row, ok=counts["ok"], partly_outside=counts["partly_outside"],
            outside=counts[OUTSIDE_VOLUME], table_low_nm=tuple(low.tolist()),
            table_high_nm=tuple(high.tolist()), fixed_ok=round(check.fixed_ok * scale),
        )  # fmt: skip
    return first_row, numeric, check


def _text(frame: pd.DataFrame, columns: TableColumns, name: str) -> bool:
    """Whether the source column behind staged id column ``name`` holds text."""
    column = columns.id if name == "id" else columns.neuron
    return column is not None and not pd.api.types.is_numeric_dtype(frame[column].dtype)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def sort_by_block(
    staged_file: Path,
    sorted_file: Path,
    batches: Batches,
    numeric: dict[str, bool],
    tmp_dir: Path,
    memory_limit: str = "2GB",
) -> pd.DataFrame:
    """Sort the staged synapses by block (those outside the volume, block -1, first; then by
    row) into ``sorted_file``; id columns staged as text become numbers where ``numeric``.

    Returns per block with synapses (ascending, -1 included): ``block``, ``n``, ``first_row``
    and the patch starts' bounding box ``lo_z..hi_x`` (exclusive of the patch size). Raises
    :class:`TableError` for an id on two rows, as ``predict-positions`` does.
    """
    import duckdb

    names = [n for n in pq.read_schema(staged_file).names if n not in STAGED_EXTRA]
    selected = ", ".join(
        f"CAST({_quote(n)} AS BIGINT) AS {_quote(n)}" if numeric.get(n) else _quote(n)
        for n in names
    )
    rows = f"(SELECT {selected}, _block FROM read_parquet({_literal(staged_file)}))"
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute(f"SET temp_directory = {_literal(tmp_dir)}")
        if batches.columns.id is not None:
            twice = con.execute(
                f"WITH t AS {rows}, d AS (SELECT id, min(row) AS a FROM t GROUP BY id "
                "HAVING count(*) > 1 ORDER BY a LIMIT 1) "
                "SELECT d.id, d.a, min(t.row) FROM d JOIN t ON t.id = d.id AND t.row > d.a "
                "GROUP BY d.id, d.a"
            ).fetchone()
            if twice is not None:
                value, first, second = twice
                column, csv = batches.columns.id, batches.csv
                raise duplicate_id_error(batches.where, column, value, first, second, csv)
        con.execute(
            f"COPY (SELECT * FROM {rows} ORDER BY _block, row) TO {_literal(sorted_file)} "
            f"(FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, COMPRESSION zstd)"
        )
        blocks = con.execute(
            f"SELECT _block AS block, count(*) AS n, min(_sz) AS lo_z, min(_sy) AS lo_y, "
            f"min(_sx) AS lo_x, max(_sz) AS hi_z, max(_sy) AS hi_y, max(_sx) AS hi_x "
            f"FROM read_parquet({_literal(staged_file)}) GROUP BY _block ORDER BY _block"
        ).df()
    finally:
        con.close()
    blocks["first_row"] = np.cumsum(blocks["n"].to_numpy()) - blocks["n"].to_numpy()
    return blocks.astype({"block": np.int64, "n": np.int64, "first_row": np.int64})


_NULLABLE = {pa.int64(): pd.Int64Dtype()}


def rows_frame(rows: pa.Table) -> pd.DataFrame:
    """Staged rows as :func:`~synister.tables.position_rows` gives them (its dtypes:
    ``id`` int64 or text, ``neuron_id`` nullable Int64 or text), without the block."""
    frame = rows.drop_columns([c for c in rows.column_names if c.startswith("_")]).to_pandas()
    for name in ID_COLUMNS:
        if name not in frame:
            continue
        if pa.types.is_integer(rows.schema.field(name).type):  # never through floats
            exact = rows.column(name).cast(pa.int64()).to_pandas(types_mapper=_NULLABLE.get)
            frame[name] = exact.astype(np.int64) if name == "id" else exact
        else:
            frame[name] = frame[name].astype("string")
    return frame


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
        self._lock = threading.Lock()  # read by several read-ahead threads

    def read(self, linear: int) -> pa.Table:
        """All rows of block ``linear`` (-1: those outside the volume)."""
        n = self.count.get(int(linear), 0)
        if n == 0:
            return self.file.schema_arrow.empty_table()
        start = self.first_row[int(linear)]
        first = int(np.searchsorted(self.group_ends, start, side="right"))
        last = int(np.searchsorted(self.group_ends, start + n - 1, side="right"))
        with self._lock:
            table = self.file.read_row_groups(list(range(first, last + 1)))
        offset = start - (int(self.group_ends[first - 1]) if first else 0)
        return table.slice(offset, n)
