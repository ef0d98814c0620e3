"""Per-class calibration for the neuron-level summed log-probability ("calibrated log").

Why: the summed log-probability of a neuron's synapses is the neuron's posterior if its
synapses are independent given its class, but only with probabilities that are right per
class; a temperature (one scalar) leaves the class-to-class balance as the network learned it,
and a sum over n synapses multiplies any per-class bias by n. Dirichlet calibration with a
diagonal matrix (Kull et al. 2019; vector scaling, Guo et al. 2017, on log-probabilities rather
than logits, which prediction runs do not store) fits, on a validation run, one scale and one
bias per class to ``log p`` by the synapses' negative log-likelihood; the neuron's call is then
``argmax_c sum_i log softmax(a * log p_i + b)_c``. The first class's bias is held
at 0 (softmax ignores a common shift) and a small penalty keeps the bias of a class the
validation run barely holds near the identity.

Unlike the temperature, the fit is not checked by cross-validation over neurons: the rarest
classes have one or two neurons in a validation part (FAFB's serotonin and octopamine), and a
fold without them cannot say anything about their parameters. What it gives was measured on the
held-out test parts of several trainings instead (docs/explanation/accuracy-fafb.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax

from ..neurons import summarize_synapses
from . import calibration as cal

#: L2 penalties on the biases and the log scales (added to the mean NLL per synapse): they keep
#: a class the validation run barely holds near the identity.
BIAS_PENALTY = SCALE_PENALTY = 1e-3


@dataclass(frozen=True)
class ClassScaling:
    """One scale and one bias per class, applied to ``log p``."""

    scales: tuple[float, ...]
    biases: tuple[float, ...]

    def __post_init__(self) -> None:
        scales = np.asarray(self.scales, dtype=np.float64)
        biases = np.asarray(self.biases, dtype=np.float64)
        if scales.ndim != 1 or scales.shape != biases.shape or scales.size < 2:
            raise ValueError(
                f"class scaling needs one scale and one bias per class (>= 2), got "
                f"{scales.size} scales and {biases.size} biases"
            )
        if not (np.isfinite(scales).all() and np.isfinite(biases).all() and (scales > 0).all()):
            raise ValueError("class scaling: scales must be positive and finite, biases finite")

    def log_probabilities(self, probabilities) -> np.ndarray:
        """Calibrated log-probabilities (N, classes) of stored probabilities."""
        logits = cal.logits_from_probabilities(probabilities)
        if logits.shape[1] != len(self.scales):
            raise ValueError(
                f"probabilities have {logits.shape[1]} classes, the class scaling "
                f"{len(self.scales)}"
            )
        return log_softmax(logits * np.asarray(self.scales) + np.asarray(self.biases), axis=1)

    def to_dict(self) -> dict:
        return {"scales": list(self.scales), "biases": list(self.biases)}

    @classmethod
    def from_dict(cls, record: dict, where: str) -> ClassScaling:
        """From :meth:`to_dict`'s record; a ``ValueError`` naming ``where`` if it is bad."""
        try:
            return cls(tuple(map(float, record["scales"])), tuple(map(float, record["biases"])))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{where}: not a class scaling ({error})") from None


def _nll(params: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Penalised mean NLL of vector scaling and its gradient; params: log scales, then the
    biases of classes 1.."""
    k = logits.shape[1]
    scales = np.exp(params[:k])
    biases = np.concatenate([[0.0], params[k:]])
    log_p = log_softmax(logits * scales + biases, axis=1)
    n = len(labels)
    rows = np.arange(n)
    residual = np.exp(log_p)
    residual[rows, labels] -= 1.0  # d NLL / d z per sample
    residual /= n
    grad_scales = (residual * logits).sum(axis=0) * scales + 2 * SCALE_PENALTY * params[:k]
    grad_biases = residual.sum(axis=0)[1:] + 2 * BIAS_PENALTY * biases[1:]
    loss = -log_p[rows, labels].mean() + BIAS_PENALTY * (biases**2).sum()
    loss += SCALE_PENALTY * (params[:k] ** 2).sum()
    return float(loss), np.concatenate([grad_scales, grad_biases])


def fit_class_scaling(logits, labels) -> ClassScaling:
    """One scale and one bias per class for ``logits`` (e.g. ``log p``) fitted to ``labels``
    by the penalised mean negative log-likelihood, starting at the identity; a class that no
    label names keeps scale 1 and bias 0."""
    from scipy.optimize import minimize  # 1 s to import: only where a fit is made

    logits = cal._matrix(logits, "logits")
    labels = cal._labels(labels, len(logits), logits.shape[1])
    if not len(labels):
        raise ValueError("cannot fit a class scaling on zero samples")
    k = logits.shape[1]
    # a class without a validation synapse keeps the identity: nothing says how to change it
    present = np.bincount(labels, minlength=k) > 0
    scale_bounds = [(-5.0, 5.0) if p else (0.0, 0.0) for p in present]
    bias_bounds = [(None, None) if p else (0.0, 0.0) for p in present[1:]]
    result = minimize(
        _nll, np.zeros(2 * k - 1), args=(logits, labels), jac=True, method="L-BFGS-B",
        bounds=scale_bounds + bias_bounds,
    )  # fmt: skip
    return ClassScaling(tuple(np.exp(result.x[:k]).tolist()), tuple([0.0, *result.x[k:].tolist()]))


def neuron_calls(neuron_ids, probabilities, scaling: ClassScaling) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron (sorted ids): its id and the class of the largest summed calibrated
    log-probability of its synapses."""
    summary = summarize_synapses(np.asarray(neuron_ids), scaling.log_probabilities(probabilities))
    return summary.neuron_ids, summary.sums.argmax(axis=1)
