"""Calibration measures against hand-computed numbers, temperature fitting on data with a known
temperature, and the choice of the neuron-level "unclear" thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synister.evaluate import calibration as cal
from synister.evaluate.calibration_plots import plot_reliability, plot_risk_coverage

# confidence 0.9 (right), 0.62 (wrong), 0.7 (right), 0.55 (right), 0.88 (wrong)
PROBS = np.array([[0.9, 0.1], [0.62, 0.38], [0.3, 0.7], [0.55, 0.45], [0.88, 0.12]])
LABELS = np.array([0, 1, 1, 0, 1])


def test_ece_nll_brier_match_hand_computed_values():
    # bins of width 1/15: 0.9 and 0.88 share (0.867, 0.933] (accuracy 1/2, confidence 0.89);
    # 0.62, 0.7 and 0.55 have a bin each
    assert cal.expected_calibration_error(PROBS, LABELS) == pytest.approx(
        (2 * 0.39 + 0.62 + 0.3 + 0.45) / 5
    )
    nll = -(math.log(0.9) + math.log(0.38) + math.log(0.7) + math.log(0.55) + math.log(0.12)) / 5
    assert cal.negative_log_likelihood(PROBS, LABELS) == pytest.approx(nll)
    brier = (0.02 + 2 * 0.62**2 + 2 * 0.3**2 + 2 * 0.45**2 + 2 * 0.88**2) / 5
    assert cal.brier_score(PROBS, LABELS) == pytest.approx(brier)
    bins = cal.reliability_bins(PROBS, LABELS)
    assert len(bins) == 15 and sum(b["n"] for b in bins) == 5
    assert bins[13] == pytest.approx(
        {"lower": 13 / 15, "upper": 14 / 15, "n": 2, "confidence": 0.89, "accuracy": 0.5}
    )
    assert math.isnan(bins[0]["accuracy"]) and bins[0]["n"] == 0


def test_bin_edges_are_left_open_and_zero_joins_the_first_bin():
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])
    bins = cal.reliability_bins(probs, np.array([0, 0, 1]), n_bins=4)
    assert [b["n"] for b in bins] == [0, 1, 1, 1]  # 0.5 closes (0.25, 0.5]; 0.75 (0.5, 0.75]
    perfect = cal.calibration_metrics(np.eye(3), np.arange(3))
    assert perfect["ece"] == 0 and perfect["brier"] == 0 and perfect["accuracy"] == 1
    assert perfect["nll"] == pytest.approx(0, abs=1e-12)


def test_bad_inputs_name_the_entry():
    with pytest.raises(ValueError, match=r"labels\[1\] = 2"):
        cal.negative_log_likelihood(PROBS[:2], np.array([0, 2]))
    with pytest.raises(ValueError, match=r"probabilities\[0, 1\] is not finite"):
        cal.brier_score(np.array([[0.5, np.nan]]), np.array([0]))
    with pytest.raises(ValueError, match="temperature must be a positive"):
        cal.apply_temperature(PROBS, 0.0)
    with pytest.raises(ValueError, match="zero samples"):
        cal.fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))


def sampled(temperature: float, n: int = 20_000, seed: int = 0):
    """Logits of an over- or under-confident network: labels are drawn from
    softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (n, 6)) + 2.0 * np.eye(6)[rng.integers(0, 6, n)]
    p = cal.softmax(logits, temperature)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return logits, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_a_known_temperature_within_5_percent(temperature):
    logits, labels = sampled(temperature)
    fitted = cal.fit_temperature(logits, labels)
    assert fitted == pytest.approx(temperature, rel=0.05)
    # from stored float32 probabilities (log p = logits up to a per-row constant): the same fit
    stored = cal.softmax(logits).astype(np.float32)
    from_probabilities = cal.fit_temperature(cal.logits_from_probabilities(stored), labels)
    assert from_probabilities == pytest.approx(fitted, rel=1e-3)
    # and the fit lowers the validation NLL of the stored probabilities (or keeps it at T=1)
    before = cal.negative_log_likelihood(stored, labels)
    after = cal.negative_log_likelihood(cal.apply_temperature(stored, fitted), labels)
    assert after <= before + 1e-9


def test_apply_temperature_keeps_the_argmax_and_can_be_undone():
    rng = np.random.default_rng(1)
    probs = cal.softmax(rng.normal(0, 2, (50, 4)))
    hotter = cal.apply_temperature(probs, 2.0)
    assert (hotter.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert (hotter.max(axis=1) <= probs.max(axis=1) + 1e-12).all()
    assert np.allclose(cal.apply_temperature(hotter, 0.5), probs)
    assert np.allclose(hotter.sum(axis=1), 1)


def test_neuron_scores_are_means_with_margin_to_the_runner_up():
    ids = np.array([7, 3, 7, 3, 7])
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.4, 0.5, 0.1], [0.3, 0.3, 0.4],
                      [0.5, 0.4, 0.1]])  # fmt: skip
    scores = cal.neuron_scores(ids, probs)
    assert scores.neuron_ids.tolist() == [3, 7]
    assert scores.n_synapses.tolist() == [2, 3]
    assert scores.mean_probabilities[1] == pytest.approx([0.5, 0.4, 0.1])
    assert scores.top_idx.tolist() == [2, 0]
    assert scores.top_probability == pytest.approx([0.5, 0.5])
    assert scores.runner_up_idx.tolist() == [0, 1]  # neuron 3: gaba and ach tie at 0.25
    assert scores.margin == pytest.approx([0.25, 0.1])


