"""``synister evaluate``: metrics, figures and an HTML report of prediction runs."""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .errors import fail


class Ties(StrEnum):
    probability = "probability"
    first = "first"


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)


def evaluate_command(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Prediction run names (<split>_<experiment>_t<train>_p<predict>) or prediction "
            "setup folders (03_predict/setup_t<ID>_p<N>, e.g. a shell glob).",
            show_default=False,
        ),
    ] = None,
    db_url: opt.Db = None,
    setups: Annotated[
        list[Path] | None,
        typer.Option(
            "--setup",
            help="A prediction setup folder (03_predict/setup_t<ID>_p<N>) whose run to "
            "evaluate; repeatable. The folders a shell glob adds after it (--setup "
            "setup_t0_p*) are setups too.",
            show_default=False,
        ),
    ] = None,
    out: opt.Out = Path("evaluation"),
    n_min: Annotated[
        int,
        typer.Option(
            "--n-min",
            min=0,
            help="Leave out neurons and hemilineages with fewer synapses (the original's "
            "n_min; it had none by default).",
        ),
    ] = 0,
    n_min_synapses: Annotated[
        bool,
        typer.Option(
            "--n-min-synapses/--no-n-min-synapses",
            help="Apply --n-min at synapse level too: leave out the synapses of those neurons "
            "(the original's rule). By default the synapse level keeps every synapse.",
        ),
    ] = False,
    cutoff: Annotated[
        float,
        typer.Option(
            "--cutoff",
            min=0.0,
            max=1.0,
            help="Leave out neurons and hemilineages whose majority vote holds less than this "
            "share of their synapses (the original's cutoff; it had none by default).",
        ),
    ] = 0.0,
    ties: Annotated[
        Ties,
        typer.Option(
            "--ties",
            help="Tied majority vote: 'probability' picks the tied class with the highest "
            "summed probability, then the first; 'first' picks the first tied class in the "
            "run's class order (the original's rule).",
        ),
    ] = Ties.probability,
    min_confidence: Annotated[
        float,
        typer.Option(
            "--min-confidence",
            min=0.0,
            max=1.0,
            help="Leave out synapses whose highest class probability is below this.",
        ),
    ] = 0.0,
    allow_incomplete: Annotated[
        bool,
        typer.Option(
            "--allow-incomplete",
            help="Evaluate runs that hold fewer synapses than their split part (stopped "
            "part-way; a biased sample, as prediction goes in spatial order). They are never "
            "the best run.",
        ),
    ] = False,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            min=0.0,
            help="Temperature to measure calibration with (1: the raw softmax). Default: the "
            "one synister calibrate stored with the run's model, else the one the run applied.",
            show_default=False,
        ),
    ] = None,
    unclear_min_probability: Annotated[
        float | None,
        typer.Option(
            "--unclear-min-probability",
            min=0.0,
            max=1.0,
            help="A neuron whose top class has a lower mean probability is 'unclear'. "
            "Default: chosen on the validation run by synister calibrate, else on this run, "
            "for --target-accuracy.",
            show_default=False,
        ),
    ] = None,
    unclear_min_margin: Annotated[
        float | None,
        typer.Option(
            "--unclear-min-margin",
            min=0.0,
            max=1.0,
            help="A neuron whose top class leads the runner-up by less is 'unclear' (default: "
            "chosen as above).",
            show_default=False,
        ),
    ] = None,
    unclear_min_synapses: Annotated[
        int | None,
        typer.Option(
            "--unclear-min-synapses",
            min=0,
            help="A neuron with fewer synapses is 'unclear' (default: chosen as above).",
            show_default=False,
        ),
    ] = None,
    target_accuracy: opt.TargetAccuracy = 0.95,
    figures: Annotated[
        bool,
        typer.Option(
            "--figures/--no-figures",
            help="Draw the PNG figures (about 1.5 s per run); without, the report has tables only.",
        ),
    ] = True,
    as_json: opt.Json = False,
) -> None:
    """Evaluate prediction runs at synapse, neuron and hemilineage level.

    Writes metrics.json, PNG figures, per-neuron CSVs and one self-contained report.html to
    the output folder (nothing on failure), and prints per run its split, completeness
    (predicted / expected synapses) and accuracies, and the best run. Incomplete runs are
    refused unless --allow-incomplete. A best run is only picked among runs of one synapse set
    (split, part and classes); otherwise each set's best is shown.
    """
    from ..config import ConfigError
    from ..db import DatabaseError, open_database
    from ..evaluate import EvaluationRules, evaluate_runs
    from ..evaluate.calibrate import CalibrationOptions

    names: list[str] = []
    urls: set[str] = set()
    from_setups: dict[str, Path] = {}  # run -> its prediction setup
    for item in [*(setups or []), *(runs or [])]:
        setup = _as_setup(item)
        if setup is None:
            names.append(str(item))
            continue
        try:
            config = _predict_config(setup)
        except (ConfigError, FileNotFoundError, ValueError) as error:
            fail(f"{setup}: {error}")
        names.append(config.run_name)
        from_setups[config.run_name] = setup
        urls.add(config.database_url())
    if not names:
        fail("name at least one run, or a prediction setup with --setup")
    if db_url is None and len(urls) > 1:
        fail(
            f"the setups use different databases ({', '.join(sorted(urls))}); choose one with --db"
        )
    url = db_url or (urls.pop() if urls else None)

    try:
        with open_database(url, create=False) as db:
            stored = set(db.prediction_runs())
            unpredicted = [str(setup) for run, setup in from_setups.items() if run not in stored]
            if unpredicted:
                fail(
                    f"not predicted yet: {', '.join(unpredicted)} (no run in the database); "
                    f"predict first: synister predict {' '.join(unpredicted)}"
                )
            results = evaluate_runs(
                db,
                names,
                out,
                rules=EvaluationRules(
                    n_min=n_min,
                    min_confidence=min_confidence,
                    cutoff=cutoff,
                    ties=ties.value,
                    n_min_synapse_level=n_min_synapses,
                    calibration=CalibrationOptions(
                        temperature=temperature,
                        unclear_min_probability=unclear_min_probability,
                        unclear_min_margin=unclear_min_margin,
                        unclear_min_synapses=unclear_min_synapses,
                        target_accuracy=target_accuracy,
                    ),
                ),
                allow_incomplete=allow_incomplete,
                figures=figures,
            )
    except (DatabaseError, KeyError, ValueError, OSError) as error:
        fail(str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error))

    for warning in results["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    summary = format_summary(results)
    if as_json:
        typer.echo(summary, err=True)
        typer.echo(json.dumps(results))
    else:
        typer.echo(summary)


def _as_setup(item: str | Path) -> Path | None:
    """``item`` as a prediction setup folder, None if it is a run name; exits with an error for
    a path that is neither (a folder without a predict config, a missing folder)."""
    from ..layout import PREDICT_FILE, is_predict_setup

    path = Path(item)
    if path.is_dir():
        if not is_predict_setup(path):
            fail(f"{path} is a folder without {PREDICT_FILE}: not a prediction setup")
        return path
    if isinstance(item, Path) or "/" in str(item):
        fail(f"no prediction setup folder {path}")
    return None


def _predict_config(setup: Path):
    from ..config import load_predict_setup

    config, _worker = load_predict_setup(setup)
    return config


def format_summary(results: dict) -> str:
    """A short plain-text table: split, completeness and accuracies per run, the best run (or
    each synapse set's best), the report's path."""
    from ..evaluate.runs import completeness_text, split_label

    header = ("run", "split / part", "predicted", "iter", "synapses", "syn acc", "bal acc",
              "neurons", "vote acc", "mean acc")  # fmt: skip
    rows = [header]
    for m in results["runs"].values():
        rows.append(
            (
                m["run"],
                split_label(m["meta"]),
                completeness_text(m["completeness"]),
                "-" if m["iteration"] is None else str(m["iteration"]),
                str(m["synapse"]["n"]),
                _number(m["synapse"]["accuracy"]),
                _number(m["synapse"]["balanced_accuracy"]),
                str(m["neuron"]["vote"]["n"]),
                _number(m["neuron"]["vote"]["accuracy"]),
                _number(m["neuron"]["mean"]["accuracy"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines += [_calibration_line(m) for m in results["runs"].values() if m.get("calibration")]
    if results.get("best"):
        lines.append(f"best: {_best(results['best'])}")
        meta = results["runs"][results["best"]["run"]].get("meta") or {}
        if meta.get("split_part") == "validation" and results["best"].get("iteration"):
            folder = Path(results["report"]).parent
            lines.append(
                f"test it: synister prepare-prediction -d BASE -e {meta.get('experiment')} "
                f"-t {meta.get('train_number')} --best-of {folder}"
            )
    elif results.get("best_refused"):
        lines.append(f"best: none, {results['best_refused']}")
        for synapse_set in results["synapse_sets"]:
            label = split_label(synapse_set)
            lines.append(
                f"best of {label}: "
                + (_best(synapse_set["best"]) if synapse_set["best"] else "no candidate")
            )
    else:
        lines.append("best: none (no complete run has an evaluated synapse)")
    lines.append(f"report: {results['report']}")
    return "\n".join(lines)


def _calibration_line(metrics: dict) -> str:
    """Calibration of one run: synapse ECE and NLL raw -> calibrated, unclear neurons."""
    c = metrics["calibration"]
    before, after = c["synapse"]["before"], c["synapse"]["after"]
    if after is None:
        measured = (
            f"not calibrated; synapse ECE {_number(before['ece'])}, NLL {_number(before['nll'])}"
        )
    else:
        measured = (
            f"temperature {c['temperature']:.3g}: synapse ECE {_number(before['ece'])} -> "
            f"{_number(after['ece'])}, NLL {_number(before['nll'])} -> {_number(after['nll'])}"
        )
    u = c["unclear"]
    missed = u.get("thresholds", {}).get("target_missed")
    target = f" (no thresholds reach {u['target_accuracy']:.0%} accuracy)" if missed else ""
    line = (
        f"{metrics['run']}: {measured}; neurons {u['n_confident']} of {u['n']} confident"
        f"{target}, accuracy {_number(u['accuracy_all'] if missed else u['accuracy'])}, "
        f"{u['n_unclear']} unclear"
    )
    calibrated_log = c.get("neuron_calibrated_log")
    if calibrated_log:
        line += f"; neurons by calibrated log {_number(calibrated_log['accuracy'])}"
    return line


def _best(best: dict) -> str:
    at = f" (iteration {best['iteration']})" if best.get("iteration") is not None else ""
    return f"{best['run']}{at}, synapse accuracy {_number(best['synapse_accuracy'])}"


def _number(value) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )
