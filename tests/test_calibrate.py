"""``synister calibrate``: the temperature fitted on a validation run, stored beside the
checkpoint, the unclear thresholds chosen there, and the errors for runs it must refuse."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synister.cli import app
from synister.config import load_train_setup
from synister.db import open_database
from synister.evaluate import calibration as cal
from synister.evaluate.calibrate import (
    CalibrationOptions,
    calibration_summary,
    labelled_run,
    raw_probabilities,
)
from synister.evaluate.class_scaling import ClassScaling, neuron_calls
from synister.models import build_model, save_checkpoint
from synister.models.calibration import (
    CalibrationError,
    calibration_path,
    checkpoint_temperature,
    read_calibration,
)
from synister.setup import prepare_training
from synister.volumes import write_volume

pytestmark = pytest.mark.timeout(120)

CLASSES = ["gaba", "acetylcholine", "glutamate"]
VOXEL_NM = (40, 4, 4)
TRUE_TEMPERATURE = 2.0
N_SKELETONS = 60
SYNAPSES_PER_SKELETON = 25


@dataclass
class World:
    base: Path
    url: str
    setup: Path
    checkpoint: Path
    synapses: pd.DataFrame


def overconfident_probabilities(true_idx: np.ndarray, rng) -> np.ndarray:
    """Softmax of logits whose labels follow softmax(logits / TRUE_TEMPERATURE): logits are
    drawn exchangeably, a label is drawn from the tempered softmax, and its logit is swapped
    into the true class's place."""
    logits = rng.normal(0.0, 2.5, (len(true_idx), len(CLASSES)))
    tempered = cal.softmax(logits, TRUE_TEMPERATURE)
    drawn = (tempered.cumsum(axis=1) > rng.random((len(true_idx), 1))).argmax(axis=1)
    rows = np.arange(len(true_idx))
    at_drawn, at_true = logits[rows, drawn].copy(), logits[rows, true_idx].copy()
    logits[rows, true_idx], logits[rows, drawn] = at_drawn, at_true
    return cal.softmax(logits)


