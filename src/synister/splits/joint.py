"""One integer program that puts every group into train, validation or test at once.

The original's two programs (test first, then validation out of the rest) can hand the test part
every small group of a transmitter and leave validation none, and then call a split impossible
that exists: on FAFB's hemilineages GABA has 15 groups, one of them with about 80 % of its
synapses. This program sees the three parts together: each group in exactly one part, every
transmitter with at least one group in every part, and per transmitter and part the miss of the
synapse share from its target as small as possible. Only when it is infeasible is a split
impossible; then :func:`conflicting` names transmitters whose groups leave no way out.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import block_array, csr_array, hstack, identity, kron

#: A miss beyond the tolerance costs this much more than one within it, so the program brings
#: every share within the tolerance where it can before it brings shares closer to target.
TOLERANCE_WEIGHT = 10.0
#: Branch-and-bound nodes of the joint program; deterministic, unlike a time limit.
JOINT_NODE_LIMIT = 2000
#: The program stops (optimal) once no split can cost less by more than this: a sum of misses
#: of 0.2 % of a transmitter's synapses, the dead band of one share.
ABSOLUTE_GAP = 0.002


@dataclass(frozen=True)
class Objective:
    """What the program minimises: per transmitter and part, (miss - band) / total plus
    :data:`TOLERANCE_WEIGHT` * (miss - tolerance) / total, each counted only where positive;
    ``miss`` is the distance in synapses of the part's count from ``shares`` * total."""

    shares: tuple[float, ...]
    band_fraction: float
    tolerance: float

    def limits(self, totals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Targets, bands and tolerances in synapses, each (transmitters, parts)."""
        target = np.outer(totals, self.shares)
        band = np.outer(np.floor(self.band_fraction * totals), np.ones(len(self.shares)))
        allowed = np.outer(self.tolerance * totals, np.ones(len(self.shares)))
        return target, band, allowed

    def misses(self, counts: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per transmitter and part, the share missed beyond the band and beyond the tolerance
        when group ``g`` (row of ``counts``) goes to part ``parts[g]``."""
        totals = counts.sum(axis=0)
        reached = np.stack([counts[parts == p].sum(axis=0) for p in range(len(self.shares))], 1)
        target, band, allowed = self.limits(totals)
        miss = np.abs(reached - target)
        scale = totals[:, None]
        return np.maximum(miss - band, 0) / scale, np.maximum(miss - allowed, 0) / scale

    def cost(self, counts: np.ndarray, parts: np.ndarray) -> float:
        """The objective of assigning group ``g`` (row of ``counts``) to part ``parts[g]``."""
        beyond_band, beyond_tolerance = self.misses(counts, parts)
        return float(beyond_band.sum() + TOLERANCE_WEIGHT * beyond_tolerance.sum())


@dataclass(frozen=True)
class JointResult:
    """``parts``: part index per group (None without a solution); ``status``: optimal, limit
    (stopped at the time or node limit; ``parts`` may be set) or infeasible; ``cost`` and
    ``bound``: the objective of ``parts`` and the solver's proven lower bound."""

    parts: np.ndarray | None
    status: str
    cost: float | None
    bound: float | None
    nodes: int | None
    seconds: float
    message: str


def covers(counts: np.ndarray, parts: np.ndarray, n_parts: int) -> bool:
    """Whether every transmitter (column) has synapses in every part."""
    return all((counts[parts == p].sum(axis=0) > 0).all() for p in range(n_parts))


def solve(
    counts: np.ndarray,
    objective: Objective | None,
    *,
    rng: np.random.Generator | None = None,
    time_limit_s: float,
    node_limit: int | None = None,
) -> JointResult:
    """Assign the groups (rows of ``counts``, groups x transmitters) to parts.

    ``objective`` None asks only whether an assignment with every transmitter in every part
    exists. Rows are shuffled by ``rng`` first, so the seed picks among equally good splits.
    ``node_limit`` None: :data:`JOINT_NODE_LIMIT`.
    """
    n_groups, n_nts = counts.shape
    n_parts = len(objective.shares) if objective is not None else 3  # train, validation, test
    order = rng.permutation(n_groups) if rng is not None else np.arange(n_groups)
    shuffled = counts[order]
    n_x = n_groups * n_parts  # x[p * n_groups + g]: group g in part p
    per_part = csr_array(shuffled.T)  # transmitters x groups
    one_part = hstack([identity(n_groups)] * n_parts)
    present = kron(identity(n_parts), (per_part > 0).astype(float))  # row p * n_nts + t
    n_dev = n_parts * n_nts
    blocks = [[one_part], [present]]
    lower = [np.ones(n_groups), np.ones(n_dev)]
    upper = [np.ones(n_groups), np.full(n_dev, np.inf)]
    cost = np.zeros(n_x)
    if objective is not None:
        # slack d (miss beyond the band) and e (miss beyond the tolerance) per transmitter, part
        sums, eye = kron(identity(n_parts), per_part), identity(n_dev)
        blocks = [row + [None, None] for row in blocks]
        blocks += [[sums, -eye, None], [sums, eye, None], [sums, None, -eye], [sums, None, eye]]
        target, band, allowed = (a.T.ravel() for a in objective.limits(counts.sum(axis=0)))
        for half_width in (band, allowed):
            lower += [np.full(n_dev, -np.inf), target - half_width]
            upper += [target + half_width, np.full(n_dev, np.inf)]
        weight = np.tile(1.0 / counts.sum(axis=0), n_parts)
        cost = np.concatenate([cost, weight, TOLERANCE_WEIGHT * weight])
    n_vars = len(cost)
    matrix = block_array(blocks, format="csr")
    integrality = np.zeros(n_vars)
    integrality[:n_x] = 1
    var_upper = np.full(n_vars, np.inf)
    var_upper[:n_x] = 1.0
    options = {"time_limit": time_limit_s, "node_limit": node_limit or JOINT_NODE_LIMIT}
    options["mip_abs_gap"] = ABSOLUTE_GAP  # SciPy passes it on to HiGHS, with a warning
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unrecognized options", RuntimeWarning)
        result = milp(
            cost,
            integrality=integrality,
            bounds=Bounds(np.zeros(n_vars), var_upper),
            constraints=LinearConstraint(matrix, np.concatenate(lower), np.concatenate(upper)),
            options=options,
        )
    seconds = time.perf_counter() - start
    status = {0: "optimal", 2: "infeasible"}.get(result.status, "limit")
    parts = None
    if result.x is not None:
        chosen = result.x[:n_x].reshape(n_parts, n_groups).argmax(axis=0)
        parts = np.empty(n_groups, dtype=int)
        parts[order] = chosen
    found = parts is not None and objective is not None
    return JointResult(
        parts=parts,
        status=status,
        cost=objective.cost(counts, parts) if found else None,
        bound=getattr(result, "mip_dual_bound", None),
        nodes=getattr(result, "mip_node_count", None),
        seconds=seconds,
        message=str(result.message),
    )


def conflicting(counts: np.ndarray, time_limit_s: float) -> list[int]:
    """Columns (transmitters) of an infeasible ``counts`` that still cannot all have synapses in
    every part, each of them needed for that: one at a time, a transmitter is dropped where the
    rest stays infeasible (each check a small feasibility program)."""
    keep = list(range(counts.shape[1]))
    for column in range(counts.shape[1]):
        trial = [k for k in keep if k != column]
        sub = counts[:, trial]
        sub = sub[sub.sum(axis=1) > 0]
        if trial and solve(sub, None, time_limit_s=time_limit_s).status == "infeasible":
            keep = trial
    return keep
