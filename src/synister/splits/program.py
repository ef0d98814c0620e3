"""The integer programs that assign groups to parts, and how well a split meets its targets.

As in the original synister, a first program picks which groups go to train+validation versus
test so that, for every transmitter, the synapse share is as close as possible to its target;
a second splits train+validation into train and validation the same way. One binary variable
per group is shared by all transmitters, so a group holding synapses of several transmitters
(a hemilineage, a brain region) still lands on one side only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from .groups import GROUP_WORDS

PARTS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_TOLERANCE = 0.05
DEFAULT_TIME_LIMIT_S = 300.0
#: Misses of a target below this share of a transmitter's synapses count as exact.
DEAD_BAND = 0.002
#: Branch-and-bound nodes per integer program; deterministic, unlike a time limit.
NODE_LIMIT = 2000


class ImpossibleSplit(ValueError):
    """No split gives every transmitter synapses in every part (or, when strict, none brings
    every transmitter within tolerance of its targets)."""


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


def _group_text(frame: pd.DataFrame, nt: str, by: str) -> str:
    """ "octopamine: 5 neurons, the largest (skeleton 7) holds 49 % of its synapses"."""
    sizes = frame.loc[frame["nt"] == nt].groupby("group").size()
    largest = str(sizes.idxmax()).replace(":", " ", 1)
    share = 100.0 * sizes.max() / sizes.sum()
    return (
        f"{nt}: {len(sizes):,} {GROUP_WORDS.get(by, 'groups')}, the largest ({largest}) holds "
        f"{share:.0f} % of its synapses"
    )


def split_quality(
    frame: pd.DataFrame, targets: SplitTargets, tolerance: float, by: str = "group"
) -> dict:
    """How well a split (columns nt, group, part) meets its targets.

    Returns ``needed_tolerance`` (the largest miss of any transmitter's share of any part,
    rounded up to 0.001: the tolerance this split passes), ``misses`` (one dict per
    transmitter and part beyond ``tolerance``), ``empty`` (``[nt, part]`` without synapses) and
    ``warnings``: one line per transmitter that misses, naming its parts' shares and its groups
    (how many, how big the largest), then one saying which tolerance the split needs.
    """
    totals = frame.groupby("nt").size()
    counts = frame.groupby(["nt", "part"]).size()
    misses, empty, worst = [], [], 0.0
    for nt, total in totals.items():
        for part in PARTS:
            reached = int(counts.get((nt, part), 0))
            share, target = reached / total, targets.share(part)
            worst = max(worst, abs(share - target))
            if reached == 0:
                empty.append([str(nt), part])
            if abs(share - target) > tolerance + 1e-12:
                misses.append(
                    {
                        "transmitter": str(nt),
                        "part": part,
                        "share": round(share, 4),
                        "target": round(target, 4),
                        "synapses": reached,
                        "total": int(total),
                    }
                )
    needed = math.ceil(worst * 1000 - 1e-6) / 1000
    warnings = []
    for nt in dict.fromkeys(m["transmitter"] for m in misses):
        shares = ", ".join(
            f"{m['part']} {m['share']:.3f} (target {m['target']:.3f})"
            for m in misses
            if m["transmitter"] == nt
        )
        warnings.append(
            f"{nt} misses its target share by more than {tolerance:g}: {shares}; "
            + _group_text(frame, nt, by)
        )
    if warnings:
        warnings.append(f"the best split by {by} needs --tolerance {needed:.3f}")
    return {"needed_tolerance": needed, "misses": misses, "empty": empty, "warnings": warnings}


def _refuse(frame: pd.DataFrame, quality: dict, by: str, strict: bool, tolerance: float) -> None:
    """Raise :class:`ImpossibleSplit` for parts without synapses, and for misses when strict."""
    if quality["empty"]:
        nts = list(dict.fromkeys(nt for nt, _ in quality["empty"]))
        where = ", ".join(f"{nt} in {part}" for nt, part in quality["empty"])
        raise ImpossibleSplit(
            f"no split by {by} gives every transmitter synapses in every part (none for "
            f"{where}): {'; '.join(_group_text(frame, nt, by) for nt in nts)}; a transmitter "
            "needs at least three groups, one per part: leave it out (--nt) or split by a "
            "finer grouping"
        )
    if strict and quality["misses"]:
        raise ImpossibleSplit(
            f"no split by {by} brings every transmitter within --tolerance {tolerance:g} of "
            f"its targets (--strict): {'; '.join(quality['warnings'])}"
        )


def assign_parts(
    synapses: pd.DataFrame,
    targets: SplitTargets = SplitTargets(),
    *,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    by: str = "group",
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    strict: bool = False,
) -> pd.DataFrame:
    """Assign each synapse a part; ``synapses`` has columns synapse_id, nt (one name), group.

    Returns synapse_id, nt, group, part: the best split the integer programs find. Raises
    :class:`ImpossibleSplit` when a transmitter would have no synapse in some part, or, with
    ``strict``, when its share of some part is more than ``tolerance`` from its target (``by``
    names the grouping in messages; see :func:`split_quality` for the misses otherwise).
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
    inner = frame.loc[first_side]
    if len(inner):
        train_side = _choose(
            inner, 1.0 - targets.validation_fraction, rng, by, tolerance, time_limit_s
        )
        frame.loc[inner.index[~train_side], "part"] = "validation"
    _refuse(frame, split_quality(frame, targets, tolerance, by), by, strict, tolerance)
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
