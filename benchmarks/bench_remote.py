"""Remote volumes against local ones: ``predict-positions`` and ``predict-volume`` reading the
demo's volume over HTTP on loopback, side by side with the same files on local disk.

    .venv/bin/python benchmarks/bench_remote.py [--rounds 3] [--latency-ms 0 20 100] \
        [--workers 1 2] [--read-ahead 0 1]

Writes the demo's synthetic volume (``synister synthetic``'s easy preset, 48 x 768 x 768
voxels, 600 synapses) tiled ``--tiles`` x ``--tiles`` in y and x (default 2: 48 x 1536 x 1536
voxels, 2,400 synapses, the same density; runs long enough for steady rates) as a two-scale
neuroglancer precomputed volume (JPEG quality 95, chunks 64 x 64 x 16, 4 x 4 x 40 and
8 x 8 x 40 nm), and two random-weight model bundles: the demo's network
(ResNet-18, 8 feature maps, 8 x 48 x 48) and a cheap one (ResNet-18, 1 feature map, two
downsamplings) whose cost leaves reading to dominate. A real HTTP server on loopback
(``tests/loopback_http.py``: HTTP/1.1, ETags, a latency added to every response, one
bandwidth cap for all responses) serves the folder. Each round runs, for each network, each
front-end on the local copy (a fresh copy per run: no chunk cached before) and over HTTP at
each latency (a fresh server process per run: nothing cached, and no GIL shared with the
measured process), interleaved; the table gives medians
over the rounds and the machine's load.

- ``predict-positions``: every synapse of the table, whole call (volume opened, model
  loaded, all predicted), 1 torch thread;
- ``predict-volume``: blocks of 640 x 1024 x 1024 nm (16 x 256 x 256 voxels, ``--block-nm``),
  with each number of workers of ``--workers`` (1: this machine's default), 1 torch thread
  each, and each number of blocks read ahead of ``--read-ahead`` (0: predict-volume's
  default); the rate from the blocks' done markers (first to last finished block), so the
  workers' start-up does not count.

Reported: synapses/s remote and local and their ratio (for ``predict-positions`` also after
its first batch, without the start-up's round trips), HTTP requests per distinct chunk of
the scale read, and bytes served per synapse (goals: <= 1.05 requests per chunk; remote >=
0.8x local at 20 ms and >= 0.5x at 100 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))
from loopback_http import write_precomputed  # noqa: E402

from synister.predict.blockwise import Source, predict_volume  # noqa: E402
from synister.predict.positions import prepare_positions  # noqa: E402
from synister.volumes import Volume  # noqa: E402

SCALE_KEY = "4_4_40"
NETWORKS = {
    "demo": {"fmaps": 8, "downsample_factors": [(1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]},
    "cheap": {"fmaps": 1, "downsample_factors": [(1, 2, 2), (2, 2, 2)]},
}
INPUT_VOX = (8, 48, 48)
BLOCK_NM = (640.0, 1024.0, 1024.0)
COLUMNS = {"id_column": "synapse_id", "position_columns": ["x_nm", "y_nm", "z_nm"]}


def build(base: Path, tiles: int) -> Path:
    """The demo dataset tiled ``tiles`` x ``tiles`` in y and x (its synapses copied into each
    tile), its volume as precomputed JPEG (two scales), two bundles."""
    import numpy as np
    import pandas as pd

    from synister.synthetic import generate

    generate(base / "demo", preset="easy", seed=0, montages=False, ceiling=False)
    source = Volume(base / "demo" / "raw.zarr", "raw")
    raw = source.read_region_vox((0, 0, 0), source.shape_vox)
    write_precomputed(base / "pc", np.tile(raw, (1, tiles, tiles)), (64, 64, 16), "jpeg",
                      jpeg_quality=95)  # fmt: skip
    synapses = pd.read_parquet(base / "demo" / "latents.parquet")
    extent_nm = np.asarray(source.shape_vox) * source.voxel_size_nm  # z, y, x
    copies = []
    for ty in range(tiles):
        for tx in range(tiles):
            copy = synapses.copy()
            copy["y_nm"] += ty * extent_nm[1]
            copy["x_nm"] += tx * extent_nm[2]
            copy["synapse_id"] += (ty * tiles + tx) * (int(synapses["synapse_id"].max()) + 1)
            copies.append(copy)
    table = base / "synapses.parquet"
    pd.concat(copies, ignore_index=True).to_parquet(table, index=False)
    for name, network in NETWORKS.items():
        make_bundle(base / f"setup_{name}", base / f"bundle_{name}", network)
    return table


def make_bundle(setup_base: Path, out: Path, network: dict) -> None:
    import torch

    from synister.config import load_train_setup
    from synister.evaluate.provenance import export_model
    from synister.models import build_model, save_checkpoint
    from synister.setup import prepare_training

    setup = prepare_training(
        setup_base, "e", 0, db_url=f"sqlite:///{setup_base / 'none.db'}", check_volume=False,
        synapse_types=["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine",
                       "dopamine"],
        input_shape=INPUT_VOX, network="ResNet18", voxel_size=(40, 4, 4), **network,
    )  # fmt: skip
    cfg, _ = load_train_setup(setup)
    torch.manual_seed(0)
    save_checkpoint(setup / "model_checkpoint_1", build_model(cfg), None, 1)
    export_model(setup, 1, out)


def positions_rate(bundle: Path, volume: str, table: Path) -> tuple[float, int, float]:
    """Synapses/s of the whole ``predict-positions`` work (open, load, predict all), and
    after its first batch (without the start-up's round trips)."""
    started = time.perf_counter()
    job = prepare_positions(bundle, volume, table, threads=1, **COLUMNS)
    first: list = []  # (time, synapses) of the first batch

    def sink(rows, probabilities):
        if not first:
            first.append((time.perf_counter(), len(rows)))

    n = job.predict(job.predictable, sink)
    ended = time.perf_counter()
    steady = (n - first[0][1]) / (ended - first[0][0])
    return n / (ended - started), n, steady


def volume_rate(
    bundle: Path, volume: str, table: Path, out: Path, block_nm=BLOCK_NM, setting=(1, 0)
) -> tuple[float, int]:
    """Synapses/s of ``predict-volume``'s blocks, from their done markers."""
    shutil.rmtree(out, ignore_errors=True)
    workers, read_ahead = setting
    summary = predict_volume(
        bundle, volume, Source(str(table)), out, block_nm=block_nm, workers=workers, threads=1,
        read_ahead=read_ahead or None, column_options=COLUMNS, progress=False,
        log=lambda *args: None,
    )  # fmt: skip
    if summary["failed"]:
        raise RuntimeError(f"predict-volume failed: {summary['failed']}")
    stats = [json.loads(p.read_text()) for p in (out / "done").glob("*.json")]
    stats.sort(key=lambda s: s["finished"])
    steady = sum(s["predicted"] for s in stats[1:])
    seconds = stats[-1]["finished"] - stats[0]["finished"]
    return steady / seconds, summary["predicted"], steady / seconds


def one_run(kind: str, front: str, bundle: Path, table: Path, base: Path, latency_s: float,
            bandwidth: float, block_nm=BLOCK_NM, setting=(1, 0)) -> dict:  # fmt: skip
    run = base / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    measure = positions_rate if front == "positions" else volume_rate
    extra = (run / "out", block_nm, setting) if front == "volume" else ()
    if kind == "local":
        shutil.copytree(base / "pc", run / "pc")  # nothing of it cached yet
        rate, n, steady = measure(bundle, f"precomputed://{run / 'pc'}", table, *extra)
        return {"rate": rate, "steady": steady}
    with server_process(base, latency_s, bandwidth) as (url, counts):
        rate, n, steady = measure(bundle, f"precomputed://{url}/pc", table, *extra)
        got = counts(f"pc/{SCALE_KEY}")
        return {
            "rate": rate,
            "steady": steady,
            "requests_per_chunk": got["requests"] / got["distinct"],
            "chunks": got["distinct"],
            "bytes_per_synapse": got["bytes_sent"] / n,
        }


@contextlib.contextmanager
def server_process(root: Path, latency_s: float, bandwidth: float):
    """A loopback server (``tests/loopback_http.py``) in its own process: in this one its
    threads would take the GIL from ``predict-positions``, which runs here. Yields its URL
    and a function of a path prefix giving the requests, distinct paths and bytes sent."""
    server = subprocess.Popen(
        [sys.executable, str(TESTS / "loopback_http.py"), str(root), str(latency_s),
         str(bandwidth)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = server.stdout.readline().strip()

        def counts(prefix: str) -> dict:
            server.stdin.write(prefix + "\n")
            server.stdin.flush()
            return json.loads(server.stdout.readline())

        yield url, counts
    finally:
        server.stdin.close()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0, 20, 100])
    parser.add_argument("--bandwidth-mbs", type=float, default=100.0, help="MB/s, all responses")
    parser.add_argument("--fronts", nargs="+", default=["positions", "volume"])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS))
    parser.add_argument("--block-nm", type=float, nargs=3, default=BLOCK_NM, help="z y x")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="predict-volume")
    parser.add_argument("--read-ahead", type=int, nargs="+", default=[0], help="0: default")
    parser.add_argument(
        "--tiles", type=int, default=2, help="the demo volume tiled N x N in y and x"
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    base = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    try:
        table = build(base, args.tiles)
        results: dict[tuple, list[dict]] = {}
        loads = []
        for round_ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for network, front, setting in cases(args):
                bundle = base / f"bundle_{network}"
                runs = [("local", 0.0)] + [("remote", ms / 1e3) for ms in args.latency_ms]
                for kind, latency in runs:
                    got = one_run(kind, front, bundle, table, base, latency,
                                  args.bandwidth_mbs * 1e6, args.block_nm, setting)  # fmt: skip
                    results.setdefault((network, front, setting, kind, latency), []).append(got)
                    print(round_, network, front, setting, kind, latency, got, flush=True)
            loads.append(os.getloadavg()[0])
        report(results, args, loads)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def cases(args) -> list[tuple[str, str, tuple[int, int]]]:
    """(network, front-end, (workers, blocks read ahead)) of each measured case:
    ``predict-positions`` with one process, ``predict-volume`` with each setting."""
    settings = [(w, k) for w in args.workers for k in args.read_ahead]
    return [
        (network, front, setting)
        for network in args.networks
        for front in args.fronts
        for setting in (settings if front == "volume" else [(1, 0)])
    ]


def report(results: dict, args, loads: list[float]) -> None:
    def median(key, field):
        return statistics.median(r[field] for r in results[key])

    print(
        f"\n{args.rounds} rounds, volume tiled {args.tiles} x {args.tiles}, bandwidth "
        f"{args.bandwidth_mbs:g} MB/s, predict-volume blocks "
        f"{args.block_nm} nm, load average "
        f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores\n"
    )
    print("| network | front-end | workers | read ahead | latency | remote syn/s | local syn/s | "
          "ratio | ratio after the first batch | requests per chunk | chunks | "
          "kB per synapse |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for network, front, setting in cases(args):
        local = median((network, front, setting, "local", 0.0), "rate")
        local_steady = median((network, front, setting, "local", 0.0), "steady")
        workers, read_ahead = setting
        for ms in args.latency_ms:
            key = (network, front, setting, "remote", ms / 1e3)
            remote = median(key, "rate")
            per_chunk = max(r["requests_per_chunk"] for r in results[key])
            steady_ratio = (  # predict-volume's rate is after its first block already
                f"{median(key, 'steady') / local_steady:.2f}" if front == "positions" else "="
            )
            print(
                f"| {network} | {front} | {workers} | {read_ahead or 'default'} | {ms:g} ms | "
                f"{remote:.1f} | {local:.1f} | "
                f"{remote / local:.2f} | {steady_ratio} | {per_chunk:.3f} (max) | "
                f"{int(median(key, 'chunks'))} | "
                f"{median(key, 'bytes_per_synapse') / 1e3:.1f} |"
            )
    print("\nper round:", json.dumps({" ".join(map(str, k)): v for k, v in results.items()},
                                     default=float)[:4000])  # fmt: skip


if __name__ == "__main__":
    main()
