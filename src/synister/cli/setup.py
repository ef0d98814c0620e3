"""``synister prepare-training`` and ``synister prepare-prediction``: setup folders with configs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synister.config import ConfigError


def _parse_settings(settings: list[str]) -> dict[str, str]:
    values = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        values[key.strip()] = value.strip()
    return values


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


BaseDir = Annotated[
    Path, typer.Option("-d", "--base-dir", help="BASE folder that holds the experiments.")
]
Experiment = Annotated[str, typer.Option("-e", "--experiment", help="Experiment name, e.g. fafb.")]
TrainId = Annotated[int, typer.Option("-t", "--train-id", help="Number of the training run.")]


def prepare_training_command(
    base_dir: BaseDir,
    experiment: Experiment,
    train_id: TrainId,
    clean_up: Annotated[
        bool,
        typer.Option(
            "-c", "--clean-up", help="Remove the training setup (and checkpoints) instead."
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before removing.")] = False,
    db_url: Annotated[
        str | None,
        typer.Option(help="Database URL (default: $SYNISTER_DB, else ./synister.db)."),
    ] = None,
    split_name: Annotated[
        str | None, typer.Option(help="Split to train on (default: skeleton).")
    ] = None,
    raw_container: Annotated[
        str | None, typer.Option(help="EM volume, zarr/N5/precomputed (default: raw.zarr in BASE).")
    ] = None,
    raw_dataset: Annotated[str | None, typer.Option(help="Dataset in it (default: raw).")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE for any Training or Worker key, in the ini format "
            "(e.g. --set 'input_shape=8, 64, 64'); repeatable.",
        ),
    ] = None,
) -> None:
    """Create BASE/EXPERIMENT/02_train/setup_t<ID> with train_config.ini and worker_config.ini.

    The defaults train the seed's FAFB VGG (16x160x160 voxels of 40x4x4 nm, six transmitters)
    on the layout `synister synthetic` writes; edit db_url and raw_container (or pass them here).
    An existing setup is never overwritten.
    """
    from synister import setup

    if clean_up:
        folder = setup.train_setup_dir(base_dir, experiment, train_id)
        if not folder.exists():
            _fail(f"no training setup at {folder}")
        if not yes and not typer.confirm(
            f"Remove {folder} and all its contents (checkpoints, logs, snapshots)?", default=False
        ):
            typer.echo("Aborted, nothing removed.", err=True)
            raise typer.Exit(1)
        try:
            setup.remove_training(base_dir, experiment, train_id)
        except setup.SetupError as exc:
            _fail(str(exc))
        typer.echo(f"Removed {folder}")
        return

    overrides: dict[str, str] = _parse_settings(settings or [])
    for key, value in (
        ("db_url", db_url),
        ("split_name", split_name),
        ("raw_container", raw_container),
        ("raw_dataset", raw_dataset),
    ):
        if value is not None:
            overrides[key] = value
    try:
        folder = setup.prepare_training(base_dir, experiment, train_id, **overrides)
    except (ConfigError, setup.SetupError) as exc:
        _fail(str(exc))
    typer.echo(f"Created {folder}")
    typer.echo(f"Edit {folder / 'train_config.ini'}, then run: cd {folder} && synister train N")


def prepare_prediction_command(
    ctx: typer.Context,
    base_dir: BaseDir,
    experiment: Experiment,
    train_id: TrainId,
    iterations: Annotated[
        list[int],
        typer.Option("-i", "--iterations", help="Checkpoint iteration(s): -i 1000 2000 3000."),
    ],
    validation: Annotated[
        bool, typer.Option("-v", "--validation", help="Predict the validation part, not test.")
    ] = False,
) -> None:
    """Create one BASE/EXPERIMENT/03_predict/setup_t<ID>_p<N> per checkpoint iteration.

    The predict_config.ini is initialised from the training setup; an iteration that already
    has a setup for the same split part keeps it (and its number).
    """
    from synister import setup

    wanted = list(iterations)
    for extra in ctx.args:  # "-i 1000 2000": click passes the values after the first here
        try:
            wanted.append(int(extra))
        except ValueError:
            raise typer.BadParameter(
                f"expected iteration numbers, got {extra!r}", param_hint="-i"
            ) from None
    try:
        made = setup.prepare_prediction_setups(base_dir, experiment, train_id, wanted, validation)
    except (ConfigError, setup.SetupError) as exc:
        _fail(str(exc))
    for item in made:
        state = "created" if item.created else "exists, kept"
        typer.echo(f"{item.path} (iteration {item.iteration}): {state}")


def register(app: typer.Typer) -> None:
    app.command("prepare-training")(prepare_training_command)
    app.command(
        "prepare-prediction",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
    )(prepare_prediction_command)
