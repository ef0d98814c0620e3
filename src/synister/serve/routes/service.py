"""The page, ``/health`` (no token needed), ``/metrics`` (admin) and the OpenAPI schema."""

from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse

from synister import __version__

from .. import metrics
from ..deps import Svc, User
from ..logs import APP_LOG as log

STATIC = files("synister.serve") / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.get("/health", tags=["service"])
async def health(svc: Svc) -> dict:
    """Whether the service and its database answer (no token needed)."""
    try:
        counts = await svc.read(svc.store.counts)
    except Exception as error:  # noqa: BLE001 - any failure means unhealthy
        log.error("health check failed", extra={"event": "health", "error": str(error)})
        return JSONResponse({"status": "database unavailable"}, status_code=503)
    answer = {"status": "ok", "queued": counts["queued"]}
    if svc.config.service.health_version:  # anyone may ask: by default it does not say
        answer["version"] = __version__
    return answer


@router.get("/metrics", tags=["service"], response_class=PlainTextResponse)
async def get_metrics(who: User, svc: Svc) -> PlainTextResponse:
    """Prometheus text format: queue length, jobs by state, synapses/s (admin token)."""
    if not who.admin:
        raise HTTPException(403, "metrics need an admin token")
    text = await svc.read(metrics.render, svc.store, dict(svc.request_counts))
    return PlainTextResponse(text, media_type=metrics.CONTENT_TYPE)


@router.get("/api/openapi.json", include_in_schema=False)
async def openapi(request: Request, who: User) -> JSONResponse:
    return JSONResponse(request.app.openapi())
