"""Attribution checked against ground truth, and the time ``synister explain`` takes.

1. Ground truth: on a synthetic dataset the generator also writes a label volume of each
   synapse's transmitter-specific structures (vesicles, dense-core vesicles, T-bar, cleft). For
   every synapse of held-out data and each method, the attribution of the predicted class is
   compared with it: mass ratio = (share of the absolute attribution on the structures) /
   (share of the patch's voxels they hold); 1 is what an attribution blind to them gets. The
   same is done for the network with random weights (same architecture) and for a
   network-free "darkness" map (how far each voxel is below mid-grey), so that a ratio above 1
   can be told from one any map of dark membranes would get.
2. Time: ``synister explain`` (the CLI's function) on the bundle and 10 positions, per method.

Run after ``synister demo --out demo_out``::

    .venv/bin/python benchmarks/bench_explain.py --demo demo_out --out bench_explain

The README's figures came from two runs, the first with 1 thread (a whole-box occlusion
step: a sixth of the default's network passes)::

    .venv/bin/python benchmarks/bench_explain.py --demo demo_out --out bench_explain \
        --synapses 220 --occlusion-stride 2 8 8 --skip-timing
    .venv/bin/python benchmarks/bench_explain.py --demo demo_out --out bench_explain \
        --skip-ground-truth --timing-threads 2

The held-out data is a fresh dataset of the demo's preset and another seed (default 1), so
no synapse of it was seen in training; ``--synapses`` of them (default 250) are used.
Writes ``bench_explain/results.json`` (``results_ground_truth.json`` or ``results_timing.json``
with ``--skip-timing``/``--skip-ground-truth``), ``mass_ratio.png`` and
``mass_ratio_per_synapse.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def summarize(values) -> dict:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if not values.size:
        return {"n": 0}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "sem": float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0,
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "fraction_above_1": float((values > 1).mean()),
    }


def ensure_dataset(demo: Path, seed: int, out: Path) -> Path:
    """A held-out dataset of the demo's preset and size (generated once into ``out``)."""
    from synister.synthetic import generate

    data = out / f"heldout_seed{seed}"
    if (data / "summary.json").is_file():
        return data
    preset = json.loads((demo / "data" / "summary.json").read_text())["preset"]
    print(f"generating a held-out '{preset}' dataset (seed {seed}) in {data}", flush=True)
    generate(data, preset=preset, seed=seed, montages=False)
    return data


def ensure_bundle(demo: Path, out: Path) -> Path:
    """A bundle of the demo's best validation iteration (exported once into ``out``)."""
    from synister.evaluate.provenance import export_model

    bundle = out / "demo_bundle"
    if not (bundle / "model.json").is_file():
        setup = demo / "demo" / "02_train" / "setup_t0"
        export_model(setup, "best", bundle)
    return bundle


def ground_truth(
    bundle_dir: Path,
    data: Path,
    n: int,
    methods: list[str],
    seed: int,
    occlusion_stride: tuple[int, int, int] | None = None,
) -> dict:
    from synister.explain import attribute, attribution_mass_ratio
    from synister.models.bundle import load_bundle
    from synister.synthetic.oracle import load_latents
    from synister.volumes import Volume, normalize

    bundle = load_bundle(bundle_dir)
    trained = bundle.build_model("cpu")
    torch.manual_seed(seed)
    untrained = bundle.build_model("cpu")
    for module in untrained.modules():  # the same network with fresh random weights
        if module is not untrained and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    summary = json.loads((data / "summary.json").read_text())
    if "structures_dataset" not in summary:  # synister.synthetic.structures writes it
        raise SystemExit(
            f"{data}: the generator wrote no label volume of the structures "
            "(summary.json names no structures_dataset); generate it anew"
        )
    container = data / summary["raw_container"]
    raw = Volume(container, summary["raw_dataset"])
    labels = Volume(container, summary["structures_dataset"])
    kinds = {int(k): v for k, v in summary["structure_labels"].items() if int(k) > 0}
    synapses, _ = load_latents(data)
    rng = np.random.default_rng(seed)
    chosen = synapses.iloc[np.sort(rng.choice(len(synapses), min(n, len(synapses)), False))]
    centers = chosen[["z_nm", "y_nm", "x_nm"]].to_numpy()
    shape = bundle.input_shape_vox
    patches = raw.read_patches(centers, shape)
    masks = labels.read_patches(centers, shape)
    classes = bundle.classes
    rows = []
    started = time.perf_counter()
    for i, (patch, mask_values) in enumerate(zip(patches, masks, strict=True)):
        mask = mask_values > 0
        with torch.no_grad():
            logits = trained(torch.from_numpy(normalize(patch))[None, None])[0]
        predicted = int(logits.argmax())
        true = classes.index(chosen["nt"].iloc[i]) if chosen["nt"].iloc[i] in classes else -1
        row = {
            "synapse_id": int(chosen["synapse_id"].iloc[i]),
            "true": chosen["nt"].iloc[i],
            "predicted": classes[predicted],
            "correct": predicted == true,
            "structure_voxel_share": float(mask.mean()),
            "darkness": attribution_mass_ratio(np.clip(127.5 - patch, 0, None), mask),
        }
        for method in methods:
            for name, network in (("trained", trained), ("random_weights", untrained)):
                options = {"stride_vox": occlusion_stride} if method == "occlusion" else {}
                values, _ = attribute(network, patch, predicted, method=method, **options)
                row[f"{method}/{name}"] = attribution_mass_ratio(values, mask)
                if name == "trained":  # per kind of structure
                    for value, kind in kinds.items():
                        row[f"{kind}: {method}"] = attribution_mass_ratio(
                            values, mask_values == value
                        )
        rows.append(row)
        if (i + 1) % 25 == 0:
            rate = (i + 1) / (time.perf_counter() - started)
            print(f"  {i + 1}/{len(patches)} synapses, {rate:.2f}/s", flush=True)
    table = pd.DataFrame(rows)
    measures = [c for c in table.columns if "/" in c or ": " in c] + ["darkness"]
    return {
        "synapses": int(len(table)),
        "accuracy": float(table["correct"].mean()),
        "structure_voxel_share": summarize(table["structure_voxel_share"]),
        "mass_ratio": {m: summarize(table[m]) for m in measures},
        "mass_ratio_correct_only": {m: summarize(table.loc[table["correct"], m]) for m in measures},
        "table": table,
    }


