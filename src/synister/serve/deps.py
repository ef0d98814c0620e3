"""What every route shares: the service (config, job store, request counts) kept on the app,
reads of the store, and who is asking (a bearer token) with the jobs they may see.

A user sees only their own jobs: another user's job answers 404, as a job that does not exist
does, so ids never leak; an admin token sees every job.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from . import files as job_files
from .checks import CheckPool
from .config import ServiceConfig
from .logs import APP_LOG
from .store import Job, Principal, Store


@dataclass
class Service:
    """What the routes need; :func:`~synister.serve.app.create_app` keeps it on
    ``app.state.service``."""

    config: ServiceConfig
    store: Store
    request_counts: Counter
    checks: CheckPool
    #: uploads being received or checked, per user (they count against the queue limit)
    uploading: Counter = field(default_factory=Counter)

    def log_check(self, user: str, job_id: str, answer: dict) -> None:
        """One log line per table check: its outcome and the checker's memory."""
        APP_LOG.info(
            "table checked",
            extra={
                "event": "check",
                "user": user,
                "job": job_id,
                "rows": answer.get("rows"),
                "refused": "error" in answer,
                "rss_bytes": answer.get("rss_bytes"),
                "peak_rss_bytes": answer.get("peak_rss_bytes"),
            },
        )

    async def read(self, function, *args):
        """A read of the store: on SQLite in the event loop (a read of the WAL file takes
        microseconds and never waits for a writer, and a hand-over to a thread costs more
        than that on a loaded machine), elsewhere in a thread."""
        if self.store.fast_reads:
            return function(*args)
        return await run_in_threadpool(function, *args)


def service(request: Request) -> Service:
    return request.app.state.service


Svc = Annotated[Service, Depends(service)]

bearer = HTTPBearer(auto_error=False, description="a token of `synister serve token create`")


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    svc: Svc,
) -> Principal:
    found = None
    if credentials is not None:
        found = await svc.read(svc.store.authenticate, credentials.credentials)
    if found is None:
        raise HTTPException(
            401,
            "a valid token is needed: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.user = found.user
    return found


User = Annotated[Principal, Depends(principal)]


async def visible_job(svc: Service, job_id: str, who: Principal) -> Job:
    job = None
    if job_files.JOB_ID.match(job_id):
        job = await svc.read(svc.store.get_job, job_id)
    if job is None or (job.user != who.user and not who.admin):
        raise HTTPException(404, f"no job {job_id}")
    return job


async def done_job(svc: Service, job_id: str, who: Principal) -> Job:
    job = await visible_job(svc, job_id, who)
    if job.state != "done":
        raise HTTPException(409, f"job {job_id} is {job.state}; results come when it is done")
    return job
