"""``synister predict``: predict the split part of one or more predict setups into the database."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from ..layout import WORKER_FILE
from . import options as opt
from .errors import interrupted, warn
from .submit import submit_or_refuse


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)


def predict_command(
    setups: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Predict setup folders (03_predict/setup_t<ID>_p<N>); default: the working folder."
        ),
    ] = None,
    device: opt.Device = None,
    precision: opt.Precision = "fp32",
    block_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes sharing the synapses (default: worker_config.ini num_block_workers).",
        ),
    ] = None,
    read_workers: opt.ReadWorkers = None,
    threads: opt.Threads = None,
    strict: opt.Strict = False,
    progress: opt.Progress = True,
    as_json: opt.Json = False,
    submit: opt.Submit = False,
    local: opt.Local = False,
) -> None:
    """Store softmax probabilities for every synapse of each setup's split part.

    The run is named <split>_<experiment>_t<train>_p<predict> and stored where the database
    backend keeps runs (MongoDB: collection <db_name>_predictions.<run>; SQLite: table
    "predictions.<run>"; PostgreSQL: table "<db_name>_predictions"."<run>"). A complete run
    is skipped with a message (predict_config.ini overwrite = True replaces it); an
    interrupted run resumes and predicts only what is missing, and refuses to when anything
    that determines the numbers changed (checkpoint, network, volume, precision, ...). Each
    setup is reported; the command fails (exit 1) only when every setup failed.
    """
    from synister.db import DatabaseError
    from synister.predict import PredictionRunComplete, predict_setup

    results = []
    for setup in setups or [Path.cwd()]:
        args = ["predict", str(setup.resolve()), "--no-progress", "--precision", precision]
        args += ["--strict"] if strict else []
        for option, value in (
            ("--device", device),
            ("--block-workers", block_workers),
            ("--read-workers", read_workers),
            ("--threads", threads),
        ):
            args += [option, str(value)] if value is not None else []
        job = f"predict-{setup.resolve().name}"
        if submit_or_refuse(setup / WORKER_FILE, args, submit, local, job):
            continue
        try:
            result = predict_setup(
                setup,
                device=device,
                block_workers=block_workers,
                read_workers=read_workers,
                threads=threads,
                progress=progress,
                precision=precision,
                strict=strict,
                warn=warn,
            )
        except PredictionRunComplete as done:
            typer.echo(f"skipped: {setup}: {done}", err=True)
            results.append({"setup": str(setup), "status": "complete", "message": str(done)})
            continue
        except (DatabaseError, OSError, ValueError) as error:  # ConfigError is a ValueError
            typer.echo(f"error: {setup}: {error}", err=True)
            results.append({"setup": str(setup), "status": "failed", "message": str(error)})
            continue
        except KeyboardInterrupt:
            interrupted(f"{setup}: the predictions stored so far are kept")
        # a rate without two stored batches is NaN, which JSON cannot hold
        result = {
            k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()
        }
        results.append({"setup": str(setup), "status": "predicted", **result})
        if not as_json:
            steady = result["steady_synapses_per_second"]
            typer.echo(
                f"{result['run']}: {result['predicted']} predicted "
                f"({result['resumed_from']} were stored before) in {result['seconds']:.1f} s: "
                f"{result['synapses_per_second']:.1f} synapses/s, "
                + (f"{steady:.1f} after start-up" if steady is not None else "one batch only")
                + temperature_note(result.get("temperature")),
                err=True,
            )
    failed = [r for r in results if r["status"] == "failed"]
    if len(results) > 1:
        counts = {s: sum(r["status"] == s for r in results) for s in ("predicted", "complete")}
        typer.echo(
            f"{len(results)} setups: {counts['predicted']} predicted, {counts['complete']} "
            f"already complete, {len(failed)} failed",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(results))
    if failed and len(failed) == len(results):
        raise typer.Exit(1)


def temperature_note(temperature: float | None) -> str:
    """Says that probabilities are calibrated, and by what (synister calibrate)."""
    if temperature is None:
        return ""
    if temperature == 1:
        return "; the model's temperature is 1 (synister calibrate kept the raw softmax)"
    return f"; logits divided by the model's temperature {temperature:.4g} (synister calibrate)"
