"""synister.setup and its commands: setup folders, refusal to overwrite, prediction numbering,
volumes checked when a setup is made, and predicting with a network trained elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from synister.cli import app
from synister.config import (
    ConfigError,
    PredictConfig,
    TrainConfig,
    load_predict_setup,
    load_train_setup,
)
from synister.evaluate.provenance import export_model
from synister.models import build_model, save_checkpoint
from synister.setup import (
    SetupError,
    prepare_prediction,
    prepare_prediction_setups,
    prepare_training,
)
from synister.volumes import write_volume

SMALL = {
    "input_shape": "8, 32, 32",
    "downsample_factors": "(1,2,2), (1,2,2), (2,2,2)",
    "fmap_inc": (2, 2, 2),
    "n_convolutions": "2, 2, 2",
    "network": "ResNet18",
    "fmaps": 2,
}


@pytest.fixture
def base(tmp_path) -> Path:
    """A BASE folder with a small volume raw.zarr (dataset raw), where the defaults look."""
    write_volume(tmp_path / "raw.zarr", np.zeros((8, 32, 32), np.uint8), (40, 4, 4))
    return tmp_path


def _checkpoints(setup: Path, *iterations: int) -> None:
    cfg, _ = load_train_setup(setup)
    for iteration in iterations:
        save_checkpoint(setup / f"model_checkpoint_{iteration}", build_model(cfg), None, iteration)


def test_prepare_training_writes_working_defaults(base, monkeypatch):
    monkeypatch.setenv("SYNISTER_DB", "sqlite:///synister.db")
    setup = prepare_training(base, "fafb", 3)
    assert setup == base / "fafb" / "02_train" / "setup_t3"
    train, worker = load_train_setup(setup)
    assert train.input_shape == (16, 160, 160) and train.voxel_size == (40, 4, 4)
    assert train.downsample_factors == [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert train.split_name == "skeleton" and train.raw_dataset == "raw"
    assert train.raw_container == str(base.resolve() / "raw.zarr")  # relative to BASE
    assert train.database_url() == f"sqlite:///{base.resolve() / 'synister.db'}"
    assert len(train.classes) == 6 and worker.num_block_workers == 1
    text = (setup / "train_config.ini").read_text()
    assert "# voxel size of raw in nm, z, y, x\nvoxel_size = 40, 4, 4\n" in text


def test_prepare_training_overrides_and_refuses_to_overwrite(base):
    setup = prepare_training(base, "e", 0, db_url="sqlite:////data/x.db", **SMALL)
    train = TrainConfig.read(setup / "train_config.ini")
    assert train.input_shape == (8, 32, 32) and train.fmap_inc == (2, 2, 2)
    assert train.db_url == "sqlite:////data/x.db"
    (setup / "train_config.ini").write_text("edited")
    with pytest.raises(SetupError, match="exists already"):
        prepare_training(base, "e", 0)
    assert (setup / "train_config.ini").read_text() == "edited"
    with pytest.raises(ConfigError, match="unknown setting 'fmapz'"):
        prepare_training(base, "e", 1, fmapz=3)
    with pytest.raises(ConfigError, match=r"\[Training\] input_shape: expected three integers"):
        prepare_training(base, "e", 1, input_shape="8, 32")
    assert not (base / "e" / "02_train" / "setup_t1").exists()  # nothing half-made


def test_a_missing_volume_fails_at_prepare_time_naming_base(tmp_path, monkeypatch):
    elsewhere = tmp_path / "here"
    elsewhere.mkdir()
    write_volume(elsewhere / "raw.zarr", np.zeros((8, 32, 32), np.uint8), (40, 4, 4))
    monkeypatch.chdir(elsewhere)  # the volume lies where the command runs, not in BASE
    base = tmp_path / "base"
    with pytest.raises(SetupError) as error:
        prepare_training(base, "e", 0, raw_container="raw.zarr", **SMALL)
    message = str(error.value)
    assert "cannot open the raw volume" in message and str(base / "raw.zarr") in message
    assert f"'raw.zarr' is relative, so it was resolved against BASE = {base}" in message
    assert not base.exists()  # nothing made
    result = CliRunner().invoke(
        app, ["prepare-training", "-d", str(base), "-e", "e", "-t", "0", "--raw-dataset", "nope"]
    )
    assert result.exit_code == 1 and "resolved against BASE" in result.output
    # a volume that only the compute nodes reach: skip the check
    setup = prepare_training(base, "e", 0, check_volume=False, **SMALL)
    _checkpoints(setup, 10)
    with pytest.raises(SetupError, match="resolved against BASE"):
        prepare_prediction(base, "e", 0, [10], True)
    assert not (base / "e" / "03_predict").exists()
    assert prepare_prediction(base, "e", 0, [10], True, check_volume=False)


def test_prepare_prediction_numbers_and_reuses_setups(base):
    train_setup = prepare_training(base, "e", 2, **SMALL)
    _checkpoints(train_setup, 100, 200, 300)
    first = prepare_prediction(base, "e", 2, [100, 200], validation=True)
    root = base / "e" / "03_predict"
    assert first == [root / "setup_t2_p0", root / "setup_t2_p1"]
    predict, worker = load_predict_setup(first[1])
    assert predict.iteration == 200 and predict.split_part == "validation"
    assert predict.train_checkpoint == str(train_setup.resolve() / "model_checkpoint_200")
    assert predict.input_shape == (8, 32, 32) and predict.overwrite is False
    assert predict.run_name == "skeleton_e_t2_p1"
    raw = PredictConfig.read(first[1] / "predict_config.ini")
    assert raw.train_checkpoint == "e/02_train/setup_t2/model_checkpoint_200"  # seed's form
    (first[1] / "predict_config.ini").write_text(
        (first[1] / "predict_config.ini").read_text().replace("batch_size = 8", "batch_size = 3")
    )
    # same checkpoint and split part: the number is reused and the edited setup kept
    again = prepare_prediction(base, "e", 2, [300, 200], validation=True)
    assert again == [root / "setup_t2_p2", root / "setup_t2_p1"]
    assert PredictConfig.read(again[1] / "predict_config.ini").batch_size == 3
    # other split part: a new number
    test_part = prepare_prediction(base, "e", 2, [200], validation=False)
    assert test_part == [root / "setup_t2_p3"]
    assert PredictConfig.read(test_part[0] / "predict_config.ini").split_part == "test"
    # setups of another training (t12 contains "t1") do not disturb the numbering of t1
    other = prepare_training(base, "e", 1, **SMALL)
    _checkpoints(other, 100)
    assert prepare_prediction(base, "e", 1, [100], True) == [root / "setup_t1_p0"]


def test_prepare_prediction_needs_the_checkpoint(base):
    setup = prepare_training(base, "e", 0, **SMALL)
    _checkpoints(setup, 100)
    with pytest.raises(SetupError, match=r"iteration\(s\) 500 .*checkpoints there: 100"):
        prepare_prediction(base, "e", 0, [500], True)
    with pytest.raises(SetupError, match="no training setup.*give --checkpoint"):
        prepare_prediction(base, "e", 9, [100], True)


def test_rerunning_with_other_options_says_so_and_force_rewrites(base):
    setup = prepare_training(base, "e", 0, **SMALL)
    _checkpoints(setup, 10)
    [made] = prepare_prediction_setups(base, "e", 0, [10], True)
    assert made.state == "created"
    [same] = prepare_prediction_setups(base, "e", 0, [10], True)
    assert same.state == "kept" and same.differs == ()
    [kept] = prepare_prediction_setups(base, "e", 0, [10], True, settings={"batch_size": "3"})
    assert kept.state == "kept" and kept.differs == ("batch_size",)
    assert PredictConfig.read(kept.path / "predict_config.ini").batch_size == 8
    runner = CliRunner()
    args = ["prepare-prediction", "-d", str(base), "-e", "e", "-t", "0", "-i", "10", "-v"]
    result = runner.invoke(app, [*args, "--set", "batch_size=3"])
    assert result.exit_code == 0, result.output
    assert "exists, kept, but it differs from this request in batch_size; rerun with --force" in (
        result.output
    )
    result = runner.invoke(app, [*args, "--set", "batch_size=3", "--force"])
    assert result.exit_code == 0 and "setup_t0_p0 (iteration 10): rewritten" in result.output
    assert PredictConfig.read(kept.path / "predict_config.ini").batch_size == 3


def test_the_train_part_can_be_predicted(base):
    setup = prepare_training(base, "e", 0, **SMALL)
    _checkpoints(setup, 10)
    [path] = prepare_prediction(base, "e", 0, [10], part="train")
    assert PredictConfig.read(path / "predict_config.ini").split_part == "train"
    runner = CliRunner()
    args = ["prepare-prediction", "-d", str(base), "-e", "e", "-t", "0", "-i", "10"]
    result = runner.invoke(app, [*args, "--part", "train"])
    assert result.exit_code == 0 and "exists, kept" in result.output
    result = runner.invoke(app, [*args, "-v", "--part", "test"])
    assert result.exit_code == 1 and "contradict" in result.output
    result = runner.invoke(app, [*args, "--part", "training"])
    assert result.exit_code == 1 and "part: expected one of train, validation, test" in (
        result.output
    )


def _colleagues_setup(tmp_path: Path) -> Path:
    """A training setup in another BASE with another network (fmaps 3, 4 classes, 8x48x48)."""
    other = tmp_path / "colleague"
    setup = prepare_training(
        other,
        "theirs",
        5,
        check_volume=False,
        db_url="sqlite:////nowhere/theirs.db",
        synapse_types="gaba, acetylcholine, glutamate, dopamine",
        **{**SMALL, "fmaps": 3, "input_shape": "8, 48, 48"},
    )
    torch.manual_seed(5)
    _checkpoints(setup, 700)
    return setup


def test_predicting_with_a_checkpoint_trained_elsewhere(base, tmp_path):
    theirs = _colleagues_setup(tmp_path)
    checkpoint = theirs / "model_checkpoint_700"
    data = {"db_url": "sqlite:///mine.db", "split_name": "hemi"}
    # no training setup of ours: data settings from the options, network from the checkpoint
    [made] = prepare_prediction_setups(base, "mine", 0, checkpoint=checkpoint, settings=data)
    cfg, _ = load_predict_setup(made.path)
    assert made.state == "created" and made.iteration == 700 and cfg.iteration == 700
    assert made.network_from == "the network record in the checkpoint"
    assert cfg.fmaps == 3 and cfg.input_shape == (8, 48, 48) and len(cfg.classes) == 4
    assert cfg.train_checkpoint == str(checkpoint) and cfg.split_part == "test"
    assert cfg.database_url() == f"sqlite:///{base.resolve() / 'mine.db'}"
    assert cfg.split_name == "hemi" and cfg.raw_container == str(base.resolve() / "raw.zarr")
    assert cfg.run_name == "hemi_mine_t0_p0"
    # an original checkpoint without a record: the train_config.ini beside it tells
    original = theirs / "model_checkpoint_800"
    weights = torch.load(checkpoint, weights_only=True)["model_state_dict"]
    torch.save({"model_state_dict": weights}, original)
    [beside] = prepare_prediction_setups(base, "mine", 0, checkpoint=original, settings=data)
    assert beside.network_from == str(theirs / "train_config.ini")
    assert load_predict_setup(beside.path)[0].fmaps == 3
    # a bundle
    bundle = export_model(theirs, 700, tmp_path / "bundle")
    result = CliRunner().invoke(
        app,
        ["prepare-prediction", "-d", str(base), "-e", "mine", "-t", "1", "-v"]
        + ["--checkpoint", str(bundle), "--db-url", "sqlite:///mine.db"],
    )
    assert result.exit_code == 0, result.output
    assert "setup_t1_p0 (iteration 700): created" in result.output
    assert f"network settings from bundle {bundle}" in result.output
    cfg, _ = load_predict_setup(base / "mine" / "03_predict" / "setup_t1_p0")
    assert cfg.train_checkpoint == str(bundle / "model_checkpoint_700") and cfg.fmaps == 3


def test_a_checkpoint_that_does_not_fit_fails_at_prepare_time_in_one_line(base, tmp_path):
    theirs = _colleagues_setup(tmp_path)
    ours = prepare_training(base, "e", 0, **SMALL)
    _checkpoints(ours, 10)
    lone = tmp_path / "lone" / "model_checkpoint_700"  # no record, no train_config.ini beside
    lone.parent.mkdir()
    weights = torch.load(theirs / "model_checkpoint_700", weights_only=True)["model_state_dict"]
    torch.save({"model_state_dict": weights}, lone)
    with pytest.raises(SetupError) as error:
        prepare_prediction(base, "e", 0, checkpoint=lone)
    message = str(error.value)
    assert "classes: checkpoint has 4 outputs, config says 6" in message
    assert "fmaps: checkpoint has 3, config says 2" in message and "\n" not in message
    noise = tmp_path / "noise"
    noise.write_bytes(bytes(range(256)) * 4)
    result = CliRunner().invoke(
        app,
        ["prepare-prediction", "-d", str(base), "-e", "e", "-t", "0", "--checkpoint", str(noise)],
    )
    assert result.exit_code == 1 and "noise: not a checkpoint" in result.output
    assert "weights_only" not in result.output
    assert not (base / "e" / "03_predict").exists()


def test_another_input_shape_is_refused_unless_allowed(base):
    setup = prepare_training(base, "e", 0, **SMALL)
    _checkpoints(setup, 10)
    other = {"input_shape": "8, 64, 64"}
    with pytest.raises(SetupError, match="trained on 8, 32, 32 voxels, this setup would predict"):
        prepare_prediction(base, "e", 0, [10], settings=other)
    with pytest.raises(SetupError, match="trained on 8, 32, 32 voxels"):
        prepare_prediction(base, "e", 0, [10], settings={**other, "allow_other_input_shape": "No"})
    [path] = prepare_prediction(base, "e", 0, [10], settings=other, allow_other_input_shape=True)
    cfg, _ = load_predict_setup(path)
    assert cfg.input_shape == (8, 64, 64) and cfg.allow_other_input_shape is True


def test_commands(base):
    runner = CliRunner()
    base_text = str(base)
    args = ["prepare-training", "-d", base_text, "-e", "e", "-t", "0"]
    small = ["--set", "input_shape=8, 32, 32", "--set", "downsample_factors=(1,2,2),(2,2,2)"]
    small += ["--set", "network=ResNet18", "--set", "fmaps=2"]
    queue = ["--set", "queue=gpu", "--set", "submit_command=bsub -q {queue} {command}"]
    result = runner.invoke(app, [*args, *small, "--split-name", "hemi", *queue])
    assert result.exit_code == 0, result.output
    setup = base / "e" / "02_train" / "setup_t0"
    train, worker = load_train_setup(setup)
    assert train.split_name == "hemi" and train.fmap_inc == (2, 2) and worker.queue == "gpu"
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "exists already" in result.output
    _checkpoints(setup, 10, 20)
    result = runner.invoke(
        app, ["prepare-prediction", "-d", base_text, "-e", "e", "-t", "0", "-i", "10", "20", "-v"]
    )
    assert result.exit_code == 0, result.output
    assert "setup_t0_p1 (iteration 20): created" in result.output
    result = runner.invoke(app, [*args, "-c"], input="n\n")
    assert result.exit_code == 1 and setup.exists()
    result = runner.invoke(app, [*args, "-c"], input="y\n")
    assert result.exit_code == 0 and not setup.exists()
    result = runner.invoke(app, [*args, "-c", "--yes"])
    assert result.exit_code == 1 and "no training setup" in result.output


@pytest.mark.parametrize(
    ("name", "message"),
    [("my experiment", "holds ' '"), ("e" * 25, "at most 24"), ("../x", "holds '.', '/'")],
)
def test_experiment_names_that_cannot_become_run_names_are_refused(tmp_path, name, message):
    with pytest.raises(SetupError, match=f"experiment name .*{message}"):
        prepare_training(tmp_path, name, 0)
    assert list(tmp_path.iterdir()) == []
