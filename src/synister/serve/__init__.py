"""The prediction service: `synister serve` (web page, JSON API, job queue, workers).

Modules: :mod:`.config` (service.toml), :mod:`.store` (jobs and tokens; SQLite, PostgreSQL),
:mod:`.app` (the FastAPI app: :mod:`.routes`, :mod:`.schemas`, :mod:`.deps` and the upload
checks of :mod:`.uploads`), :mod:`.worker` (claims and runs jobs), :mod:`.engine` (the one call
into the prediction engine), :mod:`.server` (the process that runs it all).
"""

from .config import ServiceConfig, load_service_config
from .store import Job, Store, open_store

__all__ = ["Job", "ServiceConfig", "Store", "load_service_config", "open_store"]
