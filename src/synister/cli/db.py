"""``synister db``: import, check, count and export the synapse database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from . import tables as table_options
from .errors import fail, warn

db_app = typer.Typer(
    name="db",
    help=(
        "Fill and inspect the synapse database: import the original JSON export or synapse "
        "tables, validate, count, export."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a refused operation, reported as one line."""
    from ..db import DatabaseError
    from ..db.exports import ExportExists
    from ..db.imports import BadInput
    from ..splits import ImpossibleSplit

    return (BadInput, DatabaseError, ImpossibleSplit, ExportExists, ValueError, OSError)


def open_db(url: str | None, create: bool = True):
    """The database of ``--db``; commands that only read pass ``create=False`` so that a
    mistyped path is an error instead of a new, empty database."""
    from ..db import open_database

    return open_database(url, create=create)


def _column_map(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source.strip() or not target.strip():
            fail(f"--map expects FILE_COLUMN=FIELD (e.g. body=skeleton_id), got {pair!r}")
        mapping[source.strip()] = target.strip()
    return mapping


@db_app.command("import")
def import_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Export files (synapses*.json, skeletons*.json, hemi_lineages*.json), synapse "
            "tables (.csv, .tsv, .parquet, .feather) or folders holding them."
        ),
    ],
    db_url: opt.Db = None,
    column_map: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Table column to synapse field, FILE_COLUMN=FIELD (fields: synapse_id, "
            "skeleton_id, confidence, brain_region, prepost); repeatable. Without it ids and "
            "neurons are found as predict-positions finds them (id, synapse_id, syn_id; "
            "pre_pt_root_id, bodyId, body, skeleton_id, skid), and conf.",
        ),
    ] = None,
    coords: Annotated[
        str | None,
        typer.Option(
            "--coords",
            help="The three position columns of a table, comma-separated (default: found by "
            "name: x,y,z; pre_x,pre_y,pre_z; pre_pt_position).",
        ),
    ] = None,
    axis_order: Annotated[
        str, typer.Option("--axis-order", help="Axes held by the --coords columns, in order.")
    ] = "xyz",
    units: table_options.Units = "nm",
    voxel_size: table_options.VoxelSize = None,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="Table column holding the transmitter.")
    ] = None,
    label: Annotated[
        str | None,
        typer.Option("--label", help="One transmitter for every synapse of the tables."),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show progress on stderr.")
    ] = True,
) -> None:
    """Import synapses, skeletons and hemilineages, all or nothing.

    A table's transmitter comes from --label-column, else --label, else its file name.

    Each neuron a table names is stored as a skeleton with that transmitter.

    All files are checked first: on any error nothing is stored, and the error names the place.
    """
    from ..db.imports import TableOptions, import_batch, read_inputs
    from ..tables import parse_voxel_size
    from ..volumes.sanity import span

    columns = None if coords is None else tuple(c.strip() for c in coords.split(","))
    if columns is not None and len(columns) != 3:
        fail(f"--coords needs three column names, got {coords!r}")
    try:
        voxel_xyz = parse_voxel_size(voxel_size, was_zyx=True)
        options = TableOptions(
            columns=_column_map(column_map or []),
            coordinate_columns=columns,
            axis_order=axis_order,
            units=units,
            voxel_size_nm=None if voxel_xyz is None else voxel_xyz[::-1],
            label_column=label_column,
            label=label,
        )
        batch = read_inputs(paths, options, progress)  # every file checked, no database yet
        with open_db(db_url) as db:
            summary = import_batch(db, batch)
    except user_errors() as error:
        fail(str(error))
    typer.echo(
        f"imported {summary.synapses:,} synapses, {summary.skeletons:,} skeletons, "
        f"{summary.hemi_lineages:,} hemilineages from {len(summary.files)} file(s)"
    )
    if summary.synapses:
        # no volume to check them against yet (prepare-training does): the range shows
        # voxels imported as nm, or nm as voxels, to the eye
        typer.echo(f"positions: {span(summary.low_nm, summary.high_nm)} nm")
    else:
        warn(
            f"no synapses were imported: none of {', '.join(summary.files)} is a synapse file "
            "(synapses*.json or a synapse table); splits and training need the synapses (the "
            "original export's synapses_v3.json, say)"
        )
    if summary.skeletons_without_transmitter:
        typer.echo(
            f"{summary.skeletons_without_transmitter:,} of the skeletons have no known "
            "transmitter (nt_known missing, null or none): stored as unknown, they take no "
            "part in splits"
        )


