"""Figures of an evaluation as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

_DPI = 110


def plot_matrix(
    path: str | Path,
    values: np.ndarray,
    classes: Sequence[str],
    *,
    title: str,
    counts: np.ndarray | None = None,
    row_totals: Sequence[int] | None = None,
    ylabel: str = "true transmitter",
    xlabel: str = "predicted transmitter",
) -> Path:
    """Heat map of a class-by-class matrix of fractions in [0, 1] (NaN rows drawn blank).

    Each cell shows its fraction and, when ``counts`` is given, its count; row labels carry the
    row totals (from ``counts``, or ``row_totals``) so a reader sees how many samples each
    fraction rests on.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(classes)
    if values.shape != (n, n):
        raise ValueError(f"matrix shape {values.shape} does not match {n} classes")
    size = 1.6 + 0.85 * n
    fig, ax = plt.subplots(figsize=(max(size + 1.2, 6.4), size + 0.3))
    shown = np.ma.masked_invalid(values)
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#eeeeee")
    image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for i in range(n):
        for j in range(n):
            if math.isnan(values[i, j]):
                text = "–" if counts is None else f"–\n{int(counts[i, j])}"
            else:
                text = f"{values[i, j]:.2f}"
                if counts is not None:
                    text += f"\n{int(counts[i, j])}"
            dark = not math.isnan(values[i, j]) and values[i, j] > 0.55
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark else "#222222",
            )
    row_labels = list(classes)
    if counts is not None:
        row_totals = np.asarray(counts).sum(axis=1)
    if row_totals is not None:
        totals = row_totals
        row_labels = [f"{c} (n={int(t)})" for c, t in zip(classes, totals, strict=True)]
    ax.set_xticks(range(n), labels=list(classes), rotation=40, ha="right")
    ax.set_yticks(range(n), labels=row_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_curves(
    path: str | Path, series: Sequence[dict], best: dict | None = None
) -> Path:
    """Write :func:`accuracy_figure` to ``path``."""
    return _save(accuracy_figure(series, best), path)


def accuracy_figure(series: Sequence[dict], best: dict | None = None):
    """Accuracy versus training iteration: synapse (plain and balanced) and neuron level.

    ``series`` is :func:`synister.evaluate.runs.accuracy_by_iteration`'s output; the best run
    is marked with a star. Each panel's legend sits below it, so it never hides a curve however
    many series there are (the figure grows to hold it).
    """
    panels = (
        ("synapse level", (("synapse_accuracy", "accuracy", "-o"),
                           ("synapse_balanced_accuracy", "balanced accuracy", "--s"))),
        ("neuron level", (("neuron_vote_accuracy", "majority vote", "-o"),
                          ("neuron_mean_accuracy", "mean probability", "--s"))),
    )  # fmt: skip
    entries = 2 * len(series) + 1  # curves of the busier panel, plus the best run's star
    rows = math.ceil(entries / (1 if len(series) > 1 else 2))
    fig, axes = plt.subplots(
        1, 2, figsize=(11, 3.6 + 0.2 * rows), sharey=True, layout="constrained"
    )
    for ax, (title, measures) in zip(axes, panels, strict=True):
        for number, curve in enumerate(series):
            iterations = [p["iteration"] for p in curve["points"]]
            for key, name, style in measures:
                label = name if len(series) == 1 else f"{curve['series']}: {name}"
                ax.plot(
                    iterations,
                    [_nan(p[key]) for p in curve["points"]],
                    style,
                    color=f"C{number}",
                    alpha=1.0 if style.startswith("-o") else 0.6,
                    label=label,
                    markersize=4,
                )
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("training iteration")
        ax.xaxis.set_major_formatter(FuncFormatter(_iteration_label))
        ax.grid(alpha=0.3)
    if best is not None and best.get("iteration") is not None:
        axes[0].plot(
            [best["iteration"]],
            [_nan(best["synapse_accuracy"])],
            marker="*",
            markersize=16,
            color="#d62728",
            linestyle="none",
            label="best",
        )
    for ax in axes:
        ax.legend(
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=1 if len(series) > 1 else 2,
            frameon=False,
        )
    axes[0].set_ylabel("accuracy")
    axes[0].set_ylim(0.0, 1.02)
    return fig


def _iteration_label(value: float, _position) -> str:
    """Tick labels such as 250k instead of 250000, which crowd the axis."""
    return f"{value / 1000:g}k" if abs(value) >= 10_000 else f"{value:g}"


def _nan(value) -> float:
    return float("nan") if value is None else float(value)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path
