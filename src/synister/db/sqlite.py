"""SQLite backend: one file holds the whole database, created when missing (unless opened
with ``create=False``, as read-only commands do: then a missing file is an error).

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``. The schema is the
shared one of :mod:`synister.db.sql`. Where the original kept a run in the MongoDB collection
``<db_name>_predictions.<run>``, this file keeps it in the table ``"predictions.<run>"`` (a
quoted name, e.g. ``SELECT * FROM "predictions.vgg_t1_p1"``), listed in ``prediction_runs``.

The file is opened in WAL mode so that readers (e.g. data-loader workers) are not blocked by a
writer. Bulk writes are one ``executemany`` inside one transaction; id-list filters go through
temporary tables, so a query is one statement however many ids it names.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .base import DatabaseError
from .names import check_run_name
from .sql import SQLDatabase

PREFIX = "sqlite:///"
BUSY_TIMEOUT_MS = 60_000
#: page cache per connection (KiB, grown on demand): with SQLite's 2 MiB default, index updates
#: of a 500,000-row import thrash and the import takes about twice as long.
CACHE_KIB = 131_072


def path_from_url(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (``:memory:`` is allowed for throwaway use)."""
    if not url.startswith(PREFIX) or len(url) == len(PREFIX):
        raise DatabaseError(
            f"bad SQLite URL {url!r}: expected sqlite:///relative.db or sqlite:////absolute.db"
        )
    return url[len(PREFIX) :]


def _python_values(frame: pd.DataFrame) -> list[tuple]:
    """Rows of plain Python values (None for missing) that sqlite3 can bind."""
    columns = []
    for name in frame.columns:
        values = frame[name]
        if values.dtype.kind in "iu":
            columns.append(values.to_numpy().tolist())
        elif values.dtype.kind == "f":
            array = values.to_numpy()
            column = array.astype(object)
            column[np.isnan(array)] = None
            columns.append(column.tolist())
        else:  # nullable integers, text: NA becomes None, integers stay Python ints
            columns.append(values.to_numpy(dtype=object, na_value=None).tolist())
    return list(zip(*columns, strict=True))


@contextmanager
def transaction(connection: sqlite3.Connection, write: bool):
    """One transaction on an autocommit connection (``isolation_level=None``): ``BEGIN
    IMMEDIATE`` takes the write lock up front, so two writers wait instead of deadlocking."""
    cur = connection.cursor()
    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield cur
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    else:
        cur.execute("COMMIT")
    finally:
        cur.close()


class SQLiteDatabase(SQLDatabase):
    """The shared SQL schema in a SQLite file."""

    ID_PK = "INTEGER PRIMARY KEY"  # an alias of the rowid: the fastest key SQLite has
    INT = "INTEGER"
    FLOAT = "REAL"

    def __init__(self, url: str, create: bool = True):
        """Open (``create``: make when missing, with its folders) the database file of ``url``.

        With ``create=False`` the file must exist and hold synister's tables; nothing is
        written to it on opening, so a mistyped path fails instead of leaving an empty database.
        """
        self.url = url
        path = path_from_url(url)
        memory = path == ":memory:"
        if not create and not memory and not Path(path).is_file():
            raise DatabaseError(
                f"no SQLite database at {Path(path).resolve()} ({url}): check the path; "
                "nothing was created"
            )
        if create and not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            target = path if create or memory else f"{Path(path).resolve().as_uri()}?mode=rw"
            self._connection = sqlite3.connect(
                target, isolation_level=None, check_same_thread=False, uri=not create and not memory
            )
        except sqlite3.Error as error:
            raise DatabaseError(f"cannot open SQLite database {path!r}: {error}") from None
        self._temp_tables: list[str] = []
        self._lock = threading.RLock()  # one connection, shared by threads one at a time
        try:
            self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if create and not memory:
                self._connection.execute("PRAGMA journal_mode = WAL")  # kept by the file
            self._connection.execute("PRAGMA synchronous = NORMAL")
            self._connection.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            self._connection.execute("PRAGMA temp_store = MEMORY")  # id-filter tables
            if create:
                self._create_schema()
            else:
                self._require_schema()
        except sqlite3.Error as error:  # e.g. a file that is no SQLite database
            self._connection.close()
            raise DatabaseError(f"cannot open SQLite database {path!r}: {error}") from None
        except DatabaseError:
            self._connection.close()
            raise

    def _table_names(self, cur) -> set[str]:
        rows = self._rows(cur, "SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r[0] for r in rows}

    def close(self) -> None:
        self._connection.close()

    @contextmanager
    def _transaction(self, write: bool):
        with self._lock, self._open_transaction(write) as cur:
            yield cur

    @contextmanager
    def _open_transaction(self, write: bool):
        try:
            with transaction(self._connection, write) as cur:
                yield cur
        finally:
            for name in self._temp_tables:
                self._connection.execute(f"DROP TABLE IF EXISTS temp.{name}")
            self._temp_tables.clear()

    def _insert_frame(self, cur, table: str, frame: pd.DataFrame) -> None:
        columns = ", ".join(frame.columns)
        marks = ", ".join("?" for _ in frame.columns)
        cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", _python_values(frame))

    def _temp_table(self, cur, name: str, columns: dict[str, str], frame: pd.DataFrame) -> None:
        cur.execute(f"DROP TABLE IF EXISTS temp.{name}")
        spec = ", ".join(f"{c} {t}" for c, t in columns.items())
        cur.execute(f"CREATE TEMP TABLE {name} ({spec})")
        self._temp_tables.append(name)
        if len(frame):
            marks = ", ".join("?" for _ in columns)
            cur.executemany(f"INSERT INTO temp.{name} VALUES ({marks})", _python_values(frame))
        if len(columns) == 1:
            cur.execute(f"CREATE INDEX temp.{name}_v ON {name} ({next(iter(columns))})")

    def _run_table(self, run: str) -> str:
        return f'"predictions.{check_run_name(run)}"'

    def _prepare_run_storage(self, cur) -> None:
        pass  # run tables live beside the others in the same file

    def _upsert_predictions(self, cur, table: str, n_classes: int, frame: pd.DataFrame) -> None:
        columns = ", ".join(frame.columns)
        marks = ", ".join("?" for _ in frame.columns)
        updates = ", ".join(f"p{i} = excluded.p{i}" for i in range(n_classes))
        cur.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({marks}) "
            f"ON CONFLICT (synapse_id) DO UPDATE SET {updates}",
            _python_values(frame),
        )

    def _is_unique_violation(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.IntegrityError) and "UNIQUE" in str(error)
