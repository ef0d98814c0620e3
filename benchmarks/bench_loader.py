"""Training loader throughput (samples/s) at the FAFB patch size, with and without elastic.

Writes a random uint8 zarr volume (default 64 x 1024 x 1024 at 40 x 4 x 4 nm) to a temporary
folder, then times ``training_loader`` over ``TrainingData`` with all augmentations on, for
1 and 2 workers, with and without the elastic step. Worker start-up and the first batches are
excluded. Target: >= 100 samples/s with 2 workers on 2 cores, elastic included.

    .venv/bin/python benchmarks/bench_loader.py [--batches 40] [--workers 1 2] [--profile]

It also prints the CPU time per sample spent in one process (read + augment), which the
load of other processes on the machine barely changes: 2 cores cannot beat 2000 / that.
``--profile`` instead runs the per-sample work in this process under cProfile and prints the
top entries (read vs. augment), which is where to look before optimising.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from synister.augment import AugmentPipeline
from synister.data import TrainingData, training_loader
from synister.volumes import write_volume

VOXEL_NM = (40, 4, 4)
CLASSES = ["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine", "dopamine"]


def random_volume(folder: Path, shape_vox: tuple[int, int, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=shape_vox, dtype=np.uint8)
    return write_volume(folder / "raw.zarr", data, VOXEL_NM)


def random_synapses(shape_vox, margin_vox, n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Synapses at least ``margin_vox`` (z, y, x) inside the volume, so no read is padded."""
    rng = np.random.default_rng(seed)
    margin = np.asarray(margin_vox)
    vox = margin + rng.random((n, 3)) * (np.asarray(shape_vox) - 2 * margin)
    nm = vox * np.asarray(VOXEL_NM)
    return pd.DataFrame(
        {
            "synapse_id": np.arange(n),
            "z": nm[:, 0],
            "y": nm[:, 1],
            "x": nm[:, 2],
            "skeleton_id": np.arange(n) // 10,
            "label": rng.integers(len(CLASSES), size=n),
        }
    )


def samples_per_second(dataset, workers: int, batch: int, batches: int, warmup: int = 3) -> float:
    loader = training_loader(dataset, batch_size=batch, num_workers=workers, seed=0)
    stream = iter(loader)
    for _ in range(warmup):
        next(stream)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    elapsed = time.perf_counter() - start
    del stream, loader
    return batches * batch / elapsed


def cpu_ms_per_sample(dataset, n: int = 48) -> float:
    """CPU time of one sample in this process, one thread: robust to other load on the machine."""
    torch.set_num_threads(1)
    stream = iter(dataset)
    next(stream)
    start = time.process_time()
    for _ in range(n):
        next(stream)
    return (time.process_time() - start) / n * 1000


def profile(dataset, n: int = 64) -> None:
    torch.set_num_threads(1)  # as in a loader worker
    stream = iter(dataset)
    next(stream)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        next(stream)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 1024, 1024))
    parser.add_argument("--patch", type=int, nargs=3, default=(16, 160, 160))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    shape, patch = tuple(args.shape), tuple(args.patch)

    with tempfile.TemporaryDirectory() as tmp:
        volume = random_volume(Path(tmp), shape)
        # the widest read: the elastic context around a patch jittered by up to 1/16 of it
        context = np.asarray(AugmentPipeline(patch, elastic=True).context_shape_vox)
        synapses = random_synapses(shape, context // 2 + np.asarray(patch) // 16 + 1)
        for elastic in (True, False):
            pipeline = AugmentPipeline(patch, elastic=elastic)
            dataset = TrainingData(synapses, volume, patch, CLASSES, pipeline=pipeline)
            label = f"elastic={'on ' if elastic else 'off'} context={pipeline.context_shape_vox}"
            if args.profile:
                print(f"--- {label}")
                profile(dataset)
                continue
            cpu_ms = cpu_ms_per_sample(dataset)
            print(
                f"{label} in-process: {cpu_ms:5.1f} CPU ms/sample ({1000 / cpu_ms:6.1f}/s per core)"
            )
            for workers in args.workers:
                rate = samples_per_second(dataset, workers, args.batch, args.batches)
                print(f"{label} workers={workers} batch={args.batch}: {rate:7.1f} samples/s")


if __name__ == "__main__":
    main()
