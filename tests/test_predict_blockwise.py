"""``synister predict-volume``: blocks, one block without a scheduler, daisy runs with two
workers, kill -9 and resume, failed blocks, sources and the dry run, on a small random
volume and a tiny random-weight network (the 20,000-synapse acceptance run is
benchmarks/bench_blockwise.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import pipe_in_place_of
from typer.testing import CliRunner
from warm import WARM

from synister.cli import app
from synister.db import open_database
from synister.models.bundle import load_bundle
from synister.predict import Predictor
from synister.predict.blockwise import (
    BlockGrid,
    PlanMismatch,
    Source,
    load_plan,
    predict_block,
    predict_volume,
    prepare,
    read_block,
)
from synister.predict.blockwise.block import choose_strategy
from synister.predict.blockwise.layout import Store
from synister.predict.blockwise.source import rows_frame
from synister.predict.blockwise.worker import read_ahead_blocks, take_blocks
from synister.tables import choose_columns, position_rows, read_positions
from synister.volumes import Volume, write_volume
from synister.volumes.stage import memory_stage_path

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:.*reach outside the volume:UserWarning"),
    pytest.mark.usefixtures("warm_executable"),  # daisy's workers start warm
]

CLASSES = ["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine", "dopamine"]
SHORT = ["gaba", "ach", "glut", "ser", "oct", "da"]
VOXEL_NM = np.array([40.0, 4.0, 4.0])
SHAPE_VOX = (16, 160, 160)
INPUT_VOX = (4, 16, 16)
BLOCK_NM = (320, 256, 256)  # 8 x 64 x 64 voxels: 2 x 3 x 3 blocks
N_SYNAPSES = 900
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here, as each of two workers on 2 cores has (and far faster than two
    on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory, random_bundle):
    """A random volume, a random-weight bundle and a synapse table (x, y, z nm) of which some
    lie outside the volume and some near its border."""
    base = tmp_path_factory.mktemp("blockwise")
    rng = np.random.default_rng(3)
    write_volume(
        base / "raw.zarr",
        rng.integers(0, 256, SHAPE_VOX, dtype=np.uint8),
        VOXEL_NM,
        chunks_vox=(8, 32, 32),
    )
    (base / "bundle").symlink_to(random_bundle(INPUT_VOX, classes=CLASSES, voxel_size_nm=VOXEL_NM))
    extent_xyz = (np.array(SHAPE_VOX) * VOXEL_NM)[::-1]
    xyz = rng.uniform(-0.05, 1.05, (N_SYNAPSES, 3)) * extent_xyz
    table = pd.DataFrame(
        {
            "syn_id": rng.permutation(N_SYNAPSES).astype(np.int64) * 11 + 5,
            "body": rng.integers(0, 12, N_SYNAPSES),
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
        }
    )
    table.to_parquet(base / "synapses.parquet", index=False)
    return base, table


def predictor(base: Path) -> Predictor:
    bundle = load_bundle(base / "bundle")
    return Predictor(bundle.build_model(), bundle.input_shape_vox, bundle.classes, device="cpu")


def reference(base: Path, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (NaN outside the volume) and status, one patch per synapse, through the
    engine's volume entry point (the predict-positions path)."""
    volume = Volume(base / "raw.zarr", "raw")
    centers = table[["z", "y", "x"]].to_numpy()
    starts = volume.patch_starts_vox(centers, INPUT_VOX)
    centre = starts + np.array(INPUT_VOX) // 2
    outside = ~np.all((centre >= 0) & (centre < np.array(SHAPE_VOX)), axis=1)
    inside = np.all((starts >= 0) & (starts + INPUT_VOX <= np.array(SHAPE_VOX)), axis=1)
    status = np.where(outside, "outside_volume", np.where(inside, "ok", "partly_outside"))
    probabilities = np.full((len(table), 6), np.nan, dtype=np.float32)

    def store(rows, values):
        probabilities[rows] = values

    rows = np.flatnonzero(~outside)
    predictor(base).predict_volume(volume, rows, centers[rows], store)
    return probabilities, status


@pytest.fixture(scope="module")
def expected(world):
    base, table = world
    return reference(base, table)


