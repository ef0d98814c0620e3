"""The store in PostgreSQL: workers on several machines share one queue.

A claim selects the oldest claimable job ``FOR UPDATE SKIP LOCKED``, so concurrent claimers
each lock a different row instead of waiting for (or taking) the same one. A submission takes a
transaction-scoped advisory lock per user so that the queue limit holds when one user submits
from many clients at once. Times come from the server's clock.
"""

from __future__ import annotations

from contextlib import contextmanager

import psycopg

from synister.db import hide_secrets, public_url

from .base import StoreError
from .sql import SQLStore

#: advisory lock key of the schema creation (concurrent CREATE ... IF NOT EXISTS can collide)
_SCHEMA_LOCK = 0x53594E53  # "SYNS"


class PostgresStore(SQLStore):
    NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
    CLAIM_LOCK = " FOR UPDATE SKIP LOCKED"
    SEQ_TYPE = "BIGSERIAL"
    SEQ_VALUE = "DEFAULT"

    def __init__(self, url: str):
        try:
            super().__init__(url)
        except psycopg.Error as error:
            self.close()
            raise StoreError(
                f"cannot set up the job store at {public_url(url)}: {hide_secrets(error, url)}"
            ) from None

    def _connect(self):
        try:
            return psycopg.connect(self.url, autocommit=True)
        except psycopg.Error as error:
            raise StoreError(
                f"cannot connect to PostgreSQL at {public_url(self.url)}: "
                f"{hide_secrets(error, self.url)}"
            ) from None

    @contextmanager
    def _begin(self, connection, write: bool):
        with connection.transaction(), connection.cursor() as cur:
            yield cur

    def _execute(self, cur, statement: str, params=()):
        cur.execute(statement.replace("?", "%s"), tuple(params))
        return cur

    def _prepare_schema(self, cur) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))

    def _lock_user(self, cur, user: str) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (user,))
