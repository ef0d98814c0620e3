"""Metrics of one prediction run as pure functions on arrays and DataFrames.

Everything here is deterministic and free of I/O so that it can be tested against hand-computed
numbers and reused (e.g. by notebooks) without a database.

Class indices follow the run's class order. A synapse's true class is the single transmitter of
its skeleton among the run's classes; synapses without one are left out and counted by reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from ..neurons import summarize_synapses

#: Reasons a predicted synapse has no true class, in the order they are checked.
EXCLUSION_REASONS = (
    "not_in_database",
    "no_skeleton",
    "unknown_transmitter",
    "transmitter_not_in_classes",
    "several_transmitters",
)

AGGREGATION_METHODS = ("vote", "mean")

#: How a tied majority vote is broken: ``probability`` (synister's default) takes the tied class
#: with the highest summed probability, then the first in class order; ``first`` takes the first
#: tied class in class order, as the original synister's ``np.argmax`` over vote counts did.
TIE_RULES = ("probability", "first")


def prob_columns(classes: Sequence[str]) -> list[str]:
    """Column names of the per-class probabilities in a prediction table."""
    return [f"prob_{c}" for c in classes]


def _check_indices(name: str, idx: np.ndarray, n_classes: int) -> np.ndarray:
    idx = np.asarray(idx)
    if idx.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {idx.shape}")
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {idx.dtype}")
    bad = np.flatnonzero((idx < 0) | (idx >= n_classes))
    if bad.size:
        raise ValueError(
            f"{name}[{bad[0]}] = {idx[bad[0]]} is not a class index in [0, {n_classes})"
        )
    return idx.astype(np.int64, copy=False)


def _check_probabilities(probabilities: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (n_rows, n_classes):
        raise ValueError(
            f"probabilities must have shape ({n_rows}, {n_classes}), got {probabilities.shape}"
        )
    bad = np.argwhere(~np.isfinite(probabilities))
    if bad.size:
        row, col = bad[0]
        raise ValueError(f"probabilities[{row}, {col}] is not finite ({probabilities[row, col]})")
    return probabilities


def confusion_matrix(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(n_classes, n_classes)``: row = true class, column = predicted class."""
    true_idx = _check_indices("true_idx", true_idx, n_classes)
    pred_idx = _check_indices("pred_idx", pred_idx, n_classes)
    if true_idx.shape != pred_idx.shape:
        raise ValueError(
            f"true_idx and pred_idx differ in length ({true_idx.size} vs {pred_idx.size})"
        )
    flat = np.bincount(true_idx * n_classes + pred_idx, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def row_normalize(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; rows without samples are NaN (not 0, which would read as
    'never predicted correctly')."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.where(totals > 0, totals, 1), np.nan)


def accuracy(confusion: np.ndarray) -> float:
    """Fraction of samples on the diagonal; NaN when there are no samples."""
    confusion = np.asarray(confusion)
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each true class; NaN for classes without samples."""
    return np.diagonal(row_normalize(confusion)).copy()


def balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean recall over the classes that have samples (the original's 'average accuracy');
    NaN when no class has any."""
    recalls = per_class_accuracy(confusion)
    recalls = recalls[~np.isnan(recalls)]
    return float(recalls.mean()) if recalls.size else float("nan")


def expected_probability_matrix(
    true_idx: np.ndarray, probabilities: np.ndarray, n_classes: int
) -> np.ndarray:
    """Row ``t`` = mean predicted distribution over synapses of true class ``t`` (NaN if none).

    Unlike the confusion matrix it shows how confident the network is, not just its argmax.
    """
    true_idx = _check_indices("true_idx", true_idx, n_classes)
    probabilities = _check_probabilities(probabilities, true_idx.size, n_classes)
    counts = np.bincount(true_idx, minlength=n_classes).astype(np.float64)
    sums = np.stack(
        [
            np.bincount(true_idx, weights=probabilities[:, c], minlength=n_classes)
            for c in range(n_classes)
        ],
        axis=1,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], np.nan)


def true_class_of(nt_known: frozenset, classes: Sequence[str]) -> int | str:
    """The class index of a skeleton's known transmitter set, or the reason it has none."""
    if not nt_known:
        return "unknown_transmitter"
    among = [i for i, c in enumerate(classes) if c in nt_known]
    if not among:
        return "transmitter_not_in_classes"
    if len(among) > 1:
        return "several_transmitters"
    return among[0]


def label_predictions(
    predictions: pd.DataFrame, synapses: pd.DataFrame, classes: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Join a run's predictions with the truth.

    ``predictions``: synapse_id + ``prob_<class>`` per class (as ``Database.predictions``);
    ``synapses``: synapse_id, skeleton_id, hemi_lineage_id, nt_known (as ``Database.synapses``).
    Returns the labelled synapses (synapse_id, skeleton_id, hemi_lineage_id, true_idx, pred_idx,
    max_prob and the probability columns, ordered by synapse_id) and the number left out per
    reason of :data:`EXCLUSION_REASONS`.
    """
    columns = prob_columns(classes)
    missing = [c for c in ["synapse_id", *columns] if c not in predictions.columns]
    if missing:
        raise ValueError(
            f"prediction table lacks column(s) {missing}; it has {list(predictions.columns)}"
        )
    missing = [
        c
        for c in ("synapse_id", "skeleton_id", "hemi_lineage_id", "nt_known")
        if c not in synapses.columns
    ]
    if missing:
        raise ValueError(f"synapse table lacks column(s) {missing}")
    duplicated = predictions["synapse_id"].duplicated()
    if duplicated.any():
        first = predictions["synapse_id"][duplicated].iloc[0]
        raise ValueError(f"synapse {first} is predicted more than once")

    probabilities = predictions[columns].to_numpy(dtype=np.float64)
    bad = np.argwhere(~np.isfinite(probabilities))
    if bad.size:
        row, col = bad[0]
        raise ValueError(
            f"synapse {predictions['synapse_id'].iloc[row]}: {columns[col]} is not finite "
            f"({probabilities[row, col]})"
        )

    truth = synapses[["synapse_id", "skeleton_id", "hemi_lineage_id", "nt_known"]]
    joined = predictions[["synapse_id", *columns]].merge(
        truth, on="synapse_id", how="left", indicator=True
    )
    in_db = (joined["_merge"] == "both").to_numpy()
    has_skeleton = in_db & joined["skeleton_id"].notna().to_numpy()
    cache: dict[frozenset, int | str] = {}

    def verdict_of(nts) -> int | str:
        key = frozenset(nts) if isinstance(nts, set | frozenset | list | tuple) else frozenset()
        if key not in cache:
            cache[key] = true_class_of(key, classes)
        return cache[key]

    verdict = pd.Series(
        [
            verdict_of(nts) if ok else ("no_skeleton" if db else "not_in_database")
            for nts, ok, db in zip(joined["nt_known"], has_skeleton, in_db, strict=True)
        ],
        index=joined.index,
        dtype=object,
    )
    labelled_mask = np.array([not isinstance(v, str) for v in verdict], dtype=bool)

    excluded = {reason: int((verdict == reason).sum()) for reason in EXCLUSION_REASONS}
    labelled = joined.loc[labelled_mask, ["synapse_id", "skeleton_id", "hemi_lineage_id"]].copy()
    labelled["skeleton_id"] = labelled["skeleton_id"].astype(np.int64)
    labelled["hemi_lineage_id"] = labelled["hemi_lineage_id"].astype("Int64")
    labelled["true_idx"] = verdict[labelled_mask].astype(np.int64).to_numpy()
    kept_probabilities = joined.loc[labelled_mask, columns].to_numpy(dtype=np.float64)
    labelled["pred_idx"] = kept_probabilities.argmax(axis=1) if len(labelled) else []
    labelled["pred_idx"] = labelled["pred_idx"].astype(np.int64)
    labelled["max_prob"] = kept_probabilities.max(axis=1) if len(labelled) else []
    for i, column in enumerate(columns):
        labelled[column] = kept_probabilities[:, i]
    labelled = labelled.sort_values("synapse_id", kind="stable").reset_index(drop=True)
    return labelled, excluded


def confidence_filter(labelled: pd.DataFrame, min_confidence: float) -> pd.DataFrame:
    """Synapses whose highest class probability is at least ``min_confidence``."""
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence}")
    return labelled[labelled["max_prob"] >= min_confidence].reset_index(drop=True)


#: Cut-offs of :func:`confidence_curve` in every evaluation.
CONFIDENCE_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def confidence_curve(
    labelled: pd.DataFrame, n_classes: int, thresholds: Sequence[float] = CONFIDENCE_THRESHOLDS
) -> list[dict]:
    """Synapse accuracy against the fraction kept, for several confidence cut-offs: how much
    accuracy a user buys by discarding uncertain synapses."""
    max_prob = labelled["max_prob"].to_numpy()
    true_idx = labelled["true_idx"].to_numpy(dtype=np.int64)
    pred_idx = labelled["pred_idx"].to_numpy(dtype=np.int64)
    curve = []
    for threshold in thresholds:
        keep = max_prob >= threshold
        confusion = confusion_matrix(true_idx[keep], pred_idx[keep], n_classes)
        curve.append(
            {
                "min_confidence": float(threshold),
                "n": int(keep.sum()),
                "fraction_kept": float(keep.mean()) if keep.size else float("nan"),
                "accuracy": accuracy(confusion),
                "balanced_accuracy": balanced_accuracy(confusion),
            }
        )
    return curve


def aggregate_predictions(
    group_ids: np.ndarray,
    true_idx: np.ndarray,
    probabilities: np.ndarray,
    *,
    method: str = "vote",
    ties: str = "probability",
) -> pd.DataFrame:
    """One prediction per group (neuron, hemilineage) from its synapses.

    ``method="vote"``: the class most synapses predict (argmax). A tie between classes goes,
    with ``ties="probability"``, to the tied class with the highest summed probability over the
    group's synapses, and if that is equal too, to the tied class that comes first in the class
    order; with ``ties="first"`` (the original's rule) straight to the first tied class.
    ``method="mean"``: the argmax of the mean probability; exactly equal maxima go to the class
    that comes first. Either way ``tie`` marks groups where the rule had to choose.

    All synapses of a group must share one true class. Returns group_id, n_synapses, true_idx,
    pred_idx, tie, support (vote share, or mean probability, of the predicted class) and
    majority_share (the share of the synapses that vote for the most-voted class, whichever
    method: the original's neuron-level ``cutoff`` applies to it), ordered by group_id.
    """
    if method not in AGGREGATION_METHODS:
        raise ValueError(f"method must be one of {AGGREGATION_METHODS}, got {method!r}")
    check_ties(ties)
    group_ids = np.asarray(group_ids)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (N, n_classes), got shape {probabilities.shape}")
    n_classes = probabilities.shape[1]
    true_idx = _check_indices("true_idx", true_idx, n_classes)
    probabilities = _check_probabilities(probabilities, true_idx.size, n_classes)
    if group_ids.shape != true_idx.shape:
        raise ValueError(
            f"group_ids and true_idx differ in length ({group_ids.size} vs {true_idx.size})"
        )

    summary = summarize_synapses(group_ids, probabilities)
    groups, inverse, n_synapses = summary.neuron_ids, summary.synapse_index, summary.n_synapses
    n_groups = len(n_synapses)

    true_min = np.full(n_groups, n_classes, dtype=np.int64)
    true_max = np.full(n_groups, -1, dtype=np.int64)
    np.minimum.at(true_min, inverse, true_idx)
    np.maximum.at(true_max, inverse, true_idx)
    mixed = np.flatnonzero(true_min != true_max)
    if mixed.size:
        raise ValueError(f"group {groups[mixed[0]]} holds synapses of different true classes")

    votes = summary.votes
    if method == "vote":
        tied = votes == votes.max(axis=1, keepdims=True)
        if ties == "first":
            pred_idx = votes.argmax(axis=1)  # argmax keeps the first of equal maxima
        else:  # the summed probability decides among tied classes, then the first
            pred_idx = np.where(tied, summary.sums, -np.inf).argmax(axis=1)
        support = votes[np.arange(n_groups), pred_idx] / np.maximum(n_synapses, 1)
    else:
        means = summary.mean_probabilities
        tied = means == means.max(axis=1, keepdims=True)
        pred_idx, support = summary.top_idx, summary.top_probability

    return pd.DataFrame(
        {
            "group_id": groups,
            "n_synapses": n_synapses.astype(np.int64),
            "true_idx": true_min,
            "pred_idx": pred_idx.astype(np.int64),
            "tie": tied.sum(axis=1) > 1,
            "support": support.astype(np.float64),
            "majority_share": summary.majority_share.astype(np.float64),
        }
    )


def check_ties(ties: str) -> str:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    return ties


def check_cutoff(cutoff: float) -> float:
    if not 0.0 <= cutoff <= 1.0:
        raise ValueError(f"cutoff (minimum majority share) must lie in [0, 1], got {cutoff}")
    return cutoff


def n_min_synapse_filter(labelled: pd.DataFrame, n_min: int) -> pd.DataFrame:
    """The synapses of skeletons that hold at least ``n_min`` of them: the original applied
    ``n_min`` at synapse level too, so a neuron's synapses count only where the neuron does."""
    if n_min < 0:
        raise ValueError(f"n_min must be >= 0, got {n_min}")
    sizes = labelled.groupby("skeleton_id")["synapse_id"].transform("size")
    return labelled[sizes.to_numpy() >= n_min].reset_index(drop=True)


def neuron_predictions(
    labelled: pd.DataFrame,
    n_classes: int,
    *,
    method: str = "vote",
    n_min: int = 0,
    cutoff: float = 0.0,
    ties: str = "probability",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per-skeleton predictions of labelled synapses (see :func:`aggregate_predictions`).

    Skeletons with fewer than ``n_min`` synapses, and then those whose majority vote holds less
    than ``cutoff`` of their synapses (the original's neuron-level ``cutoff``), are left out;
    returns the kept rows (with ``skeleton_id`` and ``hemi_lineage_id`` columns) and how many
    were left out by each rule (``n_min``, ``cutoff``).
    """
    groups = aggregate_predictions(
        labelled["skeleton_id"].to_numpy(dtype=np.int64),
        labelled["true_idx"].to_numpy(),
        _probabilities(labelled, n_classes),
        method=method,
        ties=ties,
    ).rename(columns={"group_id": "skeleton_id"})
    lineage_of = labelled.drop_duplicates("skeleton_id").set_index("skeleton_id")["hemi_lineage_id"]
    groups.insert(1, "hemi_lineage_id", groups["skeleton_id"].map(lineage_of).astype("Int64"))
    return _keep(groups, n_min, cutoff)


def hemi_lineage_predictions(
    labelled: pd.DataFrame,
    n_classes: int,
    *,
    method: str = "vote",
    n_min: int = 0,
    cutoff: float = 0.0,
    ties: str = "probability",
    unknown_ids: Iterable[int] = (),
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per-hemilineage predictions, aggregating its labelled synapses like a neuron's.

    The unit is a hemilineage's neurons of one true class: a hemilineage whose neurons have
    different transmitters (e.g. FAFB's DL1_dorsal: acetylcholine and dopamine neurons) gives one
    row per transmitter, so every unit has one truth and no labelled synapse is lost. Synapses
    without a hemilineage or in one of ``unknown_ids`` (the database's unnamed "unknown"
    hemilineages, which group unrelated neurons) are left out, as are units with fewer than
    ``n_min`` synapses or a majority share below ``cutoff``.

    Returns rows ordered by hemi_lineage_id, then true class (hemi_lineage_id, n_neurons,
    n_synapses, true_idx, pred_idx, tie, support, majority_share) and the counts: ``mixed``
    (hemilineages split by transmitter), ``no_hemi_lineage`` (synapses), ``n_min`` and
    ``cutoff`` (units left out).
    """
    if method not in AGGREGATION_METHODS:
        raise ValueError(f"method must be one of {AGGREGATION_METHODS}, got {method!r}")
    unknown = {int(i) for i in unknown_ids}
    lineage = labelled["hemi_lineage_id"]
    known = labelled[lineage.notna() & ~lineage.isin(unknown)]
    left_out = {"no_hemi_lineage": int(len(labelled) - len(known))}
    lineage_ids = known["hemi_lineage_id"].to_numpy(dtype=np.int64)
    true_idx = known["true_idx"].to_numpy(dtype=np.int64)
    # Units (hemilineage, true class), numbered in that sort order.
    units, unit_idx = np.unique(
        np.stack([lineage_ids, true_idx], axis=1).reshape(-1, 2), axis=0, return_inverse=True
    )
    unit_idx = unit_idx.reshape(-1)
    groups = aggregate_predictions(
        unit_idx, true_idx, _probabilities(known, n_classes), method=method, ties=ties
    ).drop(columns="group_id")
    neurons = known.groupby(unit_idx)["skeleton_id"].nunique().to_numpy()
    groups.insert(0, "hemi_lineage_id", units[:, 0].astype(np.int64))
    groups.insert(1, "n_neurons", neurons.astype(np.int64))
    left_out["mixed"] = int(groups["hemi_lineage_id"].value_counts().gt(1).sum())
    groups, small = _keep(groups, n_min, cutoff)
    return groups, {**left_out, **small}


def _probabilities(labelled: pd.DataFrame, n_classes: int) -> np.ndarray:
    columns = [c for c in labelled.columns if c.startswith("prob_")]
    if len(columns) != n_classes:
        raise ValueError(f"expected {n_classes} prob_ columns, found {columns}")
    return labelled[columns].to_numpy(dtype=np.float64)


def _keep(groups: pd.DataFrame, n_min: int, cutoff: float) -> tuple[pd.DataFrame, dict]:
    """Groups with at least ``n_min`` synapses, then with a majority share of at least
    ``cutoff`` (the original kept a share equal to its cutoff); counts left out by each."""
    if n_min < 0:
        raise ValueError(f"n_min must be >= 0, got {n_min}")
    check_cutoff(cutoff)
    large = groups["n_synapses"].to_numpy() >= n_min
    clear = groups["majority_share"].to_numpy() >= cutoff
    left_out = {"n_min": int((~large).sum()), "cutoff": int((large & ~clear).sum())}
    return groups[large & clear].reset_index(drop=True), left_out


def level_metrics(true_idx: np.ndarray, pred_idx: np.ndarray, classes: Sequence[str]) -> dict:
    """Counts, row-normalised confusion, accuracy, balanced and per-class accuracy of one level."""
    n_classes = len(classes)
    confusion = confusion_matrix(
        np.asarray(true_idx, dtype=np.int64), np.asarray(pred_idx, dtype=np.int64), n_classes
    )
    return {
        "n": int(confusion.sum()),
        "accuracy": accuracy(confusion),
        "balanced_accuracy": balanced_accuracy(confusion),
        "per_class_accuracy": dict(
            zip(classes, per_class_accuracy(confusion).tolist(), strict=True)
        ),
        "n_per_class": dict(zip(classes, confusion.sum(axis=1).tolist(), strict=True)),
        "confusion": confusion.tolist(),
        "confusion_normalized": row_normalize(confusion).tolist(),
    }
