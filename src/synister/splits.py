"""Group-disjoint train/validation/test splits, balanced per transmitter.

Synapses of one group (a skeleton, a hemilineage, a brain region, or a single synapse) never
land in two parts, so a network cannot score well by recognising a neuron it saw in training.
As in the original synister, an integer program picks which groups go to train+validation
versus test so that, for every transmitter, the synapse share is as close as possible to its
target; a second program then splits train+validation into train and validation the same way.
One binary variable per group is shared by all transmitters, so a group holding synapses of
several transmitters (a hemilineage, a brain region) still lands on one side only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from .nt import canonical_set

GROUPINGS: tuple[str, ...] = ("skeleton", "hemi_lineage", "brain_region", "synapse")
PARTS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_TOLERANCE = 0.05
DEFAULT_TIME_LIMIT_S = 300.0
#: Misses of a target below this share of a transmitter's synapses count as exact.
DEAD_BAND = 0.002
#: Branch-and-bound nodes per integer program; deterministic, unlike a time limit.
NODE_LIMIT = 2000


class ImpossibleSplit(ValueError):
    """No assignment of groups brings every transmitter within tolerance of its targets."""


@dataclass(frozen=True)
class SplitTargets:
    """Share of each transmitter's synapses wanted in each part.

    ``train_fraction`` is the share of train+validation among all synapses (the rest is test);
    ``validation_fraction`` is the share of validation inside train+validation.
    """

    train_fraction: float = 0.8
    validation_fraction: float = 0.2

    def __post_init__(self) -> None:
        for field, value in (
            ("train_fraction", self.train_fraction),
            ("validation_fraction", self.validation_fraction),
        ):
            if not 0.0 < value < 1.0:
                raise ValueError(f"{field} must lie strictly between 0 and 1, got {value}")

    def share(self, part: str) -> float:
        """Target share of ``part`` among all of a transmitter's synapses."""
        if part == "test":
            return 1.0 - self.train_fraction
        if part == "validation":
            return self.train_fraction * self.validation_fraction
        if part == "train":
            return self.train_fraction * (1.0 - self.validation_fraction)
        raise ValueError(f"unknown part {part!r}; parts are {', '.join(PARTS)}")


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


def group_keys(synapses: pd.DataFrame, by: str) -> pd.Series:
    """The group of every synapse for grouping ``by``, as text keys.

    A synapse without a hemilineage or brain region keeps its skeleton as its group, so a
    neuron never straddles parts through its unlabelled synapses.
    """
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; choose one of {', '.join(GROUPINGS)}")
    if by == "synapse":
        return "synapse:" + synapses["synapse_id"].astype("int64").astype(str)
    column = {"skeleton": "skeleton_id", "hemi_lineage": "hemi_lineage_id"}.get(by, by)
    if column not in synapses.columns:
        raise ValueError(f"grouping by {by} needs column {column!r} in the synapse frame")
    values = synapses[column]
    missing = values.isna()
    keys = pd.Series(f"{by}:", index=synapses.index) + values.astype(str)
    if missing.any():
        skeletons = synapses.loc[missing, "skeleton_id"]
        keys[missing] = "skeleton:" + skeletons.astype("Int64").astype(str)
    return keys


