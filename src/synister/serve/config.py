"""``service.toml``: what `synister serve` offers, where it keeps jobs, and its limits.

Users choose a model bundle and a volume by the names this file gives them; they never send a
path. Relative paths (bundles, volumes, the results folder, a ``sqlite:///`` file) are relative
to the folder that holds the file, so a service folder can be moved as a whole. Errors name the
file and the key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from synister.config import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
FILE_TYPES = ("csv", "parquet", "feather")

EXAMPLE = """\
# synister serve --config service.toml
[service]
host = "127.0.0.1"            # 0.0.0.0 to listen on every interface
port = 8000
database = "sqlite:///service.db"   # or postgresql://user:pw@host/db (workers on many machines)
results = "service_results"   # uploads and results, one folder per job (shared by all workers)
workers = 1                   # worker processes started with the service, one job at a time each
# device = "cuda:0"           # the workers' torch device (default: a GPU when present)
# threads = 2                 # torch threads per worker (default: one per core)
# lease_seconds = 60          # a worker silent this long is taken for dead; its job runs again
# max_attempts = 3            # a job whose worker died this often fails
# part_rows = 4096            # synapses stored at a time (within 2 s): a killed job redoes fewer

# trusted_proxies = ["127.0.0.1"]  # X-Forwarded-For/-Proto are believed only from these
# health_version = false      # /health tells the version (to anyone) when true
# umask = "077"               # files the service writes: its account's alone; "027": group reads

[limits]
upload_bytes = 104857600      # 100 MiB per uploaded table
rows_per_job = 1000000
queued_jobs_per_user = 5      # queued or running (uploads being checked count too)
# row_bytes = 4096            # a CSV line, or the used Parquet columns per row (uncompressed)
# checks = 2                  # tables checked at once (each in a process of its own) ...
# checks_per_user = 1         # ... and per user
# check_memory_bytes = 314572800  # what a check may take beyond its process's start (300 MiB)
# check_seconds = 120
# results_days = 30           # a finished job's files and record are deleted after this
# user_bytes = 10737418240    # a user's jobs (inputs and results) on disk; 10 GiB
# header_bytes = 16384        # HTTP request line and headers
# header_seconds = 10         # to send them; a connection that takes longer is closed
# keep_alive_seconds = 5      # an idle connection is closed after this
# body_seconds = 30           # an upload that sends nothing for this long gets 408
# connections = 200           # requests beyond this many open connections get 503

[bundles.demo]                # name users choose; the folder written by `synister export-model`
path = "bundles/demo"
description = "ResNet-18 of the synthetic demo"