def staged_rows(table: pd.DataFrame) -> pa.Table:
    """Rows as the plan stages them (those of predict-positions: row, id, neuron_id, x, y, z,
    x_nm, y_nm, z_nm)."""
    columns = choose_columns(list(table.columns), "<test>")
    rows = position_rows(table, "<test>", columns, csv=False, first_row=int(table.index[0]))
    return pa.Table.from_pandas(rows, preserve_index=False)


def check_result(out: Path, table: pd.DataFrame, expected) -> pd.DataFrame:
    """Every synapse exactly once, with the per-patch probabilities and status."""
    result = pd.read_parquet(out / "synapses")
    assert len(result) == len(table)
    assert result["id"].is_unique
    assert set(result["id"]) == set(table["syn_id"])
    result = result.set_index("id").loc[table["syn_id"]]
    probabilities, status = expected
    np.testing.assert_array_equal(result["status"].to_numpy(), status)
    np.testing.assert_allclose(result[SHORT].to_numpy(), probabilities, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result["x"].to_numpy(), table["x"].to_numpy())
    assert list(result.columns[:6]) == ["row", "neuron_id", "x", "y", "z", "x_nm"]
    return result


# -- blocks and one block, no scheduler ----------------------------------------------------------


def test_every_centre_voxel_has_exactly_one_block():
    grid = BlockGrid((10, 100, 70), (4, 32, 32))
    assert grid.grid_shape == (3, 4, 3)
    centres = np.array([[0, 0, 0], [9, 99, 69], [4, 32, 31], [-5, 200, 3], [12, -1, 70]])
    linear = grid.linear_index(centres)
    owners = [grid.block(i) for i in linear]
    assert [b.index for b in owners] == [(0, 0, 0), (2, 3, 2), (1, 1, 0), (0, 3, 0), (2, 0, 2)]
    assert owners[1].shape_vox == (2, 4, 6)  # edge blocks are cut at the volume
    inside = np.clip(centres, 0, np.array(grid.volume_shape_vox) - 1)
    assert all(b.contains(c[None])[0] for b, c in zip(owners, inside, strict=True))


def test_block_sizes_are_whole_voxels_and_positive():
    assert BlockGrid.from_nm((10, 100, 70), (100, 130, 10), VOXEL_NM).block_vox == (2, 32, 2)
    with pytest.raises(ValueError, match="3 positive sizes"):
        BlockGrid.from_nm((10, 100, 70), (0, 256, 256), VOXEL_NM)


def test_read_strategy_follows_density():
    dense = np.array([[0, 0, 0], [1, 2, 2], [2, 1, 3]])
    sparse = np.array([[0, 0, 0], [40, 400, 400]])
    assert choose_strategy(dense, INPUT_VOX) == "region"
    assert choose_strategy(sparse, INPUT_VOX) == "patches"


@pytest.mark.parametrize("strategy", ["region", "patches"])
def test_predict_block_equals_one_patch_per_synapse(world, expected, strategy):
    base, table = world
    volume = Volume(base / "raw.zarr", "raw")
    engine = predictor(base)
    grid = BlockGrid.from_nm(SHAPE_VOX, BLOCK_NM, VOXEL_NM)
    owner = grid.linear_index(volume.center_vox(table[["z", "y", "x"]].to_numpy(), INPUT_VOX))
    probabilities, status = expected
    checked = 0
    for linear in np.unique(owner):
        rows = np.flatnonzero(owner == linear)
        result, stats = predict_block(
            grid.block(linear),
            staged_rows(table.iloc[rows]),
            volume,
            engine,
            classes=CLASSES,
            strategy=strategy,
        )
        assert stats["strategy"] == strategy
        assert result.column("id").to_pylist() == table["syn_id"].iloc[rows].tolist()
        assert result.column("status").to_pylist() == status[rows].tolist()
        got = np.stack([result.column(c).to_numpy(zero_copy_only=False) for c in SHORT], axis=1)
        np.testing.assert_allclose(got, probabilities[rows], rtol=1e-4, atol=1e-5)
        checked += len(rows)
    assert checked == len(table)


def test_read_block_refuses_a_synapse_of_another_block(world):
    base, table = world
    volume = Volume(base / "raw.zarr", "raw")
    grid = BlockGrid.from_nm(SHAPE_VOX, BLOCK_NM, VOXEL_NM)
    far = table[(table["x"] > 500) & (table["x"] < 600) & (table["z"] > 400) & (table["z"] < 600)]
    with pytest.raises(ValueError, match="lies outside the block"):
        read_block(grid.block(0), staged_rows(far.head(1)), volume, INPUT_VOX)


