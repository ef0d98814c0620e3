"""The web app of `synister serve`: a page, a JSON API for jobs, ``/health`` and ``/metrics``.

Every route but the page's static files and ``/health`` needs ``Authorization: Bearer <token>``.
A user sees only their own jobs: another user's job answers 404, as a job that does not exist
does, so ids never leak; an admin token sees every job. Uploads go to disk as they arrive,
under the job's generated id, and stop at the configured size (413).
"""

import logging
import shutil
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from synister import __version__

from . import engine, metrics
from . import files as job_files
from .config import ServiceConfig
from .store import Job, JobFinished, NewJob, Principal, QueueFull, Store, open_store

log = logging.getLogger("synister.serve.app")

API = "/api/v1"
STATIC = files("synister.serve") / "static"
_PARQUET = "application/vnd.apache.parquet"
TABLE_MEDIA_TYPES = {
    "text/csv": {"schema": {"type": "string", "format": "binary"}},
    _PARQUET: {"schema": {"type": "string", "format": "binary"}},
    "application/vnd.apache.arrow.file": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}


# -- response models (the OpenAPI schema describes them) -------------------------------------


class Progress(BaseModel):
    done: int
    total: int


class JobOut(BaseModel):
    id: str
    user: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    bundle: str
    volume: str
    input_name: str
    input_format: str
    rows: int
    options: dict
    created: str
    started: str | None
    finished: str | None
    progress: Progress
    synapses_per_second: float | None
    attempts: int
    error: str | None
    cancel_requested: bool
    result: dict
    links: dict[str, str]


class ResultFile(BaseModel):
    name: str
    bytes: int
    url: str


class Results(BaseModel):
    job: str
    files: list[ResultFile]


class Choice(BaseModel):
    name: str
    description: str


class Choices(BaseModel):
    bundles: list[Choice]
    volumes: list[Choice]
    file_types: list[str]
    upload_bytes: int
    rows_per_job: int
    queued_jobs_per_user: int


class Me(BaseModel):
    user: str
    admin: bool


def _time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def job_out(job: Job) -> JobOut:
    base = f"{API}/jobs/{job.id}"
    links = {"self": base, "cancel": f"{base}/cancel"}
    if job.state == "done":
        links |= {"results": f"{base}/results", "report": f"{base}/report"}
    return JobOut(
        id=job.id,
        user=job.user,
        state=job.state,
        bundle=job.bundle,
        volume=job.volume,
        input_name=job.input_name,
        input_format=job.input_format,
        rows=job.rows,
        options=job.options,
        created=_time(job.created),
        started=_time(job.started),
        finished=_time(job.finished),
        progress=Progress(done=job.done, total=job.total),
        synapses_per_second=job.synapses_per_second,
        attempts=job.attempts,
        error=job.error,
        cancel_requested=job.cancel_requested,
        result=job.result,
        links=links,
    )


class RequestLog:
    """ASGI middleware: one JSON log line per request (method, path, status, ms, user)."""

    def __init__(self, app, counts: Counter):
        self.app = app
        self.counts = counts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.counts[(scope["method"], status[0])] += 1
            log.info(
                "request",
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status[0],
                    "ms": round((time.perf_counter() - start) * 1000, 2),
                    "user": scope.get("state", {}).get("user"),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )


