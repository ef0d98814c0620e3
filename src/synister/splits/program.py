"""How groups are assigned to parts, and how well a split meets its targets.

The original's two integer programs go first (train+validation versus test, then train versus
validation; one binary per group shared by all transmitters, so a hemilineage or brain region
lands on one side): they are quick, and a split of theirs that gives every transmitter synapses
in every part within the tolerance is kept. Otherwise one program over the three parts at once
(:mod:`.joint`) decides, and only it can call a split impossible."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from . import joint
from .groups import GROUP_WORDS

PARTS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_TOLERANCE = 0.05
#: Seconds each integer program may run (the two seeding ones, then the joint one); their
#: node limits stop them first on FAFB-sized databases.
DEFAULT_TIME_LIMIT_S = 60.0
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
    synapses: pd.DataFrame, targets: SplitTargets = SplitTargets(), **options
) -> pd.DataFrame:
    """Assign each synapse a part; ``synapses`` has columns synapse_id, nt (one name), group.

    Returns synapse_id, nt, group, part: the best split the integer programs find. ``options``
    (seed, tolerance, by, time_limit_s, strict) and errors: see :func:`solve_split`, which also
    says how the split was found.
    """
    return solve_split(synapses, targets, **options)[0]


def solve_split(
    synapses: pd.DataFrame,
    targets: SplitTargets = SplitTargets(),
    *,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    by: str = "group",
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    strict: bool = False,
) -> tuple[pd.DataFrame, dict]:
    """:func:`assign_parts`, with how the split was found: ``solver`` (which program found it),
    ``status`` (``optimal``: no split costs less by more than :data:`.joint.ABSOLUTE_GAP`;
    ``within tolerance``: the original's two programs met every target within ``tolerance``,
    so the joint program was not needed; ``limit``: the joint program stopped at
    ``time_limit_s`` or its node limit), ``cost`` and ``bound`` (:class:`.joint.Objective`'s
    value and the solver's lower bound), ``nodes``, ``seconds``, and ``warnings`` (one where it
    stopped at a limit with a split that misses a target, naming the gap).

    Raises :class:`ImpossibleSplit` when no split gives every transmitter synapses in every part
    (a transmitter of fewer than three groups, or transmitters whose groups conflict, proved by
    the joint program), or, with ``strict``, when a share of some part is more than
    ``tolerance`` from its target (``by`` names the grouping in messages; see
    :func:`split_quality` for the misses otherwise).
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
    if frame["group"].is_unique:
        frame["part"] = _random_parts(frame["nt"].to_numpy(), targets, rng)
        solved = {"solver": "random (one synapse per group)", "status": "optimal", "warnings": []}
    else:
        group_codes, group_names = pd.factorize(frame["group"], sort=True)
        nt_codes, nt_names = pd.factorize(frame["nt"], sort=True)
        counts = np.zeros((len(group_names), len(nt_names)))
        np.add.at(counts, (group_codes, nt_codes), 1.0)
        _refuse_few_groups(frame, counts, nt_names, by)
        parts, solved = _solve_groups(counts, targets, rng, tolerance, time_limit_s)
        if parts is None:
            _refuse_conflict(frame, counts, nt_names, by, solved, time_limit_s)
        frame["part"] = np.asarray(PARTS, dtype=object)[parts[group_codes]]
    _refuse(frame, split_quality(frame, targets, tolerance, by), by, strict, tolerance)
    return frame, solved


def _random_parts(nts: np.ndarray, targets: SplitTargets, rng: np.random.Generator) -> np.ndarray:
    """Single-synapse groups: seeded random subsets of exactly the target sizes."""
    parts = np.full(len(nts), "test", dtype=object)
    first_side = _random_bipartition(nts, targets.train_fraction, rng)
    inner = np.flatnonzero(first_side)
    train_side = _random_bipartition(nts[inner], 1.0 - targets.validation_fraction, rng)
    parts[inner] = np.where(train_side, "train", "validation")
    return parts


def _two_stage(
    counts: np.ndarray,
    targets: SplitTargets,
    rng: np.random.Generator,
    band: float,
    time_limit_s: float,
) -> np.ndarray | None:
    """Part index per group (row of ``counts``) from the original's two programs; None where
    either has no solution."""
    first, _ = _bipartition(counts, targets.train_fraction, rng, band, time_limit_s)
    if first.size == 0:
        return None
    parts = np.full(len(counts), PARTS.index("test"))
    inner = counts[first]
    inner = inner[:, inner.sum(axis=0) > 0]
    if len(inner):
        fraction = 1.0 - targets.validation_fraction
        train, _ = _bipartition(inner, fraction, rng, band, time_limit_s)
        if train.size == 0:
            return None
        parts[first] = np.where(train, PARTS.index("train"), PARTS.index("validation"))
    return parts


