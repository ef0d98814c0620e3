"""The one per-neuron summary of per-synapse class probabilities: synapse count, mean
probability per class, top class, runner-up, margin and votes.

Prediction outputs (``neurons.parquet``: :mod:`synister.predict.neurons`), evaluation
(:func:`synister.evaluate.metrics.aggregate_predictions`) and calibration
(:func:`synister.evaluate.calibration.neuron_scores`) all summarise neurons here, so the three
give the same numbers for the same synapses. A summary is built from per-synapse arrays
(:func:`summarize_synapses`) or from per-neuron sums (:func:`summary_of_sums`: sums of parts of a
table, added per neuron, are those of the whole, so a run over millions of synapses need not
hold them all). Numpy and pandas only: it sits below both predict and evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: per-synapse columns of a prediction table that are not class probabilities
NOT_CLASSES = frozenset({"row", "id", "neuron_id", "x", "y", "z", "x_nm", "y_nm", "z_nm"})


def class_columns_of(synapses: pd.DataFrame) -> list[str]:
    """The class columns of a per-synapse prediction table (``predict_positions`` output):
    those before ``top_nt``, less ids and positions."""
    columns = list(synapses.columns)
    if "top_nt" not in columns:
        raise ValueError("the synapse table has no top_nt column (predict_positions output?)")
    return [c for c in columns[: columns.index("top_nt")] if c not in NOT_CLASSES]


@dataclass(frozen=True)
class NeuronSummary:
    """Per neuron (in the order of ``neuron_ids``): ``n_synapses`` with probabilities,
    ``n_missing`` without (a NaN row: e.g. outside the volume), the ``sums`` of their
    probabilities and ``votes`` (synapses whose top class it is), each (n_neurons, n_classes);
    the ``mean_probabilities`` (NaN for a neuron without synapses), the ``top_idx`` and
    ``runner_up_idx`` classes by mean (equal means go to the class first in order; -1 without a
    second class), their means, and the ``margin`` between them. ``synapse_index`` gives each
    synapse's neuron row (None for a summary of sums)."""

    neuron_ids: np.ndarray
    n_synapses: np.ndarray
    n_missing: np.ndarray
    sums: np.ndarray
    votes: np.ndarray
    mean_probabilities: np.ndarray
    top_idx: np.ndarray
    top_probability: np.ndarray
    runner_up_idx: np.ndarray
    runner_up_probability: np.ndarray
    margin: np.ndarray
    synapse_index: np.ndarray | None = None

    @property
    def top_votes(self) -> np.ndarray:
        """Share of a neuron's synapses that vote for its top class (NaN without synapses)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.votes[np.arange(len(self.top_idx)), self.top_idx] / self.n_synapses

    @property
    def majority_share(self) -> np.ndarray:
        """Share of a neuron's synapses that vote for its most-voted class (0 without any)."""
        return self.votes.max(axis=1, initial=0) / np.maximum(self.n_synapses, 1)


def summary_of_sums(
    neuron_ids, n_synapses, sums, votes, n_missing=None, synapse_index=None
) -> NeuronSummary:
    """The summary of per-neuron synapse counts, probability sums and votes."""
    n = np.asarray(n_synapses, dtype=np.int64)
    sums = np.asarray(sums, dtype=np.float64)
    votes = np.asarray(votes, dtype=np.int64).reshape(sums.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / n[:, None]
    order = np.argsort(-np.nan_to_num(means, nan=0.0), axis=1, kind="stable")
    rows = np.arange(len(n))
    top = order[:, 0]
    if sums.shape[1] > 1:
        second = order[:, 1]
        runner_up = means[rows, second]
    else:
        second = np.full(len(n), -1, dtype=np.int64)
        runner_up = np.where(n > 0, 0.0, np.nan)
    top_probability = means[rows, top]
    return NeuronSummary(
        neuron_ids=neuron_ids,
        n_synapses=n,
        n_missing=np.zeros(len(n), np.int64) if n_missing is None else np.asarray(n_missing),
        sums=sums,
        votes=votes,
        mean_probabilities=means,
        top_idx=top.astype(np.int64),
        top_probability=top_probability,
        runner_up_idx=second.astype(np.int64),
        runner_up_probability=runner_up,
        margin=top_probability - runner_up,
        synapse_index=synapse_index,
    )


def summarize_synapses(neuron_ids, probabilities) -> NeuronSummary:
    """The summary of synapses' probabilities (N, n_classes) by neuron, neurons sorted by id.

    Rows holding a NaN count as synapses without probabilities (``n_missing``). Ids may be
    integers or text (numpy or pandas, without missing values).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (N, n_classes), got shape {probabilities.shape}")
    index, ids = pd.factorize(neuron_ids, sort=True)
    if len(index) != len(probabilities):
        raise ValueError(
            f"neuron ids ({len(index)}) and probability rows ({len(probabilities)}) differ"
        )
    if (index < 0).any():
        raise ValueError("a neuron id is missing")
    count = len(ids)
    n_classes = probabilities.shape[1]
    has = ~np.isnan(probabilities).any(axis=1)
    kept = np.where(has[:, None], probabilities, 0.0)
    sums = np.stack(
        [np.bincount(index, weights=kept[:, c], minlength=count) for c in range(n_classes)],
        axis=1,
    ).reshape(count, n_classes)
    top = kept.argmax(axis=1)
    votes = np.bincount(index[has] * n_classes + top[has], minlength=count * n_classes).reshape(
        count, n_classes
    )
    return summary_of_sums(
        _values(ids),
        np.bincount(index[has], minlength=count),
        sums,
        votes,
        n_missing=np.bincount(index[~has], minlength=count),
        synapse_index=index,
    )


def _values(ids):
    """Neuron ids as an array that keeps a pandas dtype (Int64, string) where they had one."""
    if isinstance(ids, pd.Index):
        return (
            ids.array if isinstance(ids.dtype, pd.api.extensions.ExtensionDtype) else ids.to_numpy()
        )
    return ids
