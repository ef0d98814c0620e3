"""Calibration of a prediction run and of the model that made it (``synister calibrate``).

:func:`calibration_summary` measures a labelled run before and after a temperature, at synapse
and neuron level, and decides which neuron calls are unclear; :func:`calibrate` fits the
temperature and the per-class scaling of the neuron rule "calibrated log" on a validation run,
chooses the unclear thresholds there, and stores them with the model (beside the checkpoint of
a training setup; see :mod:`synister.models.calibration`).

Probabilities of a run predicted with a temperature (run meta ``temperature``) are first turned
back into the network's raw softmax (:func:`raw_probabilities`), so a temperature is always
relative to the raw logits, whatever the run applied.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..layout import TRAIN_FILE, averaged_path, checkpoint_path, is_train_setup
from ..models import LoadedModel, load_model
from ..models.calibration import (
    calibration_path,
    check_temperature,
    read_calibration,
    write_calibration,
)
from ..models.manifest import MANIFEST_FILE
from . import calibration as cal
from .class_scaling import ClassScaling, fit_class_scaling, neuron_calls
from .metrics import label_predictions, prob_columns
from .selection import Labelled, bootstrap_accuracy

#: Scores whose risk-coverage curves the evaluation shows (name -> NeuronScores attribute).
RISK_COVERAGE_SCORES = {"top-class mean probability": "top_probability", "margin": "margin"}


class CalibrationInputError(ValueError):
    """The model or run given to :func:`calibrate` cannot be calibrated; says why."""


def run_temperature(meta: dict) -> float | None:
    """The temperature a run's prediction applied (meta ``temperature``), or None."""
    value = (meta or {}).get("temperature")
    return None if value is None else check_temperature(value, "run meta 'temperature'")


def raw_probabilities(probabilities: np.ndarray, meta: dict) -> np.ndarray:
    """A run's stored probabilities without the temperature its prediction applied."""
    applied = run_temperature(meta)
    if applied is None or applied == 1.0:
        return np.asarray(probabilities, dtype=np.float64)
    return cal.apply_temperature(probabilities, 1.0 / applied)


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "bins"}


