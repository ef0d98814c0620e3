"""``synister prepare-training`` and ``synister prepare-prediction``: setup folders with configs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .errors import fail, warn


def _parse_settings(
    settings: list[str] | None,
    db_url: str | None,
    split_name: str | None,
    raw_container: str | None,
    raw_dataset: str | None,
) -> dict[str, str]:
    """The ``--set KEY=VALUE`` items, and over them the options of these names that are given."""
    values = {}
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        values[key.strip()] = value.strip()
    options = {
        "db_url": db_url,
        "split_name": split_name,
        "raw_container": raw_container,
        "raw_dataset": raw_dataset,
    }
    values.update({key: value for key, value in options.items() if value is not None})
    return values


BaseDir = Annotated[
    Path, typer.Option("-d", "--base-dir", help="BASE folder that holds the experiments.")
]
Experiment = Annotated[str, typer.Option("-e", "--experiment", help="Experiment name, e.g. fafb.")]
TrainId = Annotated[int, typer.Option("-t", "--train-id", help="Number of the training run.")]
RawContainer = Annotated[
    str | None,
    typer.Option(help="EM volume, zarr/N5/precomputed (default: raw.zarr in BASE)."),
]
RawDataset = Annotated[str | None, typer.Option(help="Dataset in it (default: raw).")]
Settings = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE for any key of the config this command writes or of its "
        "worker_config.ini, in the ini format (e.g. --set 'input_shape=8, 64, 64'); repeatable.",
    ),
]
SplitName = Annotated[
    str | None,
    typer.Option(
        help="Split in the database (default: the training setup's; for a new training "
        "setup: skeleton)."
    ),
]
SkipVolumeCheck = Annotated[
    bool,
    typer.Option(
        "--skip-volume-check",
        help="Do not open the raw volume now (one that only the compute nodes reach).",
    ),
]
SkipDataCheck = Annotated[
    bool,
    typer.Option(
        "--skip-data-check",
        help="Do not check now that the split exists and holds synapses of every class (a "
        "split made later; a database that cannot be opened is only warned about).",
    ),
]


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
    db_url: opt.Db = None,
    split_name: SplitName = None,
    raw_container: RawContainer = None,
    raw_dataset: RawDataset = None,
    settings: Settings = None,
    skip_volume_check: SkipVolumeCheck = False,
    skip_data_check: SkipDataCheck = False,
    strict: opt.Strict = False,
) -> None:
    """Create BASE/EXPERIMENT/02_train/setup_t<ID> with train_config.ini and worker_config.ini.

    The defaults train the seed's FAFB VGG (16x160x160 voxels of 40x4x4 nm, six transmitters)
    on the layout `synister synthetic` writes; pass db_url and raw_container here (relative
    paths are relative to BASE). What training needs is checked now: the raw volume opens,
    the split exists and its train part holds synapses of every class, and they lie in the
    volume. An existing setup is never overwritten.
    """
    from synister import setup
    from synister.config import ConfigError

    if clean_up:
        folder = setup.train_setup_dir(base_dir, experiment, train_id)
        if not folder.exists():
            fail(f"no training setup at {folder}")
        if not yes and not typer.confirm(
            f"Remove {folder} and all its contents (checkpoints, logs, snapshots)?", default=False
        ):
            typer.echo("Aborted, nothing removed.", err=True)
            raise typer.Exit(1)
        try:
            setup.remove_training(base_dir, experiment, train_id)
        except setup.SetupError as exc:
            fail(str(exc))
        typer.echo(f"Removed {folder}")
        return

    overrides = _parse_settings(settings, db_url, split_name, raw_container, raw_dataset)
    try:
        folder = setup.prepare_training(
            base_dir, experiment, train_id, check_volume=not skip_volume_check,
            check_data=not skip_data_check, strict=strict, warn=warn, **overrides,
        )  # fmt: skip
    except (ConfigError, setup.SetupError) as exc:
        fail(str(exc))
    typer.echo(f"Created {folder}")
    typer.echo(f"Edit {folder / 'train_config.ini'}, then run: cd {folder} && synister train N")


def prepare_prediction_command(
    ctx: typer.Context,
    base_dir: BaseDir,
    experiment: Experiment,
    train_id: TrainId,
    iterations: Annotated[
        list[int] | None,
        typer.Option("-i", "--iterations", help="Checkpoint iteration(s): -i 1000 2000 3000."),
    ] = None,
    best_of: Annotated[
        Path | None,
        typer.Option(
            "--best-of",
            help="Instead of -i: the final model that `synister evaluate --out FOLDER` chose "
            "among the training's validation runs (the margin rule, as the demo and "
            "export-model --iteration best choose; else its best run).",
        ),
    ] = None,
    validation: Annotated[
        bool, typer.Option("-v", "--validation", help="Predict the validation part, not test.")
    ] = False,
    part: opt.Part = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="A checkpoint file or model bundle trained elsewhere (instead of -i); its "
            "network settings come from the bundle, the checkpoint or its setup."
        ),
    ] = None,
    db_url: opt.Db = None,
    split_name: SplitName = None,
    raw_container: RawContainer = None,
    raw_dataset: RawDataset = None,
    settings: Settings = None,
    allow_other_input_shape: Annotated[
        bool,
        typer.Option(
            "--allow-other-input-shape",
            help="Predict with an input_shape other than the trained one (accuracy may drop).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Rewrite an existing setup of the same checkpoint.")
    ] = False,
    skip_volume_check: SkipVolumeCheck = False,
    skip_data_check: SkipDataCheck = False,
    strict: opt.Strict = False,
) -> None:
    """Create one BASE/EXPERIMENT/03_predict/setup_t<ID>_p<N> per checkpoint.

    The checkpoints are the training setup's (-i), or one trained elsewhere (--checkpoint).
    predict_config.ini takes data and database settings from the training setup (else the
    defaults and the options here) and the network from the checkpoint's source. An existing
    setup of the same checkpoint and part is kept (and its differences shown) unless --force.
    """
    from synister import setup
    from synister.config import ConfigError

    wanted = list(iterations or [])
    for extra in ctx.args:  # "-i 1000 2000": click passes the values after the first here
        try:
            wanted.append(int(extra))
        except ValueError:
            raise typer.BadParameter(
                f"expected iteration numbers, got {extra!r}", param_hint="-i"
            ) from None
    if part is not None and validation and part != "validation":
        fail(f"-v/--validation and --part {part} contradict each other")
    if best_of is not None:
        if wanted:
            fail("give checkpoints with -i or --best-of, not both")
        wanted = [best_iteration(best_of, experiment, train_id)]
    values = _parse_settings(settings, db_url, split_name, raw_container, raw_dataset)
    try:
        made = setup.prepare_prediction_setups(
            base_dir,
            experiment,
            train_id,
            wanted,
            validation,
            part=part,
            checkpoint=checkpoint,
            settings=values,
            allow_other_input_shape=allow_other_input_shape,
            force=force,
            check_volume=not skip_volume_check,
            check_data=not skip_data_check,
            strict=strict,
            warn=warn,
        )
    except (ConfigError, setup.SetupError) as exc:
        fail(str(exc))
    for item in made:
        at = f"iteration {item.iteration}" if item.iteration is not None else "checkpoint"
        state = {"created": "created", "kept": "exists, kept", "rewritten": "rewritten"}
        line = f"{item.path} ({at}): {state[item.state]}"
        if item.state == "kept" and item.differs:
            line += (
                f", but it differs from this request in {', '.join(item.differs)}; "
                "rerun with --force to rewrite it"
            )
        typer.echo(line)
    if checkpoint is not None and made:
        typer.echo(f"network settings from {made[0].network_from}")


def best_iteration(folder: Path, experiment: str, train_id: int) -> int:
    """The iteration of the final model that ``synister evaluate --out FOLDER`` chose among a
    training's validation runs (else of its best run), checked to be a validation run of this
    training."""
    import json

    from synister.evaluate.runner import METRICS_FILE

    try:
        results = json.loads((folder / METRICS_FILE).read_text())
    except FileNotFoundError:
        fail(
            f"{folder / METRICS_FILE}: not found; evaluate the validation runs first "
            f"(synister evaluate --setup ... --out {folder})"
        )
    except (OSError, ValueError) as error:
        fail(f"{folder / METRICS_FILE}: {error}")
    best = results.get("final") or results.get("best")
    if not best:
        fail(f"{folder}: the evaluation has no best run ({results.get('best_refused')})")
    meta = (results.get("runs") or {}).get(best["run"], {}).get("meta") or {}
    trained = (meta.get("experiment"), meta.get("train_number"))
    if trained != (experiment, train_id):
        fail(
            f"{folder}: its best run {best['run']} is of experiment {trained[0]} training "
            f"{trained[1]}, not {experiment} {train_id}"
        )
    if meta.get("split_part") != "validation" or best.get("iteration") is None:
        fail(
            f"{folder}: its best run {best['run']} is no validation run of a checkpoint "
            f"(part {meta.get('split_part')}); pick the iteration on validation runs"
        )
    return int(best["iteration"])


def register(app: typer.Typer) -> None:
    app.command("prepare-training")(prepare_training_command)
    app.command(
        "prepare-prediction",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
    )(prepare_prediction_command)
