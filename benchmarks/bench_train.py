"""Training speed and the demo network's learning, on this machine.

``python benchmarks/bench_train.py speed``: samples/s of forward + backward + Adam step for the
FAFB-sized VGG (16x160x160, batch 8) and the small demo network, on random input (no data
loading), so the figure is the network's alone.

``python benchmarks/bench_train.py formats``: training steps of the demo's networks with
activations in torch's default layout against channels-last (``channels_last`` in the training
config), in interleaved rounds, one torch thread.

``python benchmarks/bench_train.py demo WORKDIR``: the one-command demo's training on the
synthetic ``easy`` preset: make the dataset, import it, split by skeleton, prepare and train,
then report synapse accuracy on the held-out (validation) neurons against the Bayes oracle,
and write the loss-curve PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from synister.models import Vgg3D
from synister.train.setup_run import make_optimizer

FAFB_NETWORK = {
    "input_size": (16, 160, 160),
    "fmaps": 12,
    "downsample_factors": ((1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)),
    "fmap_inc": (2, 2, 2, 2),
    "n_convolutions": (2, 2, 2, 2),
    "batch_size": 8,
}
DEMO_NETWORK = {
    "input_size": (8, 48, 48),
    "fmaps": 4,
    "downsample_factors": ((1, 2, 2), (1, 2, 2), (2, 2, 2)),
    "fmap_inc": (2, 2, 2),
    "n_convolutions": (1, 1, 1),
    "batch_size": 8,
}


def training_samples_per_s(network: dict, iterations: int, warmup: int = 1) -> dict:
    """Median samples/s of full training steps on random input."""
    torch.manual_seed(0)
    spec = dict(network)
    batch_size = spec.pop("batch_size")
    model = Vgg3D(output_classes=6, **spec)
    optimizer = make_optimizer(model, 1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    raw = torch.rand(batch_size, 1, *spec["input_size"]) * 2 - 1
    labels = torch.randint(0, 6, (batch_size,))
    step_s = []
    for i in range(warmup + iterations):
        start = time.perf_counter()
        loss = loss_fn(model(raw), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            step_s.append(time.perf_counter() - start)
    median = float(np.median(step_s))
    return {
        "input_shape_vox": list(spec["input_size"]),
        "batch_size": batch_size,
        "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "step_s_median": round(median, 3),
        "samples_per_s": round(batch_size / median, 2),
        "torch_threads": torch.get_num_threads(),
    }


def speed(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {
        "fafb_vgg": training_samples_per_s(FAFB_NETWORK, args.iterations),
        "demo_vgg": training_samples_per_s(DEMO_NETWORK, max(args.iterations, 10)),
    }
    print(json.dumps(report, indent=2))


def _step_seconds(model, raw, labels, steps: int, channels_last: bool) -> float:
    """Median seconds of a forward + backward + Adam step."""
    optimizer = make_optimizer(model, 1e-3)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        raw = raw.contiguous(memory_format=torch.channels_last_3d)
    seconds = []
    for i in range(steps + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(raw), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:  # the first step allocates
            seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def formats(args) -> None:
    """Default layout vs channels-last for the demo recipes' networks, interleaved rounds."""
    from dataclasses import replace

    from synister.config import TrainConfig
    from synister.demo import recipe
    from synister.models import build_model

    torch.set_num_threads(args.threads)
    report = {}
    for preset, network in (("easy", "resnet"), ("fafb", "resnet"), ("fafb", "vgg")):
        s = replace(recipe(preset, network))
        cfg = TrainConfig(
            synapse_types=["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine",
                           "dopamine"],
            input_shape=s.input_shape, fmaps=s.fmaps, network=s.network,
            downsample_factors=list(s.downsample_factors),
            n_convolutions=s.n_convolutions or (2,) * len(s.downsample_factors),
            classifier_units=s.classifier_units, db_name_data="x", split_name="x",
            voxel_size=(40, 4, 4), raw_container="x", raw_dataset="x",
        )  # fmt: skip
        raw = torch.rand(s.batch_size, 1, *s.input_shape) * 2 - 1
        labels = torch.randint(0, 6, (s.batch_size,))
        rounds = {"default": [], "channels_last": []}
        for _ in range(args.rounds):
            for name in rounds:
                torch.manual_seed(0)
                rounds[name].append(
                    _step_seconds(
                        build_model(cfg), raw, labels, args.iterations, name == "channels_last"
                    )  # fmt: skip
                )
        default, last = np.median(rounds["default"]), np.median(rounds["channels_last"])
        report[f"{preset}_{network}"] = {
            "step_s_default": round(float(default), 4),
            "step_s_channels_last": round(float(last), 4),
            "speed-up": round(float(default / last), 2),
            "rounds": {k: [round(v, 4) for v in vs] for k, vs in rounds.items()},
        }
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))


