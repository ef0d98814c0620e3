"""Whole-volume prediction (``synister predict-volume``): blocks scheduled by daisy.

The volume is cut into blocks; each block reads its raw data once (or, where synapses are
sparse, only its patches), predicts the synapses whose patch centre lies in it and writes one
Parquet shard with the rows and columns of ``predict-positions``. See :mod:`.layout` for the
blocks and the output store, :mod:`.source` for the synapse sources (read as
``predict-positions`` reads a table), :mod:`.block` for one block, :mod:`.worker` and
:mod:`.run` for daisy.
"""

from .block import BlockRead, predict_block, read_block
from .layout import BlockGrid, BlockSpec, Store
from .plan import PlanMismatch, VolumePlan, load_plan, prepare
from .run import DEFAULT_BLOCK_NM, predict_volume
from .source import Source

__all__ = [
    "DEFAULT_BLOCK_NM",
    "BlockGrid",
    "BlockRead",
    "BlockSpec",
    "PlanMismatch",
    "Source",
    "Store",
    "VolumePlan",
    "load_plan",
    "predict_block",
    "predict_volume",
    "prepare",
    "read_block",
]
