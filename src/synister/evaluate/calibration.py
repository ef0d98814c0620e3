"""Calibration of predicted probabilities and the neuron-level "unclear" decision, as pure
functions on arrays (no I/O; the figures are in :mod:`synister.evaluate.calibration_plots`).

Temperature scaling (Guo et al. 2017) divides a network's logits by one scalar ``T`` fitted by
minimising the negative log-likelihood on a validation set; it changes confidences, never the
argmax. Prediction runs store probabilities, not logits. ``log(p)`` is a valid logit vector:
it differs from the network's logits by a per-row constant (``log`` of the softmax
denominator), which softmax ignores, so ``softmax(log(p) / T)`` equals ``softmax(z / T)``.
Probabilities that underflowed to 0 (float32 softmax, logit gaps beyond ~87) are clipped to
:data:`PROBABILITY_FLOOR` first; for those entries the recovered logit is a lower bound.

Calibration measures follow the usual definitions: the expected calibration error uses
:data:`N_BINS` equal-width bins of the top-class probability over (0, 1] (a bin holds
``lower < p <= upper``) and weighs each bin's ``|accuracy - mean confidence|`` by its share of
the samples; the negative log-likelihood is the mean of ``-log p[true]`` (natural log, with the
same floor); the Brier score is the mean over samples of ``sum_c (p_c - [c == true])^2``
(Brier's multi-class form, between 0 and 2).

A neuron's distribution is the mean of its synapses' probabilities (``top_nt_conf`` of the
per-neuron tables is its top entry). A neuron call is *unclear* when that top probability is
below ``min_probability``, its margin to the runner-up below ``min_margin``, or the neuron has
fewer than ``min_synapses`` synapses; :func:`choose_unclear_thresholds` picks the three on a
validation run so that the confident calls reach a target accuracy with the largest coverage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import log_softmax, logsumexp

from ..neurons import NeuronSummary, summarize_synapses

#: Probabilities are clipped to this before taking logs (the smallest normal float32).
PROBABILITY_FLOOR = float(np.finfo(np.float32).tiny)
#: Equal-width bins of the expected calibration error and the reliability diagram.
N_BINS = 15
#: Accuracy the confident neuron calls should reach when thresholds are chosen.
DEFAULT_TARGET_ACCURACY = 0.95
#: Temperatures searched by :func:`fit_temperature` (a factor of 100 either way).
TEMPERATURE_BOUNDS = (0.01, 100.0)
#: Candidate thresholds of :func:`choose_unclear_thresholds`.
PROBABILITY_GRID = tuple(np.round(np.linspace(0.0, 1.0, 101), 2).tolist())
MIN_SYNAPSES_GRID = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000)


def _labels(labels, n_rows: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n_rows,):
        raise ValueError(f"labels must have shape ({n_rows},), got {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise ValueError(f"labels[{bad[0]}] = {labels[bad[0]]} is not a class in [0, {n_classes})")
    return labels.astype(np.int64, copy=False)


def _matrix(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ValueError(f"{name} must be (N, n_classes) with >= 2 classes, got {values.shape}")
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        row, col = bad[0]
        raise ValueError(f"{name}[{row}, {col}] is not finite ({values[row, col]})")
    return values


def _probabilities(probabilities) -> np.ndarray:
    probabilities = _matrix(probabilities, "probabilities")
    bad = np.argwhere((probabilities < 0) | (probabilities > 1 + 1e-6))
    if bad.size:
        row, col = bad[0]
        raise ValueError(
            f"probabilities[{row}, {col}] = {probabilities[row, col]} lies outside [0, 1]"
        )
    return probabilities


def _temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    return temperature


def logits_from_probabilities(probabilities) -> np.ndarray:
    """``log(p)``, clipped at :data:`PROBABILITY_FLOOR`: the logits up to a per-row constant."""
    return np.log(np.maximum(_probabilities(probabilities), PROBABILITY_FLOOR))


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """Softmax of ``logits / temperature`` along the class axis."""
    logits = _matrix(logits, "logits")
    return np.exp(log_softmax(logits / _temperature(temperature), axis=1))


def apply_temperature(probabilities, temperature: float) -> np.ndarray:
    """Stored probabilities as if the network's logits had been divided by ``temperature``.

    ``temperature=1`` returns them unchanged (up to the floor); ``apply_temperature(p, 1 / T)``
    undoes a temperature ``T`` applied at prediction.
    """
    return softmax(logits_from_probabilities(probabilities), temperature)


def _nll_of_logits(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    rows = np.arange(len(labels))
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[rows, labels]))


def fit_temperature(logits, labels, *, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature ``T`` in ``bounds`` that minimises the mean negative log-likelihood of
    ``softmax(logits / T)`` for ``labels``.

    The likelihood is convex in ``1 / T``, so a bounded scalar search (on ``log T``) finds the
    global minimum. Pass :func:`logits_from_probabilities` of stored probabilities to fit on a
    prediction run. A result at a bound means the data ask for a more extreme temperature.
    """
    from scipy.optimize import minimize_scalar  # 1 s to import: only where a fit is made

    logits = _matrix(logits, "logits")
    labels = _labels(labels, len(logits), logits.shape[1])
    if not len(labels):
        raise ValueError("cannot fit a temperature on zero samples")
    low, high = (float(b) for b in bounds)
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    result = minimize_scalar(
        lambda log_t: _nll_of_logits(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(low), np.log(high)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def cross_validated_temperature(logits, labels, groups, *, folds: int = 5, seed: int = 0) -> dict:
    """Whether a fitted temperature generalises: :func:`fit_temperature` on all samples, and the
    mean negative log-likelihood of ``folds``-fold cross-validation (folds of whole ``groups``,
    e.g. neurons, whose synapses are alike) with the temperature fitted on the other folds
    against that of temperature 1.

    ``temperature`` is the fitted one where it beats 1 out of sample, else 1.0 (with few
    validation samples a fitted temperature often only follows their noise). Returns
    temperature, fitted, folds, cv_nll_fitted, cv_nll_one, kept_at_one.
    """
    logits = _matrix(logits, "logits")
    labels = _labels(labels, len(logits), logits.shape[1])
    groups = np.asarray(groups).reshape(-1)
    if groups.shape != labels.shape:
        raise ValueError(
            f"groups must have one entry per sample ({len(labels)}), got {groups.size}"
        )
    fitted = fit_temperature(logits, labels)
    names, group_index = np.unique(groups, return_inverse=True)
    folds = min(int(folds), len(names))
    if folds < 2:
        return {"temperature": fitted, "fitted": fitted, "folds": folds, "cv_nll_fitted": None,
                "cv_nll_one": None, "kept_at_one": False}  # fmt: skip
    fold_of_group = np.random.default_rng(seed).permutation(len(names)) % folds
    fold = fold_of_group[group_index.reshape(-1)]
    loss_fitted = loss_one = 0.0
    for k in range(folds):
        train, test = fold != k, fold == k
        temperature = fit_temperature(logits[train], labels[train])
        loss_fitted += _nll_of_logits(logits[test], labels[test], temperature) * test.sum()
        loss_one += _nll_of_logits(logits[test], labels[test], 1.0) * test.sum()
    loss_fitted, loss_one = loss_fitted / len(labels), loss_one / len(labels)
    kept = bool(loss_fitted >= loss_one)
    return {
        "temperature": 1.0 if kept else fitted,
        "fitted": fitted,
        "folds": folds,
        "cv_nll_fitted": float(loss_fitted),
        "cv_nll_one": float(loss_one),
        "kept_at_one": kept,
    }


def negative_log_likelihood(probabilities, labels) -> float:
    """Mean ``-log p[true]`` (nats); NaN without samples."""
    probabilities = _probabilities(probabilities)
    labels = _labels(labels, len(probabilities), probabilities.shape[1])
    if not len(labels):
        return float("nan")
    true_p = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(true_p, PROBABILITY_FLOOR))))


