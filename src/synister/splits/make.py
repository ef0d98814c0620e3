"""Splits as the user asks for them: compute, store in the database, show."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from ..db import UNKNOWN_HEMI_LINEAGE_PATTERN, check_name, split_exists, unknown_hemi_lineage_ids
from .groups import GROUPINGS, eligible_synapses, group_keys, lone_neurons
from .neuron_shares import lopsided_warnings
from .program import (
    DEFAULT_TIME_LIMIT_S,
    DEFAULT_TOLERANCE,
    PARTS,
    ImpossibleSplit,
    SplitTargets,
    solve_split,
    split_quality,
)


@dataclass(frozen=True)
class SplitRequest:
    """Everything that defines a split; stored as its meta.

    ``unknown_lineage_pattern`` (hemilineage splits): a regular expression; hemilineages whose
    whole name it matches (case-insensitive), besides those without a name, are unknown, and
    their neurons groups of their own. None: :data:`synister.db.UNKNOWN_HEMI_LINEAGE_PATTERN`.
    ``strict``: refuse a split that misses a target by more than ``tolerance`` instead of
    storing it with warnings.
    """

    by: str = "skeleton"
    train_fraction: float = 0.8
    validation_fraction: float = 0.2
    seed: int = 0
    transmitters: tuple[str, ...] | None = None
    tolerance: float = DEFAULT_TOLERANCE
    unknown_lineage_pattern: str | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        if self.by not in GROUPINGS:
            raise ValueError(f"unknown grouping {self.by!r}; choose one of {', '.join(GROUPINGS)}")
        SplitTargets(self.train_fraction, self.validation_fraction)
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"tolerance must lie in [0, 1), got {self.tolerance}")
        if self.unknown_lineage_pattern is not None:
            try:
                re.compile(self.unknown_lineage_pattern)
            except re.error as error:
                raise ValueError(
                    f"unknown-lineage pattern {self.unknown_lineage_pattern!r} is not a regular "
                    f"expression: {error}"
                ) from None

    @property
    def lineage_pattern(self) -> str:
        """The pattern in effect for unknown hemilineage names."""
        if self.unknown_lineage_pattern is None:
            return UNKNOWN_HEMI_LINEAGE_PATTERN
        return self.unknown_lineage_pattern


def compute_split(
    synapses: pd.DataFrame,
    request: SplitRequest,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    hemi_lineages: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Parts (synapse_id, part) and meta for ``request`` over a database synapse frame.

    ``hemi_lineages`` (a :meth:`Database.hemi_lineages` frame) names the hemilineages, so that
    a hemilineage split can tell the unknown ones; without it only a missing hemilineage is.
    The meta holds the request, ``summary`` (synapses and groups per transmitter and part),
    ``targets``, from :func:`split_quality` ``misses``, ``needed_tolerance`` and ``warnings``
    (after one from :func:`solve_split` where its program stopped at a limit), ``program``
    (how the split was found, see :func:`solve_split`); for a hemilineage split also
    ``unknown_lineage_pattern`` and ``unknown_lineage_neurons`` (neurons that became groups of
    their own).
    """
    frame, transmitters = eligible_synapses(synapses, request.transmitters)
    present = set(frame["nt"].unique())
    if request.transmitters is None:
        transmitters = tuple(nt for nt in transmitters if nt in present)
    absent = [nt for nt in transmitters if nt not in present]
    if absent:
        raise ImpossibleSplit(f"no eligible synapses for transmitter(s) {', '.join(absent)}")
    unknown = set()
    if request.by == "hemi_lineage" and hemi_lineages is not None:
        unknown = unknown_hemi_lineage_ids(hemi_lineages, request.lineage_pattern)
    frame["group"] = group_keys(frame, request.by, unknown)
    if request.by in ("hemi_lineage", "brain_region") and len(frame):
        if frame["group"].str.startswith("skeleton:").all():  # it would be the skeleton split
            known = "a known hemilineage" if request.by == "hemi_lineage" else "a brain region"
            raise ImpossibleSplit(
                f"no synapse of {', '.join(transmitters)} has {known}, so a split by "
                f"{request.by} would be the split by skeleton; import the hemilineages "
                "(hemi_lineages*.json, and skeletons naming them) or use --by skeleton"
            )
    targets = SplitTargets(request.train_fraction, request.validation_fraction)
    parts, solved = solve_split(
        frame,
        targets,
        seed=request.seed,
        tolerance=request.tolerance,
        by=request.by,
        time_limit_s=time_limit_s,
        strict=request.strict,
    )
    quality = split_quality(parts, targets, request.tolerance, request.by)
    meta = {
        "grouping": request.by,
        "train_fraction": request.train_fraction,
        "validation_fraction": request.validation_fraction,
        "seed": request.seed,
        "transmitters": list(transmitters),
        "tolerance": request.tolerance,
        "strict": request.strict,
    }
    if request.by == "hemi_lineage":
        meta["unknown_lineage_pattern"] = request.lineage_pattern
        meta["unknown_lineage_neurons"] = lone_neurons(frame, request.by, unknown)
    skeletons = frame.set_index("synapse_id")["skeleton_id"]
    meta["summary"] = summarize(parts.assign(skeleton_id=parts["synapse_id"].map(skeletons)))
    meta["targets"] = {part: round(targets.share(part), 6) for part in PARTS}
    meta.update({k: quality[k] for k in ("needed_tolerance", "misses")})
    meta["warnings"] = solved.pop("warnings") + quality["warnings"]
    meta["program"] = solved
    meta["neuron_warnings"] = lopsided_warnings(meta["summary"], meta["targets"])
    return parts[["synapse_id", "part"]], meta


