"""synister.models.bundle and ``synister export-model``: bundles from setups and from original
checkpoints, every declared field checked, the best validation iteration, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from synister.cli import app
from synister.config import TrainConfig, _ModelFields, load_train_setup
from synister.db import open_database
from synister.evaluate.provenance import export_model
from synister.models import build_model, save_checkpoint
from synister.models import bundle as bundle_module
from synister.models.bundle import BundleError, bundle_from_checkpoint, load_bundle
from synister.setup import prepare_training

CLASSES = ["gaba", "acetylcholine", "glutamate"]
SMALL = {
    "synapse_types": CLASSES,
    "input_shape": (4, 16, 16),
    "fmaps": 2,
    "downsample_factors": [(1, 2, 2), (2, 2, 2)],
    "network": "ResNet18",
    "voxel_size": (40, 4, 4),
}


def _setup(base: Path, url: str, train_id: int = 0, **changes) -> Path:
    return prepare_training(
        base, "e", train_id, db_url=url, check_volume=False, **{**SMALL, **changes}
    )


def _checkpoint(setup: Path, iteration: int, seed: int = 0) -> nn.Module:
    cfg, _ = load_train_setup(setup)
    torch.manual_seed(seed)
    model = build_model(cfg)
    save_checkpoint(setup / f"model_checkpoint_{iteration}", model, None, iteration)
    return model.eval()


def _same_logits(a: nn.Module, b: nn.Module, shape=(2, 1, 4, 16, 16)) -> bool:
    raw = torch.rand(*shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        return torch.equal(a.eval()(raw), b.eval()(raw))


def test_export_model_writes_a_bundle_that_rebuilds_the_network(tmp_path):
    setup = _setup(tmp_path, f"sqlite:///{tmp_path / 'absent.db'}")
    trained = _checkpoint(setup, 100)
    out = export_model(setup, 100, tmp_path / "bundle")
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model_checkpoint_100"]
    bundle = load_bundle(out)
    assert bundle.path == out and bundle.classes == CLASSES
    assert bundle.input_shape_vox == (4, 16, 16) and bundle.voxel_size_nm == (40.0, 4.0, 4.0)
    assert bundle.temperature is None and bundle.iteration == 100
    assert bundle.synister_version and bundle.normalization["formula"] == "raw / 255 * 2 - 1"
    # every network-shaping key of the config, and nothing of data or database
    assert set(bundle.network) == set(_ModelFields.model_fields) - _ModelFields.NOT_NETWORK
    assert bundle.network["fmaps"] == 2 and bundle.network["fmap_inc"] == [2, 2]
    assert bundle.provenance["split_name"] == "skeleton"
    assert bundle.provenance["prediction_runs"] == []
    assert "absent.db not found" in bundle.provenance["database_note"]
    assert not (tmp_path / "absent.db").exists()  # looking for runs made no database
    model = bundle.build_model()
    assert not model.training and _same_logits(model, trained)
    # the weights file holds no optimizer state but the network record
    state = torch.load(bundle.checkpoint, weights_only=True)
    assert state["optimizer_state_dict"] is None and state["iteration"] == 100
    assert state["synister_network"]["classes"] == CLASSES


def test_network_settings_are_every_field_but_data_and_database():
    cfg = TrainConfig(
        db_name_data="d", split_name="s", raw_container="r", raw_dataset="raw", **SMALL
    )
    settings = cfg.network_settings()
    assert set(settings) == set(_ModelFields.model_fields) - _ModelFields.NOT_NETWORK
    assert {"network", "fmaps", "downsample_factors", "fmap_inc", "n_convolutions"} <= set(settings)
    assert not {"db_url", "split_name", "raw_container", "batch_size"} & set(settings)
    assert settings["downsample_factors"] == [[1, 2, 2], [2, 2, 2]]  # JSON lists


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("bundle")
    setup = _setup(base, f"sqlite:///{base / 'none.db'}")
    _checkpoint(setup, 100)
    return export_model(setup, 100, base / "good")


def _edited(good: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "edited"
    copy.mkdir()
    for file in good.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    manifest = json.loads((copy / "model.json").read_text())
    result = edit(manifest)
    text = result if isinstance(result, str) else json.dumps(manifest)
    (copy / "model.json").write_text(text)
    return copy


def _set(key, value):
    def edit(manifest):
        target, *path = key.split(".")
        if path:
            manifest[target][path[0]] = value
        else:
            manifest[target] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            _set("input_shape_vox", [16, 160]),
            "model.json input_shape_vox: expected 3 positive integers, got [16, 160]",
        ),
        (_set("input_shape_vox", [4, 16, 16.5]), "input_shape_vox: expected 3 positive integers"),
        (_set("voxel_size_nm", [0, 4, 4]), "voxel_size_nm: expected 3 positive numbers"),
        (_set("classes", ["gaba", "xyz", "glutamate"]), "classes: unknown transmitter 'xyz'"),
        (_set("classes", ["gaba", "gaba", "glutamate"]), "classes: a class is listed twice"),
        (_set("temperature", -1), "temperature: expected 1 positive numbers, got -1"),
        (_set("normalization.output_range", [0, 1]), "normalization.output_range: synister"),
        (_set("format_version", 2), "format_version: this synister"),
        (_set("colour", "blue"), "colour: unknown field"),
        (lambda m: m.pop("classes"), "classes: missing (required field)"),
        (_set("checkpoint", "../x"), "checkpoint: expected the name of a file"),
        (_set("checkpoint", "model_checkpoint_7"), "no file 'model_checkpoint_7'"),
        (_set("network.fmaps", 0), "network fmaps: Input should be greater than 0"),
        (_set("network.classifier_width", 5), "network classifier_width: unknown key"),
        (_set("network.network", "UNet"), "network network: Input should be 'VGG' or"),
        (_set("network.input_shape", [4, 16, 16]), "network.input_shape: belongs outside"),
        (lambda m: '{"format": 1,\n  "classes": }', "not valid JSON: Expecting value (line 2"),
        (_set("network.fmaps", 3), "fmaps: checkpoint has 2, model.json says 3"),
        (_set("classes", ["gaba", "acetylcholine"]), "classes: checkpoint has 3 outputs"),
        (
            _set("classes", ["glutamate", "acetylcholine", "gaba"]),
            'classes: ["glutamate", "acetylcholine", "gaba"] differs from what the weights were '
            'trained with: ["gaba", "acetylcholine", "glutamate"]',
        ),
        (
            _set("input_shape_vox", [4, 32, 32]),  # the ResNet's weights fit any input shape
            "input_shape_vox: [4, 32, 32] differs from what the weights were trained with: [4, 16",
        ),
        (_set("voxel_size_nm", [8, 8, 8]), "voxel_size_nm: [8.0, 8.0, 8.0] differs from what"),
        (_set("network.fmap_inc", [3, 2]), "network.fmap_inc: [3, 2] differs from what the"),
    ],
)
def test_load_bundle_names_the_wrong_field(good_bundle, tmp_path, edit, expected):
    edited = _edited(good_bundle, tmp_path, edit)
    with pytest.raises(BundleError) as error:
        load_bundle(edited)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_load_bundle_of_something_else(tmp_path):
    with pytest.raises(BundleError, match="folder not found"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(BundleError, match="no model.json"):
        load_bundle(tmp_path)


def test_temperature_is_written_atomically_into_model_json(good_bundle, tmp_path):
    copy = _edited(good_bundle, tmp_path, lambda m: None)
    bundle = load_bundle(copy)
    warmer = bundle.with_temperature(1.5)
    assert warmer.temperature == 1.5 and bundle.temperature is None
    assert load_bundle(copy).temperature is None  # with_temperature writes nothing
    assert bundle.save_temperature(2.25) is bundle and bundle.temperature == 2.25
    assert load_bundle(copy).temperature == 2.25
    assert sorted(p.name for p in copy.iterdir()) == ["model.json", "model_checkpoint_100"]
    with pytest.raises(BundleError, match="temperature: expected a positive number"):
        bundle.save_temperature(0)
    assert load_bundle(copy).temperature == 2.25
    assert bundle.save_temperature(None).temperature is None


SEED_STYLE_TRAIN = """\
[Training]
synapse_types = gaba, acetylcholine, glutamate, serotonin, octopamine
input_shape = 4, 16, 16
fmaps = 3
batch_size = 8
db_credentials = synister_data/credentials/db_credentials.ini
db_name_data = synister_v3
split_name = skeleton
voxel_size = 40, 4, 4
raw_container = /nrs/saalfeld/FAFB00/v14_align_tps_20170818_dmg.n5
raw_dataset = volumes/raw/s0
downsample_factors = (1,2,2), (2,2,2)
network = VGG
fmap_inc = 2, 2
n_convolutions = 2, 2
network_appendix = None
"""


def _funlib_vgg(fmaps: int, classes: int) -> nn.Module:
    """The original's layout, written out: 2 levels of 2 convs, pools (1,2,2) and (2,2,2)."""

    def block(c_in, c_out):
        return [nn.Conv3d(c_in, c_out, 3, padding=1), nn.BatchNorm3d(c_out), nn.ReLU()]

    reference = nn.Module()
    reference.features = nn.Sequential(
        *block(1, fmaps), *block(fmaps, fmaps), nn.MaxPool3d((1, 2, 2)),
        *block(fmaps, 2 * fmaps), *block(2 * fmaps, 2 * fmaps), nn.MaxPool3d((2, 2, 2)),
    )  # fmt: skip
    reference.classifier = nn.Sequential(
        nn.Linear(2 * fmaps * 2 * 4 * 4, 4096), nn.ReLU(), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, classes),
    )  # fmt: skip
    return reference


