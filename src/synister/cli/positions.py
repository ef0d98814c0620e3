"""``synister predict-positions``: a table of synapse positions, a model bundle and a volume,
without a database."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from . import tables as table_options
from .errors import fail, interrupted, warn
from .predict import temperature_note


def register(app: typer.Typer) -> None:
    app.command("predict-positions")(predict_positions_command)


def predict_positions_command(
    model: opt.Model,
    volume: opt.Volume,
    positions: opt.Positions,
    out: opt.Out,
    dataset: opt.Dataset = None,
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
    device: opt.Device = None,
    precision: opt.Precision = "fp32",
    batch_size: opt.BatchSize = 32,
    threads: opt.Threads = None,
    read_workers: opt.ReadWorkers = None,
    viewer_source: Annotated[
        str | None,
        typer.Option(help="The volume as neuroglancer should load it (default: from --volume)."),
    ] = None,
    viewer_url: Annotated[
        str, typer.Option(help="neuroglancer to open the report's links in.")
    ] = "https://neuroglancer-demo.appspot.com/",
    overwrite: opt.Overwrite = False,
    strict: opt.Strict = False,
    progress: opt.Progress = True,
    as_json: opt.Json = False,
) -> None:
    """Predict the transmitter of every position in a table, and summarise per neuron.

    Writes to OUT: synapses.parquet (every input row: id, neuron_id, the x, y, z given,
    x_nm, y_nm, z_nm, one probability per class, top_nt, top_nt_conf, status ok /
    partly_outside / outside_volume), neurons.parquet (per neuron: mean probabilities,
    top_nt, top_nt_conf, top_nt_vote_share, runner-up, margin, confident) and report.html (with a
    neuroglancer link per neuron). A rerun with the same OUT continues. Example for the
    male-VNC tables (8 nm voxels):
    synister predict-positions --model BUNDLE --volume raw.zarr --dataset raw
    --positions gaba.csv --units voxels --voxel-size 8 --out gaba_out
    """
    from synister.models import ModelError
    from synister.predict.positions import default_devices_and_threads, prepare_positions
    from synister.predict.store import run_positions
    from synister.tables import TableError

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
            strict=strict,
        )
        if job.volume.scale_note and not as_json:
            typer.echo(job.volume.scale_note, err=True)
        for warning in job.notes():
            warn(warning)
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
        fail(str(error))
    except KeyboardInterrupt:
        interrupted(f"the predictions stored in {out} are kept")
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
