"""Evaluate prediction runs: metrics at synapse, neuron and hemilineage level, figures, report.

:func:`evaluate_runs` reads runs from a database and writes to an output folder::

    metrics.json                 all metrics, per run, plus accuracy vs iteration and the best run
    report.html                  one self-contained page (figures embedded)
    accuracy_vs_iteration.png    when runs carry an iteration in their meta
    <run>/*.png                  confusion matrices and the expected-probability matrix
    <run>/neurons.csv, <run>/hemi_lineages.csv   per-neuron and per-hemilineage predictions

The pure metric functions live in :mod:`synister.evaluate.metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..db import public_url, unknown_hemi_lineage
from . import metrics, plots, report
from .metrics import (
    aggregate_predictions,
    balanced_accuracy,
    confusion_matrix,
    expected_probability_matrix,
    hemi_lineage_predictions,
    label_predictions,
    neuron_predictions,
    row_normalize,
)
from .outputs import draw_run_figures, jsonable, lineage_table, run_folders, write_run_tables
from .runs import RunEvaluation, accuracy_by_iteration, best_run, evaluate_predictions

__all__ = [
    "RunEvaluation",
    "accuracy_by_iteration",
    "aggregate_predictions",
    "balanced_accuracy",
    "best_run",
    "confusion_matrix",
    "evaluate_predictions",
    "evaluate_run",
    "evaluate_runs",
    "expected_probability_matrix",
    "hemi_lineage_predictions",
    "label_predictions",
    "metrics",
    "neuron_predictions",
    "public_url",
    "row_normalize",
]

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
CURVES_FILE = "accuracy_vs_iteration.png"


def evaluate_run(
    db,
    run: str,
    *,
    n_min: int = 0,
    min_confidence: float = 0.0,
    hemi_lineage_names: dict[int, str | None] | None = None,
) -> RunEvaluation:
    """Read run ``run`` and its synapses' truth from ``db`` and compute its metrics."""
    try:
        classes, meta = db.open_prediction_run(run)
    except KeyError as error:
        stored = ", ".join(sorted(db.prediction_runs())) or "none"
        message = f"no prediction run {run!r} in {public_url(db.url)} (stored: {stored})"
        raise KeyError(message) from error
    predictions = db.predictions(run)
    synapses = db.synapses(synapse_ids=predictions["synapse_id"].astype(np.int64).tolist())
    if hemi_lineage_names is None:
        hemi_lineage_names = _hemi_lineage_names(db)
    return evaluate_predictions(
        run,
        predictions,
        synapses,
        classes,
        meta,
        n_min=n_min,
        min_confidence=min_confidence,
        hemi_lineage_names=hemi_lineage_names,
    )


def evaluate_runs(
    db,
    runs: Sequence[str],
    out_dir: str | Path,
    *,
    n_min: int = 0,
    min_confidence: float = 0.0,
    figures: bool = True,
) -> dict:
    """Evaluate ``runs`` of ``db``, write metrics, figures and the report to ``out_dir``, and
    return the metrics (the content of ``metrics.json``; NaN is written as null).

    ``figures=False`` skips the PNGs (about 1.5 s per run); the report then holds tables only.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("no prediction run to evaluate")
    repeated = sorted({r for r in runs if runs.count(r) > 1})
    if repeated:
        raise ValueError(f"run(s) given more than once: {', '.join(repeated)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    names = _hemi_lineage_names(db)
    evaluations = [
        evaluate_run(db, run, n_min=n_min, min_confidence=min_confidence, hemi_lineage_names=names)
        for run in runs
    ]
    run_metrics = [e.metrics for e in evaluations]
    best = best_run(run_metrics)
    curves = accuracy_by_iteration(run_metrics)
    results = {
        "database": public_url(db.url),
        "n_min": n_min,
        "min_confidence": min_confidence,
        "runs": {e.run: e.metrics for e in evaluations},
        "accuracy_vs_iteration": curves,
        "best": best,
        "report": str(out_dir / REPORT_FILE),
    }

    drawn: dict[str, dict[str, Path]] = {}
    lineage_tables: dict[str, pd.DataFrame] = {}
    folders = run_folders(runs)
    for evaluation in evaluations:
        folder = out_dir / folders[evaluation.run]
        folder.mkdir(exist_ok=True)
        write_run_tables(evaluation, folder)
        lineage_tables[evaluation.run] = lineage_table(evaluation)
        if figures:
            drawn[evaluation.run] = draw_run_figures(evaluation, folder)
    if figures and any(curve["points"] for curve in curves):
        drawn[""] = {
            "accuracy versus training iteration": plots.plot_accuracy_curves(
                out_dir / CURVES_FILE, curves, best
            )
        }

    results = jsonable(results)
    (out_dir / METRICS_FILE).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    report.write_report(out_dir / REPORT_FILE, results, drawn, lineage_tables)
    return results


def _hemi_lineage_names(db) -> dict[int, str | None]:
    lineages = db.hemi_lineages()
    return {
        int(i): (None if unknown_hemi_lineage(name) else str(name))
        for i, name in zip(lineages["hemi_lineage_id"], lineages["hemi_lineage_name"], strict=True)
    }
