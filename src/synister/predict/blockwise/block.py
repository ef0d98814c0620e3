"""One block, without a scheduler: read its raw data once, cut its patches, predict, tabulate.

:func:`predict_block` is what a worker runs per block and what tests call directly;
:func:`read_block` is its reading half, which a worker runs for the next blocks while the
network works on the current one.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import tensorstore as ts

from ..engine import Predictor
from ..positions import OUTSIDE_VOLUME, patch_status, synapse_table
from .layout import BlockSpec
from .source import rows_frame

STRATEGIES = ("auto", "region", "patches")
#: network batches cut from a block's region at a time
PATCHES_PER_CUT = 8


def storage_bytes_read() -> int:
    """Bytes this process has fetched from storage through tensorstore (all kvstore drivers;
    compressed chunks as stored, after tensorstore's chunk cache)."""
    total = 0
    for metric in ts.experimental_collect_matching_metrics("/tensorstore/kvstore/"):
        if metric["name"].endswith("/bytes_read"):
            total += sum(int(v.get("value", 0)) for v in metric["values"])
    return total


def centers_nm(rows: pa.Table) -> np.ndarray:
    """(N, 3) z, y, x nm positions of staged rows."""
    return np.stack([rows[c].to_numpy() for c in ("z_nm", "y_nm", "x_nm")], axis=1).astype(
        np.float64
    )


@dataclass
class BlockRead:
    """A block's raw data and what reading it cost. :meth:`patches` cuts the patches of the
    rows not ``outside_volume`` (in row order) a slice at a time, so a block never holds all
    its patches at once: its memory is at most the read region (one patch per synapse is
    chosen only where that is smaller)."""

    status: np.ndarray  # per row: ok / partly_outside / outside_volume
    strategy: str  # "region" (one read of the patches' bounding box) or "patches"
    count: int  # patches to predict
    voxel_bytes: int  # voxels read inside the volume (uint8: bytes)
    storage_bytes: int  # bytes fetched from storage while this read ran (and others with it)
    seconds: float
    patch_vox: tuple[int, int, int]
    region: np.ndarray | None = None  # "region": the bounding box of the patches
    offsets: np.ndarray | None = None  # "region": patch starts relative to the region
    patch_array: np.ndarray | None = None  # "patches": all patches

    def patches(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Patches ``start:stop`` (M, Z, Y, X) uint8."""
        if self.patch_array is not None:
            return self.patch_array[start:stop]
        offsets = self.offsets[start:stop]
        if len(offsets) == 0:
            return np.zeros((0, *self.patch_vox), dtype=np.uint8)
        # tensorstore copies the boxes in parallel (3x numpy's gather on 2 cores)
        region = ts.array(self.region)
        z, y, x = self.patch_vox
        boxes = [
            region[a : a + z, b : b + y, c : c + x].translate_to[0, 0, 0]
            for a, b, c in offsets.tolist()
        ]
        return ts.stack(boxes).read().result()


def _inside_bytes(starts: np.ndarray, shape: np.ndarray, volume_shape: np.ndarray) -> int:
    """Voxels of the boxes ``[starts, starts + shape)`` that lie inside the volume."""
    lo = np.clip(starts, 0, volume_shape)
    hi = np.clip(starts + shape, 0, volume_shape)
    return int(np.prod(np.maximum(hi - lo, 0), axis=-1).sum())


def choose_strategy(starts: np.ndarray, patch_vox: Sequence[int]) -> str:
    """``region`` when one read of the patches' bounding box moves fewer voxels than one
    read per patch, else ``patches`` (sparse blocks)."""
    if len(starts) == 0:
        return "patches"
    shape = np.asarray(patch_vox, dtype=np.int64)
    bbox = (starts + shape).max(axis=0) - starts.min(axis=0)
    return "region" if np.prod(bbox) <= len(starts) * np.prod(shape) else "patches"


def read_block(
    block: BlockSpec,
    rows: pa.Table,
    volume,
    patch_vox: Sequence[int],
    strategy: str = "auto",
) -> BlockRead:
    """Read the patches of ``rows`` (staged synapses of ``block``) from ``volume``.

    Every row's patch-centre voxel (clipped into the volume) must lie in ``block``; the
    patches are exactly those :meth:`Volume.read_patches` returns (the volume's placement),
    zero outside the volume.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    started = time.perf_counter()
    shape = np.asarray(patch_vox, dtype=np.int64)
    volume_shape = np.asarray(volume.shape_vox, dtype=np.int64)
    centers = centers_nm(rows)
    starts = volume.patch_starts_vox(centers, shape)
    owned = block.contains(np.clip(starts + shape // 2, 0, volume_shape - 1))
    if not owned.all():
        bad = int(np.flatnonzero(~owned)[0])
        raise ValueError(
            f"{block.name}: synapse at z,y,x {centers[bad].tolist()} nm lies outside the block "
            f"(voxels {block.start_vox} + {block.shape_vox}); the plan does not fit this volume"
        )
    status = patch_status(starts, shape, volume_shape)
    keep = status != OUTSIDE_VOLUME
    starts_kept = starts[keep]
    if strategy == "auto":
        strategy = choose_strategy(starts_kept, shape)
    before = storage_bytes_read()
    patch = tuple(int(v) for v in shape)
    read = BlockRead(status, strategy, len(starts_kept), 0, 0, 0.0, patch)
    if len(starts_kept) == 0:
        read.patch_array = np.zeros((0, *patch), dtype=np.uint8)
    elif strategy == "region":
        lo = starts_kept.min(axis=0)
        size = (starts_kept + shape).max(axis=0) - lo
        read.region = volume.read_region_vox(lo, size)
        read.offsets = starts_kept - lo
        read.voxel_bytes = _inside_bytes(lo, size, volume_shape)
    else:
        with warnings.catch_warnings():  # partly outside patches are flagged in ``status``
            warnings.simplefilter("ignore")
            read.patch_array = volume.read_patches(centers[keep], shape)
        read.voxel_bytes = _inside_bytes(starts_kept, shape, volume_shape)
    read.storage_bytes = storage_bytes_read() - before
    read.seconds = time.perf_counter() - started
    return read


def result_table(
    rows: pa.Table,
    classes: Sequence[str],
    status: np.ndarray,
    probabilities: np.ndarray,
    naming: str = "short",
) -> pa.Table:
    """The output rows of staged ``rows``: ``predict-positions``' table
    (:func:`~synister.predict.positions.synapse_table`), its dtypes kept in the Parquet file.

    ``probabilities`` holds one row per synapse not ``outside_volume``, in row order.
    """
    status = np.asarray(status, dtype=object)
    predicted = status != OUTSIDE_VOLUME
    if probabilities.shape != (int(predicted.sum()), len(classes)):
        raise ValueError(
            f"{probabilities.shape} probabilities for {int(predicted.sum())} predicted synapses "
            f"and {len(classes)} classes"
        )
    full = np.full((rows.num_rows, len(classes)), np.nan, dtype=np.float32)
    full[predicted] = probabilities
    frame = synapse_table(rows_frame(rows), full, classes, status, naming)
    return pa.Table.from_pandas(frame, preserve_index=False)


def block_probabilities(predictor: Predictor, read: BlockRead) -> np.ndarray:
    """Probabilities (count, C) of a read block's patches, through the engine's in-memory
    entry point, cut ``PATCHES_PER_CUT`` network batches at a time."""
    out = np.empty((read.count, len(predictor.classes)), dtype=np.float32)

    def store(rows: np.ndarray, probabilities: np.ndarray) -> None:
        out[rows] = probabilities

    step = predictor.batch_size * PATCHES_PER_CUT
    for first in range(0, read.count, step):
        patches = read.patches(first, first + step)
        predictor.predict_patches(np.arange(first, first + len(patches)), patches, store)
    return out


def predict_block(
    block: BlockSpec,
    rows: pa.Table,
    volume,
    predictor: Predictor,
    *,
    classes: Sequence[str],
    naming: str = "short",
    strategy: str = "auto",
    read: BlockRead | None = None,
) -> tuple[pa.Table, dict]:
    """Predict every synapse of ``block``: returns its output rows and what it cost.

    ``rows`` are the block's staged synapses (:func:`~synister.tables.position_rows`
    columns); ``classes`` the network's, ``naming`` that of the output's class columns;
    ``read`` is its :func:`read_block` result when a worker read it ahead.
    """
    if read is None:
        read = read_block(block, rows, volume, predictor.input_shape_vox, strategy)
    started = time.perf_counter()
    probabilities = block_probabilities(predictor, read)
    predict_seconds = time.perf_counter() - started
    table = result_table(rows, classes, read.status, probabilities, naming)
    stats = {
        "rows": table.num_rows,
        "predicted": read.count,
        "strategy": read.strategy,
        "voxel_bytes": read.voxel_bytes,
        "storage_bytes": read.storage_bytes,
        "read_seconds": read.seconds,
        "predict_seconds": predict_seconds,
    }
    return table, stats
