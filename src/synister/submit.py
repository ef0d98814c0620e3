"""Cluster jobs: run a synister command through ``worker_config.ini``'s submission template.

:func:`synister.config.submit_command` turns the template into a command line; this module
says how synister calls itself inside a job and runs the submission. ``synister train`` and
``synister predict`` use it for ``--submit``; the whole-dataset runner submits its workers the
same way.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from synister.config import WORKER_FILE, ConfigError, WorkerConfig, submit_command

#: worker keys that only submitted jobs use
SUBMIT_KEYS = ("submit_command", "queue", "singularity_container", "mount_dirs")


def synister_argv(worker: WorkerConfig, args: list[str]) -> list[str]:
    """The command that runs ``synister ARGS`` in a job: this Python's ``-m synister``, or the
    container's ``python -m synister`` when the job runs in a singularity container."""
    python = "python" if worker.singularity_container else sys.executable
    return [python, "-m", "synister", *args]


def submit_job(
    worker: WorkerConfig, args: list[str], job_name: str, cwd: str | Path | None = None
) -> tuple[list[str], int]:
    """Submit ``synister ARGS`` with the worker's template, from ``cwd``; returns the command
    line run and its exit status (a batch system's status of queueing the job, for ``sbatch``
    or ``bsub``)."""
    command = submit_command(worker, synister_argv(worker, args), job_name)
    try:
        status = subprocess.run(command, cwd=cwd, check=False).returncode
    except OSError as exc:
        raise ConfigError(
            f"{WORKER_FILE} [Worker] submit_command: cannot run {command[0]!r}: {exc}"
        ) from None
    return command, status


def refuse_local_run(worker: WorkerConfig, worker_file: Path, command: str) -> None:
    """Raise :class:`ConfigError` when ``worker`` is set up for submitted jobs (a template, a
    queue or a container) and the user asked for neither ``--submit`` nor ``--local``: running
    here would ignore those settings."""
    template = worker.submit_template()
    if template is None:
        return
    given = [
        f"{key} = {getattr(worker, key) if key != 'mount_dirs' else ', '.join(worker.mount_dirs)}"
        for key in SUBMIT_KEYS
        if getattr(worker, key)
    ]
    preview = shlex.join(submit_command(worker, ["synister", *command.split()]))
    raise ConfigError(
        f"{worker_file} sets {'; '.join(given)}, which apply to submitted jobs ({preview}): "
        "run with --submit to submit, or with --local to run on this machine without them"
    )
