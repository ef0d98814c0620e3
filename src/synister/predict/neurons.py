"""Per-synapse probabilities as the field names them, and per-neuron summaries.

Per synapse, FlyWire's synapse table has one column per transmitter (``gaba, ach, glut, oct,
ser, da``) plus ``top_nt`` and ``top_nt_conf``; per neuron FlyWire publishes ``top_nt`` and
``top_nt_conf``, neuPrint ``predictedNt`` and ``predictedNtProb``. A neuron is called
``confident`` only with enough synapses and a clear margin over the runner-up, so that no
neuron is shown with a single transmitter it does not clearly have.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..neurons import class_columns_of, summarize_synapses, summary_of_sums
from ..nt import canonical, short_name

NAMINGS = ("short", "full")
#: a neuron needs this many predicted synapses to be called confident (the original's report
#: warned below 100)
MIN_SYNAPSES = 100
#: and this margin between its top and runner-up mean probability
MIN_MARGIN = 0.1
#: rows of a synapse table summarised at a time (their sums add up per neuron): the summary of
#: a table of any length costs the memory of this many rows
SUMMARY_ROWS = 262_144


def class_columns(classes: Sequence[str], naming: str = "short") -> list[str]:
    """Output column names of the classes: the field's short names (``ach``) or full ones."""
    if naming not in NAMINGS:
        raise ValueError(f"naming must be short or full, got {naming!r}")
    if naming == "short":
        return [short_name(c) for c in classes]
    names = []
    for c in classes:
        try:
            names.append(canonical(c))
        except ValueError:
            names.append(str(c))
    return names


def probability_frame(
    probabilities: np.ndarray, classes: Sequence[str], naming: str = "short"
) -> pd.DataFrame:
    """One float32 column per class, then ``top_nt`` (a class name, <NA> where a row has no
    probabilities) and ``top_nt_conf``."""
    columns = class_columns(classes, naming)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    frame = pd.DataFrame(probabilities, columns=columns)
    predicted = ~np.isnan(probabilities).any(axis=1)
    top = np.argmax(np.where(predicted[:, None], probabilities, 0), axis=1)
    names = np.asarray(columns, dtype=object)[top]
    frame["top_nt"] = pd.array(np.where(predicted, names, None), dtype="string")
    frame["top_nt_conf"] = np.where(
        predicted, probabilities[np.arange(len(top)), top], np.nan
    ).astype(np.float32)
    return frame


def summarize_neurons(
    synapses: pd.DataFrame,
    *,
    min_synapses: int = MIN_SYNAPSES,
    min_margin: float = MIN_MARGIN,
    classes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per neuron of a per-synapse table (``predict_positions`` output); see
    :func:`summarize_sums`. ``classes`` are the class columns (default: those before
    ``top_nt``)."""
    columns = list(classes) if classes is not None else class_columns_of(synapses)
    sums = neuron_sums(synapses, columns)
    return summarize_sums(sums, columns, min_synapses=min_synapses, min_margin=min_margin)


def neuron_sums(synapses: pd.DataFrame, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Per neuron of a per-synapse table: ``neuron_id``, ``n`` (predicted synapses),
    ``n_outside`` (without a prediction), ``sum_<class>`` (of its probabilities) and
    ``votes_<class>`` (synapses whose top class it is). Sums of parts of a table, added per
    neuron (:func:`add_neuron_sums`), are those of the whole: a whole-dataset run summarises
    244 million synapses without holding them."""
    if "neuron_id" not in synapses.columns:
        raise ValueError("the synapse table has no neuron_id column: nothing to summarise")
    columns = list(classes) if classes is not None else class_columns_of(synapses)
    starts = range(0, max(len(synapses), 1), SUMMARY_ROWS)
    parts = [_slice_sums(synapses.iloc[s : s + SUMMARY_ROWS], columns) for s in starts]
    return parts[0] if len(parts) == 1 else add_neuron_sums(parts)


def _slice_sums(synapses: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    known = synapses["neuron_id"].notna().to_numpy()
    probabilities = synapses[columns].to_numpy(dtype=np.float64, na_value=np.nan)[known]
    summary = summarize_synapses(synapses["neuron_id"][known], probabilities)
    data = {
        "neuron_id": summary.neuron_ids,
        "n": summary.n_synapses,
        "n_outside": summary.n_missing.astype(np.int64),
    }
    data.update({f"sum_{c}": summary.sums[:, i] for i, c in enumerate(columns)})
    data.update({f"votes_{c}": summary.votes[:, i] for i, c in enumerate(columns)})
    return pd.DataFrame(data)


def add_neuron_sums(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The :func:`neuron_sums` of the parts of a table added per neuron."""
    parts = [p for p in parts if len(p)] or list(parts[:1])
    return pd.concat(parts, ignore_index=True).groupby("neuron_id", sort=False).sum().reset_index()


def summarize_sums(
    sums: pd.DataFrame,
    classes: Sequence[str],
    *,
    min_synapses: int = MIN_SYNAPSES,
    min_margin: float = MIN_MARGIN,
) -> pd.DataFrame:
    """The per-neuron table from :func:`neuron_sums` (:mod:`synister.neurons`' summary):
    ``neuron_id``, ``n_synapses`` (predicted), ``n_outside`` (without a prediction), the mean
    probability per class, ``top_nt`` and ``top_nt_conf`` (mean probability of the top class),
    ``top_nt_vote_share`` (the share of its synapses whose top class it is), ``runner_up_nt``,
    ``runner_up_conf``, ``margin``, and ``confident``: at least ``min_synapses`` synapses and a
    margin of at least ``min_margin``. A neuron without a predicted synapse has no means and no
    top class. Sorted by synapse count, largest first, then by neuron id."""
    columns = list(classes)
    neurons = summary_of_sums(
        sums["neuron_id"].reset_index(drop=True),
        sums["n"].to_numpy(dtype=np.int64),
        sums[[f"sum_{c}" for c in columns]].to_numpy(dtype=np.float64),
        sums[[f"votes_{c}" for c in columns]].to_numpy(dtype=np.int64),
        sums["n_outside"].to_numpy(dtype=np.int64),
    )
    has = neurons.n_synapses > 0
    names = np.asarray(columns, dtype=object)

    def where_predicted(values, empty):
        return np.where(has, values, empty)

    summary = pd.DataFrame(
        {
            "neuron_id": neurons.neuron_ids,
            "n_synapses": neurons.n_synapses,
            "n_outside": neurons.n_missing,
        }
    )
    for i, column in enumerate(columns):
        summary[column] = neurons.mean_probabilities[:, i]
    summary["top_nt"] = pd.array(where_predicted(names[neurons.top_idx], None), dtype="string")
    summary["top_nt_conf"] = where_predicted(neurons.top_probability, np.nan)
    summary["top_nt_vote_share"] = where_predicted(neurons.top_votes, np.nan)
    second = neurons.runner_up_idx
    runner_up = np.where(has & (second >= 0), names[np.maximum(second, 0)], None)
    summary["runner_up_nt"] = pd.array(runner_up, dtype="string")
    summary["runner_up_conf"] = neurons.runner_up_probability
    summary["margin"] = neurons.margin
    summary["confident"] = (summary["n_synapses"] >= min_synapses) & (
        summary["margin"] >= min_margin
    )
    return summary.sort_values(
        ["n_synapses", "neuron_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