# -- a worker's blocks -----------------------------------------------------------------------------


class FakeClient:
    """A daisy connection handing out the blocks of a shared list, one at a time."""

    def __init__(self, waiting: list, log: list):
        self.waiting, self.log, self.holds, self.refused = waiting, log, None, False

    @contextlib.contextmanager
    def acquire_block(self):
        assert self.holds is None, "a connection asked while it holds a block"
        assert not self.refused, "a connection asked again after daisy dropped it"
        self.holds = self.waiting.pop(0) if self.waiting else None
        self.refused = self.holds is None
        try:
            yield self.holds
        finally:
            self.log.append(("released", self.holds))
            self.holds = None


def test_a_worker_reads_the_next_blocks_while_it_predicts_one():
    waiting, log = list(range(10)), []
    clients = [FakeClient(waiting, log) for _ in range(4)]  # 3 blocks read ahead

    def read(linear):
        log.append(("read", linear))
        done = Future()
        done.set_result((None, None))
        return done

    class Runner:
        def finish(self, linear, rows, raw):
            log.append(("predicted", linear))

    assert take_blocks(clients, lambda block: block, read, Runner()) == 10
    events = [e for e in log if e[0] != "released" or e[1] is not None]
    assert events[:5] == [("read", 0), ("read", 1), ("read", 2), ("read", 3), ("predicted", 0)]
    assert [b for e, b in events if e == "predicted"] == list(range(10))
    for k in range(4, 10):  # block k is read once block k - 4 is released, before k - 3 runs
        at = events.index(("read", k))
        assert events[at - 1] == ("released", k - 4) and events[at + 1] == ("predicted", k - 3)
    assert read_ahead_blocks((16, 256, 256), INPUT_VOX) == 8  # small blocks: 8 ahead
    assert read_ahead_blocks((128, 2048, 2048), (16, 160, 160)) == 1  # FAFB's: 697 MB each


# -- runs on daisy -------------------------------------------------------------------------------


def run(base: Path, out: Path, volume: Path | None = None, **options) -> dict:
    options = {"dataset": "raw", "block_nm": BLOCK_NM, "workers": 2, "progress": False, **options}
    volume = volume or base / "raw.zarr"
    return predict_volume(
        base / "bundle", str(volume), Source(str(base / "synapses.parquet")), out, **options
    )


def test_two_workers_give_the_per_patch_probabilities_of_every_synapse(world, expected, tmp_path):
    base, table = world
    summary = run(base, tmp_path / "out")
    assert summary["failed"] == {}
    assert summary["blocks_run"] == summary["blocks_with_synapses"] == 18
    result = check_result(tmp_path / "out", table, expected)
    started = sorted(p.name for p in (tmp_path / "out/logs/predict_volume").glob("*.err"))
    assert started == ["worker_0.err", "worker_1.err"]  # two workers (who took what: timing)
    ok = result["status"] != "outside_volume"
    top = np.asarray(SHORT)[np.nanargmax(result.loc[ok, SHORT].to_numpy(), axis=1)]
    np.testing.assert_array_equal(result.loc[ok, "top_nt"].to_numpy(), top)
    assert result.loc[~ok, "top_nt"].isna().all()
    neurons = pd.read_parquet(tmp_path / "out/neurons.parquet").set_index("neuron_id")
    counts = result.loc[ok].groupby("neuron_id").size()
    pd.testing.assert_series_equal(
        neurons["n_synapses"].sort_index(), counts, check_names=False, check_dtype=False
    )
    means = result.loc[ok].groupby("neuron_id")[SHORT].mean()
    np.testing.assert_allclose(
        neurons.loc[means.index, SHORT].to_numpy(), means.to_numpy(), rtol=1e-5
    )
    assert not neurons["confident"].any()  # fewer than 100 synapses each

    stale = tmp_path / "out" / "staging"  # what a killed run's chunk stages left
    for folder in (stale, memory_stage_path(stale)):
        (folder / "chunks").mkdir(parents=True)
        (folder / "chunks" / "0.0.0").write_bytes(b"x")
    killed_write = tmp_path / "out" / "synapses" / ".block_00000_00000_00000.parquet.tmp12200"
    killed_write.write_bytes(b"half a shard")  # what a kill -9 during a shard's write leaves
    again = run(base, tmp_path / "out")  # complete: nothing is run again
    assert again["blocks_run"] == 0 and again["blocks_skipped"] == 18
    assert not stale.exists() and not memory_stage_path(stale).exists()
    assert not killed_write.exists()
    with pytest.raises(ValueError, match="read_ahead must be >= 1, got 0"):
        run(base, tmp_path / "out", read_ahead=0)


