"""Time the split solver on a FAFB-sized synthetic dataset.

    .venv/bin/python benchmarks/bench_splits.py [--synapses 500000] [--skeletons 3000] [--repeats 1]

Synapses fall on skeletons with heavy-tailed sizes (lognormal, as real neurons), each skeleton
with one of the six transmitters (skewed like FAFB: mostly acetylcholine) and one of ~3000/30
hemilineages. Times :func:`synister.splits.compute_split` (eligibility, grouping, both integer
programs, checks) by skeleton, by hemilineage and by single synapse, and prints the worst miss
of a part's target share. Goal: a few seconds for 500,000 synapses over 3,000 skeletons.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from synister.nt import TRANSMITTERS
from synister.splits import SplitRequest, SplitTargets, compute_split


def synthetic_synapses(n_synapses: int, n_skeletons: int, seed: int = 0) -> pd.DataFrame:
    """A database-like synapse frame: synapse_id, skeleton_id, hemi_lineage_id, nt_known."""
    rng = np.random.default_rng(seed)
    weights = np.array([0.25, 0.45, 0.12, 0.05, 0.05, 0.08])  # gaba, ach, glu, 5ht, oa, da
    skeleton_nt = rng.choice(len(TRANSMITTERS), size=n_skeletons, p=weights)
    n_lineages = max(2, n_skeletons // 30)
    skeleton_lineage = rng.integers(0, n_lineages, n_skeletons)
    sizes = rng.lognormal(mean=0.0, sigma=1.0, size=n_skeletons)
    owner = rng.choice(n_skeletons, size=n_synapses, p=sizes / sizes.sum())
    sets = [frozenset({nt}) for nt in TRANSMITTERS]
    return pd.DataFrame(
        {
            "synapse_id": np.arange(n_synapses, dtype="int64"),
            "skeleton_id": pd.array(owner + 1_000_000, dtype="Int64"),
            "hemi_lineage_id": pd.array(skeleton_lineage[owner], dtype="Int64"),
            "nt_known": [sets[i] for i in skeleton_nt[owner]],
        }
    )


def worst_miss(meta: dict) -> float:
    targets = SplitTargets(meta["train_fraction"], meta["validation_fraction"])
    worst = 0.0
    for per_part in meta["summary"].values():
        total = sum(p["synapses"] for p in per_part.values())
        for part, counts in per_part.items():
            worst = max(worst, abs(counts["synapses"] / total - targets.share(part)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synapses", type=int, default=500_000)
    parser.add_argument("--skeletons", type=int, default=3_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    start = time.perf_counter()
    synapses = synthetic_synapses(args.synapses, args.skeletons)
    print(
        f"{len(synapses):,} synapses on {synapses.skeleton_id.nunique():,} skeletons, "
        f"{synapses.hemi_lineage_id.nunique():,} hemilineages "
        f"(made in {time.perf_counter() - start:.1f} s)"
    )
    for by in ("skeleton", "hemi_lineage", "synapse"):
        times = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            _, meta = compute_split(synapses, SplitRequest(by=by, seed=repeat))
            times.append(time.perf_counter() - start)
        print(
            f"by {by:<13} best of {args.repeats}: {min(times):6.2f} s   "
            f"worst miss of a target share: {worst_miss(meta):.4f}"
        )


if __name__ == "__main__":
    main()