def calibration_summary(
    labelled: pd.DataFrame,
    classes: list[str],
    temperature: float | None,
    *,
    thresholds: cal.UnclearThresholds | None = None,
    target_accuracy: float = cal.DEFAULT_TARGET_ACCURACY,
    n_bins: int = cal.N_BINS,
) -> tuple[dict, pd.DataFrame]:
    """Calibration of a labelled run (:func:`~synister.evaluate.metrics.label_predictions`, with
    raw probabilities) before and after ``temperature``, and its neuron-level unclear calls.

    Neurons are skeletons; a neuron's distribution is the mean of its synapses' (calibrated)
    probabilities. Neuron calls use ``thresholds``; without them the thresholds are chosen on
    this run for ``target_accuracy`` (:func:`~synister.evaluate.calibration.
    choose_unclear_thresholds`). Returns the JSON-able summary (``temperature``, ``synapse`` and
    ``neuron`` with ``before`` and ``after`` metrics, ``unclear``, ``risk_coverage``) and the
    per-neuron table (skeleton_id, n_synapses, true, predicted, top_nt_conf, runner_up,
    margin, correct, confident, outcome: the class or ``unclear``).
    """
    if temperature is not None:
        temperature = check_temperature(temperature, "temperature")
    true_idx = labelled["true_idx"].to_numpy(dtype=np.int64)
    raw = labelled[prob_columns(classes)].to_numpy(dtype=np.float64)
    calibrated = raw if temperature is None else cal.apply_temperature(raw, temperature)
    skeletons = labelled["skeleton_id"].to_numpy()

    levels: dict[str, dict] = {"synapse": {}, "neuron": {}}
    for name, probabilities in (("before", raw), ("after", calibrated)):
        if name == "after" and temperature is None:
            levels["synapse"]["after"] = levels["neuron"]["after"] = None
            continue
        levels["synapse"][name] = cal.calibration_metrics(probabilities, true_idx, n_bins)
        scores = cal.neuron_scores(skeletons, probabilities)
        neuron_truth = _neuron_truth(skeletons, true_idx, scores.neuron_ids)
        levels["neuron"][name] = cal.calibration_metrics(
            scores.mean_probabilities, neuron_truth, n_bins
        )

    scores = cal.neuron_scores(skeletons, calibrated)
    neuron_truth = _neuron_truth(skeletons, true_idx, scores.neuron_ids)
    correct = scores.top_idx == neuron_truth
    if thresholds is None:
        chosen = cal.choose_unclear_thresholds(
            scores.top_probability, scores.margin, scores.n_synapses, correct,
            target_accuracy=target_accuracy,
        )  # fmt: skip
        thresholds = cal.UnclearThresholds(**chosen["thresholds"])
        unclear = {**chosen, "chosen_on": "this run"}
        if not chosen["reached"]:  # calls that cannot reach the target are no confident calls
            thresholds = replace(thresholds, target_missed=True)
            unclear.update(
                thresholds=thresholds.to_dict(),
                closest={k: chosen[k] for k in ("n_confident", "coverage", "accuracy")},
                **cal.selective_accuracy(np.zeros(correct.shape, dtype=bool), correct),
            )
    else:
        confident = thresholds.confident(scores.top_probability, scores.margin, scores.n_synapses)
        unclear = {
            "thresholds": thresholds.to_dict(),
            "target_accuracy": None,
            "reached": None,
            **cal.selective_accuracy(confident, correct),
            "chosen_on": "given",
        }
    confident = thresholds.confident(scores.top_probability, scores.margin, scores.n_synapses)
    unclear["accuracy_all"] = float(correct.mean()) if correct.size else float("nan")
    curves = {
        label: cal.risk_coverage_curve(getattr(scores, attribute), correct)
        for label, attribute in RISK_COVERAGE_SCORES.items()
    }
    table = pd.DataFrame(
        {
            "skeleton_id": scores.neuron_ids,
            "n_synapses": scores.n_synapses,
            "true": [classes[i] for i in neuron_truth],
            "predicted": [classes[i] for i in scores.top_idx],
            "top_nt_conf": scores.top_probability,
            "runner_up": [classes[i] for i in scores.runner_up_idx],
            "margin": scores.margin,
            "correct": correct,
            "confident": confident,
            "outcome": np.where(confident, [classes[i] for i in scores.top_idx], "unclear"),
        }
    )
    summary = {
        "temperature": temperature,
        "n_bins": n_bins,
        "synapse": levels["synapse"],
        "neuron": levels["neuron"],
        "unclear": unclear,
        "risk_coverage": curves,
    }
    return summary, table


def _neuron_truth(skeletons: np.ndarray, true_idx: np.ndarray, neuron_ids: np.ndarray):
    """The true class of each neuron in ``neuron_ids`` (every synapse of a skeleton shares it)."""
    truth = pd.Series(true_idx, index=skeletons)
    truth = truth[~truth.index.duplicated()]
    return truth.loc[neuron_ids].to_numpy(dtype=np.int64)


# ---- the command's engine --------------------------------------------------------------------


def labelled_run(db, run: str) -> tuple[list[str], dict, pd.DataFrame]:
    """Classes, meta and labelled synapses of ``run`` with raw probabilities."""
    classes, meta = db.open_prediction_run(run)
    classes = list(classes)
    predictions = db.predictions(run)
    synapses = db.synapses(synapse_ids=predictions["synapse_id"].astype(np.int64).tolist())
    labelled, _ = label_predictions(predictions, synapses, classes)
    columns = prob_columns(classes)
    if len(labelled):
        labelled[columns] = raw_probabilities(labelled[columns].to_numpy(), meta)
    return classes, dict(meta or {}), labelled


def aligned_runs(db, runs: dict[int, str]) -> list[tuple[int, Labelled]]:
    """``(iteration, labelled synapses)`` of ``runs`` (iteration -> run), each restricted to the
    synapses all of them predicted, in one order: what
    :func:`~synister.evaluate.selection.choose_checkpoint` compares."""
    tables = {iteration: labelled_run(db, run) for iteration, run in runs.items()}
    shared = set.intersection(*(set(t[2]["synapse_id"]) for t in tables.values()))
    aligned = []
    for iteration, (classes, _, labelled) in tables.items():
        labelled = labelled[labelled["synapse_id"].isin(shared)].sort_values("synapse_id")
        aligned.append((iteration, Labelled.from_table(labelled, classes)))
    return aligned


