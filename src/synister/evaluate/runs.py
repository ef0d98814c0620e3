"""All metrics of one prediction run, and the comparison of several runs by iteration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from . import metrics as m
from .calibrate import CalibrationOptions, evaluate_calibration
from .selection import bootstrap_accuracy


@dataclass(frozen=True)
class EvaluationRules:
    """What an evaluation leaves out and how it breaks a tied vote.

    ``min_confidence`` leaves out synapses whose highest probability is below it, at every
    level; ``n_min`` then neurons and hemilineage units with fewer synapses, and with
    ``n_min_synapse_level`` their synapses at synapse level too; ``cutoff`` leaves out neurons
    and hemilineage units whose majority vote holds less than that share of their synapses;
    ``ties`` is one of :data:`metrics.TIE_RULES`. The defaults are synister's; the original
    synister had ``n_min`` and ``cutoff`` off by default and, when given ``n_min``, applied it at
    synapse level too (``n_min_synapse_level=True``), and broke ties to the first class
    (``ties="first"``). ``calibration``: how calibration is measured and which neuron calls are
    unclear (see :class:`~synister.evaluate.calibrate.CalibrationOptions`).
    """

    n_min: int = 0
    min_confidence: float = 0.0
    cutoff: float = 0.0
    ties: str = "probability"
    n_min_synapse_level: bool = False
    calibration: CalibrationOptions = CalibrationOptions()

    def __post_init__(self) -> None:
        if self.n_min < 0:
            raise ValueError(f"n_min must be >= 0, got {self.n_min}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must lie in [0, 1], got {self.min_confidence}")
        m.check_cutoff(self.cutoff)
        m.check_ties(self.ties)

    def as_dict(self) -> dict:
        """The filters and the tie rule (each run's calibration says what it used)."""
        return {k: v for k, v in asdict(self).items() if k != "calibration"}


#: synister's rules (see :class:`EvaluationRules`)
DEFAULT_RULES = EvaluationRules()


@dataclass
class RunEvaluation:
    """One run's metrics (JSON-able ``metrics``) and the tables behind them (for plots, CSVs)."""

    run: str
    classes: list[str]
    meta: dict
    metrics: dict
    synapses: pd.DataFrame  # labelled synapses kept by the confidence cut-off (and n_min)
    neurons: dict[str, pd.DataFrame] = field(default_factory=dict)  # method -> per skeleton
    hemi_lineages: dict[str, pd.DataFrame] = field(default_factory=dict)  # method -> per lineage
    unclear: pd.DataFrame | None = None  # per neuron: confident call or "unclear" (calibrate)


def evaluate_predictions(
    run: str,
    predictions: pd.DataFrame,
    synapses: pd.DataFrame,
    classes: Sequence[str],
    meta: dict | None = None,
    *,
    rules: EvaluationRules = DEFAULT_RULES,
    hemi_lineage_names: dict[int, str | None] | None = None,
) -> RunEvaluation:
    """Metrics at synapse, neuron and hemilineage level of one run's prediction table, under
    ``rules`` (see :class:`EvaluationRules`). Hemilineages named None in
    ``hemi_lineage_names`` are the database's "unknown" ones and are left out of the
    hemilineage level.
    """
    classes = list(classes)
    meta = dict(meta or {})
    labelled, excluded = m.label_predictions(predictions, synapses, classes)
    confident = m.confidence_filter(labelled, rules.min_confidence)
    kept = (
        m.n_min_synapse_filter(confident, rules.n_min) if rules.n_min_synapse_level else confident
    )
    n_classes = len(classes)
    probabilities = kept[m.prob_columns(classes)].to_numpy(dtype=np.float64)

    synapse_level = m.level_metrics(kept["true_idx"], kept["pred_idx"], classes)
    synapse_level["expected_probability"] = m.expected_probability_matrix(
        kept["true_idx"].to_numpy(), probabilities, n_classes
    ).tolist()
    synapse_level["left_out_n_min"] = len(confident) - len(kept)
    # Computed before the cut-off, so a user can choose one.
    synapse_level["by_confidence"] = m.confidence_curve(labelled, n_classes)

    evaluation = RunEvaluation(run, classes, meta, {}, kept)
    neuron_level: dict = {}
    lineage_level: dict = {}
    names = hemi_lineage_names or {}
    unknown_lineages = [i for i, name in names.items() if name is None]
    for method in m.AGGREGATION_METHODS:
        how = {"method": method, "n_min": rules.n_min, "cutoff": rules.cutoff, "ties": rules.ties}
        neurons, neurons_left_out = m.neuron_predictions(kept, n_classes, **how)
        evaluation.neurons[method] = neurons
        neuron_level[method] = {
            **m.level_metrics(neurons["true_idx"], neurons["pred_idx"], classes),
            "n_ties": int(neurons["tie"].sum()),
            "tied_skeleton_ids": neurons.loc[neurons["tie"], "skeleton_id"].tolist(),
        }
        neuron_level["left_out_n_min"] = neurons_left_out["n_min"]
        neuron_level["left_out_cutoff"] = neurons_left_out["cutoff"]

        lineages, left_out = m.hemi_lineage_predictions(
            kept, n_classes, **how, unknown_ids=unknown_lineages
        )
        lineages.insert(
            1,
            "hemi_lineage_name",
            [names.get(int(i)) for i in lineages["hemi_lineage_id"]],
        )
        evaluation.hemi_lineages[method] = lineages
        lineage_level[method] = {
            **m.level_metrics(lineages["true_idx"], lineages["pred_idx"], classes),
            "n_ties": int(lineages["tie"].sum()),
            "tied_units": [
                [int(i), classes[t]]
                for i, t in lineages.loc[
                    lineages["tie"], ["hemi_lineage_id", "true_idx"]
                ].to_numpy()
            ],
        }
        lineage_level["split_by_transmitter"] = left_out["mixed"]
        lineage_level["left_out_n_min"] = left_out["n_min"]
        lineage_level["left_out_cutoff"] = left_out["cutoff"]
        lineage_level["synapses_without_hemi_lineage"] = left_out["no_hemi_lineage"]

    n_labelled = len(labelled)
    evaluation.metrics = {
        "run": run,
        "classes": classes,
        "iteration": _iteration(meta),
        "meta": meta,
        "filters": rules.as_dict(),
        "counts": {
            "predicted": int(len(predictions)),
            "left_out": excluded,
            "labelled": n_labelled,
            "kept_by_confidence": int(len(confident)),
            "fraction_kept_by_confidence": (
                len(confident) / n_labelled if n_labelled else float("nan")
            ),
            "evaluated": int(len(kept)),
        },
        "synapse": synapse_level,
        "neuron": neuron_level,
        "hemi_lineage": lineage_level,
        "bootstrap": _bootstrap(kept, evaluation.neurons),
    }
    evaluation.metrics["calibration"], evaluation.unclear = evaluate_calibration(
        labelled, classes, meta, rules.calibration
    )
    return evaluation


def _bootstrap(kept: pd.DataFrame, neurons: dict[str, pd.DataFrame]) -> dict:
    """Accuracy with its bootstrap standard error and 95 % interval, resampling neurons (the
    synapses of one neuron are not independent), at synapse level and per neuron rule."""
    out = {
        "resampled": "neurons",
        "synapse": bootstrap_accuracy(
            kept["skeleton_id"].to_numpy(), (kept["true_idx"] == kept["pred_idx"]).to_numpy()
        ),
    }
    for method, table in neurons.items():
        correct = (table["true_idx"] == table["pred_idx"]).to_numpy()
        out[f"neuron_{method}"] = bootstrap_accuracy(table["skeleton_id"].to_numpy(), correct)
    return out


def _is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _iteration(meta: dict) -> int | None:
    value = meta.get("iteration")
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"run meta field 'iteration' is not an integer: {value!r}") from error


