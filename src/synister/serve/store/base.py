"""The store of jobs and tokens every backend implements.

A job goes ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. A running job
holds a lease that its worker renews with each heartbeat; a job whose lease ran out (its worker
died) is claimed again, up to ``max_attempts`` times, and a worker that is stopped hands its job
back (``running`` -> ``queued``). Times are seconds since the epoch, taken from the database's
clock so that workers on several machines agree.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled")


class StoreError(RuntimeError):
    """A store operation failed; the stored jobs and tokens are unchanged."""


class QueueFull(StoreError):
    """The user already has as many queued or running jobs as allowed."""


class JobFinished(StoreError):
    """The job is already done, failed or cancelled."""


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to."""

    user: str
    admin: bool
    key_id: str


@dataclass(frozen=True)
class TokenInfo:
    key_id: str
    user: str
    admin: bool
    created: float
    revoked: float | None


@dataclass(frozen=True)
class NewJob:
    """What a user submits (the table is already stored under the job's folder)."""

    id: str
    user: str
    bundle: str
    volume: str
    input_name: str  # the name the user gave the file: shown, never used as a path
    input_format: str
    rows: int
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    id: str
    user: str
    state: str
    bundle: str
    volume: str
    input_name: str
    input_format: str
    rows: int
    options: dict
    created: float
    started: float | None
    finished: float | None
    done: int
    total: int
    synapses_per_second: float | None
    attempts: int
    error: str | None
    cancel_requested: bool
    worker: str | None
    lease_until: float | None
    result: dict

    @classmethod
    def from_row(cls, row: dict) -> Job:
        return cls(
            id=row["id"],
            user=row["user_name"],
            state=row["state"],
            bundle=row["bundle"],
            volume=row["volume"],
            input_name=row["input_name"],
            input_format=row["input_format"],
            rows=int(row["n_rows"]),
            options=json.loads(row["options"] or "{}"),
            created=float(row["created"]),
            started=row["started"],
            finished=row["finished"],
            done=int(row["done"]),
            total=int(row["total"]),
            synapses_per_second=row["rate"],
            attempts=int(row["attempts"]),
            error=row["error"],
            cancel_requested=bool(row["cancel_requested"]),
            worker=row["worker"],
            lease_until=row["lease_until"],
            result=json.loads(row["result"] or "{}"),
        )


class Store(ABC):
    """Jobs and tokens in one database (see :func:`synister.serve.store.open_store`)."""

    #: reads take microseconds and never wait for a writer (the web app may call them from
    #: its event loop instead of a thread)
    fast_reads = False

    # -- tokens -----------------------------------------------------------------------------

    @abstractmethod
    def create_token(self, user: str, admin: bool = False) -> tuple[str, str]:
        """Store a new token of ``user``; returns (key id, token). Only the hash is kept, so
        the token is shown this once."""

    @abstractmethod
    def authenticate(self, token: str) -> Principal | None:
        """Whose token this is, or None for an unknown, malformed or revoked one."""

    @abstractmethod
    def revoke_token(self, key_id: str) -> bool:
        """Revoke one token; False if there is no live token with that key id."""

    @abstractmethod
    def revoke_user(self, user: str) -> int:
        """Revoke every live token of ``user``; returns how many."""

    @abstractmethod
    def list_tokens(self) -> list[TokenInfo]:
        """Every token (without secrets), by user, oldest first."""

    # -- jobs: the API's side ---------------------------------------------------------------

    @abstractmethod
    def submit(self, job: NewJob, max_active: int) -> Job:
        """Queue ``job``; raises :class:`QueueFull` (storing nothing) when its user already has
        ``max_active`` queued or running jobs. The check and the insert are one transaction."""

    @abstractmethod
    def active_jobs(self, user: str) -> int:
        """Queued or running jobs of ``user``."""

    @abstractmethod
    def get_job(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def list_jobs(self, user: str | None = None, limit: int = 100) -> list[Job]:
        """Newest first; every user's with ``user=None``."""

    @abstractmethod
    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is asked to stop (its worker
        cancels it at the next heartbeat). Raises :class:`JobFinished` on a finished job."""

    @abstractmethod
    def delete_job(self, job_id: str) -> bool:
        """Delete the record of a job that is not running (a queued one will not run); False
        when there is no such job, or it is running."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs per state (every state, zeros included)."""

    @abstractmethod
    def running_rate(self) -> float:
        """Synapses/s of the running jobs, summed."""

    @abstractmethod
    def predicted_total(self) -> int:
        """Synapses predicted so far, over all jobs."""

    # -- jobs: the workers' side ------------------------------------------------------------

    @abstractmethod
    def claim(self, worker: str, lease_seconds: float, max_attempts: int) -> Job | None:
        """Take the oldest queued job, or a running one whose lease ran out, for ``worker``.

        Expired jobs that were asked to cancel are cancelled; those already tried
        ``max_attempts`` times fail. Workers on several machines never take the same job.
        """

    @abstractmethod
    def heartbeat(
        self,
        job_id: str,
        worker: str,
        lease_seconds: float,
        done: int,
        total: int,
        rate: float | None,
    ) -> str:
        """Renew the lease and store progress. Returns ``"ok"``, ``"cancel"`` (the user asked
        to stop) or ``"lost"`` (the job is no longer this worker's)."""

    @abstractmethod
    def finish(
        self, job_id: str, worker: str, state: str, error: str | None = None, result=None
    ) -> bool:
        """Record the end of a job this worker holds; False if it no longer holds it."""

    @abstractmethod
    def release(self, job_id: str, worker: str) -> bool:
        """Hand a running job back to the queue (a stopped worker); its attempt does not count."""

    @abstractmethod
    def close(self) -> None:
        """Close the store's connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
