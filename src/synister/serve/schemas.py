"""What the JSON API answers: the response models (the OpenAPI schema describes them) and a
job as the API shows it, with links to what can be done with it next."""

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from .store import Job

API = "/api/v1"
_PARQUET = "application/vnd.apache.parquet"
TABLE_MEDIA_TYPES = {
    "text/csv": {"schema": {"type": "string", "format": "binary"}},
    _PARQUET: {"schema": {"type": "string", "format": "binary"}},
    "application/vnd.apache.arrow.file": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}


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
    user_bytes: int
    results_days: float


class Me(BaseModel):
    user: str
    admin: bool


def _time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def job_out(job: Job) -> JobOut:
    base = f"{API}/jobs/{job.id}"
    links = {"self": base, "cancel": f"{base}/cancel", "delete": base}
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
