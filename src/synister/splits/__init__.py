"""Group-disjoint train/validation/test splits, balanced per transmitter.

Synapses of one group (a skeleton, a hemilineage, a brain region, or a single synapse) never
land in two parts, so a network cannot score well by recognising a neuron it saw in training.
As in the original synister, integer programs choose the parts (:mod:`.program`) of the
groups (:mod:`.groups`), and where the original's two programs fail, one over the three parts
at once (:mod:`.joint`); :mod:`.make` computes, stores and shows a split.

Like the original, the best split the programs find is kept even where it misses a target by
more than the tolerance: the misses come back as warnings (in the split's meta), which say
which groups are too few or too big and what tolerance the split needs; ``strict`` turns them
into :class:`ImpossibleSplit`. A split is refused only where no split gives every
transmitter synapses in every part, as the joint program proves. In a hemilineage split a
neuron of an unknown hemilineage (none, or a name :func:`synister.db.unknown_hemi_lineage`
calls unknown, such as FAFB's ``unknown`` and ``new2_ventral``) is a group of its own: neurons
that share only a missing name are not a lineage.
"""

from .groups import GROUP_WORDS, GROUPINGS, eligible_synapses, group_keys, lone_neurons
from .make import SplitRequest, compute_split, make_split, show_split, summarize
from .program import (
    DEAD_BAND,
    DEFAULT_TIME_LIMIT_S,
    DEFAULT_TOLERANCE,
    NODE_LIMIT,
    PARTS,
    ImpossibleSplit,
    SplitTargets,
    assign_parts,
    solve_split,
    split_quality,
)

__all__ = [
    "DEAD_BAND",
    "DEFAULT_TIME_LIMIT_S",
    "DEFAULT_TOLERANCE",
    "GROUPINGS",
    "GROUP_WORDS",
    "NODE_LIMIT",
    "PARTS",
    "ImpossibleSplit",
    "SplitRequest",
    "SplitTargets",
    "assign_parts",
    "compute_split",
    "eligible_synapses",
    "group_keys",
    "lone_neurons",
    "make_split",
    "show_split",
    "solve_split",
    "split_quality",
    "summarize",
]
