"""The store in SQL, shared by the SQLite and PostgreSQL backends.

Tables ``serve_tokens`` and ``serve_jobs`` live beside the synapse tables when the service is
given the project's database. Each thread has its own connection (the web app answers requests
from a thread pool). Statements use ``?`` placeholders; a backend rewrites them if it must.
"""

from __future__ import annotations

import json
import re
import threading
from abc import abstractmethod
from contextlib import contextmanager

from .. import tokens
from .base import (
    ACTIVE_STATES,
    FINAL_STATES,
    STATES,
    Job,
    JobFinished,
    NewJob,
    Principal,
    QueueFull,
    Store,
    StoreError,
    TokenInfo,
)

USER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS serve_tokens (
        key_id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        created DOUBLE PRECISION NOT NULL,
        revoked DOUBLE PRECISION
    )""",
    """CREATE TABLE IF NOT EXISTS serve_jobs (
        id TEXT PRIMARY KEY,
        seq {seq},
        user_name TEXT NOT NULL,
        state TEXT NOT NULL,
        bundle TEXT NOT NULL,
        volume TEXT NOT NULL,
        input_name TEXT NOT NULL,
        input_format TEXT NOT NULL,
        n_rows BIGINT NOT NULL,
        options TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION,
        finished DOUBLE PRECISION,
        done BIGINT NOT NULL DEFAULT 0,
        total BIGINT NOT NULL DEFAULT 0,
        rate DOUBLE PRECISION,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        lease_until DOUBLE PRECISION,
        result TEXT
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS serve_jobs_seq ON serve_jobs (seq)",
    "CREATE INDEX IF NOT EXISTS serve_jobs_state ON serve_jobs (state, seq)",
    "CREATE INDEX IF NOT EXISTS serve_jobs_user ON serve_jobs (user_name, seq)",
)

_JOB_COLUMNS = (
    "id, user_name, state, bundle, volume, input_name, input_format, n_rows, options, created, "
    "started, finished, done, total, rate, attempts, error, cancel_requested, worker, "
    "lease_until, result"
)
_ACTIVE = "(" + ", ".join(f"'{s}'" for s in ACTIVE_STATES) + ")"
_DUMMY_HASH = "0" * 64


def check_user(user: str) -> str:
    if not USER_PATTERN.match(user):
        raise StoreError(
            f"user name {user!r}: use letters, digits, '_', '.', '@', '-' (at most 64, "
            "starting with a letter or digit)"
        )
    return user


