"""``--submit`` and ``--local`` of the long-running commands (``train``, ``predict``)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from .errors import fail


def submit_or_refuse(
    worker_file: Path, args: list[str], submit: bool, local: bool, job_name: str
) -> bool:
    """With ``submit``, submit ``synister ARGS --local`` as a job and return True; else return
    False to run here, unless the worker config is set up for jobs and ``local`` is not given
    (then exit with an error that says both ways)."""
    from synister.config import ConfigError, WorkerConfig
    from synister.submit import refuse_local_run, submit_job

    if submit and local:
        fail("--submit and --local exclude each other")
    if not submit and (local or not worker_file.is_file()):
        return False
    try:
        worker = WorkerConfig.read(worker_file)
        if not submit:
            refuse_local_run(worker, worker_file, " ".join(args[:2]))
            return False
        command, status = submit_job(worker, [*args, "--local"], job_name, worker_file.parent)
    except ConfigError as exc:
        fail(str(exc))
    typer.echo(f"submitted: {shlex.join(command)}", err=True)
    if status:
        typer.echo(f"error: the submission exited with status {status}", err=True)
        raise typer.Exit(status)
    return True