def test_kill_9_of_the_whole_run_then_resume(world, expected, tmp_path):
    base, table = world
    out = tmp_path / "out"
    volume = tmp_path / "raw.zarr"
    shutil.copytree(base / "raw.zarr", volume)
    # the blocks whose patches reach into the last chunk (z 8-15, y and x 128-159) cannot
    # finish, so the kill lands half-way whatever the machine's pace
    last_chunk = volume / "raw" / "c" / "1" / "4" / "4"
    good = pipe_in_place_of(last_chunk)
    command = [
        *WARM.cli(), "predict-volume",
        "--model", str(base / "bundle"), "--volume", str(volume), "--dataset", "raw",
        "--synapses", str(base / "synapses.parquet"), "--out", str(out), "--workers", "2",
        "--block-size", *map(str, BLOCK_NM), "--batch-size", "4", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        command, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    store = Store(out)
    try:
        deadline = time.monotonic() + 240
        while [n for n in store.finished_markers() if n.startswith("block")] == []:
            assert process.poll() is None, "the run ended before any block finished"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole run: driver and workers
        process.wait()
    before = {
        n: store.marker(n).stat().st_mtime_ns for n in store.finished_markers() if "block" in n
    }
    assert 0 < len(before) < 18, "the kill must land half-way"

    last_chunk.unlink()
    last_chunk.write_bytes(good)
    summary = run(base, out, volume, workers=1)  # the number of workers is no setting
    assert summary["failed"] == {}
    assert summary["blocks_skipped"] == len(before)
    assert summary["blocks_run"] == 18 - len(before)
    for name, mtime in before.items():  # finished blocks were not computed again
        assert store.marker(name).stat().st_mtime_ns == mtime
    assert not list((out / "synapses").glob(".*"))  # no half-written shard left visible
    check_result(out, table, expected)


def test_a_failing_block_is_retried_listed_and_finished_by_a_rerun(world, expected, tmp_path):
    base, table = world
    broken = tmp_path / "raw.zarr"
    shutil.copytree(base / "raw.zarr", broken)
    chunk = broken / "raw" / "c" / "0" / "2" / "2"  # z 0-7, y 64-95, x 64-95: block (0, 1, 1)
    good = chunk.read_bytes()
    chunk.write_bytes(b"not a zstd frame")
    options = {"dataset": "raw", "block_nm": BLOCK_NM, "workers": 2, "progress": False}
    source = Source(str(base / "synapses.parquet"))
    out = tmp_path / "out"
    summary = predict_volume(base / "bundle", str(broken), source, out, retries=1, **options)
    failed = summary["failed"]
    assert "block_00000_00001_00001" in failed  # and its neighbours whose patches reach in
    assert all("c/0/2/2" in error for error in failed.values()), failed
    assert summary["blocks_run"] == 18 - len(failed)
    assert sorted(p.stem for p in (out / "failed").iterdir()) == sorted(failed)
    assert not (out / "neurons.parquet").exists()

    chunk.write_bytes(good)
    again = predict_volume(base / "bundle", str(broken), source, out, **{**options, "workers": 1})
    assert again["failed"] == {} and again["blocks_run"] == len(failed)
    assert again["blocks_skipped"] == 18 - len(failed)
    assert not list((out / "failed").iterdir())
    check_result(out, table, expected)


# -- plans, sources, bad input --------------------------------------------------------------------


def test_other_settings_are_refused_while_results_exist(world, tmp_path):
    base, _ = world
    out = tmp_path / "out"
    store = Store(out)
    bundle = load_bundle(base / "bundle")
    volume = Volume(base / "raw.zarr", "raw")
    source = Source(str(base / "synapses.parquet"))
    quiet = {"log": lambda _: None}
    plan = prepare(out, bundle, volume, str(base / "raw.zarr"), "raw", source, BLOCK_NM, **quiet)
    assert load_plan(store).grid == plan.grid
    store.marker("block_00000_00000_00000").write_text('{"rows": 1}')
    with pytest.raises(PlanMismatch, match="block_vox"):
        prepare(out, bundle, volume, str(base / "raw.zarr"), "raw", source, (160, 256, 256))
    replanned = prepare(
        out, bundle, volume, str(base / "raw.zarr"), "raw", source, (160, 256, 256),
        overwrite=True, **quiet,
    )  # fmt: skip
    assert replanned.grid.block_vox == (4, 64, 64)
    assert store.finished_markers() == []


def test_a_database_split_part_on_cluster_jobs_started_by_the_submit_template(world, tmp_path):
    base, table = world
    url = f"sqlite:///{tmp_path / 'synister.db'}"
    synapses = pd.DataFrame(
        {
            "synapse_id": table["syn_id"],
            "x": table["x"],
            "y": table["y"],
            "z": table["z"],
            "skeleton_id": table["body"],
        }
    )
    skeletons = pd.DataFrame({"skeleton_id": np.arange(12), "nt_known": [["gaba"]] * 12})
    parts = np.where(table["body"] < 4, "test", "train")
    with open_database(url) as db:
        db.import_records(synapses=synapses, skeletons=skeletons)
        db.write_split("by_body", pd.DataFrame({"synapse_id": table["syn_id"], "part": parts}))
    jobs = tmp_path / "jobs.log"
    config = tmp_path / "worker_config.ini"
    # stands in for "sbatch --wait {command}" / "bsub -K {command}": logs, then runs the job
    config.write_text(
        "[Worker]\nnum_cpus = 2\n"
        f'submit_command = sh -c \'echo job "$@" >> {jobs}; exec "$@"\' job {{command}}\n'
    )
    summary = predict_volume(
        base / "bundle", str(base / "raw.zarr"), Source(url, "by_body", "test"), tmp_path / "out",
        dataset="raw", block_nm=BLOCK_NM, workers=2, worker_config=config, read_ahead=3,
        progress=False,
    )  # fmt: skip
    assert summary["failed"] == {}
    jobs = jobs.read_text().splitlines()
    assert len(jobs) == 2  # one cluster job per worker, each reading 3 blocks ahead
    assert all(re.search(r"predict-volume-worker .* --read-ahead 3\b", job) for job in jobs), jobs
    result = pd.read_parquet(tmp_path / "out/synapses")
    assert sorted(result["id"]) == sorted(table["syn_id"][parts == "test"])
    assert {"neuron_id", "x_nm", "gaba", "status"} <= set(result.columns)
    plan = json.loads((tmp_path / "out/plan.json").read_text())
    assert plan["settings"]["source"] == {"database": url, "split": "by_body", "part": "test"}


def test_bad_tables_name_file_and_column_and_leave_nothing(world, tmp_path):
    base, table = world
    runner = CliRunner()
    no_positions = tmp_path / "no_positions.csv"
    table[["syn_id", "body"]].to_csv(no_positions, index=False)
    text = tmp_path / "text.csv"
    bad = table.astype({"y": object})
    bad.loc[5, "y"] = "twelve"
    bad.to_csv(text, index=False)
    for path, message in [(no_positions, "no position columns"), (text, "column y, line 7:")]:
        out = tmp_path / f"out_{path.stem}"
        result = runner.invoke(
            app,
            ["predict-volume", "--model", str(base / "bundle"), "--volume",
             str(base / "raw.zarr"), "--dataset", "raw", "--synapses", str(path),
             "--out", str(out)],
        )  # fmt: skip
        assert result.exit_code == 1
        assert str(path) in result.output and message in result.output
        assert not out.exists()
    result = runner.invoke(
        app,
        ["predict-volume", "--model", str(base / "bundle"), "--volume", str(base / "raw.zarr"),
         "--dataset", "raw", "--synapses", str(base / "synapses.parquet"), "--units", "voxels",
         "--out", str(tmp_path / "out_units")],
    )  # fmt: skip
    assert result.exit_code == 1 and "--voxel-size" in result.output


def test_dry_run_prints_the_plan_and_predicts_nothing(world, tmp_path):
    base, _ = world
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["predict-volume", "--model", str(base / "bundle"), "--volume", str(base / "raw.zarr"),
         "--dataset", "raw", "--synapses", str(base / "synapses.parquet"), "--out", str(out),
         "--block-size", *map(str, BLOCK_NM), "--dry-run", "--workers", "4", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["blocks"] == 18 and report["blocks_with_synapses"] == 18
    assert report["synapses"] == N_SYNAPSES
    per = report["synapses_per_block"]
    assert per["min"] <= per["median"] <= per["max"]
    assert 0 < report["bytes_blockwise"] <= report["bytes_per_patch"]
    assert [p["workers"] for p in report["projection"]] == [1, 4]
    assert report["fafb"]["synapses"] == 244_000_000
    assert not list((out / "done").glob("block*"))  # nothing predicted


# -- the same tables as predict-positions --------------------------------------------------------


def positions_cli(base: Path, table: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        app,
        ["predict-positions", "--model", str(base / "bundle"), "--volume", str(base / "raw.zarr"),
         "--dataset", "raw", "--positions", str(table), "--out", str(out), "--threads", "1",
         "--read-workers", "0", "--no-progress", *extra],
    )  # fmt: skip


def volume_cli(base: Path, table: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        app,
        ["predict-volume", "--model", str(base / "bundle"), "--volume", str(base / "raw.zarr"),
         "--dataset", "raw", "--synapses", str(table), "--out", str(out), "--no-progress",
         "--block-size", *map(str, BLOCK_NM), *extra],
    )  # fmt: skip


def test_predict_volume_gives_the_tables_of_predict_positions(world, tmp_path):
    """Two workers, blockwise, against one patch per synapse through ``predict-positions``,
    on the same table (positions outside the volume included) and bundle: the same rows,
    ids, statuses, probabilities, columns, dtypes and per-neuron table."""
    base, table = world
    voxels = table.assign(z=table["z"] / VOXEL_NM[0], y=table["y"] / 4, x=table["x"] / 4)
    voxels.to_csv(tmp_path / "synapses.csv", index=False)  # another reader, another unit
    units = ["--units", "voxels", "--voxel-size", "4,4,40"]
    positions = positions_cli(base, tmp_path / "synapses.csv", tmp_path / "positions", *units)
    assert positions.exit_code == 0, positions.output
    blockwise = volume_cli(base, tmp_path / "synapses.csv", tmp_path / "volume", *units,
                           "--workers", "2", "--read-ahead", "2")  # fmt: skip
    assert blockwise.exit_code == 0, blockwise.output

    expected = pd.read_parquet(tmp_path / "positions/synapses.parquet")
    got = pd.read_parquet(tmp_path / "volume/synapses").sort_values("row", ignore_index=True)
    assert list(got.columns) == list(expected.columns)
    assert got.dtypes.to_dict() == expected.dtypes.to_dict()
    assert got["status"].value_counts()["outside_volume"] > 0
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-4, atol=1e-5)

    expected = pd.read_parquet(tmp_path / "positions/neurons.parquet")
    got = pd.read_parquet(tmp_path / "volume/neurons.parquet")
    assert len(got) == table["body"].nunique()
    assert got.dtypes.to_dict() == expected.dtypes.to_dict()
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-4, atol=1e-5)


