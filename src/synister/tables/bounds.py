"""A positions table read within bounds: what its metadata says is checked before any value is
decoded, and only the columns used are decoded.

A Parquet file of 50 million zeros takes 681 kB and 1.2 GB once decoded; a Feather file's
footer counts its rows without decompressing them; a CSV file is read up to one row past the
limit. So the row count (Parquet, Feather: from the footer), the column types and the bytes per
row of the columns used (Parquet: from the footer; CSV: the longest line) are checked first,
and an id column that would carry ids longer than
:data:`~synister.tables.text.MAX_ID_CHARACTERS` is refused from its size alone. Every decoding
error names the file and, where one column is at fault, the column.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa

from .columns import TableColumns
from .read import TableError, _csv_names, _unreadable, csv_separator, table_header, table_kind
from .text import MAX_ID_CHARACTERS

#: bytes an id may take per row in a Parquet column chunk (UTF-8, length prefix) ...
_ID_BYTES = 8 + 4 * MAX_ID_CHARACTERS
#: ... and what a column chunk may hold beyond its rows' share (page headers, statistics)
_SLACK_BYTES = 65536
_SCAN_BYTES = 1 << 20
T = TypeVar("T")
_NULLABLE_INTEGERS = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
}


@dataclass(frozen=True)
class TableLimits:
    """Bounds checked before values are decoded; None: no bound (a command reads a table of
    any size; the service sets both)."""

    max_rows: int | None = None
    #: bytes per row: a CSV file's longest line, the Parquet columns used (uncompressed)
    max_row_bytes: int | None = None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _too_many(where: str, rows: int, limits: TableLimits, more: bool = False) -> None:
    if limits.max_rows is not None and rows > limits.max_rows:
        count = f"more than {limits.max_rows}" if more else str(rows)
        raise TableError(f"{where}: {count} rows; at most {limits.max_rows}")


def _roles(columns: TableColumns) -> dict[str, str]:
    """Each column used, with what it holds (``id``, ``position`` or ``position list``)."""
    roles = {c: "id" for c in (columns.id, columns.neuron) if c}
    list_column = len(columns.positions) == 1
    for name in columns.positions:
        roles[name] = "position list" if list_column else "position"
    return roles


def _type_problem(kind: pa.DataType, role: str) -> str | None:
    """Why values of ``kind`` cannot hold ``role``, else None."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    text = text or pa.types.is_string_view(kind)
    number = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    if pa.types.is_null(kind) or text or (number and role != "position list"):
        return None
    if role == "position list" and (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    ):
        inner = kind.value_type
        if pa.types.is_integer(inner) or pa.types.is_floating(inner):
            return None
        return f"lists of {inner} (expected lists of three numbers x, y, z)"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind):
        return "binary data, not text"
    expected = {"id": "text or whole numbers", "position": "numbers"}.get(role, "x, y, z lists")
    return f"{kind} values (expected {expected})"


def _check_types(schema: pa.Schema, stored: dict[str, str], roles: dict[str, str], where: str):
    for name, role in roles.items():
        problem = _type_problem(schema.field(stored[name]).type, role)
        if problem is not None:
            raise TableError(f"{where}, column {name}: {problem}")


def _decoded(table: pa.Table, name: str, where: str) -> pd.Series:
    """One column as pandas, after a full check of its values (Parquet text that is not
    UTF-8 would otherwise surface in pandas as an unnamed error)."""
    column = table.column(0)
    try:
        column.validate(full=True)
        if pa.types.is_integer(column.type) and column.null_count:  # never through floats
            return column.to_pandas(types_mapper=_NULLABLE_INTEGERS.get)
        return column.to_pandas()
    except MemoryError:
        raise
    except (pa.ArrowException, ValueError) as error:
        raise TableError(f"{where}, column {name}: cannot be read ({_first_line(error)})") from None


def _each_column(names, where: str, read) -> pd.DataFrame:
    """The columns ``names``, each decoded alone by ``read(name)`` (an Arrow table), so that
    an error names its column."""
    frame = {}
    for name in names:
        try:
            table = read(name)
        except MemoryError:  # Arrow's too: the caller's bound, not the file's fault
            raise
        except (OSError, ValueError, pa.ArrowException) as error:
            raise TableError(
                f"{where}, column {name}: cannot be read ({_first_line(error)})"
            ) from None
        frame[name] = _decoded(table, name, where)
    return pd.DataFrame(frame)


