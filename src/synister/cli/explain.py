"""``synister explain``: attribution volumes and montages for a table of synapse positions."""

from __future__ import annotations

from typing import Annotated

import typer

from . import options as opt
from . import tables as table_options
from .errors import fail, warn


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)


def _triplet(text: str | None, option: str) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        fail(f"{option}: expected three positive integers z,y,x, got {text!r}")
    return values


def explain_command(
    model: opt.Model,
    volume: opt.Volume,
    positions: opt.Positions,
    out: opt.Out,
    dataset: opt.Dataset = None,
    units: table_options.Units = "nm",
    voxel_size: table_options.VoxelSize = None,
    id_column: table_options.IdColumn = None,
    position_columns: table_options.PositionColumns = None,
    method: Annotated[
        str,
        typer.Option(
            "--method", help="integrated_gradients (default) or occlusion (slower, coarser)."
        ),
    ] = "integrated_gradients",
    second_class: Annotated[
        str | None,
        typer.Option(
            "--second-class",
            help="Also explain the predicted class against this one (the logit difference): "
            "'why GABA rather than ACh'. Abbreviations such as ach, glut, da work.",
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=2, help="Integration steps of integrated gradients.")
    ] = 32,
    window: Annotated[
        str | None,
        typer.Option(
            "--occlusion-window",
            help="Occlusion box z,y,x in voxels (default: a quarter of the sections, a sixth "
            "of the plane).",
        ),
    ] = None,
    stride: Annotated[
        str | None,
        typer.Option("--occlusion-stride", help="Occlusion step z,y,x (default: half the box)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Explain only the first N positions of the table."),
    ] = None,
    device: opt.Device = None,
    threads: opt.Threads = None,
    strict: opt.Strict = False,
    progress: opt.Progress = True,
) -> None:
    """Attribute each synapse's prediction to the voxels of its patch (captum).

    Writes per position synapse_<id>.zarr (the patch and its attribution volumes, placed in
    the source volume's nm coordinates) and synapse_<id>.png (sections with the attribution
    overlaid: red speaks for the class, blue against), and explanations.csv listing them.
    """
    import torch

    from ..explain import ExplainInputError, explain_positions

    if threads is not None:
        torch.set_num_threads(threads)
    options: dict = {}
    if method == "integrated_gradients":
        options["n_steps"] = steps
    else:
        if (window_vox := _triplet(window, "--occlusion-window")) is not None:
            options["window_vox"] = window_vox
        if (stride_vox := _triplet(stride, "--occlusion-stride")) is not None:
            options["stride_vox"] = stride_vox
    try:
        index = explain_positions(
            model, volume, positions, out, dataset=dataset, method=method,
            second_class=second_class, device=device, progress=progress, limit=limit,
            strict=strict, warn=warn,
            table_options=table_options.column_options(
                id_column, None, position_columns, units, voxel_size
            ),
            **options,
        )  # fmt: skip
    except ExplainInputError as error:
        fail(str(error))
    done = index[index["status"] != "outside_volume"]
    skipped = len(index) - len(done)
    typer.echo(
        f"explained {len(done)} synapses in {index.attrs['seconds']:.1f} s"
        + (f" ({skipped} outside the volume, listed)" if skipped else "")
        + f"; index: {out / 'explanations.csv'}",
        err=True,
    )
