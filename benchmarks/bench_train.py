"""Training speed and the demo network's learning, on this machine.

``python benchmarks/bench_train.py speed``: samples/s of forward + backward + Adam step for the
FAFB-sized VGG (16x160x160, batch 8) and the small demo network, on random input (no data
loading), so the figure is the network's alone.

``python benchmarks/bench_train.py demo WORKDIR``: the one-command demo's training on the
synthetic ``easy`` preset: make the dataset, import it, split by skeleton, prepare and train,
then report synapse accuracy on the held-out (validation) neurons against the Bayes oracle,
and write the loss-curve PNG.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from synister.models import Vgg3D
from synister.train.loop import make_optimizer

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
    report = {
        "fafb_vgg": training_samples_per_s(FAFB_NETWORK, args.iterations),
        "demo_vgg": training_samples_per_s(DEMO_NETWORK, max(args.iterations, 10)),
    }
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p_speed = commands.add_parser("speed", help="network training samples/s")
    p_speed.add_argument("--iterations", type=int, default=3)
    p_speed.set_defaults(run=speed)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
