"""``synister split``: make, show, list and remove group-disjoint train/validation/test splits."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from . import options as opt
from .db import open_db, user_errors
from .errors import fail, warn

split_app = typer.Typer(
    name="split",
    help=(
        "Split synapses into train, validation and test so that no neuron (or hemilineage, "
        "brain region) lies in two parts and every transmitter gets its target share."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(split_app, name="split")


def _print_parts(parts: dict, targets: dict | None = None) -> None:
    """Per transmitter and part: synapses, their share, the target share, groups."""
    targets = targets or {}
    header = f"{'transmitter':<16}{'part':<12}{'synapses':>10}{'share':>8}"
    header += (f"{'target':>8}" if targets else "") + f"{'groups':>8}{'neurons':>9}"
    typer.echo(header)
    for nt, per_part in parts.items():
        total = sum(p["synapses"] for p in per_part.values()) or 1
        for part, counts in per_part.items():
            target = f"{targets[part]:>8.3f}" if part in targets else ""
            neurons = counts.get("neurons")  # splits stored by earlier versions did not
            typer.echo(
                f"{nt:<16}{part:<12}{counts['synapses']:>10,}"
                f"{counts['synapses'] / total:>8.3f}{target}{counts['groups']:>8,}"
                f"{'-' if neurons is None else f'{neurons:,}':>9}"
            )


def _print_notes(meta: dict, lone_neurons: int | None = None) -> None:
    """The neurons that became groups of their own, and the targets missed (on stderr)."""
    lone = meta.get("unknown_lineage_neurons") if lone_neurons is None else lone_neurons
    if lone:
        pattern = meta.get("unknown_lineage_pattern", "")
        typer.echo(
            f"{lone:,} neurons of an unknown hemilineage (none, or a name matching "
            f"'{pattern}') are groups of their own"
        )
    for warning in meta.get("warnings", []) + meta.get("neuron_warnings", []):
        warn(warning)


@split_app.command("make")
def make_command(
    name: Annotated[str, typer.Option("--name", help="Name to store the split under.")],
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Groups kept within one part: skeleton, hemi_lineage, brain_region or synapse.",
        ),
    ] = "skeleton",
    db_url: opt.Db = None,
    train_fraction: Annotated[
        float,
        typer.Option(
            "--train-fraction", help="Share of train+validation per transmitter; rest is test."
        ),
    ] = 0.8,
    validation_fraction: Annotated[
        float,
        typer.Option("--validation-fraction", help="Share of validation inside train+validation."),
    ] = 0.2,
    seed: opt.Seed = 0,
    nts: Annotated[
        list[str] | None,
        typer.Option(
            "--nt",
            help="Transmitters to split (repeatable or comma-separated). Default: every "
            "transmitter with synapses of single-transmitter skeletons.",
        ),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option("--tolerance", help="Largest miss of a part's target share before a warning."),
    ] = 0.05,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Fail, storing nothing, where a share misses by over --tolerance."
        ),
    ] = False,
    unknown_lineage_pattern: Annotated[
        str | None,
        typer.Option(
            "--unknown-lineage-pattern",
            metavar="REGEX",
            help="Hemilineage names (whole, any case) that mean unknown; their neurons are "
            "groups of their own. Default: the original's unknown<n>, new<n>, na, none, with "
            "an optional _suffix.",
        ),
    ] = None,
    as_json: opt.Json = False,
) -> None:
    """Compute a split by integer programming and store it.

    Synapses take part when their skeleton has exactly one known transmitter among --nt;
    --seed picks among equally good splits.

    A share that misses its target by over --tolerance gives a WARNING; --strict fails instead.

    Fails, storing nothing, where a transmitter would have no synapse in some part.
    """
    from ..splits import GROUPINGS, SplitRequest, make_split

    if by not in GROUPINGS:
        fail(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    chosen = None
    if nts:
        chosen = tuple(n.strip() for value in nts for n in value.split(",") if n.strip())
    try:
        request = SplitRequest(
            by=by,
            train_fraction=train_fraction,
            validation_fraction=validation_fraction,
            seed=seed,
            transmitters=chosen,
            tolerance=tolerance,
            unknown_lineage_pattern=unknown_lineage_pattern,
            strict=strict,
        )
        with open_db(db_url, create=False) as db:
            meta = make_split(db, name, request)
    except user_errors() as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps({"name": name, "meta": meta}))
        for warning in meta["warnings"] + meta["neuron_warnings"]:
            warn(warning)
        return
    typer.echo(f"stored split {name!r} (by {by}, seed {seed})")
    _print_parts(meta["summary"], meta["targets"])
    _print_notes(meta)


@split_app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="Split name.")],
    db_url: opt.Db = None,
    as_json: opt.Json = False,
) -> None:
    """Synapses and groups per transmitter and part of a stored split, with its settings."""
    from ..splits import show_split

    try:
        with open_db(db_url, create=False) as db:
            shown = show_split(db, name)
    except user_errors() as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(shown))
        return
    meta = shown["meta"]
    keys = ("grouping", "train_fraction", "validation_fraction", "seed", "transmitters")
    keys += ("tolerance", "strict")
    settings = ", ".join(f"{key}={meta[key]}" for key in keys if key in meta)
    typer.echo(f"split {name!r}: {settings}")
    _print_parts(shown["parts"], meta.get("targets"))
    _print_notes(meta, shown["lone_neurons"])


@split_app.command("list")
def list_command(db_url: opt.Db = None, as_json: opt.Json = False) -> None:
    """Names of the stored splits with their grouping."""
    try:
        with open_db(db_url, create=False) as db:
            splits = db.splits()
    except user_errors() as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(splits))
        return
    for split_name, meta in sorted(splits.items()):
        meta = meta or {}
        typer.echo(f"{split_name}\tby {meta.get('grouping', '?')}\tseed {meta.get('seed', '?')}")


@split_app.command("remove")
def remove_command(
    name: Annotated[str, typer.Argument(help="Split name.")], db_url: opt.Db = None
) -> None:
    """Delete a stored split (its synapses stay)."""
    try:
        with open_db(db_url, create=False) as db:
            db.remove_split(name)
    except user_errors() as error:
        fail(str(error))
    typer.echo(f"removed split {name!r}")
