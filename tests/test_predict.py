"""``synister predict``: what is stored (the original pipeline's patches), overwrite and resume
rules, kill -9 recovery, block workers, precision, failures that leave nothing behind and the
progress display, on a small random volume and tiny networks, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import pipe_in_place_of
from typer.testing import CliRunner
from warm import WARM

from synister.cli import app
from synister.config import load_predict_setup, load_train_setup
from synister.data import TrainingData, training_synapses
from synister.db import PredictionRunExists, open_database
from synister.models import build_model, load_checkpoint, save_checkpoint
from synister.predict import (
    RESUME_KEYS,
    PredictionRunComplete,
    ThreadTuner,
    network_input,
    plan_prediction,
    predict_setup,
)
from synister.predict import threads as thread_module
from synister.setup import prepare_prediction, prepare_training
from synister.volumes import Volume, normalize, write_volume

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:.*reach outside the volume:UserWarning"),
]

CLASSES = ["gaba", "acetylcholine", "glutamate"]
VOXEL_NM = np.array([40, 4, 4])
#: a whole number of voxels (as funlib volumes have), odd on every axis: rounding ties to even
#: in world coordinates differ from ties in the volume's own grid
OFFSET_NM = np.array([3, 5, 7]) * VOXEL_NM
SHAPE_VOX = (24, 96, 96)
INPUT_VOX = (8, 32, 32)
N_SYNAPSES = 2600
#: skeletons 0-49 hold one class each; 50 two transmitters, 51 none (both must be skipped)
SINGLE_SKELETONS = 50


@dataclass
class World:
    base: Path
    url: str
    raw: np.ndarray  # z, y, x uint8
    synapses: pd.DataFrame  # as imported, with the split part


def build_world(base: Path, url: str) -> World:
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, SHAPE_VOX, dtype=np.uint8)
    write_volume(base / "raw.zarr", raw, VOXEL_NM, OFFSET_NM, chunks_vox=(8, 32, 32))
    nt_known = [[CLASSES[i % 3]] for i in range(SINGLE_SKELETONS)] + [["gaba", "octopamine"], []]
    skeletons = pd.DataFrame({"skeleton_id": np.arange(len(nt_known)), "nt_known": nt_known})
    # whole nm (as the original's database held) anywhere in the volume, so some patches reach
    # outside and are zero-padded and many fall on rounding ties (p mod voxel = voxel / 2)
    extent_nm = np.array(SHAPE_VOX) * VOXEL_NM
    positions_nm = OFFSET_NM + np.floor(rng.random((N_SYNAPSES, 3)) * extent_nm)
    skeleton_ids = rng.integers(0, len(nt_known), N_SYNAPSES)
    synapses = pd.DataFrame(
        {
            "synapse_id": np.arange(1, N_SYNAPSES + 1) * 3,
            "z": positions_nm[:, 0],
            "y": positions_nm[:, 1],
            "x": positions_nm[:, 2],
            "skeleton_id": skeleton_ids,
        }
    )
    synapses["part"] = np.select(
        [skeleton_ids < 40, (skeleton_ids < 45) | (skeleton_ids >= SINGLE_SKELETONS)],
        ["validation", "test"],
        "train",
    )
    with open_database(url) as db:
        db.import_records(synapses=synapses.drop(columns="part"), skeletons=skeletons)
        db.write_split("skeleton", synapses[["synapse_id", "part"]])
    return World(base, url, raw, synapses)


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory) -> World:
    base = tmp_path_factory.mktemp("predict")
    return build_world(base, f"sqlite:///{base / 'synister.db'}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory) -> World:
    """The same world on each backend that prediction writes to."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_world")
    url = request.getfixturevalue("scratch_postgres_url")
    return build_world(tmp_path_factory.mktemp("predict_pg"), url)


