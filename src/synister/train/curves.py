"""Loss and accuracy curves from a setup's tensorboard logs, as a PNG for reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def read_scalars(log_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every scalar tag in ``log_dir`` as a frame (step, value), one row per step.

    Event files of resumed runs are read in the order they were started (their first event's
    time: file names do not sort that way when two writers start in one second). A run's start
    at step s hides what earlier runs logged from s on, as tensorboard's ``purge_step`` means;
    within a run the later value of a step wins.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog
    from tensorboard.util.tensor_util import make_ndarray

    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"no tensorboard log folder at {log_dir}")
    runs = []
    for path in log_dir.glob("events.out.tfevents.*"):
        events = list(EventFileLoader(str(path)).Load())
        if events:
            runs.append((events[0].wall_time, path.name, events))
    values_by_tag: dict[str, dict[int, float]] = {}
    for _, _, events in sorted(runs, key=lambda run: run[:2]):
        for event in events:
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for values in values_by_tag.values():
                    for step in [step for step in values if step >= event.step]:
                        del values[step]
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    scalar = float(make_ndarray(value.tensor))
                    values_by_tag.setdefault(value.tag, {})[event.step] = scalar
    return {
        tag: pd.DataFrame(
            {"step": sorted(values), "value": [values[step] for step in sorted(values)]}
        )
        for tag, values in values_by_tag.items()
    }


def _smooth(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Exponential moving average like tensorboard's smoothing, bias-corrected at the start."""
    smoothed = np.empty(len(values))
    running, norm = 0.0, 0.0
    for i, value in enumerate(values):
        running = weight * running + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        smoothed[i] = running / norm
    return smoothed


def plot_training_curves(setup_dir: str | Path, out_png: str | Path) -> Path:
    """Plot loss (raw and smoothed) and per-class window accuracy of a training setup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setup_dir = Path(setup_dir)
    scalars = read_scalars(setup_dir / "log")
    if "loss" not in scalars:
        raise ValueError(f"{setup_dir / 'log'} holds no 'loss' scalar: was `synister train` run?")
    accuracy_tags = sorted(t for t in scalars if t.startswith("accuracy/"))
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    loss = scalars["loss"]
    ax_loss.plot(loss.step, loss.value, color="0.75", lw=0.8, label="loss")
    ax_loss.plot(loss.step, _smooth(loss.value.to_numpy()), color="C0", label="smoothed")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.legend()
    for tag in accuracy_tags:
        frame = scalars[tag]
        name = tag.split("/", 1)[1]
        style = {"color": "black", "lw": 2} if name == "mean" else {"lw": 1, "alpha": 0.7}
        ax_acc.plot(frame.step, _smooth(frame.value.to_numpy(), 0.6), label=name, **style)
    ax_acc.set_xlabel("iteration")
    ax_acc.set_ylabel("training accuracy per class (recent samples)")
    ax_acc.set_ylim(-0.02, 1.02)
    if accuracy_tags:
        ax_acc.legend(fontsize=7)
    fig.suptitle(setup_dir.name)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
