"""The ablation of ``bench_accuracy.py``: from one training run, what each way of choosing the
final model and each neuron-level rule gives on the test part.

Every checkpoint of the demo's training setup is predicted on the validation and the test part,
with its raw weights and with the weight average saved beside it
(``model_checkpoint_<N>.averaged``). Each selection rule then picks an iteration on the
validation part only, and the test part of that pick is scored: synapse accuracy and neuron
accuracy under each neuron rule, each with its bootstrap standard error over test neurons, as
fractions of the test part's image-level ceiling, the difference to today's choice (raw weights,
best validation synapse accuracy, majority vote) with the paired standard error, and the
neuron-level accuracy at the coverage of the calibrated "unclear" call.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from synister.config import load_predict_setup, load_train_setup
from synister.data import training_synapses
from synister.db import PredictionRunExists, open_database
from synister.demo.run import EXPERIMENT
from synister.evaluate.calibrate import calibration_summary, labelled_run
from synister.evaluate.calibration import UnclearThresholds, logits_from_probabilities
from synister.evaluate.class_scaling import fit_class_scaling, neuron_calls
from synister.evaluate.metrics import balanced_accuracy, confusion_matrix
from synister.evaluate.selection import (
    NEURON_RULES,
    SELECTION_RULES,
    Labelled,
    bootstrap_accuracy,
    choose_checkpoint,
    neuron_decisions,
    paired_difference_se,
)
from synister.layout import averaged_path
from synister.models import list_checkpoints
from synister.models.checkpoint import (
    checkpoint_network,
    checkpoint_weights,
    read_checkpoint,
    save_weights,
)
from synister.predict import predict_setup
from synister.setup import prepare_prediction_setups, train_setup_dir

PARTS = ("validation", "test")
WEIGHTS = ("raw", "averaged")
BASELINE = ("raw", "accuracy", "vote")
#: the neuron rule of a class scaling fitted on the validation run (synister calibrate's)
CALIBRATED_LOG = "calibrated_log"
ALL_RULES = (*NEURON_RULES, CALIBRATED_LOG)


def _say(message: str) -> None:
    print(f"[ablation] {message}", flush=True)


def predict_every_checkpoint(out: Path, device=None) -> dict:
    """Predict both parts at every checkpoint with raw and averaged weights (runs already
    stored are kept); returns ``{(weights, part, iteration): run name}``."""
    setup = train_setup_dir(out, EXPERIMENT, 0)
    runs = {}
    for iteration, path in list_checkpoints(setup):
        for weights in WEIGHTS:
            source = {"iterations": [iteration]}
            if weights == "averaged":
                if not averaged_path(path).is_file():
                    continue
                source = {"checkpoint": averaged_path(path)}
            for part in PARTS:
                (made,) = prepare_prediction_setups(out, EXPERIMENT, 0, part=part, **source)
                try:
                    predict_setup(made.path, device=device, progress=False)
                    _say(f"predicted {part} at {iteration} ({weights})")
                except PredictionRunExists:
                    pass
                runs[weights, part, iteration] = load_predict_setup(made.path)[0].run_name
    return runs


def stochastic_weight_average(out: Path, count: int) -> tuple[Path, list[int]]:
    """The mean of the raw weights of the last ``count`` checkpoints (batch-norm statistics
    averaged too), saved as ``out/ablation/swa_last<count>``; returns it and the iterations."""
    checkpoints = list_checkpoints(train_setup_dir(out, EXPERIMENT, 0))[-count:]
    path = out / "ablation" / f"swa_last{len(checkpoints)}"
    iterations = [i for i, _ in checkpoints]
    if path.is_file():
        return path, iterations
    states = [read_checkpoint(p) for _, p in checkpoints]
    weights = [
        checkpoint_weights(state, p) for state, (_, p) in zip(states, checkpoints, strict=True)
    ]
    mean = {
        key: torch.stack([w[key] for w in weights]).mean(0) if value.is_floating_point() else value
        for key, value in weights[-1].items()
    }
    path.parent.mkdir(exist_ok=True)
    return save_weights(path, mean, iterations[-1], checkpoint_network(states[-1])), iterations


def predict_swa(out: Path, count: int, device=None) -> tuple[dict, list[int]]:
    """Both parts predicted with :func:`stochastic_weight_average`; ``{part: run}``."""
    path, iterations = stochastic_weight_average(out, count)
    runs = {}
    for part in PARTS:
        (made,) = prepare_prediction_setups(out, EXPERIMENT, 0, part=part, checkpoint=path)
        try:
            predict_setup(made.path, device=device, progress=False)
        except PredictionRunExists:
            pass
        runs[part] = load_predict_setup(made.path)[0].run_name
    return runs, iterations


def class_priors(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The class frequencies the network's outputs are posteriors under (the training
    synapses' with logit adjustment, else uniform: batches are class-balanced), and the share
    of training neurons per class."""
    cfg, _ = load_train_setup(train_setup_dir(out, EXPERIMENT, 0))
    with open_database(cfg.database_url()) as db:
        train = training_synapses(db, cfg.split_name, cfg.classes, part="train")
    n = len(cfg.classes)
    synapses = np.bincount(train["label"], minlength=n).astype(float)
    neurons = np.bincount(train.groupby("skeleton_id")["label"].first(), minlength=n)
    return (synapses if cfg.logit_adjustment else np.ones(n)), neurons.astype(float) + 0.5