def _bipartition(
    counts: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    band_fraction: float,
    time_limit_s: float,
) -> tuple[np.ndarray, str]:
    """Choose groups (rows of ``counts``, groups x transmitters) for the ``fraction`` side.

    Minimises the sum over transmitters of (|chosen synapses - target| - band) / total, where
    misses within ``band_fraction`` of a transmitter's synapses cost nothing: such splits are
    all equally good, and the solver stops at the first one instead of spending minutes proving
    a 0.01 % improvement. Every transmitter present in more than one group gets groups on both
    sides. Rows are shuffled by ``rng`` first, so the seed picks among equally good solutions.
    A node limit (not only a time limit) keeps the result the same on fast and slow machines.
    Returns the boolean choice and the solver's message.
    """
    n_groups, n_nts = counts.shape
    order = rng.permutation(n_groups)
    shuffled = counts[order]
    totals = shuffled.sum(axis=0)
    targets = np.rint(fraction * totals)
    bands = np.floor(band_fraction * totals)
    # variables: x (n_groups binaries), then over_t, under_t (continuous >= 0)
    over, under = n_groups, n_groups + n_nts
    n_vars = n_groups + 2 * n_nts
    cost = np.zeros(n_vars)
    cost[over:under] = 1.0 / totals
    cost[under:] = 1.0 / totals

    rows, cols, vals = [], [], []
    lower, upper = [], []

    def add_row(columns, coefficients, low, high):
        rows.extend([len(lower)] * len(columns))
        cols.extend(columns)
        vals.extend(coefficients)
        lower.append(low)
        upper.append(high)

    for t in range(n_nts):
        groups = list(np.flatnonzero(shuffled[:, t]))
        sizes = list(shuffled[groups, t])
        # target - band - under_t <= sum_g n_gt x_g <= target + band + over_t
        add_row([*groups, over + t], [*sizes, -1.0], -np.inf, targets[t] + bands[t])
        add_row([*groups, under + t], [*sizes, 1.0], targets[t] - bands[t], np.inf)
        # 1 <= (groups of t on the fraction side) <= k_t - 1 where t lies in k_t > 1 groups
        if len(groups) > 1:
            add_row(groups, [1.0] * len(groups), 1.0, len(groups) - 1.0)
    matrix = csr_array((vals, (rows, cols)), shape=(len(lower), n_vars))
    integrality = np.zeros(n_vars)
    integrality[:n_groups] = 1
    var_upper = np.full(n_vars, np.inf)
    var_upper[:n_groups] = 1.0
    result = milp(
        cost,
        integrality=integrality,
        bounds=Bounds(np.zeros(n_vars), var_upper),
        constraints=LinearConstraint(matrix, lower, upper),
        options={"time_limit": time_limit_s, "node_limit": NODE_LIMIT},
    )
    if result.x is None:
        return np.zeros(0, dtype=bool), result.message
    chosen = np.zeros(n_groups, dtype=bool)
    chosen[order] = result.x[:n_groups] > 0.5
    return chosen, result.message