def brier_score(probabilities, labels) -> float:
    """Mean over samples of ``sum_c (p_c - [c == true])^2`` (0 best, 2 worst); NaN without
    samples."""
    probabilities = _probabilities(probabilities)
    labels = _labels(labels, len(probabilities), probabilities.shape[1])
    if not len(labels):
        return float("nan")
    one_hot = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1)))


def reliability_bins(probabilities, labels, n_bins: int = N_BINS) -> list[dict]:
    """Per equal-width bin of the top-class probability (``lower < p <= upper``; the first bin
    also holds 0): its bounds, sample count, mean confidence and accuracy (NaN when empty)."""
    probabilities = _probabilities(probabilities)
    labels = _labels(labels, len(probabilities), probabilities.shape[1])
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin b holds edges[b] < p <= edges[b + 1]
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    sum_conf = np.bincount(index, weights=confidence, minlength=n_bins)
    sum_correct = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, sum_conf / np.maximum(counts, 1), np.nan)
        accuracy = np.where(counts > 0, sum_correct / np.maximum(counts, 1), np.nan)
    return [
        {
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "n": int(counts[b]),
            "confidence": float(mean_conf[b]),
            "accuracy": float(accuracy[b]),
        }
        for b in range(n_bins)
    ]


def ece_from_bins(bins: Sequence[dict]) -> float:
    """Expected calibration error of :func:`reliability_bins`' output; NaN without samples."""
    total = sum(b["n"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["n"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]))


