"""Generation time and peak memory of ``synister synthetic`` (goal: 64x1024x1024 with 2,000
synapses in under two minutes on 2 cores, memory a few times one 8-section block).

Run: ``.venv/bin/python benchmarks/bench_synthetic.py [--shape Z Y X] [--synapses N]``.
Peak memory is the process's maximum resident set (includes the Python/numpy/tensorstore base).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 1024, 1024))
    ap.add_argument("--synapses", type=int, default=2000)
    ap.add_argument("--preset", default="fafb")
    ap.add_argument("--format", default="zarr")
    args = ap.parse_args()

    import synister.synthetic as synthetic  # imported before the baseline so it is not counted

    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        summary = synthetic.generate(
            tmp,
            preset=args.preset,
            seed=0,
            shape_vox=tuple(args.shape),
            n_synapses=args.synapses,
            format=args.format,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    block_mb = 8 * args.shape[1] * args.shape[2] / 2**20
    print(
        json.dumps(
            {
                "shape_vox": list(args.shape),
                "synapses": summary["n_synapses"],
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "seconds": summary["seconds"],
                "voxels_per_s": round(float(np.prod(args.shape)) / wall),
                "peak_rss_mb": round(peak_mb),
                "rss_before_mb": round(base_mb),
                "uint8_block_mb": round(block_mb, 1),
                "oracle_synapse": summary["oracle_synapse_accuracy"],
                "oracle_neuron": summary["oracle_neuron_accuracy"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