def test_risk_coverage_keeps_equal_scores_together():
    curve = cal.risk_coverage_curve([0.5, 0.8, 0.9, 0.8], [False, False, True, True])
    assert curve["coverage"] == pytest.approx([0.25, 0.75, 1.0])
    assert curve["accuracy"] == pytest.approx([1.0, 2 / 3, 0.5])
    assert curve["threshold"] == pytest.approx([0.9, 0.8, 0.5])


def brute_force_best_coverage(top, margin, n, correct, target):
    best = 0
    for s in cal.MIN_SYNAPSES_GRID:
        for p in cal.PROBABILITY_GRID:
            for m in cal.PROBABILITY_GRID[::5]:
                keep = (top >= p - 1e-12) & (margin >= m - 1e-12) & (n >= s)
                if keep.sum() and correct[keep].mean() >= target:
                    best = max(best, int(keep.sum()))
    return best


def calibrated_neurons(n: int, seed: int):
    """Neurons whose call is right with probability = their top-class probability; small
    neurons (< 10 synapses) are right only half the time whatever their probability."""
    rng = np.random.default_rng(seed)
    top = rng.uniform(0.3, 1.0, n)
    margin = top * rng.uniform(0.2, 1.0, n)
    size = rng.integers(1, 60, n)
    right = np.where(size >= 10, top, 0.5)
    correct = rng.random(n) < right
    return top, margin, size, correct


def test_thresholds_reach_the_target_with_the_largest_coverage():
    top, margin, size, correct = calibrated_neurons(400, seed=2)
    choice = cal.choose_unclear_thresholds(
        top, margin, size, correct, target_accuracy=0.95, margin_grid=cal.PROBABILITY_GRID[::5]
    )
    assert choice["reached"] and choice["accuracy"] >= 0.95
    assert choice["n_confident"] == brute_force_best_coverage(top, margin, size, correct, 0.95)
    t = choice["thresholds"]
    assert t["min_synapses"] >= 10  # the unreliable small neurons are unclear
    assert 0.8 < t["min_probability"] or 0.8 < t["min_margin"]
    confident = cal.UnclearThresholds(**t).confident(top, margin, size)
    assert confident.sum() == choice["n_confident"] and choice["coverage"] == confident.mean()
    # thresholds chosen on one draw hold near the target on a fresh draw of the same kind
    fresh = calibrated_neurons(4000, seed=3)
    kept = cal.UnclearThresholds(**t).confident(*fresh[:3])
    assert fresh[3][kept].mean() > 0.92


def test_unreachable_target_says_so_and_keeps_the_most_accurate_choice():
    top = np.array([0.9, 0.8, 0.7, 0.6])
    margin, size = top - 0.3, np.full(4, 50)
    correct = np.array([False, True, True, False])  # best: the top three, 2/3 right
    choice = cal.choose_unclear_thresholds(top, margin, size, correct, target_accuracy=0.99)
    assert not choice["reached"]
    assert choice["accuracy"] == pytest.approx(2 / 3) and choice["n_confident"] == 3
    confident = cal.UnclearThresholds(**choice["thresholds"]).confident(top, margin, size)
    assert confident.tolist() == [True, True, True, False]


def test_figures_are_png(tmp_path):
    bins = cal.reliability_bins(PROBS, LABELS)
    png = plot_reliability(tmp_path / "r.png", [("before", bins), ("after", bins)], title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = cal.risk_coverage_curve([0.5, 0.8, 0.9], [False, True, True])
    png = plot_risk_coverage(
        tmp_path / "rc.png",
        {"top-class probability": curve},
        chosen={"coverage": 2 / 3, "accuracy": 1.0, "n_confident": 2},
        target_accuracy=0.95,
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cross_validation_keeps_temperature_one_where_the_fit_follows_noise():
    # a calibrated network (labels drawn at temperature 1), few samples: the fit wanders off 1
    logits, labels = sampled(1.0, n=90, seed=4)
    groups = np.arange(90) // 9  # 10 "neurons"
    result = cal.cross_validated_temperature(logits, labels, groups)
    assert result["fitted"] != pytest.approx(1.0, abs=0.01)
    assert result["kept_at_one"] and result["temperature"] == 1.0
    assert result["cv_nll_fitted"] >= result["cv_nll_one"] and result["folds"] == 5
    # a clearly over-confident one: the fit generalises and is kept
    logits, labels = sampled(2.5, n=2000, seed=5)
    result = cal.cross_validated_temperature(logits, labels, np.arange(2000) // 20)
    assert not result["kept_at_one"]
    assert result["temperature"] == result["fitted"] == pytest.approx(2.5, rel=0.1)
