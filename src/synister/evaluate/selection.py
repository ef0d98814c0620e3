"""Choosing the final model among checkpoints, neuron-level decision rules, and bootstrap
errors that resample neurons.

Why: a validation part of a few hundred synapses from a few dozen neurons makes "the
checkpoint with the best validation accuracy" a noisy pick (one synapse can decide it), and
synapses of one neuron are not independent, so errors must resample neurons, not synapses.
Pure functions on arrays (labelled synapses as :func:`~synister.evaluate.metrics.
label_predictions` returns them, with raw probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..neurons import summarize_synapses
from .metrics import aggregate_predictions, balanced_accuracy, confusion_matrix, prob_columns

#: neuron-level rules: majority vote, argmax of the mean probability, argmax of the summed
#: log-probability (a temperature does not change its argmax), and that sum with the class
#: prior the synapse probabilities hold counted once (see :func:`neuron_decisions`)
NEURON_RULES = ("vote", "mean", "log", "bayes")
#: checkpoint choices: best synapse accuracy (earliest on ties; the original's), lowest negative
#: log-likelihood, best balanced accuracy, the latest unless an earlier one beats it by more
#: than the bootstrap standard error of the difference, the latest
SELECTION_RULES = ("accuracy", "nll", "balanced", "margin", "last")
#: the rule the demo and ``export-model --iteration best`` choose the final model by
DEFAULT_RULE = "margin"
#: each rule in words (for a bundle's provenance)
RULE_WORDS = {
    "accuracy": "the best synapse accuracy, the earliest on ties: the original's",
    "nll": "the lowest negative log-likelihood",
    "balanced": "the best balanced accuracy",
    "margin": "the latest, unless an earlier one is better by more than the bootstrap standard "
    "error of the difference",
    "last": "the latest",
}
_PROBABILITY_FLOOR = 1e-12
_BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Labelled:
    """One run's labelled synapses as arrays: neuron (skeleton) ids, true classes, raw
    probabilities (n, classes)."""

    neuron_ids: np.ndarray
    true_idx: np.ndarray
    probabilities: np.ndarray

    @classmethod
    def from_table(cls, labelled: pd.DataFrame, classes: Sequence[str]) -> Labelled:
        return cls(
            labelled["skeleton_id"].to_numpy(dtype=np.int64),
            labelled["true_idx"].to_numpy(dtype=np.int64),
            labelled[prob_columns(classes)].to_numpy(dtype=np.float64),
        )

    @property
    def n_classes(self) -> int:
        return self.probabilities.shape[1]

    def correct(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1) == self.true_idx

    def nll(self) -> float:
        """Mean negative log-likelihood of the true class per synapse."""
        rows = np.arange(len(self.true_idx))
        p = np.maximum(self.probabilities[rows, self.true_idx], _PROBABILITY_FLOOR)
        return float(-np.log(p).mean())

    def synapse_scores(self) -> dict:
        pred = self.probabilities.argmax(axis=1)
        confusion = confusion_matrix(self.true_idx, pred, self.n_classes)
        return {
            "accuracy": float(self.correct().mean()),
            "balanced_accuracy": balanced_accuracy(confusion),
            "nll": self.nll(),
        }


def neuron_decisions(
    data: Labelled,
    rule: str,
    synapse_prior: np.ndarray | None = None,
    neuron_prior: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per neuron (sorted by id): n_synapses, true class, predicted class under ``rule``.

    ``vote`` breaks a tied vote by the summed probability (synister's default), the others take
    the first class of equal maxima. ``bayes``: synapse probabilities are posteriors under
    the class frequencies ``synapse_prior`` (those of the training synapses when the network
    was trained with logit adjustment; uniform for class-balanced training), so the summed
    log-probability of a neuron of n synapses counts that prior n times; ``bayes`` divides it
    out and counts ``neuron_prior`` (the share of neurons per class) once: the neuron's
    posterior if its synapses were independent given its class.
    """
    if rule not in NEURON_RULES:
        raise ValueError(f"neuron rule must be one of {NEURON_RULES}, got {rule!r}")
    if rule == "bayes" and (synapse_prior is None or neuron_prior is None):
        raise ValueError("the bayes rule needs the synapse and the neuron class priors")
    if rule in ("vote", "mean"):  # the evaluation's own neuron rules
        groups = aggregate_predictions(
            data.neuron_ids, data.true_idx, data.probabilities, method=rule
        )
        return groups.rename(columns={"group_id": "neuron_id"})[
            ["neuron_id", "n_synapses", "true_idx", "pred_idx"]
        ]
    decided = aggregate_predictions(data.neuron_ids, data.true_idx, data.probabilities)
    log = summarize_synapses(
        data.neuron_ids, np.log(np.maximum(data.probabilities, _PROBABILITY_FLOOR))
    ).sums
    if rule == "bayes":
        counts = decided["n_synapses"].to_numpy()[:, None]
        log = log - counts * _log(synapse_prior) + _log(neuron_prior)
    decided["pred_idx"] = log.argmax(axis=1).astype(np.int64)
    return decided.rename(columns={"group_id": "neuron_id"})[
        ["neuron_id", "n_synapses", "true_idx", "pred_idx"]
    ]


