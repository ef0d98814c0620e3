"""``synister export-model``: a trained network as a model bundle folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .errors import fail


def register(app: typer.Typer) -> None:
    app.command("export-model")(export_model_command)


def export_model_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="A training setup folder (02_train/setup_t<ID>), or a checkpoint file "
            "(an original funlib one too) with --train-config."
        ),
    ],
    out: opt.Out,
    iteration: Annotated[
        str | None,
        typer.Option(
            "--iteration",
            help="Checkpoint iteration of the setup, or 'best': the one --rule picks among "
            "the setup's validation runs.",
        ),
    ] = None,
    rule: Annotated[
        str | None,
        typer.Option(
            "--rule",
            help="How --iteration best picks: margin (the latest, unless an earlier one is "
            "better by more than the bootstrap standard error of the difference; the demo's), "
            "accuracy (the best synapse accuracy: the original's), nll, balanced, last.",
        ),
    ] = None,
    train_config: Annotated[
        Path | None,
        typer.Option(
            "--train-config",
            help="train_config.ini of a checkpoint file (default: the one beside it).",
        ),
    ] = None,
    averaged: Annotated[
        bool,
        typer.Option(
            "--averaged",
            help="The weight average saved beside the checkpoint (training with ema_decay).",
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle.")] = False,
) -> None:
    """Write a model bundle: the weights and a model.json with the network, classes, input
    shape, voxel size, normalisation and provenance (split, iteration, the metrics of the
    setup's prediction runs). predict-positions, predict-volume and the service load bundles.
    """
    from synister.evaluate.provenance import export_model
    from synister.evaluate.selection import DEFAULT_RULE
    from synister.layout import train_config_beside
    from synister.models.bundle import BundleError, bundle_from_checkpoint, load_bundle

    try:
        if source.is_file():
            if iteration is not None or averaged:
                fail(
                    "--iteration and --averaged are for setup folders; a checkpoint file is one "
                    "iteration (give model_checkpoint_<N>.averaged for its weight average)"
                )
            config = train_config or train_config_beside(source)
            written = bundle_from_checkpoint(source, config, out, overwrite=force)
        else:
            if train_config is not None:
                fail("--train-config is for checkpoint files; a setup has its own")
            if iteration is None:
                fail("give --iteration N or --iteration best")
            if iteration != "best" and not iteration.isdigit():
                fail(f"--iteration: expected a number or 'best', got {iteration!r}")
            chosen = "best" if iteration == "best" else int(iteration)
            written = export_model(
                source, chosen, out, averaged=averaged, overwrite=force, rule=rule or DEFAULT_RULE
            )
        bundle = load_bundle(written)
    except BundleError as exc:
        fail(str(exc))
    shape = "x".join(str(s) for s in bundle.input_shape_vox)
    voxel = "x".join(f"{s:g}" for s in bundle.voxel_size_nm)
    typer.echo(
        f"wrote {written}: {bundle.network.get('network')}, iteration {bundle.iteration}, "
        f"classes {', '.join(bundle.classes)}; input {shape} voxels of {voxel} nm"
    )
    for part, run in sorted(bundle.provenance.get("metrics", {}).items()):
        typer.echo(
            f"  {part}: synapse accuracy {_number(run.get('synapse_accuracy'))}, neuron "
            f"accuracy (vote) {_number(run.get('neuron_vote_accuracy'))} (run {run['run']})"
        )
    note = bundle.provenance.get("database_note")
    if note:
        typer.echo(f"  no metrics: {note}", err=True)


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"