def model_of_run(model: Path, meta: dict, classes: list[str], run: str) -> LoadedModel:
    """The model at ``model`` that predicted ``run``: a training setup folder (its checkpoint
    of the run's iteration, which must be the one the run names, unchanged since) or a model
    bundle (its weights file, or weights of the same training setup and iteration). Refuses
    another model or other classes, naming both."""
    used = meta.get("checkpoint")
    if is_train_setup(model):
        iteration = meta.get("iteration")
        if iteration is None:
            raise CalibrationInputError(f"run {run!r} names no training iteration in its meta")
        checkpoint = checkpoint_path(model, int(iteration))
        if not checkpoint.is_file():
            raise CalibrationInputError(
                f"run {run!r} was predicted at iteration {iteration}, but {checkpoint} does not "
                "exist"
            )
        averaged = averaged_path(checkpoint)  # or the weight average of that iteration
        if used and averaged.is_file() and Path(used).resolve() == averaged.resolve():
            checkpoint = averaged
        loaded, where = load_model(checkpoint), f"the training setup {model}"
    elif (model / MANIFEST_FILE).is_file():
        loaded, where = load_model(model), f"the bundle {model}"
    else:
        raise CalibrationInputError(
            f"{model}: neither a training setup ({TRAIN_FILE}) nor a model bundle ({MANIFEST_FILE})"
        )
    if loaded.classes != classes:
        raise CalibrationInputError(
            f"run {run!r} has classes {classes}, {where} has {loaded.classes}"
        )
    if loaded.bundle is None:
        if used and Path(used).resolve() != loaded.weights.resolve():
            raise CalibrationInputError(
                f"run {run!r} was predicted with {used}, not with {loaded.weights} of this setup"
            )
        if meta.get("checkpoint_sha256") and meta["checkpoint_sha256"] != loaded.weights_sha256:
            raise CalibrationInputError(
                f"{loaded.weights} has changed since run {run!r} was predicted with it (its "
                "SHA-256 differs from the one the run stored)"
            )
        return loaded
    if used and Path(used).resolve() == loaded.weights.resolve():
        return loaded
    setup = loaded.provenance.get("setup")
    if used and setup and Path(used).resolve().parent != Path(setup).resolve():
        raise CalibrationInputError(
            f"run {run!r} was predicted with {used}; the bundle {model} comes from {setup}"
        )
    iteration = meta.get("iteration")
    if (
        iteration is not None
        and loaded.iteration is not None
        and int(iteration) != loaded.iteration
    ):
        raise CalibrationInputError(
            f"run {run!r} was predicted at iteration {iteration}; the bundle {model} holds "
            f"iteration {loaded.iteration}"
        )
    return loaded


