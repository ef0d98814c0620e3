"""The store in a SQLite file (the default; one machine).

WAL mode lets the web app read while a worker writes; write transactions start with
``BEGIN IMMEDIATE``, which takes the file's one write lock, so a claim or a submission's
queue-limit check cannot interleave with another.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from synister.db import DatabaseError
from synister.db.sqlite import BUSY_TIMEOUT_MS, path_from_url, transaction

from .base import StoreError
from .sql import SQLStore


class SQLiteStore(SQLStore):
    fast_reads = True
    NOW = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, url: str):
        try:
            self.path = path_from_url(url)
        except DatabaseError as error:
            raise StoreError(str(error)) from None
        if self.path == ":memory:":
            raise StoreError("the service store needs a file: sqlite:///path/to/service.db")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            super().__init__(url)
        except sqlite3.Error as error:
            raise StoreError(f"cannot open SQLite database {self.path!r}: {error}") from None

    def _connect(self):
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        return connection

    def _begin(self, connection, write: bool):
        return transaction(connection, write)
