"""The checks between an upload and a queued job: known bundle and volume, an accepted table
type (declared and sniffed), the user's queue and disk quota, the size limit, and the table read
as `predict-positions` reads it, within the row and bytes-per-row limits, in a checker process
(:mod:`.checks`).

Uploads go to disk as they arrive, under the job's generated id, and stop at the configured
size (413) or when the client stalls (408); a refused upload leaves nothing behind. Uploads
being received or checked count against the user's queue, so one user cannot fill the disk or
the checkers with uploads in parallel.
"""

import shutil
import uuid

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from . import engine, retention
from . import files as job_files
from .checks import CheckFailed
from .deps import Service
from .store import Job, NewJob, Principal, QueueFull


class TableRefused(HTTPException):
    """A 422 about the table; ``columns``: its column names where a column was not found
    (the page offers them)."""

    def __init__(self, detail: str, columns: list[str] | None = None):
        super().__init__(422, detail)
        self.columns = columns


def _choice(name: str, what: str, offered: dict) -> None:
    if name not in offered:
        raise HTTPException(
            422,
            f"{what}: unknown {name!r}; choose one of {', '.join(offered) or '(none configured)'}",
        )


async def _check_quota(svc: Service, who: Principal, incoming: int) -> int:
    """The bytes the user's jobs take; 413 if ``incoming`` more would pass the quota."""
    quota = svc.config.limits.user_bytes
    used = await run_in_threadpool(retention.user_bytes, svc.config, svc.store, who.user)
    if used + incoming > quota:
        raise HTTPException(
            413,
            f"{who.user}'s jobs take {used} bytes; with this upload they would pass the "
            f"{quota} bytes allowed: delete finished jobs first",
        )
    return used


async def accept_upload(
    request: Request,
    svc: Service,
    who: Principal,
    bundle: str,
    volume: str,
    filename: str | None,
    file_type: str | None,
    options: dict,
) -> Job:
    """Check the request, receive the table in its body and queue a job for it with the table
    ``options`` (those of predict-positions); an :class:`~fastapi.HTTPException` says what was
    refused."""
    config, store = svc.config, svc.store
    limits = config.limits
    _choice(bundle, "bundle", config.bundles)
    _choice(volume, "volume", config.volumes)
    declared = file_type or job_files.type_from_name(filename)
    if declared is not None and declared not in limits.file_types:
        raise HTTPException(
            415, f"{declared!r} tables are not accepted; use {', '.join(limits.file_types)}"
        )
    active = await svc.read(store.active_jobs, who.user)
    active += svc.uploading[who.user]
    if active >= limits.queued_jobs_per_user:
        raise HTTPException(
            429,
            f"{who.user} has {active} queued or running jobs (or uploads), the most "
            f"allowed is {limits.queued_jobs_per_user}",
        )
    length = request.headers.get("content-length")
    length = int(length) if length and length.isdigit() else None
    if length is not None and length > limits.upload_bytes:
        raise HTTPException(413, f"the upload is larger than {limits.upload_bytes} bytes")
    svc.uploading[who.user] += 1
    try:
        return await _receive(
            request, svc, who, bundle, volume, filename, declared, options, length or 0
        )
    finally:
        svc.uploading[who.user] -= 1
        if svc.uploading[who.user] <= 0:
            del svc.uploading[who.user]


async def _receive(request, svc: Service, who, bundle, volume, filename, declared, options, length):
    config, store = svc.config, svc.store
    limits = config.limits
    used = await _check_quota(svc, who, length)
    results = config.results_dir
    job_id = uuid.uuid4().hex
    folder = job_files.job_dir(results, job_id)
    folder.mkdir(parents=True)
    try:
        upload = folder / "upload.part"
        try:
            size = await job_files.receive_upload(
                request.stream(), upload, limits.upload_bytes, limits.body_seconds
            )
        except job_files.UploadTooLarge as error:
            raise HTTPException(413, str(error)) from None
        except job_files.UploadStalled as error:
            raise HTTPException(408, str(error), headers={"Connection": "close"}) from None
        if used + size > limits.user_bytes:
            await _check_quota(svc, who, size)
        found = await run_in_threadpool(job_files.sniff_type, upload)
        if found is None or found not in limits.file_types:
            raise HTTPException(
                415, f"not a table of an accepted type ({', '.join(limits.file_types)})"
            )
        if declared is not None and found != declared:
            raise HTTPException(415, f"the file is not a {declared} table (it looks like {found})")
        table = job_files.input_path(results, job_id, found)
        upload.rename(table)
        shown = job_files.shown_name(filename, found)
        try:
            answer = await svc.checks.check(
                who.user, table, options, engine.table_limits(config.limits)
            )
        except CheckFailed as error:
            raise TableRefused(f"{shown}: the table could not be checked: {error}") from None
        svc.log_check(who.user, job_id, answer)
        if "error" in answer:
            raise TableRefused(answer["error"].replace(str(table), shown), answer.get("columns"))
        new = NewJob(job_id, who.user, bundle, volume, shown, found, answer["rows"], options)
        try:
            return await run_in_threadpool(store.submit, new, limits.queued_jobs_per_user)
        except QueueFull as error:
            raise HTTPException(429, str(error)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
