"""Choosing the final checkpoint, neuron rules and bootstrap errors over neurons."""

from __future__ import annotations

import numpy as np
import pytest

from synister.evaluate.selection import (
    Labelled,
    bootstrap_accuracy,
    choose_checkpoint,
    neuron_decisions,
    paired_difference_se,
)


def test_bootstrap_resamples_neurons_so_correlated_synapses_give_a_wider_error():
    # 40 neurons of 10 synapses each; within a neuron every synapse is right or every one wrong
    groups = np.repeat(np.arange(40), 10)
    correct = np.repeat(np.arange(40) % 4 != 0, 10)  # 30 of 40 neurons right
    by_neuron = bootstrap_accuracy(groups, correct)
    by_synapse = bootstrap_accuracy(np.arange(400), correct)
    assert by_neuron["accuracy"] == by_synapse["accuracy"] == 0.75
    # the binomial SE of 40 independent neurons vs 400 independent synapses
    assert by_neuron["se"] == pytest.approx(np.sqrt(0.75 * 0.25 / 40), rel=0.1)
    assert by_synapse["se"] == pytest.approx(np.sqrt(0.75 * 0.25 / 400), rel=0.1)
    low, high = by_neuron["ci"]
    assert low < 0.75 < high and by_neuron["n_groups"] == 40
    everything_right = bootstrap_accuracy(groups, np.ones(400, bool))
    assert everything_right["se"] == 0.0 and everything_right["ci"] == [1.0, 1.0]
    assert bootstrap_accuracy(groups, correct) == by_neuron  # seeded: the same every time
    with pytest.raises(ValueError, match="differ in shape"):
        bootstrap_accuracy(groups[:3], correct)


def test_neuron_rules_vote_mean_and_summed_log_probability_can_disagree():
    # one neuron of three synapses: two lean weakly to class 0, one is sure of class 1
    probabilities = np.array([[0.55, 0.45], [0.55, 0.45], [0.01, 0.99]])
    # a second neuron: two sure of class 1, one that rules class 1 out almost entirely
    second = np.array([[0.2, 0.8], [0.2, 0.8], [0.9999, 0.0001]])
    data = Labelled(
        np.array([7, 7, 7, 3, 3, 3]),
        np.array([1, 1, 1, 1, 1, 1]),
        np.vstack([probabilities, second]),
    )
    picks = {rule: neuron_decisions(data, rule) for rule in ("vote", "mean", "log")}
    assert picks["vote"]["neuron_id"].tolist() == [3, 7]
    assert picks["vote"]["pred_idx"].tolist() == [1, 0]  # majority
    # means: neuron 3 (0.47, 0.53), neuron 7 (0.37, 0.63)
    assert picks["mean"]["pred_idx"].tolist() == [1, 1]
    # summed logs: neuron 3 log(0.2·0.2·0.9999) > log(0.8·0.8·0.0001): one synapse that rules
    # class 1 out outweighs two for it; neuron 7 log(0.55²·0.01) < log(0.45²·0.99)
    assert picks["log"]["pred_idx"].tolist() == [0, 1]
    assert picks["log"]["n_synapses"].tolist() == [3, 3]
    with pytest.raises(ValueError, match="neuron rule"):
        neuron_decisions(data, "median")
    with pytest.raises(ValueError, match="needs the synapse and the neuron class priors"):
        neuron_decisions(data, "bayes")


def test_the_bayes_rule_counts_the_prior_of_logit_adjusted_outputs_once():
    """Outputs that are posteriors under a 9:1 prior: each synapse of a minority-class neuron
    leans to the minority class by less than the prior's log-odds. Summed, the prior counted
    five times wins; counted once (with equal neuron priors), the evidence does."""
    # likelihood ratio 3:1 for class 1 per synapse; posterior under the 9:1 prior: 0.75 vs 0.25
    posterior = np.array([[0.75, 0.25]] * 5)
    data = Labelled(np.zeros(5, np.int64), np.ones(5, np.int64), posterior)
    assert neuron_decisions(data, "log")["pred_idx"].tolist() == [0]
    bayes = neuron_decisions(data, "bayes", np.array([9.0, 1.0]), np.array([1.0, 1.0]))
    assert bayes["pred_idx"].tolist() == [1]  # 5 · log 3 > 0
    # a uniform synapse prior changes nothing but the neuron prior
    same = neuron_decisions(data, "bayes", np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    assert same["pred_idx"].tolist() == [0]


def _run(correct_per_neuron: list[int], confidence: float = 0.9) -> Labelled:
    """20 neurons of 5 synapses of class 0; ``correct_per_neuron[i]`` of neuron i's right."""
    ids, probabilities = [], []
    for neuron, right in enumerate(correct_per_neuron):
        for synapse in range(5):
            ids.append(neuron)
            p = confidence if synapse < right else 1 - confidence
            probabilities.append([p, 1 - p])
    return Labelled(np.array(ids), np.zeros(len(ids), np.int64), np.array(probabilities))


def test_checkpoint_rules():
    weaker = _run([5] * 15 + [0] * 5)  # 0.75
    # 0.76: one synapse better in all, but right on other neurons (as checkpoints are)
    one_more = _run([5] * 13 + [0, 0, 5, 5, 1, 0, 0])
    much_better = _run([5] * 19 + [0])  # 0.95
    candidates = [(100, one_more), (200, weaker)]
    assert choose_checkpoint(candidates, "accuracy") == 100  # today's rule: one synapse decides
    assert choose_checkpoint(candidates, "last") == 200
    assert choose_checkpoint(candidates, "margin") == 200  # within the noise: the later one
    assert choose_checkpoint([(100, much_better), (200, weaker)], "margin") == 100
    tied = [(300, weaker), (100, weaker), (200, weaker)]
    assert choose_checkpoint(tied, "accuracy") == 100  # the earliest of equals
    assert choose_checkpoint([(1, _run([5] * 20, 0.6)), (2, _run([5] * 20, 0.99))], "nll") == 2
    with pytest.raises(ValueError, match="selection rule"):
        choose_checkpoint(candidates, "best")


def test_paired_difference_error_is_zero_for_equal_runs_and_grows_with_disagreement():
    a = _run([5] * 15 + [0] * 5)
    b = _run([5] * 10 + [0] * 5 + [5] * 5)  # the same accuracy, other neurons right
    assert paired_difference_se(a.neuron_ids, a.correct(), a.correct()) == 0.0
    assert paired_difference_se(a.neuron_ids, a.correct(), b.correct()) > 0.05