@db_app.command("validate")
def validate_command(db_url: opt.Db = None, as_json: opt.Json = False) -> None:
    """Check for repeated ids and positions, missing skeletons and hemilineages, and that
    there are synapses at all.

    Exits with status 1 when any problem is found.
    """
    try:
        with open_db(db_url, create=False) as db:
            report = db.validate()
            synapses = db.stats()["synapses"]
    except user_errors() as error:
        fail(str(error))
    ok = report.ok and synapses > 0
    problems = {
        "duplicate_synapse_ids": report.duplicate_synapse_ids,
        "duplicate_locations": [list(p) for p in report.duplicate_locations],
        "synapses_without_skeleton": report.synapses_without_skeleton,
        "skeletons_without_hemi_lineage": report.skeletons_without_hemi_lineage,
    }
    if as_json:
        typer.echo(json.dumps({"ok": ok, "synapses": synapses, **problems}))
    else:
        if not synapses:
            typer.echo("synapses: 0 (nothing to split or train on: import the synapses)")
        for name, items in problems.items():
            shown = ", ".join(str(i) for i in items[:10]) + (" ..." if len(items) > 10 else "")
            typer.echo(f"{name}: {len(items)}" + (f" ({shown})" if items else ""))
        typer.echo("ok" if ok else "problems found")
    if not ok:
        raise typer.Exit(1)


@db_app.command("stats")
def stats_command(db_url: opt.Db = None, as_json: opt.Json = False) -> None:
    """Count synapses, skeletons and hemilineages, and synapses and skeletons per transmitter."""
    try:
        with open_db(db_url, create=False) as db:
            stats = db.stats()
    except user_errors() as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(stats))
        return
    for key in ("synapses", "skeletons", "hemi_lineages", "splits", "prediction_runs"):
        if key in stats:
            typer.echo(f"{key}: {stats[key]:,}")
    per_nt = stats.get("transmitters", {})
    if per_nt:
        typer.echo(f"{'transmitter':<24}{'skeletons':>10}{'synapses':>12}")
        for name, counts in sorted(per_nt.items()):
            typer.echo(
                f"{name:<24}{counts.get('skeletons', 0):>10,}{counts.get('synapses', 0):>12,}"
            )


@db_app.command("export")
def export_command(
    out: Annotated[Path, typer.Argument(help="Folder to write the three files to.")],
    db_url: opt.Db = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="json: the original export (synapses.json, skeletons.json, hemi_lineages.json); "
            "parquet: the same three tables as Parquet.",
        ),
    ] = "json",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace export files already in OUT.")
    ] = False,
) -> None:
    """Write synapses, skeletons and hemilineages to OUT (positions in nm)."""
    from ..db.exports import EXPORT_FORMATS, export_database

    if fmt not in EXPORT_FORMATS:
        fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    try:
        with open_db(db_url, create=False) as db:
            paths = export_database(db, out, fmt, overwrite=overwrite)
    except user_errors() as error:
        fail(str(error))
    for path in paths:
        typer.echo(str(path))


@db_app.command("register-run")
def register_run_command(
    run: Annotated[str, typer.Argument(help="Prediction run written by the original synister.")],
    db_url: opt.Db = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="Class order of the run's predictions, comma-separated: the synapse_types "
            "of its train_config.ini, then neither if neither_class was set.",
        ),
    ] = None,
    train_config: Annotated[
        Path | None,
        typer.Option(
            "--train-config", help="The run's train_config.ini, to read the class order from."
        ),
    ] = None,
) -> None:
    """Record the class order of a run of the original synister, so it can be evaluated.

    The original stored only probabilities per synapse; their class order was in its config.

    Predictions are never added to such a run.
    """
    if (classes is None) == (train_config is None):
        fail("give the class order with either --classes or --train-config")
    try:
        if train_config is not None:
            from ..config import TrainConfig, read_ini

            names = read_ini(train_config, TrainConfig).classes
        else:
            names = [c.strip() for c in classes.split(",") if c.strip()]
        with open_db(db_url, create=False) as db:
            db.register_prediction_run(run, names)
    except (*user_errors(), KeyError) as error:
        fail(str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error))
    typer.echo(f"prediction run {run!r}: classes {', '.join(names)}")
