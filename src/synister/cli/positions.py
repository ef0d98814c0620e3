"""``synister predict-positions``: a table of synapse positions, a model bundle and a volume,
without a database."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

import typer

from . import tables as table_options
from .predict import temperature_note


def register(app: typer.Typer) -> None:
    app.command("predict-positions")(predict_positions_command)


def predict_positions_command(
    model: Annotated[Path, typer.Option(help="Model bundle folder (synister export-model).")],
    volume: Annotated[
        str,
        typer.Option(
            help="EM volume: zarr/N5 folder, or http(s)://, gs://, s3:// URL (optionally "
            "behind precomputed://, zarr://, n5://)."
        ),
    ],
    positions: Annotated[Path, typer.Option(help="Table of positions: CSV, Parquet or Feather.")],
    out: Annotated[
        Path, typer.Option(help="Output folder; rerun with the same folder to continue.")
    ],
    dataset: Annotated[
        str | None, typer.Option(help="Dataset inside the volume, e.g. raw or volumes/raw/s0.")
    ] = None,
    units: table_options.Units = "nm",
    voxel_size: table_options.VoxelSize = None,
    neurons: Annotated[
        Path | None, typer.Option(help="File of neuron ids (one per line): only their rows.")
    ] = None,
    id_column: table_options.IdColumn = None,
    neuron_column: table_options.NeuronColumn = None,
    position_columns: table_options.PositionColumns = None,
    naming: table_options.Naming = "short",
    csv: Annotated[bool, typer.Option("--csv", help="Also write synapses.csv.")] = False,
    min_synapses: table_options.MinSynapses = table_options.DEFAULT_MIN_SYNAPSES,
    min_margin: table_options.MinMargin = table_options.DEFAULT_MIN_MARGIN,
    device: Annotated[
        str | None, typer.Option(help="torch device (default: a GPU when present).")
    ] = None,
    precision: Annotated[
        Literal["fp32", "fp16", "bf16"],
        typer.Option(help="Network precision: fp32 (default), fp16 (GPU only), bf16."),
    ] = "fp32",
    batch_size: Annotated[int, typer.Option(min=1, help="Patches per network pass.")] = 32,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch threads (default: the CPUs, tuned).")
    ] = None,
    read_workers: Annotated[
        int | None,
        typer.Option(min=0, help="Patch-reading processes; 0: a thread (default: by CPUs)."),
    ] = None,
    viewer_source: Annotated[
        str | None,
        typer.Option(help="The volume as neuroglancer should load it (default: from --volume)."),
    ] = None,
    viewer_url: Annotated[
        str, typer.Option(help="neuroglancer to open the report's links in.")
    ] = "https://neuroglancer-demo.appspot.com/",
    overwrite: Annotated[
        bool, typer.Option(help="Replace a run of other inputs in --out.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show done/total, synapses/s and ETA.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Predict the transmitter of every position in a table, and summarise per neuron.

    Writes to OUT: synapses.parquet (every input row: id, neuron_id, the x, y, z given,
    x_nm, y_nm, z_nm, one probability per class, top_nt, top_nt_conf, status ok /
    partly_outside / outside_volume), neurons.parquet (per neuron: mean probabilities,
    top_nt, top_nt_conf, votes, runner-up, margin, confident) and report.html (with a
    neuroglancer link per neuron). Example for the male-VNC tables (8 nm voxels):
    synister predict-positions --model BUNDLE --volume raw.zarr --dataset raw
    --positions gaba.csv --units voxels --voxel-size 8 --out gaba_out
    """
    from synister.models import ModelError
    from synister.predict.positions import default_devices_and_threads, prepare_positions
    from synister.predict.store import run_positions
    from synister.predict.tables import TableError

    tuned_threads, default_readers, tune = default_devices_and_threads()
    if threads is not None:
        tune = False
    try:
        job = prepare_positions(
            model,
            volume,
            positions,
            dataset=dataset,
            neurons=neurons,
            **table_options.column_options(
                id_column, neuron_column, position_columns, units, voxel_size
            ),
            device=device,
            precision=precision,
            batch_size=batch_size,
            threads=threads or tuned_threads,
            read_workers=default_readers if read_workers is None else read_workers,
        )
        summary = run_positions(
            job,
            out,
            table_file=positions,
            neurons_file=neurons,
            naming=naming,
            csv=csv,
            min_synapses=min_synapses,
            min_margin=min_margin,
            overwrite=overwrite,
            progress=progress,
            tune_threads=tune,
            viewer_source=viewer_source,
            viewer_url=viewer_url,
        )
    except (TableError, ModelError, OSError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summary))
        return
    if summary["state"] == "already complete":
        typer.echo(f"{out}: already complete; nothing to do (--overwrite to redo it)", err=True)
        return
    steady = summary.get("steady_synapses_per_second")
    rate = "" if steady is None or math.isnan(steady) else f", {steady:.1f} synapses/s"
    neurons_text = (
        f"; {summary['neurons']} neurons, {summary['confident_neurons']} confident"
        if summary["neurons"] is not None
        else ""
    )
    typer.echo(
        f"{out}: {summary['rows']} positions: {summary['ok']} ok, {summary['partly_outside']} "
        f"partly outside, {summary['outside_volume']} outside the volume; "
        f"{summary['predicted']} predicted now, {summary['resumed_from']} before"
        f"{rate}{neurons_text}{temperature_note(summary.get('temperature'))}; "
        f"report: {out / 'report.html'}",
        err=True,
    )
