"""The checks between an upload and a queued job: known bundle and volume, an accepted table
type (declared and sniffed), the user's queue, the size limit, and the table read as
`predict-positions` reads it, with its row limit.

Uploads go to disk as they arrive, under the job's generated id, and stop at the configured
size (413); a refused upload leaves nothing behind.
"""

import shutil
import uuid

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from . import engine
from . import files as job_files
from .deps import Service
from .store import Job, NewJob, Principal, QueueFull


async def accept_upload(
    request: Request,
    svc: Service,
    who: Principal,
    bundle: str,
    volume: str,
    filename: str | None,
    file_type: str | None,
    units: str,
    voxel_size: str | None,
) -> Job:
    """Check the request, receive the table in its body and queue a job for it; an
    :class:`~fastapi.HTTPException` says what was refused."""
    config, store = svc.config, svc.store
    limits = config.limits
    if bundle not in config.bundles:
        raise HTTPException(
            422,
            f"bundle: unknown {bundle!r}; choose one of "
            f"{', '.join(config.bundles) or '(none configured)'}",
        )
    if volume not in config.volumes:
        raise HTTPException(
            422,
            f"volume: unknown {volume!r}; choose one of "
            f"{', '.join(config.volumes) or '(none configured)'}",
        )
    declared = file_type or job_files.type_from_name(filename)
    if declared is not None and declared not in limits.file_types:
        raise HTTPException(
            415, f"{declared!r} tables are not accepted; use {', '.join(limits.file_types)}"
        )
    options: dict = {"units": units}
    if voxel_size is not None and voxel_size.strip():
        options["voxel_size"] = voxel_size.strip()  # checked with the table, below
    active = await svc.read(store.active_jobs, who.user)
    if active >= limits.queued_jobs_per_user:
        raise HTTPException(
            429,
            f"{who.user} has {active} queued or running jobs, the most "
            f"allowed is {limits.queued_jobs_per_user}",
        )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limits.upload_bytes:
        raise HTTPException(413, f"the upload is larger than {limits.upload_bytes} bytes")

    results = config.results_dir
    job_id = uuid.uuid4().hex
    folder = job_files.job_dir(results, job_id)
    folder.mkdir(parents=True)
    try:
        upload = folder / "upload.part"
        try:
            await job_files.receive_upload(request.stream(), upload, limits.upload_bytes)
        except job_files.UploadTooLarge as error:
            raise HTTPException(413, str(error)) from None
        found = await run_in_threadpool(job_files.sniff_type, upload)
        if found is None or found not in limits.file_types:
            raise HTTPException(
                415, f"not a table of an accepted type ({', '.join(limits.file_types)})"
            )
        if declared is not None and found != declared:
            raise HTTPException(415, f"the file is not a {declared} table (it looks like {found})")
        table = job_files.input_path(results, job_id, found)
        upload.rename(table)
        shown = (filename or f"table.{found}").replace("/", "_").replace("\\", "_")
        try:
            rows = await run_in_threadpool(engine.check_table, table, options)
        except engine.TableError as error:
            raise HTTPException(422, str(error).replace(str(table), shown)) from None
        if rows == 0:
            raise HTTPException(422, f"{shown}: the table has no rows")
        if rows > limits.rows_per_job:
            raise HTTPException(422, f"{shown}: {rows} rows; at most {limits.rows_per_job} per job")
        new = NewJob(job_id, who.user, bundle, volume, shown, found, rows, options)
        try:
            return await run_in_threadpool(store.submit, new, limits.queued_jobs_per_user)
        except QueueFull as error:
            raise HTTPException(429, str(error)) from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
