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
import math
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

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
        raise KeyError(f"no prediction run {run!r} in {_public_url(db)} (stored: {stored})") from (
            error
        )
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
    plots_enabled: bool = True,
) -> dict:
    """Evaluate ``runs`` of ``db``, write metrics, figures and the report to ``out_dir``, and
    return the metrics (the content of ``metrics.json``; NaN is written as null)."""
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
        "database": _public_url(db),
        "n_min": n_min,
        "min_confidence": min_confidence,
        "runs": {e.run: e.metrics for e in evaluations},
        "accuracy_vs_iteration": curves,
        "best": best,
        "report": str(out_dir / REPORT_FILE),
    }

    figures: dict[str, dict[str, Path]] = {}
    lineage_tables: dict[str, pd.DataFrame] = {}
    folders = _run_folders(runs)
    for evaluation in evaluations:
        folder = out_dir / folders[evaluation.run]
        folder.mkdir(exist_ok=True)
        _write_tables(evaluation, folder)
        lineage_tables[evaluation.run] = _merged_lineages(evaluation)
        if plots_enabled:
            figures[evaluation.run] = _run_figures(evaluation, folder)
    if plots_enabled and any(curve["points"] for curve in curves):
        figures[""] = {
            "accuracy versus training iteration": plots.plot_accuracy_curves(
                out_dir / CURVES_FILE, curves, best
            )
        }

    results = _jsonable(results)
    (out_dir / METRICS_FILE).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    report.write_report(out_dir / REPORT_FILE, results, figures, lineage_tables)
    return results


def _hemi_lineage_names(db) -> dict[int, str | None]:
    lineages = db.hemi_lineages()
    return {
        int(i): (None if pd.isna(name) else str(name))
        for i, name in zip(lineages["hemi_lineage_id"], lineages["hemi_lineage_name"], strict=True)
    }


def _public_url(db) -> str:
    """The database URL without a password, safe to print and to put into a report."""
    url = str(getattr(db, "url", ""))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}"))


def _run_folders(runs: Sequence[str]) -> dict[str, str]:
    """A file-system-safe, distinct folder name per run."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for run in runs:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", run).strip("._") or "run"
        name, n = base, 1
        while name.lower() in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name.lower())
        folders[run] = name
    return folders


def _run_figures(evaluation: RunEvaluation, folder: Path) -> dict[str, Path]:
    m = evaluation.metrics
    classes = evaluation.classes
    figures = {}
    for caption, file, level in (
        ("synapses: confusion matrix", "confusion_synapse.png", m["synapse"]),
        ("neurons by majority vote", "confusion_neuron_vote.png", m["neuron"]["vote"]),
        ("neurons by mean probability", "confusion_neuron_mean.png", m["neuron"]["mean"]),
        ("hemilineages by majority vote", "confusion_hemi_lineage_vote.png",
         m["hemi_lineage"]["vote"]),
        ("hemilineages by mean probability", "confusion_hemi_lineage_mean.png",
         m["hemi_lineage"]["mean"]),
    ):  # fmt: skip
        title = f"{evaluation.run}\n{caption}\naccuracy {_percent(level['accuracy'])}"
        figures[caption] = plots.plot_matrix(
            folder / file,
            np.array(level["confusion_normalized"], dtype=np.float64),
            classes,
            counts=np.array(level["confusion"]),
            title=title,
        )
    caption = "synapses: mean predicted probability per true class"
    figures[caption] = plots.plot_matrix(
        folder / "expected_probability_synapse.png",
        np.array(m["synapse"]["expected_probability"], dtype=np.float64),
        classes,
        row_totals=list(m["synapse"]["n_per_class"].values()),
        title=f"{evaluation.run}\nsynapses: mean predicted probability\nper true class",
        xlabel="mean probability of class",
    )
    return figures


def _percent(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _merged(
    evaluation: RunEvaluation, tables: dict[str, pd.DataFrame], keys: list[str]
) -> pd.DataFrame:
    """Vote and mean predictions side by side, one row per neuron or hemilineage."""
    classes = evaluation.classes
    vote, mean = tables["vote"], tables["mean"]
    merged = vote.assign(
        true=[classes[i] for i in vote["true_idx"]],
        mean_pred_idx=mean["pred_idx"].to_numpy(),
        mean_tie=mean["tie"].to_numpy(),
        mean_support=mean["support"].to_numpy(),
    )
    if not vote[keys].equals(mean[keys]):
        raise AssertionError("vote and mean tables are not aligned")
    merged["vote_predicted"] = [classes[i] for i in merged["pred_idx"]]
    merged["mean_predicted"] = [classes[i] for i in merged["mean_pred_idx"]]
    return merged


def _merged_lineages(evaluation: RunEvaluation) -> pd.DataFrame:
    return _merged(evaluation, evaluation.hemi_lineages, ["hemi_lineage_id", "true_idx"])


def _write_tables(evaluation: RunEvaluation, folder: Path) -> None:
    neurons = _merged(evaluation, evaluation.neurons, ["skeleton_id"])
    neurons.rename(columns={"tie": "vote_tie", "support": "vote_share"}).reindex(
        columns=[
            "skeleton_id",
            "hemi_lineage_id",
            "n_synapses",
            "true",
            "vote_predicted",
            "vote_tie",
            "vote_share",
            "mean_predicted",
            "mean_tie",
            "mean_support",
        ]
    ).to_csv(folder / "neurons.csv", index=False)
    lineages = _merged_lineages(evaluation)
    lineages.rename(columns={"tie": "vote_tie", "support": "vote_share"}).reindex(
        columns=[
            "hemi_lineage_id",
            "hemi_lineage_name",
            "n_neurons",
            "n_synapses",
            "true",
            "vote_predicted",
            "vote_tie",
            "vote_share",
            "mean_predicted",
            "mean_tie",
            "mean_support",
        ]
    ).to_csv(folder / "hemi_lineages.csv", index=False)


def _jsonable(value):
    """Plain JSON types; NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if value is pd.NA:
        return None
    return str(value)
