"""The one-command demo: the whole seed workflow on a synthetic preset, on CPU.

generate -> import into SQLite -> skeleton split -> prepare-training -> train ->
prepare-prediction on validation for several iterations -> predict -> evaluate -> pick the best
iteration and calibrate it (temperature, unclear thresholds) -> predict the test part ->
evaluate -> compare with the generator's two ceilings: the Bayes oracle of the latent features
and the image-level ceiling (the same classifier of features measured back from the images).
Every step is the same code the ``synister`` commands run; the demo only chooses settings
(:func:`recipe`). With ``minutes`` the training iterations come from a timed warm-up, and
``resume`` continues a demo that was stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .config import TRAIN_FILE, TrainConfig, load_predict_setup, read_ini, write_ini
from .db import PredictionRunExists, open_database
from .db.imports import import_files
from .evaluate import evaluate_runs
from .evaluate.calibrate import calibrate, calibration_digest
from .models import checkpoint_path, list_checkpoints
from .predict import predict_setup
from .setup import prepare_prediction, prepare_training, train_setup_dir
from .splits import SplitRequest, make_split
from .synthetic import generate, image_ceiling, oracle_accuracy
from .train import read_scalars, train

EXPERIMENT = "demo"
SPLIT = "skeleton"
STATE_FILE = "demo_state.json"
NETWORKS = {"resnet": "ResNet18", "vgg": "VGG"}


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo chooses: the dataset, the network, the training schedule.

    ``minutes`` (when set) is the training's wall-time budget, pretraining included:
    ``probe_iterations`` are trained and timed, the iterations planned to fit the budget at that
    pace, and the plan follows the pace after each checkpoint (``iterations`` is then unused).
    """

    preset: str = "easy"
    seed: int = 0
    iterations: int = 2400
    minutes: float | None = None
    probe_iterations: int = 60
    validation_checkpoints: int = 4
    shape_vox: tuple[int, int, int] | None = None  # dataset volume (None: the preset's)
    n_synapses: int | None = None  # None: the preset's default, capped to fit
    split_tolerance: float | None = None  # None: the split's default
    input_shape: tuple[int, int, int] = (8, 48, 48)  # voxels z,y,x
    network: str = "ResNet18"
    fmaps: int = 8
    downsample_factors: tuple[tuple[int, int, int], ...] = (
        (1, 2, 2),
        (1, 2, 2),
        (2, 2, 2),
        (2, 2, 2),
    )
    n_convolutions: tuple[int, ...] | None = None  # VGG: per level (None: 2 each)
    classifier_units: int = 4096  # VGG only
    batch_size: int = 16
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"
    warmup_iterations: int = 100
    label_smoothing: float = 0.0
    logit_adjustment: bool = False  # decisions for the train part's class frequencies
    channels_last: bool = True
    augment: bool = True
    # a curriculum: first this many iterations on the (default-sized) ``pretrain_preset``
    pretrain_preset: str = "easy"
    pretrain_iterations: int = 0
    pretrain_shape_vox: tuple[int, int, int] | None = None  # None: the preset's

    def __post_init__(self) -> None:
        if not 1 <= self.validation_checkpoints <= self.iterations:
            raise ValueError(
                f"validation_checkpoints must lie in 1..iterations ({self.iterations}), "
                f"got {self.validation_checkpoints}"
            )
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")

    @property
    def checkpoint_every(self) -> int:
        return self.iterations // self.validation_checkpoints


#: A small VGG for CPUs: three levels, narrow classifier (the funlib default, 4096 units, alone
#: holds 34 M weights at 8x64x64).
_SMALL_VGG = {
    "network": "VGG",
    "downsample_factors": ((1, 2, 2), (1, 2, 2), (2, 2, 2)),
    "classifier_units": 256,
    "learning_rate": 1e-3,
}
#: Changes to :class:`DemoSettings` per (preset, network).
RECIPES: dict[tuple[str, str], dict] = {
    ("easy", "resnet"): {},
    ("easy", "vgg"): {**_SMALL_VGG, "n_convolutions": (1, 1, 1)},
    ("fafb", "resnet"): {
        "preset": "fafb",
        "minutes": 30.0,
        "iterations": 6000,  # replaced by what the budget allows
        "validation_checkpoints": 6,
        "logit_adjustment": True,
        "warmup_iterations": 200,
        "pretrain_iterations": 1000,
        "split_tolerance": 0.15,  # 4-neuron classes miss the default 0.05 by up to 0.07
    },
}
RECIPES[("fafb", "vgg")] = {
    **RECIPES[("fafb", "resnet")],
    **_SMALL_VGG,
    "n_convolutions": (2, 2, 2),
}