def calibrate(
    db,
    model: str | Path,
    run: str,
    *,
    target_accuracy: float = cal.DEFAULT_TARGET_ACCURACY,
) -> dict:
    """Fit the temperature of ``model`` on validation run ``run`` of ``db``, choose the
    neuron-level unclear thresholds there, fit the class scaling of the neuron-level
    "calibrated log" rule (:mod:`~synister.evaluate.class_scaling`), store all with the model,
    and return the record.

    ``model`` is a training setup folder (the record goes beside the checkpoint the run was
    predicted with) or a model bundle (the temperature goes into its model.json, the record
    beside its weights). A run of the test part is refused: calibrating on it would make its
    evaluation optimistic.
    """
    model = Path(model)
    if run not in db.prediction_runs():
        stored = ", ".join(sorted(db.prediction_runs())) or "none"
        raise CalibrationInputError(f"no prediction run {run!r} in the database (stored: {stored})")
    classes, meta, labelled = labelled_run(db, run)
    if meta.get("split_part") == "test":
        raise CalibrationInputError(
            f"run {run!r} predicts the test part; calibrate on a validation run so that the test "
            "evaluation stays unbiased"
        )
    if not len(labelled):
        raise CalibrationInputError(f"run {run!r} has no synapse with a known true class")
    loaded = model_of_run(model, meta, classes, run)

    raw = labelled[prob_columns(classes)].to_numpy(dtype=np.float64)
    true_idx = labelled["true_idx"].to_numpy(dtype=np.int64)
    fit = cal.cross_validated_temperature(
        cal.logits_from_probabilities(raw), true_idx, labelled["skeleton_id"].to_numpy()
    )
    temperature = fit["temperature"]
    summary, _ = calibration_summary(
        labelled, classes, temperature, target_accuracy=target_accuracy
    )
    scaling = fit_class_scaling(cal.logits_from_probabilities(raw), true_idx)
    scaled = scaling.log_probabilities(raw)[np.arange(len(true_idx)), true_idx]
    record = {
        "temperature": temperature,
        "class_scaling": {**scaling.to_dict(), "nll": float(-scaled.mean())},
        "classes": classes,
        "fitted_on": {
            "run": run,
            "split_name": meta.get("split_name"),
            "split_part": meta.get("split_part"),
            "iteration": meta.get("iteration"),
            "synapses": int(len(labelled)),
            "neurons": int(labelled["skeleton_id"].nunique()),
            "temperature_applied_by_run": run_temperature(meta),
            "fit": fit,
        },
        "synapse": {k: _scalars(v) for k, v in summary["synapse"].items()},
        "neuron": {k: _scalars(v) for k, v in summary["neuron"].items()},
        "unclear": {k: v for k, v in summary["unclear"].items() if k != "chosen_on"},
        "synister_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    stored_in = write_calibration(loaded.weights, record)
    if loaded.bundle is not None:
        loaded.bundle.save_temperature(temperature)
        stored_in = f"{loaded.bundle.path / MANIFEST_FILE} (temperature) and {stored_in}"
    record["stored_in"] = str(stored_in)
    return record


def stored_calibration(meta: dict) -> dict | None:
    """The calibration record stored beside the checkpoint a run's meta names, or None."""
    checkpoint = (meta or {}).get("checkpoint")
    return read_calibration(checkpoint) if checkpoint else None


@dataclass(frozen=True)
class CalibrationOptions:
    """How an evaluation measures calibration and decides unclear neuron calls.

    ``temperature`` replaces the model's stored one (None: stored, see
    :func:`evaluate_calibration`); each ``unclear_*`` threshold given replaces the one chosen on
    the validation run (or on this run, for ``target_accuracy``, when the model has none).
    """

    temperature: float | None = None
    unclear_min_probability: float | None = None
    unclear_min_margin: float | None = None
    unclear_min_synapses: int | None = None
    target_accuracy: float = cal.DEFAULT_TARGET_ACCURACY

    def __post_init__(self) -> None:
        if self.temperature is not None:
            check_temperature(self.temperature, "temperature")
        if not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"target_accuracy must lie in (0, 1], got {self.target_accuracy}")
        cal.UnclearThresholds(**self.overrides())  # checks the ranges

    def overrides(self) -> dict:
        """The thresholds given, by :class:`~synister.evaluate.calibration.UnclearThresholds`
        field name."""
        given = {
            "min_probability": self.unclear_min_probability,
            "min_margin": self.unclear_min_margin,
            "min_synapses": self.unclear_min_synapses,
        }
        return {k: v for k, v in given.items() if v is not None}


