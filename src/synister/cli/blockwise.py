"""``synister predict-volume``: every synapse of a dataset, block by block on daisy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from . import tables as table_options
from .db import user_errors
from .errors import fail


def register(app: typer.Typer) -> None:
    app.command("predict-volume")(predict_volume_command)
    app.command("predict-volume-worker", hidden=True)(worker_command)


def predict_volume_command(
    model: opt.Model,
    volume: opt.Volume,
    synapses: Annotated[
        str,
        typer.Option(
            "--synapses",
            help="Synapse table (.csv, .tsv, .parquet, .feather) or database URL "
            "(sqlite:///..., postgresql://..., mongodb://...; a password is never printed).",
        ),
    ],
    out: opt.Out,
    dataset: opt.Dataset = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Database source: only this split's synapses.")
    ] = None,
    part: opt.Part = None,
    block_size: Annotated[
        tuple[float, float, float] | None,
        typer.Option(
            "--block-size", help="Block Z Y X in nm [default: 2560 4096 4096].", show_default=False
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Workers: default one per GPU, else one per 4 CPU cores."),
    ] = None,
    device: opt.Device = None,
    threads: opt.Threads = None,
    batch_size: opt.BatchSize = 32,
    read_ahead: opt.ReadAhead = None,
    precision: opt.Precision = "fp32",
    id_column: table_options.IdColumn = None,
    neuron_column: table_options.NeuronColumn = None,
    position_columns: table_options.PositionColumns = None,
    units: table_options.Units = "nm",
    voxel_size: table_options.VoxelSize = None,
    naming: table_options.Naming = "short",
    retries: Annotated[int, typer.Option(min=0, help="Retries of a failed block.")] = 2,
    worker_config: Annotated[
        Path | None,
        typer.Option(help="worker_config.ini whose submit_command starts cluster workers."),
    ] = None,
    min_synapses: table_options.MinSynapses = table_options.DEFAULT_MIN_SYNAPSES,
    min_margin: table_options.MinMargin = table_options.DEFAULT_MIN_MARGIN,
    overwrite: opt.Overwrite = False,
    strict: opt.Strict = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan, time a few blocks and print; predict nothing.")
    ] = False,
    sample: Annotated[int, typer.Option(min=1, help="Blocks timed by --dry-run.")] = 3,
    progress: opt.Progress = True,
    as_json: opt.Json = False,
) -> None:
    """Predict every synapse of a table or database in a volume, block by block (daisy).

    Each block reads its raw data once and writes one Parquet shard into OUT/synapses (the
    columns of predict-positions); OUT/neurons.parquet summarises per neuron at the end. A
    rerun with the same options skips finished blocks and retries failed ones.
    """
    from ..predict.blockwise import DEFAULT_BLOCK_NM, PlanMismatch, Source, predict_volume

    columns = table_options.column_options(
        id_column, neuron_column, position_columns, units, voxel_size
    )
    source = Source(synapses, split, part)
    block_nm = block_size or DEFAULT_BLOCK_NM

    def log(text: str) -> None:
        typer.echo(text, err=as_json or text.startswith("WARNING"))

    try:
        if dry_run:
            options = {
                "naming": naming,
                "precision": precision,
                "overwrite": overwrite,
                "column_options": columns,
                "strict": strict,
            }
            report = _dry_run(
                model, volume, dataset, source, out, block_nm, workers, device, batch_size,
                sample, options, log,
            )  # fmt: skip
            from ..predict.blockwise.estimate import format_report

            typer.echo(json.dumps(report) if as_json else format_report(report))
            return
        summary = predict_volume(
            model, volume, source, out, dataset=dataset, block_nm=block_nm, workers=workers,
            device=device, threads=threads, batch_size=batch_size, precision=precision,
            naming=naming,
            retries=retries, worker_config=worker_config, read_ahead=read_ahead,
            overwrite=overwrite,
            column_options=columns, min_synapses=min_synapses, min_margin=min_margin,
            strict=strict, progress=progress,
            log=log,
        )  # fmt: skip
    except (PlanMismatch, *user_errors()) as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"{summary['synapses']:,} synapses ({summary['outside_volume']:,} outside the volume)"
            f": {summary['blocks_run']} blocks run, {summary['blocks_skipped']} finished before, "
            f"in {summary['seconds']:.1f} s -> {summary['out']}"
        )
        for name, error in summary["failed"].items():
            typer.echo(f"  failed {name}: {error}", err=True)
    if summary["failed"]:
        fail(f"{len(summary['failed'])} block(s) failed; rerun the same command to retry them")


def _dry_run(
    model, volume, dataset, source, out, block_nm, workers, device, batch_size, sample, options,
    log,
) -> dict:  # fmt: skip
    """Plan into ``out`` (reused by the run), time ``sample`` blocks here, project."""
    from ..models import load_model
    from ..predict.blockwise import prepare
    from ..predict.blockwise.estimate import dry_run
    from ..predict.blockwise.run import check_voxel_size, default_workers
    from ..predict.blockwise.worker import make_predictor, open_plan_volume

    loaded = load_model(model)
    raw = open_plan_volume(
        {"volume": volume, "dataset": dataset, "voxel_size_nm": None, "offset_nm": None},
        scale_nm=loaded.voxel_size_nm,
    )
    check_voxel_size(loaded, raw)
    plan = prepare(out, loaded, raw, volume, dataset, source, block_nm, log=log, **options)
    predictor = make_predictor(loaded, device, batch_size, None, plan.settings["precision"])
    return dry_run(plan, predictor, raw, workers or default_workers(), sample)


def worker_command(
    out: Annotated[Path, typer.Argument(help="The run's output folder.")],
    context: Annotated[str, typer.Option(help="daisy worker context (from the scheduler).")],
    device: opt.Device = None,
    threads: opt.Threads = None,
    batch_size: opt.BatchSize = 32,
    read_ahead: opt.ReadAhead = 1,
) -> None:
    """One predict-volume worker, as a cluster job runs it (started by predict-volume)."""
    from ..predict.blockwise.worker import run_worker

    try:
        blocks = run_worker(
            str(out), device, threads, batch_size, context=context, read_ahead=read_ahead
        )
    except user_errors() as error:  # a bad --context, an OUT without a plan
        fail(str(error))
    typer.echo(json.dumps({"blocks": blocks}))
