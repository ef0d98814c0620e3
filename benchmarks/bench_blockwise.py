"""``predict-volume`` against one patch per synapse, block sizes, and the acceptance run.

    .venv/bin/python benchmarks/bench_blockwise.py DATASET [--generate] [--work DIR]
        [--block-sizes 16x256x256 32x512x512 ...] [--skip-acceptance] [--json FILE]

DATASET is a folder written by ``synister synthetic``; with ``--generate`` it is made first
(20,000 synapses in 216 x 1504 x 1504 voxels of 40 x 4 x 4 nm, the smallest volume the
generator fits them in; about 20-40 min on 2 loaded cores).

1. Reading, in one process on the same synapses and volume, 16 x 160 x 160 patches (FAFB's
   VGG), the network left out (it costs the same on both paths): ``per-patch``, the
   predict-positions path: batches of 32 patches in the engine's reading order (blocks of one
   patch), each one ``Volume.read_patches``; ``blockwise``: per block :func:`read_block` and
   every patch cut from its region as a worker does, for each block size. Both with the
   volume's 256 MB chunk cache (``cache``: this volume fits in it, as no whole-brain volume
   does) and without (``no cache``: every batch or block decodes its chunks itself). Per
   synapse: voxels requested (uint8 bytes), bytes fetched from storage (compressed chunks,
   tensorstore's kvstore counter), chunk decodes, and synapses/s; the ratios.
2. Acceptance (unless ``--skip-acceptance``): a random-weight ResNet (8 x 48 x 48 patches) as a
   bundle; the per-patch probabilities of every synapse; ``synister predict-volume`` with 2
   workers, killed with SIGKILL (its whole process group) once half of its blocks are done, and
   rerun: blocks finished before the kill are not computed again (their done markers
   untouched), every synapse is present once and its probabilities equal the per-patch ones.
Timings are wall-clock on a shared machine: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tensorstore as ts
import torch

from synister.config import load_train_setup
from synister.evaluate.provenance import export_model
from synister.models import build_model, save_checkpoint
from synister.models.bundle import load_bundle
from synister.predict import Predictor, reading_order
from synister.predict.blockwise import Source, prepare, read_block
from synister.predict.blockwise.block import PATCHES_PER_CUT, storage_bytes_read
from synister.predict.blockwise.estimate import read_overhead
from synister.predict.blockwise.layout import Store
from synister.predict.blockwise.source import BlockRows
from synister.setup import prepare_training
from synister.volumes import Volume

CACHES = {"cache": 256 * 2**20, "no cache": 0}
CLASSES = ["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine", "dopamine"]
VOXEL_NM = (40.0, 4.0, 4.0)
FAFB_PATCH = (16, 160, 160)
ACCEPTANCE_PATCH = (8, 48, 48)
BATCH = 32


def synapse_table(dataset: Path, out: Path) -> Path:
    """The dataset's synapses as a Parquet table: syn_id, skeleton_id, x, y, z (nm)."""
    records = json.loads((dataset / "synapses.json").read_text())
    table = pd.DataFrame.from_dict(records, orient="index")
    table.index = table.index.astype(np.int64)
    table = table.rename_axis("syn_id").reset_index()[["syn_id", "skeleton_id", "x", "y", "z"]]
    table.to_parquet(out, index=False)
    return out


def make_bundle(base: Path, patch, seed: int = 0) -> Path:
    """A random-weight small ResNet for ``patch``, exported as a bundle (``base/bundle``)."""
    setup = prepare_training(
        base, "bench", 0, db_url=f"sqlite:///{base / 'none.db'}", check_volume=False,
        synapse_types=CLASSES, input_shape=patch, fmaps=2, network="ResNet18",
        downsample_factors=[(1, 2, 2)] * 3, voxel_size=VOXEL_NM,
    )  # fmt: skip
    cfg, _ = load_train_setup(setup)
    torch.manual_seed(seed)
    save_checkpoint(setup / "model_checkpoint_1", build_model(cfg), None, 1)
    return export_model(setup, 1, base / "bundle")


def chunk_decodes() -> int:
    """Chunks tensorstore has fetched and decoded in this process (cache reads that loaded
    new data; a cache hit does not count)."""
    for metric in ts.experimental_collect_matching_metrics("/tensorstore/cache/kvs_cache_read"):
        return int(
            sum(v.get("value", 0) for v in metric["values"] if v.get("category") == "changed")
        )
    return 0


def counters() -> tuple[int, int, float]:
    return storage_bytes_read(), chunk_decodes(), time.perf_counter()