[volumes.demo]
url = "volumes/demo.zarr"     # local path or URL (zarr, N5, neuroglancer precomputed)
dataset = "raw"
description = "synthetic FAFB-like volume"
"""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceSection(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    #: jobs and tokens; default ``$SYNISTER_DB``, else ``service.db`` beside the config file
    database: str | None = None
    results: Path = Path("service_results")
    workers: Annotated[int, Field(ge=0)] = 1
    #: a running job's lease: a worker that stops renewing it for this long has died
    lease_seconds: Annotated[float, Field(gt=0)] = 60.0
    #: how often a worker renews its lease and stores progress (default a quarter of the lease)
    heartbeat_seconds: Annotated[float, Field(gt=0)] | None = None
    #: how often an idle worker looks for a job
    poll_seconds: Annotated[float, Field(gt=0)] = 1.0
    #: a job whose worker died this many times fails instead of being tried again
    max_attempts: Annotated[int, Field(ge=1)] = 3
    #: torch device of the workers (default: a GPU when present)
    device: str | None = None
    #: torch threads of each worker (default: torch's choice, one per core). On a machine
    #: shared with other work, fewer threads than cores can be much faster.
    threads: Annotated[int, Field(ge=1)] | None = None
    #: synapses a job stores at a time at most (also within 2 s): a killed job redoes at most
    #: that many; progress moves in such steps (default predict-positions' 4096)
    part_rows: Annotated[int, Field(ge=1)] | None = None
    #: seconds SIGTERM waits for a running job to stop at its next batch before killing it
    shutdown_grace_seconds: Annotated[float, Field(gt=0)] = 30.0
    #: addresses (IPs or CIDR networks) of reverse proxies whose X-Forwarded-For and
    #: X-Forwarded-Proto are believed; from any other address they are ignored
    trusted_proxies: tuple[str, ...] = ()
    #: whether ``/health`` (which needs no token) tells the version
    health_version: bool = False
    #: permissions taken away from the files and folders the service and its workers create
    #: (octal; 077: results and the job database are the service's account's alone, 027: its
    #: group may read them)
    umask: str = "077"

    @field_validator("umask")
    @classmethod
    def _umask(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value) or int(value, 8) & 0o700:
            raise ValueError(
                f"{value!r} is not an octal umask that leaves the owner every permission "
                '(such as "077" or "027")'
            )
        return value

    @property
    def umask_bits(self) -> int:
        return int(self.umask, 8)

    @property
    def heartbeat(self) -> float:
        return self.heartbeat_seconds or self.lease_seconds / 4


class LimitsSection(_Model):
    upload_bytes: Annotated[int, Field(gt=0)] = 100 * 2**20
    rows_per_job: Annotated[int, Field(gt=0)] = 1_000_000
    #: queued or running jobs of a user, uploads being received or checked included
    queued_jobs_per_user: Annotated[int, Field(gt=0)] = 5
    file_types: tuple[Literal["csv", "parquet", "feather"], ...] = FILE_TYPES
    #: bytes per row: a CSV file's longest line, the used Parquet columns (uncompressed)
    row_bytes: Annotated[int, Field(gt=0)] = 4096
    #: tables checked at once, each in a process of its own, and at once per user
    checks: Annotated[int, Field(ge=1)] = 2
    checks_per_user: Annotated[int, Field(ge=1)] = 1
    #: memory a check may allocate beyond its process's start (an upload that needs more is
    #: refused), and its time
    check_memory_bytes: Annotated[int, Field(ge=16 * 2**20)] = 300 * 2**20
    check_seconds: Annotated[float, Field(gt=0)] = 120.0
    #: days a finished job (its files and its record) is kept; 0: for ever
    results_days: Annotated[float, Field(ge=0)] = 30.0
    #: bytes a user's jobs (inputs and results) may take on disk; a new upload beyond is refused
    user_bytes: Annotated[int, Field(gt=0)] = 10 * 2**30
    #: HTTP: the request line and headers, the seconds to send them, an idle connection's
    #: seconds, the seconds an upload may send nothing, the connections served at once
    header_bytes: Annotated[int, Field(ge=1024)] = 16384
    header_seconds: Annotated[float, Field(gt=0)] = 10.0
    keep_alive_seconds: Annotated[float, Field(gt=0)] = 5.0
    body_seconds: Annotated[float, Field(gt=0)] = 30.0
    connections: Annotated[int, Field(ge=1)] = 200


class BundleChoice(_Model):
    path: Path
    description: str = ""


class VolumeChoice(_Model):
    url: str
    dataset: str | None = None
    #: z, y, x; overrides the volume's metadata
    voxel_size_nm: tuple[float, float, float] | None = None
    #: the volume as neuroglancer on a user's machine loads it, for the report's links (e.g.
    #: precomputed://https://...; default: url)
    viewer_source: str | None = None
    description: str = ""


class ServiceConfig(_Model):
    """The parsed file, with every relative path made absolute."""

    source: Path | None = None  # the file it was read from
    service: ServiceSection = ServiceSection()
    limits: LimitsSection = LimitsSection()
    bundles: dict[str, BundleChoice] = {}
    volumes: dict[str, VolumeChoice] = {}

    @field_validator("service")
    @classmethod
    def _proxies(cls, service: ServiceSection) -> ServiceSection:
        for address in service.trusted_proxies:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {address!r} is not an IP address or network"
                ) from None
        return service

    @field_validator("bundles", "volumes")
    @classmethod
    def _names(cls, choices: dict) -> dict:
        for name in choices:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(
                    f"name {name!r}: use letters, digits, '_', '.', '-' (at most 64, "
                    "starting with a letter or digit)"
                )
        return choices

    @property
    def database_url(self) -> str:
        return self.service.database  # resolved by load_service_config

    @property
    def results_dir(self) -> Path:
        return self.service.results


def render_config(
    bundles: dict[str, Path], volumes: dict[str, str], port: int = 8000, host: str = "127.0.0.1"
) -> str:
    """A service.toml offering ``bundles`` and ``volumes`` (name -> path or URL), with the
    SQLite database and the results folder beside it and the default limits."""
    quote = json.dumps  # a JSON string is a TOML basic string
    lines = [
        "# synister serve --config service.toml (see `synister serve example-config`)",
        "[service]",
        f"host = {quote(host)}",
        f"port = {port}",
        'database = "sqlite:///service.db"',
        'results = "service_results"',
        "workers = 1",
        "",
        "[limits]",
        f"upload_bytes = {LimitsSection().upload_bytes}",
        f"rows_per_job = {LimitsSection().rows_per_job}",
        f"queued_jobs_per_user = {LimitsSection().queued_jobs_per_user}",
    ]
    for name, path in bundles.items():
        lines += ["", f"[bundles.{quote(name)}]", f"path = {quote(str(path))}"]
    for name, url in volumes.items():
        lines += ["", f"[volumes.{quote(name)}]", f"url = {quote(str(url))}"]
    return "\n".join(lines) + "\n"


def _absolute(base: Path, path: Path | str) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base / path).absolute()


def _resolve_database(base: Path, url: str | None) -> str:
    url = url or os.environ.get("SYNISTER_DB") or "sqlite:///service.db"
    prefix = "sqlite:///"
    if url.startswith(prefix) and url[len(prefix) :] != ":memory:":
        return prefix + str(_absolute(base, url[len(prefix) :]))
    return url


def _is_local(url: str) -> bool:
    return "://" not in url


def load_service_config(path: str | Path) -> ServiceConfig:
    """Read ``service.toml``; a missing file or a bad key raises :class:`ConfigError` naming it."""
    path = Path(path).expanduser().absolute()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: service config not found (an example: `synister serve example-config`)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    try:
        config = ServiceConfig(source=path, **raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            problems.append(f"{key}: {item['msg']}")
        raise ConfigError(f"{path}: {'; '.join(problems)}") from None
    except TypeError as error:
        raise ConfigError(f"{path}: {error}") from None
    base = path.parent
    service = config.service.model_copy(
        update={
            "database": _resolve_database(base, config.service.database),
            "results": _absolute(base, config.service.results),
        }
    )
    bundles = {
        name: choice.model_copy(update={"path": _absolute(base, choice.path)})
        for name, choice in config.bundles.items()
    }
    volumes = {
        name: choice.model_copy(
            update={
                "url": str(_absolute(base, choice.url)) if _is_local(choice.url) else choice.url
            }
        )
        for name, choice in config.volumes.items()
    }
    return config.model_copy(update={"service": service, "bundles": bundles, "volumes": volumes})
