"""The demo's steps, one after the other, each picking up what a stopped demo left."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

from ..config import load_predict_setup
from ..db import PredictionRunExists, open_database
from ..db.imports import import_files
from ..evaluate import evaluate_runs
from ..evaluate.calibrate import calibrate, calibration_digest
from ..layout import averaged_path
from ..models import checkpoint_path, list_checkpoints
from ..predict import predict_setup
from ..setup import prepare_prediction, prepare_training, train_setup_dir
from ..splits import SplitRequest, make_split
from ..synthetic import generate, image_ceiling, oracle_accuracy
from ..train import train
from .budget import STATE_FILE, _say, _State, _train
from .settings import DemoSettings

EXPERIMENT = "demo"
SPLIT = "skeleton"
_CHOSEN_AFTER_TRAINING = frozenset({"final_weights", "checkpoint_rule"})


def _dataset(folder: Path, preset: str, settings: DemoSettings, sizes: dict) -> tuple:
    """Generate (unless there) ``folder/data`` and import it into ``folder/synister.db`` with a
    skeleton split (unless there); returns the generator's summary, the database URL and the
    synapse ids per split part."""
    data_dir = folder / "data"
    db_url = f"sqlite:///{folder / 'synister.db'}"
    if (data_dir / "summary.json").is_file():
        generated = json.loads((data_dir / "summary.json").read_text())
    else:
        _say(f"   generating the synthetic {preset!r} dataset in {data_dir}")
        generated = generate(data_dir, preset=preset, seed=settings.seed, **sizes)
    with open_database(db_url) as db:
        if SPLIT not in db.splits():
            _say(f"   importing it into {db_url} and making a skeleton split")
            tables = ("synapses.json", "skeletons.json", "hemi_lineages.json")
            import_files(db, [data_dir / f for f in tables])
            tolerance = settings.split_tolerance
            extra = {} if tolerance is None else {"tolerance": tolerance}
            make_split(db, SPLIT, SplitRequest(by="skeleton", seed=settings.seed, **extra))
        ids = {
            part: db.synapses(split=SPLIT, part=part)["synapse_id"].to_numpy()
            for part in ("train", "validation", "test")
        }
    return generated, db_url, ids


def _prepare(folder: Path, experiment: str, settings: DemoSettings, db_url, data_dir, generated,
             **extra):  # fmt: skip
    """The training setup ``folder/experiment/02_train/setup_t0`` (made unless there)."""
    setup = train_setup_dir(folder, experiment, 0)
    if setup.exists():
        return setup
    levels = len(settings.downsample_factors)
    return prepare_training(
        folder,
        experiment,
        0,
        db_url=db_url,
        split_name=SPLIT,
        raw_container=str(data_dir / generated["raw_container"]),
        raw_dataset=generated["raw_dataset"],
        input_shape=settings.input_shape,
        network=settings.network,
        fmaps=settings.fmaps,
        downsample_factors=list(settings.downsample_factors),
        fmap_inc=(2,) * levels,
        n_convolutions=settings.n_convolutions or (2,) * levels,
        classifier_units=settings.classifier_units,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_schedule=settings.lr_schedule,
        warmup_iterations=settings.warmup_iterations,
        label_smoothing=settings.label_smoothing,
        logit_adjustment=settings.logit_adjustment,
        channels_last=settings.channels_last,
        augment=settings.augment,
        ema_decay=settings.ema_decay,
        checkpoint_every=settings.checkpoint_every,
        snapshot_every=10**9,  # none: the demo shows reports, not batches
        seed=settings.seed,
        num_cache_workers=1,
        **extra,
    )


def _pretrain(out: Path, settings: DemoSettings, state: _State, device) -> Path | None:
    """The curriculum's first stage: the same network on ``pretrain_preset``; returns its last
    checkpoint (None without pretraining)."""
    n = settings.pretrain_iterations
    if not n:
        return None
    folder = out / "pretrain"
    sizes = {"shape_vox": settings.pretrain_shape_vox}
    generated, db_url, _ = _dataset(folder, settings.pretrain_preset, settings, sizes)
    stage = replace(
        settings, iterations=n, validation_checkpoints=1, logit_adjustment=False,
        warmup_iterations=min(settings.warmup_iterations, n // 10),
    )  # fmt: skip
    setup = _prepare(folder, "pretrain", stage, db_url, folder / "data", generated)
    _say(f"   pretraining on the {settings.pretrain_preset!r} preset for {n} iterations")
    t = time.perf_counter()
    result = train(setup, n, device=device)
    if not result["already_done"]:
        done = state.data.get("pretrain_seconds", 0.0) + time.perf_counter() - t
        state.data["pretrain_seconds"] = round(done, 2)
        state.save()
    return checkpoint_path(setup, n)


def _checkpoint(setup: Path, iteration: int, weights: str) -> Path:
    """The checkpoint file of ``iteration``: its raw weights or their average."""
    path = checkpoint_path(setup, iteration)
    return averaged_path(path) if weights == "averaged" else path


def _predict_part(out: Path, setup: Path, iteration: int, weights: str, part: str, device):
    """Predict ``part`` with the raw or averaged weights of ``iteration``; returns the run."""
    if weights == "averaged":
        source = {"checkpoint": _checkpoint(setup, iteration, weights)}
    else:
        source = {"iterations": [iteration]}
    (made,) = prepare_prediction(out, EXPERIMENT, 0, part=part, **source)
    _predict(made, device)
    return load_predict_setup(made)[0].run_name


def _predict(setup: Path, device) -> None:
    try:
        predict_setup(setup, device=device)
    except PredictionRunExists:  # a resumed demo predicted it already
        pass


def _ceilings(data_dir: Path, ids: dict) -> dict:
    """Oracle and image-level ceiling (fitted on the train part) of the validation and test
    parts."""
    out = {}
    for part in ("validation", "test"):
        oracle = oracle_accuracy(data_dir, ids[part])
        try:
            image = image_ceiling(data_dir, ids["train"], ids[part])
        except FileNotFoundError:
            image = None
        out[part] = {"oracle": oracle, "image_ceiling": image}
    return out


def _open_demo(out_dir: str | Path, settings: DemoSettings, resume: bool) -> tuple[Path, _State]:
    """The demo's folder and state; refuses an earlier demo unless resumed, and a resumed one
    of other settings."""
    out = Path(out_dir).resolve()
    if not resume and ((out / "summary.json").exists() or (out / "synister.db").exists()):
        raise FileExistsError(
            f"{out} holds an earlier demo; remove it, choose another --out or --resume it"
        )
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out / STATE_FILE)
    wanted = json.loads(json.dumps(asdict(settings)))
    defaults = json.loads(json.dumps(asdict(DemoSettings())))
    stored = state.data.setdefault("settings", wanted)
    # a setting newer than the stored demo must hold its default; the choice of the final
    # model acts after training, so a resumed demo may choose otherwise
    stored = {**{k: defaults[k] for k in wanted.keys() - stored.keys()}, **stored}
    if any(stored[k] != wanted[k] for k in wanted.keys() - _CHOSEN_AFTER_TRAINING):
        raise ValueError(f"{out} holds a demo with other settings ({out / STATE_FILE})")
    state.save()
    return out, state


def _dataset_and_training(out: Path, settings: DemoSettings, state: _State, device, lap):
    """Steps 1 and 2: the dataset, imported and split, and the trained setup; returns the
    generator's summary, the database URL, the ids per part, the setup and its iterations."""
    t = time.perf_counter()
    _say(f"1/6 the synthetic {settings.preset!r} dataset, imported and split by skeleton")
    sizes = {"shape_vox": settings.shape_vox, "n_synapses": settings.n_synapses}
    generated, db_url, ids = _dataset(out, settings.preset, settings, sizes)
    lap("dataset", t)

    t = time.perf_counter()
    budget = f"{settings.minutes:g} minutes" if settings.minutes else f"{settings.iterations} its"
    _say(f"2/6 training a {settings.network} ({settings.fmaps} feature maps) for {budget}")
    init = _pretrain(out, settings, state, device)
    extra = {"init_checkpoint": str(init)} if init else {}
    setup = _prepare(out, EXPERIMENT, settings, db_url, out / "data", generated, **extra)
    total = _train(setup, settings, state, device)
    lap("train", t)
    return generated, db_url, ids, setup, total


