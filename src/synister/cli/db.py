"""Placeholder: filled in by the stage's own work."""

import typer


def register(app: typer.Typer) -> None:
    pass
