"""``synister serve``: the prediction service (web page, JSON API, job queue, workers) and its
tokens."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .errors import fail

serve_app = typer.Typer(
    name="serve",
    help=(
        "Run the prediction service: a web page and a JSON API where colleagues upload a table "
        "of synapse positions, choose a model and a volume, and download predictions. "
        "`synister serve --config service.toml` starts it; `synister serve token create USER` "
        "gives someone access."
    ),
    invoke_without_command=True,
)
token_app = typer.Typer(
    name="token", help="Create, revoke and list access tokens.", no_args_is_help=True
)
serve_app.add_typer(token_app, name="token")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The service's TOML file (default: service.toml in the working folder; "
        "`synister serve example-config` prints one).",
    ),
]
DEFAULT_CONFIG = Path("service.toml")


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")


def _config(ctx: typer.Context, path: Path | None):
    from synister.config import ConfigError
    from synister.serve.config import load_service_config

    while path is None and ctx is not None:
        path = (ctx.obj or {}).get("config")
        ctx = ctx.parent
    try:
        return load_service_config(path or DEFAULT_CONFIG)
    except ConfigError as error:
        fail(str(error))


def _store(ctx: typer.Context, path: Path | None):
    from synister.serve.store import StoreError, open_store

    config = _config(ctx, path)
    try:
        return open_store(config.database_url)
    except StoreError as error:
        fail(str(error))


@serve_app.callback()
def serve_command(
    ctx: typer.Context,
    config: ConfigOption = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Worker processes (default: the config's service.workers; 0: "
            "the web app only, with workers started elsewhere by `serve worker`).",
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: the config's).")] = None,
) -> None:
    """Start the service: the web app on uvicorn and its workers, until SIGTERM or Ctrl-C."""
    ctx.obj = {"config": config}
    if ctx.invoked_subcommand is not None:
        return
    from synister.config import ConfigError
    from synister.serve.logs import configure_logging
    from synister.serve.server import serve
    from synister.serve.store import StoreError

    loaded = _config(ctx, config)
    if port is not None:
        loaded = loaded.model_copy(
            update={"service": loaded.service.model_copy(update={"port": port})}
        )
    configure_logging()
    try:
        serve(loaded, workers)
    except (ConfigError, StoreError) as error:
        fail(str(error))


@serve_app.command("worker")
def worker_command(
    ctx: typer.Context,
    config: ConfigOption = None,
    parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run one worker: it claims jobs one at a time until SIGTERM or Ctrl-C.

    `synister serve` starts its own workers; start more with this command, e.g. on another
    machine that shares the config's PostgreSQL database and results folder.
    """
    from synister.serve.logs import configure_logging
    from synister.serve.store import StoreError
    from synister.serve.worker import run_worker

    loaded = _config(ctx, config)
    configure_logging()
    try:
        run_worker(loaded, parent_pid)
    except StoreError as error:
        fail(str(error))


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            fail(f"--{what} {value!r}: expected NAME=PATH")
        pairs[name] = target
    return pairs


@serve_app.command("init")
def init_command(
    folder: Annotated[Path, typer.Argument(help="The service's folder (created).")],
    bundle: Annotated[
        list[str] | None,
        typer.Option(help="NAME=FOLDER of a model bundle (`synister export-model`); repeatable."),
    ] = None,
    volume: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PATH_OR_URL of a volume (zarr, N5, precomputed; a path may "
            "end in the array, e.g. raw.zarr/raw); repeatable."
        ),
    ] = None,
    admin: Annotated[str, typer.Option(help="User name of the admin token printed.")] = "admin",
    port: Annotated[int, typer.Option(help="Port to listen on (loopback).")] = 8000,
) -> None:
    """Write a service folder: service.toml, its job database and an admin token.

    The config offers the given bundles and volumes by name, keeps jobs in FOLDER/service.db
    and results in FOLDER/service_results, and listens on loopback. The admin token goes to
    stdout. Then: synister serve --config FOLDER/service.toml
    """
    from synister.config import ConfigError
    from synister.serve.config import load_service_config, render_config
    from synister.serve.server import check_choices
    from synister.serve.store import open_store

    os.umask(0o077)  # the job database and the config: this account's alone
    bundles = {n: Path(p).expanduser().absolute() for n, p in _pairs(bundle, "bundle").items()}
    volumes = {
        n: u if "://" in u else str(Path(u).expanduser().absolute())
        for n, u in _pairs(volume, "volume").items()
    }
    config_path = folder / "service.toml"
    if config_path.exists():
        fail(f"{config_path} exists; edit it, or choose another folder")
    made = next((p for p in (*reversed(folder.absolute().parents), folder) if not p.exists()), None)
    folder.mkdir(parents=True, exist_ok=True)
    config_path.write_text(render_config(bundles, volumes, port=port))
    try:
        config = load_service_config(config_path)
        check_choices(config)
    except ConfigError as error:
        config_path.unlink()
        if made is not None:  # the folders this call made: nothing stays behind
            shutil.rmtree(made, ignore_errors=True)
        fail(str(error))
    with open_store(config.database_url) as store:
        _, token = store.create_token(admin, admin=True)
    typer.echo(
        f"wrote {config_path}; start the service with\n"
        f"  synister serve --config {config_path}\n"
        f"and open http://127.0.0.1:{port}/ with this admin token of {admin!r} (shown only now; "
        "more with `synister serve token create USER`):",
        err=True,
    )
    typer.echo(token)


