"""PostgreSQL backend (psycopg 3): the shared schema of :mod:`synister.db.sql` in one database.

URL: ``postgresql://user:password@host:port/dbname``. Prediction runs live where the original
kept them: run ``<run>`` of database ``<dbname>`` is the table
``"<dbname>_predictions"."<run>"`` (a schema per database, a table per run). PostgreSQL cuts
identifiers at 63 bytes, so a longer schema or run name is refused with an error instead of
silently colliding.

Bulk writes and id-list filters go through ``COPY`` (CSV) into the tables or into temporary
tables dropped at commit, so no operation costs a round trip per row.
"""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager

import pandas as pd
import psycopg
from psycopg import errors

from .base import DatabaseError
from .names import check_run_name
from .sql import SQLDatabase
from .urls import hide_secrets, public_url

MAX_IDENTIFIER_BYTES = 63
COPY_CHUNK_ROWS = 100_000
_NULL = "\\N"


def _identifier(name: str, what: str) -> str:
    """``name`` quoted as an identifier, refusing names PostgreSQL would truncate."""
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise DatabaseError(
            f"{what} {name!r} is {len(name.encode())} bytes long; PostgreSQL allows at most "
            f"{MAX_IDENTIFIER_BYTES} bytes in a name: choose a shorter one"
        )
    return '"' + name.replace('"', '""') + '"'


def _copy_frame(cur, table: str, frame: pd.DataFrame) -> None:
    """``COPY`` the frame's rows into ``table`` as CSV, in chunks to bound memory."""
    columns = ", ".join(frame.columns)
    statement = f"COPY {table} ({columns}) FROM STDIN (FORMAT csv, NULL '{_NULL}')"
    with cur.copy(statement) as copy:
        for start in range(0, len(frame), COPY_CHUNK_ROWS):
            buffer = io.StringIO()
            frame.iloc[start : start + COPY_CHUNK_ROWS].to_csv(
                buffer, header=False, index=False, na_rep=_NULL, float_format="%.17g"
            )
            copy.write(buffer.getvalue())


class PostgresDatabase(SQLDatabase):
    """The shared SQL schema in a PostgreSQL database."""

    def __init__(self, url: str, create: bool = True):
        """Connect; ``create`` makes synister's tables where missing, ``create=False`` (for
        read-only commands) refuses a database without them and writes nothing."""
        self.url = url
        try:
            self._connection = psycopg.connect(url, autocommit=True)
        except psycopg.Error as error:
            raise DatabaseError(
                f"cannot connect to PostgreSQL at {public_url(url)}: {hide_secrets(error, url)}"
            ) from None
        self._lock = threading.RLock()  # one connection, shared by threads one at a time
        try:
            dbname = self._connection.info.dbname
            self._prediction_schema = _identifier(f"{dbname}_predictions", "prediction schema")
            if create:
                self._create_schema()
            else:
                self._require_schema()
        except (psycopg.Error, DatabaseError) as error:
            self._connection.close()
            raise DatabaseError(
                f"cannot open PostgreSQL at {public_url(url)}: {hide_secrets(error, url)}"
            ) from None

    def close(self) -> None:
        self._connection.close()

    @contextmanager
    def _transaction(self, write: bool):
        with self._lock, self._connection.transaction(), self._connection.cursor() as cur:
            yield cur

    def _execute(self, cur, statement: str, params=()):
        cur.execute(statement.replace("?", "%s"), tuple(params))
        return cur

    def _insert_frame(self, cur, table: str, frame: pd.DataFrame) -> None:
        _copy_frame(cur, table, frame)

    def _temp_table(self, cur, name: str, columns: dict[str, str], frame: pd.DataFrame) -> None:
        spec = ", ".join(f"{c} {t}" for c, t in columns.items())
        cur.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
        cur.execute(f"CREATE TEMP TABLE {name} ({spec}) ON COMMIT DROP")
        if len(frame):
            _copy_frame(cur, name, frame)
            cur.execute(f"ANALYZE {name}")

    def _run_table(self, run: str) -> str:
        return f"{self._prediction_schema}.{_identifier(check_run_name(run), 'prediction run')}"

    def _prepare_run_storage(self, cur) -> None:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self._prediction_schema}")

    def _upsert_predictions(self, cur, table: str, n_classes: int, frame: pd.DataFrame) -> None:
        columns = ", ".join(frame.columns)
        spec = ", ".join(
            ["synapse_id BIGINT"] + [f"p{i} DOUBLE PRECISION" for i in range(n_classes)]
        )
        cur.execute("DROP TABLE IF EXISTS pg_temp.new_predictions")
        cur.execute(f"CREATE TEMP TABLE new_predictions ({spec}) ON COMMIT DROP")
        _copy_frame(cur, "new_predictions", frame)
        updates = ", ".join(f"p{i} = excluded.p{i}" for i in range(n_classes))
        cur.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM new_predictions "
            f"ON CONFLICT (synapse_id) DO UPDATE SET {updates}"
        )

    def _is_unique_violation(self, error: Exception) -> bool:
        return isinstance(error, errors.UniqueViolation)

    def _table_names(self, cur) -> set[str]:
        rows = self._rows(
            cur,
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()",
        )
        return {r[0] for r in rows}
