"""Evaluate prediction runs: metrics at synapse, neuron and hemilineage level, figures, report.

:func:`evaluate_runs` reads runs from a database and writes to an output folder::

    metrics.json                 all metrics, per run, plus accuracy vs iteration and the best run
    report.html                  one self-contained page (figures embedded)
    accuracy_vs_iteration.png    when runs carry an iteration in their meta
    <run>/*.png                  confusion matrices and the expected-probability matrix
    <run>/neurons.csv, <run>/hemi_lineages.csv   per-neuron and per-hemilineage predictions

The pure metric functions live in :mod:`synister.evaluate.metrics`, one run's evaluation in
:mod:`~synister.evaluate.runs`, the database-facing engine in :mod:`~synister.evaluate.runner`.
"""

from __future__ import annotations

from . import metrics
from .metrics import (
    TIE_RULES,
    aggregate_predictions,
    balanced_accuracy,
    confusion_matrix,
    expected_probability_matrix,
    hemi_lineage_predictions,
    label_predictions,
    neuron_predictions,
    row_normalize,
)
from .runner import (
    CURVES_FILE,
    METRICS_FILE,
    REPORT_FILE,
    IncompleteRun,
    check_run,
    evaluate_run,
    evaluate_runs,
    public_url,
    run_completeness,
)
from .runs import (
    EvaluationRules,
    RunEvaluation,
    accuracy_by_iteration,
    best_run,
    choose_best,
    evaluate_predictions,
)
from .table import evaluate_table

__all__ = [
    "CURVES_FILE",
    "EvaluationRules",
    "METRICS_FILE",
    "REPORT_FILE",
    "TIE_RULES",
    "IncompleteRun",
    "RunEvaluation",
    "accuracy_by_iteration",
    "aggregate_predictions",
    "balanced_accuracy",
    "best_run",
    "check_run",
    "choose_best",
    "confusion_matrix",
    "evaluate_predictions",
    "evaluate_run",
    "evaluate_runs",
    "evaluate_table",
    "expected_probability_matrix",
    "hemi_lineage_predictions",
    "label_predictions",
    "metrics",
    "neuron_predictions",
    "public_url",
    "row_normalize",
    "run_completeness",
]