def _log(prior: np.ndarray) -> np.ndarray:
    prior = np.asarray(prior, dtype=np.float64)
    return np.log(np.maximum(prior / prior.sum(), _PROBABILITY_FLOOR))[None, :]


def _resampled_ratios(sums: np.ndarray, sizes: np.ndarray, resamples: int, seed: int):
    """sum(sums) / sum(sizes) over ``resamples`` draws of the groups with replacement, in
    chunks of at most ~10 M drawn indices (bounded memory for any number of groups)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, 10_000_000 // max(len(sizes), 1))
    values = []
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, len(sizes), size=(min(chunk, resamples - start), len(sizes)))
        values.append(sums[draws].sum(axis=1) / sizes[draws].sum(axis=1))
    return np.concatenate(values)


def _per_group(groups: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    inverse = inverse.reshape(-1)
    return np.bincount(inverse, weights=values), np.bincount(inverse).astype(np.float64)


def bootstrap_accuracy(
    groups: np.ndarray,
    correct: np.ndarray,
    *,
    resamples: int = _BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Accuracy of ``correct`` (one entry per item) with its bootstrap standard error and
    percentile confidence interval, resampling the ``groups`` (neurons) with replacement:
    items of one group rise and fall together, so resampling items would understate the error.
    For neuron-level accuracy pass one item per neuron."""
    groups = np.asarray(groups)
    correct = np.asarray(correct, dtype=np.float64)
    if groups.shape != correct.shape:
        raise ValueError(f"groups and correct differ in shape ({groups.shape}, {correct.shape})")
    if not correct.size:
        nan = float("nan")
        return {"accuracy": nan, "se": nan, "ci": [nan, nan], "level": level, "n_groups": 0}
    hits, sizes = _per_group(groups, correct)
    values = _resampled_ratios(hits, sizes, resamples, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return {
        "accuracy": float(correct.mean()),
        "se": float(values.std(ddof=1)),
        "ci": [float(low), float(high)],
        "level": level,
        "n_groups": int(len(sizes)),
    }


def paired_difference_se(
    groups: np.ndarray,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    resamples: int = _BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> float:
    """Bootstrap standard error (resampling groups) of accuracy(a) - accuracy(b) on the same
    items: the noise of comparing two checkpoints on one validation part."""
    difference = np.asarray(correct_a, dtype=np.float64) - np.asarray(correct_b, dtype=np.float64)
    sums, sizes = _per_group(groups, difference)
    return float(_resampled_ratios(sums, sizes, resamples, seed).std(ddof=1))


def choose_checkpoint(candidates: Sequence[tuple[int, Labelled]], rule: str) -> int:
    """The iteration ``rule`` (one of :data:`SELECTION_RULES`) picks among ``(iteration,
    validation data)`` candidates, which must predict the same synapses in the same order."""
    if rule not in SELECTION_RULES:
        raise ValueError(f"selection rule must be one of {SELECTION_RULES}, got {rule!r}")
    if not candidates:
        raise ValueError("no checkpoint to choose from")
    ordered = sorted(candidates, key=lambda item: item[0])
    scores = [data.synapse_scores() for _, data in ordered]
    if rule == "last":
        return ordered[-1][0]
    if rule == "nll":
        return ordered[int(np.argmin([s["nll"] for s in scores]))][0]
    key = "balanced_accuracy" if rule == "balanced" else "accuracy"
    best = int(np.argmax([s[key] for s in scores]))  # the first of equal maxima: earliest
    if rule != "margin":
        return ordered[best][0]
    last_iteration, last = ordered[-1]
    best_iteration, best_data = ordered[best]
    gain = scores[best]["accuracy"] - scores[-1]["accuracy"]
    noise = paired_difference_se(last.neuron_ids, best_data.correct(), last.correct())
    return best_iteration if gain > noise else last_iteration