def test_planned_rows_are_those_predict_positions_reads(world, tmp_path, monkeypatch):
    """Read in batches (of 16 here), a table gives the rows of ``read_positions``: exact
    FlyWire root ids with a missing one, a position list in voxels, and ids that are text
    because of one row of one batch."""
    base, _ = world
    monkeypatch.setattr("synister.predict.blockwise.source.BATCH_ROWS", 16)
    n, big = 50, 720575940621836992
    rng = np.random.default_rng(1)
    xyz = rng.uniform(0, 1, (n, 3)) * np.array([160, 160, 16])
    frame = pd.DataFrame(
        {
            "syn": [f"s{i}" if i == 40 else str(i * 7) for i in range(n)],
            "pre_pt_root_id": pd.array([None if i == 5 else big + i % 3 for i in range(n)]),
            "pre_pt_position": [list(p) for p in xyz],
        }
    )
    frame.to_parquet(tmp_path / "t.parquet")
    options = {"id_column": "syn", "units": "voxels", "voxel_size": "4,4,40"}
    plan = prepare(
        tmp_path / "out", load_bundle(base / "bundle"), Volume(base / "raw.zarr", "raw"),
        str(base / "raw.zarr"), "raw", Source(str(tmp_path / "t.parquet")), BLOCK_NM,
        column_options=options, log=lambda _: None,
    )  # fmt: skip
    got = rows_frame(pq.read_table(plan.store.sorted_file))
    expected = read_positions(tmp_path / "t.parquet", **options).rows
    assert expected["id"].iloc[40] == "s40" and expected["neuron_id"].iloc[6] == big
    pd.testing.assert_frame_equal(got.sort_values("row", ignore_index=True), expected)


