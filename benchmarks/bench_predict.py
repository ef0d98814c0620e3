"""Prediction throughput of ``synister predict`` against the original's design, in one run.

    .venv/bin/python benchmarks/bench_predict.py [--small-synapses 20000] [--fafb-synapses 24]

Writes a random uint8 volume (40 x 4 x 4 nm voxels, zarr chunks 32 x 128 x 128) and a SQLite
database with random synapses to a temporary folder, makes training and prediction setups with
randomly initialised checkpoints, then times on the same network, data, torch threads and machine:

- ``ours``: :func:`synister.predict.predict_setup` (reading in a thread, or in a process handing
  batches over through shared-memory slots; the network in this process; a writer process
  storing the batches that come within 0.2 s in one transaction); the whole call, and the
  rate after start-up (from the first batch through the network to the last stored);
- ``original``: the original's design (its ``predict_pipeline.py``): per batch, open the volume
  (``daisy.open_ds`` there) and read the patches one after the other with blocking reads and no
  chunk cache (zarr-python has none, so every patch decodes its chunks again), run the network,
  then one database write per synapse, each its own transaction (its MongoDB ``update_one``),
  here through ``Database.write_predictions``;
- ``lean``: the same loop made as cheap as it gets: the volume opened once with its chunk cache,
  and one bare INSERT per synapse on the backend's own autocommit connection;
- ``model alone``: the network on pre-loaded, normalised tensors.

Cases: ``io-fafb-patch`` and ``io-small-patch`` use a stand-in network that costs nothing
(the pipeline alone, on 16x160x160 and 8x32x32 patches); ``small-model`` a small 3D CNN (two
convolutions) on 8x32x32 patches, so that reading and writing dominate (target: ours >= 10x
original); ``resnet18-f1`` a ResNet-18 with one feature map there, which on CPU already costs more
than our reading and writing; ``fafb-vgg`` the seed's VGG (input 16x160x160, fmaps 12,
downsample (1,2,2)x3 + (2,2,2); target ours after start-up >= 90 % of the model alone). Runs on
SQLite, and on PostgreSQL too when ``SYNISTER_TEST_POSTGRES_URL`` is set (a scratch database,
dropped afterwards). Timings are wall-clock: other load on the machine lowers all of them;
compare within one run (``--repeat N``: N interleaved rounds of the small cases, medians).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import torch

from synister.config import load_predict_setup, load_train_setup
from synister.db import open_database
from synister.models import build_model, load_checkpoint, save_checkpoint
from synister.nt import TRANSMITTERS
from synister.predict import predict_setup
from synister.setup import prepare_prediction, prepare_training
from synister.volumes import Volume, normalize, write_volume

VOXEL_NM = (40, 4, 4)
FAFB = {
    "network": "VGG",
    "input_shape": (16, 160, 160),
    "fmaps": 12,
    "downsample_factors": [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)],
}
SMALL_INPUT = {"input_shape": (8, 32, 32), "downsample_factors": [(1, 2, 2), (2, 2, 2)]}
SMALL = {**SMALL_INPUT, "network": "ResNet18", "fmaps": 1}
#: name -> (setup keys, network in place of the checkpoint's (None: the checkpoint's), batch size)
CASES = {
    "io-fafb-patch": ({**FAFB, "network": "ResNet18", "fmaps": 1}, "MeanNet", 8),
    "io-small-patch": (SMALL, "MeanNet", 32),
    "small-model": (SMALL, "SmallNet", 32),
    "resnet18-f1": (SMALL, None, 32),
}


class MeanNet(torch.nn.Module):
    """A stand-in network that costs next to nothing: logits from the patch mean. It isolates
    what the pipeline itself costs: reading, normalising, handing over and storing."""

    def __init__(self, classes: int):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.linspace(-1, 1, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3, 4))[:, None] * self.scale


class SmallNet(torch.nn.Sequential):
    """A small 3D CNN (two strided convolutions, 2,900 weights): a real network whose cost on
    8x32x32 patches stays below that of reading and storing them."""

    def __init__(self, classes: int):
        super().__init__(
            torch.nn.Conv3d(1, 8, 3, stride=(1, 2, 2)),
            torch.nn.ReLU(),
            torch.nn.Conv3d(8, 12, 3, stride=2),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool3d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(12, classes),
        )


STAND_INS = {"MeanNet": MeanNet, "SmallNet": SmallNet}


def build_data(base: Path, url: str, shape_vox: tuple[int, int, int], n: int, n_fafb: int) -> None:
    """A random volume and ``n`` synapses: all in the test part of split ``small``, the first
    ``n_fafb`` in the test part of split ``fafb``."""
    rng = np.random.default_rng(0)
    write_volume(base / "raw.zarr", rng.integers(0, 256, shape_vox, dtype=np.uint8), VOXEL_NM)
    n_skeletons = 60
    skeletons = pd.DataFrame(
        {
            "skeleton_id": np.arange(n_skeletons),
            "nt_known": [[TRANSMITTERS[i % len(TRANSMITTERS)]] for i in range(n_skeletons)],
        }
    )
    # patch centres at least half a patch inside, so no read is zero-padded
    margin_nm = np.array([8, 80, 80]) * VOXEL_NM
    extent_nm = np.array(shape_vox) * VOXEL_NM - 2 * margin_nm
    positions_nm = margin_nm + rng.random((n, 3)) * extent_nm
    synapses = pd.DataFrame(
        {
            "synapse_id": np.arange(n) + 1,
            "z": positions_nm[:, 0],
            "y": positions_nm[:, 1],
            "x": positions_nm[:, 2],
            "skeleton_id": rng.integers(0, n_skeletons, n),
        }
    )
    with open_database(url) as db:
        db.import_records(synapses=synapses, skeletons=skeletons)
        ids = synapses.synapse_id
        db.write_split("small", pd.DataFrame({"synapse_id": ids, "part": "test"}))
        parts = np.where(np.arange(n) < n_fafb, "test", "train")
        db.write_split("fafb", pd.DataFrame({"synapse_id": ids, "part": parts}))


def make_setup(
    base: Path, url: str, experiment: str, split: str, batch_size: int, model: dict
) -> Path:
    train = prepare_training(
        base,
        experiment,
        1,
        db_url=url,
        split_name=split,
        raw_container="raw.zarr",
        raw_dataset="raw",
        voxel_size=VOXEL_NM,
        batch_size=batch_size,
        num_cache_workers=1,
        **model,
    )
    cfg, _ = load_train_setup(train)
    torch.manual_seed(0)
    save_checkpoint(train / "model_checkpoint_1", build_model(cfg), None, 1)
    return prepare_prediction(base, experiment, 1, [1], validation=False)[0]


def load_model(setup: Path, stand_in: str | None = None):
    cfg, _ = load_predict_setup(setup)
    if stand_in:
        torch.manual_seed(0)
        return cfg, STAND_INS[stand_in](len(cfg.classes)).eval()
    model = build_model(cfg)
    load_checkpoint(cfg.train_checkpoint, model)
    return cfg, model.eval()


def sql_row_writer(db, run: str, n_classes: int):
    """One INSERT per synapse, each its own transaction, on the backend's own connection."""
    table = db._run_table(run)  # the backend's quoted table name of the run
    marks = ", ".join(["?"] * (n_classes + 1))
    if type(db).__name__.startswith("Postgres"):
        marks = marks.replace("?", "%s")
    statement = f"INSERT INTO {table} VALUES ({marks})"
    connection = db._connection

    def write(synapse_id: int, probabilities: np.ndarray) -> None:
        # both connections are in autocommit mode: the statement is its own transaction
        connection.execute(statement, [synapse_id, *probabilities.tolist()])

    return write