def _random_bipartition(nts: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Single-synapse groups: per transmitter, a seeded random subset of exactly the target size."""
    chosen = np.zeros(len(nts), dtype=bool)
    for nt in np.unique(nts):
        members = np.flatnonzero(nts == nt)
        n_side = int(np.rint(fraction * len(members)))
        if len(members) > 1:
            n_side = min(max(n_side, 1), len(members) - 1)
        chosen[rng.permutation(members)[:n_side]] = True
    return chosen


def _check_shares(
    frame: pd.DataFrame, targets: SplitTargets, parts: Sequence[str], tolerance: float, by: str
) -> None:
    """Raise :class:`ImpossibleSplit` for the worst transmitter/part beyond ``tolerance``."""
    totals = frame.groupby("nt").size()
    worst = None
    for part in parts:
        in_part = frame.loc[frame["part"] == part].groupby("nt").size()
        for nt, total in totals.items():
            reached = int(in_part.get(nt, 0))
            miss = abs(reached / total - targets.share(part))
            if miss > tolerance + 1e-12 and (worst is None or miss > worst[0]):
                worst = (miss, nt, part, reached, int(total))
    if worst is not None:
        _, nt, part, reached, total = worst
        raise ImpossibleSplit(
            f"transmitter {nt!r}: no split by {by} puts {targets.share(part):.3f} "
            f"(± {tolerance:.2f}) of its synapses in {part}; best reached {reached / total:.3f} "
            f"({reached:,} of {total:,} synapses)"
        )


def assign_parts(
    synapses: pd.DataFrame,
    targets: SplitTargets = SplitTargets(),
    *,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    by: str = "group",
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
) -> pd.DataFrame:
    """Assign each synapse a part; ``synapses`` has columns synapse_id, nt (one name), group.

    Returns synapse_id, nt, group, part. Raises :class:`ImpossibleSplit` when a transmitter's
    share of some part is more than ``tolerance`` from its target (``by`` names the grouping
    in that message).
    """
    for column in ("synapse_id", "nt", "group"):
        if column not in synapses.columns:
            raise ValueError(f"synapse frame lacks column {column!r}")
    if synapses.empty:
        raise ImpossibleSplit("no synapse takes part in the split")
    if synapses["synapse_id"].duplicated().any():
        first = synapses.loc[synapses["synapse_id"].duplicated(), "synapse_id"].iloc[0]
        raise ValueError(f"synapse id {first} appears twice in the split input")
    rng = np.random.default_rng(seed)
    frame = synapses[["synapse_id", "nt", "group"]].reset_index(drop=True).copy()
    frame["part"] = "test"
    first_side = _choose(frame, targets.train_fraction, rng, by, tolerance, time_limit_s)
    frame.loc[first_side, "part"] = "train"
    _check_shares(frame, targets, ["test"], tolerance, by)
    inner = frame.loc[first_side]
    train_side = _choose(inner, 1.0 - targets.validation_fraction, rng, by, tolerance, time_limit_s)
    frame.loc[inner.index[~train_side], "part"] = "validation"
    _check_shares(frame, targets, PARTS, tolerance, by)
    return frame


def _choose(
    frame: pd.DataFrame,
    fraction: float,
    rng: np.random.Generator,
    by: str,
    tolerance: float,
    time_limit_s: float,
) -> np.ndarray:
    """Boolean per row of ``frame``: on the ``fraction`` side of a group-disjoint bipartition."""
    if frame["group"].is_unique:
        return _random_bipartition(frame["nt"].to_numpy(), fraction, rng)
    group_codes, group_names = pd.factorize(frame["group"], sort=True)
    nt_codes, nt_names = pd.factorize(frame["nt"], sort=True)
    counts = np.zeros((len(group_names), len(nt_names)))
    np.add.at(counts, (group_codes, nt_codes), 1.0)
    band = min(DEAD_BAND, tolerance / 4)
    chosen_groups, message = _bipartition(counts, fraction, rng, band, time_limit_s)
    if chosen_groups.size == 0:
        raise ImpossibleSplit(
            f"no split by {by} gives every transmitter ({', '.join(nt_names)}) groups on both "
            f"sides: {message}"
        )
    return chosen_groups[group_codes]


@dataclass(frozen=True)
class SplitRequest:
    """Everything that defines a split; stored as its meta."""

    by: str = "skeleton"
    train_fraction: float = 0.8
    validation_fraction: float = 0.2
    seed: int = 0
    transmitters: tuple[str, ...] | None = None
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if self.by not in GROUPINGS:
            raise ValueError(f"unknown grouping {self.by!r}; choose one of {', '.join(GROUPINGS)}")
        SplitTargets(self.train_fraction, self.validation_fraction)
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"tolerance must lie in [0, 1), got {self.tolerance}")


def compute_split(
    synapses: pd.DataFrame, request: SplitRequest, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> tuple[pd.DataFrame, dict]:
    """Parts (synapse_id, part) and meta for ``request`` over a database synapse frame."""
    frame, transmitters = eligible_synapses(synapses, request.transmitters)
    present = set(frame["nt"].unique())
    if request.transmitters is None:
        transmitters = tuple(nt for nt in transmitters if nt in present)
    absent = [nt for nt in transmitters if nt not in present]
    if absent:
        raise ImpossibleSplit(f"no eligible synapses for transmitter(s) {', '.join(absent)}")
    frame["group"] = group_keys(frame, request.by)
    targets = SplitTargets(request.train_fraction, request.validation_fraction)
    parts = assign_parts(
        frame,
        targets,
        seed=request.seed,
        tolerance=request.tolerance,
        by=request.by,
        time_limit_s=time_limit_s,
    )
    meta = {
        "grouping": request.by,
        "train_fraction": request.train_fraction,
        "validation_fraction": request.validation_fraction,
        "seed": request.seed,
        "transmitters": list(transmitters),
        "tolerance": request.tolerance,
        "summary": summarize(parts),
    }
    return parts[["synapse_id", "part"]], meta


def summarize(parts: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """``{nt: {part: {"synapses": n, "groups": m}}}`` from a frame with nt, group, part."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for nt, per_nt in parts.groupby("nt", sort=True):
        out[str(nt)] = {}
        for part in PARTS:
            rows = per_nt.loc[per_nt["part"] == part]
            out[str(nt)][part] = {
                "synapses": len(rows),
                "groups": int(rows["group"].nunique()),
            }
    return out


def make_split(
    db, name: str, request: SplitRequest, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> dict:
    """Compute split ``name`` over the synapses of ``db`` and store it; returns its meta.

    Nothing is stored when the split is impossible or the name is taken.
    """
    from .db import SplitExists

    if name in db.splits():
        raise SplitExists(f"a split named {name!r} is already stored")
    parts, meta = compute_split(db.synapses(), request, time_limit_s)
    db.write_split(name, parts, meta)
    return meta


def show_split(db, name: str) -> dict:
    """Synapses and groups per transmitter and part of stored split ``name``, with its meta."""
    from .db import UnknownSplit

    stored = db.splits()
    if name not in stored:
        raise UnknownSplit(
            f"no split named {name!r}; stored: {', '.join(sorted(stored)) or 'none'}"
        )
    meta = stored[name] or {}
    synapses = db.synapses(split=name)
    synapses = synapses.loc[synapses["part"].notna()]
    frame, _ = eligible_synapses(synapses, meta.get("transmitters"))
    frame["group"] = group_keys(frame, meta.get("grouping", "skeleton"))
    return {"name": name, "meta": meta, "parts": summarize(frame)}