def evaluate_calibration(
    labelled: pd.DataFrame, classes: list[str], meta: dict, options: CalibrationOptions
) -> tuple[dict | None, pd.DataFrame]:
    """:func:`calibration_summary` of a run's labelled synapses (probabilities as stored) with
    the temperature and thresholds an evaluation should use, and where they came from.

    The temperature is the one given in ``options``, else the one stored beside the run's
    checkpoint by ``synister calibrate``, else the one the run's prediction applied, else none
    (only "before"). The thresholds are those chosen with the stored calibration (on its
    validation run), else chosen on this run for the target accuracy; thresholds given in
    ``options`` replace them. "Before" is always the network's raw softmax. None (and an empty
    table) without labelled synapses.
    """
    if not len(labelled):
        return None, pd.DataFrame()
    record = stored_calibration(meta)
    applied = run_temperature(meta)
    temperature = options.temperature
    if temperature is not None:
        source = "given"
    elif record is not None:
        temperature = record["temperature"]
        source = f"stored with the checkpoint (fitted on run {record['fitted_on']['run']})"
    elif applied is not None:
        temperature, source = applied, "applied by the run's prediction"
    else:
        source = None
    raw = labelled.copy()
    columns = prob_columns(classes)
    raw[columns] = raw_probabilities(raw[columns].to_numpy(), meta)

    target = options.target_accuracy
    if record is not None and record.get("unclear", {}).get("thresholds"):
        thresholds = cal.UnclearThresholds(**record["unclear"]["thresholds"])
        target = record["unclear"]["target_accuracy"]
        chosen_on = f"chosen on validation run {record['fitted_on']['run']}"
    else:
        summary, _ = calibration_summary(raw, classes, temperature, target_accuracy=target)
        thresholds = cal.UnclearThresholds(**summary["unclear"]["thresholds"])
        chosen_on = "chosen on this run"
    chosen_on += f" for {target:.0%} accuracy of the confident calls"
    given = options.overrides()
    if given:
        thresholds = replace(thresholds, **given, target_missed=False)
        chosen_on = f"{', '.join(sorted(given))} given, the rest {chosen_on}"
    summary, neurons = calibration_summary(raw, classes, temperature, thresholds=thresholds)
    summary["temperature_source"] = source
    summary["temperature_applied_by_run"] = applied
    summary["neuron_calibrated_log"], calls = _calibrated_log(raw, classes, record, meta)
    if calls is not None:
        at = neurons.columns.get_loc("correct")
        neurons.insert(at, "calibrated_log", neurons["skeleton_id"].map(calls).to_numpy())
    summary["unclear"].update(chosen_on=chosen_on, target_accuracy=target)
    summary["unclear"]["reached"] = (
        bool(summary["unclear"]["accuracy"] >= target - 1e-12)
        if summary["unclear"]["n_confident"]
        else False
    )
    return summary, neurons


def _calibrated_log(raw: pd.DataFrame, classes: list[str], record: dict | None, meta: dict):
    """Neuron accuracy (with its bootstrap error over neurons) of the summed class-scaled
    log-probability and each neuron's call (class names indexed by neuron id), where the model's
    calibration holds a class scaling; (None, None) otherwise."""
    if not record or "class_scaling" not in record:
        return None, None
    where = f"{calibration_path(meta['checkpoint'])} key 'class_scaling'"
    scaling = ClassScaling.from_dict(record["class_scaling"], where)
    if len(scaling.scales) != len(classes):
        raise ValueError(f"{where}: {len(scaling.scales)} classes, the run has {len(classes)}")
    skeletons = raw["skeleton_id"].to_numpy()
    neuron_ids, calls = neuron_calls(skeletons, raw[prob_columns(classes)].to_numpy(), scaling)
    truth = _neuron_truth(skeletons, raw["true_idx"].to_numpy(dtype=np.int64), neuron_ids)
    figure = {
        **bootstrap_accuracy(neuron_ids, calls == truth),
        "fitted_on": record["fitted_on"]["run"],
    }
    return figure, pd.Series([classes[i] for i in calls], index=neuron_ids)


def calibration_digest(summary: dict | None) -> dict | None:
    """The figures of an evaluation's calibration ``summary`` without bins and curves:
    temperature, ECE/NLL/Brier before and after per level, and the unclear neuron calls."""
    if summary is None:
        return None
    levels = {
        level: {k: None if v is None else _scalars(v) for k, v in summary[level].items()}
        for level in ("synapse", "neuron")
    }
    unclear = {k: v for k, v in summary["unclear"].items() if k != "thresholds"}
    return {
        "temperature": summary["temperature"],
        **levels,
        "unclear": {**unclear, "thresholds": summary["unclear"]["thresholds"]},
        "neuron_calibrated_log": summary.get("neuron_calibrated_log"),
    }