def baseline(setup: Path, design: str, stand_in: str | None = None) -> float:
    """The original's design (``original``) or its cheapest form (``lean``); returns
    synapses/s of the whole run (model load included)."""
    start = time.perf_counter()
    cfg, model = load_model(setup, stand_in)
    run = f"{cfg.run_name}_baseline_{design}"

    def open_volume(cache_bytes: int) -> Volume:
        return Volume(
            cfg.raw_container,
            cfg.raw_dataset,
            voxel_size_nm=cfg.voxel_size,
            cache_bytes=cache_bytes,
        )

    volume = open_volume(256 * 2**20) if design == "lean" else None  # original: per batch
    with open_database(cfg.database_url()) as db:
        synapses = db.synapses(split=cfg.split_name, part=cfg.split_part)
        db.create_prediction_run(run, cfg.classes, {}, overwrite=True)
        write_row = sql_row_writer(db, run, len(cfg.classes)) if design == "lean" else None
        centers_nm = synapses[["z", "y", "x"]].to_numpy()
        ids = synapses.synapse_id.to_numpy()
        with torch.inference_mode():
            for first in range(0, len(ids), cfg.batch_size):
                rows = range(first, min(first + cfg.batch_size, len(ids)))
                if design == "original":
                    volume = open_volume(0)
                raw = np.stack([volume.read_patch(centers_nm[i], cfg.input_shape) for i in rows])
                logits = model(torch.from_numpy(normalize(raw))[:, None])
                probabilities = torch.softmax(logits, dim=1).numpy()
                for i, p in zip(rows, probabilities, strict=True):
                    if write_row is None:
                        db.write_predictions(run, ids[i : i + 1], p[None])
                    else:
                        write_row(int(ids[i]), p)
        assert len(db.predicted_synapse_ids(run)) == len(ids)
        db.drop_prediction_run(run)
    return len(ids) / (time.perf_counter() - start)