def _echo_rows(rows: list[dict], as_json: bool, header: str, line) -> None:
    """``rows`` as JSON, or as a header and one ``line(row)`` each."""
    if as_json:
        typer.echo(json.dumps(rows))
        return
    typer.echo(header)
    for row in rows:
        typer.echo(line(row))


def _when(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@serve_app.command("jobs")
def jobs_command(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's jobs.")] = None,
    config: ConfigOption = None,
    as_json: opt.Json = False,
) -> None:
    """List jobs (every user's, newest first) with the bytes each keeps on disk."""
    from synister.serve.files import folder_bytes, job_dir
    from synister.serve.retention import ALL_JOBS

    loaded = _config(ctx, config)
    with _store(ctx, config) as store:
        jobs = store.list_jobs(user, ALL_JOBS)
    rows = [
        {
            "id": job.id,
            "user": job.user,
            "state": job.state,
            "rows": job.rows,
            "created": _when(job.created),
            "finished": _when(job.finished),
            "bytes": folder_bytes(job_dir(loaded.results_dir, job.id)),
            "input": job.input_name,
        }
        for job in jobs
    ]
    _echo_rows(
        rows,
        as_json,
        f"{'id':32}  {'user':16}  {'state':9}  {'finished':25}  {'bytes':>12}  input",
        lambda r: (
            f"{r['id']:32}  {r['user']:16}  {r['state']:9}  {r['finished'] or '-':25}  "
            f"{r['bytes']:>12}  {r['input']!r}"
        ),
    )
    if not as_json:
        typer.echo(f"{len(rows)} jobs, {sum(r['bytes'] for r in rows)} bytes", err=True)


@serve_app.command("prune")
def prune_command(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")
    ] = False,
    config: ConfigOption = None,
    as_json: opt.Json = False,
) -> None:
    """Apply the retention rules now (the service does hourly): remove the files of
    cancelled and failed jobs, finished jobs older than [limits] results_days (files and
    record), and job folders without a record older than a day."""
    from synister.serve.retention import prune

    loaded = _config(ctx, config)
    with _store(ctx, config) as store:
        removed = prune(loaded, store, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in removed]))
        return
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        what = "files and record" if r.record else "files"
        typer.echo(f"{verb} {what} of {r.job} ({r.reason}, {r.user or 'no record'}): {r.bytes} B")
    total = sum(r.bytes for r in removed)
    typer.echo(f"{verb} {len(removed)} job folders, {total} bytes", err=True)


@serve_app.command("example-proxy")
def example_proxy_command() -> None:
    """Print an nginx configuration for a reverse proxy in front of the service."""
    from synister.serve.http import NGINX_EXAMPLE

    typer.echo(NGINX_EXAMPLE, nl=False)


@serve_app.command("example-config")
def example_config_command() -> None:
    """Print an example service.toml."""
    from synister.serve.config import EXAMPLE

    typer.echo(EXAMPLE, nl=False)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Who the token is for (letters, digits, _.@-).")],
    admin: Annotated[bool, typer.Option(help="Sees every user's jobs and /metrics.")] = False,
    config: ConfigOption = None,
) -> None:
    """Create a token of USER and print it, once, on stdout (only its hash is stored)."""
    from synister.serve.store import StoreError

    with _store(ctx, config) as store:
        try:
            key_id, token = store.create_token(user, admin=admin)
        except StoreError as error:
            fail(str(error))
    typer.echo(
        f"token {key_id} for {user}{' (admin)' if admin else ''}; it is shown only "
        "now: hand it over privately",
        err=True,
    )
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    key_id: Annotated[
        str | None,
        typer.Argument(help="The token's id (`token list`, or its 12 hex digits after syn_)."),
    ] = None,
    user: Annotated[str | None, typer.Option(help="Revoke every token of this user.")] = None,
    config: ConfigOption = None,
) -> None:
    """Revoke one token, or every token of a user."""
    if (key_id is None) == (user is None):
        fail("name a token id or --user USER")
    with _store(ctx, config) as store:
        if user is not None:
            count = store.revoke_user(user)
            typer.echo(f"revoked {count} token(s) of {user}", err=True)
            if count == 0:
                raise typer.Exit(1)
        elif not store.revoke_token(key_id):
            fail(f"no live token {key_id} (see `synister serve token list`)")
        else:
            typer.echo(f"revoked token {key_id}", err=True)


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    config: ConfigOption = None,
    as_json: opt.Json = False,
) -> None:
    """List tokens (ids, users, admin, created, revoked); secrets are never stored."""
    with _store(ctx, config) as store:
        tokens = store.list_tokens()

    rows = [
        {
            "id": t.key_id,
            "user": t.user,
            "admin": t.admin,
            "created": _when(t.created),
            "revoked": _when(t.revoked),
        }
        for t in tokens
    ]
    _echo_rows(
        rows,
        as_json,
        f"{'id':12}  {'user':20}  {'admin':5}  {'created':25}  revoked",
        lambda r: (
            f"{r['id']:12}  {r['user']:20}  {'yes' if r['admin'] else 'no':5}  "
            f"{r['created']:25}  {r['revoked'] or '-'}"
        ),
    )
