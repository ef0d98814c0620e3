"""How every command reports a user error: one line on stderr, exit status 1, no traceback;
a warning: one line on stderr; and a Ctrl-C of a command that resumes: what is kept, exit
status 130."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(message: str) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr and exit with status 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def warn(message: str) -> None:
    """Print ``WARNING: MESSAGE`` on stderr (a likely mix-up the run goes on with)."""
    typer.echo(f"WARNING: {message}", err=True)


def interrupted(kept: str) -> NoReturn:
    """After Ctrl-C of a resumable command: say that ``kept`` stays and a rerun resumes, and
    exit with status 130 (as a shell reports SIGINT)."""
    typer.echo(f"interrupted: {kept}; run the same command again to resume", err=True)
    raise typer.Exit(130)
