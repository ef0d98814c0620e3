"""Evaluate stored prediction runs: read them and their truth from a database, check that each
is complete and that a best is only picked among runs of one synapse set, write the outputs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..db import public_url, unknown_hemi_lineage
from ..files import jsonable
from ..layout import AVERAGED_SUFFIX
from . import plots, report
from .calibrate import aligned_runs
from .outputs import (
    draw_run_figures,
    lineage_table,
    run_folders,
    staged_folder,
    write_run_tables,
)
from .runs import (
    DEFAULT_RULES,
    EvaluationRules,
    RunEvaluation,
    accuracy_by_iteration,
    choose_best,
    evaluate_predictions,
    series_key,
)
from .selection import DEFAULT_RULE, choose_checkpoint

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
CURVES_FILE = "accuracy_vs_iteration.png"


class IncompleteRun(ValueError):
    """A run holds fewer predictions than its synapse set: it was stopped part-way."""


def evaluate_run(
    db,
    run: str,
    *,
    rules: EvaluationRules = DEFAULT_RULES,
    allow_incomplete: bool = False,
    hemi_lineage_names: dict[int, str | None] | None = None,
    completeness: dict | None = None,
) -> RunEvaluation:
    """Read run ``run`` and its synapses' truth from ``db`` and compute its metrics, with its
    completeness (``completeness``, else :func:`check_run`'s) under ``metrics["completeness"]``.

    An incomplete run raises :class:`IncompleteRun` unless ``allow_incomplete``; ``rules``:
    see :class:`~synister.evaluate.runs.EvaluationRules`.
    """
    classes, meta = _open_run(db, run)
    if completeness is None:
        completeness = check_run(db, run)
    if completeness["status"] == "incomplete" and not allow_incomplete:
        raise IncompleteRun(_incomplete_message({run: completeness}))
    predictions = db.predictions(run)
    synapses = db.synapses(synapse_ids=predictions["synapse_id"].astype(np.int64).tolist())
    if hemi_lineage_names is None:
        hemi_lineage_names = _hemi_lineage_names(db)
    evaluation = evaluate_predictions(
        run,
        predictions,
        synapses,
        classes,
        meta,
        rules=rules,
        hemi_lineage_names=hemi_lineage_names,
    )
    evaluation.metrics["completeness"] = completeness
    return evaluation


def _open_run(db, run: str) -> tuple[list[str], dict]:
    try:
        return db.open_prediction_run(run)
    except KeyError as error:
        stored = ", ".join(sorted(db.prediction_runs())) or "none"
        message = f"no prediction run {run!r} in {public_url(db.url)} (stored: {stored})"
        raise KeyError(message) from error


def check_run(db, run: str) -> dict:
    """Run ``run``'s completeness (see :func:`run_completeness`); KeyError naming the stored
    runs if there is no such run."""
    classes, meta = _open_run(db, run)
    return run_completeness(db, classes, meta, len(db.predicted_synapse_ids(run)))


def run_completeness(db, classes: Sequence[str], meta: dict, n_predicted: int) -> dict:
    """How many of the synapses a run is meant to hold it holds.

    The expected count is the run's meta ``expected_synapses`` (stored by ``synister predict``;
    for a registered MongoDB run of the original synister, ``expected_source`` ``documents``: the
    documents it created, one per synapse of its part), else the synapses of its meta's
    ``split_name``/``split_part`` whose skeleton has exactly one known transmitter among its
    classes (the ones prediction picks). Without either (a split removed since) the status is
    ``unknown`` and ``reason`` says why. Returns status (complete, incomplete, unknown),
    predicted, expected, fraction, source (meta, documents, split or None) and reason.
    """
    expected, reason = meta.get("expected_synapses"), None
    source = meta.get("expected_source") or "meta"
    if expected is None:
        split, part = meta.get("split_name"), meta.get("split_part")
        if split is None or part is None:
            source, reason = None, "its meta names no split (a run of the original synister?)"
        else:
            from ..data import training_synapses  # imports torch: only for runs that need it
            from ..db import UnknownSplit

            try:
                expected = len(training_synapses(db, split, classes, part=part))
                source = "split"
            except UnknownSplit:
                source, reason = None, f"its split {split!r} is not in the database any more"
    if expected is None:
        return {"status": "unknown", "predicted": n_predicted, "expected": None,
                "fraction": None, "source": None, "reason": reason}  # fmt: skip
    expected = int(expected)
    return {
        "status": "complete" if n_predicted >= expected else "incomplete",
        "predicted": n_predicted,
        "expected": expected,
        "fraction": n_predicted / expected if expected else None,
        "source": source,
        "reason": reason,
    }


def _incomplete_message(incomplete: dict[str, dict]) -> str:
    listed = ", ".join(
        f"{run} ({c['predicted']} of {c['expected']} synapses, {c['fraction']:.0%})"
        for run, c in incomplete.items()
    )
    finish = "finish the run with `synister predict SETUP` (it resumes)"
    if all(c["source"] == "documents" for c in incomplete.values()):
        finish = "finish the run with the original synister, which wrote it"
    elif any(c["source"] == "documents" for c in incomplete.values()):
        finish += " or, for a run of the original synister, with the original"
    return (
        f"incomplete prediction run(s): {listed}. Prediction goes in spatial order, so part of a "
        f"run is a biased sample of its synapses: {finish}, or evaluate it anyway with "
        "--allow-incomplete (allow_incomplete=True)"
    )


def evaluate_runs(
    db,
    runs: Sequence[str],
    out_dir: str | Path,
    *,
    rules: EvaluationRules = DEFAULT_RULES,
    allow_incomplete: bool = False,
    figures: bool = True,
    final_rule: str = DEFAULT_RULE,
) -> dict:
    """Evaluate ``runs`` of ``db``, write metrics, figures and the report to ``out_dir``, and
    return the metrics (the content of ``metrics.json``; NaN is written as null).

    Every run is read and checked before anything is written; the outputs are written beside
    ``out_dir`` and moved into it at the end, so a failure leaves no trace (and an existing
    ``out_dir`` keeps what it held). Incomplete runs raise :class:`IncompleteRun` unless
    ``allow_incomplete``; they are never the best. ``rules``: see
    :class:`~synister.evaluate.runs.EvaluationRules`. A best run is only picked among runs of one
    synapse set (split, part and classes); otherwise ``best`` is None, ``best_refused`` says why
    and ``synapse_sets`` lists each set's best. ``final``: the final model of one training's
    validation runs by ``final_rule`` (see :func:`choose_final`). ``figures=False`` skips the
    PNGs (about 1.5 s per run); the report then holds tables only.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("no prediction run to evaluate")
    repeated = sorted({r for r in runs if runs.count(r) > 1})
    if repeated:
        raise ValueError(f"run(s) given more than once: {', '.join(repeated)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {out_dir} is a file")

    completeness = {run: check_run(db, run) for run in runs}
    incomplete = {r: c for r, c in completeness.items() if c["status"] == "incomplete"}
    if incomplete and not allow_incomplete:
        raise IncompleteRun(_incomplete_message(incomplete))
    names = _hemi_lineage_names(db)
    evaluations = [
        evaluate_run(
            db,
            run,
            rules=rules,
            allow_incomplete=True,
            hemi_lineage_names=names,
            completeness=completeness[run],
        )
        for run in runs
    ]
    warnings = [
        f"{run}: completeness unknown, {c['reason']}; evaluated as it is"
        for run, c in completeness.items()
        if c["status"] == "unknown"
    ] + [
        f"{run}: incomplete ({c['predicted']} of {c['expected']} synapses), evaluated because "
        "incomplete runs were allowed; it is not a candidate for the best run"
        for run, c in incomplete.items()
    ]

    run_metrics = [e.metrics for e in evaluations]
    best = choose_best(run_metrics)
    curves = accuracy_by_iteration(run_metrics)
    results = {
        "database": public_url(db.url),
        **rules.as_dict(),
        "runs": {e.run: e.metrics for e in evaluations},
        "accuracy_vs_iteration": curves,
        **best,
        "final": choose_final(db, run_metrics, final_rule),
        "warnings": warnings,
        "report": str(out_dir / REPORT_FILE),
    }
    results = jsonable(results)
    with staged_folder(out_dir) as staging:
        _write_outputs(staging, results, evaluations, curves, figures)
    return results


