"""``synister predict-positions`` against ``synister predict`` on the same synapses and model.

    .venv/bin/python benchmarks/bench_predict_positions.py [--synapses 20000] [--repeat 3]

Builds the data of ``bench_predict.py`` (a random uint8 volume, 40 x 4 x 4 nm voxels, and a
SQLite database of random synapses inside it), a training setup with a randomly initialised
ResNet-18 (1 feature map, 8x32x32 patches, batch 32; ``--fafb``: the seed's FAFB VGG on
16x160x160, batch 8), its model bundle, and a Parquet table of the same synapses. Then, in
interleaved rounds on the same machine, threads and reading settings:

- ``predict``: :func:`synister.predict.predict_setup` (the database front-end, writer process);
- ``positions``: what ``synister predict-positions`` runs (table read and checked, bundle
  loaded, parts written, then synapses.parquet, neurons.parquet and report.html).

Both use the one engine, so the rates after start-up should agree (goal: within 10 %); the
whole-call rates differ by what each front-end does around it. Timings are wall-clock: other
load on the machine lowers all of them; compare the ratio within one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import FAFB, SMALL, build_data, make_setup  # noqa: E402

from synister.config import load_predict_setup  # noqa: E402
from synister.db import open_database  # noqa: E402
from synister.evaluate.provenance import export_model  # noqa: E402
from synister.predict import predict_setup, prepare_positions  # noqa: E402
from synister.predict.positions import default_devices_and_threads  # noqa: E402
from synister.predict.store import run_positions  # noqa: E402


def through_database(setup: Path, read_workers: int, threads: int | None) -> dict:
    cfg, _ = load_predict_setup(setup)
    result = predict_setup(setup, read_workers=read_workers, threads=threads, progress=False)
    with open_database(cfg.database_url()) as db:
        db.drop_prediction_run(cfg.run_name)
    return result


def through_positions(
    bundle: Path,
    volume: Path,
    table: Path,
    out: Path,
    read_workers: int,
    batch: int,
    threads: int | None,
) -> dict:
    """What ``synister predict-positions`` runs; without ``threads`` its default (tuned)."""
    tune = threads is None
    if tune:
        threads, _, tune = default_devices_and_threads()
    job = prepare_positions(
        bundle, volume, table, dataset="raw", threads=threads, read_workers=read_workers,
        batch_size=batch,
    )  # fmt: skip
    result = run_positions(job, out, table_file=table, progress=False, tune_threads=tune)
    shutil.rmtree(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 640, 640), help="volume, vox")
    parser.add_argument("--synapses", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--read-workers", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, help="torch threads for both (default: each command's, tuned)"
    )
    parser.add_argument("--fafb", action="store_true", help="the FAFB VGG instead")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, load {os.getloadavg()}")
    model, batch = ({**FAFB}, 8) if args.fafb else ({**SMALL}, 32)
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        url = f"sqlite:///{base / 'bench.db'}"
        build_data(base, url, tuple(args.shape), args.synapses, 0)
        setup = make_setup(base, url, "positions", "small", batch, model)
        bundle = export_model(base / "positions/02_train/setup_t1", 1, base / "bundle")
        with open_database(url) as db:
            synapses = db.synapses(split="small", part="test")
        table = base / "synapses.parquet"
        synapses[["synapse_id", "skeleton_id", "x", "y", "z"]].to_parquet(table)
        through_database(setup, args.read_workers, args.threads)  # warm-up: page cache, fork server
        rounds = []
        for _ in range(args.repeat):
            db = through_database(setup, args.read_workers, args.threads)
            pos = through_positions(
                bundle, base / "raw.zarr", table, base / "out", args.read_workers, batch,
                args.threads,
            )  # fmt: skip
            rounds.append((db, pos))
        print(f"load after {os.getloadavg()}")
    name = "fafb-vgg" if args.fafb else "resnet18-f1"
    for key, label in (("steady_synapses_per_second", "after start-up"),
                       ("synapses_per_second", "whole call")):  # fmt: skip
        ratios = [pos[key] / db[key] for db, pos in rounds]
        db_rate = float(np.median([db[key] for db, _ in rounds]))
        pos_rate = float(np.median([pos[key] for _, pos in rounds]))
        print(
            f"{name} {args.synapses} synapses, {label}: predict {db_rate:8.1f}/s, "
            f"predict-positions {pos_rate:8.1f}/s = {pos_rate / db_rate:5.1%} (rounds: "
            + ", ".join(f"{r:.1%}" for r in ratios)
            + ")"
        )


if __name__ == "__main__":
    main()
