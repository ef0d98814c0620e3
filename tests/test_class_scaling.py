"""The class scaling of the neuron rule "calibrated log": its fit, and neuron calls it corrects."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from synister.evaluate.calibration import logits_from_probabilities
from synister.evaluate.class_scaling import ClassScaling, fit_class_scaling, neuron_calls
from synister.evaluate.selection import Labelled, neuron_decisions

SCALES = np.array([1.0, 0.5, 2.0])
BIASES = np.array([0.0, 1.0, -0.5])


def drawn(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Network probabilities p whose labels follow softmax(SCALES * log p + BIASES)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (n, 3))
    truth = softmax(np.log(softmax(logits, axis=1)) * SCALES + BIASES, axis=1)
    labels = (truth.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return softmax(logits, axis=1), labels


def test_the_fit_recovers_a_known_scaling_and_leaves_calibrated_data_alone():
    probabilities, labels = drawn(20_000, 0)
    fitted = fit_class_scaling(logits_from_probabilities(probabilities), labels)
    assert np.allclose(fitted.scales, SCALES, atol=0.1)
    assert np.allclose(fitted.biases, BIASES, atol=0.1) and fitted.biases[0] == 0.0

    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 2.0, (20_000, 3))
    truth = softmax(logits, axis=1)
    labels = (truth.cumsum(axis=1) > rng.random((len(logits), 1))).argmax(axis=1)
    identity = fit_class_scaling(np.log(truth), labels)
    assert np.allclose(identity.scales, 1.0, atol=0.06)
    assert np.allclose(identity.biases, 0.0, atol=0.06)


def test_a_class_without_validation_synapses_keeps_the_identity():
    probabilities, labels = drawn(5_000, 3)
    kept = labels != 2
    fitted = fit_class_scaling(logits_from_probabilities(probabilities[kept]), labels[kept])
    assert fitted.scales[2] == 1.0 and fitted.biases[2] == 0.0
    assert fitted.scales[1] == pytest.approx(SCALES[1], abs=0.15)


def test_a_class_the_network_underrates_is_called_right_at_neuron_level():
    """A network that gives class 2 too little probability loses class-2 neurons by vote and by
    the plain summed log; the class scaling fitted on a validation part wins them back."""
    rng = np.random.default_rng(2)

    def part(n_neurons: int) -> Labelled:
        ids = np.repeat(np.arange(n_neurons), 8)
        truth = ids % 3
        logits = rng.normal(0.0, 1.0, (len(ids), 3))
        logits[np.arange(len(ids)), truth] += 1.5
        logits[:, 2] -= 1.6  # what the network learned wrong
        return Labelled(ids, truth, softmax(logits, axis=1))

    validation, test = part(150), part(150)
    scaling = fit_class_scaling(
        logits_from_probabilities(validation.probabilities), validation.true_idx
    )
    ids, calls = neuron_calls(test.neuron_ids, test.probabilities, scaling)
    truth = ids % 3
    plain = neuron_decisions(test, "log")
    vote = neuron_decisions(test, "vote")
    plain_right = (plain["pred_idx"] == plain["true_idx"]).mean()
    vote_right = (vote["pred_idx"] == vote["true_idx"]).mean()
    assert (calls == truth).mean() > max(plain_right, vote_right) + 0.1
    assert (calls[truth == 2] == 2).mean() > 0.9


def test_a_bad_record_names_where_it_came_from():
    with pytest.raises(ValueError, match="model.calibration.json: not a class scaling"):
        ClassScaling.from_dict({"scales": [1.0, 1.0]}, "model.calibration.json")
    with pytest.raises(ValueError, match="scales must be positive"):
        ClassScaling((1.0, -1.0), (0.0, 0.0))
    with pytest.raises(ValueError, match="one scale and one bias per class"):
        ClassScaling((1.0, 1.0), (0.0,))
    with pytest.raises(ValueError, match="probabilities have 2 classes, the class scaling 3"):
        ClassScaling((1.0,) * 3, (0.0,) * 3).log_probabilities(np.full((1, 2), 0.5))
    scaling = ClassScaling((1.0, 2.0), (0.0, 0.5))
    assert ClassScaling.from_dict(scaling.to_dict(), "here") == scaling