@pytest.mark.parametrize(
    ("name", "text", "extra"),
    [
        ("no_positions", "syn_id,body\n1,2\n", []),
        ("text", "syn_id,body,x,y,z\n1,2,3,4,5\n2,2,3,twelve,5\n", []),
        ("twice", "syn_id,body,x,y,z\n1,2,3,4,5\n7,2,3,4,5\n1,2,3,4,6\n", []),
        ("no_id", "syn_id,body,x,y,z\n1,2,3,4,5\n,2,3,4,5\n", []),
        ("voxels", "syn_id,x,y,z\n1,2,3,4\n", ["--units", "voxels"]),
        ("column", "syn_id,x,y,z\n1,2,3,4\n", ["--neuron-column", "cell"]),
        ("empty", "syn_id,x,y,z\n", []),
    ],
)
def test_bad_tables_give_the_error_of_predict_positions(world, tmp_path, name, text, extra):
    base, _ = world
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    positions = positions_cli(base, path, tmp_path / "positions", *extra)
    blockwise = volume_cli(base, path, tmp_path / "volume", *extra)
    assert positions.exit_code == blockwise.exit_code == 1
    lines = blockwise.output.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], blockwise.output
    assert lines == positions.output.strip().splitlines()
    assert not (tmp_path / "volume").exists()


