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

from ..nt import canonical, short_name

NAMINGS = ("short", "full")
#: a neuron needs this many predicted synapses to be called confident (the original's report
#: warned below 100)
MIN_SYNAPSES = 100
#: and this margin between its top and runner-up mean probability
MIN_MARGIN = 0.1


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
    """Per neuron of a per-synapse table (``predict_positions`` output): ``neuron_id``,
    ``n_synapses`` (predicted), ``n_outside`` (without a prediction), the mean probability
    per class, ``top_nt`` and ``top_nt_conf`` (mean probability of the top class),
    ``top_nt_votes`` (fraction of its synapses whose top class it is), ``runner_up_nt``,
    ``runner_up_conf``, ``margin``, and ``confident``: at least ``min_synapses`` synapses
    and a margin of at least ``min_margin``. Sorted by synapse count, largest first.

    ``classes`` are the class columns (default: those before ``top_nt``).
    """
    if "neuron_id" not in synapses.columns:
        raise ValueError("the synapse table has no neuron_id column: nothing to summarise")
    columns = list(classes) if classes is not None else _class_columns_of(synapses)
    known = synapses[synapses["neuron_id"].notna()]
    predicted = known[known["top_nt"].notna()]
    outside = known[known["top_nt"].isna()].groupby("neuron_id").size()
    grouped = predicted.groupby("neuron_id", sort=False)
    means = grouped[columns].mean()
    counts = grouped.size()
    votes = predicted.groupby(["neuron_id", "top_nt"]).size().unstack(fill_value=0)
    table = means.astype(np.float64)
    order = np.argsort(-table.to_numpy(), axis=1, kind="stable")
    names = np.asarray(columns, dtype=object)
    sorted_means = np.take_along_axis(table.to_numpy(), order, axis=1)
    summary = pd.DataFrame({"neuron_id": table.index, "n_synapses": counts.loc[table.index]})
    summary = summary.reset_index(drop=True)
    summary["n_outside"] = outside.reindex(table.index).fillna(0).astype(np.int64).to_numpy()
    for column in columns:
        summary[column] = table[column].to_numpy()
    summary["top_nt"] = pd.array(names[order[:, 0]], dtype="string")
    summary["top_nt_conf"] = sorted_means[:, 0]
    top_votes = [
        votes.loc[n, t] if t in votes.columns else 0
        for n, t in zip(table.index, names[order[:, 0]], strict=True)
    ]
    summary["top_nt_votes"] = np.asarray(top_votes) / summary["n_synapses"].to_numpy()
    if len(columns) > 1:
        summary["runner_up_nt"] = pd.array(names[order[:, 1]], dtype="string")
        summary["runner_up_conf"] = sorted_means[:, 1]
    else:
        summary["runner_up_nt"] = pd.array([None] * len(summary), dtype="string")
        summary["runner_up_conf"] = 0.0
    summary["margin"] = summary["top_nt_conf"] - summary["runner_up_conf"]
    summary["confident"] = (summary["n_synapses"] >= min_synapses) & (
        summary["margin"] >= min_margin
    )
    # neurons with no predicted synapse at all (every position outside the volume)
    empty = outside.index.difference(table.index)
    if len(empty):
        rows = pd.DataFrame({"neuron_id": empty, "n_synapses": 0, "n_outside": outside[empty]})
        rows["confident"] = False
        summary = pd.concat([summary, rows], ignore_index=True)
    summary["n_synapses"] = summary["n_synapses"].astype(np.int64)
    return summary.sort_values(
        ["n_synapses", "neuron_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def _class_columns_of(synapses: pd.DataFrame) -> list[str]:
    columns = list(synapses.columns)
    if "top_nt" not in columns:
        raise ValueError("the synapse table has no top_nt column (predict_positions output?)")
    return [c for c in columns[: columns.index("top_nt")] if c not in _NOT_CLASSES]


#: per-synapse columns that are not class probabilities
_NOT_CLASSES = {"row", "id", "neuron_id", "x", "y", "z", "x_nm", "y_nm", "z_nm"}