def finish(totals: dict, before: tuple[int, int, float]) -> dict:
    storage, decodes, started = before
    totals["seconds"] = time.perf_counter() - started
    totals["storage_bytes"] = storage_bytes_read() - storage
    totals["chunk_decodes"] = chunk_decodes() - decodes
    n = max(totals["synapses"], 1)
    totals["voxel_bytes_per_synapse"] = totals["voxel_bytes"] / n
    totals["storage_bytes_per_synapse"] = totals["storage_bytes"] / n
    totals["chunk_decodes_per_synapse"] = totals["chunk_decodes"] / n
    totals["synapses_per_second"] = n / totals["seconds"]
    return totals


def per_patch(volume_path: Path, table: pd.DataFrame, patch, cache_bytes: int) -> dict:
    """One patch per synapse (the predict-positions path): batches of 32 in the engine's
    reading order, each one ``Volume.read_patches``; a fresh volume and cache."""
    volume = Volume(volume_path, "raw", cache_bytes=cache_bytes)
    order = reading_order(table, np.asarray(patch) * np.asarray(VOXEL_NM))
    centers = table[["z", "y", "x"]].to_numpy()[order]
    before = counters()
    for start in range(0, len(centers), BATCH):
        volume.read_patches(centers[start : start + BATCH], patch)
    starts = volume.patch_starts_vox(centers, patch)
    shape = np.asarray(volume.shape_vox)
    inside = np.prod(np.clip(starts + patch, 0, shape) - np.clip(starts, 0, shape), axis=1).sum()
    return finish({"synapses": len(centers), "voxel_bytes": int(inside)}, before)


def blockwise(plan, volume_path: Path, cache_bytes: int) -> dict:
    """Every block of ``plan`` read once and all its patches cut, as a worker does (a fresh
    volume and cache)."""
    volume = Volume(volume_path, "raw", cache_bytes=cache_bytes)
    rows = BlockRows(plan.store.sorted_file, plan.block_table)
    totals = {"synapses": 0, "voxel_bytes": 0, "region_bytes_max": 0, "blocks_by_patch": 0}
    step = BATCH * PATCHES_PER_CUT
    before = counters()
    for linear in plan.blocks["block"].tolist():
        read = read_block(plan.grid.block(linear), rows.read(linear), volume, plan.patch_vox)
        for i in range(0, read.count, step):
            read.patches(i, i + step)
        totals["synapses"] += read.count
        totals["voxel_bytes"] += read.voxel_bytes
        if read.region is not None:
            totals["region_bytes_max"] = max(totals["region_bytes_max"], read.region.nbytes)
        else:
            totals["blocks_by_patch"] += 1
    return finish(totals, before)


def reading_benchmark(dataset, work, table_file, block_sizes) -> dict:
    table = pd.read_parquet(table_file)
    volume_path = dataset / "raw.zarr"
    bundle = load_bundle(make_bundle(work / "fafb_patch", FAFB_PATCH))
    volume = Volume(volume_path, "raw")
    results = {"synapses": len(table), "volume_shape_vox": list(volume.shape_vox)}
    extent_um3 = np.prod(np.asarray(volume.shape_vox) * VOXEL_NM) / 1e9
    results["synapses_per_um3"] = len(table) / extent_um3
    plans = {}
    for text in block_sizes:
        block_vox = tuple(int(v) for v in text.split("x"))
        plans[text] = prepare(
            work / f"plan_{text}", bundle, volume, str(volume_path), "raw",
            Source(str(table_file)), np.asarray(block_vox) * VOXEL_NM, log=lambda _: None,
        )  # fmt: skip
    for cache_name, cache_bytes in CACHES.items():
        case = results[cache_name] = {
            "per_patch": per_patch(volume_path, table, FAFB_PATCH, cache_bytes)
        }
        base = case["per_patch"]
        report("per-patch", cache_name, base, base)
        for text, plan in plans.items():
            result = blockwise(plan, volume_path, cache_bytes)
            result["blocks"] = len(plan.blocks)
            result["read_overhead"] = read_overhead(plan.grid.block_vox, FAFB_PATCH)
            for key in ("voxel_bytes", "storage_bytes", "chunk_decodes"):
                result[f"{key}_ratio"] = base[f"{key}_per_synapse"] / max(
                    result[f"{key}_per_synapse"], 1e-9
                )
            result["speedup"] = result["synapses_per_second"] / base["synapses_per_second"]
            case[text] = result
            report(text, cache_name, result, base)
    return results


def report(name: str, cache: str, r: dict, base: dict) -> None:
    print(
        f"  {cache:>9} {name:>14}: {r['voxel_bytes_per_synapse'] / 1e3:7.1f} kB requested, "
        f"{r['storage_bytes_per_synapse'] / 1e3:6.1f} kB fetched, "
        f"{r['chunk_decodes_per_synapse']:5.2f} chunk decodes per synapse; "
        f"{r['synapses_per_second']:6.0f} synapses/s "
        f"({r['synapses_per_second'] / base['synapses_per_second']:.2f}x)",
        flush=True,
    )


