"""The jobs API: who am I, what may a job use, submit a table, list, follow, cancel and
delete jobs."""

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from .. import files as job_files
from ..deps import Svc, User, visible_job
from ..logs import APP_LOG as log
from ..schemas import API, TABLE_MEDIA_TYPES, Choice, Choices, JobOut, Me, job_out
from ..store import JobFinished
from ..uploads import accept_upload

#: the column options of predict-positions, as the API takes them
ColumnName = Annotated[str | None, Query(max_length=255)]

router = APIRouter(prefix=API, tags=["jobs"])


@router.get("/me")
async def me(who: User) -> Me:
    """Whose token this is."""
    return Me(user=who.user, admin=who.admin)


@router.get("/choices")
async def choices(who: User, svc: Svc) -> Choices:
    """The bundles and volumes a job may use (by name), and the limits."""
    config = svc.config
    limits = config.limits
    return Choices(
        bundles=[Choice(name=n, description=c.description) for n, c in config.bundles.items()],
        volumes=[Choice(name=n, description=c.description) for n, c in config.volumes.items()],
        file_types=list(limits.file_types),
        upload_bytes=limits.upload_bytes,
        rows_per_job=limits.rows_per_job,
        queued_jobs_per_user=limits.queued_jobs_per_user,
        user_bytes=limits.user_bytes,
        results_days=limits.results_days,
    )


@router.post(
    "/jobs",
    status_code=201,
    openapi_extra={"requestBody": {"required": True, "content": TABLE_MEDIA_TYPES}},
    responses={
        413: {"description": "the upload is larger than the limit"},
        415: {"description": "not a table of a declared type"},
        422: {"description": "the table cannot be read, or has too many rows"},
        429: {"description": "too many queued or running jobs"},
    },
)
async def submit(
    request: Request,
    who: User,
    svc: Svc,
    bundle: Annotated[str, Query(description="a bundle name of /api/v1/choices")],
    volume: Annotated[str, Query(description="a volume name of /api/v1/choices")],
    filename: Annotated[
        str | None, Query(max_length=255, description="the table's name (shown only)")
    ] = None,
    file_type: Annotated[
        Literal["csv", "parquet", "feather"] | None,
        Query(alias="type", description="default: from the file name's extension"),
    ] = None,
    units: Annotated[Literal["nm", "voxels"], Query(description="of x, y, z")] = "nm",
    voxel_size: Annotated[
        str | None,
        Query(max_length=100, description="x,y,z (or one number) in nm, for units=voxels"),
    ] = None,
    id_column: Annotated[
        ColumnName, Query(description="synapse id column (default: id, synapse_id or syn_id)")
    ] = None,
    neuron_column: Annotated[
        ColumnName,
        Query(description="neuron id column (default: pre_pt_root_id, bodyId, skeleton_id, ...)"),
    ] = None,
    position_columns: Annotated[
        ColumnName,
        Query(description="x,y,z columns or one list column (default: x,y,z; pre_x,...)"),
    ] = None,
) -> JobOut:
    """Queue a prediction job for the table in the request body (the file's bytes).

    The table is checked as `predict-positions` reads it, with the same column options, before
    the job is queued. A 422 whose column was not found lists the table's ``columns``.
    """
    options: dict = {"units": units}
    if voxel_size is not None and voxel_size.strip():
        options["voxel_size"] = voxel_size.strip()  # checked with the table
    for key, value in (("id_column", id_column), ("neuron_column", neuron_column)):
        if value is not None and value.strip():
            options[key] = value.strip()
    if position_columns is not None and position_columns.strip():
        options["position_columns"] = [c.strip() for c in position_columns.split(",") if c.strip()]
    job = await accept_upload(request, svc, who, bundle, volume, filename, file_type, options)
    log.info(
        "job queued",
        extra={
            "event": "job",
            "state": "queued",
            "job": job.id,
            "user": who.user,
            "rows": job.rows,
            "bundle": bundle,
            "volume": volume,
        },
    )
    return job_out(job)


@router.get("/jobs")
async def list_jobs(
    who: User,
    svc: Svc,
    all_users: Annotated[
        bool, Query(alias="all", description="every user's jobs (admin tokens only)")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    """Your jobs, newest first."""
    if all_users and not who.admin:
        raise HTTPException(403, "all=true needs an admin token")
    jobs = await svc.read(svc.store.list_jobs, None if all_users else who.user, limit)
    return [job_out(j) for j in jobs]


@router.get("/jobs/{job_id}", responses={404: {}})
async def get_job(job_id: str, who: User, svc: Svc) -> JobOut:
    """A job's state and progress."""
    return job_out(await visible_job(svc, job_id, who))


@router.post("/jobs/{job_id}/cancel", responses={404: {}, 409: {}})
async def cancel_job(job_id: str, who: User, svc: Svc) -> JobOut:
    """Cancel a queued job, or stop a running one at its next batch."""
    await visible_job(svc, job_id, who)
    try:
        job = await run_in_threadpool(svc.store.cancel, job_id)
    except JobFinished as error:
        raise HTTPException(409, str(error)) from None
    if job.state == "cancelled":  # it never ran: its input goes now (a running job's worker
        # removes its files when it stops)
        await run_in_threadpool(job_files.remove_job, svc.config.results_dir, job_id)
    log.info(
        "job cancel",
        extra={"event": "job", "state": job.state, "job": job_id, "user": who.user},
    )
    return job_out(job)


@router.delete("/jobs/{job_id}", status_code=204, responses={404: {}, 409: {}})
async def delete_job(job_id: str, who: User, svc: Svc) -> Response:
    """Delete a job that is not running: its record, input and results (a queued job will
    not run). Cancel a running job first."""
    job = await visible_job(svc, job_id, who)
    if not await run_in_threadpool(svc.store.delete_job, job_id):
        raise HTTPException(
            409, f"job {job_id} is running: cancel it, and delete it once it has stopped"
        )
    freed = await run_in_threadpool(job_files.remove_job, svc.config.results_dir, job_id)
    log.info(
        "job deleted",
        extra={
            "event": "job",
            "state": "deleted",
            "job": job_id,
            "user": who.user,
            "owner": job.user,
            "bytes": freed,
        },
    )
    return Response(status_code=204)
