"""synister.load_model: every form of a model gives the same network, classes, temperature and
one identity."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import synister
from synister.config import TrainConfig
from synister.models import ModelError, build_model, load_model, save_checkpoint
from synister.models.bundle import bundle_from_checkpoint, load_bundle
from synister.models.calibration import write_calibration
from synister.predict import Predictor

CLASSES = ["gaba", "acetylcholine", "glutamate"]


def _config(**changes) -> TrainConfig:
    values = dict(
        synapse_types=CLASSES,
        input_shape=(4, 16, 16),
        fmaps=2,
        network="ResNet18",
        downsample_factors=[(1, 2, 2), (2, 2, 2)],
        split_name="s",
        voxel_size=(40, 4, 4),
        raw_container="raw.zarr",
        raw_dataset="raw",
        db_url="sqlite:///x.db",
    )
    return TrainConfig(**{**values, **changes})


@pytest.fixture
def trained(tmp_path):
    """A training setup with checkpoints 10 and 20, and a bundle of iteration 10."""
    setup = tmp_path / "e" / "02_train" / "setup_t0"
    setup.mkdir(parents=True)
    cfg = _config()
    cfg.write(setup / "train_config.ini")
    torch.manual_seed(0)
    save_checkpoint(setup / "model_checkpoint_10", build_model(cfg), None, 10)
    save_checkpoint(setup / "model_checkpoint_20", build_model(cfg), None, 20)
    bundle = bundle_from_checkpoint(
        setup / "model_checkpoint_10", setup / "train_config.ini", tmp_path / "bundle"
    )
    return setup, bundle


def _same(loaded, other) -> bool:
    return (
        loaded.identity == other.identity
        and loaded.classes == other.classes == CLASSES
        and loaded.temperature == other.temperature
        and loaded.input_shape_vox == other.input_shape_vox == (4, 16, 16)
        and loaded.voxel_size_nm == other.voxel_size_nm == (40.0, 4.0, 4.0)
    )


def test_each_form_of_one_checkpoint_is_the_same_model(trained):
    setup, _ = trained
    by_iteration = load_model(setup, 10)
    assert by_iteration.weights == setup / "model_checkpoint_10" and by_iteration.iteration == 10
    assert _same(by_iteration, load_model(setup / "model_checkpoint_10"))
    assert load_model(setup).iteration == 20  # a setup without an iteration: its newest
    assert load_model(setup).identity != by_iteration.identity  # other weights
    assert by_iteration.origin == "the network record in the checkpoint"

    # the original's checkpoint (no network record): the train_config.ini beside it tells
    state = torch.load(setup / "model_checkpoint_10", weights_only=True)
    torch.save({"model_state_dict": state["model_state_dict"]}, setup / "model_checkpoint_30")
    original = load_model(setup / "model_checkpoint_30")
    assert original.origin == str(setup / "train_config.ini") and original.iteration == 30
    record, other = original.identity_record(), by_iteration.identity_record()
    assert record.pop("checkpoint_sha256") != other.pop("checkpoint_sha256")  # other bytes
    assert record == other  # the same network, classes, shapes and temperature


def test_each_form_of_one_bundle_is_the_same_model(trained):
    setup, bundle = trained
    folder = load_model(bundle)
    assert folder.bundle is not None and folder.iteration == 10
    assert folder.weights == load_bundle(bundle).checkpoint
    for form in (bundle / "model.json", load_bundle(bundle).checkpoint, str(bundle)):
        assert _same(folder, load_model(form))
    assert load_model(bundle, 10).identity == folder.identity
    with pytest.raises(ModelError, match="holds iteration 10, not 20"):
        load_model(bundle, 20)


def test_the_identity_changes_with_the_temperature_not_with_the_provenance(trained, tmp_path):
    setup, bundle = trained
    before = load_model(bundle).identity
    manifest = json.loads((bundle / "model.json").read_text())
    manifest["provenance"]["note"] = "moved to another lab"
    (bundle / "model.json").write_text(json.dumps(manifest))
    assert load_model(bundle).identity == before
    load_bundle(bundle).save_temperature(2.0)
    calibrated = load_model(bundle)
    assert calibrated.temperature == 2.0 and calibrated.identity != before

    # a checkpoint's temperature and thresholds are the ones stored beside it
    checkpoint = setup / "model_checkpoint_10"
    plain = load_model(checkpoint)
    thresholds = {"min_probability": 0.6, "min_margin": 0.1, "min_synapses": 3}
    write_calibration(checkpoint, {"temperature": 1.5, "unclear": {"thresholds": thresholds}})
    stored = load_model(checkpoint)
    assert plain.temperature is None and stored.temperature == 1.5
    assert stored.unclear_thresholds == thresholds and stored.identity != plain.identity
    assert load_model(setup, 10).temperature == 1.5


def test_the_network_it_builds_is_the_checkpoints_and_predicts_through_the_engine(trained):
    setup, bundle = trained
    state = torch.load(setup / "model_checkpoint_10", weights_only=True)["model_state_dict"]
    for form in (setup / "model_checkpoint_10", bundle):
        network = load_model(form).build()
        assert all(torch.equal(network.state_dict()[k], v) for k, v in state.items())
        assert not network.training
    load_bundle(bundle).save_temperature(2.0)
    predictor = Predictor.from_model(load_model(bundle), device="cpu", batch_size=2)
    assert predictor.temperature == 2.0 and predictor.classes == CLASSES
    raw = torch.randint(0, 256, (3, 1, 4, 16, 16), dtype=torch.uint8)
    probabilities = predictor.probabilities(raw)
    assert probabilities.shape == (3, 3)
    raw_softmax = Predictor.from_model(load_model(bundle), device="cpu", temperature=None)
    assert not torch.allclose(torch.from_numpy(probabilities), torch.from_numpy(
        raw_softmax.probabilities(raw)))  # fmt: skip


def test_a_given_config_is_the_network_to_build(trained):
    setup, _ = trained
    wider = load_model(setup / "model_checkpoint_10", config=_config(fmaps=3))
    assert wider.network["fmaps"] == 3 and wider.recorded["network"]["fmaps"] == 2
    with pytest.raises(ModelError, match="fmaps: checkpoint has 2, config says 3"):
        wider.build()


def test_what_is_not_a_model_says_so(trained, tmp_path):
    setup, _ = trained
    with pytest.raises(ModelError, match="nothing: not a model"):
        load_model(tmp_path / "nothing")
    with pytest.raises(
        ModelError, match=r"not a model bundle: no model.json \(.*\), nor a training setup"
    ):
        load_model(tmp_path)
    with pytest.raises(ModelError, match=r"no checkpoint of iteration 5 .*: 10, 20\)"):
        load_model(setup, 5)
    lone = tmp_path / "lone"
    lone.mkdir()
    state = torch.load(setup / "model_checkpoint_10", weights_only=True)
    torch.save({"model_state_dict": state["model_state_dict"]}, lone / "model_checkpoint_1")
    with pytest.raises(ModelError, match="cannot tell the network: nothing: the checkpoint"):
        load_model(lone / "model_checkpoint_1")
    shutil.copy(setup / "train_config.ini", lone)  # beside it: now it can
    assert load_model(lone / "model_checkpoint_1").classes == CLASSES


def test_synister_load_model_is_the_public_name():
    assert synister.load_model is load_model
