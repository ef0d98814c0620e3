"""What the service keeps on disk, and for how long: ``[limits] results_days`` and
``user_bytes``.

A job's folder holds its input and results. Cancelled and failed jobs lose their folder when
they end (their record stays, with the reason); a finished job older than ``results_days``
loses its folder and its record; a folder without a record (a crash between an upload and its
record) goes once it is a day old. :func:`prune` does all of it: the service runs it hourly,
`synister serve prune` on demand.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from . import files as job_files
from .config import ServiceConfig
from .store import FINAL_STATES, Store

#: how often the service prunes (seconds)
PRUNE_SECONDS = 3600.0
#: a job folder without a record is left alone this long (its upload may be under way)
ORPHAN_SECONDS = 86400.0
#: the most jobs one listing reads (a lab's service keeps far fewer)
ALL_JOBS = 10**9


@dataclass(frozen=True)
class Removal:
    """What :func:`prune` removed (or would remove)."""

    job: str
    user: str | None
    state: str | None
    reason: str  # "expired", "cancelled", "failed" or "orphan"
    bytes: int
    record: bool  # the job's record went too

    def to_json(self) -> dict:
        return asdict(self)


def user_bytes(config: ServiceConfig, store: Store, user: str) -> int:
    """Bytes the jobs of ``user`` take on disk (inputs and results)."""
    return sum(
        job_files.folder_bytes(job_files.job_dir(config.results_dir, job.id))
        for job in store.list_jobs(user, ALL_JOBS)
    )


def prune(
    config: ServiceConfig, store: Store, now: float | None = None, dry_run: bool = False
) -> list[Removal]:
    """Apply the retention rules (module docstring); returns what went (with ``dry_run``:
    what would go, removing nothing)."""
    now = time.time() if now is None else now
    results = config.results_dir
    days = config.limits.results_days
    jobs = {job.id: job for job in store.list_jobs(None, ALL_JOBS)}
    removed = []
    for job in jobs.values():
        if job.state not in FINAL_STATES:
            continue
        folder = job_files.job_dir(results, job.id)
        expired = days > 0 and job.finished is not None and job.finished < now - days * 86400
        if not expired and (job.state == "done" or not folder.exists()):
            continue
        size = job_files.folder_bytes(folder)
        reason = "expired" if expired else job.state
        if not dry_run:
            if expired and not store.delete_job(job.id):
                continue
            job_files.remove_job(results, job.id)
        removed.append(Removal(job.id, job.user, job.state, reason, size, expired))
    for folder in sorted((results / "jobs").glob("*")):
        if not job_files.JOB_ID.match(folder.name) or folder.name in jobs:
            continue
        if folder.stat().st_mtime > now - ORPHAN_SECONDS:
            continue
        size = job_files.folder_bytes(folder)
        if not dry_run:
            job_files.remove_job(results, folder.name)
        removed.append(Removal(folder.name, None, None, "orphan", size, False))
    return removed


def prune_logged(config: ServiceConfig, store: Store, log) -> None:
    """:func:`prune`, each removal logged; a failure is logged and left for the next time."""
    try:
        for removal in prune(config, store):
            log.info("job files removed", extra={"event": "prune", **removal.to_json()})
    except Exception as error:  # noqa: BLE001 - retention must never stop the service
        log.error("prune failed", extra={"event": "prune", "error": str(error)})
