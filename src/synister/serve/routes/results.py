"""Downloads of a finished job: the list of its result files, each file, and its report."""

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from .. import files as job_files
from ..deps import Svc, User, done_job
from ..schemas import API, ResultFile, Results

router = APIRouter(prefix=f"{API}/jobs/{{job_id}}", tags=["results"])


@router.get("/results", responses={404: {}, 409: {}})
async def list_results(job_id: str, who: User, svc: Svc) -> Results:
    """The result files of a finished job."""
    await done_job(svc, job_id, who)
    found = job_files.result_files(svc.config.results_dir, job_id)
    return Results(
        job=job_id,
        files=[
            ResultFile(name=n, bytes=p.stat().st_size, url=f"{API}/jobs/{job_id}/results/{n}")
            for n, p in found.items()
        ],
    )


@router.get("/results/{name}", response_class=FileResponse, responses={404: {}, 409: {}})
async def get_result(job_id: str, name: str, who: User, svc: Svc) -> FileResponse:
    """One result file: synapses.parquet/.csv, neurons.parquet/.csv or report.html."""
    await done_job(svc, job_id, who)
    path = job_files.result_files(svc.config.results_dir, job_id).get(name)
    if path is None:
        raise HTTPException(404, f"job {job_id} has no result {name!r}")
    return _download(path, name, job_id)


@router.get("/report", response_class=FileResponse, responses={404: {}, 409: {}})
async def get_report(job_id: str, who: User, svc: Svc) -> FileResponse:
    """The HTML report of `predict-positions` (shown in a sandbox: its scripts cannot
    reach this site)."""
    await done_job(svc, job_id, who)
    path = job_files.result_files(svc.config.results_dir, job_id).get("report.html")
    if path is None:
        raise HTTPException(404, f"job {job_id} has no report")
    return _download(path, "report.html", job_id, inline=True)


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
