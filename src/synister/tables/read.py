"""Table files: which format a name says, the header, the rows, and the one error type.

Every reader of user tables (``db import``, ``predict-positions``, ``predict-volume``,
``explain``, the service) opens files here, so a file is accepted or refused, and its places
named, the same way everywhere: CSV lines counted from 1 with the header as line 1, Parquet and
Feather rows from 0 (the ``row`` column of the outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from pyarrow import ArrowException

CSV_ENDINGS = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
PARQUET_ENDINGS = (".parquet", ".pq")
FEATHER_ENDINGS = (".feather", ".arrow", ".ipc")
#: what a folder given to ``db import`` contributes (``.txt`` files are seldom tables there)
FOLDER_ENDINGS = tuple(e for e in CSV_ENDINGS + PARQUET_ENDINGS + FEATHER_ENDINGS if e != ".txt")


class TableError(ValueError):
    """Input that cannot be used (a table, an export file, or the options to read them); the
    message is one line naming the file, the line or row, and the column. ``columns``: the
    table's column names, where a column was not found among them (a form can offer them)."""

    def __init__(self, message: str, *, columns: Sequence[str] | None = None):
        super().__init__(message)
        self.columns = None if columns is None else [str(c) for c in columns]


def table_kind(path: Path) -> str:
    """``csv``, ``parquet`` or ``feather``, from the file name."""
    name = path.name.lower()
    for kind, endings in (
        ("csv", CSV_ENDINGS),
        ("parquet", PARQUET_ENDINGS),
        ("feather", FEATHER_ENDINGS),
    ):
        if name.endswith(endings):
            return kind
    raise TableError(
        f"{path}: unknown table type; use CSV ({', '.join(CSV_ENDINGS)}), Parquet "
        f"({', '.join(PARQUET_ENDINGS)}) or Feather ({', '.join(FEATHER_ENDINGS)})"
    )


def table_stem(path: Path) -> str:
    """The file name without its table ending (``gaba`` of ``gaba.csv.gz``)."""
    name = path.name
    for ending in sorted(CSV_ENDINGS + PARQUET_ENDINGS + FEATHER_ENDINGS, key=len, reverse=True):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem


def csv_separator(path: Path) -> str:
    return "\t" if ".tsv" in path.name.lower() else ","


def row_name(i: int, csv: bool) -> str:
    """How messages name row ``i`` (from 0) of a table: its CSV line, or its row."""
    return f"line {i + 2}" if csv else f"row {i}"


def _unreadable(path: Path, kind: str, error: Exception) -> TableError:
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return TableError(f"{path}: not a readable {kind} table ({first})")


def _csv_names(path: Path) -> list[str]:
    """The header as pandas reads it (leading blanks dropped, trailing ones kept)."""
    return list(pd.read_csv(path, sep=csv_separator(path), nrows=0, skipinitialspace=True).columns)


def _feather_names(path: Path) -> list[str]:
    """From the footer (Feather version 2), without reading a value."""
    with open(path, "rb") as f:
        version2 = f.read(6) == b"ARROW1"
    if version2:
        import pyarrow.ipc as ipc

        with ipc.open_file(path) as reader:
            return reader.schema.names
    import pyarrow.feather as feather

    return feather.read_table(path).schema.names


def table_header(path: Path) -> list[str]:
    """Column names (surrounding blanks removed) without reading the rows."""
    kind = table_kind(path)
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    try:
        if kind == "csv":
            names = _csv_names(path)
        elif kind == "parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
        else:
            names = _feather_names(path)
    except (OSError, ValueError, pd.errors.ParserError, ArrowException) as error:
        raise _unreadable(path, kind, error) from None
    return [str(name).strip() for name in names]


def read_frame(path: Path, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The whole table, column names stripped; ``text_columns`` of a CSV stay text (ids are
    never parsed through floats), the others as pandas infers them."""
    kind = table_kind(path)
    try:
        if kind == "csv":
            raw = {str(name).strip(): name for name in _csv_names(path)}
            frame = pd.read_csv(
                path,
                sep=csv_separator(path),
                dtype={raw[c]: str for c in text_columns if c in raw},
                skipinitialspace=True,
            )
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_feather(path)
    except FileNotFoundError:
        raise TableError(f"{path}: no such file") from None
    except (OSError, ValueError, pd.errors.ParserError, ArrowException) as error:
        raise _unreadable(path, kind, error) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame
