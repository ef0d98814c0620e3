"""``--dry-run``: what a run reads and how long it takes, from a short timed sample of blocks.

The projection for FAFB uses the same per-synapse network time and per-byte reading time on
FAFB's numbers (:data:`FAFB`).
"""

from __future__ import annotations

import time

import numpy as np

from .block import predict_block
from .layout import context_vox
from .plan import VolumePlan
from .source import BlockRows

#: FAFB, the plan for a whole-brain run: 244 million automatically detected synapses
#: (Buhmann et al. 2021, the synapse set the original synister predicted) in the FAFB v14
#: volume of 7,062 sections of 40 nm, x, y 376,277 x 301,923 pixels of 4 nm (the FAFB14
#: template brain of natverse's elmr, a provisional bounding box).
FAFB = {
    "synapses": 244_000_000,
    "shape_vox": (7062, 301_923, 376_277),
    "voxel_size_nm": (40.0, 4.0, 4.0),
}


def patch_bytes(plan: VolumePlan) -> int:
    return int(np.prod(plan.patch_vox))


def block_bytes(plan: VolumePlan) -> np.ndarray:
    """Voxels each non-empty block reads: its patches' bounding box (clipped to the volume) or
    its patches one by one, whichever is fewer."""
    blocks = plan.blocks
    patch = np.asarray(plan.patch_vox, dtype=np.int64)
    volume = np.asarray(plan.grid.volume_shape_vox, dtype=np.int64)
    lo = blocks[["lo_z", "lo_y", "lo_x"]].to_numpy(np.int64)
    hi = blocks[["hi_z", "hi_y", "hi_x"]].to_numpy(np.int64) + patch
    region = np.prod(np.clip(hi, 0, volume) - np.clip(lo, 0, volume), axis=1)
    patches = blocks["n"].to_numpy(np.int64) * int(np.prod(patch))
    return np.minimum(region, patches)


def read_overhead(block_vox, patch_vox) -> float:
    """Read region over block volume: what a block full of synapses reads per voxel it owns."""
    below, above = context_vox(patch_vox)
    grown = np.asarray(block_vox) + np.asarray(below) + np.asarray(above)
    return float(np.prod(grown / np.asarray(block_vox)))


def sample_blocks(plan: VolumePlan, k: int) -> list[int]:
    """Up to ``k`` blocks at the 50th, 75th, 90th ... percentile of synapses per block."""
    blocks = plan.blocks.sort_values(["n", "block"]).reset_index(drop=True)
    if len(blocks) == 0:
        return []
    quantiles = [0.5, 0.75, 0.9, 0.25, 0.95, 0.1][: max(1, k)]
    rows = sorted({min(len(blocks) - 1, int(q * len(blocks))) for q in quantiles})
    return [int(blocks["block"][r]) for r in rows]


def time_sample(plan: VolumePlan, predictor, volume, blocks: list[int]) -> dict:
    """Run ``blocks`` in this process (after one warm-up batch) and total their costs."""
    predictor.probabilities(np.zeros((1, 1, *plan.patch_vox), dtype=np.uint8))  # first call
    rows = BlockRows(plan.store.sorted_file, plan.block_table)
    totals = {"blocks": 0, "synapses": 0, "voxel_bytes": 0, "read_seconds": 0.0}
    totals["predict_seconds"] = 0.0
    started = time.perf_counter()
    for linear in blocks:
        _, stats = predict_block(
            plan.grid.block(linear),
            rows.read(linear),
            volume,
            predictor,
            classes=plan.classes,
            naming=plan.naming,
        )
        totals["blocks"] += 1
        totals["synapses"] += stats["predicted"]
        totals["voxel_bytes"] += stats["voxel_bytes"]
        totals["read_seconds"] += stats["read_seconds"]
        totals["predict_seconds"] += stats["predict_seconds"]
    totals["seconds"] = time.perf_counter() - started
    return totals


def projection(synapses: int, read_bytes: float, sample: dict, workers: int) -> dict:
    """Wall time of ``workers`` workers, each as fast as this process was on the sample: the
    network time and the reading time; a worker reads ahead, so the larger of the two bounds
    the run from below and their sum from above."""
    per_synapse = sample["predict_seconds"] / max(sample["synapses"], 1)
    per_byte = sample["read_seconds"] / max(sample["voxel_bytes"], 1)
    network = synapses * per_synapse / workers
    reading = read_bytes * per_byte / workers
    return {
        "workers": workers,
        "network_seconds": network,
        "read_seconds": reading,
        "wall_seconds_min": max(network, reading),
        "wall_seconds_max": network + reading,
    }


