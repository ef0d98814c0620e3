"""Patches/s from a local zarr: one concurrent batch read vs a loop of single blocking reads.

Run: ``.venv/bin/python benchmarks/bench_volumes.py [--shape 64 1024 1024] [--patches 256]``.
Each measurement uses a fresh ``Volume`` (fresh cache); ``--cache-mb 0`` disables the chunk cache
so every patch decodes its chunks again, as in a training run over a volume much larger than RAM.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from synister.volumes import Volume, iter_blocks_vox, write_volume

PATCH_VOX = (16, 160, 160)


def make_volume(path: Path, shape_vox: tuple[int, int, int], seed: int) -> None:
    """Write a textured uint8 volume block by block (compresses like EM, not like white noise)."""
    rng = np.random.default_rng(seed)

    def blocks():
        for start, shape in iter_blocks_vox(shape_vox, (32, 256, 256)):
            noise = rng.integers(0, 64, shape, dtype=np.uint8)
            yield start, (noise // 16 * 16 + 96).astype(np.uint8)

    write_volume(path, blocks(), (40, 4, 4), shape_vox=shape_vox, chunks_vox=(32, 128, 128))


def centers(volume: Volume, count: int, seed: int) -> np.ndarray:
    """Random positions (z, y, x nm) whose patches lie inside the volume."""
    rng = np.random.default_rng(seed)
    half = np.array(PATCH_VOX) // 2
    low, high = half, np.array(volume.shape_vox) - (np.array(PATCH_VOX) - half)
    vox = rng.integers(low, high + 1, size=(count, 3))
    return volume.offset_nm + (vox + 0.5) * volume.voxel_size_nm


def batched(path: Path, positions: np.ndarray, batch: int, cache_bytes: int) -> float:
    volume = Volume(path, "raw", cache_bytes=cache_bytes)
    start = time.perf_counter()
    for i in range(0, len(positions), batch):
        volume.read_patches(positions[i : i + batch], PATCH_VOX)
    return len(positions) / (time.perf_counter() - start)


def one_by_one(path: Path, positions: np.ndarray, cache_bytes: int) -> float:
    volume = Volume(path, "raw", cache_bytes=cache_bytes)
    starts = volume.patch_starts_vox(positions, PATCH_VOX)
    start = time.perf_counter()
    for (z, y, x), (dz, dy, dx) in zip(starts, [PATCH_VOX] * len(starts), strict=True):
        volume.store[z : z + dz, y : y + dy, x : x + dx].read().result()
    return len(positions) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 1024, 1024])
    parser.add_argument("--patches", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cache-mb", type=int, nargs="+", default=[0, 256])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        make_volume(path, tuple(args.shape), seed=0)
        print(f"wrote {tuple(args.shape)} uint8 zarr v3 in {time.perf_counter() - t0:.1f} s")
        positions = centers(Volume(path, "raw"), args.patches, seed=1)
        for cache_mb in args.cache_mb:
            cache_bytes = cache_mb * 2**20
            loop = one_by_one(path, positions, cache_bytes)
            batch = batched(path, positions, args.batch, cache_bytes)
            print(
                f"cache {cache_mb:4d} MiB, {args.patches} patches {PATCH_VOX}: "
                f"loop of blocking reads {loop:7.1f} patches/s, "
                f"batches of {args.batch} {batch:7.1f} patches/s ({batch / loop:.2f}x)"
            )


if __name__ == "__main__":
    main()