def validation_accuracy(setup_dir, data_dir, part: str = "validation") -> dict:
    """Synapse accuracy of the newest checkpoint on the validation part, next to the oracle's.

    Centred patches, no augmentation, the network in eval mode: a quick stand-in for the
    prediction and evaluation stages.
    """
    from synister.config import load_train_setup
    from synister.data import training_synapses
    from synister.db import open_database
    from synister.models import build_model, load_checkpoint
    from synister.synthetic import oracle_accuracy
    from synister.train import latest_checkpoint
    from synister.volumes import Volume, normalize

    cfg, _ = load_train_setup(setup_dir)
    with open_database(cfg.database_url()) as db:
        synapses = training_synapses(db, cfg.split_name, cfg.synapse_types, part=part)
    volume = Volume(cfg.raw_container, cfg.raw_dataset, voxel_size_nm=cfg.voxel_size)
    model = build_model(cfg)
    iteration, path = latest_checkpoint(setup_dir)
    load_checkpoint(path, model)
    model.eval()
    predicted = []
    centers_nm = synapses[["z", "y", "x"]].to_numpy()
    with torch.inference_mode():
        for start in range(0, len(centers_nm), 32):
            raw = volume.read_patches(centers_nm[start : start + 32], cfg.input_shape)
            x = torch.as_tensor(normalize(raw.astype(np.float32)))[:, None]
            predicted.append(model(x).argmax(1).numpy())
    predicted = np.concatenate(predicted)
    labels = synapses["label"].to_numpy()
    per_class = {
        name: round(float(np.mean(predicted[labels == k] == k)), 3)
        for k, name in enumerate(cfg.classes)
        if np.any(labels == k)
    }
    oracle = oracle_accuracy(data_dir, synapses["synapse_id"].tolist())
    accuracy = float(np.mean(predicted == labels))
    return {
        "iteration": iteration,
        "part": part,
        "synapses": len(labels),
        "neurons": int(synapses["skeleton_id"].nunique()),
        "synapse_accuracy": round(accuracy, 3),
        "per_class": per_class,
        "oracle_synapse_accuracy": round(float(oracle["synapse"]), 3),
        "ratio_to_oracle": round(accuracy / float(oracle["synapse"]), 3),
    }


def demo(args) -> None:
    from synister.db import open_database
    from synister.db.imports import import_files
    from synister.setup import prepare_training
    from synister.splits import SplitRequest, make_split
    from synister.synthetic import generate
    from synister.train import plot_training_curves, train

    base = Path(args.workdir).resolve()
    data = base / "data"
    url = f"sqlite:///{base / 'synister.db'}"
    timings = {}
    start = time.perf_counter()
    if not (data / "summary.json").exists():
        shape = tuple(args.shape) if args.shape else None
        generate(
            data, preset="easy", seed=args.seed, shape_vox=shape, n_synapses=args.synapses,
            montages=False,
        )  # fmt: skip
    with open_database(url) as db:
        if db.stats()["synapses"] == 0:
            import_files(db, [data])
        if "skeleton" not in db.splits():
            request = SplitRequest(by="skeleton", seed=args.seed, tolerance=args.split_tolerance)
            make_split(db, "skeleton", request)
    timings["dataset_s"] = round(time.perf_counter() - start, 1)
    network = dict(DEMO_NETWORK)
    overrides = {
        "network": args.network,
        "input_shape": tuple(args.input_shape) if args.input_shape else network["input_size"],
        "fmaps": args.fmaps or network["fmaps"],
        "downsample_factors": list(network["downsample_factors"]),
        "fmap_inc": network["fmap_inc"],
        "n_convolutions": network["n_convolutions"],
        "batch_size": network["batch_size"],
        "learning_rate": args.learning_rate,
        "checkpoint_every": args.checkpoint_every or args.iterations,
        "augment": not args.no_augment,
        "snapshot_every": max(1, args.iterations // 4),
        "log_every": 10,
        "num_cache_workers": args.workers,
    }
    setup = prepare_training(
        base, "demo", args.train_id, db_url=url, raw_container="data/raw.zarr", **overrides
    )
    start = time.perf_counter()
    result = train(setup, args.iterations, progress=False)
    timings["train_s"] = round(time.perf_counter() - start, 1)
    report = {
        "network": overrides,
        "iterations": result["iteration"],
        "samples_per_s": round(result["samples_per_s"], 2),
        **timings,
        "validation": validation_accuracy(setup, data),
        "curves_png": str(plot_training_curves(setup, setup / "training_curves.png")),
    }
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_speed = commands.add_parser("speed", help="network training samples/s")
    p_speed.add_argument("--iterations", type=int, default=3)
    p_speed.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p_speed.set_defaults(run=speed)
    p_formats = commands.add_parser("formats", help="default layout vs channels-last")
    p_formats.add_argument("--iterations", type=int, default=6)
    p_formats.add_argument("--rounds", type=int, default=3)
    p_formats.add_argument("--threads", type=int, default=1)
    p_formats.set_defaults(run=formats)
    p_demo = commands.add_parser("demo", help="train the demo network on the easy preset")
    p_demo.add_argument("workdir", help="folder for the dataset, database and setups")
    p_demo.add_argument("--iterations", type=int, default=2000)
    p_demo.add_argument("--train-id", type=int, default=0)
    p_demo.add_argument("--network", default="VGG", choices=["VGG", "ResNet18"])
    p_demo.add_argument("--learning-rate", type=float, default=1e-4)
    p_demo.add_argument("--workers", type=int, default=1)
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument("--split-tolerance", type=float, default=0.2)
    p_demo.add_argument("--input-shape", type=int, nargs=3, metavar=("Z", "Y", "X"))
    p_demo.add_argument("--fmaps", type=int)
    p_demo.add_argument("--checkpoint-every", type=int)
    p_demo.add_argument("--no-augment", action="store_true")
    p_demo.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), help="volume")
    p_demo.add_argument("--synapses", type=int, help="synapses in the dataset")
    p_demo.set_defaults(run=demo)
    p_eval = commands.add_parser("evaluate", help="validation accuracy of a setup's checkpoints")
    p_eval.add_argument("setup", help="training setup folder")
    p_eval.add_argument("data", help="the synthetic dataset folder (for the oracle)")
    p_eval.add_argument("--part", default="validation", choices=["train", "validation", "test"])
    p_eval.set_defaults(
        run=lambda a: print(json.dumps(validation_accuracy(a.setup, a.data, a.part), indent=2))
    )
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