def series_key(metrics: dict) -> str:
    """Label of the curve a run belongs to: runs of one training and split part form a series."""
    meta = metrics["meta"]
    parts = [
        str(meta["experiment"]) if meta.get("experiment") is not None else None,
        f"t{meta['train_number']}" if meta.get("train_number") is not None else None,
        split_label(meta) if meta.get("split_name") or meta.get("split_part") else None,
    ]
    label = " ".join(p for p in parts if p)
    return label or "runs"


def split_label(meta: dict) -> str:
    """``<split> / <part>`` of a run's meta; ``?`` for what it does not name."""
    return f"{meta.get('split_name') or '?'} / {meta.get('split_part') or '?'}"


def completeness_text(completeness: dict | None) -> str:
    """``predicted / expected`` (``?`` when unknown), with the status when not complete."""
    c = completeness or {}
    expected = "?" if c.get("expected") is None else c["expected"]
    text = f"{c.get('predicted', '?')} / {expected}"
    status = c.get("status", "unknown")
    return text if status == "complete" else f"{text} ({status})"


def synapse_set(metrics: dict) -> dict:
    """What decides which synapses a run predicts: its split, split part and set of classes.
    Runs of different synapse sets have accuracies that cannot be compared."""
    meta = metrics["meta"]
    return {
        "split_name": meta.get("split_name"),
        "split_part": meta.get("split_part"),
        "classes": sorted(metrics["classes"]),
    }


