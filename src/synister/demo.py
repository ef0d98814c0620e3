"""The one-command demo: the whole seed workflow on the synthetic ``easy`` preset, on CPU.

generate -> import into SQLite -> skeleton split -> prepare-training -> train ->
prepare-prediction on validation for several iterations -> predict -> evaluate -> pick the best
iteration and calibrate it (temperature, unclear thresholds) -> predict the test part -> evaluate
-> compare with the generator's Bayes oracle.
Every step is the same code the ``synister`` commands run; the demo only chooses small settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .db import open_database
from .db.imports import import_files
from .evaluate import evaluate_runs
from .evaluate.calibrate import calibrate, calibration_digest
from .predict import predict_setup
from .setup import prepare_prediction, prepare_training
from .splits import SplitRequest, make_split
from .synthetic import generate, oracle_accuracy
from .train import train

EXPERIMENT = "demo"
SPLIT = "skeleton"


@dataclass(frozen=True)
class DemoSettings:
    """Small enough for 2 CPU cores in a few minutes, large enough to learn the easy preset.

    A 48x48 voxel field (192 nm) holds one easy synapse and little of its lattice neighbours
    (224 nm apart), whose other classes would otherwise blur the label. The ResNet (0.5 M
    weights) trains a 16-patch batch in ~0.22 s of one core; the VGG's two 4096-wide layers
    (34 M weights at 8x64x64) cost ~0.33 s for half that batch.
    """

    seed: int = 0
    iterations: int = 1600
    validation_checkpoints: int = 4
    input_shape: tuple[int, int, int] = (8, 48, 48)  # voxels z,y,x
    network: str = "ResNet18"
    fmaps: int = 8
    downsample_factors: tuple[tuple[int, int, int], ...] = (
        (1, 2, 2),
        (1, 2, 2),
        (2, 2, 2),
        (2, 2, 2),
    )
    batch_size: int = 16
    learning_rate: float = 2e-3
    augment: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.validation_checkpoints <= self.iterations:
            raise ValueError(
                f"validation_checkpoints must lie in 1..iterations ({self.iterations}), "
                f"got {self.validation_checkpoints}"
            )

    @property
    def checkpoint_every(self) -> int:
        return self.iterations // self.validation_checkpoints


def _say(message: str) -> None:
    print(f"[synister demo] {message}", flush=True)


def run_demo(
    out_dir: str | Path = "demo_out",
    settings: DemoSettings = DemoSettings(),
    device: str | None = None,
) -> dict:
    """Run the whole workflow into ``out_dir`` and return (and write) ``summary.json``."""
    start = time.perf_counter()
    out = Path(out_dir).resolve()
    if (out / "summary.json").exists() or (out / "synister.db").exists():
        raise FileExistsError(f"{out} holds an earlier demo; remove it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    db_url = f"sqlite:///{out / 'synister.db'}"
    timings: dict[str, float] = {}

    def lap(step: str, t0: float) -> None:
        timings[step] = round(time.perf_counter() - t0, 1)

    t = time.perf_counter()
    _say(f"1/7 generating the synthetic 'easy' dataset in {data_dir}")
    generated = generate(data_dir, preset="easy", seed=settings.seed)
    lap("generate", t)

    t = time.perf_counter()
    _say(f"2/7 importing it into {db_url} and making a skeleton split")
    with open_database(db_url) as db:
        import_files(
            db, [data_dir / f for f in ("synapses.json", "skeletons.json", "hemi_lineages.json")]
        )
        make_split(db, SPLIT, SplitRequest(by="skeleton", seed=settings.seed))
    lap("import_and_split", t)

    t = time.perf_counter()
    _say(f"3/7 training a small {settings.network} for {settings.iterations} iterations")
    setup = prepare_training(
        out,
        EXPERIMENT,
        0,
        db_url=db_url,
        split_name=SPLIT,
        raw_container=str(data_dir / generated["raw_container"]),
        raw_dataset=generated["raw_dataset"],
        input_shape=settings.input_shape,
        network=settings.network,
        fmaps=settings.fmaps,
        downsample_factors=list(settings.downsample_factors),
        fmap_inc=(2,) * len(settings.downsample_factors),
        n_convolutions=(2,) * len(settings.downsample_factors),
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        augment=settings.augment,
        checkpoint_every=settings.checkpoint_every,
        snapshot_every=settings.iterations,
        seed=settings.seed,
        num_cache_workers=1,
    )
    train(setup, settings.iterations, device=device)
    lap("train", t)

    t = time.perf_counter()
    iterations = list(
        range(settings.checkpoint_every, settings.iterations + 1, settings.checkpoint_every)
    )
    _say(f"4/7 predicting the validation part at iterations {iterations}")
    validation_setups = prepare_prediction(out, EXPERIMENT, 0, iterations, validation=True)
    for s in validation_setups:
        predict_setup(s, device=device)
    lap("predict_validation", t)

    t = time.perf_counter()
    _say("5/7 evaluating the validation runs, choosing the best iteration and calibrating it")
    with open_database(db_url) as db:
        validation_runs = sorted(r for r in db.prediction_runs() if r.startswith(f"{SPLIT}_"))
        validation = evaluate_runs(db, validation_runs, out / "evaluation_validation")
        calibration = calibrate(db, setup, validation["best"]["run"])  # the test run applies it
    best_iteration = int(validation["best"]["iteration"])
    lap("evaluate_validation", t)

    t = time.perf_counter()
    _say(f"6/7 predicting the test part with iteration {best_iteration}")
    (test_setup,) = prepare_prediction(out, EXPERIMENT, 0, [best_iteration], validation=False)
    test_run = predict_setup(test_setup, device=device)["run"]
    with open_database(db_url) as db:
        test = evaluate_runs(db, [test_run], out / "evaluation_test")
        test_ids = db.synapses(split=SPLIT, part="test")["synapse_id"].to_numpy()
    lap("predict_and_evaluate_test", t)

    _say("7/7 comparing with the Bayes oracle of the generator")
    oracle = oracle_accuracy(data_dir, test_ids)
    metrics = test["runs"][test_run]
    summary = {
        "test_synapse_accuracy": metrics["synapse"]["accuracy"],
        "test_neuron_accuracy": metrics["neuron"]["vote"]["accuracy"],
        "test_neuron_accuracy_mean_probability": metrics["neuron"]["mean"]["accuracy"],
        "oracle_synapse_accuracy": oracle["synapse"],
        "oracle_neuron_accuracy": oracle["neuron"],
        "best_iteration": best_iteration,
        "validation_accuracy_by_iteration": {
            str(m["iteration"]): m["synapse"]["accuracy"] for m in validation["runs"].values()
        },
        "test_synapses": int(metrics["counts"]["labelled"]),
        "temperature": calibration["temperature"],
        "test_calibration": calibration_digest(metrics["calibration"]),
        "report": test["report"],
        "validation_report": validation["report"],
        "settings": asdict(settings),
        "step_seconds": timings,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    ratio = summary["test_synapse_accuracy"] / summary["oracle_synapse_accuracy"]
    _say(
        f"test accuracy: synapses {summary['test_synapse_accuracy']:.3f} "
        f"(oracle {summary['oracle_synapse_accuracy']:.3f}, {ratio:.0%} of it), "
        f"neurons {summary['test_neuron_accuracy']:.3f} "
        f"(oracle {summary['oracle_neuron_accuracy']:.3f}); best iteration {best_iteration}; "
        f"{summary['wall_seconds']:.0f} s"
    )
    _say(f"report: {summary['report']}")
    return summary