def _stored_names(names: list[str]) -> dict[str, str]:
    return {str(n).strip(): n for n in names}


def _parquet(path: Path, columns: TableColumns, limits: TableLimits) -> pd.DataFrame:
    import pyarrow.parquet as pq

    where = str(path)
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PAR1":
                raise ValueError("no Parquet magic bytes at its start")
        file = pq.ParquetFile(path)
        meta = file.metadata
        schema = file.schema_arrow
    except MemoryError:
        raise
    except (OSError, ValueError, pa.ArrowException) as error:
        raise _unreadable(path, "parquet", error) from None
    rows = meta.num_rows
    _too_many(where, rows, limits)
    stored = _stored_names(schema.names)
    roles = _roles(columns)
    _check_types(schema, stored, roles, where)
    leaves = {meta.schema.column(i).path.split(".")[0]: i for i in range(meta.num_columns)}
    used_bytes = 0
    for name, role in roles.items():
        index = leaves.get(stored[name])
        if index is None:
            continue
        chunks = [meta.row_group(g).column(index) for g in range(meta.num_row_groups)]
        values = sum(c.num_values for c in chunks)
        size = sum(c.total_uncompressed_size for c in chunks)
        used_bytes += size
        per_row = 3 if role == "position list" else 1
        if values > rows * per_row:
            raise TableError(
                f"{where}, column {name}: {values} values for {rows} rows (expected "
                f"{'x, y, z' if per_row == 3 else 'one'} per row)"
            )
        if role == "id" and size > rows * _ID_BYTES + _SLACK_BYTES:
            raise TableError(
                f"{where}, column {name}: {size} bytes of ids for {rows} rows; an id is at most "
                f"{MAX_ID_CHARACTERS} characters"
            )
    if limits.max_row_bytes is not None and used_bytes > (
        rows * limits.max_row_bytes + _SLACK_BYTES * len(roles)
    ):
        raise TableError(
            f"{where}: the columns {', '.join(roles)} take {used_bytes} bytes for {rows} rows; "
            f"at most {limits.max_row_bytes} per row"
        )
    return _each_column(roles, where, lambda name: file.read([stored[name]], use_threads=False))


def _feather(path: Path, columns: TableColumns, limits: TableLimits) -> pd.DataFrame:
    import pyarrow.feather as feather
    import pyarrow.ipc as ipc

    where = str(path)
    try:
        with open(path, "rb") as f:
            version2 = f.read(6) == b"ARROW1"
        if not version2:  # Feather version 1 (before 2020): no footer to count rows from
            if limits.max_rows is not None:
                raise TableError(f"{where}: a Feather file of version 1; write it again (v2)")
            frame = feather.read_table(path).to_pandas()
            return frame.rename(columns=lambda c: str(c).strip())[list(_roles(columns))]
        reader = ipc.open_file(path)
        schema = reader.schema
        rows = reader.count_rows()  # from the batches' metadata: nothing is decompressed
    except MemoryError:
        raise
    except (OSError, ValueError, pa.ArrowException) as error:
        raise _unreadable(path, "feather", error) from None
    _too_many(where, rows, limits)
    stored = _stored_names(schema.names)
    roles = _roles(columns)
    _check_types(schema, stored, roles, where)
    return _each_column(
        roles, where, lambda name: feather.read_table(path, [stored[name]], use_threads=False)
    )


def scan_csv(path: Path, max_line_bytes: int | None = None) -> None:
    """Read a CSV file once, a block at a time: it must be UTF-8 text, and no line longer
    than ``max_line_bytes``; the error names the line."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, current = 1, 0  # the line being read (from 1) and its bytes so far
    try:
        with opener(path, "rb") as f:
            while block := f.read(_SCAN_BYTES):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as error:
                    data = error.object  # what the decoder held back, then the block
                    at = line + data[: error.start].count(b"\n")
                    raise TableError(
                        f"{path}, line {at}: not UTF-8 text (byte 0x{data[error.start]:02x})"
                    ) from None
                ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
                lengths = np.diff(ends, prepend=-1) - 1
                if len(ends):
                    lengths[0] += current
                    current = len(block) - int(ends[-1]) - 1
                else:
                    current += len(block)
                if max_line_bytes is not None:
                    over = np.flatnonzero(lengths > max_line_bytes)
                    if len(over) or current > max_line_bytes:
                        at = line + (int(over[0]) if len(over) else len(ends))
                        raise TableError(
                            f"{path}, line {at}: longer than {max_line_bytes} bytes (the most a "
                            "row may take)"
                        )
                line += len(ends)
            decoder.decode(b"", final=True)
    except (OSError, EOFError, zlib.error) as error:
        raise _unreadable(path, "csv", error) from None
    except UnicodeDecodeError:
        raise TableError(
            f"{path}, line {line}: not UTF-8 text (it ends within a character)"
        ) from None


def _csv_options(path: Path, columns: TableColumns, limits: TableLimits, id_type) -> dict:
    """pandas.read_csv's options for the columns used, ids read as ``id_type``."""
    raw = _stored_names(_csv_names(path))
    return {
        "sep": csv_separator(path),
        "usecols": [raw[c] for c in _roles(columns)],
        "dtype": {raw[c]: id_type for c in columns.text_columns()},
        "skipinitialspace": True,
        "nrows": None if limits.max_rows is None else limits.max_rows + 1,
    }