def test_bundle_from_an_original_checkpoint_and_the_seeds_train_config(tmp_path):
    torch.manual_seed(3)
    reference = _funlib_vgg(fmaps=3, classes=5)
    optimizer = torch.optim.Adam(reference.parameters())
    original = tmp_path / "model_checkpoint_1500"  # the original's name; no iteration inside
    torch.save(
        {
            "model_state_dict": reference.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
        },
        original,
    )
    (tmp_path / "train_config.ini").write_text(SEED_STYLE_TRAIN)
    out = bundle_from_checkpoint(original, tmp_path / "train_config.ini", tmp_path / "b")
    bundle = load_bundle(out)
    assert bundle.iteration == 1500 and len(bundle.classes) == 5
    assert bundle.provenance["source"] == "checkpoint"
    assert bundle.provenance["db_name_data"] == "synister_v3"
    model = bundle.build_model()

    def forward(raw):
        return reference.classifier(reference.features(raw).flatten(1))

    raw = torch.rand(2, 1, 4, 16, 16) * 2 - 1
    reference.eval()
    with torch.no_grad():
        assert torch.equal(model(raw), forward(raw))
    # a config whose network does not fit: one line saying what differs, nothing written
    (tmp_path / "other.ini").write_text(SEED_STYLE_TRAIN.replace("fmaps = 3", "fmaps = 4"))
    with pytest.raises(BundleError, match="fmaps: checkpoint has 3, config says 4$"):
        bundle_from_checkpoint(original, tmp_path / "other.ini", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def _world(base: Path) -> str:
    """A database with 12 single-transmitter skeletons of 4 synapses in a split 'skeleton'."""
    url = f"sqlite:///{base / 'w.db'}"
    skeletons = pd.DataFrame(
        {"skeleton_id": np.arange(12), "nt_known": [[CLASSES[i % 3]] for i in range(12)]}
    )
    skeleton_ids = np.repeat(np.arange(12), 4)
    synapses = pd.DataFrame(
        {
            "synapse_id": np.arange(48) + 1,
            "z": np.arange(48) * 40.0,
            "y": 100.0,
            "x": 100.0,
            "skeleton_id": skeleton_ids,
        }
    )
    parts = np.where(skeleton_ids < 6, "validation", np.where(skeleton_ids < 9, "test", "train"))
    with open_database(url) as db:
        db.import_records(synapses=synapses, skeletons=skeletons)
        db.write_split("skeleton", pd.DataFrame({"synapse_id": synapses.synapse_id, "part": parts}))
    return url


def _store_run(
    url, run, setup, iteration, part, correct, *, only=None, experiment="e", train=0, averaged=False
):
    """A prediction run whose first ``correct`` share of synapses is predicted right (of the
    weight average beside the checkpoint with ``averaged``)."""
    with open_database(url) as db:
        table = db.synapses(split="skeleton", part=part)
        truth = np.array([CLASSES.index(next(iter(k))) for k in table["nt_known"]])
        predicted = truth.copy()
        wrong = np.arange(len(truth)) >= round(correct * len(truth))
        predicted[wrong] = (truth[wrong] + 1) % 3
        probabilities = np.full((len(truth), 3), 0.1)
        probabilities[np.arange(len(truth)), predicted] = 0.8
        ids = table["synapse_id"].to_numpy()
        keep = slice(None) if only is None else slice(0, only)
        meta = {
            "split_name": "skeleton",
            "split_part": part,
            "experiment": experiment,
            "train_number": train,
            "predict_number": 0,
            "iteration": iteration,
            "checkpoint": str(setup / f"model_checkpoint_{iteration}")
            + (".averaged" if averaged else ""),
            "classes": CLASSES,
        }
        db.create_prediction_run(run, CLASSES, meta)
        db.write_predictions(run, ids[keep], probabilities[keep])


def test_export_best_iteration_from_the_setups_validation_runs(tmp_path):
    url = _world(tmp_path)
    setup = _setup(tmp_path, url)
    other = _setup(tmp_path, url, train_id=1)
    for iteration in (100, 200, 300, 400):
        _checkpoint(setup, iteration, seed=iteration)
    with pytest.raises(BundleError, match="no complete validation prediction run .* -v"):
        export_model(setup, "best", tmp_path / "none")
    assert not (tmp_path / "none").exists()
    _store_run(url, "skeleton_e_t0_p0", setup, 100, "validation", 0.5)
    _store_run(url, "skeleton_e_t0_p1", setup, 200, "validation", 0.75)
    _store_run(url, "skeleton_e_t0_p2", setup, 300, "validation", 0.75)  # a tie: earlier wins
    _store_run(url, "skeleton_e_t0_p3", setup, 400, "validation", 1.0, only=10)  # incomplete
    _store_run(url, "skeleton_e_t0_p4", setup, 200, "test", 0.5)
    _store_run(url, "skeleton_e_t1_p0", other, 100, "validation", 1.0, train=1)  # other setup
    _store_run(url, "skeleton_e_t0_p5", setup, "late", "validation", 1.0)  # unreadable meta
    out = export_model(setup, "best", tmp_path / "best", rule="accuracy")  # the original's
    bundle = load_bundle(out)
    assert bundle.iteration == 200 and bundle.checkpoint.name == "model_checkpoint_200"
    provenance = bundle.provenance
    assert provenance["iteration_chosen"] == (
        "validation runs, accuracy rule (the best synapse accuracy, the earliest on ties: "
        "the original's)"
    )
    # the default, the demo's rule: the latest, as 200 is no better than 300
    assert load_bundle(export_model(setup, "best", tmp_path / "margin")).iteration == 300
    assert [r["run"] for r in provenance["prediction_runs"]] == [
        "skeleton_e_t0_p4",
        "skeleton_e_t0_p5",  # no iteration: first
        "skeleton_e_t0_p0",
        "skeleton_e_t0_p1",
        "skeleton_e_t0_p2",
        "skeleton_e_t0_p3",
    ]
    unreadable = provenance["prediction_runs"][1]
    assert (
        unreadable["complete"] is False and "'iteration' is not an integer" in (unreadable["error"])
    )
    incomplete = provenance["prediction_runs"][-1]
    assert incomplete["complete"] is False and incomplete["predicted"] == 10
    assert incomplete["expected"] == 24
    metrics = provenance["metrics"]
    assert metrics["validation"]["run"] == "skeleton_e_t0_p1"
    assert metrics["validation"]["synapse_accuracy"] == pytest.approx(0.75)
    assert metrics["test"]["synapse_accuracy"] == pytest.approx(0.5)
    assert provenance["database"] == url and provenance["train_number"] == 0
    # a given iteration: that iteration's metrics only
    plain = load_bundle(export_model(setup, 100, tmp_path / "it100"))
    assert list(plain.provenance["metrics"]) == ["validation"]
    assert plain.provenance["metrics"]["validation"]["synapse_accuracy"] == pytest.approx(0.5)


def test_export_best_by_the_margin_rule_keeps_a_clearly_better_earlier_iteration(tmp_path):
    url = _world(tmp_path)
    setup = _setup(tmp_path, url)
    for iteration in (100, 200, 300):
        _checkpoint(setup, iteration, seed=iteration)
    _store_run(url, "skeleton_e_t0_p0", setup, 100, "validation", 0.5)
    _store_run(url, "skeleton_e_t0_p1", setup, 200, "validation", 1.0)
    _store_run(url, "skeleton_e_t0_p2", setup, 300, "validation", 0.25)
    for rule, expected in (("margin", 200), ("last", 300), ("accuracy", 200)):
        bundle = load_bundle(export_model(setup, "best", tmp_path / rule, rule=rule))
        assert bundle.iteration == expected, rule
    with pytest.raises(BundleError, match="--rule: expected one of accuracy, nll"):
        export_model(setup, "best", tmp_path / "x", rule="best")
    assert not (tmp_path / "x").exists()
    # the weight averages' own runs decide for --averaged: there 300 is clearly better
    from synister.train.averaging import WeightAverage, save_average

    for iteration, correct in ((100, 0.5), (200, 0.25), (300, 1.0)):
        model = _checkpoint(setup, 50, seed=iteration)
        save_average(WeightAverage(model, decay=0.5), setup / f"model_checkpoint_{iteration}",
                     model, iteration)  # fmt: skip
        _store_run(url, f"skeleton_e_t0_p{iteration // 100 + 2}", setup, iteration,
                   "validation", correct, averaged=True)  # fmt: skip
    averaged = load_bundle(export_model(setup, "best", tmp_path / "avg", averaged=True))
    assert averaged.iteration == 300 and averaged.provenance["weights"] == "averaged"
    assert load_bundle(export_model(setup, "best", tmp_path / "raw")).iteration == 200


def test_a_crash_while_writing_leaves_no_half_bundle(tmp_path, monkeypatch):
    setup = _setup(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    _checkpoint(setup, 100)
    first = export_model(setup, 100, tmp_path / "b")
    before = (first / "model.json").read_bytes()
    _checkpoint(setup, 200, seed=5)

    def crash(path, content):
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module, "write_json", crash)
    with pytest.raises(OSError, match="disk full"):
        export_model(setup, 200, tmp_path / "b", overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        export_model(setup, 200, tmp_path / "new")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "e"]  # no temporary folders
    assert (first / "model.json").read_bytes() == before  # the old bundle is untouched
    with pytest.raises(BundleError, match="exists already; .*--force"):
        export_model(setup, 200, tmp_path / "b")
    assert load_bundle(export_model(setup, 200, tmp_path / "b", overwrite=True)).iteration == 200


def test_export_model_command(tmp_path):
    setup = _setup(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    _checkpoint(setup, 100)
    runner = CliRunner()
    result = runner.invoke(app, ["export-model", str(setup), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "--iteration N or --iteration best" in result.output
    result = runner.invoke(
        app, ["export-model", str(setup), "--iteration", "100", "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    assert "ResNet18, iteration 100, classes gaba, acetylcholine, glutamate" in result.output
    assert "input 4x16x16 voxels of 40x4x4 nm" in result.output
    result = runner.invoke(
        app, ["export-model", str(setup), "--iteration", "best", "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 1 and "no complete validation prediction run" in result.output
    checkpoint = setup / "model_checkpoint_100"
    result = runner.invoke(app, ["export-model", str(checkpoint), "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output  # train_config.ini beside it
    assert load_bundle(tmp_path / "d").provenance["source"] == "checkpoint"
    result = runner.invoke(app, ["export-model", str(checkpoint), "--out", str(tmp_path / "d")])
    assert result.exit_code == 1 and "--force" in result.output
    result = runner.invoke(
        app, ["export-model", str(checkpoint), "--out", str(tmp_path / "d"), "--force"]
    )
    assert result.exit_code == 0, result.output


def test_export_model_averaged_takes_the_weight_average_beside_the_checkpoint(tmp_path):
    from synister.train.averaging import WeightAverage, save_average

    setup = _setup(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    raw = _checkpoint(setup, 100)
    runner = CliRunner()
    args = ["export-model", str(setup), "--iteration", "100", "--averaged"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "no weight average of iteration 100" in result.output
    assert "ema_decay" in result.output and not (tmp_path / "a").exists()

    other = _checkpoint(setup, 50, seed=1)  # the average holds other weights than the raw ones
    average = WeightAverage(other, decay=0.5)
    save_average(average, setup / "model_checkpoint_100", other, 100)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(tmp_path / "a")
    assert bundle.iteration == 100 and bundle.provenance["weights"] == "averaged"
    assert _same_logits(bundle.build_model(), other) and not _same_logits(bundle.build_model(), raw)
    assert load_bundle(export_model(setup, 100, tmp_path / "r")).provenance["weights"] == "raw"
    result = runner.invoke(
        app, ["export-model", str(setup / "model_checkpoint_100"), "--averaged", "--out",
              str(tmp_path / "c")],
    )  # fmt: skip
    assert result.exit_code == 1 and "for setup folders" in result.output