def summarize(parts: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """``{nt: {part: {"synapses": n, "groups": m, "neurons": k}}}`` from a frame with nt,
    group, skeleton_id and part."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for nt, per_nt in parts.groupby("nt", sort=True):
        out[str(nt)] = {}
        for part in PARTS:
            rows = per_nt.loc[per_nt["part"] == part]
            out[str(nt)][part] = {
                "synapses": len(rows),
                "groups": int(rows["group"].nunique()),
                "neurons": int(rows["skeleton_id"].nunique()),
            }
    return out


def make_split(
    db, name: str, request: SplitRequest, time_limit_s: float = DEFAULT_TIME_LIMIT_S
) -> dict:
    """Compute split ``name`` over the synapses of ``db`` and store it; returns its meta.

    The meta's ``warnings`` list the targets the stored split misses (see
    :func:`compute_split`). Nothing is stored when the name cannot become part of a run name
    or is taken, or the split is impossible.
    """
    check_name(name, "split name")
    if name in db.splits():
        raise split_exists(name)
    hemi_lineages = db.hemi_lineages() if request.by == "hemi_lineage" else None
    parts, meta = compute_split(db.synapses(), request, time_limit_s, hemi_lineages)
    db.write_split(name, parts, meta)
    return meta


def show_split(db, name: str) -> dict:
    """Synapses and groups per transmitter and part of stored split ``name``, with its meta
    (whose ``warnings`` are the targets it missed when made)."""
    from ..db import UnknownSplit

    stored = db.splits()
    if name not in stored:
        raise UnknownSplit(
            f"no split named {name!r}; stored: {', '.join(sorted(stored)) or 'none'}"
        )
    meta = stored[name] or {}
    synapses = db.synapses(split=name)
    synapses = synapses.loc[synapses["part"].notna()]
    frame, _ = eligible_synapses(synapses, meta.get("transmitters"))
    by = meta.get("grouping", "skeleton")
    unknown = set()
    if by == "hemi_lineage":
        pattern = meta.get("unknown_lineage_pattern", UNKNOWN_HEMI_LINEAGE_PATTERN)
        unknown = unknown_hemi_lineage_ids(db.hemi_lineages(), pattern)
    frame["group"] = group_keys(frame, by, unknown)
    return {
        "name": name,
        "meta": meta,
        "parts": summarize(frame),
        "lone_neurons": lone_neurons(frame, by, unknown),
    }
