"""Blocks of the volume and the layout of an output store.

A block is a box of whole voxels; it owns the synapses whose patch-centre voxel (the engine's
placement) lies in it, clipped into the volume so that every synapse has exactly one block.
Its read region is the block plus half a patch on every side.

Store layout (``OUT``)::

    plan.json                       what the run is (resuming checks it), written last
    plan/synapses_by_block.parquet  the synapses sorted by block, those outside the volume first
                                    (one frozen copy of the source)
    plan/blocks.parquet             per block with synapses (-1: outside the volume): index,
                                    synapses, first row, bounding box of the patch starts
    synapses/<block>.parquet        one shard per block (+ outside_volume.parquet): the result
    done/<block>.json               done marker: rows, bytes and seconds of the finished shard
    failed/<block>.json             the last error of a block that failed (removed on success)
    neurons.parquet                 per-neuron summary, written when every block is done
    logs/                           daisy's per-worker logs
    staging/                        chunks of a remote volume shared by the workers while the
                                    run lasts, where not in memory (:mod:`synister.volumes.stage`)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


@dataclass(frozen=True)
class BlockSpec:
    """One block: grid index, first voxel and shape (z, y, x voxels; edge blocks are cut)."""

    index: tuple[int, int, int]
    start_vox: tuple[int, int, int]
    shape_vox: tuple[int, int, int]

    @property
    def name(self) -> str:
        z, y, x = self.index
        return f"block_{z:05d}_{y:05d}_{x:05d}"

    def contains(self, centers_vox: np.ndarray) -> np.ndarray:
        """Whether each centre voxel (N, 3) lies in the block."""
        start = np.asarray(self.start_vox)
        end = start + np.asarray(self.shape_vox)
        centers = np.asarray(centers_vox).reshape(-1, 3)
        return np.all((centers >= start) & (centers < end), axis=1)


@dataclass(frozen=True)
class BlockGrid:
    """The volume cut into blocks of ``block_vox``."""

    volume_shape_vox: tuple[int, int, int]
    block_vox: tuple[int, int, int]

    def __post_init__(self):
        for name in ("volume_shape_vox", "block_vox"):
            value = getattr(self, name)
            if len(value) != 3 or min(value) < 1:
                raise ValueError(f"{name} must be 3 positive sizes (z, y, x), got {value}")

    @classmethod
    def from_nm(
        cls, volume_shape_vox: Sequence[int], block_nm: Sequence[float], voxel_nm: Sequence[float]
    ) -> BlockGrid:
        """Blocks of ``block_nm`` rounded to whole voxels (at least one)."""
        sizes = np.asarray(block_nm, float).reshape(-1)
        if sizes.size != 3 or not np.all(np.isfinite(sizes) & (sizes > 0)):
            raise ValueError(f"block size must be 3 positive sizes Z Y X in nm, got {block_nm}")
        block = np.maximum(1, np.round(np.asarray(block_nm, float) / np.asarray(voxel_nm, float)))
        return cls(tuple(int(s) for s in volume_shape_vox), tuple(int(b) for b in block))

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(-(-s // b) for s, b in zip(self.volume_shape_vox, self.block_vox, strict=True))

    @property
    def n_blocks(self) -> int:
        return int(np.prod(self.grid_shape))

    def linear_index(self, centers_vox: np.ndarray) -> np.ndarray:
        """Block (C-order linear index) of each centre voxel, clipped into the volume."""
        centers = np.asarray(centers_vox, dtype=np.int64).reshape(-1, 3)
        inside = np.clip(centers, 0, np.asarray(self.volume_shape_vox) - 1)
        grid = inside // np.asarray(self.block_vox)
        return np.ravel_multi_index(tuple(grid.T), self.grid_shape).astype(np.int64)

    def block(self, linear: int) -> BlockSpec:
        index = tuple(int(i) for i in np.unravel_index(int(linear), self.grid_shape))
        return self.block_at(index)

    def block_at(self, index: Sequence[int]) -> BlockSpec:
        index = tuple(int(i) for i in index)
        if any(not 0 <= i < n for i, n in zip(index, self.grid_shape, strict=True)):
            raise ValueError(f"block index {index} is outside the grid {self.grid_shape}")
        start = np.asarray(index) * np.asarray(self.block_vox)
        shape = np.minimum(self.block_vox, np.asarray(self.volume_shape_vox) - start)
        return BlockSpec(index, tuple(int(s) for s in start), tuple(int(s) for s in shape))

    def linear(self, index: Sequence[int]) -> int:
        return int(np.ravel_multi_index(tuple(int(i) for i in index), self.grid_shape))


def context_vox(patch_vox: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Voxels a patch reaches below and above its centre voxel (patch ``[c - S//2, c - S//2 +
    S)``): the read region is the block grown by these."""
    shape = np.asarray(patch_vox, dtype=np.int64)
    below = shape // 2
    return tuple(int(v) for v in below), tuple(int(v) for v in shape - below - 1)


OUTSIDE_SHARD = "outside_volume"


class Store:
    """Paths, markers and completeness checks of one output folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    plan_file = property(lambda self: self.path / "plan.json")
    plan_dir = property(lambda self: self.path / "plan")
    sorted_file = property(lambda self: self.plan_dir / "synapses_by_block.parquet")
    blocks_file = property(lambda self: self.plan_dir / "blocks.parquet")
    shards_dir = property(lambda self: self.path / "synapses")
    done_dir = property(lambda self: self.path / "done")
    failed_dir = property(lambda self: self.path / "failed")
    neurons_file = property(lambda self: self.path / "neurons.parquet")
    logs_dir = property(lambda self: self.path / "logs")
    staging_dir = property(lambda self: self.path / "staging")

    def shard(self, name: str) -> Path:
        return self.shards_dir / f"{name}.parquet"

    def marker(self, name: str) -> Path:
        return self.done_dir / f"{name}.json"

    def failure(self, name: str) -> Path:
        return self.failed_dir / f"{name}.json"

    def make_dirs(self) -> None:
        for folder in (self.plan_dir, self.shards_dir, self.done_dir, self.failed_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def read_plan(self) -> dict | None:
        if not self.plan_file.is_file():
            return None
        return json.loads(self.plan_file.read_text())

    def is_complete(self, name: str, expected_rows: int) -> bool:
        """Done marker present, and it and the shard's footer both hold ``expected_rows``."""
        marker = self.marker(name)
        if not marker.is_file():
            return False
        try:
            rows = json.loads(marker.read_text()).get("rows")
            stored = pq.read_metadata(self.shard(name)).num_rows
        except (OSError, ValueError):
            return False
        return rows == expected_rows == stored

    def finished_markers(self) -> list[str]:
        """Names of blocks with a done marker (unchecked)."""
        if not self.done_dir.is_dir():
            return []
        return [
            p.name[: -len(".json")] for p in os.scandir(self.done_dir) if p.name.endswith(".json")
        ]