def choose_final(db, run_metrics: Sequence[dict], rule: str = DEFAULT_RULE) -> dict | None:
    """The final model among validation runs of one training's checkpoints (one series, one
    kind of weights, complete, one run per iteration) by ``rule`` (default as ``export-model
    --iteration best`` chooses), read again from ``db`` with raw probabilities: ``run``,
    ``iteration``, ``rule``; None for other sets of runs."""
    candidates = [
        m
        for m in run_metrics
        if m["iteration"] is not None
        and m.get("completeness", {}).get("status") != "incomplete"
        and m["synapse"]["n"] > 0
    ]
    kinds = {
        (series_key(m), str(m["meta"].get("checkpoint") or "").endswith(AVERAGED_SUFFIX))
        for m in candidates
    }
    iterations = {int(m["iteration"]): m["run"] for m in candidates}
    if (
        len(kinds) != 1
        or len(iterations) != len(candidates)
        or candidates[0]["meta"].get("split_part") != "validation"
    ):
        return None
    iteration = choose_checkpoint(aligned_runs(db, iterations), rule)
    return {"run": iterations[iteration], "iteration": iteration, "rule": rule}


def _write_outputs(
    out_dir: Path,
    results: dict,
    evaluations: list[RunEvaluation],
    curves: list[dict],
    figures: bool,
) -> None:
    drawn: dict[str, dict[str, Path]] = {}
    lineage_tables: dict[str, pd.DataFrame] = {}
    folders = run_folders([e.run for e in evaluations])
    for evaluation in evaluations:
        folder = out_dir / folders[evaluation.run]
        folder.mkdir()
        write_run_tables(evaluation, folder)
        lineage_tables[evaluation.run] = lineage_table(evaluation)
        if figures:
            drawn[evaluation.run] = draw_run_figures(evaluation, folder)
    if figures and any(curve["points"] for curve in curves):
        drawn[""] = {
            "accuracy versus training iteration": plots.plot_accuracy_curves(
                out_dir / CURVES_FILE, curves, results["best"]
            )
        }
    (out_dir / METRICS_FILE).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    report.write_report(out_dir / REPORT_FILE, results, drawn, lineage_tables)


def _hemi_lineage_names(db) -> dict[int, str | None]:
    lineages = db.hemi_lineages()
    return {
        int(i): (None if unknown_hemi_lineage(name) else str(name))
        for i, name in zip(lineages["hemi_lineage_id"], lineages["hemi_lineage_name"], strict=True)
    }