def make_setup(
    world: World,
    experiment: str,
    *,
    network: str = "ResNet18",
    validation: bool = False,
    batch_size: int = 16,
    funlib: bool = False,
    **overrides,
) -> Path:
    """A training setup with a randomly initialised checkpoint and its prediction setup;
    ``funlib``: the checkpoint as gunpowder's torch Train node wrote it for the original
    (model and optimizer state dicts, no iteration)."""
    train = prepare_training(
        world.base,
        experiment,
        1,
        synapse_types=CLASSES,
        input_shape=INPUT_VOX,
        fmaps=2,
        downsample_factors=[(1, 2, 2), (2, 2, 2)],
        network=network,
        batch_size=batch_size,
        db_url=world.url,
        split_name="skeleton",
        raw_container="raw.zarr",
        raw_dataset="raw",
        voxel_size=tuple(VOXEL_NM),
        num_cache_workers=1,
        **overrides,
    )
    cfg, _ = load_train_setup(train)
    torch.manual_seed(len(experiment))
    model = build_model(cfg)
    if funlib:
        optimizer = torch.optim.Adam(model.parameters())
        state = {
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
        }
        torch.save(state, train / "model_checkpoint_10")
    else:
        save_checkpoint(train / "model_checkpoint_10", model, None, 10)
    [setup] = prepare_prediction(world.base, experiment, 1, [10], validation=validation)
    return setup


def expected_ids(world: World, part: str) -> np.ndarray:
    """Synapses of the part whose skeleton has exactly one known transmitter."""
    chosen = world.synapses[
        (world.synapses.part == part) & (world.synapses.skeleton_id < SINGLE_SKELETONS)
    ]
    return np.sort(chosen.synapse_id.to_numpy())


