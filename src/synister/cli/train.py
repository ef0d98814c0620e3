"""``synister train`` and ``synister train-plot``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..layout import WORKER_FILE
from . import options as opt
from .errors import fail
from .submit import submit_or_refuse

SetupOption = Annotated[
    Path, typer.Option("--setup", help="Training setup folder made by `synister prepare-training`.")
]


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("train-plot")(train_plot_command)


def train_command(
    num_iterations: Annotated[
        int,
        typer.Argument(min=1, help="Train until this iteration (resuming the newest checkpoint)."),
    ],
    setup: SetupOption = Path("."),
    device: opt.Device = None,
    progress: opt.Progress = True,
    submit: opt.Submit = False,
    local: opt.Local = False,
) -> None:
    """Train a network; Ctrl-C stops cleanly after saving a checkpoint.

    Writes model_checkpoint_<iteration>, log/ (tensorboard) and snapshots/ into the setup.

    Several GPUs: torchrun --nproc_per_node=N -m synister.train ITERATIONS --setup DIR
    """
    from synister.db import DatabaseError
    from synister.train import NotATrainingSetup, train
    from synister.train.setup_run import summary_line

    args = ["train", str(num_iterations), "--setup", str(setup.resolve()), "--no-progress"]
    if device:
        args += ["--device", device]
    if submit_or_refuse(setup / WORKER_FILE, args, submit, local, f"train-{setup.name}"):
        return
    try:
        result = train(setup, num_iterations, device=device, progress=progress)
    except (NotATrainingSetup, ValueError, OSError, DatabaseError) as err:  # ConfigError too
        fail(str(err))
    typer.echo(summary_line(result))


def train_plot_command(
    setup: SetupOption = Path("."),
    out: Annotated[
        Path | None, typer.Option(help="PNG to write (default: <setup>/training_curves.png).")
    ] = None,
) -> None:
    """Plot loss and per-class accuracy from the setup's tensorboard logs into a PNG."""
    from synister.train.curves import plot_training_curves

    try:
        path = plot_training_curves(setup, out or setup / "training_curves.png")
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    typer.echo(f"wrote {path}")