def recipe(
    preset: str = "easy",
    network: str = "resnet",
    *,
    seed: int = 0,
    minutes: float | None = None,
    iterations: int | None = None,
) -> DemoSettings:
    """The demo's settings for a preset and a network (``resnet`` or ``vgg``); ``minutes``
    (a wall-time budget) or ``iterations`` (a fixed length, no budget) replace the recipe's.

    ``easy``: a 48x48 voxel field (192 nm) holds one easy synapse and little of its lattice
    neighbours (224 nm apart), whose other classes would otherwise blur the label; a ResNet-18
    of 8 feature maps (0.5 M weights) trains a 16-patch batch in ~0.2 s of one core.
    ``fafb``: the same network first learns the easy preset (whose classes differ at a glance)
    and then the fafb preset, where training from scratch stayed at chance for 1,500 iterations;
    its decisions follow the training part's class frequencies (logit adjustment). The README's
    accuracy section has the measurements behind these choices.
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    if preset not in {p for p, _ in RECIPES}:
        raise ValueError(f"the demo knows presets easy and fafb, got {preset!r}")
    settings = replace(DemoSettings(), **RECIPES[(preset, network)], seed=seed)
    if iterations:
        settings = replace(settings, iterations=iterations, minutes=None)
    if minutes:
        settings = replace(settings, minutes=minutes)
    return settings


def _say(message: str) -> None:
    print(f"[synister demo] {message}", flush=True)


class _State:
    """What a resumed demo must not redo or forget: planned iterations, checkpoint times."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}
        self.data.setdefault("train_seconds_at", {})

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def _steady_seconds_per_iteration(setup: Path, batch_size: int) -> float:
    """Seconds per iteration from the logged samples/s, leaving out the first interval (the
    loader's start)."""
    rates = read_scalars(setup / "log")["samples_per_s"]["value"].to_numpy()
    steady = rates[1:] if len(rates) > 1 else rates
    return batch_size / float(sorted(steady)[len(steady) // 2])


def _set_schedule(setup: Path, iterations: int, checkpoint_every: int) -> None:
    """Write the planned length into the setup's config, so that resuming keeps the schedule."""
    cfg = read_ini(setup / TRAIN_FILE, TrainConfig)
    cfg = cfg.model_copy(
        update={"schedule_iterations": iterations, "checkpoint_every": checkpoint_every}
    )
    write_ini(cfg, setup / TRAIN_FILE, "synister demo: schedule_iterations and checkpoint_every "
              "follow the timed warm-up")  # fmt: skip


def planned_iterations(
    budget_seconds: float, elapsed_seconds: float, done: int, seconds_per_iteration: float
) -> int:
    """The iteration a budgeted training should stop at: what the time left holds at the
    given pace, less a margin of 10 iterations (the last checkpoint's save); at least one
    more than ``done``."""
    left = budget_seconds - elapsed_seconds - 10 * seconds_per_iteration
    return max(done + 1, done + int(left / seconds_per_iteration))


def checkpoint_spacing(total: int, every: int, done: int, planned: int) -> int:
    """Checkpoint spacing after the plan changed from ``total`` to ``planned`` iterations at
    ``done``: the validation checkpoints the old plan had left spread over the new rest.

    A short last stretch does not count as one more checkpoint: a plan that shrinks a little
    after every stretch would otherwise keep as many checkpoints ahead as before it.
    """
    left = max(1, round((total - done) / every))
    return max(1, math.ceil((planned - done) / left))


def _train(setup: Path, settings: DemoSettings, state: _State, device) -> int:
    """Train to the planned iteration; returns it.

    With a wall-time budget (``minutes``), a timed warm-up plans the iterations, and after
    every checkpoint the plan (and with it the learning-rate schedule's length) follows the
    pace of the last stretch, so that a machine whose load changes still fills the budget.
    Checkpoint times count the whole training, pretraining included.
    """
    times = state.data["train_seconds_at"]
    spent = max(times.values(), default=state.data.get("pretrain_seconds", 0.0))
    start = time.perf_counter()

    def elapsed() -> float:
        return spent + time.perf_counter() - start

    def on_checkpoint(iteration: int, path: Path) -> None:
        times[str(iteration)] = round(elapsed(), 2)
        # the machine's load, to judge the pace of a long run on shared cores
        state.data.setdefault("load_average_at", {})[str(iteration)] = os.getloadavg()[0]
        state.save()

    def plan(done: int, seconds_per_iteration: float) -> int:
        return planned_iterations(settings.minutes * 60, elapsed(), done, seconds_per_iteration)

    if settings.minutes is None:
        total = state.data.get("iterations", settings.iterations)
        if "iterations" not in state.data:
            state.data.update(iterations=total, checkpoint_every=settings.checkpoint_every)
            state.save()
        train(setup, total, device=device, on_checkpoint=on_checkpoint)
        return total
    if "iterations" not in state.data:
        probe = settings.probe_iterations
        train(setup, probe, device=device, on_checkpoint=on_checkpoint)
        pace = _steady_seconds_per_iteration(setup, settings.batch_size)
        total = max(probe + settings.validation_checkpoints, plan(probe, pace))
        _say(f"   warm-up: {pace:.3f} s per iteration; {total} iterations fit the budget")
        every = max(1, total // settings.validation_checkpoints)
        state.data.update(iterations=total, checkpoint_every=every)
        state.save()
        _set_schedule(setup, total, every)
    while True:
        total, every = state.data["iterations"], state.data["checkpoint_every"]
        done = max((i for i, _ in list_checkpoints(setup)), default=0)
        if done >= total:
            return total
        target = min(total, (done // every + 1) * every)
        t = time.perf_counter()
        train(setup, target, device=device, on_checkpoint=on_checkpoint)
        pace = (time.perf_counter() - t) / max(target - done, 1)
        if target < total:  # follow the pace of this stretch
            planned = plan(target, pace)
            if abs(planned - total) > 0.02 * total:
                every = checkpoint_spacing(total, every, target, planned)
                _say(
                    f"   {pace:.3f} s per iteration lately: now {planned} iterations, "
                    f"a checkpoint every {every}"
                )
                state.data.update(iterations=planned, checkpoint_every=every)
                state.save()
                _set_schedule(setup, planned, every)


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
    out = Path(out_dir).resolve()
    if not resume and ((out / "summary.json").exists() or (out / "synister.db").exists()):
        raise FileExistsError(
            f"{out} holds an earlier demo; remove it, choose another --out or --resume it"
        )
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out / STATE_FILE)
    wanted = json.loads(json.dumps(asdict(settings)))
    if state.data.setdefault("settings", wanted) != wanted:
        raise ValueError(f"{out} holds a demo with other settings ({out / STATE_FILE})")
    state.save()
    data_dir = out / "data"
    timings: dict[str, float] = {}

    def lap(step: str, t0: float) -> None:
        timings[step] = round(time.perf_counter() - t0, 1)

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
    setup = _prepare(out, EXPERIMENT, settings, db_url, data_dir, generated, **extra)
    total = _train(setup, settings, state, device)
    lap("train", t)

    t = time.perf_counter()
    # every checkpoint: the planned ones, and where a budget's warm-up or a stop left one
    iterations = [i for i, _ in list_checkpoints(setup) if i <= total]
    _say(f"3/6 predicting the validation part at iterations {iterations}")
    validation_runs = []
    for s in prepare_prediction(out, EXPERIMENT, 0, iterations, validation=True):
        _predict(s, device)
        validation_runs.append(load_predict_setup(s)[0].run_name)
    lap("predict_validation", t)

    t = time.perf_counter()
    _say("4/6 evaluating the validation runs, choosing the best iteration and calibrating it")
    with open_database(db_url) as db:  # only these: a resumed demo also holds the test run
        validation = evaluate_runs(db, validation_runs, out / "evaluation_validation")
        calibration = calibrate(db, setup, validation["best"]["run"])  # the test run applies it
    best_iteration = int(validation["best"]["iteration"])
    lap("evaluate_validation", t)

    t = time.perf_counter()
    _say(f"5/6 predicting the test part with iteration {best_iteration}")
    (test_setup,) = prepare_prediction(out, EXPERIMENT, 0, [best_iteration], validation=False)
    _predict(test_setup, device)
    test_run = load_predict_setup(test_setup)[0].run_name
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
        "oracle_synapse_accuracy": test_ceiling["oracle"]["synapse"],
        "oracle_neuron_accuracy": test_ceiling["oracle"]["neuron"],
        "image_ceiling_synapse_accuracy": _get(test_ceiling["image_ceiling"], "synapse"),
        "image_ceiling_neuron_accuracy": _get(test_ceiling["image_ceiling"], "neuron"),
        "best_iteration": best_iteration,
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


def _get(acc: dict | None, key: str) -> float:
    return acc[key] if acc else math.nan


def _fraction(value: float, of: float) -> str:
    return f"{value / of:.0%}" if of and math.isfinite(of) else "n/a"


def _closing_line(s: dict) -> str:
    syn, neu = s["test_synapse_accuracy"], s["test_neuron_accuracy"]
    return (
        f"test accuracy: synapses {syn:.3f} (oracle {s['oracle_synapse_accuracy']:.3f}, "
        f"{_fraction(syn, s['oracle_synapse_accuracy'])} of it; image-level ceiling "
        f"{s['image_ceiling_synapse_accuracy']:.3f}, "
        f"{_fraction(syn, s['image_ceiling_synapse_accuracy'])}), neurons {neu:.3f} (oracle "
        f"{s['oracle_neuron_accuracy']:.3f}, image-level ceiling "
        f"{s['image_ceiling_neuron_accuracy']:.3f}); best iteration {s['best_iteration']} of "
        f"{s['iterations']}; {s['wall_seconds']:.0f} s"
    )