def explain_timing(
    bundle: Path, data: Path, out: Path, methods: list[str], threads: list[int]
) -> dict:
    from synister.explain import explain_positions
    from synister.synthetic.oracle import load_latents

    synapses, _ = load_latents(data)
    table = synapses.iloc[:10][["synapse_id", "x_nm", "y_nm", "z_nm"]]
    table = table.rename(columns={"x_nm": "x", "y_nm": "y", "z_nm": "z"})
    positions = out / "positions10.csv"
    table.to_csv(positions, index=False)
    timing = {}
    for method in methods:
        for n_threads in threads:
            previous = torch.get_num_threads()
            torch.set_num_threads(n_threads)
            started = time.perf_counter()
            explain_positions(bundle, str(data / "raw.zarr"), positions,
                              out / f"explained_{method}_{n_threads}", dataset="raw",
                              method=method, progress=False)  # fmt: skip
            seconds = time.perf_counter() - started
            timing[f"{method}, {n_threads} thread(s)"] = round(seconds, 1)
            torch.set_num_threads(previous)
    return timing


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [c for c in table.columns if "/" in c] + ["darkness"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.boxplot([table[m].dropna() for m in measures], showfliers=False)
    ax.set_xticks(range(1, len(measures) + 1), [m.replace("/", "\n") for m in measures],
                  fontsize=8)  # fmt: skip
    ax.axhline(1.0, color="#888888", linestyle="--", linewidth=1)
    ax.set_ylabel("attribution share / voxel share\non the transmitter-specific structures")
    ax.set_title(f"{len(table)} held-out synapses (boxes: quartiles; dashed: blind attribution)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("demo_out"), help="a synister demo folder")
    ap.add_argument("--bundle", type=Path, help="a bundle (default: export the demo's best)")
    ap.add_argument("--out", type=Path, default=Path("bench_explain"))
    ap.add_argument("--synapses", type=int, default=250)
    ap.add_argument("--seed", type=int, default=1, help="seed of the held-out dataset")
    ap.add_argument("--methods", nargs="+", default=["integrated_gradients", "occlusion"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads for part 1")
    ap.add_argument(
        "--occlusion-stride",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="occlusion step in part 1 (default: the command's, half the box; "
        "the box itself gives 1/6 of the evaluations on the demo's patches)",
    )
    ap.add_argument(
        "--timing-threads",
        type=int,
        nargs="+",
        default=sorted({1, max(1, os.cpu_count() or 1)}),
        help="torch thread counts to time part 2 with",
    )
    ap.add_argument("--skip-timing", action="store_true", help="part 1 only")
    ap.add_argument("--skip-ground-truth", action="store_true", help="part 2 only")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or ensure_bundle(args.demo, args.out)
    data = ensure_dataset(args.demo, args.seed, args.out)
    torch.set_num_threads(args.threads)
    stride = tuple(args.occlusion_stride) if args.occlusion_stride else None
    results: dict = {"bundle": str(bundle), "heldout_dataset": str(data)}
    if not args.skip_ground_truth:
        started = time.perf_counter()
        truth = ground_truth(bundle, data, args.synapses, args.methods, args.seed, stride)
        results["ground_truth_seconds"] = round(time.perf_counter() - started, 1)
        results["occlusion_stride_vox"] = stride or "default (half the box)"
        results["load_average_after_ground_truth"] = os.getloadavg()
        plot(truth["table"], args.out / "mass_ratio.png")
        truth["table"].to_csv(args.out / "mass_ratio_per_synapse.csv", index=False)
        results["ground_truth"] = {k: v for k, v in truth.items() if k != "table"}
    if not args.skip_timing:
        timing = explain_timing(bundle, data, args.out, args.methods, args.timing_threads)
        results["explain_10_positions_seconds"] = timing
        results["load_average_after_timing"] = os.getloadavg()
    name = (
        "results.json"
        if not (args.skip_timing or args.skip_ground_truth)
        else ("results_timing.json" if args.skip_ground_truth else "results_ground_truth.json")
    )
    (args.out / name).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