def bare(setup: Path, n: int, stand_in: str | None = None) -> float:
    """The model alone on pre-loaded tensors, batch by batch: synapses/s."""
    cfg, model = load_model(setup, stand_in)
    batch = torch.rand(cfg.batch_size, 1, *cfg.input_shape) * 2 - 1
    batches = max(1, n // cfg.batch_size)
    with torch.inference_mode():
        model(batch)  # warm-up
        start = time.perf_counter()
        for _ in range(batches):
            torch.softmax(model(batch), dim=1).numpy()
    return batches * cfg.batch_size / (time.perf_counter() - start)


def ours(setup: Path, read_workers: int, threads: int | None, stand_in: str | None = None) -> dict:
    """``predict_setup`` on the setup (the run is dropped afterwards): its result."""
    cfg, model = load_model(setup, stand_in) if stand_in else (load_predict_setup(setup)[0], None)
    result = predict_setup(
        setup, read_workers=read_workers, threads=threads, progress=False, model=model
    )
    with open_database(cfg.database_url()) as db:
        assert len(db.predicted_synapse_ids(cfg.run_name)) == result["total"]
        db.drop_prediction_run(cfg.run_name)
    return result


def postgres_scratch(admin_url: str) -> tuple[str, str]:
    """A fresh database beside ``admin_url``: (name, url)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"synister_bench_predict_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    info = {**conninfo_to_dict(admin_url), "dbname": name}
    return name, f"postgresql://?{urlencode(info)}"


def run_backend(base: Path, url: str, args) -> list[str]:
    n = max(args.small_synapses, args.fafb_synapses)
    build_data(base, url, tuple(args.shape), n, args.fafb_synapses)
    lines = []
    for name in args.cases:
        model, stand_in, batch = CASES[name]
        setup = make_setup(base, url, name, "small", batch, model)
        if not lines:  # warm-up: the fork server of the readers, the page cache
            ours(setup, 1, None, stand_in)
        rounds = []  # interleaved, so that drifting load meets all alike; medians reported
        for _ in range(args.repeat):
            results = {readers: ours(setup, readers, None, stand_in) for readers in (1, 0)}
            previous = torch.get_num_threads()
            torch.set_num_threads(results[1]["threads"])  # the baseline: the same torch threads
            original = baseline(setup, "original", stand_in)
            lean = baseline(setup, "lean", stand_in)
            model_only = bare(setup, 20 * batch, stand_in)
            torch.set_num_threads(previous)
            rounds.append((results, original, lean, model_only))
        original, lean, model_only = (float(np.median([r[i] for r in rounds])) for i in (1, 2, 3))
        results = {
            readers: {
                key: float(np.median([r[0][readers][key] for r in rounds]))
                for key in ("synapses_per_second", "steady_synapses_per_second", "threads")
            }
            for readers in (1, 0)
        }
        if args.repeat > 1:
            ratios = [r[0][0]["synapses_per_second"] / r[1] for r in rounds]
            lines.append(
                f"{name:<15}{args.repeat} rounds, ours with a reading thread / original: "
                + ", ".join(f"{x:.1f}x" for x in ratios)
            )
        lines.append(
            f"{name:<15}original {original:6.1f}/s, lean {lean:6.1f}/s, "
            f"model alone {model_only:7.1f}/s ({results[1]['threads']:.0f} thread)"
        )
        for readers, result in results.items():
            rate, steady = result["synapses_per_second"], result["steady_synapses_per_second"]
            how = "1 reading process" if readers else "a reading thread "
            lines.append(
                f"{name:<15}ours with {how}: {rate:7.1f}/s = {rate / original:4.1f}x original, "
                f"{rate / lean:4.1f}x lean (after start-up {steady:7.1f}/s)"
            )
    if not args.fafb:
        return lines
    # the FAFB network: compute dominates; reading and writing must hide behind it
    setup = make_setup(base, url, "fafb", "fafb", args.fafb_batch, FAFB)
    previous = torch.get_num_threads()
    bare_rates = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        bare_rates[threads] = bare(setup, args.fafb_synapses)
    torch.set_num_threads(previous)
    results = {config: ours(setup, *config) for config in ((1, None), (0, None), (1, 2))}
    torch.set_num_threads(1)  # the 1-thread reference again, after ours: load drifts
    bare_rates[1] = (bare_rates[1] + bare(setup, args.fafb_synapses)) / 2
    torch.set_num_threads(previous)
    best = max(bare_rates.values())
    for (readers, _), result in results.items():
        steady, whole = result["steady_synapses_per_second"], result["synapses_per_second"]
        lines.append(
            f"{'fafb-vgg':<15}ours {steady:6.2f}/s after start-up ({whole:.2f}/s whole run), "
            f"{readers} reading process(es) + {result['threads']} thread(s) = "
            f"{100 * steady / best:5.1f} % "
            f"of the model alone on pre-loaded tensors ({bare_rates[1]:.2f}/s with 1 thread "
            "(mean of before and after), "
            f"{bare_rates[2]:.2f}/s with 2)"
        )
    if args.fafb_baseline:
        lines.append(f"{'fafb-vgg':<15}original {baseline(setup, 'original'):6.2f}/s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 640, 640), help="volume, vox")
    parser.add_argument("--small-synapses", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the small cases")
    parser.add_argument("--fafb-synapses", type=int, default=24)
    parser.add_argument("--fafb-batch", type=int, default=8)
    parser.add_argument("--fafb-baseline", action="store_true", help="also time the baseline")
    parser.add_argument("--cases", nargs="*", choices=list(CASES), default=list(CASES))
    parser.add_argument("--no-fafb", dest="fafb", action="store_false", help="skip fafb-vgg")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, load {os.getloadavg()}")
    backends = {}
    with tempfile.TemporaryDirectory() as folder:
        backends["sqlite"] = run_backend(
            Path(folder), f"sqlite:///{Path(folder) / 'bench.db'}", args
        )
    admin_url = os.environ.get("SYNISTER_TEST_POSTGRES_URL")
    if admin_url:
        import psycopg

        name, url = postgres_scratch(admin_url)
        try:
            with tempfile.TemporaryDirectory() as folder:
                backends["postgresql"] = run_backend(Path(folder), url, args)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"load after {os.getloadavg()}")
    for backend, lines in backends.items():
        for line in lines:
            print(f"{backend:<11}{line}")


if __name__ == "__main__":
    main()