def _load(db_url: str, runs: dict) -> tuple[list[str], dict]:
    data, classes = {}, None
    with open_database(db_url) as db:
        for key, run in runs.items():
            classes, _, labelled = labelled_run(db, run)
            data[key] = (labelled, Labelled.from_table(labelled, classes))
    return classes, data


def _neuron_scores(data: Labelled, rule: str, priors) -> tuple[dict, np.ndarray]:
    neurons = neuron_decisions(data, rule, *priors)
    correct = (neurons["pred_idx"] == neurons["true_idx"]).to_numpy()
    confusion = confusion_matrix(neurons["true_idx"], neurons["pred_idx"], data.n_classes)
    scores = bootstrap_accuracy(neurons["neuron_id"].to_numpy(), correct)
    return {**scores, "balanced_accuracy": balanced_accuracy(confusion)}, correct


def _calibrated_log(test: Labelled, validation: Labelled) -> tuple[dict, np.ndarray]:
    """Test neurons by the summed log-probability after a class scaling fitted on the
    validation run of the same model (what ``synister calibrate`` stores)."""
    scaling = fit_class_scaling(logits_from_probabilities(validation.probabilities),
                                validation.true_idx)  # fmt: skip
    ids, calls = neuron_calls(test.neuron_ids, test.probabilities, scaling)
    truth = neuron_decisions(test, "vote")["true_idx"].to_numpy()  # sorted by neuron id too
    correct = calls == truth
    confusion = confusion_matrix(truth, calls, test.n_classes)
    scores = {**bootstrap_accuracy(ids, correct), "balanced_accuracy": balanced_accuracy(confusion)}
    return scores, correct


def _score_test(test: Labelled, table, validation, classes, priors) -> dict:
    """Scores of a pick on the test part; ``validation``: (table, Labelled) of the same model."""
    validation_table, validation_data = validation
    synapse = bootstrap_accuracy(test.neuron_ids, test.correct())
    synapse["balanced_accuracy"] = test.synapse_scores()["balanced_accuracy"]
    neuron, correct = {}, {}
    for rule in NEURON_RULES:
        neuron[rule], correct[rule] = _neuron_scores(test, rule, priors)
    neuron[CALIBRATED_LOG], correct[CALIBRATED_LOG] = _calibrated_log(test, validation_data)
    # the unclear call: thresholds chosen on the validation run of the same model
    chosen, _ = calibration_summary(validation_table, classes, None)
    thresholds = UnclearThresholds(**chosen["unclear"]["thresholds"])
    given, _ = calibration_summary(table, classes, None, thresholds=thresholds)
    unclear = {k: given["unclear"][k] for k in ("coverage", "accuracy", "n_confident", "n")}
    unclear["thresholds"] = thresholds.to_dict()
    return {"synapse": synapse, "neuron": neuron, "unclear": unclear}, correct


