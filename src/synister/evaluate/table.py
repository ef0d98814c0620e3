"""Evaluation of a table of predictions with known transmitters, without a database: what a
notebook has after ``synister.predict_positions`` and a join with its own labels.

The table is turned into the two frames a database run gives (predictions with ``prob_<class>``
columns; synapses with skeleton, hemilineage and known transmitters) and evaluated by
:func:`~synister.evaluate.runs.evaluate_predictions`, so its metrics are those of
``synister evaluate`` for the same synapses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..neurons import class_columns_of
from ..nt import UnknownTransmitter, canonical, canonical_set
from .runs import DEFAULT_RULES, EvaluationRules, RunEvaluation, evaluate_predictions


def _class_names(frame: pd.DataFrame, classes: Sequence[str] | None) -> tuple[list, list]:
    """The probability columns and the canonical class name of each."""
    if classes is None:
        prefixed = [c for c in frame.columns if str(c).startswith("prob_")]
        classes = prefixed or class_columns_of(frame)
    columns, names = [], []
    for column in classes:
        if column not in frame.columns:
            raise ValueError(f"no class column {column!r}; columns: {list(frame.columns)}")
        try:
            names.append(canonical(str(column).removeprefix("prob_")))
        except UnknownTransmitter as error:
            raise ValueError(f"class column {column!r}: {error}") from None
        columns.append(column)
    return columns, names


def _truth(values: pd.Series, column: str) -> list[frozenset]:
    """Known transmitters per row; empty (unknown) where missing, ``none`` or ``unknown``."""
    known = {}
    for i, value in enumerate(values):
        key = None if pd.isna(value) else str(value)
        if key not in known:
            try:
                known[key] = canonical_set(None if key is None else [key])
            except UnknownTransmitter as error:
                raise ValueError(f"column {column}, row {i}: {error}") from None
    return [known[None if pd.isna(v) else str(v)] for v in values]


def _one_truth_per_neuron(neurons: pd.Series, truth: list[frozenset]) -> None:
    seen: dict = {}
    for i, (neuron, known) in enumerate(zip(neurons, truth, strict=True)):
        if pd.isna(neuron) or not known:
            continue
        first = seen.setdefault(neuron, (known, i))
        if first[0] != known:
            raise ValueError(
                f"neuron {neuron}: known as {','.join(sorted(first[0]))} (row {first[1]}) and "
                f"{','.join(sorted(known))} (row {i}); a neuron has one known transmitter"
            )


def _codes(values: pd.Series) -> tuple[pd.array, pd.Index]:
    """Integer codes (<NA> where missing) and the ids they stand for."""
    codes, ids = pd.factorize(values, sort=True)
    return pd.array(np.where(codes < 0, None, codes), dtype="Int64"), ids


def _restore(frame: pd.DataFrame | None, column: str, ids: pd.Index) -> None:
    if frame is not None and column in frame.columns:
        codes = frame[column]
        frame[column] = pd.Series(ids.take(codes.fillna(0).astype(np.int64)), index=frame.index)
        frame.loc[codes.isna().to_numpy(), column] = pd.NA


def evaluate_table(
    predictions: pd.DataFrame,
    truth_column: str = "nt",
    neuron_column: str = "neuron_id",
    *,
    classes: Sequence[str] | None = None,
    hemi_lineage_column: str | None = None,
    rules: EvaluationRules = DEFAULT_RULES,
    run: str = "table",
) -> RunEvaluation:
    """Synapse-, neuron- (and hemilineage-) level metrics of a table of predictions with known
    transmitters, as ``synister evaluate`` computes them for a database run.

    ``predictions``: one row per synapse, e.g. ``synister.predict_positions``' output (class
    columns ``gaba, ach, ...`` or full names, before ``top_nt``) or ``prob_<class>`` columns;
    ``classes`` names the class columns instead. ``truth_column`` holds each synapse's known
    transmitter (any spelling :func:`synister.nt.canonical` accepts; empty, ``none`` or
    ``unknown``: not known); a neuron has one. ``neuron_column`` groups synapses into neurons,
    ``hemi_lineage_column`` (optional) neurons into hemilineages. Rows without probabilities
    (outside the volume) are left out and counted (``metrics["counts"]["without_prediction"]``).

    Returns a :class:`~synister.evaluate.runs.RunEvaluation`: ``metrics`` as in metrics.json,
    and per-synapse (``synapse_id``: the row's position in ``predictions``), per-neuron
    (``skeleton_id``: the neuron's id) and per-hemilineage frames.
    """
    for column, role in (
        (truth_column, "truth_column"),
        (neuron_column, "neuron_column"),
        (hemi_lineage_column, "hemi_lineage_column"),
    ):
        if column is not None and column not in predictions.columns:
            raise ValueError(f"no column {column!r} ({role}); columns: {list(predictions.columns)}")
    frame = predictions.reset_index(drop=True)
    columns, names = _class_names(frame, classes)
    truth = _truth(frame[truth_column], truth_column)
    _one_truth_per_neuron(frame[neuron_column], truth)
    probabilities = frame[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    predicted = ~np.isnan(probabilities).any(axis=1)

    skeletons, neuron_ids = _codes(frame[neuron_column])
    lineages, lineage_names = _codes(
        frame[hemi_lineage_column] if hemi_lineage_column else pd.Series([None] * len(frame))
    )
    table = pd.DataFrame({"synapse_id": np.arange(len(frame), dtype=np.int64)})
    for i, name in enumerate(names):
        table[f"prob_{name}"] = probabilities[:, i]
    synapses = table[["synapse_id"]].assign(
        skeleton_id=skeletons, hemi_lineage_id=lineages, nt_known=truth
    )
    evaluation = evaluate_predictions(
        run,
        table[predicted].reset_index(drop=True),
        synapses,
        names,
        rules=rules,
        hemi_lineage_names={i: str(n) for i, n in enumerate(lineage_names)},
    )
    evaluation.metrics["counts"]["without_prediction"] = int((~predicted).sum())
    for frame_of_level in (evaluation.synapses, evaluation.unclear, *evaluation.neurons.values()):
        _restore(frame_of_level, "skeleton_id", neuron_ids)
    for level in evaluation.metrics["neuron"].values():
        if isinstance(level, dict):
            level["tied_skeleton_ids"] = neuron_ids.take(level["tied_skeleton_ids"]).tolist()
    return evaluation