def _solve_groups(
    counts: np.ndarray,
    targets: SplitTargets,
    rng: np.random.Generator,
    tolerance: float,
    time_limit_s: float,
) -> tuple[np.ndarray | None, dict]:
    """Part index per group and how it was found (see :func:`solve_split`); parts None when the
    joint program proved that no split gives every transmitter synapses in every part, or
    found none within its limits.

    The original's two programs go first (they are quick): a split of theirs that gives every
    transmitter synapses in every part within ``tolerance`` of its targets is kept. Otherwise
    the joint program decides, and their split is kept only where it is as good.
    """
    band = min(DEAD_BAND, tolerance / 4)
    objective = joint.Objective(tuple(targets.share(p) for p in PARTS), band, tolerance)
    start = time.perf_counter()
    seeded = _two_stage(counts, targets, rng, band, time_limit_s)
    if seeded is not None and not joint.covers(counts, seeded, len(PARTS)):
        seeded = None
    if seeded is not None and not objective.misses(counts, seeded)[1].any():
        cost = objective.cost(counts, seeded)
        solved = {"solver": "two-stage programs", "status": "within tolerance", "cost": cost}
        return seeded, {**solved, "seconds": time.perf_counter() - start, "warnings": []}
    result = joint.solve(counts, objective, rng=rng, time_limit_s=time_limit_s)
    solved = {"solver": "joint program", "status": result.status}
    parts, cost = result.parts, result.cost
    if seeded is not None:
        seed_cost = objective.cost(counts, seeded)
        if cost is None or seed_cost <= cost + 1e-9:  # as good or better: keep it
            solved["solver"], parts, cost = "two-stage programs", seeded, seed_cost
    solved.update(cost=cost, bound=result.bound)
    solved.update(nodes=result.nodes, seconds=time.perf_counter() - start, warnings=[])
    if result.status == "limit":
        solved["stopped_at"] = _limit_text(result.message, time_limit_s)
    if parts is not None and result.status == "limit" and objective.misses(counts, parts)[1].any():
        # a split within tolerance needs no proof (as the two programs' above); this one
        # misses a target, and a better split may not
        solved["warnings"].append(_gap_warning(solved))
    return parts, solved


def _limit_text(message: str, time_limit_s: float) -> str:
    """Which limit stopped the joint program, from HiGHS's message."""
    if "time limit" in message.lower():
        return f"time limit of {time_limit_s:g} s"
    return f"limit of {joint.JOINT_NODE_LIMIT:,} branch-and-bound nodes"


def _gap_warning(solved: dict) -> str:
    """The joint program stopped at a limit: how far from the best the stored split may be."""
    cost, bound = solved["cost"], max(solved["bound"] or 0.0, 0.0)
    return (
        f"the split program stopped at its {solved['stopped_at']} before proving this split "
        f"the best: its cost is {cost:.4f}, no split costs less than {bound:.4f} (gap "
        f"{cost - bound:.4f}; the cost sums the shares' misses from their targets over "
        f"transmitters and parts, misses beyond --tolerance counted {joint.TOLERANCE_WEIGHT:g} "
        "times)"
    )


def _refuse_few_groups(frame: pd.DataFrame, counts: np.ndarray, nt_names, by: str) -> None:
    """A transmitter in fewer groups than parts cannot have synapses in every part."""
    n_groups = (counts > 0).sum(axis=0)
    few = {str(nt): n for nt, n in zip(nt_names, n_groups, strict=True) if n < len(PARTS)}
    if few:
        where = ", ".join(f"{nt} in {len(PARTS) - n} of the 3 parts" for nt, n in few.items())
        raise ImpossibleSplit(
            f"no split by {by} gives every transmitter synapses in every part (none for "
            f"{where}): {'; '.join(_group_text(frame, nt, by) for nt in few)}; a transmitter "
            "needs at least three groups, one per part: leave it out (--nt) or split by a "
            "finer grouping"
        )


def _refuse_conflict(
    frame: pd.DataFrame, counts: np.ndarray, nt_names, by: str, solved: dict, time_limit_s: float
) -> None:
    """Raise :class:`ImpossibleSplit` for a joint program without a solution: proved infeasible
    (naming transmitters whose groups conflict) or stopped at its limit."""
    if solved["status"] != "infeasible":
        raise ImpossibleSplit(
            f"no split by {by} that gives every transmitter synapses in every part was found "
            f"before the split program stopped at its {solved['stopped_at']}, nor was one "
            "proved impossible: leave out transmitters of few groups (--nt) or split by a finer "
            "grouping"
        )
    names = [str(nt_names[t]) for t in joint.conflicting(counts, time_limit_s)]
    raise ImpossibleSplit(
        f"no split by {by} gives every transmitter synapses in every part: {', '.join(names)} "
        "share groups so that no assignment of groups to parts gives each of them synapses in "
        f"all three (the integer program is infeasible): "
        f"{'; '.join(_group_text(frame, nt, by) for nt in names)}; leave one of them out "
        "(--nt) or split by a finer grouping"
    )