def train_demo(
    out_dir: str | Path = "demo_out",
    settings: DemoSettings = DemoSettings(),
    device: str | None = None,
    resume: bool = False,
) -> Path:
    """The demo's first two steps only (dataset and training); returns the training setup.

    For long runs that are evaluated otherwise (``benchmarks/bench_accuracy.py``);
    :func:`run_demo` with ``resume`` continues from there.
    """
    out, state = _open_demo(out_dir, settings, resume)
    return _dataset_and_training(out, settings, state, device, lambda step, t0: None)[3]


def run_demo(
    out_dir: str | Path = "demo_out",
    settings: DemoSettings = DemoSettings(),
    device: str | None = None,
    resume: bool = False,
) -> dict:
    """Run the whole workflow into ``out_dir`` and return (and write) ``summary.json``.

    ``resume`` continues a demo stopped part-way in the same folder (each step picks up what
    is there: the dataset, the split, the newest checkpoint, stored predictions).
    """
    start = time.perf_counter()
    out, state = _open_demo(out_dir, settings, resume)
    data_dir = out / "data"
    timings: dict[str, float] = {}

    def lap(step: str, t0: float) -> None:
        timings[step] = round(time.perf_counter() - t0, 1)

    generated, db_url, ids, setup, total = _dataset_and_training(out, settings, state, device, lap)

    t = time.perf_counter()
    # every checkpoint: the planned ones, and where a budget's warm-up or a stop left one
    iterations = [i for i, _ in list_checkpoints(setup) if i <= total]
    weights = settings.final_weights
    _say(f"3/6 predicting the validation part at iterations {iterations} ({weights} weights)")
    validation_runs = {i: _predict_part(out, setup, i, weights, "validation", device)
                       for i in iterations}  # fmt: skip
    lap("predict_validation", t)

    t = time.perf_counter()
    rule = settings.checkpoint_rule
    _say(f"4/6 evaluating the validation runs, choosing the final model ({rule}), calibrating it")
    with open_database(db_url) as db:  # only these: a resumed demo also holds the test run
        runs = list(validation_runs.values())
        validation = evaluate_runs(db, runs, out / "evaluation_validation", final_rule=rule)
        best_iteration = validation["final"]["iteration"]
        # the test run applies the calibration
        calibration = calibrate(db, setup, validation_runs[best_iteration])
    lap("evaluate_validation", t)

    t = time.perf_counter()
    _say(f"5/6 predicting the test part with iteration {best_iteration} ({weights} weights)")
    test_run = _predict_part(out, setup, best_iteration, weights, "test", device)
    with open_database(db_url) as db:
        test = evaluate_runs(db, [test_run], out / "evaluation_test")
    lap("predict_and_evaluate_test", t)

    _say("6/6 comparing with the oracle and the image-level ceiling of the generator")
    ceilings = _ceilings(data_dir, ids)
    metrics = test["runs"][test_run]
    times = state.data["train_seconds_at"]
    curve = [
        {
            "iteration": int(m["iteration"]),
            "train_seconds": times.get(str(m["iteration"])),
            "synapse": m["synapse"]["accuracy"],
            "synapse_balanced": m["synapse"].get("balanced_accuracy"),
            "neuron": m["neuron"]["vote"]["accuracy"],
            "neuron_mean_probability": m["neuron"]["mean"]["accuracy"],
            "load_average": state.data.get("load_average_at", {}).get(str(m["iteration"])),
        }
        for m in sorted(validation["runs"].values(), key=lambda m: m["iteration"])
    ]
    test_ceiling = ceilings["test"]
    summary = {
        "preset": settings.preset,
        "test_synapse_accuracy": metrics["synapse"]["accuracy"],
        "test_neuron_accuracy": metrics["neuron"]["vote"]["accuracy"],
        "test_neuron_accuracy_mean_probability": metrics["neuron"]["mean"]["accuracy"],
        # 95 % intervals and standard errors from resampling the test neurons
        "test_synapse_accuracy_ci": metrics["bootstrap"]["synapse"]["ci"],
        "test_synapse_accuracy_se": metrics["bootstrap"]["synapse"]["se"],
        "test_neuron_accuracy_ci": metrics["bootstrap"]["neuron_vote"]["ci"],
        "test_neuron_accuracy_mean_probability_ci": metrics["bootstrap"]["neuron_mean"]["ci"],
        **_calibrated_log(metrics["calibration"]),
        "oracle_synapse_accuracy": test_ceiling["oracle"]["synapse"],
        "oracle_neuron_accuracy": test_ceiling["oracle"]["neuron"],
        "image_ceiling_synapse_accuracy": _get(test_ceiling["image_ceiling"], "synapse"),
        "image_ceiling_neuron_accuracy": _get(test_ceiling["image_ceiling"], "neuron"),
        "best_iteration": best_iteration,
        "final_model": {
            "iteration": best_iteration,
            "weights": weights,
            "checkpoint_rule": rule,
            "checkpoint": str(_checkpoint(setup, best_iteration, weights)),
        },
        "iterations": total,
        "validation_accuracy_by_iteration": {str(p["iteration"]): p["synapse"] for p in curve},
        "validation_curve": curve,
        "ceilings": ceilings,
        "test_synapses": int(metrics["counts"]["labelled"]),
        "temperature": calibration["temperature"],
        "test_calibration": calibration_digest(metrics["calibration"]),
        "test_neurons": int(test_ceiling["oracle"]["n_neurons"]),
        "report": test["report"],
        "validation_report": validation["report"],
        "settings": asdict(settings),
        "step_seconds": timings,
        "train_seconds": max(times.values(), default=None),
        "pretrain_seconds": state.data.get("pretrain_seconds"),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _say(_closing_line(summary))
    _say(f"report: {summary['report']}")
    return summary


def _calibrated_log(calibration: dict | None) -> dict:
    """The test neuron accuracy by calibrated log-probability and its 95 % interval, where the
    final model's calibration holds a class scaling."""
    figure = (calibration or {}).get("neuron_calibrated_log")
    if not figure:
        return {}
    return {
        "test_neuron_accuracy_calibrated_log": figure["accuracy"],
        "test_neuron_accuracy_calibrated_log_ci": figure["ci"],
    }


def _get(acc: dict | None, key: str) -> float:
    return acc[key] if acc else math.nan


def _fraction(value: float, of: float) -> str:
    return f"{value / of:.0%}" if of and math.isfinite(of) else "n/a"


def _closing_line(s: dict) -> str:
    syn, neu = s["test_synapse_accuracy"], s["test_neuron_accuracy"]
    low, high = s["test_synapse_accuracy_ci"]
    model = s["final_model"]
    return (
        f"test accuracy: synapses {syn:.3f} (oracle {s['oracle_synapse_accuracy']:.3f}, "
        f"{_fraction(syn, s['oracle_synapse_accuracy'])} of it; image-level ceiling "
        f"{s['image_ceiling_synapse_accuracy']:.3f}, "
        f"{_fraction(syn, s['image_ceiling_synapse_accuracy'])}), neurons {neu:.3f} (oracle "
        f"{s['oracle_neuron_accuracy']:.3f}, image-level ceiling "
        f"{s['image_ceiling_neuron_accuracy']:.3f}); 95 % interval of the synapse accuracy "
        f"{low:.3f}-{high:.3f} (bootstrap over {s['test_neurons']} test neurons); final model: "
        f"{model['weights']} weights of iteration {model['iteration']} of {s['iterations']} "
        f"({model['checkpoint_rule']}); {s['wall_seconds']:.0f} s"
    )
