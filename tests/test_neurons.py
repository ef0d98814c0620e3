"""The one per-neuron summary (:mod:`synister.neurons`): prediction outputs, evaluation and
calibration give identical numbers for the same synapses."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synister.evaluate.calibration import neuron_scores
from synister.evaluate.metrics import neuron_predictions, prob_columns
from synister.neurons import summarize_synapses, summary_of_sums
from synister.predict.neurons import probability_frame, summarize_neurons

CLASSES = ["gaba", "acetylcholine", "glutamate", "dopamine"]


def synapses(n: int = 400, neurons: int = 15, seed: int = 0):
    """Neuron ids and float32-exact probabilities (as predict-positions stores them)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, neurons, n).astype(np.int64) * 1000 + 7
    probabilities = rng.dirichlet(np.ones(len(CLASSES)) * 0.7, n).astype(np.float32)
    probabilities[5] = probabilities[6] = [0.4, 0.4, 0.1, 0.1]  # exact ties go to the first
    return ids, probabilities.astype(np.float64)


def test_prediction_evaluation_and_calibration_summarise_neurons_identically():
    ids, probabilities = synapses()
    summary = summarize_synapses(ids, probabilities)

    table = probability_frame(probabilities, CLASSES, naming="full")
    table.insert(0, "neuron_id", pd.array(ids, dtype="Int64"))
    predicted = summarize_neurons(table, min_synapses=1).set_index("neuron_id").sort_index()

    scores = neuron_scores(ids, probabilities)

    labelled = pd.DataFrame({"synapse_id": np.arange(len(ids)), "skeleton_id": ids})
    labelled["hemi_lineage_id"] = pd.array([pd.NA] * len(ids), dtype="Int64")
    labelled["true_idx"] = ids % len(CLASSES)
    labelled[prob_columns(CLASSES)] = probabilities
    by_mean, _ = neuron_predictions(labelled, len(CLASSES), method="mean")
    by_vote, _ = neuron_predictions(labelled, len(CLASSES), method="vote")

    assert (
        list(summary.neuron_ids) == list(scores.neuron_ids) == list(by_mean["skeleton_id"])
        == list(predicted.index)
    )  # fmt: skip
    means = summary.mean_probabilities
    np.testing.assert_array_equal(predicted[CLASSES].to_numpy(), means)
    np.testing.assert_array_equal(scores.mean_probabilities, means)
    for counts in (predicted["n_synapses"], scores.n_synapses, by_mean["n_synapses"]):
        np.testing.assert_array_equal(counts, summary.n_synapses)
    top = np.asarray(CLASSES)[summary.top_idx]
    np.testing.assert_array_equal(predicted["top_nt"].to_numpy(dtype=str), top)
    np.testing.assert_array_equal(scores.top_idx, summary.top_idx)
    np.testing.assert_array_equal(by_mean["pred_idx"], summary.top_idx)
    for conf in (predicted["top_nt_conf"], scores.top_probability, by_mean["support"]):
        np.testing.assert_array_equal(conf, summary.top_probability)
    np.testing.assert_array_equal(predicted["margin"], summary.margin)
    np.testing.assert_array_equal(scores.margin, summary.margin)
    np.testing.assert_array_equal(predicted["top_nt_vote_share"], summary.top_votes)
    np.testing.assert_array_equal(by_vote["majority_share"], summary.majority_share)
    np.testing.assert_array_equal(by_mean["majority_share"], summary.majority_share)


def test_summary_of_sums_of_parts_is_the_summary_of_the_whole():
    ids, probabilities = synapses()
    probabilities[::7] = np.nan  # synapses without a prediction
    whole = summarize_synapses(ids, probabilities)
    a, b = (
        summarize_synapses(ids[:150], probabilities[:150]),
        summarize_synapses(ids[150:], probabilities[150:]),
    )
    parts = pd.concat(
        [
            pd.DataFrame({"id": s.neuron_ids, "n": s.n_synapses, "missing": s.n_missing})
            .join(pd.DataFrame(s.sums).add_prefix("s"))
            .join(pd.DataFrame(s.votes).add_prefix("v"))
            for s in (a, b)
        ]
    )
    added = parts.groupby("id").sum()
    summed = summary_of_sums(
        added.index.to_numpy(), added["n"], added.filter(regex=r"^s\d"),
        added.filter(regex=r"^v\d"), added["missing"],
    )  # fmt: skip
    np.testing.assert_array_equal(summed.neuron_ids, whole.neuron_ids)
    np.testing.assert_array_equal(summed.n_missing, whole.n_missing)
    np.testing.assert_array_equal(summed.votes, whole.votes)
    np.testing.assert_allclose(summed.mean_probabilities, whole.mean_probabilities, rtol=1e-12)
    np.testing.assert_array_equal(summed.top_idx, whole.top_idx)
    assert whole.n_missing.sum() == np.isnan(probabilities).any(axis=1).sum()


def test_one_class_has_no_runner_up_and_a_neuron_without_synapses_no_means():
    summary = summarize_synapses(np.array([1, 1, 2]), np.array([[1.0], [1.0], [np.nan]]))
    np.testing.assert_array_equal(summary.runner_up_idx, [-1, -1])
    np.testing.assert_array_equal(summary.margin, [1.0, np.nan])
    assert summary.n_synapses.tolist() == [2, 0] and summary.n_missing.tolist() == [0, 1]
    assert np.isnan(summary.mean_probabilities[1]).all()


def test_a_long_table_is_summarised_in_slices_that_add_up_to_the_whole(monkeypatch):
    from synister.predict import neurons as module

    ids, probabilities = synapses(n=1000)
    table = probability_frame(probabilities, CLASSES, naming="full")
    table.insert(0, "neuron_id", pd.array(ids, dtype="Int64"))
    table.loc[[3, 500], "neuron_id"] = pd.NA  # rows without a neuron are left out
    table.loc[[10, 11], CLASSES] = np.nan  # not predicted: counted outside
    whole = summarize_neurons(table, min_synapses=1)

    seen = []
    summarize = module.summarize_synapses
    monkeypatch.setattr(module, "SUMMARY_ROWS", 64)
    monkeypatch.setattr(
        module, "summarize_synapses", lambda i, p: seen.append(len(p)) or summarize(i, p)
    )
    sliced = summarize_neurons(table, min_synapses=1)
    assert len(seen) == 16 and max(seen) <= 64  # bounded memory for any length
    pd.testing.assert_frame_equal(sliced, whole, check_exact=False, rtol=1e-12)