def expected_calibration_error(probabilities, labels, n_bins: int = N_BINS) -> float:
    """Sample-weighted mean ``|accuracy - confidence|`` over ``n_bins`` equal-width bins."""
    return ece_from_bins(reliability_bins(probabilities, labels, n_bins))


def calibration_metrics(probabilities, labels, n_bins: int = N_BINS) -> dict:
    """n, accuracy, ECE, NLL, Brier score and the reliability bins of one set of predictions."""
    probabilities = _probabilities(probabilities)
    labels = _labels(labels, len(probabilities), probabilities.shape[1])
    bins = reliability_bins(probabilities, labels, n_bins)
    n = len(labels)
    return {
        "n": n,
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)) if n else float("nan"),
        "ece": ece_from_bins(bins),
        "nll": negative_log_likelihood(probabilities, labels),
        "brier": brier_score(probabilities, labels),
        "bins": bins,
    }


# ---- neurons ------------------------------------------------------------------------------


#: per neuron (sorted by id): synapse count, mean probability per class, the top class, its
#: mean probability, the runner-up and the margin between the two (the one neuron summary)
NeuronScores = NeuronSummary


def neuron_scores(neuron_ids, probabilities) -> NeuronScores:
    """Mean synapse probabilities per neuron; ties of the top class go to the first class."""
    probabilities = _probabilities(probabilities)
    neuron_ids = np.asarray(neuron_ids)
    if neuron_ids.shape != (len(probabilities),):
        raise ValueError(
            f"neuron_ids must have one entry per probability row ({len(probabilities)}), got "
            f"shape {neuron_ids.shape}"
        )
    return summarize_synapses(neuron_ids, probabilities)