def acceptance(dataset, work, table_file) -> dict:
    """predict-volume with 2 workers, killed half-way and rerun, against one patch per synapse."""
    table = pd.read_parquet(table_file)
    bundle_path = make_bundle(work / "acceptance", ACCEPTANCE_PATCH, seed=1)
    bundle = load_bundle(bundle_path)
    volume_path = dataset / "raw.zarr"
    started = time.perf_counter()
    torch.set_num_threads(1)  # as each of the run's 2 workers on 2 cores
    engine = Predictor(bundle.build_model(), bundle.input_shape_vox, bundle.classes, device="cpu")
    reference = np.empty((len(table), len(bundle.classes)), dtype=np.float32)

    def store(rows, probabilities):
        reference[rows] = probabilities

    volume = Volume(volume_path, "raw")
    engine.predict_volume(volume, np.arange(len(table)), table[["z", "y", "x"]].to_numpy(), store)
    reference_seconds = time.perf_counter() - started
    out = work / "acceptance_out"
    command = [
        sys.executable, "-c", "from synister.cli import main; main()", "predict-volume",
        "--model", str(bundle_path), "--volume", str(volume_path), "--dataset", "raw",
        "--synapses", str(table_file), "--out", str(out), "--workers", "2",
        "--block-size", "1280", "2048", "2048", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(command, env=env, start_new_session=True)
    store = Store(out)
    started = time.perf_counter()
    while True:  # half-way: once half of the blocks with synapses are done
        plan = store.read_plan()
        done = len([n for n in store.finished_markers() if n.startswith("block")])
        if plan is not None and done >= plan["n_blocks_with_synapses"] // 2:
            break
        if process.poll() is not None:
            raise RuntimeError("the run ended before the kill")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_after = time.perf_counter() - started
    finished = {n: store.marker(n).stat().st_mtime_ns for n in store.finished_markers()}
    finished.pop("outside_volume", None)
    started = time.perf_counter()
    rerun = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True)
    if rerun.returncode != 0:
        raise RuntimeError(rerun.stderr)
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    rerun_seconds = time.perf_counter() - started
    untouched = all(store.marker(n).stat().st_mtime_ns == t for n, t in finished.items())
    result = pd.read_parquet(out / "synapses")
    short = ["gaba", "ach", "glut", "ser", "oct", "da"]
    indexed = result.set_index("id").loc[table["syn_id"]]  # predict-positions' columns
    difference = float(np.nanmax(np.abs(indexed[short].to_numpy() - reference)))
    checks = {
        "synapses": len(table),
        "rows": len(result),
        "unique_ids": bool(result["id"].is_unique),
        "same_id_set": set(result["id"]) == set(table["syn_id"]),
        "max_abs_difference": difference,
        "blocks": summary["blocks_with_synapses"],
        "blocks_finished_before_kill": len(finished),
        "blocks_run_after_kill": summary["blocks_run"],
        "blocks_skipped_after_kill": summary["blocks_skipped"],
        "finished_markers_untouched": untouched,
        "killed_after_seconds": killed_after,
        "rerun_seconds": rerun_seconds,
        "reference_seconds": reference_seconds,
    }
    checks["passed"] = bool(
        checks["rows"] == checks["synapses"]
        and checks["unique_ids"]
        and checks["same_id_set"]
        and difference < 1e-4
        and untouched
        and summary["blocks_skipped"] == len(finished)
        and summary["blocks_run"] == summary["blocks_with_synapses"] - len(finished)
    )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--generate", action="store_true")
    parser.add_argument("--work", type=Path)
    parser.add_argument(
        "--block-sizes",
        nargs="+",
        default=["16x256x256", "32x512x512", "64x1024x1024", "216x1504x1504"],
    )
    parser.add_argument("--skip-reading", action="store_true")
    parser.add_argument("--skip-acceptance", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.generate and not (args.dataset / "raw.zarr").exists():
        from synister.synthetic import generate

        started = time.perf_counter()
        generate(args.dataset, shape_vox=(216, 1504, 1504), n_synapses=20000, montages=False)
        print(f"generated {args.dataset} in {time.perf_counter() - started:.0f} s", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_blockwise_"))
    work.mkdir(parents=True, exist_ok=True)
    table_file = synapse_table(args.dataset, work / "synapses.parquet")
    print(f"load: {os.getloadavg()}, torch threads {torch.get_num_threads()}", flush=True)
    results = {"load_before": os.getloadavg()}
    if not args.skip_reading:
        print("reading 16x160x160 patches (and cutting them from block regions):", flush=True)
        results["reading"] = reading_benchmark(args.dataset, work, table_file, args.block_sizes)
    if not args.skip_acceptance:
        results["acceptance"] = acceptance(args.dataset, work, table_file)
        print(json.dumps(results["acceptance"], indent=1), flush=True)
    results["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
