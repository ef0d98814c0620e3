"""The demo: its recipes make valid setups, and a tiny run goes through every step and resumes.

The real demo (minutes of training) is not run here; benchmarks and the README report it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from conftest import EASY_SHAPE_VOX
from typer.testing import CliRunner

from synister.cli import app
from synister.config import load_train_setup
from synister.demo import budget, checkpoint_spacing, planned_iterations, recipe, run_demo
from synister.models import build_model, list_checkpoints
from synister.setup import prepare_training
from synister.train import train


@pytest.mark.parametrize("preset", ["easy", "fafb"])
@pytest.mark.parametrize("network", ["resnet", "vgg"])
def test_recipes_make_a_setup_whose_network_classifies_a_batch(tmp_path, preset, network):
    s = recipe(preset, network)
    assert s.iterations % s.validation_checkpoints == 0  # the last checkpoint is the last step
    assert (s.minutes is None) == (preset == "easy")  # fafb trains for a wall-time budget
    setup = prepare_training(
        tmp_path,
        "demo",
        0,
        db_url=f"sqlite:///{tmp_path / 'x.db'}",
        split_name="skeleton",
        raw_container=str(tmp_path / "raw.zarr"),
        raw_dataset="raw",
        check_volume=False,  # no volume: only the network is built here
        input_shape=s.input_shape,
        network=s.network,
        fmaps=s.fmaps,
        downsample_factors=list(s.downsample_factors),
        n_convolutions=s.n_convolutions or (2,) * len(s.downsample_factors),
        fmap_inc=(2,) * len(s.downsample_factors),
        classifier_units=s.classifier_units,
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        lr_schedule=s.lr_schedule,
        warmup_iterations=s.warmup_iterations,
        augment=s.augment,
        checkpoint_every=s.checkpoint_every,
    )
    cfg, _ = load_train_setup(setup)
    assert tuple(cfg.input_shape) == s.input_shape and cfg.network == s.network
    assert cfg.lr_schedule == s.lr_schedule and cfg.classifier_units == s.classifier_units
    model = build_model(cfg).eval()
    with torch.no_grad():
        logits = model(torch.zeros(2, 1, *s.input_shape))
    assert logits.shape == (2, len(cfg.classes)) == (2, 6)
    if network == "vgg":  # small enough to train on a CPU
        assert sum(p.numel() for p in model.parameters()) < 2_000_000


def test_a_budget_or_a_length_replaces_the_recipes():
    assert recipe("fafb", "vgg", minutes=45).minutes == 45
    fixed = recipe("fafb", iterations=800, seed=3)
    assert (fixed.minutes, fixed.iterations, fixed.seed) == (None, 800, 3)
    assert recipe("easy", minutes=5).minutes == 5 and recipe("easy").minutes is None
    assert recipe("fafb", "vgg").classifier_units == 256  # a VGG that trains on a CPU


def test_the_demo_command_names_a_bad_preset_or_network():
    for option, message in (("--preset=hard", "presets easy and fafb"),
                            ("--network=unet", "network must be one of")):  # fmt: skip
        outcome = CliRunner().invoke(app, ["demo", option])
        assert outcome.exit_code == 1 and message in outcome.output


def test_the_final_model_settings_are_checked():
    with pytest.raises(ValueError, match="checkpoint_rule must be one of accuracy, nll"):
        replace(recipe("easy"), checkpoint_rule="best")
    with pytest.raises(ValueError, match="final_weights must be raw or averaged"):
        replace(recipe("easy"), final_weights="swa")
    with pytest.raises(ValueError, match="needs an ema_decay"):
        replace(recipe("easy"), ema_decay=0.0, final_weights="averaged")
    assert replace(recipe("easy"), ema_decay=0.0).checkpoint_rule == "margin"


def test_a_resumed_demo_may_choose_its_final_model_otherwise(tmp_path):
    from synister.demo.run import _open_demo

    settings = recipe("easy")
    _open_demo(tmp_path, settings, resume=False)
    state = json.loads((tmp_path / "demo_state.json").read_text())
    del state["settings"]["ema_decay"]  # a demo from before that setting: its default holds
    (tmp_path / "demo_state.json").write_text(json.dumps(state))
    _open_demo(tmp_path, replace(settings, checkpoint_rule="nll"), resume=True)
    for changed in (replace(settings, ema_decay=0.5), replace(settings, iterations=100)):
        with pytest.raises(ValueError, match="other settings"):
            _open_demo(tmp_path, changed, resume=True)


def test_unknown_recipes_are_refused():
    with pytest.raises(ValueError, match="presets easy and fafb"):
        recipe("hard")
    with pytest.raises(ValueError, match="network must be one of"):
        recipe("easy", "unet")


def test_the_budget_plan_follows_the_pace():
    # 600 s left at 0.5 s per iteration: 1,200 more, less the 10-iteration margin
    assert planned_iterations(1000, 400, done=300, seconds_per_iteration=0.5) == 300 + 1190
    # the machine got twice as slow: the plan shrinks accordingly
    assert planned_iterations(1000, 400, done=300, seconds_per_iteration=1.0) == 300 + 590
    # the budget is spent: one more iteration, never fewer than done
    assert planned_iterations(1000, 1200, done=300, seconds_per_iteration=0.5) == 301


def test_a_new_plan_keeps_the_validation_checkpoints_it_had_left():
    # 10 checkpoints planned over 21,090 iterations; at 4,218 the plan shrinks to 8,674: the 8
    # checkpoints still to come spread over what is left instead of 2 at the old spacing
    assert checkpoint_spacing(total=21090, every=2109, done=4218, planned=8674) == 557
    # the plan grows: the 3 checkpoints left move apart rather than more being added
    assert checkpoint_spacing(total=4000, every=1000, done=1000, planned=7000) == 2000
    assert checkpoint_spacing(total=100, every=10, done=95, planned=96) == 1
    # a 3 % shorter plan at 6,402 of 23,773 (every 2,134): 8 checkpoints to come, not 9 (a run
    # that re-planned like this after every stretch checkpointed ever more often)
    assert checkpoint_spacing(total=23773, every=2134, done=6402, planned=23032) == 2079


class SlowingMachine:
    """The demo's clock on a simulated machine: training takes 1 s per iteration, then 2 s from
    the 17th on (the machine got slower), at any real pace; nothing else takes time."""

    def __init__(self):
        self.now, self.trained = 0.0, 0

    def perf_counter(self) -> float:
        return self.now

    def training(self, train):
        """``train`` on this machine: the time of the iterations to come passes as it starts."""

        def run(setup, iterations, **options):
            done = max((i for i, _ in list_checkpoints(setup)), default=0)
            for _ in range(done, iterations):
                self.trained += 1
                self.now += 1.0 if self.trained <= 16 else 2.0
            return train(setup, iterations, **options)

        return run


@pytest.mark.slow
def test_a_tiny_budgeted_demo_runs_every_step_and_resumes(tmp_path, easy_dataset, monkeypatch):
    machine = SlowingMachine()
    for module in ("run", "budget"):
        monkeypatch.setattr(f"synister.demo.{module}.time", machine)
        monkeypatch.setattr(f"synister.demo.{module}.train", machine.training(train))
    logged_pace = budget._steady_seconds_per_iteration

    def warm_up_pace(setup, batch_size):
        logged_pace(setup, batch_size)  # read as the demo reads it; the machine's pace is 1 s
        return 1.0

    monkeypatch.setattr(budget, "_steady_seconds_per_iteration", warm_up_pace)
    settings = replace(
        recipe("easy"),
        pretrain_iterations=6,  # the curriculum of the fafb recipe, on the easy preset twice
        pretrain_shape_vox=EASY_SHAPE_VOX,
        shape_vox=(32, 512, 512),
        n_synapses=100,
        split_tolerance=0.3,
        input_shape=(4, 32, 32),
        downsample_factors=((1, 2, 2), (1, 2, 2), (2, 2, 2)),
        fmaps=2,
        batch_size=4,
        minutes=1,  # of the machine's time
        probe_iterations=10,
        validation_checkpoints=2,
        warmup_iterations=4,
        final_weights="averaged",  # not the default: the weight average's whole way
        checkpoint_rule="last",
    )
    # the pretraining's dataset is there already (a demo resumed after its generation)
    shutil.copytree(easy_dataset, tmp_path / "demo" / "pretrain" / "data")
    summary = run_demo(tmp_path / "demo", settings)
    # 16 s of warm-up leave 60 - 16 - 10 s (margin) for 34 more iterations: 44 planned, a
    # validation checkpoint at 22; from there 2 s each: only one more iteration fits
    assert summary["iterations"] == 23
    curve = summary["validation_curve"]
    assert [point["iteration"] for point in curve] == [10, 22, 23]
    assert len(curve) >= 2 and curve[-1]["iteration"] == summary["iterations"]
    assert all(point["train_seconds"] > summary["pretrain_seconds"] > 0 for point in curve)
    pretrained = tmp_path / "demo" / "pretrain" / "pretrain" / "02_train" / "setup_t0"
    assert [i for i, _ in list_checkpoints(pretrained)] == [6]
    assert summary["best_iteration"] in {p["iteration"] for p in curve}
    # the final model: the weight average of the last checkpoint, and its test accuracy's
    # interval from resampling the test neurons
    model = summary["final_model"]
    assert (model["weights"], model["checkpoint_rule"]) == ("averaged", "last")
    assert model["iteration"] == summary["best_iteration"] == summary["iterations"]
    assert model["checkpoint"].endswith(f"model_checkpoint_{summary['iterations']}.averaged")
    low, high = summary["test_synapse_accuracy_ci"]
    assert low <= summary["test_synapse_accuracy"] <= high
    assert summary["test_synapse_accuracy_se"] >= 0
    for key in (
        "oracle_synapse_accuracy",
        "image_ceiling_synapse_accuracy",
        "test_synapse_accuracy",
    ):
        assert 0 <= summary[key] <= 1
    state = json.loads((tmp_path / "demo" / "demo_state.json").read_text())
    cfg, _ = load_train_setup(tmp_path / "demo" / "demo" / "02_train" / "setup_t0")
    assert cfg.schedule_iterations == state["iterations"] == summary["iterations"]
    assert cfg.init_checkpoint == str(pretrained / "model_checkpoint_6")

    with pytest.raises(FileExistsError, match="--resume"):
        run_demo(tmp_path / "demo", settings)
    again = run_demo(tmp_path / "demo", settings, resume=True)  # nothing left to do but report
    assert again["iterations"] == summary["iterations"]
    assert again["test_synapse_accuracy"] == summary["test_synapse_accuracy"]
    with pytest.raises(ValueError, match="other settings"):
        run_demo(tmp_path / "demo", replace(settings, fmaps=4), resume=True)