def choose_best(run_metrics: Sequence[dict]) -> dict:
    """The best run (see :func:`best_run`), only when all runs predict one synapse set.

    Returns ``best`` (None when refused), ``best_refused`` (why, or None) and
    ``synapse_sets``: per set (in the order of its first run) its split, part, classes, runs and
    best run.
    """
    groups: dict[tuple, dict] = {}
    for metrics in run_metrics:
        key = synapse_set(metrics)
        entry = groups.setdefault(
            (key["split_name"], key["split_part"], tuple(key["classes"])), {**key, "runs": []}
        )
        entry["runs"].append(metrics)
    sets = [
        {**entry, "runs": [m["run"] for m in entry["runs"]], "best": best_run(entry["runs"])}
        for entry in groups.values()
    ]
    if len(sets) == 1:
        return {"best": sets[0]["best"], "best_refused": None, "synapse_sets": sets}
    classes_differ = len({tuple(s["classes"]) for s in sets}) > 1
    listed = "; ".join(
        split_label(s)
        + (f" of {', '.join(s['classes'])}" if classes_differ else "")
        + f": {', '.join(s['runs'])}"
        for s in sets
    )
    reason = (
        f"the runs predict {len(sets)} different synapse sets ({listed}), whose accuracies "
        "cannot be compared; each set's best is listed"
    )
    return {"best": None, "best_refused": reason, "synapse_sets": sets}


def accuracy_by_iteration(run_metrics: Sequence[dict]) -> list[dict]:
    """Per series, the runs with an iteration sorted by it, with their accuracies."""
    series: dict[str, list[dict]] = {}
    for metrics in run_metrics:
        if metrics["iteration"] is None:
            continue
        series.setdefault(series_key(metrics), []).append(
            {
                "run": metrics["run"],
                "iteration": metrics["iteration"],
                "synapse_accuracy": metrics["synapse"]["accuracy"],
                "synapse_balanced_accuracy": metrics["synapse"]["balanced_accuracy"],
                "neuron_vote_accuracy": metrics["neuron"]["vote"]["accuracy"],
                "neuron_mean_accuracy": metrics["neuron"]["mean"]["accuracy"],
            }
        )
    return [
        {"series": key, "points": sorted(points, key=lambda p: (p["iteration"], p["run"]))}
        for key, points in series.items()
    ]


def best_run(run_metrics: Sequence[dict]) -> dict | None:
    """The run with the highest synapse-level accuracy (after the confidence cut-off, as
    reported); ties go to the earliest iteration (runs without one count as latest), then to
    the run given first. Incomplete runs are no candidates. None if no candidate has any
    evaluated synapse."""
    candidates = [
        (position, metrics)
        for position, metrics in enumerate(run_metrics)
        if not _is_nan(metrics["synapse"]["accuracy"])
        and metrics.get("completeness", {}).get("status") != "incomplete"
    ]
    if not candidates:
        return None

    def rank(item):
        position, metrics = item
        iteration = metrics["iteration"]
        return (
            -metrics["synapse"]["accuracy"],
            iteration is None,
            iteration if iteration is not None else 0,
            position,
        )

    _, metrics = min(candidates, key=rank)
    return {
        "run": metrics["run"],
        "iteration": metrics["iteration"],
        "synapse_accuracy": metrics["synapse"]["accuracy"],
        "synapse_balanced_accuracy": metrics["synapse"]["balanced_accuracy"],
        "neuron_vote_accuracy": metrics["neuron"]["vote"]["accuracy"],
    }
