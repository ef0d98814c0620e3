"""synister.setup and its commands: setup folders, refusal to overwrite, prediction numbering."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from synister.cli import app
from synister.config import (
    ConfigError,
    PredictConfig,
    TrainConfig,
    load_predict_setup,
    load_train_setup,
)
from synister.setup import SetupError, prepare_prediction, prepare_training

SMALL = {
    "input_shape": "8, 32, 32",
    "downsample_factors": "(1,2,2), (1,2,2), (2,2,2)",
    "fmap_inc": (2, 2, 2),
    "n_convolutions": "2, 2, 2",
}


def _touch_checkpoints(setup, *iterations):
    for iteration in iterations:
        (setup / f"model_checkpoint_{iteration}").write_bytes(b"")


def test_prepare_training_writes_working_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNISTER_DB", "sqlite:///synister.db")
    setup = prepare_training(tmp_path, "fafb", 3)
    assert setup == tmp_path / "fafb" / "02_train" / "setup_t3"
    train, worker = load_train_setup(setup)
    assert train.input_shape == (16, 160, 160) and train.voxel_size == (40, 4, 4)
    assert train.downsample_factors == [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert train.split_name == "skeleton" and train.raw_dataset == "raw"
    assert train.raw_container == str(tmp_path.resolve() / "raw.zarr")  # relative to BASE
    assert train.database_url() == f"sqlite:///{tmp_path.resolve() / 'synister.db'}"
    assert len(train.classes) == 6 and worker.num_block_workers == 1
    text = (setup / "train_config.ini").read_text()
    assert "# voxel size of raw in nm, z, y, x\nvoxel_size = 40, 4, 4\n" in text


def test_prepare_training_overrides_and_refuses_to_overwrite(tmp_path):
    setup = prepare_training(tmp_path, "e", 0, db_url="sqlite:////data/x.db", **SMALL)
    train = TrainConfig.read(setup / "train_config.ini")
    assert train.input_shape == (8, 32, 32) and train.fmap_inc == (2, 2, 2)
    assert train.db_url == "sqlite:////data/x.db"
    (setup / "train_config.ini").write_text("edited")
    with pytest.raises(SetupError, match="exists already"):
        prepare_training(tmp_path, "e", 0)
    assert (setup / "train_config.ini").read_text() == "edited"
    with pytest.raises(ConfigError, match="unknown setting 'fmapz'"):
        prepare_training(tmp_path, "e", 1, fmapz=3)
    with pytest.raises(ConfigError, match=r"\[Training\] input_shape: expected three integers"):
        prepare_training(tmp_path, "e", 1, input_shape="8, 32")
    assert not (tmp_path / "e" / "02_train" / "setup_t1").exists()  # nothing half-made


def test_prepare_prediction_numbers_and_reuses_setups(tmp_path):
    train_setup = prepare_training(tmp_path, "e", 2, **SMALL)
    _touch_checkpoints(train_setup, 100, 200, 300)
    first = prepare_prediction(tmp_path, "e", 2, [100, 200], validation=True)
    root = tmp_path / "e" / "03_predict"
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
    again = prepare_prediction(tmp_path, "e", 2, [300, 200], validation=True)
    assert again == [root / "setup_t2_p2", root / "setup_t2_p1"]
    assert PredictConfig.read(again[1] / "predict_config.ini").batch_size == 3
    # other split part: a new number
    test_part = prepare_prediction(tmp_path, "e", 2, [200], validation=False)
    assert test_part == [root / "setup_t2_p3"]
    assert PredictConfig.read(test_part[0] / "predict_config.ini").split_part == "test"
    # setups of another training (t12 contains "t1") do not disturb the numbering of t1
    other = prepare_training(tmp_path, "e", 1, **SMALL)
    _touch_checkpoints(other, 100)
    assert prepare_prediction(tmp_path, "e", 1, [100], True) == [root / "setup_t1_p0"]


def test_prepare_prediction_needs_the_checkpoint(tmp_path):
    setup = prepare_training(tmp_path, "e", 0, **SMALL)
    _touch_checkpoints(setup, 100)
    with pytest.raises(SetupError, match=r"iteration\(s\) 500 .*checkpoints there: 100"):
        prepare_prediction(tmp_path, "e", 0, [500], True)
    with pytest.raises(SetupError, match="no training setup"):
        prepare_prediction(tmp_path, "e", 9, [100], True)


def test_commands(tmp_path):
    runner = CliRunner()
    base = str(tmp_path)
    args = ["prepare-training", "-d", base, "-e", "e", "-t", "0"]
    small = ["--set", "input_shape=8, 32, 32", "--set", "downsample_factors=(1,2,2),(2,2,2)"]
    result = runner.invoke(app, [*args, *small, "--split-name", "hemi", "--set", "queue=gpu"])
    assert result.exit_code == 0, result.output
    setup = tmp_path / "e" / "02_train" / "setup_t0"
    train, worker = load_train_setup(setup)
    assert train.split_name == "hemi" and train.fmap_inc == (2, 2) and worker.queue == "gpu"
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "exists already" in result.output
    _touch_checkpoints(setup, 10, 20)
    result = runner.invoke(
        app, ["prepare-prediction", "-d", base, "-e", "e", "-t", "0", "-i", "10", "20", "-v"]
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
