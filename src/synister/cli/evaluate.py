"""``synister evaluate``: metrics, figures and an HTML report of prediction runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)


def evaluate_command(
    runs: Annotated[
        list[str] | None,
        typer.Argument(help="Prediction run names (<split>_<experiment>_t<train>_p<predict>)."),
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL (sqlite:///file, postgresql://..., mongodb://...). Default: the "
            "setups' database, else $SYNISTER_DB, else sqlite:///./synister.db.",
        ),
    ] = None,
    setups: Annotated[
        list[Path] | None,
        typer.Option(
            "--setup",
            help="A prediction setup folder (03_predict/setup_t<ID>_p<N>) whose run to "
            "evaluate; repeatable.",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("evaluation"),
    n_min: Annotated[
        int,
        typer.Option(
            "--n-min", min=0, help="Leave out neurons and hemilineages with fewer synapses."
        ),
    ] = 0,
    min_confidence: Annotated[
        float,
        typer.Option(
            "--min-confidence",
            min=0.0,
            max=1.0,
            help="Leave out synapses whose highest class probability is below this.",
        ),
    ] = 0.0,
    figures: Annotated[
        bool,
        typer.Option(
            "--figures/--no-figures",
            help="Draw the PNG figures (about 1.5 s per run); without, the report has tables only.",
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print all metrics as one JSON document on stdout.")
    ] = False,
) -> None:
    """Evaluate prediction runs at synapse, neuron and hemilineage level.

    Writes metrics.json, PNG figures, per-neuron CSVs and one self-contained report.html to
    the output folder, and prints accuracies per run and the best iteration.
    """
    from ..config import ConfigError
    from ..db import DatabaseError, open_database
    from ..evaluate import evaluate_runs

    names = list(runs or [])
    urls: set[str] = set()
    for setup in setups or []:
        try:
            config = _predict_config(setup)
        except (ConfigError, FileNotFoundError, ValueError) as error:
            _fail(f"{setup}: {error}")
        names.append(config.run_name)
        urls.add(config.database_url())
    if not names:
        _fail("name at least one run, or a prediction setup with --setup")
    if db_url is None and len(urls) > 1:
        _fail(
            f"the setups use different databases ({', '.join(sorted(urls))}); choose one with --db"
        )
    url = db_url or (urls.pop() if urls else None)

    try:
        with open_database(url) as db:
            results = evaluate_runs(
                db,
                names,
                out,
                n_min=n_min,
                min_confidence=min_confidence,
                figures=figures,
            )
    except (DatabaseError, KeyError, ValueError) as error:
        _fail(str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error))

    summary = format_summary(results)
    if as_json:
        typer.echo(summary, err=True)
        typer.echo(json.dumps(results))
    else:
        typer.echo(summary)


def _predict_config(setup: Path):
    from ..config import load_predict_setup

    config, _worker = load_predict_setup(setup)
    return config


def format_summary(results: dict) -> str:
    """A short plain-text table: accuracies per run, the best run, the report's path."""
    header = ("run", "iter", "synapses", "syn acc", "bal acc", "neurons", "vote acc", "mean acc")
    rows = [header]
    for m in results["runs"].values():
        rows.append(
            (
                m["run"],
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
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    best = results.get("best")
    if best:
        at = f" (iteration {best['iteration']})" if best.get("iteration") is not None else ""
        lines.append(
            f"best: {best['run']}{at}, synapse accuracy {_number(best['synapse_accuracy'])}"
        )
    else:
        lines.append("best: none (no run has an evaluated synapse)")
    lines.append(f"report: {results['report']}")
    return "\n".join(lines)


def _number(value) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


def _fail(message: str):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)
