"""Which synapses take part in a split, and the group each belongs to.

A group is kept within one part. Grouping by hemilineage or brain region falls back to the
skeleton where that is missing, and (hemilineages) where it is unknown by
:func:`synister.db.unknown_hemi_lineage`: FAFB's ``unknown`` lineage alone holds 118 unrelated
neurons, which would otherwise have to land in one part together.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ..nt import canonical_set

GROUPINGS: tuple[str, ...] = ("skeleton", "hemi_lineage", "brain_region", "synapse")
_COLUMNS = {"skeleton": "skeleton_id", "hemi_lineage": "hemi_lineage_id"}
#: How a group of each grouping is called in messages.
GROUP_WORDS = {
    "skeleton": "neurons",
    "hemi_lineage": "groups (hemilineages, or neurons of unknown ones)",
    "brain_region": "groups (brain regions, or neurons without one)",
    "synapse": "synapses",
}


def eligible_synapses(
    synapses: pd.DataFrame, transmitters: Iterable[str] | None = None
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Synapses that take part in a split, with their single transmitter in column ``nt``.

    A synapse takes part when its skeleton has exactly one known transmitter among the chosen
    ones (``None``: every transmitter some skeleton is known to release, so a neuron known to
    release two is left out). Returns the frame and the chosen transmitters, sorted.
    """
    for column in ("synapse_id", "nt_known"):
        if column not in synapses.columns:
            raise ValueError(f"synapse frame lacks column {column!r}")
    # work per distinct transmitter set, not per synapse: a database has only a handful
    codes, sets = pd.factorize(synapses["nt_known"].to_numpy())
    sets = [frozenset(s) if isinstance(s, Iterable) else frozenset() for s in sets]
    if transmitters is None:
        chosen = frozenset().union(*sets)
    else:
        chosen = canonical_set(transmitters)
        if not chosen:
            raise ValueError("no transmitters chosen")
    among = [s & chosen for s in sets]
    single = np.array([len(a) == 1 for a in among] + [False])  # code -1 (missing) -> last
    names = np.array([next(iter(a)) if len(a) == 1 else "" for a in among] + [""], dtype=object)
    keep = single[codes]
    frame = synapses.loc[keep].copy()
    frame["nt"] = names[codes[keep]]
    return frame.reset_index(drop=True), tuple(sorted(chosen))


def _lone(synapses: pd.DataFrame, by: str, unknown_hemi_lineages: Iterable[int]) -> pd.Series:
    """Per synapse: its group under ``by`` is not known (no hemilineage or brain region, or an
    unknown hemilineage), so it falls back to its skeleton."""
    column = _COLUMNS.get(by, by)
    if column not in synapses.columns:
        raise ValueError(f"grouping by {by} needs column {column!r} in the synapse frame")
    missing = synapses[column].isna()
    if by == "hemi_lineage":
        unknown = {int(i) for i in unknown_hemi_lineages}
        missing |= synapses[column].isin(unknown).fillna(False).astype(bool)
    return missing


def group_keys(
    synapses: pd.DataFrame, by: str, unknown_hemi_lineages: Iterable[int] = ()
) -> pd.Series:
    """The group of every synapse for grouping ``by``, as text keys.

    A synapse without a hemilineage or brain region, or whose hemilineage is one of
    ``unknown_hemi_lineages`` (ids, see :func:`synister.db.unknown_hemi_lineage_ids`), keeps
    its skeleton as its group, so a neuron never straddles parts through its unlabelled
    synapses and unrelated neurons of an "unknown" lineage are not tied together.
    """
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; choose one of {', '.join(GROUPINGS)}")
    if by == "synapse":
        return "synapse:" + synapses["synapse_id"].astype("int64").astype(str)
    missing = _lone(synapses, by, unknown_hemi_lineages)
    values = synapses[_COLUMNS.get(by, by)]
    keys = pd.Series(f"{by}:", index=synapses.index) + values.astype(str)
    if missing.any():
        missing = missing.to_numpy()
        skeletons = synapses.loc[missing, "skeleton_id"]
        keys[missing] = "skeleton:" + skeletons.astype("Int64").astype(str)
    return keys


def lone_neurons(frame: pd.DataFrame, by: str, unknown_hemi_lineages: Iterable[int]) -> int:
    """How many neurons of ``frame`` are groups of their own in a hemilineage split because
    their hemilineage is missing or unknown (0 for other groupings)."""
    if by != "hemi_lineage" or frame.empty:
        return 0
    lone = _lone(frame, by, unknown_hemi_lineages).to_numpy()
    return int(frame.loc[lone, "skeleton_id"].nunique())