def test_a_csv_header_with_blanks_reads_as_predict_positions_reads_it(tmp_path):
    """predict-positions strips blanks around header names ("x, y, z"); the blockwise source
    selects the same columns (it asked pyarrow for stripped names the file does not hold)."""
    from synister.predict.blockwise.source import open_source

    table = tmp_path / "t.csv"
    table.write_text("id, x, y, z\n7, 10.5, 20, 30\n8, 11, 21, 31\n")
    batches = open_source(Source(str(table)))
    frame = pd.concat(list(batches.frames))
    assert list(frame["id"]) == ["7", "8"]
    assert [float(v) for v in frame["x"]] == [10.5, 11.0]


def test_a_table_in_voxels_read_as_nm_is_named_when_planned(world, tmp_path, monkeypatch):
    """The positions check of every command that reads positions, on the out-of-core path:
    counts and range over every batch, the likely cause from the first rows."""
    base, table = world
    monkeypatch.setattr("synister.predict.blockwise.source.BATCH_ROWS", 64)
    monkeypatch.setattr("synister.predict.blockwise.source.SAMPLE", 100)
    inside = table[(table[["x", "y"]].min(axis=1) > 40) & (table["x"] < 600)]
    inside = inside[(inside["y"] < 600) & (inside["z"] > 100) & (inside["z"] < 500)]
    voxels = inside.assign(x=inside.x / 4, y=inside.y / 4, z=inside.z / 40)
    voxels.to_csv(tmp_path / "vox.csv", index=False)
    args = (load_bundle(base / "bundle"), Volume(base / "raw.zarr", "raw"), str(base / "raw.zarr"))
    source = Source(str(tmp_path / "vox.csv"))
    logged = []
    plan = prepare(tmp_path / "out", *args, "raw", source, BLOCK_NM, log=logged.append)
    [warning] = [line for line in logged if line.startswith("WARNING: ")]
    assert f"0 of {len(voxels)} positions lie with their whole patch inside" in warning
    assert "likely cause: the table is in voxels, read as nm" in warning
    check = json.loads(plan.store.plan_file.read_text())["positions_check"]
    assert check["count"] == len(voxels) > 100 and check["fix"].startswith("--units voxels")
    from synister.volumes.sanity import PositionMismatch

    with pytest.raises(PositionMismatch, match="in voxels, read as nm"):
        prepare(tmp_path / "strict", *args, "raw", source, BLOCK_NM, strict=True, log=print)
    assert not (tmp_path / "strict").exists()
