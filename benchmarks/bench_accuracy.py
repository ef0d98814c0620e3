"""Learning curve and ablation on a synthetic preset against its two ceilings.

``python benchmarks/bench_accuracy.py --preset fafb (--iterations N | --minutes M)
[--network resnet|vgg] [--seed S] [--out DIR] [--resume] [--train-only]`` runs the demo's
workflow (:func:`synister.demo.run_demo`) with the preset's recipe on a dataset large enough
that its test part holds >= 1,000 synapses and >= 50 neurons, then writes to DIR:

- ``learning_curve.json``: per validation checkpoint the training wall time, iteration,
  synapse and neuron accuracy and their fractions of the validation part's oracle and
  image-level ceiling; the test result at the best validation checkpoint; the machine's load;
- ``learning_curve.png``: the same as plots versus wall time and versus iterations;
- ``ablation.json`` and ``ablation.md``: every checkpoint predicted on the validation and test
  parts with raw and averaged weights, and what each checkpoint rule and neuron rule gives on
  the test part, with bootstrap standard errors (``accuracy_ablation.py``).

``--iterations`` trains a fixed number of iterations (after the recipe's pretraining), so that
the accuracy does not depend on the machine's load; ``--minutes`` fills a wall-time budget.
``--train-only`` stops after training (a long run to be evaluated later); the same command
with ``--resume`` continues a run that died or was trained only, and does the rest.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

#: Dataset size per preset: ~5,500 synapses in 96x1280x1280 voxels puts ~1,100 synapses and
#: ~90 neurons in the test part (20 %).
DATASETS = {
    "fafb": {"shape_vox": (96, 1280, 1280), "n_synapses": 5500},
    "easy": {"shape_vox": (64, 1792, 1792), "n_synapses": 5000},
}


def _fractions(value: float, part: dict, level: str) -> dict:
    image = part["image_ceiling"]
    return {
        "of_oracle": value / part["oracle"][level],
        "of_image_ceiling": value / image[level] if image else None,
    }


def learning_curve(summary: dict) -> dict:
    """The curve, the test result and the ceilings, from a demo summary."""
    validation = summary["ceilings"]["validation"]
    points = []
    for p in summary["validation_curve"]:
        points.append(
            {
                **p,
                "synapse_fraction": _fractions(p["synapse"], validation, "synapse"),
                "neuron_fraction": _fractions(p["neuron"], validation, "neuron"),
            }
        )
    test = summary["ceilings"]["test"]
    syn, neu = summary["test_synapse_accuracy"], summary["test_neuron_accuracy"]
    return {
        "preset": summary["preset"],
        "settings": summary["settings"],
        "iterations": summary["iterations"],
        "train_seconds": summary["train_seconds"],
        "validation_ceilings": validation,
        "curve": points,
        "test": {
            "best_iteration": summary["best_iteration"],
            "synapse": syn,
            "neuron": neu,
            "neuron_mean_probability": summary["test_neuron_accuracy_mean_probability"],
            "neuron_calibrated_log": summary.get("test_neuron_accuracy_calibrated_log"),
            "synapse_fraction": _fractions(syn, test, "synapse"),
            "neuron_fraction": _fractions(neu, test, "neuron"),
            "neuron_calibrated_log_fraction": (
                _fractions(summary["test_neuron_accuracy_calibrated_log"], test, "neuron")
                if "test_neuron_accuracy_calibrated_log" in summary
                else None
            ),
            "n_synapses": summary["test_synapses"],
            "n_neurons": summary["test_neurons"],
            "ceilings": test,
        },
    }


def plot_learning_curve(curve: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = curve["curve"]
    minutes = [(p["train_seconds"] or 0) / 60 for p in points]
    iterations = [p["iteration"] for p in points]
    ceilings = curve["validation_ceilings"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharey="row")
    colors = {"synapse": "tab:blue", "neuron": "tab:orange"}
    for column, (x, label) in enumerate(((minutes, "training wall time (min)"),
                                         (iterations, "iteration"))):  # fmt: skip
        top, bottom = axes[0, column], axes[1, column]
        for level, color in colors.items():
            top.plot(x, [p[level] for p in points], "o-", color=color, label=f"{level} level")
            top.axhline(ceilings["oracle"][level], color=color, ls=":", lw=1)
            if ceilings["image_ceiling"]:
                top.axhline(ceilings["image_ceiling"][level], color=color, ls="--", lw=1)
            fraction = [p[f"{level}_fraction"]["of_image_ceiling"] for p in points]
            if all(f is not None for f in fraction):
                bottom.plot(x, fraction, "o-", color=color, label=f"{level}: of image ceiling")
            bottom.plot(
                x, [p[f"{level}_fraction"]["of_oracle"] for p in points], "s:", color=color,
                alpha=0.6, label=f"{level}: of oracle",
            )  # fmt: skip
        top.set_xlabel(label)
        bottom.set_xlabel(label)
    axes[0, 0].set_ylabel("validation accuracy")
    axes[1, 0].set_ylabel("fraction of the ceiling")
    axes[0, 0].plot([], [], "k--", lw=1, label="image-level ceiling")
    axes[0, 0].plot([], [], "k:", lw=1, label="latent oracle")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    axes[1, 0].legend(fontsize=8, loc="lower right")
    test = curve["test"]
    fig.suptitle(
        f"{curve['preset']} preset, {curve['settings']['network']}: test at iteration "
        f"{test['best_iteration']}: synapse {test['synapse']:.3f} "
        f"({test['synapse_fraction']['of_image_ceiling'] or float('nan'):.2f} of the image "
        f"ceiling), neuron {test['neuron']:.3f} "
        f"({test['neuron_fraction']['of_image_ceiling'] or float('nan'):.2f})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fafb", choices=sorted(DATASETS))
    parser.add_argument("--network", default="resnet", choices=["resnet", "vgg"])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="training wall-time budget (default 30)")
    length.add_argument("--iterations", type=int, help="a fixed number of training iterations")
    parser.add_argument("--checkpoints", type=int, default=8, help="validation checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ema-decay", type=float, help="weight average (default: the recipe's)")
    parser.add_argument("--pretrain-iterations", type=int, help="default: the recipe's")
    parser.add_argument(
        "--dataset", choices=["bench", "demo"], default="bench",
        help="bench: >= 50 test neurons (see DATASETS); demo: the demo's own dataset",
    )  # fmt: skip
    parser.add_argument("--synapses", type=int, help="dataset size (default: the preset's)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="dataset volume in voxels (default: the preset's)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench_out/accuracy"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--train-only", action="store_true", help="stop after training")
    args = parser.parse_args()

    from synister.demo import recipe, run_demo, train_demo

    dataset = dict(DATASETS[args.preset]) if args.dataset == "bench" else {}
    if args.synapses:
        dataset["n_synapses"] = args.synapses
    if args.shape:
        dataset["shape_vox"] = tuple(args.shape)
    settings = replace(
        recipe(args.preset, args.network),
        seed=args.seed,
        validation_checkpoints=args.checkpoints,
        **dataset,
    )
    if args.iterations:
        settings = replace(settings, iterations=args.iterations, minutes=None)
    else:
        settings = replace(settings, minutes=args.minutes or 30.0)
    if args.ema_decay is not None:
        settings = replace(settings, ema_decay=args.ema_decay)
    if args.pretrain_iterations is not None:
        settings = replace(settings, pretrain_iterations=args.pretrain_iterations)
    if args.train_only:
        setup = train_demo(args.out, settings, resume=args.resume)
        print(f"trained: {setup}; run the same command with --resume (without --train-only)")
        return
    summary = run_demo(args.out, settings, resume=args.resume)
    curve = learning_curve(summary)
    curve["cpus"] = os.cpu_count()
    (args.out / "learning_curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    png = plot_learning_curve(curve, args.out / "learning_curve.png")
    test = curve["test"]
    print(
        f"test ({test['n_synapses']} synapses, {test['n_neurons']} neurons) at iteration "
        f"{test['best_iteration']} of {curve['iterations']}: synapse {test['synapse']:.3f} = "
        f"{test['synapse_fraction']['of_image_ceiling'] or float('nan'):.3f} of the image "
        f"ceiling, {test['synapse_fraction']['of_oracle']:.3f} of the oracle; neuron "
        f"{test['neuron']:.3f} = {test['neuron_fraction']['of_image_ceiling'] or float('nan'):.3f}"
        f" / {test['neuron_fraction']['of_oracle']:.3f} (vote)"
        + (
            f", {test['neuron_calibrated_log']:.3f} = "
            f"{test['neuron_calibrated_log_fraction']['of_image_ceiling'] or float('nan'):.3f} "
            "(calibrated log)"
            if test["neuron_calibrated_log"] is not None
            else ""
        )
        + f"; curve: {png}"
    )
    from accuracy_ablation import ablation

    ablation(args.out)
    print((args.out / "ablation.md").read_text())


if __name__ == "__main__":
    main()
