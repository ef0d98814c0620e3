"""``synister calibrate``: temperature scaling and "unclear" thresholds from a validation run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .errors import fail


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)


def calibrate_command(
    model: Annotated[
        Path,
        typer.Argument(help="A training setup folder (02_train/setup_t<ID>) or a model bundle."),
    ],
    validation_run: Annotated[
        str,
        typer.Option(
            "--validation-run",
            help="The prediction run of the validation part made with this model "
            "(<split>_<experiment>_t<train>_p<predict>).",
        ),
    ],
    db_url: opt.Db = None,
    target_accuracy: opt.TargetAccuracy = 0.95,
    as_json: opt.Json = False,
) -> None:
    """Fit a temperature (one scalar dividing the logits, by minimising the validation negative
    log-likelihood) and choose the neuron-level 'unclear' thresholds; store both with the model.

    Prediction divides the logits by the stored temperature from then on and records it in the
    run's meta; evaluation shows calibration before and after it. Prints NLL and ECE before and
    after at synapse and neuron level.
    """
    from ..config import ConfigError
    from ..db import DatabaseError, open_database
    from ..evaluate.calibrate import calibrate
    from ..files import jsonable
    from ..layout import is_train_setup
    from ..models.calibration import CalibrationError

    url = db_url
    if url is None and is_train_setup(model):
        try:
            url = _train_config(model).database_url()
        except (ConfigError, OSError) as error:
            fail(f"{model}: {error}")
    try:
        with open_database(url, create=False) as db:
            record = calibrate(db, model, validation_run, target_accuracy=target_accuracy)
    except (CalibrationError, ConfigError, DatabaseError, KeyError, OSError, ValueError) as error:
        fail(str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error))
    if as_json:
        typer.echo(json.dumps(jsonable(record)))
    else:
        typer.echo(format_record(record))


def _train_config(setup: Path):
    from ..config import load_train_setup

    cfg, _worker = load_train_setup(setup)
    return cfg


def format_record(record: dict) -> str:
    """Temperature, NLL/ECE/Brier before and after per level, the thresholds, the file."""
    fitted = record["fitted_on"]
    fit = fitted["fit"]
    kept = (
        f"; the fitted {fit['fitted']:.4g} did not beat 1 in {fit['folds']}-fold cross-validation "
        f"by neuron (NLL {_n(fit['cv_nll_fitted'])} against {_n(fit['cv_nll_one'])}), so 1 is kept"
        if fit["kept_at_one"]
        else ""
    )
    lines = [
        f"temperature {record['temperature']:.4g} from validation run {fitted['run']} "
        f"({fitted['synapses']} synapses, {fitted['neurons']} neurons){kept}",
        f"{'':8}{'NLL before':>11}{'after':>8}{'ECE before':>12}{'after':>8}"
        f"{'Brier before':>14}{'after':>8}",
    ]
    for level in ("synapse", "neuron"):
        before, after = record[level]["before"], record[level]["after"]
        lines.append(
            f"{level:8}{_n(before['nll']):>11}{_n(after['nll']):>8}{_n(before['ece']):>12}"
            f"{_n(after['ece']):>8}{_n(before['brier']):>14}{_n(after['brier']):>8}"
        )
    unclear = record["unclear"]
    t = unclear["thresholds"]
    reached = "reached" if unclear["reached"] else "NOT reached"
    lines.append(
        f"unclear unless top-class mean probability >= {t['min_probability']:.2f}, margin >= "
        f"{t['min_margin']:.2f} and synapses >= {t['min_synapses']}: on the validation run "
        f"{unclear['n_confident']} of {unclear['n']} neurons confident ({_n(unclear['coverage'])})"
        f", accuracy {_n(unclear['accuracy'])} (target {unclear['target_accuracy']:.2f} {reached})"
    )
    lines.append(f"stored in {record['stored_in']}")
    return "\n".join(lines)


def _n(value) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.3f}")
    )
