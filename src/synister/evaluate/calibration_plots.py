"""Figures of :mod:`synister.evaluate.calibration`: reliability diagrams and risk-coverage
curves as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .calibration import ece_from_bins  # noqa: E402
from .plots import _save  # noqa: E402


def plot_reliability(
    path: str | Path, panels: Sequence[tuple[str, Sequence[dict]]], *, title: str = ""
) -> Path:
    """One reliability diagram per ``(label, bins)`` panel, side by side (e.g. before and after
    calibration): accuracy per confidence bin as bars against the diagonal of perfect
    calibration, the gap to each bin's mean confidence shaded, sample counts on a lower strip."""
    n = len(panels)
    if not n:
        raise ValueError("plot_reliability needs at least one panel")
    fig, axes = plt.subplots(
        2, n, figsize=(4.2 * n + 0.6, 5.0), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [3.2, 1]},
    )  # fmt: skip
    for column, (label, bins) in enumerate(panels):
        ax, counts_ax = axes[0, column], axes[1, column]
        lower = np.array([b["lower"] for b in bins])
        width = np.array([b["upper"] - b["lower"] for b in bins])
        accuracy = np.array([b["accuracy"] for b in bins], dtype=np.float64)
        confidence = np.array([b["confidence"] for b in bins], dtype=np.float64)
        counts = np.array([b["n"] for b in bins])
        filled = counts > 0
        ax.plot([0, 1], [0, 1], "--", color="#888888", linewidth=1, label="perfect calibration")
        ax.bar(lower[filled], accuracy[filled], width=width[filled], align="edge",
               color="#4c72b0", edgecolor="white", label="accuracy")  # fmt: skip
        ax.bar(lower[filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled],
               width=width[filled], align="edge", color="#dd8452", alpha=0.45,
               edgecolor="#dd8452", label="gap to mean confidence")  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(
            f"{label}\nECE {ece_from_bins(bins):.3f}, n = {int(counts.sum())}", fontsize=10
        )
        ax.grid(alpha=0.3)
        if column == 0:
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=8, loc="upper left")
        counts_ax.bar(lower, counts, width=width, align="edge", color="#999999")
        counts_ax.set_xlabel("confidence (top-class probability)")
        if column == 0:
            counts_ax.set_ylabel("count")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_risk_coverage(
    path: str | Path,
    curves: dict[str, dict],
    *,
    chosen: dict | None = None,
    target_accuracy: float | None = None,
    title: str = "",
) -> Path:
    """Accuracy of the confident neuron calls against coverage, one line per score in
    ``curves`` (:func:`synister.evaluate.calibration.risk_coverage_curve` outputs), with the
    target accuracy and the chosen thresholds' operating point (``chosen``: coverage and
    accuracy) marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    styles = ("-", "--", ":", "-.")
    for number, (label, curve) in enumerate(curves.items()):
        ax.plot(curve["coverage"], curve["accuracy"], styles[number % len(styles)],
                drawstyle="steps-post", label=label, color=f"C{number}")  # fmt: skip
    if target_accuracy is not None:
        ax.axhline(target_accuracy, color="#c44e52", linewidth=1, linestyle=":",
                   label=f"target accuracy {target_accuracy:.0%}")  # fmt: skip
    if chosen is not None and chosen.get("n_confident"):
        ax.plot([chosen["coverage"]], [chosen["accuracy"]], marker="*", markersize=15,
                color="#c44e52", linestyle="none",
                label=f"chosen thresholds: coverage {chosen['coverage']:.0%}, "
                f"accuracy {chosen['accuracy']:.0%}")  # fmt: skip
    ax.set_xlim(0, 1.02)
    low = min([min(c["accuracy"], default=1.0) for c in curves.values()] + [target_accuracy or 1])
    ax.set_ylim(max(0.0, low - 0.05), 1.01)
    ax.set_xlabel("coverage (fraction of neurons called confidently)")
    ax.set_ylabel("accuracy of the confident calls")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


#: captions of :func:`draw_calibration_figures`
CAPTIONS = {
    "synapse": "synapses: reliability diagram",
    "neuron": "neurons (mean probability of their synapses): reliability diagram",
    "risk_coverage": "neurons: accuracy of the confident calls versus coverage",
}


def draw_calibration_figures(summary: dict, folder: str | Path, run: str) -> dict[str, Path]:
    """The reliability diagrams (synapse and neuron level, before and after the temperature)
    and the neuron-level risk-coverage curve of an evaluation's calibration ``summary``
    (:func:`synister.evaluate.calibrate.evaluate_calibration`); returns caption -> PNG path."""
    folder = Path(folder)
    temperature = summary["temperature"]
    figures = {}
    for level, file in (
        ("synapse", "reliability_synapse.png"), ("neuron", "reliability_neuron.png")
    ):  # fmt: skip
        caption = CAPTIONS[level]
        panels = [("raw softmax", summary[level]["before"]["bins"])]
        if summary[level]["after"] is not None:
            panels.append((f"temperature {temperature:.3g}", summary[level]["after"]["bins"]))
        figures[caption] = plot_reliability(
            folder / file, panels, title=f"{run}: {caption.split(':')[0]}"
        )
    unclear = summary["unclear"]
    caption = CAPTIONS["risk_coverage"]
    figures[caption] = plot_risk_coverage(
        folder / "risk_coverage_neuron.png",
        summary["risk_coverage"],
        chosen=unclear,
        target_accuracy=unclear.get("target_accuracy"),
        title=f"{run}: neurons\nlines: kept by one score alone; star: the thresholds in use",
    )
    return figures