class SQLStore(Store):
    """Jobs and tokens in SQL tables; backends supply connections and their dialect."""

    #: the current time in seconds since the epoch, from the database's clock
    NOW: str
    #: appended to the claim's SELECT so that concurrent claimers skip each other's rows
    CLAIM_LOCK = ""
    #: the type of ``seq`` (submission order; timestamps can tie) and the value a new job gets
    SEQ_TYPE = "BIGINT NOT NULL"
    SEQ_VALUE = "(SELECT COALESCE(MAX(seq), 0) + 1 FROM serve_jobs)"

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()
        self._connections: list = []
        self._connections_lock = threading.Lock()
        with self._transaction(write=True) as cur:
            self._prepare_schema(cur)
            for statement in SCHEMA:
                self._execute(cur, statement.replace("{seq}", self.SEQ_TYPE))

    # -- what a backend supplies --------------------------------------------------------------

    @abstractmethod
    def _connect(self):
        """A new autocommit connection."""

    @abstractmethod
    def _begin(self, connection, write: bool):
        """A context manager: one transaction on ``connection``, yielding a cursor."""

    def _execute(self, cur, statement: str, params=()):
        cur.execute(statement, tuple(params))
        return cur

    def _prepare_schema(self, cur) -> None:
        """Runs before the schema statements, in their transaction (e.g. a lock)."""

    def _lock_user(self, cur, user: str) -> None:
        """Serialise submissions of one user (so the queue limit holds under concurrency)."""

    # -- plumbing -----------------------------------------------------------------------------

    def _connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextmanager
    def _transaction(self, write: bool):
        with self._begin(self._connection(), write) as cur:
            yield cur

    def _rows(self, cur, statement: str, params=()) -> list[dict]:
        self._execute(cur, statement, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _job(self, cur, job_id: str) -> Job | None:
        rows = self._rows(cur, f"SELECT {_JOB_COLUMNS} FROM serve_jobs WHERE id = ?", (job_id,))
        return Job.from_row(rows[0]) if rows else None

    def close(self) -> None:
        with self._connections_lock:
            for connection in self._connections:
                try:
                    connection.close()
                except Exception:  # noqa: BLE001 - closing from another thread may fail
                    pass
            self._connections.clear()
        self._local = threading.local()

    # -- tokens -------------------------------------------------------------------------------

    def create_token(self, user: str, admin: bool = False) -> tuple[str, str]:
        check_user(user)
        key_id, token = tokens.new_token()
        with self._transaction(write=True) as cur:
            self._execute(
                cur,
                "INSERT INTO serve_tokens (key_id, user_name, token_hash, admin, created) "
                f"VALUES (?, ?, ?, ?, {self.NOW})",
                (key_id, user, tokens.token_hash(token), int(admin)),
            )
        return key_id, token

    def authenticate(self, token: str) -> Principal | None:
        key_id = tokens.key_id_of(token)
        if key_id is None:
            return None
        with self._transaction(write=False) as cur:
            rows = self._rows(
                cur,
                "SELECT user_name, token_hash, admin, revoked FROM serve_tokens WHERE key_id = ?",
                (key_id,),
            )
        stored = rows[0] if rows else None
        matches = tokens.hash_matches(token, stored["token_hash"] if stored else _DUMMY_HASH)
        if stored is None or not matches or stored["revoked"] is not None:
            return None
        return Principal(stored["user_name"], bool(stored["admin"]), key_id)

    def revoke_token(self, key_id: str) -> bool:
        with self._transaction(write=True) as cur:
            self._execute(
                cur,
                f"UPDATE serve_tokens SET revoked = {self.NOW} "
                "WHERE key_id = ? AND revoked IS NULL",
                (key_id,),
            )
            return cur.rowcount > 0

    def revoke_user(self, user: str) -> int:
        with self._transaction(write=True) as cur:
            self._execute(
                cur,
                f"UPDATE serve_tokens SET revoked = {self.NOW} "
                "WHERE user_name = ? AND revoked IS NULL",
                (user,),
            )
            return cur.rowcount

    def list_tokens(self) -> list[TokenInfo]:
        with self._transaction(write=False) as cur:
            rows = self._rows(
                cur,
                "SELECT key_id, user_name, admin, created, revoked FROM serve_tokens "
                "ORDER BY user_name, created, key_id",
            )
        return [
            TokenInfo(r["key_id"], r["user_name"], bool(r["admin"]), r["created"], r["revoked"])
            for r in rows
        ]

    # -- jobs: the API's side -----------------------------------------------------------------

    def submit(self, job: NewJob, max_active: int) -> Job:
        with self._transaction(write=True) as cur:
            self._lock_user(cur, job.user)
            active = self._count_active(cur, job.user)
            if active >= max_active:
                raise QueueFull(
                    f"{job.user} has {active} queued or running jobs, the most allowed is "
                    f"{max_active}: wait for one to finish or cancel one"
                )
            self._execute(
                cur,
                "INSERT INTO serve_jobs (id, seq, user_name, state, bundle, volume, "
                "input_name, input_format, n_rows, options, created, total) "
                f"VALUES (?, {self.SEQ_VALUE}, ?, 'queued', ?, ?, ?, ?, ?, ?, {self.NOW}, ?)",
                (
                    job.id,
                    job.user,
                    job.bundle,
                    job.volume,
                    job.input_name,
                    job.input_format,
                    job.rows,
                    json.dumps(job.options),
                    job.rows,
                ),
            )
            return self._job(cur, job.id)

    def _count_active(self, cur, user: str) -> int:
        self._execute(
            cur,
            f"SELECT COUNT(*) FROM serve_jobs WHERE user_name = ? AND state IN {_ACTIVE}",
            (user,),
        )
        return int(cur.fetchone()[0])

    def active_jobs(self, user: str) -> int:
        with self._transaction(write=False) as cur:
            return self._count_active(cur, user)

    def get_job(self, job_id: str) -> Job | None:
        with self._transaction(write=False) as cur:
            return self._job(cur, job_id)

    def list_jobs(self, user: str | None = None, limit: int = 100) -> list[Job]:
        where, params = ("WHERE user_name = ?", [user]) if user is not None else ("", [])
        with self._transaction(write=False) as cur:
            rows = self._rows(
                cur,
                f"SELECT {_JOB_COLUMNS} FROM serve_jobs {where} ORDER BY seq DESC LIMIT ?",
                (*params, int(limit)),
            )
        return [Job.from_row(row) for row in rows]

    def cancel(self, job_id: str) -> Job:
        with self._transaction(write=True) as cur:
            job = self._job(cur, job_id)
            if job is None:
                raise StoreError(f"no job {job_id}")
            if job.state in FINAL_STATES:
                raise JobFinished(f"job {job_id} is already {job.state}")
            if job.state == "queued":
                self._execute(
                    cur,
                    f"UPDATE serve_jobs SET state = 'cancelled', finished = {self.NOW}, "
                    "cancel_requested = 1, error = 'cancelled by the user' WHERE id = ?",
                    (job_id,),
                )
            else:
                self._execute(
                    cur, "UPDATE serve_jobs SET cancel_requested = 1 WHERE id = ?", (job_id,)
                )
            return self._job(cur, job_id)

    def delete_job(self, job_id: str) -> bool:
        with self._transaction(write=True) as cur:
            self._execute(
                cur, "DELETE FROM serve_jobs WHERE id = ? AND state <> 'running'", (job_id,)
            )
            return cur.rowcount > 0

    def counts(self) -> dict[str, int]:
        with self._transaction(write=False) as cur:
            self._execute(cur, "SELECT state, COUNT(*) FROM serve_jobs GROUP BY state")
            found = {state: int(n) for state, n in cur.fetchall()}
        return {state: found.get(state, 0) for state in STATES}

    def running_rate(self) -> float:
        with self._transaction(write=False) as cur:
            self._execute(
                cur, "SELECT COALESCE(SUM(rate), 0) FROM serve_jobs WHERE state = 'running'"
            )
            return float(cur.fetchone()[0])

    def predicted_total(self) -> int:
        with self._transaction(write=False) as cur:
            self._execute(cur, "SELECT COALESCE(SUM(done), 0) FROM serve_jobs")
            return int(cur.fetchone()[0])

    # -- jobs: the workers' side --------------------------------------------------------------

    def _expire(self, max_attempts: int) -> None:
        """End expired jobs that must not run again: asked to cancel, or tried too often."""
        expired = f"state = 'running' AND lease_until < {self.NOW}"
        with self._transaction(write=True) as cur:
            self._execute(
                cur,
                f"UPDATE serve_jobs SET state = 'cancelled', finished = {self.NOW}, "
                f"error = 'cancelled by the user' WHERE {expired} AND cancel_requested = 1",
            )
            self._execute(
                cur,
                f"UPDATE serve_jobs SET state = 'failed', finished = {self.NOW}, error = ? "
                f"WHERE {expired} AND attempts >= ?",
                (
                    f"the worker running this job stopped without finishing it {max_attempts} "
                    "times (killed, or out of memory?)",
                    max_attempts,
                ),
            )

    def claim(self, worker: str, lease_seconds: float, max_attempts: int) -> Job | None:
        self._expire(max_attempts)
        with self._transaction(write=True) as cur:
            self._execute(
                cur,
                "SELECT id FROM serve_jobs WHERE state = 'queued' OR "
                f"(state = 'running' AND lease_until < {self.NOW}) "
                f"ORDER BY seq LIMIT 1{self.CLAIM_LOCK}",
            )
            row = cur.fetchone()
            if row is None:
                return None
            self._execute(
                cur,
                f"UPDATE serve_jobs SET state = 'running', worker = ?, "
                f"lease_until = {self.NOW} + ?, attempts = attempts + 1, "
                f"started = COALESCE(started, {self.NOW}) WHERE id = ?",
                (worker, float(lease_seconds), row[0]),
            )
            return self._job(cur, row[0])

    def heartbeat(
        self,
        job_id: str,
        worker: str,
        lease_seconds: float,
        done: int,
        total: int,
        rate: float | None,
    ) -> str:
        with self._transaction(write=True) as cur:
            self._execute(
                cur,
                f"UPDATE serve_jobs SET lease_until = {self.NOW} + ?, done = ?, total = ?, "
                "rate = ? WHERE id = ? AND worker = ? AND state = 'running'",
                (float(lease_seconds), int(done), int(total), rate, job_id, worker),
            )
            if cur.rowcount == 0:
                return "lost"
            self._execute(cur, "SELECT cancel_requested FROM serve_jobs WHERE id = ?", (job_id,))
            return "cancel" if cur.fetchone()[0] else "ok"

    def finish(
        self, job_id: str, worker: str, state: str, error: str | None = None, result=None
    ) -> bool:
        if state not in FINAL_STATES:
            raise StoreError(f"a job cannot finish as {state!r}")
        with self._transaction(write=True) as cur:
            self._execute(
                cur,
                f"UPDATE serve_jobs SET state = ?, finished = {self.NOW}, error = ?, "
                "result = ?, lease_until = NULL, rate = NULL, "
                "done = CASE WHEN ? = 'done' THEN total ELSE done END "
                "WHERE id = ? AND worker = ? AND state = 'running'",
                (state, error, json.dumps(result or {}), state, job_id, worker),
            )
            return cur.rowcount > 0

    def release(self, job_id: str, worker: str) -> bool:
        with self._transaction(write=True) as cur:
            self._execute(
                cur,
                "UPDATE serve_jobs SET state = 'queued', worker = NULL, lease_until = NULL, "
                "rate = NULL, attempts = attempts - 1 "
                "WHERE id = ? AND worker = ? AND state = 'running'",
                (job_id, worker),
            )
            return cur.rowcount > 0
