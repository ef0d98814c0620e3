"""The web app of `synister serve`: a page, a JSON API for jobs, ``/health`` and ``/metrics``.

Every route but the page's static files and ``/health`` needs ``Authorization: Bearer <token>``
(:mod:`.deps`). The routes live in :mod:`.routes`, the response models in :mod:`.schemas`, the
checks of an upload in :mod:`.uploads`.
"""

from collections import Counter
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from synister import __version__

from .checks import CheckPool
from .config import ServiceConfig
from .deps import Service
from .headers import SecurityHeaders
from .logs import RequestLog
from .routes import jobs, results, service
from .store import Store, open_store
from .uploads import TableRefused


async def _table_refused(request: Request, error: TableRefused) -> JSONResponse:
    return JSONResponse({"detail": error.detail, "columns": error.columns}, status_code=422)


def create_app(config: ServiceConfig, store: Store | None = None) -> FastAPI:
    """The app for ``config``; ``store`` defaults to the config's database."""
    store = store or open_store(config.database_url)
    (config.results_dir / "jobs").mkdir(parents=True, exist_ok=True)
    request_counts: Counter = Counter()
    checks = CheckPool(config.limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await checks.close()

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
        redirect_slashes=False,  # a redirect would be built from the Host header
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.service = Service(config, store, request_counts, checks)
    app.add_exception_handler(TableRefused, _table_refused)
    app.include_router(service.router)
    app.mount("/static", StaticFiles(directory=str(service.STATIC)), name="static")
    app.include_router(jobs.router)
    app.include_router(results.router)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestLog, counts=request_counts)
    return app