def _csv(path: Path, columns: TableColumns, limits: TableLimits) -> pd.DataFrame:
    where = str(path)
    try:
        try:  # ids are mostly whole numbers: as such they take a fifth of the memory of text
            frame = pd.read_csv(path, **_csv_options(path, columns, limits, "Int64"))
        except (ValueError, OverflowError, TypeError):
            # text (never through floats); values.exact_ids decides
            frame = pd.read_csv(path, **_csv_options(path, columns, limits, str))
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise _unreadable(path, "csv", error) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _too_many(where, len(frame), limits, more=True)
    return frame


class _NotWholeNumbers(Exception):  # noqa: N818 - a signal to read the ids again, as text
    """A CSV file's id columns are not all whole numbers."""


def _csv_chunks(path: Path, reader, as_numbers: bool) -> Iterator[pd.DataFrame]:
    while True:
        try:
            frame = next(reader)
        except StopIteration:
            return
        except (ValueError, OverflowError, TypeError) as error:  # pandas' ParserError too
            if as_numbers:
                raise _NotWholeNumbers from None
            raise _unreadable(path, "csv", error) from None
        except OSError as error:
            raise _unreadable(path, "csv", error) from None
        frame.columns = [str(c).strip() for c in frame.columns]
        if len(frame):
            yield frame


def csv_parts(
    path: Path,
    columns: TableColumns,
    limits: TableLimits,
    chunk_rows: int,
    convert: Callable[[pd.DataFrame, int], T],
) -> list[T]:
    """``convert(frame, first_row)`` of each chunk of at most ``chunk_rows`` rows of the CSV
    file at ``path`` (the columns of ``columns``), read as :func:`read_columns` reads the whole
    file: id columns as whole numbers where all values in the file are, else as text. The
    parser's buffers and ``convert``'s temporaries are those of one chunk, not of the file."""
    where = str(path)
    for as_numbers in (True, False):
        parts, first = [], 0
        try:
            options = _csv_options(path, columns, limits, "Int64" if as_numbers else str)
            with pd.read_csv(path, **options, chunksize=chunk_rows) as reader:
                for frame in _csv_chunks(path, reader, as_numbers):
                    parts.append(convert(frame, first))
                    first += len(frame)
                    _too_many(where, first, limits, more=True)
        except _NotWholeNumbers:
            continue
        except (OSError, ValueError, pd.errors.ParserError) as error:
            if isinstance(error, TableError):
                raise
            if as_numbers:
                continue  # as read_columns: the second reading names what is wrong
            raise _unreadable(path, "csv", error) from None
        return parts
    raise AssertionError("unreachable")


def checked_header(path: Path, limits: TableLimits) -> list[str]:
    """The column names of the table at ``path``, read from its footer (Parquet, Feather) or
    after one pass over a CSV file (:func:`scan_csv`); no value is decoded."""
    if table_kind(path) == "csv" and path.is_file():
        scan_csv(path, limits.max_row_bytes)
    return table_header(path)


def read_columns(path: Path, columns: TableColumns, limits: TableLimits) -> pd.DataFrame:
    """The columns of ``columns`` (chosen from :func:`checked_header`) from the table at
    ``path`` (names stripped; id columns of a CSV file as text), within ``limits``; raises
    :class:`TableError`."""
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    reader = {"csv": _csv, "parquet": _parquet, "feather": _feather}[table_kind(path)]
    return reader(path, columns, limits)