def store_run(world: World, run: str, part: str, meta: dict | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    chosen = world.synapses[world.synapses["part"] == part]
    probabilities = overconfident_probabilities(chosen["true_idx"].to_numpy(), rng)
    meta = {"split_name": "skeleton", "split_part": part, "experiment": "exp",
            "train_number": 1, "predict_number": 0, "iteration": 10,
            "checkpoint": str(world.checkpoint), "classes": CLASSES, **(meta or {})}  # fmt: skip
    with open_database(world.url) as db:
        db.create_prediction_run(run, CLASSES, meta, overwrite=True)
        db.write_predictions(run, chosen["synapse_id"].to_numpy(), probabilities)
    return probabilities


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    base = tmp_path_factory.mktemp("calibrate")
    rng = np.random.default_rng(3)
    write_volume(base / "raw.zarr", rng.integers(0, 256, (8, 64, 64), dtype=np.uint8), VOXEL_NM)
    skeleton_of = np.repeat(np.arange(N_SKELETONS), SYNAPSES_PER_SKELETON)
    synapses = pd.DataFrame(
        {
            "synapse_id": np.arange(1, len(skeleton_of) + 1),
            "z": 160.0,
            "y": 128.0,
            "x": 128.0,
            "skeleton_id": skeleton_of,
        }
    )
    synapses["true_idx"] = skeleton_of % 3
    synapses["part"] = np.where(skeleton_of % 2 == 0, "validation", "test")
    skeletons = pd.DataFrame(
        {"skeleton_id": np.arange(N_SKELETONS),
         "nt_known": [[CLASSES[i % 3]] for i in range(N_SKELETONS)]}
    )  # fmt: skip
    url = f"sqlite:///{base / 'synister.db'}"
    with open_database(url) as db:
        db.import_records(synapses=synapses.drop(columns=["true_idx", "part"]), skeletons=skeletons)
        db.write_split("skeleton", synapses[["synapse_id", "part"]])
    setup = prepare_training(
        base, "exp", 1, synapse_types=CLASSES, input_shape=(8, 32, 32), fmaps=2,
        downsample_factors=[(1, 2, 2), (2, 2, 2)], network="ResNet18", db_url=url,
        split_name="skeleton", raw_container="raw.zarr", raw_dataset="raw",
        voxel_size=VOXEL_NM, num_cache_workers=1,
    )  # fmt: skip
    cfg, _ = load_train_setup(setup)
    checkpoint = save_checkpoint(setup / "model_checkpoint_10", build_model(cfg), None, 10)
    w = World(base, url, setup, checkpoint, synapses)
    store_run(w, "skeleton_exp_t1_p90", "validation", seed=1)
    store_run(w, "skeleton_exp_t1_p91", "test", seed=2)
    return w


def test_calibrate_stores_the_fitted_temperature_beside_the_checkpoint(world):
    calibration_path(world.checkpoint).unlink(missing_ok=True)
    assert checkpoint_temperature(world.checkpoint) is None
    result = CliRunner().invoke(
        app, ["calibrate", str(world.setup), "--validation-run", "skeleton_exp_t1_p90"]
    )
    assert result.exit_code == 0, result.output
    record = read_calibration(world.checkpoint)
    assert record["temperature"] == pytest.approx(TRUE_TEMPERATURE, rel=0.15)
    assert record["fitted_on"]["run"] == "skeleton_exp_t1_p90"
    assert record["fitted_on"]["synapses"] == N_SKELETONS // 2 * SYNAPSES_PER_SKELETON
    assert record["synapse"]["after"]["nll"] < record["synapse"]["before"]["nll"]
    assert record["synapse"]["after"]["ece"] < record["synapse"]["before"]["ece"]
    # a neuron's mean probability is no calibrated probability (it is less confident than its
    # call is right): it is measured, not fitted
    assert 0 < record["neuron"]["after"]["nll"] and record["neuron"]["after"]["n"] == 30
    assert record["unclear"]["thresholds"]["min_synapses"] >= 1
    # the class scaling of the calibrated-log neuron rule: here only the temperature is wrong
    scaling = record["class_scaling"]
    assert scaling["scales"] == pytest.approx([1 / TRUE_TEMPERATURE] * 3, rel=0.2)
    assert scaling["biases"][0] == 0.0 and scaling["biases"] == pytest.approx([0] * 3, abs=0.2)
    assert scaling["nll"] <= record["synapse"]["after"]["nll"] + 1e-3
    assert f"temperature {record['temperature']:.4g}" in result.output
    assert (
        "NLL before" in result.output and str(calibration_path(world.checkpoint)) in result.output
    )
    # the held-out test run gains too (same generating temperature)
    with open_database(world.url) as db:
        _, meta, labelled = labelled_run(db, "skeleton_exp_t1_p91")
    summary, neurons = calibration_summary(labelled, CLASSES, record["temperature"])
    assert summary["synapse"]["after"]["nll"] < summary["synapse"]["before"]["nll"]
    assert len(neurons) == N_SKELETONS // 2 and set(neurons["outcome"]) <= {*CLASSES, "unclear"}


def test_calibrate_json_and_a_run_predicted_with_a_temperature(world):
    """A run whose prediction applied T0 is turned back to raw probabilities first: the stored
    temperature is relative to the raw logits."""
    raw = store_run(world, "skeleton_exp_t1_p92", "validation", {"temperature": 4.0}, seed=1)
    tempered = cal.apply_temperature(raw, 4.0)
    assert np.allclose(raw_probabilities(tempered, {"temperature": 4.0}), raw, atol=1e-6)

    with open_database(world.url) as db:
        ids = world.synapses.loc[world.synapses["part"] == "validation", "synapse_id"].to_numpy()
        db.write_predictions("skeleton_exp_t1_p92", ids, tempered)
    result = CliRunner().invoke(
        app,
        ["calibrate", str(world.setup), "--validation-run", "skeleton_exp_t1_p92", "--json"],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["fitted_on"]["temperature_applied_by_run"] == 4.0
    assert record["temperature"] == pytest.approx(TRUE_TEMPERATURE, rel=0.15)


def test_a_run_of_the_weight_average_is_calibrated_beside_the_average(world):
    """``model_checkpoint_<N>.averaged`` (weight averaging) is a model of its own: its
    calibration goes beside it, not beside the checkpoint of the same iteration."""
    averaged = world.checkpoint.with_name(world.checkpoint.name + ".averaged")
    averaged.write_bytes(world.checkpoint.read_bytes())
    store_run(world, "skeleton_exp_t1_p95", "validation", {"checkpoint": str(averaged)}, seed=1)
    before = checkpoint_temperature(world.checkpoint)
    result = CliRunner().invoke(
        app, ["calibrate", str(world.setup), "--validation-run", "skeleton_exp_t1_p95"]
    )
    assert result.exit_code == 0, result.output
    assert read_calibration(averaged)["fitted_on"]["run"] == "skeleton_exp_t1_p95"
    assert checkpoint_temperature(world.checkpoint) == before
    averaged.unlink()
    calibration_path(averaged).unlink()


@pytest.mark.parametrize(
    ("run", "meta", "message"),
    [
        ("skeleton_exp_t1_p91", None, "predicts the test part"),
        ("no_such_run", None, "no prediction run 'no_such_run'.*stored: skeleton_exp"),
        ("skeleton_exp_t1_p93", {"iteration": 20}, "model_checkpoint_20 does not exist"),
        ("skeleton_exp_t1_p94", {"checkpoint": "/elsewhere/model_checkpoint_10"},
         "predicted with /elsewhere/model_checkpoint_10, not with"),
    ],
)  # fmt: skip
def test_calibrate_refuses_runs_it_must_not_use(world, run, meta, message):
    if meta is not None:
        store_run(world, run, "validation", meta)
    before = calibration_path(world.checkpoint).read_bytes() if calibration_path(
        world.checkpoint).exists() else None  # fmt: skip
    result = CliRunner().invoke(app, ["calibrate", str(world.setup), "--validation-run", run])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert re.search(message, result.output), result.output
    after = calibration_path(world.checkpoint).read_bytes() if calibration_path(
        world.checkpoint).exists() else None  # fmt: skip
    assert after == before  # nothing stored


def test_a_bad_calibration_file_names_the_file_and_key(tmp_path):
    checkpoint = tmp_path / "model_checkpoint_5"
    calibration_path(checkpoint).write_text('{"temperature": -1}')
    with pytest.raises(CalibrationError, match=r"model_checkpoint_5.calibration.json key "):
        checkpoint_temperature(checkpoint)
    calibration_path(checkpoint).write_text("{not json")
    with pytest.raises(CalibrationError, match="not a readable calibration file"):
        read_calibration(checkpoint)


def test_evaluation_of_a_test_run_uses_the_stored_calibration(world, tmp_path):
    from synister.evaluate.calibrate import evaluate_calibration
    from synister.evaluate.calibration_plots import draw_calibration_figures
    from synister.evaluate.calibration_report import calibration_section

    with open_database(world.url) as db:
        _, meta, labelled = labelled_run(db, "skeleton_exp_t1_p91")
    calibration_path(world.checkpoint).unlink(missing_ok=True)
    uncalibrated, _ = evaluate_calibration(labelled, CLASSES, meta, CalibrationOptions())
    assert uncalibrated["temperature"] is None and uncalibrated["synapse"]["after"] is None
    assert uncalibrated["neuron_calibrated_log"] is None
    assert uncalibrated["unclear"]["chosen_on"] == (
        "chosen on this run for 95% accuracy of the confident calls"
    )

    result = CliRunner().invoke(
        app, ["calibrate", str(world.setup), "--validation-run", "skeleton_exp_t1_p90"]
    )
    assert result.exit_code == 0, result.output
    record = read_calibration(world.checkpoint)
    summary, neurons = evaluate_calibration(labelled, CLASSES, meta, CalibrationOptions())
    assert summary["temperature"] == record["temperature"]
    assert "fitted on run skeleton_exp_t1_p90" in summary["temperature_source"]
    assert summary["unclear"]["thresholds"] == record["unclear"]["thresholds"]
    assert summary["unclear"]["chosen_on"].startswith(
        "chosen on validation run skeleton_exp_t1_p90"
    )
    assert summary["synapse"]["after"]["nll"] < summary["synapse"]["before"]["nll"]
    assert summary["synapse"]["after"]["ece"] < summary["synapse"]["before"]["ece"]
    confident = neurons["outcome"] != "unclear"
    assert confident.sum() == summary["unclear"]["n_confident"]

    # a temperature given explicitly wins
    given, _ = evaluate_calibration(
        labelled, CLASSES, meta, CalibrationOptions(temperature=1.0, unclear_min_synapses=26)
    )
    assert given["temperature"] == 1.0 and given["temperature_source"] == "given"
    assert given["synapse"]["after"]["nll"] == pytest.approx(given["synapse"]["before"]["nll"])
    # a threshold given replaces the chosen one; the others stay (every neuron has 25 synapses)
    assert (
        given["unclear"]["thresholds"]["min_synapses"] == 26
        and given["unclear"]["n_confident"] == 0
    )
    assert given["unclear"]["chosen_on"].startswith(
        "min_synapses given, the rest chosen on validation"
    )

    # a calibration stored by an earlier version, without a class scaling: no calibrated log
    from synister.models.calibration import write_calibration

    write_calibration(world.checkpoint, {k: v for k, v in record.items() if k != "class_scaling"})
    older, _ = evaluate_calibration(labelled, CLASSES, meta, CalibrationOptions())
    assert older["neuron_calibrated_log"] is None and older["temperature"] == record["temperature"]
    # a bad one is named, file and key
    write_calibration(world.checkpoint, {**record, "class_scaling": {"scales": [1.0, 1.0]}})
    with pytest.raises(ValueError, match=r"calibration.json key 'class_scaling': not a class"):
        evaluate_calibration(labelled, CLASSES, meta, CalibrationOptions())
    write_calibration(world.checkpoint, record)

    figures = draw_calibration_figures(summary, tmp_path, "skeleton_exp_t1_p91")
    assert len(figures) == 3
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in figures.values())
    html = calibration_section(summary, figures)
    assert "Unclear neuron calls" in html and f"{record['temperature']:.3f}" in html
    assert html.count("data:image/png;base64,") == 3


def test_prediction_applies_the_stored_temperature_and_says_so(world):
    """A test-part prediction after calibrate divides the logits by the temperature, records
    it in the run's meta and the command's output, and refuses to resume once it changed."""
    from synister.models.calibration import write_calibration
    from synister.predict import predict_setup
    from synister.setup import prepare_prediction

    [setup] = prepare_prediction(world.base, "exp", 1, [10], validation=False)
    calibration_path(world.checkpoint).unlink(missing_ok=True)
    raw = predict_setup(setup, progress=False, threads=1)
    assert raw["temperature"] is None
    with open_database(world.url) as db:
        raw_probs = db.predictions(raw["run"]).filter(like="prob_").to_numpy()
        assert db.open_prediction_run(raw["run"])[1]["temperature"] is None
        db.drop_prediction_run(raw["run"])

    write_calibration(world.checkpoint, {"temperature": 3.0})
    result = CliRunner().invoke(app, ["predict", str(setup), "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "logits divided by the model's temperature 3" in result.output
    with open_database(world.url) as db:
        _, meta = db.open_prediction_run(raw["run"])
        tempered = db.predictions(raw["run"]).filter(like="prob_").to_numpy()
    assert meta["temperature"] == 3.0
    assert np.allclose(tempered, cal.apply_temperature(raw_probs, 3.0), atol=1e-5)

    # an interrupted run of temperature 3 does not resume under another temperature
    with open_database(world.url) as db:
        kept = db.predictions(raw["run"]).iloc[:10]
        db.create_prediction_run(raw["run"], CLASSES, meta, overwrite=True)
        db.write_predictions(raw["run"], kept["synapse_id"].to_numpy(),
                             kept.filter(like="prob_").to_numpy())  # fmt: skip
    write_calibration(world.checkpoint, {"temperature": 2.0})
    with pytest.raises(Exception, match=r"temperature=3.0 \(now 2.0\)"):
        predict_setup(setup, progress=False, threads=1)
    calibration_path(world.checkpoint).unlink()


def test_calibrate_a_bundle_writes_its_temperature(world, tmp_path):
    from synister.evaluate.provenance import export_model
    from synister.models import load_model
    from synister.models.bundle import load_bundle

    bundle = export_model(world.setup, 10, tmp_path / "bundle")
    assert load_bundle(bundle).temperature is None
    result = CliRunner().invoke(
        app,
        ["calibrate", str(bundle), "--validation-run", "skeleton_exp_t1_p90", "--db", world.url],
    )
    assert result.exit_code == 0, result.output
    loaded = load_bundle(bundle)
    assert loaded.temperature == pytest.approx(TRUE_TEMPERATURE, rel=0.15)
    assert read_calibration(loaded.checkpoint)["temperature"] == loaded.temperature
    assert load_model(loaded.checkpoint).temperature == loaded.temperature
    assert "model.json (temperature)" in result.output

    # a run of another iteration is refused
    store_run(world, "skeleton_exp_t1_p95", "validation", {"iteration": 20, "checkpoint": None})
    result = CliRunner().invoke(
        app,
        ["calibrate", str(bundle), "--validation-run", "skeleton_exp_t1_p95", "--db", world.url],
    )
    assert result.exit_code == 1 and "holds iteration 10" in result.output


def test_evaluate_shows_calibration_unclear_neurons_and_the_risk_coverage_curve(world, tmp_path):
    result = CliRunner().invoke(
        app, ["calibrate", str(world.setup), "--validation-run", "skeleton_exp_t1_p90"]
    )
    assert result.exit_code == 0, result.output
    temperature = read_calibration(world.checkpoint)["temperature"]
    out = tmp_path / "evaluation"
    result = CliRunner().invoke(
        app,
        ["evaluate", "skeleton_exp_t1_p91", "--db", world.url, "--out", str(out),
],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"temperature {temperature:.3g}: synapse ECE" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    calibration = metrics["runs"]["skeleton_exp_t1_p91"]["calibration"]
    # neurons by the summed log-probability after the stored class scaling
    with open_database(world.url) as db:
        _, _, labelled = labelled_run(db, "skeleton_exp_t1_p91")
    scaling = ClassScaling.from_dict(read_calibration(world.checkpoint)["class_scaling"], "")
    ids, calls = neuron_calls(
        labelled["skeleton_id"].to_numpy(), labelled[[f"prob_{c}" for c in CLASSES]], scaling
    )
    calibrated_log = calibration["neuron_calibrated_log"]
    assert calibrated_log["accuracy"] == pytest.approx(np.mean(calls == ids % 3))
    assert calibrated_log["n_groups"] == N_SKELETONS // 2
    assert calibrated_log["fitted_on"] == "skeleton_exp_t1_p90"
    assert f"neurons by calibrated log {calibrated_log['accuracy']:.3f}" in result.output
    assert calibration["temperature"] == pytest.approx(temperature)
    assert calibration["synapse"]["after"]["ece"] < calibration["synapse"]["before"]["ece"]
    assert len(calibration["synapse"]["before"]["bins"]) == 15
    assert set(calibration["risk_coverage"]) == {"top-class mean probability", "margin"}
    run_dir = out / "skeleton_exp_t1_p91"
    unclear = pd.read_csv(run_dir / "neurons_unclear.csv")
    assert len(unclear) == N_SKELETONS // 2
    called = dict(zip(ids, calls, strict=True))
    assert list(unclear["calibrated_log"]) == [CLASSES[called[i]] for i in unclear["skeleton_id"]]
    assert (unclear["outcome"] == "unclear").sum() == calibration["unclear"]["n_unclear"]
    for png in ("reliability_synapse.png", "reliability_neuron.png", "risk_coverage_neuron.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "<h3>Calibration</h3>" in page and "Unclear neuron calls" in page
    assert "Neurons by calibrated log-probability" in page
    assert "accuracy of the confident calls versus coverage" in page

    # thresholds given on the command line replace the stored ones
    result = CliRunner().invoke(
        app,
        ["evaluate", "skeleton_exp_t1_p91", "--db", world.url, "--out", str(tmp_path / "e2"),
         "--unclear-min-probability", "1", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    given = json.loads(result.stdout)["runs"]["skeleton_exp_t1_p91"]["calibration"]["unclear"]
    assert given["thresholds"]["min_probability"] == 1.0 and given["n_confident"] == 0


def test_the_prediction_message_names_the_temperature():
    from synister.cli.predict import temperature_note

    assert temperature_note(None) == ""
    assert "logits divided by the model's temperature 1.5 " in temperature_note(1.5)
    assert "temperature is 1 (synister calibrate kept the raw softmax)" in temperature_note(1.0)


def test_the_report_says_when_the_run_applied_a_temperature(world):
    from synister.evaluate.calibrate import evaluate_calibration
    from synister.evaluate.calibration_report import calibration_section

    with open_database(world.url) as db:
        _, meta, labelled = labelled_run(db, "skeleton_exp_t1_p91")
    given = CalibrationOptions(temperature=1.5)
    for applied, said in ((2.0, True), (1.0, False), (None, False)):
        summary, _ = evaluate_calibration(
            labelled, CLASSES, {**meta, "temperature": applied}, given
        )
        html = calibration_section(summary, {})
        assert ("divided the logits by 2.000" in html) is said
        assert ("'raw' undoes that" in html) is said


def test_calls_that_cannot_reach_the_target_are_not_confident():
    """The README workflow at chance accuracy said "neurons 6 of 6 confident": thresholds that
    reach no target are no confidence. The most accurate choice is still reported."""
    rng = np.random.default_rng(0)
    skeletons = np.repeat(np.arange(6), 4)
    true_idx = skeletons % len(CLASSES)
    probabilities = np.full((len(skeletons), len(CLASSES)), 0.2)
    probabilities[np.arange(len(skeletons)), (true_idx + 1) % len(CLASSES)] = 0.6  # all wrong
    probabilities += rng.uniform(0, 0.01, probabilities.shape)
    labelled = pd.DataFrame(probabilities, columns=[f"prob_{c}" for c in CLASSES])
    labelled["true_idx"], labelled["skeleton_id"] = true_idx, skeletons
    summary, neurons = calibration_summary(labelled, CLASSES, None, target_accuracy=0.95)
    unclear = summary["unclear"]
    assert not unclear["reached"] and unclear["thresholds"]["target_missed"]
    assert (unclear["n_confident"], unclear["n_unclear"]) == (0, 6)
    assert unclear["closest"]["n_confident"] > 0  # what the most accurate thresholds gave
    assert not neurons["confident"].any() and set(neurons["outcome"]) == {"unclear"}
    # thresholds given on the command line are applied as given
    given = cal.UnclearThresholds(**{**unclear["thresholds"], "target_missed": False})
    assert given.confident(np.ones(2), np.ones(2), np.full(2, 100)).all()