def ablation(out: Path, device=None) -> dict:
    """Predict what is missing, score every (weights, selection rule) pick on the test part,
    write ``ablation.json`` and ``ablation.md`` into ``out`` and return the record."""
    out = Path(out)
    summary = json.loads((out / "summary.json").read_text())
    runs = predict_every_checkpoint(out, device)
    last = max(i for _, _, i in runs)
    count = max(2, len({i for _, _, i in runs}) // 4)  # the last quarter of the checkpoints
    swa_runs, swa_iterations = predict_swa(out, count, device)
    runs.update({("swa", part, last): run for part, run in swa_runs.items()})
    db_url = f"sqlite:///{out / 'synister.db'}"
    classes, data = _load(db_url, runs)
    priors = class_priors(out)
    ceiling = summary["ceilings"]["test"]["image_ceiling"] or {}
    curve = []
    for (weights, part, iteration), (_, labelled) in sorted(data.items()):
        if part == "validation" and weights != "swa":
            test = data[weights, "test", iteration][1]
            curve.append(
                {
                    "weights": weights,
                    "iteration": iteration,
                    "validation": labelled.synapse_scores(),
                    "test": test.synapse_scores(),
                    "test_neuron": {
                        r: _neuron_scores(test, r, priors)[0]["accuracy"] for r in NEURON_RULES
                    },
                }
            )
    rows, correct_of = [], {}
    for weights in (*WEIGHTS, "swa"):
        candidates = [
            (i, d) for (w, p, i), (_, d) in data.items() if w == weights and p == PARTS[0]
        ]
        if not candidates:
            continue
        for rule in SELECTION_RULES if weights != "swa" else ("last",):
            iteration = choose_checkpoint(candidates, rule)
            table, test = data[weights, "test", iteration]
            scored, correct = _score_test(
                test, table, data[weights, "validation", iteration], classes, priors
            )
            correct_of[weights, rule] = (test, correct)
            rows.append({"weights": weights, "rule": rule, "iteration": iteration, **scored})
    base_test, base_correct = correct_of[BASELINE[:2]]
    for row in rows:
        test, correct = correct_of[row["weights"], row["rule"]]
        row["versus_today"] = {
            "synapse": float(row["synapse"]["accuracy"] - base_test.correct().mean()),
            "synapse_se": paired_difference_se(
                test.neuron_ids, test.correct(), base_test.correct()
            ),
        }
        neurons = np.unique(test.neuron_ids)
        for rule in ALL_RULES:
            row["versus_today"][f"neuron_{rule}"] = float(
                correct[rule].mean() - base_correct["vote"].mean()
            )
            row["versus_today"][f"neuron_{rule}_se"] = paired_difference_se(
                neurons, correct[rule], base_correct["vote"]
            )
        row["of_image_ceiling"] = {
            "synapse": _fraction(row["synapse"]["accuracy"], ceiling.get("synapse")),
            **{
                f"neuron_{r}": _fraction(row["neuron"][r]["accuracy"], ceiling.get("neuron"))
                for r in ALL_RULES
            },
        }
    record = {
        "preset": summary["preset"],
        "seed": summary["settings"]["seed"],
        "iterations": summary["iterations"],
        "ema_decay": summary["settings"].get("ema_decay"),
        "swa_iterations": swa_iterations,
        "priors": {"synapse": priors[0].tolist(), "neuron": priors[1].tolist()},
        "test_synapses": int(len(base_test.true_idx)),
        "test_neurons": int(len(np.unique(base_test.neuron_ids))),
        "ceilings": summary["ceilings"]["test"],
        "baseline": dict(zip(("weights", "rule", "neuron_rule"), BASELINE, strict=True)),
        "rows": rows,
        "curve": curve,
    }
    (out / "ablation.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "ablation.md").write_text(ablation_table(record))
    return record


def _fraction(value: float, of: float | None) -> float | None:
    return value / of if of and math.isfinite(of) else None


def _pm(score: dict) -> str:
    return f"{score['accuracy']:.3f} ± {score['se']:.3f}"


def _delta(row: dict, key: str) -> str:
    return f"{row['versus_today'][key]:+.3f} ± {row['versus_today'][key + '_se']:.3f}"


def ablation_table(record: dict) -> str:
    """The markdown tables of an ablation record."""
    ceiling = record["ceilings"]["image_ceiling"] or {}
    lines = [
        f"# Ablation: {record['preset']} preset, seed {record['seed']}, "
        f"{record['iterations']} iterations, EMA decay {record['ema_decay']}",
        "",
        f"Test part: {record['test_synapses']} synapses of {record['test_neurons']} neurons; "
        f"image-level ceiling synapse {ceiling.get('synapse', float('nan')):.3f}, neuron "
        f"{ceiling.get('neuron', float('nan')):.3f}. ± is the bootstrap standard error over "
        "test neurons; Δ is the difference to today's choice (raw weights, best validation "
        "synapse accuracy, majority vote) with its paired standard error. Calibrated log: "
        "the summed log-probability after one scale and one bias per class fitted on the "
        "validation run of the same model (synister calibrate's class scaling). swa: the mean "
        f"weights of iterations {', '.join(map(str, record['swa_iterations']))}.",
        "",
        "| weights | checkpoint rule | iteration | synapse | of ceiling | Δ synapse | neuron vote "
        "| neuron mean | neuron log | neuron bayes | neuron calibrated log | of ceiling (mean) "
        "| Δ neuron (mean) | of ceiling (calibrated log) | Δ neuron (calibrated log) "
        "| unclear: coverage, accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        frac = row["of_image_ceiling"]
        unclear = row["unclear"]
        lines.append(
            f"| {row['weights']} | {row['rule']} | {row['iteration']} | {_pm(row['synapse'])} "
            f"| {_text(frac['synapse'])} | {_delta(row, 'synapse')} "
            f"| {_pm(row['neuron']['vote'])} | {_pm(row['neuron']['mean'])} "
            f"| {_pm(row['neuron']['log'])} | {_pm(row['neuron']['bayes'])} "
            f"| {_pm(row['neuron'][CALIBRATED_LOG])} | {_text(frac['neuron_mean'])} "
            f"| {_delta(row, 'neuron_mean')} | {_text(frac['neuron_' + CALIBRATED_LOG])} "
            f"| {_delta(row, 'neuron_' + CALIBRATED_LOG)} "
            f"| {unclear['coverage']:.2f}, {unclear['accuracy']:.3f} |"
        )
    lines += [
        "",
        "Per checkpoint (validation synapse accuracy / NLL; test synapse, neuron by mean):",
        "",
        "| iteration | weights | validation synapse | balanced | NLL | test synapse | test "
        "neuron vote / mean / log / bayes |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in sorted(record["curve"], key=lambda p: (p["iteration"], p["weights"])):
        v, t, n = point["validation"], point["test"], point["test_neuron"]
        lines.append(
            f"| {point['iteration']} | {point['weights']} | {v['accuracy']:.3f} "
            f"| {v['balanced_accuracy']:.3f} | {v['nll']:.3f} | {t['accuracy']:.3f} "
            f"| {n['vote']:.3f} / {n['mean']:.3f} / {n['log']:.3f} / {n['bayes']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