def create_app(config: ServiceConfig, store: Store | None = None) -> FastAPI:
    """The app for ``config``; ``store`` defaults to the config's database."""
    store = store or open_store(config.database_url)
    results = config.results_dir
    (results / "jobs").mkdir(parents=True, exist_ok=True)
    limits = config.limits
    request_counts: Counter = Counter()

    app = FastAPI(
        title="synister",
        version=__version__,
        summary="Neurotransmitter predictions for tables of synapse positions.",
        description=(
            "Submit a table of synapse positions (CSV, Parquet or Feather), choose a model "
            "bundle and a volume by name, follow the job and download the per-synapse and "
            "per-neuron tables and the HTML report of `synister predict-positions`. Every "
            "route but `/health` needs `Authorization: Bearer <token>` "
            "(`synister serve token create USER`)."
        ),
        openapi_url=None,  # served below, behind a token
        docs_url=None,  # the interactive docs would load their code from a CDN
        redoc_url=None,
    )
    app.state.store = store

    async def read(function, *args):
        """A read of the store: on SQLite in the event loop (a read of the WAL file takes
        microseconds and never waits for a writer, and a hand-over to a thread costs more
        than that on a loaded machine), elsewhere in a thread."""
        if store.fast_reads:
            return function(*args)
        return await run_in_threadpool(function, *args)

    bearer = HTTPBearer(auto_error=False, description="a token of `synister serve token create`")

    async def principal(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        found = None
        if credentials is not None:
            found = await read(store.authenticate, credentials.credentials)
        if found is None:
            raise HTTPException(
                401,
                "a valid token is needed: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        request.state.user = found.user
        return found

    User = Annotated[Principal, Depends(principal)]

    async def visible_job(job_id: str, who: Principal) -> Job:
        job = None
        if job_files.JOB_ID.match(job_id):
            job = await read(store.get_job, job_id)
        if job is None or (job.user != who.user and not who.admin):
            raise HTTPException(404, f"no job {job_id}")
        return job

    async def done_job(job_id: str, who: Principal) -> Job:
        job = await visible_job(job_id, who)
        if job.state != "done":
            raise HTTPException(409, f"job {job_id} is {job.state}; results come when it is done")
        return job

    # -- page, health, metrics, schema ----------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/health", tags=["service"])
    async def health() -> dict:
        """Whether the service and its database answer (no token needed)."""
        try:
            counts = await read(store.counts)
        except Exception as error:  # noqa: BLE001 - any failure means unhealthy
            log.error("health check failed", extra={"event": "health", "error": str(error)})
            return JSONResponse({"status": "database unavailable"}, status_code=503)
        return {"status": "ok", "version": __version__, "queued": counts["queued"]}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def get_metrics(who: User) -> PlainTextResponse:
        """Prometheus text format: queue length, jobs by state, synapses/s (admin token)."""
        if not who.admin:
            raise HTTPException(403, "metrics need an admin token")
        text = await read(metrics.render, store, dict(request_counts))
        return PlainTextResponse(text, media_type=metrics.CONTENT_TYPE)

    @app.get("/api/openapi.json", include_in_schema=False)
    async def openapi(who: User) -> JSONResponse:
        return JSONResponse(app.openapi())

    # -- the API ------------------------------------------------------------------------------

    @app.get(f"{API}/me", tags=["jobs"])
    async def me(who: User) -> Me:
        """Whose token this is."""
        return Me(user=who.user, admin=who.admin)

    @app.get(f"{API}/choices", tags=["jobs"])
    async def choices(who: User) -> Choices:
        """The bundles and volumes a job may use (by name), and the limits."""
        return Choices(
            bundles=[Choice(name=n, description=c.description) for n, c in config.bundles.items()],
            volumes=[Choice(name=n, description=c.description) for n, c in config.volumes.items()],
            file_types=list(limits.file_types),
            upload_bytes=limits.upload_bytes,
            rows_per_job=limits.rows_per_job,
            queued_jobs_per_user=limits.queued_jobs_per_user,
        )

    @app.post(
        f"{API}/jobs",
        status_code=201,
        tags=["jobs"],
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
            str | None, Query(description="x,y,z (or one number) in nm, for units=voxels")
        ] = None,
    ) -> JobOut:
        """Queue a prediction job for the table in the request body (the file's bytes).

        The table is checked as `predict-positions` reads it before the job is queued.
        """
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
        active = await read(store.active_jobs, who.user)
        if active >= limits.queued_jobs_per_user:
            raise HTTPException(
                429,
                f"{who.user} has {active} queued or running jobs, the most "
                f"allowed is {limits.queued_jobs_per_user}",
            )
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limits.upload_bytes:
            raise HTTPException(413, f"the upload is larger than {limits.upload_bytes} bytes")

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
                raise HTTPException(
                    415, f"the file is not a {declared} table (it looks like {found})"
                )
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
                raise HTTPException(
                    422, f"{shown}: {rows} rows; at most {limits.rows_per_job} per job"
                )
            new = NewJob(job_id, who.user, bundle, volume, shown, found, rows, options)
            try:
                job = await run_in_threadpool(store.submit, new, limits.queued_jobs_per_user)
            except QueueFull as error:
                raise HTTPException(429, str(error)) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info(
            "job queued",
            extra={
                "event": "job",
                "state": "queued",
                "job": job_id,
                "user": who.user,
                "rows": rows,
                "bundle": bundle,
                "volume": volume,
            },
        )
        return job_out(job)

    @app.get(f"{API}/jobs", tags=["jobs"])
    async def list_jobs(
        who: User,
        all_users: Annotated[
            bool, Query(alias="all", description="every user's jobs (admin tokens only)")
        ] = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[JobOut]:
        """Your jobs, newest first."""
        if all_users and not who.admin:
            raise HTTPException(403, "all=true needs an admin token")
        jobs = await read(store.list_jobs, None if all_users else who.user, limit)
        return [job_out(j) for j in jobs]

    @app.get(f"{API}/jobs/{{job_id}}", tags=["jobs"], responses={404: {}})
    async def get_job(job_id: str, who: User) -> JobOut:
        """A job's state and progress."""
        return job_out(await visible_job(job_id, who))

    @app.post(f"{API}/jobs/{{job_id}}/cancel", tags=["jobs"], responses={404: {}, 409: {}})
    async def cancel_job(job_id: str, who: User) -> JobOut:
        """Cancel a queued job, or stop a running one at its next batch."""
        await visible_job(job_id, who)
        try:
            job = await run_in_threadpool(store.cancel, job_id)
        except JobFinished as error:
            raise HTTPException(409, str(error)) from None
        log.info(
            "job cancel",
            extra={"event": "job", "state": job.state, "job": job_id, "user": who.user},
        )
        return job_out(job)

    @app.get(f"{API}/jobs/{{job_id}}/results", tags=["results"], responses={404: {}, 409: {}})
    async def list_results(job_id: str, who: User) -> Results:
        """The result files of a finished job."""
        await done_job(job_id, who)
        found = job_files.result_files(results, job_id)
        return Results(
            job=job_id,
            files=[
                ResultFile(name=n, bytes=p.stat().st_size, url=f"{API}/jobs/{job_id}/results/{n}")
                for n, p in found.items()
            ],
        )

    @app.get(
        f"{API}/jobs/{{job_id}}/results/{{name}}",
        tags=["results"],
        response_class=FileResponse,
        responses={404: {}, 409: {}},
    )
    async def get_result(job_id: str, name: str, who: User) -> FileResponse:
        """One result file: synapses.parquet/.csv, neurons.parquet/.csv or report.html."""
        await done_job(job_id, who)
        path = job_files.result_files(results, job_id).get(name)
        if path is None:
            raise HTTPException(404, f"job {job_id} has no result {name!r}")
        return _download(path, name, job_id)

    @app.get(
        f"{API}/jobs/{{job_id}}/report",
        tags=["results"],
        response_class=FileResponse,
        responses={404: {}, 409: {}},
    )
    async def get_report(job_id: str, who: User) -> FileResponse:
        """The HTML report of `predict-positions` (shown in a sandbox: its scripts cannot
        reach this site)."""
        await done_job(job_id, who)
        path = job_files.result_files(results, job_id).get("report.html")
        if path is None:
            raise HTTPException(404, f"job {job_id} has no report")
        return _download(path, "report.html", job_id, inline=True)

    app.add_middleware(RequestLog, counts=request_counts)
    return app


def _download(path: Path, name: str, job_id: str, inline: bool = False) -> FileResponse:
    headers = {"X-Content-Type-Options": "nosniff"}
    if name.endswith(".html"):
        # a unique origin: a report's scripts cannot read the page's token or call the API
        headers["Content-Security-Policy"] = "sandbox allow-scripts allow-popups"
    return FileResponse(
        str(path),
        media_type=job_files.RESULT_FILES[name],
        filename=f"{job_id[:8]}_{name}",
        content_disposition_type="inline" if inline else "attachment",
        headers=headers,
    )