def original_patch_starts_vox(positions_nm: np.ndarray, shape_vox) -> np.ndarray:
    """First voxels of the patches the original read (funkelab/synister ``utils.get_raw`` with
    daisy 0.x), by its own arithmetic: daisy's Coordinate holds ints (``int()`` of each
    value, so ``size / 2`` is truncated), ``Roi(loc - size / 2 * voxel_size, size *
    voxel_size).snap_to_grid(voxel_size, mode="closest")`` rounds ``float32(begin) /
    voxel_size`` with numpy (ties to even) in world nm, and ``dataset[roi]`` indexes from the
    dataset's offset."""
    starts = []
    for position in positions_nm:
        loc = np.array([int(p) for p in position])  # int(synapse["z"]), Coordinate(loc)
        half = np.array([int(s / 2) for s in shape_vox])  # Coordinate(size / 2)
        begin_nm = loc - half * VOXEL_NM
        begin_vox = np.round(np.asarray(begin_nm, dtype=np.float32) / VOXEL_NM)
        starts.append((begin_vox * VOXEL_NM - OFFSET_NM) // VOXEL_NM)
    return np.asarray(starts, dtype=np.int64)


def reference_probabilities(world: World, setup: Path, synapse_ids: np.ndarray) -> np.ndarray:
    """The network run directly on the original pipeline's patches cut from the numpy volume
    (zero-padded)."""
    cfg, _ = load_predict_setup(setup)
    model = build_model(cfg)
    load_checkpoint(cfg.train_checkpoint, model)
    model.eval()
    pad = np.array(INPUT_VOX)
    padded = np.pad(world.raw, [(p, p) for p in pad])
    rows = world.synapses.set_index("synapse_id").loc[synapse_ids]
    starts = original_patch_starts_vox(rows[["z", "y", "x"]].to_numpy(), INPUT_VOX) + pad
    patches = np.stack(
        [
            padded[z : z + INPUT_VOX[0], y : y + INPUT_VOX[1], x : x + INPUT_VOX[2]]
            for z, y, x in starts
        ]
    )
    with torch.inference_mode():
        logits = model(torch.from_numpy(normalize(patches))[:, None])
    return torch.softmax(logits, dim=1).numpy()


def stored(world: World, run: str) -> pd.DataFrame:
    with open_database(world.url) as db:
        return db.predictions(run)


def probability_columns() -> list[str]:
    return [f"prob_{c}" for c in CLASSES]


@pytest.mark.parametrize("faster", [1, 2])
def test_thread_tuner_keeps_the_faster_thread_count(monkeypatch, faster):
    """Batches take 1 s with the faster count and 3 s with the other, on a fake clock."""
    clock = [0.0]
    monkeypatch.setattr(thread_module.time, "perf_counter", lambda: clock[0])
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    tuner = ThreadTuner([2, 1], 1000, warmup=3, trial=2, min_seconds=0.0)
    try:
        used = []
        for _ in range(16):
            used.append(torch.get_num_threads())
            clock[0] += 1.0 if torch.get_num_threads() == faster else 3.0
            tuner.step()
        assert tuner.chosen == faster and torch.get_num_threads() == faster
        # after the warm-up, turns of 2 batches: 2, 1, 2, 1; then the choice
        assert used[3:11] == [2, 2, 1, 1, 2, 2, 1, 1] and set(used[11:]) == {faster}
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize(("total", "tries"), [(60, False), (200, True)])
def test_thread_tuner_tries_only_where_the_run_outlasts_the_trial(monkeypatch, total, tries):
    """1 s a batch, turns of 2 s (4 turns = 8 s): a run must have 10 x 8 s left to try."""
    clock = [0.0]
    monkeypatch.setattr(thread_module.time, "perf_counter", lambda: clock[0])
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    tuner = ThreadTuner([2, 1], total, warmup=3, trial=2, min_seconds=2.0)
    try:
        used = set()
        for _ in range(total):
            used.add(torch.get_num_threads())
            clock[0] += 1.0
            tuner.step()
        assert (used == {1, 2}) is tries and tuner.chosen is not None
    finally:
        torch.set_num_threads(previous)


def test_default_threads_share_num_cpus_unless_omp_says(monkeypatch):
    from synister.config import WorkerConfig
    from synister.data import usable_cpus
    from synister.predict import default_read_workers, default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads(WorkerConfig(num_cpus=1), 1) == 1
    assert default_threads(WorkerConfig(num_cpus=64), 1) == usable_cpus()
    assert default_threads(WorkerConfig(num_cpus=64), 64) == 1
    assert default_read_workers(WorkerConfig(num_cpus=2, num_cache_workers=4), 1) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads(WorkerConfig(num_cpus=1), 1) is None  # the user's choice stands


def test_network_input_is_normalize_bit_for_bit():
    raw = torch.from_numpy(np.arange(256, dtype=np.uint8).reshape(1, 1, 4, 8, 8))
    got = network_input(raw, torch.device("cpu"))
    assert got.dtype == torch.float32 and got.shape == raw.shape
    np.testing.assert_array_equal(got.numpy(), normalize(raw.numpy()))
    assert (got.min().item(), got.max().item()) == (-1.0, 1.0)


def test_stores_the_original_pipelines_outputs_one_row_per_synapse(world):
    """A VGG checkpoint in funlib's layout predicts what the original pipeline would: the
    same patches (rounded to the closest voxel as daisy did, ties to even) through the same
    network, one row per synapse and nothing else."""
    setup = make_setup(world, "vgg", network="VGG", funlib=True)
    result = predict_setup(setup, read_workers=1, progress=False)

    run = "skeleton_vgg_t1_p0"
    ids = expected_ids(world, "test")
    assert result["run"] == run and result["precision"] == "fp32"
    assert (result["total"], result["predicted"], result["resumed_from"]) == (len(ids), len(ids), 0)
    got = stored(world, run)
    np.testing.assert_array_equal(got.synapse_id.to_numpy(), ids)  # one row each, no others
    probabilities = got[probability_columns()].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    expected = reference_probabilities(world, setup, ids)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert np.ptp(probabilities[:, 0]) > 1e-4  # patches differ, so do the outputs
    # the test is only as good as its ties: many positions lie half-way between grid lines
    positions = world.synapses.set_index("synapse_id").loc[ids, ["z", "y", "x"]].to_numpy()
    assert (positions[:, 1] % 4 == 2).sum() > 20 and (positions[:, 0] % 40 == 20).sum() > 0
    with open_database(world.url) as db:
        classes, meta = db.open_prediction_run(run)
    assert classes == CLASSES
    assert meta["iteration"] == 10 and meta["split_part"] == "test"
    assert meta["checkpoint"].endswith("vgg/02_train/setup_t1/model_checkpoint_10")
    assert meta["expected_synapses"] == len(ids)
    assert set(RESUME_KEYS) <= set(meta)
    assert (meta["precision"], meta["patch_placement"]) == ("fp32", "closest")


def test_floor_placement_differs_from_the_original_on_many_positions(sqlite_world):
    """Why the placement matters: synister's earlier rule (the voxel containing the position)
    moves the patch by a voxel along an axis wherever a position lies in the upper half of a
    voxel, and on half of the ties: in-plane (4 nm) 3 of 8 whole-nm positions per axis."""
    world = sqlite_world
    positions = world.synapses[["z", "y", "x"]].to_numpy()
    closest = original_patch_starts_vox(positions, INPUT_VOX)
    floor = np.floor((positions - OFFSET_NM) / VOXEL_NM).astype(int) - np.array(INPUT_VOX) // 2
    moved = (closest != floor).mean(axis=0)
    np.testing.assert_allclose(moved, [0.5, 3 / 8, 3 / 8], atol=0.04)


def test_second_prediction_skips_and_overwrite_replaces(world):
    setup = make_setup(world, "twice")
    run = "skeleton_twice_t1_p0"
    predict_setup(setup, read_workers=0, threads=1, progress=False)
    first = stored(world, run)

    with pytest.raises(PredictionRunComplete, match=r"exists and is complete.*overwrite = True"):
        predict_setup(setup, read_workers=0, threads=1, progress=False)
    outcome = CliRunner().invoke(app, ["predict", str(setup)])
    assert outcome.exit_code == 0, outcome.output  # nothing to do is not a failure
    assert "skipped" in outcome.output and "exists and is complete" in outcome.output
    pd.testing.assert_frame_equal(stored(world, run), first)

    # spoil one row and add a foreign one: overwrite must empty the run and predict afresh
    with open_database(world.url) as db:
        db.write_predictions(run, first.synapse_id[:1], np.array([[1.0, 0.0, 0.0]]))
        db.write_predictions(run, np.array([1]), np.array([[0.0, 1.0, 0.0]]))
    config = setup / "predict_config.ini"
    config.write_text(config.read_text().replace("overwrite = False", "overwrite = True"))
    options = ["--read-workers", "0", "--threads", "1", "--no-progress", "--json"]
    outcome = CliRunner().invoke(app, ["predict", str(setup), *options])
    assert outcome.exit_code == 0, outcome.output
    [result] = json.loads(outcome.stdout)
    assert result["run"] == run and result["status"] == "predicted"
    assert result["resumed_from"] == 0 and result["predicted"] == len(first)
    again = stored(world, run)
    np.testing.assert_array_equal(again.synapse_id, first.synapse_id)
    np.testing.assert_allclose(
        again[probability_columns()], first[probability_columns()], atol=1e-6
    )


def edit_config(setup: Path, key: str, value: str) -> None:
    config = setup / "predict_config.ini"
    text = re.sub(rf"^{key} = .*$", f"{key} = {value}", config.read_text(), flags=re.M)
    config.write_text(text)


def rewrite_checkpoint(setup: Path) -> None:
    """The same file name, other weights (a retrained or edited checkpoint)."""
    cfg, _ = load_predict_setup(setup)
    torch.manual_seed(99)
    save_checkpoint(cfg.train_checkpoint, build_model(cfg), None, 10)


CHANGES = {
    "checkpoint_sha256": rewrite_checkpoint,
    "network": lambda setup: edit_config(setup, "fmaps", "3"),
    "input_shape": lambda setup: edit_config(setup, "input_shape", "8, 16, 16"),
    "raw_container": lambda setup: edit_config(setup, "raw_container", "other.zarr"),
    "raw_dataset": lambda setup: edit_config(setup, "raw_dataset", "raw/s0"),
    "voxel_size": lambda setup: edit_config(setup, "voxel_size", "40, 8, 8"),
    "classes": lambda setup: edit_config(setup, "synapse_types", "gaba, glutamate"),
}


@pytest.mark.parametrize("key", [*CHANGES, "precision"])
def test_resume_refuses_any_change_that_determines_the_numbers(sqlite_world, key):
    world = sqlite_world
    setup = make_setup(world, f"change_{key}")
    plan = plan_prediction(setup)  # the run as a crash leaves it: registered, incomplete
    with open_database(world.url) as db:
        db.write_predictions(plan.run, plan.todo.synapse_id[:5], np.full((5, 3), 1 / 3))
    assert plan_prediction(setup).resumed_from == 5  # nothing changed: it resumes
    precision = "fp32"
    if key == "precision":
        precision = "bf16"
    else:
        CHANGES[key](setup)
    with pytest.raises(PredictionRunExists, match=rf"other settings: {key}=.*overwrite = True"):
        plan_prediction(setup, precision=precision)


def test_resume_refuses_a_run_of_another_checkpoint_or_without_its_settings(sqlite_world):
    setup = make_setup(sqlite_world, "other")
    with open_database(sqlite_world.url) as db:
        db.create_prediction_run("skeleton_other_t1_p0", CLASSES, {"iteration": 99})
    with pytest.raises(PredictionRunExists, match=r"iteration=99 \(now 10\).*checkpoint_sha256 "):
        plan_prediction(setup)


def test_missing_checkpoint_names_the_config(sqlite_world):
    setup = make_setup(sqlite_world, "nockpt")
    (sqlite_world.base / "nockpt/02_train/setup_t1/model_checkpoint_10").unlink()
    with pytest.raises(FileNotFoundError, match=r"predict_config.ini.*train_checkpoint"):
        predict_setup(setup, progress=False)


class WrongOutputs(torch.nn.Module):
    """A network with two outputs for three classes: fails at the first batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 2)


def test_a_failed_prediction_leaves_no_run_behind(world):
    setup = make_setup(world, "fails")
    run = "skeleton_fails_t1_p0"
    edit_config(setup, "raw_container", "missing.zarr")
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        predict_setup(setup, progress=False)
    edit_config(setup, "raw_container", "raw.zarr")
    with pytest.raises(ValueError, match=r"logits of shape \(16, 2\)"):
        predict_setup(setup, read_workers=0, progress=False, model=WrongOutputs())
    with open_database(world.url) as db:
        assert run not in db.prediction_runs()
    result = predict_setup(setup, read_workers=0, threads=1, progress=False)
    assert result["resumed_from"] == 0 and result["predicted"] == result["total"]


def write_uint16_volume(path: Path) -> None:
    import zarr

    array = zarr.create_array(path, name="raw", shape=SHAPE_VOX, dtype="uint16", zarr_format=3)
    array[...] = 1000
    array.attrs.update(resolution=VOXEL_NM.tolist(), offset=OFFSET_NM.tolist())


def test_a_non_uint8_volume_is_refused_as_training_refuses_it(sqlite_world):
    setup = make_setup(sqlite_world, "uint16")
    write_uint16_volume(sqlite_world.base / "uint16.zarr")
    edit_config(setup, "raw_container", "uint16.zarr")
    message = r"uint16.zarr.*intensities are uint16.*read uint8"
    with pytest.raises(ValueError, match=message):
        predict_setup(setup, progress=False)
    with open_database(sqlite_world.url) as db:
        assert "skeleton_uint16_t1_p0" not in db.prediction_runs()
        table = training_synapses(db, "skeleton", CLASSES, part="train")
    cfg, _ = load_predict_setup(setup)
    with pytest.raises(ValueError, match=message):
        TrainingData(table, Volume(cfg.raw_container, "raw"), INPUT_VOX, CLASSES)


def test_precision_is_an_option_and_fp16_on_the_cpu_is_refused(sqlite_world):
    setup = make_setup(sqlite_world, "precision")
    run = "skeleton_precision_t1_p0"
    outcome = CliRunner().invoke(app, ["predict", str(setup), "--precision", "fp16"])
    assert outcome.exit_code == 1 and "fp16 needs a GPU" in outcome.output
    with open_database(sqlite_world.url) as db:
        assert run not in db.prediction_runs()
    result = predict_setup(setup, read_workers=0, threads=1, progress=False, precision="bf16")
    assert result["precision"] == "bf16"
    ids = expected_ids(sqlite_world, "test")
    got = stored(sqlite_world, run).set_index("synapse_id").loc[ids, probability_columns()]
    # bf16 keeps 8 bits of mantissa: close to fp32, not equal
    np.testing.assert_allclose(got, reference_probabilities(sqlite_world, setup, ids), atol=0.05)
    with open_database(sqlite_world.url) as db:
        assert db.open_prediction_run(run)[1]["precision"] == "bf16"


def test_predict_reports_each_setup_and_fails_only_when_all_fail(sqlite_world):
    world = sqlite_world
    done = make_setup(world, "many")
    predict_setup(done, read_workers=0, threads=1, progress=False)
    [todo] = prepare_prediction(world.base, "many", 1, [10], validation=True)
    broken = make_setup(world, "broken")
    (world.base / "broken/02_train/setup_t1/model_checkpoint_10").unlink()

    options = ["--read-workers", "0", "--threads", "1", "--no-progress"]
    outcome = CliRunner().invoke(app, ["predict", str(done), str(broken), str(todo), *options])
    assert outcome.exit_code == 0, outcome.output
    assert f"skipped: {done}" in outcome.output and f"error: {broken}" in outcome.output
    assert "3 setups: 1 predicted, 1 already complete, 1 failed" in outcome.output
    assert count_stored(world.url, "skeleton_many_t1_p1") == len(expected_ids(world, "validation"))
    outcome = CliRunner().invoke(app, ["predict", str(broken), str(broken), *options])
    assert outcome.exit_code == 1


def test_two_block_workers_give_the_same_result_as_one(world):
    setup = make_setup(world, "blocks", num_block_workers=2)
    run = "skeleton_blocks_t1_p0"
    predict_setup(setup, block_workers=1, read_workers=0, threads=1, progress=False)
    one = stored(world, run)
    with open_database(world.url) as db:
        db.drop_prediction_run(run)
    # two block workers, as worker_config.ini says; one thread each (2 CPUs / 2)
    result = predict_setup(setup, read_workers=0, progress=False)
    two = stored(world, run)
    assert result["block_workers"] == 2
    assert result["predicted"] == len(one) == len(expected_ids(world, "test"))
    np.testing.assert_array_equal(two.synapse_id, one.synapse_id)
    np.testing.assert_allclose(two[probability_columns()], one[probability_columns()], atol=1e-5)


def count_stored(url: str, run: str) -> int:
    with open_database(url) as db:
        if run not in db.prediction_runs():
            return 0
        return len(db.predicted_synapse_ids(run))


def test_killed_prediction_resumes_with_only_the_missing_synapses(world, capsys, kill_when):
    setup = make_setup(world, "killed", validation=True, batch_size=4)
    run = "skeleton_killed_t1_p0"
    ids = expected_ids(world, "validation")
    # the last chunk (z 16-23, y and x 64-95 voxels) cannot be read until the kill: synapses
    # are read block by block in z, y, x, so many are stored before the first that needs it
    # and the kill lands half-way at any pace
    shutil.copytree(world.base / "raw.zarr", world.base / "killed.zarr")
    edit_config(setup, "raw_container", "killed.zarr")
    last_chunk = world.base / "killed.zarr" / "raw" / "c" / "2" / "2" / "2"
    good = pipe_in_place_of(last_chunk)
    kill_when(
        [*WARM.cli(), "predict", str(setup), "--read-workers", "1"],
        lambda: count_stored(world.url, run) > 0,
        "a stored prediction",
        interval=0.2,  # nothing past the unreadable chunk can be stored meanwhile
    )
    before = count_stored(world.url, run)
    assert 0 < before < len(ids), f"kill came too late: {before} of {len(ids)} stored"

    last_chunk.unlink()
    last_chunk.write_bytes(good)
    result = predict_setup(setup, read_workers=1, progress=True)
    assert result["resumed_from"] == before
    assert result["predicted"] == len(ids) - before
    got = stored(world, run)
    np.testing.assert_array_equal(got.synapse_id.to_numpy(), ids)
    np.testing.assert_allclose(got[probability_columns()].sum(axis=1), 1.0, atol=1e-6)
    sample = ids[:: max(1, len(ids) // 50)]
    np.testing.assert_allclose(
        got.set_index("synapse_id").loc[sample, probability_columns()],
        reference_probabilities(world, setup, sample),
        atol=1e-5,
    )

    # the progress display: done/total starting at the stored count, synapses/s and ETA
    progress = capsys.readouterr().err
    assert f"{before}/{len(ids)} synapses" in progress
    assert f"{len(ids)}/{len(ids)} synapses 100%" in progress
    assert re.search(r"\d+\.\d\d synapses/s", progress)
    assert re.search(r"<\d\d:\d\d ETA", progress)