def dry_run(plan: VolumePlan, predictor, volume, workers: int, sample: int = 3) -> dict:
    """The plan's numbers, a timed sample and the projections for this run and for FAFB."""
    counts = plan.blocks["n"].to_numpy(np.int64)
    blockwise = block_bytes(plan)
    in_blocks = int(counts.sum())
    per_patch = in_blocks * patch_bytes(plan)
    report = {
        "blocks": plan.grid.n_blocks,
        "grid": list(plan.grid.grid_shape),
        "block_vox": list(plan.grid.block_vox),
        "block_nm": (np.asarray(plan.grid.block_vox) * plan.settings["voxel_size_nm"]).tolist(),
        "blocks_with_synapses": len(counts),
        "synapses": plan.n_synapses,
        "outside_volume": plan.n_outside,
        "synapses_per_block": {
            "min": int(counts.min()) if len(counts) else 0,
            "median": float(np.median(counts)) if len(counts) else 0.0,
            "max": int(counts.max()) if len(counts) else 0,
        },
        "bytes_blockwise": int(blockwise.sum()),
        "bytes_per_patch": int(per_patch),
        "blocks_reading_patches": int((blockwise < np.asarray(counts) * patch_bytes(plan)).sum()),
    }
    timed = time_sample(plan, predictor, volume, sample_blocks(plan, sample))
    report["sample"] = timed
    report["projection"] = [
        projection(in_blocks, report["bytes_blockwise"], timed, n) for n in sorted({1, workers})
    ]
    fafb_grid = np.ceil(np.asarray(FAFB["shape_vox"]) / np.asarray(plan.grid.block_vox))
    fafb_patch_bytes = FAFB["synapses"] * patch_bytes(plan)
    fafb_all_blocks = float(np.prod(FAFB["shape_vox"])) * read_overhead(
        plan.grid.block_vox, plan.patch_vox
    )
    fafb_bytes = min(fafb_patch_bytes, fafb_all_blocks)
    report["fafb"] = {
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in FAFB.items()},
        "blocks": int(np.prod(fafb_grid)),
        "bytes_per_patch": float(fafb_patch_bytes),
        "bytes_every_block": fafb_all_blocks,
        "read_overhead": read_overhead(plan.grid.block_vox, plan.patch_vox),
        "projection": [
            projection(FAFB["synapses"], fafb_bytes, timed, n)
            for n in sorted({1, 8, 64, max(1, workers)})
        ],
    }
    return report


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"


def format_report(report: dict) -> str:
    per = report["synapses_per_block"]
    sample = report["sample"]
    lines = [
        f"blocks: {report['blocks']:,} ({' x '.join(map(str, report['grid']))}) of "
        f"{report['block_vox']} voxels = {report['block_nm']} nm (z,y,x); "
        f"{report['blocks_with_synapses']:,} hold synapses, the others are never read",
        f"synapses: {report['synapses']:,}, of which {report['outside_volume']:,} outside the "
        f"volume; per block with synapses min {per['min']}, median {per['median']:g}, "
        f"max {per['max']}",
        f"raw bytes to read: {_bytes(report['bytes_blockwise'])} blockwise "
        f"({report['blocks_reading_patches']} sparse blocks read patch by patch) vs "
        f"{_bytes(report['bytes_per_patch'])} one patch per synapse "
        f"(ratio {report['bytes_per_patch'] / max(report['bytes_blockwise'], 1):.2f})",
        f"timed sample: {sample['blocks']} blocks, {sample['synapses']} synapses in "
        f"{sample['seconds']:.1f} s (read {sample['read_seconds']:.2f} s, "
        f"network {sample['predict_seconds']:.2f} s)",
    ]
    for p in report["projection"]:
        lines.append(
            f"projected wall time with {p['workers']} worker(s): "
            f"{_duration(p['wall_seconds_min'])} to {_duration(p['wall_seconds_max'])}"
        )
    fafb = report["fafb"]
    lines.append(
        f"FAFB ({fafb['synapses']:,} synapses, {fafb['blocks']:,} blocks of this size, read "
        f"region {fafb['read_overhead']:.2f}x a block): one patch per synapse reads "
        f"{_bytes(fafb['bytes_per_patch'])}, every block once {_bytes(fafb['bytes_every_block'])}"
    )
    for p in fafb["projection"]:
        lines.append(
            f"  {p['workers']:>3} worker(s) like this one: network "
            f"{_duration(p['network_seconds'])}, wall {_duration(p['wall_seconds_min'])} to "
            f"{_duration(p['wall_seconds_max'])}"
        )
    return "\n".join(lines)
