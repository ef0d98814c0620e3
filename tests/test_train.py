"""Training: checkpoints, resume, Ctrl-C, logs, snapshots, DDP with one process, curves."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest
import torch
import zarr
from conftest import import_dataset
from warm import WARM

from synister.models import list_checkpoints
from synister.train.checkpoints import latest_checkpoint
from synister.train.curves import plot_training_curves, read_scalars
from synister.train.metrics import WindowedAccuracy
from synister.train.snapshots import write_snapshot

CLASSES = ["gaba", "acetylcholine", "glutamate"]
PATCH_VOX = (4, 8, 8)


# ---- small pieces --------------------------------------------------------------------------------


def test_windowed_accuracy_forgets_old_samples_and_marks_absent_classes():
    acc = WindowedAccuracy(num_classes=3, window=4)
    acc.update(np.array([0, 0, 1, 1]), np.array([1, 1, 1, 1]))  # class 0 wrong, class 1 right
    np.testing.assert_allclose(acc.per_class()[:2], [0.0, 1.0])
    assert np.isnan(acc.per_class()[2])
    acc.update(np.array([0, 0]), np.array([0, 0]))  # pushes out the two wrong class-0 samples
    np.testing.assert_allclose(acc.per_class()[:2], [1.0, 1.0])
    assert acc.overall() == 1.0
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        acc.update(np.array([0, 1]), np.array([0]))


def test_checkpoint_listing_ignores_temporary_and_foreign_files(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for name in ("model_checkpoint_100", "model_checkpoint_2000", "model_checkpoint_300"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".model_checkpoint_5000.tmp123").write_bytes(b"partial")
    (tmp_path / "model_checkpoint_9000.bak").write_bytes(b"x")
    (tmp_path / "model_checkpoint_7000").mkdir()
    assert [i for i, _ in list_checkpoints(tmp_path)] == [100, 300, 2000]
    assert latest_checkpoint(tmp_path) == (2000, tmp_path / "model_checkpoint_2000")


def test_snapshot_is_a_zarr_group_with_params_and_a_png(tmp_path):
    rng = np.random.default_rng(1)
    raw = rng.uniform(-1, 1, (3, 1, *PATCH_VOX)).astype(np.float32)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], np.float32)
    params = [{"mirror": [True, False, False], "angle": np.float64(0.5)} for _ in range(3)]
    path = write_snapshot(
        tmp_path / "snapshots",
        300,
        raw=raw,
        labels=np.array([0, 2, 1]),
        probabilities=probabilities,
        synapse_ids=np.array([11, 12, 13]),
        params=params,
        classes=CLASSES,
        loss=0.5,
    )
    assert path.name == "batch_300.zarr"
    group = zarr.open_group(str(path), mode="r")
    stored = group["raw"][:]
    assert stored.dtype == np.uint8 and stored.shape == (3, *PATCH_VOX)
    np.testing.assert_allclose(stored / 127.5 - 1, raw[:, 0], atol=1 / 127.5)
    np.testing.assert_array_equal(group["labels"][:], [0, 2, 1])
    np.testing.assert_allclose(group["predictions"][:], probabilities)
    assert group.attrs["augmentation"][0] == {"mirror": [True, False, False], "angle": 0.5}
    assert group.attrs["classes"] == CLASSES and group.attrs["iteration"] == 300
    from PIL import Image

    with Image.open(path.with_suffix(".png")) as image:
        assert image.size == (3 * 128 + 2 * 4, 128 + 26)  # three sections, enlarged 16x
    with pytest.raises(ValueError, match=r"\(B, 1, Z, Y, X\)"):
        write_snapshot(
            tmp_path, 1, raw=raw[:, 0], labels=[0], probabilities=[[1, 0, 0]],
            synapse_ids=[1], params=[{}], classes=CLASSES, loss=0.0,
        )  # fmt: skip


def test_curves_merge_resumed_logs_and_plot(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    log = tmp_path / "log"
    first = SummaryWriter(str(log))
    for step in range(10, 60, 10):  # a run killed at 50 whose newest checkpoint was 30
        first.add_scalar("loss", 10.0, step)
    first.close()
    resumed = SummaryWriter(str(log), purge_step=31)
    for step in range(40, 70, 10):
        resumed.add_scalar("loss", 1.0, step)
        resumed.add_scalar("accuracy/gaba", 0.5, step)
    resumed.close()
    loss = read_scalars(log)["loss"]
    assert loss.step.tolist() == [10, 20, 30, 40, 50, 60]
    assert loss.value.tolist() == [10.0, 10.0, 10.0, 1.0, 1.0, 1.0]
    out = plot_training_curves(tmp_path, tmp_path / "curves.png")
    assert out.stat().st_size > 1000
    with pytest.raises(FileNotFoundError, match="no tensorboard log folder"):
        plot_training_curves(tmp_path / "missing", tmp_path / "x.png")


def test_curves_follow_the_order_runs_were_written_not_the_order_of_file_names(tmp_path):
    """Two writers in one second and one process are told apart by a counter: ``….9`` sorts
    after ``….10``, so file names do not say which run came first."""
    from torch.utils.tensorboard import SummaryWriter

    log = tmp_path / "log"
    for purge_step, steps, value in [(1, range(1, 13), 10.0), (13, range(13, 21), 1.0)]:
        writer = SummaryWriter(str(log), purge_step=purge_step)
        for step in steps:
            writer.add_scalar("loss", value, step)
        writer.close()
    first, resumed = sorted(log.iterdir(), key=lambda path: path.stat().st_mtime_ns)
    first.rename(log / "events.out.tfevents.1796212352.host.7.9")
    resumed.rename(log / "events.out.tfevents.1796212352.host.7.10")
    loss = read_scalars(log)["loss"]
    assert loss.step.tolist() == list(range(1, 21))
    assert loss.value.tolist() == [10.0] * 12 + [1.0] * 8


# ---- the loop, with a stand-in network and batches -----------------------------------------------


def _batches(stop_after: int | None = None, batch_size: int = 6):
    """Batches whose mean intensity tells the class; sends this process SIGINT at ``stop_after``."""
    rng = np.random.default_rng(0)
    count = 0
    while True:
        count += 1
        if count == stop_after:
            os.kill(os.getpid(), signal.SIGINT)
        labels = rng.integers(0, len(CLASSES), batch_size)
        raw = (
            rng.normal(0, 0.3, (batch_size, 1, *PATCH_VOX))
            + (labels - 1)[:, None, None, None, None]
        )
        yield {
            "raw": torch.tensor(np.clip(raw, -1, 1), dtype=torch.float32),
            "label": torch.tensor(labels),
            "synapse_id": torch.arange(batch_size),
            "params": [{"mirror": [bool(i % 2), False, False]} for i in range(batch_size)],
        }


def _standin():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(PATCH_VOX)), 3))
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def _adam_steps(optimizer) -> set[int]:
    return {int(state["step"]) for state in optimizer.state.values()}


def test_run_training_learns_logs_snapshots_and_checkpoints(tmp_path):
    from synister.train import LoopSettings, run_training

    model, optimizer = _standin()
    settings = LoopSettings(
        checkpoint_every=10, snapshot_every=15, log_every=5, accuracy_window_samples=60
    )
    result = run_training(
        model, optimizer, _batches(), tmp_path, CLASSES,
        start_iteration=0, num_iterations=32, settings=settings, progress=False,
    )  # fmt: skip
    assert result["iteration"] == 32 and not result["interrupted"]
    assert [i for i, _ in list_checkpoints(tmp_path)] == [10, 20, 30, 32]  # every 10, at the end
    assert sorted(p.name for p in (tmp_path / "snapshots").glob("*.zarr")) == [
        "batch_15.zarr",
        "batch_30.zarr",
    ]
    scalars = read_scalars(tmp_path / "log")
    assert {"loss", "learning_rate", "samples_per_s", "accuracy/mean"} <= set(scalars)
    assert {f"accuracy/{c}" for c in CLASSES} <= set(scalars)
    assert scalars["loss"].step.tolist() == [5, 10, 15, 20, 25, 30]
    assert scalars["loss"].value.iloc[-1] < 0.5 * scalars["loss"].value.iloc[0]
    assert scalars["accuracy/mean"].value.iloc[-1] > 0.9
    saved = torch.load(tmp_path / "model_checkpoint_32", map_location="cpu")
    assert {"model_state_dict", "optimizer_state_dict"} <= set(saved)
    assert not list(tmp_path.glob(".*tmp"))


def test_learning_rate_schedules_warm_up_then_decay():
    from synister.train import LearningRateSchedule

    cosine = LearningRateSchedule(1e-3, "cosine", warmup=10, total=110, final_fraction=0.1)
    assert cosine.rate(1) == pytest.approx(1e-4) and cosine.rate(10) == pytest.approx(1e-3)
    assert cosine.rate(60) == pytest.approx(0.55e-3)  # half way down the cosine
    assert cosine.rate(110) == pytest.approx(1e-4) and cosine.rate(500) == pytest.approx(1e-4)
    rates = [cosine.rate(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    step = LearningRateSchedule(1.0, "step", total=100)
    assert [step.rate(i) for i in (1, 50, 51, 75, 76, 100)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )
    assert LearningRateSchedule(2e-3).rate(7) == 2e-3
    with pytest.raises(ValueError, match="total number of iterations"):
        LearningRateSchedule(1e-3, "cosine")


def test_the_loop_follows_the_schedule_across_a_resume_and_reports_checkpoints(tmp_path):
    from synister.models import load_checkpoint
    from synister.train import LearningRateSchedule, LoopSettings, run_training

    schedule = LearningRateSchedule(1e-2, "cosine", warmup=5, total=20)
    settings = LoopSettings(
        checkpoint_every=10, snapshot_every=100, log_every=1, learning_rate=schedule,
        label_smoothing=0.1,
    )  # fmt: skip
    seen = []

    def on_checkpoint(iteration, path):
        seen.append((iteration, path.name))

    model, optimizer = _standin()
    run_training(
        model, optimizer, _batches(), tmp_path, CLASSES, start_iteration=0, num_iterations=12,
        settings=settings, progress=False, on_checkpoint=on_checkpoint,
    )  # fmt: skip
    assert seen == [(10, "model_checkpoint_10"), (12, "model_checkpoint_12")]
    model, optimizer = _standin()
    load_checkpoint(tmp_path / "model_checkpoint_12", model, optimizer)
    run_training(
        model, optimizer, _batches(), tmp_path, CLASSES, start_iteration=12, num_iterations=20,
        settings=settings, progress=False,
    )  # fmt: skip
    logged = read_scalars(tmp_path / "log")["learning_rate"]
    assert logged.step.tolist() == list(range(1, 21))
    np.testing.assert_allclose(logged.value, [schedule.rate(i) for i in range(1, 21)], rtol=1e-6)


def test_label_smoothing_sets_a_floor_under_the_loss(tmp_path):
    """With smoothing 0.5 over 3 classes the target has entropy 0.868 nats, which no output
    can go below; unsmoothed, the same run ends far lower (see the test above)."""
    from synister.train import LoopSettings, run_training

    model, optimizer = _standin()
    settings = LoopSettings(checkpoint_every=100, snapshot_every=100, log_every=5,
                            label_smoothing=0.5)  # fmt: skip
    run_training(
        model, optimizer, _batches(), tmp_path, CLASSES, start_iteration=0, num_iterations=40,
        settings=settings, progress=False,
    )  # fmt: skip
    floor = -(2 / 3 * np.log(2 / 3) + 2 * (1 / 6) * np.log(1 / 6))
    assert read_scalars(tmp_path / "log")["loss"].value.min() >= floor - 1e-4


def test_logit_adjustment_puts_the_class_frequencies_into_the_outputs(tmp_path):
    """Batches are class-balanced; with the offsets log(0.8, 0.1, 0.1) in the loss, a network
    that sees no features (its weights frozen at 0) learns biases log(0.8, 0.1, 0.1) + c: its
    outputs are posteriors under those frequencies."""
    from synister.train import LoopSettings, run_training
    from synister.train.setup_run import log_frequencies

    offsets = log_frequencies(np.array([80, 10, 10]))
    np.testing.assert_allclose(offsets, np.log([0.8, 0.1, 0.1]))
    biases = {}
    for name, adjust in (("plain", None), ("adjusted", offsets)):
        model, _ = _standin()
        model[1].weight.data.zero_()
        model[1].weight.requires_grad_(False)
        optimizer = torch.optim.Adam([model[1].bias], lr=0.1)
        settings = LoopSettings(checkpoint_every=1000, snapshot_every=1000, log_every=50,
                                logit_offsets=adjust)  # fmt: skip
        run_training(
            model, optimizer, _batches(batch_size=30), tmp_path / name, CLASSES,
            start_iteration=0, num_iterations=120, settings=settings, progress=False,
        )  # fmt: skip
        bias = model[1].bias.detach().numpy()
        biases[name] = bias - bias.mean()
    np.testing.assert_allclose(biases["plain"], 0, atol=0.3)
    expected = np.log([0.8, 0.1, 0.1]) - np.log([0.8, 0.1, 0.1]).mean()
    np.testing.assert_allclose(biases["adjusted"], expected, atol=0.3)


def test_sigint_stops_after_the_iteration_with_a_checkpoint_and_resume_keeps_adam_state(tmp_path):
    from synister.models import load_checkpoint
    from synister.train import LoopSettings, run_training

    settings = LoopSettings(checkpoint_every=100, snapshot_every=100, log_every=5)
    model, optimizer = _standin()
    handler_before = signal.getsignal(signal.SIGINT)
    first = run_training(
        model, optimizer, _batches(stop_after=7), tmp_path, CLASSES,
        start_iteration=0, num_iterations=50, settings=settings, progress=False,
    )  # fmt: skip
    # the 7th batch was fetched when the signal came: it is trained, then the loop stops
    assert first["interrupted"] and first["iteration"] == 7
    assert [i for i, _ in list_checkpoints(tmp_path)] == [7]
    assert signal.getsignal(signal.SIGINT) is handler_before

    model, optimizer = _standin()
    assert load_checkpoint(tmp_path / "model_checkpoint_7", model, optimizer) == 7
    assert _adam_steps(optimizer) == {7}
    second = run_training(
        model, optimizer, _batches(), tmp_path, CLASSES,
        start_iteration=7, num_iterations=12, settings=settings, progress=False,
    )  # fmt: skip
    assert second["start_iteration"] == 7 and second["iteration"] == 12
    assert _adam_steps(optimizer) == {12}  # continued, not restarted at 0
    assert [i for i, _ in list_checkpoints(tmp_path)] == [7, 12]


def _with_batch_norm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(int(np.prod(PATCH_VOX)), 3), torch.nn.BatchNorm1d(3)
    )
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def test_the_weight_average_of_a_constant_model_is_that_model_and_follows_a_change():
    from synister.train.averaging import WeightAverage

    model, _ = _with_batch_norm()
    model(torch.randn(6, 1, *PATCH_VOX))  # moves the batch-norm statistics off their start
    before = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, decay=0.5)
    for _ in range(25):
        average.update(model)
    assert set(average.state) == set(before)  # buffers too: running mean, variance, count
    for key, value in before.items():
        torch.testing.assert_close(average.state[key], value, rtol=0, atol=1e-6)

    # a jump of the weights from w to w + 1: the average closes the gap by (1 - decay) a step
    with torch.no_grad():
        model[1].bias.add_(1.0)
    decays = []
    for _ in range(3):
        decays.append(average.current_decay())
        average.update(model)
    assert decays == [0.5, 0.5, 0.5]  # past the first updates' lower decay: (1+n)/(10+n)
    torch.testing.assert_close(average.state["1.bias"], before["1.bias"] + 1 - 0.5**3)
    assert WeightAverage(model, 0.999).current_decay() == pytest.approx(2 / 11)
    with pytest.raises(ValueError, match=r"decay must lie in \(0, 1\)"):
        WeightAverage(model, 1.0)


def test_the_average_is_saved_beside_each_checkpoint_which_stays_as_it_was(tmp_path):
    from synister.layout import averaged_path
    from synister.models import load_checkpoint
    from synister.train import LoopSettings, run_training
    from synister.train.averaging import WeightAverage

    settings = LoopSettings(checkpoint_every=10, snapshot_every=100, log_every=5)
    model, optimizer = _with_batch_norm()
    average = WeightAverage(model, decay=0.8)
    run_training(
        model, optimizer, _batches(), tmp_path, CLASSES, start_iteration=0, num_iterations=15,
        settings=settings, progress=False, average=average,
    )  # fmt: skip
    # the original's checkpoints, unchanged, and only they count as checkpoints
    assert [i for i, _ in list_checkpoints(tmp_path)] == [10, 15]
    saved = torch.load(tmp_path / "model_checkpoint_15", weights_only=True)
    assert set(saved) == {"model_state_dict", "optimizer_state_dict", "iteration"}
    assert sorted(p.name for p in tmp_path.glob("*.averaged")) == [
        "model_checkpoint_10.averaged",
        "model_checkpoint_15.averaged",
    ]
    assert averaged_path(tmp_path / "model_checkpoint_15") == tmp_path / (
        "model_checkpoint_15.averaged"
    )
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary file
    # the averaged file is a checkpoint of the same layout: it loads into the network
    loaded, _ = _with_batch_norm()
    assert load_checkpoint(tmp_path / "model_checkpoint_15.averaged", loaded) == 15
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, average.state[key])
    assert not torch.allclose(loaded[1].weight, model[1].weight)  # an average, not the last


def test_a_resumed_run_continues_the_same_average(tmp_path):
    import itertools

    from synister.layout import averaged_path
    from synister.models import load_checkpoint
    from synister.train import LoopSettings, run_training
    from synister.train.averaging import WeightAverage

    settings = LoopSettings(checkpoint_every=100, snapshot_every=100, log_every=5)
    model, optimizer = _with_batch_norm()
    straight = WeightAverage(model, decay=0.7)
    run_training(
        model, optimizer, _batches(), tmp_path / "straight", CLASSES, start_iteration=0,
        num_iterations=20, settings=settings, progress=False, average=straight,
    )  # fmt: skip

    model, optimizer = _with_batch_norm()
    run_training(
        model, optimizer, _batches(), tmp_path / "resumed", CLASSES, start_iteration=0,
        num_iterations=12, settings=settings, progress=False,
        average=WeightAverage(model, decay=0.7),
    )  # fmt: skip
    model, optimizer = _with_batch_norm()
    checkpoint = tmp_path / "resumed" / "model_checkpoint_12"
    load_checkpoint(checkpoint, model, optimizer)
    resumed = WeightAverage(model, decay=0.7)
    resumed.load(averaged_path(checkpoint))
    assert resumed.updates == 12
    run_training(
        model, optimizer, itertools.islice(_batches(), 12, None), tmp_path / "resumed",
        CLASSES, start_iteration=12, num_iterations=20, settings=settings, progress=False,
        average=resumed,
    )  # fmt: skip
    assert resumed.updates == 20
    for key, value in straight.state.items():
        torch.testing.assert_close(resumed.state[key], value, rtol=1e-5, atol=1e-6)


def test_train_refuses_a_folder_that_is_no_setup(tmp_path):
    from synister.train import train

    with pytest.raises(FileNotFoundError, match="prepare-training"):
        train(tmp_path, 10)
    with pytest.raises(ValueError, match="num_iterations must be >= 1"):
        train(tmp_path, 0)


# ---- end to end on a small synthetic `easy` dataset ----------------------------------------------

# The sequence: train 200, then 300 resumes at 200. A tiny ResNet keeps iterations and
# checkpoints small (the VGG's 4096-unit classifier alone makes 200 MB checkpoints).
TINY_NETWORK = {
    "network": "ResNet18",
    "fmaps": 4,
    "input_shape": (8, 32, 32),
    "downsample_factors": [(1, 2, 2), (1, 2, 2), (2, 2, 2)],
    "fmap_inc": (2, 2, 2),
    "n_convolutions": (2, 2, 2),
    "batch_size": 4,
    "checkpoint_every": 100,
    "snapshot_every": 100,
    "log_every": 50,
}


@pytest.fixture(scope="module")
def synthetic_base(tmp_path_factory, easy_dataset):
    """BASE folder whose ``data`` is the session's small `easy` dataset, imported into SQLite
    and split by skeleton."""
    from synister.db import open_database
    from synister.splits import SplitRequest, make_split

    base = tmp_path_factory.mktemp("train_base")
    (base / "data").symlink_to(easy_dataset)  # read-only: the setups live in BASE
    url = f"sqlite:///{base / 'synister.db'}"
    import_dataset(easy_dataset, url)
    with open_database(url) as db:
        make_split(db, "skeleton", SplitRequest(by="skeleton", seed=0, tolerance=0.3))
    return base, url


def _prepare(synthetic_base, train_id: int, **overrides):
    from synister.setup import prepare_training

    base, url = synthetic_base
    values = {
        **TINY_NETWORK,
        "db_url": url,
        "raw_container": "data/raw.zarr",  # relative to BASE
        "raw_dataset": "raw",
        "num_cache_workers": 0,
        **overrides,
    }
    return prepare_training(base, "exp", train_id, **values)


def _run_module(args, python: str = sys.executable, **kwargs):
    import subprocess

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [python, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, **kwargs,
    )  # fmt: skip


def test_train_writes_checkpoints_logs_snapshots_then_resumes_under_torchrun(synthetic_base):
    from synister.train import train

    setup = _prepare(synthetic_base, 1)
    result = train(setup, 200, progress=False)
    assert (result["start_iteration"], result["iteration"]) == (0, 200)
    assert np.isfinite(result["loss"])
    assert [i for i, _ in list_checkpoints(setup)] == [100, 200]
    snapshot = zarr.open_group(str(setup / "snapshots" / "batch_200.zarr"), mode="r")
    assert snapshot["raw"].shape == (4, 8, 32, 32)
    assert snapshot["predictions"].shape == (4, 6)
    np.testing.assert_allclose(snapshot["predictions"][:].sum(axis=1), 1.0, rtol=1e-5)
    assert all("center_nm" in params for params in snapshot.attrs["augmentation"])
    assert (setup / "snapshots" / "batch_200.png").is_file()
    scalars = read_scalars(setup / "log")
    assert scalars["loss"].step.tolist() == [50, 100, 150, 200]
    assert "accuracy/gaba" in scalars

    # asking for what is done already trains nothing and says so
    from typer.testing import CliRunner

    from synister.cli import app

    done = CliRunner().invoke(app, ["train", "150", "--setup", str(setup), "--no-progress"])
    assert done.exit_code == 0 and "already at iteration 200" in done.output
    assert [i for i, _ in list_checkpoints(setup)] == [100, 200]

    # the DDP code path (gloo, world size 1) resumes from 200 and writes plain state_dict keys
    proc = _run_module(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
         "-m", "synister.train", "300", "--setup", str(setup), "--no-progress"],
        python=WARM.python,  # torchrun and its worker: warm processes (warm.py)
    )  # fmt: skip
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "trained to iteration 300 (from 200" in output
    assert [i for i, _ in list_checkpoints(setup)] == [100, 200, 300]
    saved = torch.load(setup / "model_checkpoint_300", map_location="cpu", weights_only=True)
    assert not any(key.startswith("module.") for key in saved["model_state_dict"])
    assert {int(s["step"]) for s in saved["optimizer_state_dict"]["state"].values()} == {300}

    plot = CliRunner().invoke(app, ["train-plot", "--setup", str(setup)])
    assert plot.exit_code == 0, plot.output
    assert (setup / "training_curves.png").stat().st_size > 1000


def test_a_new_setup_starts_from_init_checkpoint_weights(synthetic_base, tmp_path):
    from synister.config import load_train_setup
    from synister.models import build_model, save_checkpoint
    from synister.train import train

    setup = _prepare(synthetic_base, 4, learning_rate=1e-9, init_checkpoint=str(tmp_path / "w"))
    cfg, _ = load_train_setup(setup)
    torch.manual_seed(123)
    start = build_model(cfg)
    save_checkpoint(tmp_path / "w", start, None, 777)
    train(setup, 1, progress=False)
    trained = torch.load(setup / "model_checkpoint_1", weights_only=True)["model_state_dict"]
    key = "stem.0.weight"  # a learning rate of 1e-9 leaves the weights where they started
    torch.testing.assert_close(trained[key], start.state_dict()[key], atol=1e-6, rtol=0)
    torch.manual_seed(cfg.seed)
    assert not torch.allclose(build_model(cfg).state_dict()[key], start.state_dict()[key])


def test_ema_decay_writes_averaged_checkpoints_that_resume_and_predict(synthetic_base):
    from synister.config import load_predict_setup
    from synister.setup import prepare_prediction_setups
    from synister.train import train

    setup = _prepare(synthetic_base, 5, ema_decay=0.99, checkpoint_every=20)
    train(setup, 20, progress=False)
    train(setup, 30, progress=False)  # resumes at 20, with the average of 20 updates
    assert [i for i, _ in list_checkpoints(setup)] == [20, 30]
    averaged = torch.load(setup / "model_checkpoint_30.averaged", weights_only=True)
    assert averaged["synister_averaging"] == {"decay": 0.99, "updates": 30}
    assert averaged["iteration"] == 30 and averaged["optimizer_state_dict"] is None
    raw = torch.load(setup / "model_checkpoint_30", weights_only=True)
    assert "synister_averaging" not in raw
    assert raw["model_state_dict"].keys() == averaged["model_state_dict"].keys()
    # a prediction setup can point at the average
    base, _ = synthetic_base
    (made,) = prepare_prediction_setups(
        base, "exp", 5, checkpoint=setup / "model_checkpoint_30.averaged", check_volume=False
    )
    assert made.iteration == 30
    assert load_predict_setup(made.path)[0].iteration == 30  # the runs' meta say so
    assert "model_checkpoint_30.averaged" in (made.path / "predict_config.ini").read_text()


def test_ctrl_c_saves_a_checkpoint_and_the_next_run_resumes_it(synthetic_base):
    import time

    from synister.train import train

    setup = _prepare(synthetic_base, 2, num_cache_workers=1)  # also the worker-process path
    proc = _run_module(
        ["-m", "synister.train", "1000", "--setup", str(setup), "--no-progress"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not (setup / "model_checkpoint_100").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint 100 within 240 s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the loader's worker too
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "SIGINT: stopping after this iteration" in output
    stopped = max(i for i, _ in list_checkpoints(setup))
    assert 100 <= stopped < 1000 and f"stopped at iteration {stopped}" in output

    result = train(setup, stopped + 10, progress=False)
    assert (result["start_iteration"], result["iteration"]) == (stopped, stopped + 10)
    saved = torch.load(setup / f"model_checkpoint_{stopped + 10}", weights_only=True)
    # Adam's step count continues from the checkpoint: the optimizer state was restored
    assert {int(s["step"]) for s in saved["optimizer_state_dict"]["state"].values()} == {
        stopped + 10
    }


def test_compute_threads_leave_cores_to_loader_workers_unless_omp_says(monkeypatch):
    from synister.data import usable_cpus
    from synister.train.setup_run import set_compute_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert set_compute_threads(num_cpus=64, num_workers=1) == max(1, usable_cpus() - 1)
        assert set_compute_threads(num_cpus=1, num_workers=0) == 1
        assert set_compute_threads(num_cpus=4, num_workers=9) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2)
        assert set_compute_threads(num_cpus=1, num_workers=0) == 2  # the user's choice stands
    finally:
        torch.set_num_threads(before)


def _rank_stopped_by_its_loader(rank: int, port: int, folder: str, results) -> None:
    """Rank 1's loader fails after a stop request that rank 0 never sees (Ctrl-C killed rank
    1's loader workers just after the ranks agreed to go on)."""
    import torch.distributed as dist

    from synister.train import LoopSettings, run_training
    from synister.train.distributed import Distributed
    from synister.train.loop import StopRequest

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model, optimizer = _standin()
        model = torch.nn.parallel.DistributedDataParallel(model)
        stop = StopRequest()

        def batches():
            for i, batch in enumerate(_batches()):
                if rank == 1 and i == 3:
                    stop.requested = True
                    raise RuntimeError("DataLoader worker exited unexpectedly")
                yield batch

        result = run_training(
            model, optimizer, batches(), folder, CLASSES,
            start_iteration=0, num_iterations=50, ctx=Distributed(True, rank, rank, 2),
            settings=LoopSettings(checkpoint_every=100, snapshot_every=100), progress=False,
            stop=stop,
        )  # fmt: skip
        results[rank] = (result["iteration"], result["interrupted"])
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_a_rank_whose_loader_fails_on_ctrl_c_still_stops_with_the_others(tmp_path):
    """Without taking part in the iteration the other rank has begun, both would hang."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = torch.multiprocessing.get_context("spawn").Manager().dict()
    torch.multiprocessing.start_processes(
        _rank_stopped_by_its_loader, args=(port, str(tmp_path), results), nprocs=2,
        start_method="spawn",
    )  # fmt: skip
    # rank 1 trains iteration 4 on its previous batch; both see the stop at the next check
    assert dict(results) == {0: (4, True), 1: (4, True)}
    assert [i for i, _ in list_checkpoints(tmp_path)] == [4]


def test_python_m_synister_train_needs_no_command_line_package(tmp_path, capsys):
    """``python -m synister.train`` (torchrun's entry) parses its own arguments: training
    imports nothing from the layer above it."""
    from synister.train.__main__ import main

    assert main(["10", "--setup", str(tmp_path), "--no-progress"]) == 1
    assert "is not a training setup (no train_config.ini)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["0", "--setup", str(tmp_path)])