@dataclass(frozen=True)
class UnclearThresholds:
    """A neuron call is confident when all three hold: top-class mean probability >=
    ``min_probability``, margin to the runner-up >= ``min_margin``, synapses >= ``min_synapses``.
    ``target_missed``: no thresholds reached the target accuracy on the run they were chosen
    on, so no call is confident (a call at chance accuracy is no confident call)."""

    min_probability: float = 0.0
    min_margin: float = 0.0
    min_synapses: int = 1
    target_missed: bool = False

    def __post_init__(self) -> None:
        for name in ("min_probability", "min_margin"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.min_synapses < 0:
            raise ValueError(f"min_synapses must be >= 0, got {self.min_synapses}")

    def confident(self, top_probability, margin, n_synapses) -> np.ndarray:
        """Boolean per neuron: True where the call is confident, False where it is unclear."""
        if self.target_missed:
            return np.zeros(np.shape(top_probability), dtype=bool)
        return (
            (np.asarray(top_probability) >= self.min_probability - 1e-12)
            & (np.asarray(margin) >= self.min_margin - 1e-12)
            & (np.asarray(n_synapses) >= self.min_synapses)
        )

    def to_dict(self) -> dict:
        return asdict(self)


def selective_accuracy(confident, correct) -> dict:
    """Coverage (fraction confident), count and accuracy of the confident calls."""
    confident = np.asarray(confident, dtype=bool)
    correct = np.asarray(correct, dtype=bool)
    if confident.shape != correct.shape:
        raise ValueError(
            f"confident and correct differ in shape ({confident.shape}, {correct.shape})"
        )
    n = int(confident.sum())
    return {
        "n": int(confident.size),
        "n_confident": n,
        "n_unclear": int(confident.size - n),
        "coverage": n / confident.size if confident.size else float("nan"),
        "accuracy": float(correct[confident].mean()) if n else float("nan"),
    }


def risk_coverage_curve(scores, correct, max_points: int = 200) -> dict:
    """Accuracy of the confident calls against coverage when only the calls whose ``score`` is
    among the highest are kept (the risk-coverage curve of selective classification, with
    accuracy = 1 - risk). Calls of equal score are kept or dropped together.

    Returns ``coverage``, ``accuracy`` and the ``threshold`` (lowest kept score) per point, from
    the highest threshold down, thinned to about ``max_points``.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if scores.shape != correct.shape:
        raise ValueError(f"scores and correct differ in length ({scores.size}, {correct.size})")
    if not scores.size:
        return {"coverage": [], "accuracy": [], "threshold": []}
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    hits = np.cumsum(correct[order])
    # the last index of each run of equal scores: equal scores share one threshold
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    if len(ends) > max_points:
        ends = np.unique(np.r_[ends[:: int(np.ceil(len(ends) / max_points))], ends[-1]])
    kept = ends + 1
    return {
        "coverage": (kept / scores.size).tolist(),
        "accuracy": (hits[ends] / kept).tolist(),
        "threshold": sorted_scores[ends].tolist(),
    }


def choose_unclear_thresholds(
    top_probability,
    margin,
    n_synapses,
    correct,
    *,
    target_accuracy: float = DEFAULT_TARGET_ACCURACY,
    probability_grid: Sequence[float] = PROBABILITY_GRID,
    margin_grid: Sequence[float] = PROBABILITY_GRID,
    min_synapses_grid: Sequence[int] = MIN_SYNAPSES_GRID,
) -> dict:
    """The thresholds (from the grids) under which the confident calls of these neurons reach
    ``target_accuracy`` with the most neurons confident.

    Among choices of equal coverage the one with the higher accuracy wins, then the least strict
    (smaller ``min_synapses``, then ``min_probability``, then ``min_margin``). When no choice
    reaches the target, the one with the highest accuracy (then coverage) is returned with
    ``reached`` False. Returns ``thresholds`` (:class:`UnclearThresholds` as a dict),
    ``target_accuracy``, ``reached`` and the :func:`selective_accuracy` of the choice.
    """
    top_probability = np.asarray(top_probability, dtype=np.float64).reshape(-1)
    margin = np.asarray(margin, dtype=np.float64).reshape(-1)
    n_synapses = np.asarray(n_synapses).reshape(-1)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    if not (top_probability.shape == margin.shape == n_synapses.shape == correct.shape):
        raise ValueError("top_probability, margin, n_synapses and correct must have one length")
    if not 0.0 < target_accuracy <= 1.0:
        raise ValueError(f"target_accuracy must lie in (0, 1], got {target_accuracy}")
    if not top_probability.size:
        raise ValueError("cannot choose thresholds without neurons")
    probs = np.sort(np.asarray(probability_grid, dtype=np.float64))
    margins = np.sort(np.asarray(margin_grid, dtype=np.float64))
    sizes = sorted({int(s) for s in min_synapses_grid if s <= max(1, n_synapses.max())} | {1})

    tol = 1e-12
    by_probability = top_probability[None, :] >= probs[:, None] - tol  # (P, N)
    by_margin = (margin[None, :] >= margins[:, None] - tol).astype(np.int64).T  # (N, M)
    kept, hits = [], []
    for size in sizes:
        a = (by_probability & (n_synapses >= size)).astype(np.int64)  # (P, N)
        kept.append(a @ by_margin)  # (P, M): confident neurons
        hits.append((a * correct) @ by_margin)  # (P, M): confident and correct
    kept, hits = np.stack(kept).ravel(), np.stack(hits).ravel()  # (S * P * M,)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(kept > 0, hits / np.maximum(kept, 1), -1.0)
    ok = (acc >= target_accuracy - tol) & (kept > 0)
    size_of, p_of, m_of = (g.ravel() for g in np.meshgrid(sizes, probs, margins, indexing="ij"))
    # the last in lexsort order wins: target reached, then coverage and accuracy (reached) or
    # accuracy and coverage (not reached), then the least strict thresholds
    first = np.where(ok, kept, acc)
    second = np.where(ok, acc, kept)
    best = np.lexsort((-m_of, -p_of, -size_of, second, first, ok))[-1]
    thresholds = UnclearThresholds(float(p_of[best]), float(m_of[best]), int(size_of[best]))
    confident = thresholds.confident(top_probability, margin, n_synapses)
    return {
        "thresholds": thresholds.to_dict(),
        "target_accuracy": float(target_accuracy),
        "reached": bool(ok[best]),
        **selective_accuracy(confident, correct),
    }
