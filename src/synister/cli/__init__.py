"""The ``synister`` command. Each pipeline stage registers its commands from its own module."""

from __future__ import annotations

import importlib

import typer

from .help import SynisterGroup

app = typer.Typer(
    cls=SynisterGroup,
    name="synister",
    help=(
        "Train, validate and test networks that tell the neurotransmitter of a synapse "
        "from 3D EM.\n\nTypical run: db import -> split make -> prepare-training -> train -> "
        "prepare-prediction -> predict -> evaluate. `synister demo` runs all of it on a "
        "synthetic dataset."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Rich panels crop help texts in a narrow terminal; click's plain help, wrapped by
    # SynisterGroup's formatter, shows every word (tests/test_cli.py checks every command).
    rich_markup_mode=None,
)

# One module per stage; each defines ``register(app)``.
_STAGES = (
    "db",
    "split",
    "synthetic",
    "setup",
    "train",
    "predict",
    "positions",
    "blockwise",
    "evaluate",
    "calibrate",
    "explain",
    "bundle",
    "demo",
    "serve",
)

for _stage in _STAGES:
    importlib.import_module(f"{__name__}.{_stage}").register(app)


def _print_version(value: bool) -> None:
    if value:
        from synister import __version__

        typer.echo(f"synister {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    # the options of `synister` itself; the help text is the app's
    pass


def main() -> None:
    app()
