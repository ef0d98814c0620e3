"""The files of an evaluation besides the report: per-run folders, figures, CSV tables, JSON."""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from . import plots
from .calibration_plots import draw_calibration_figures
from .runs import RunEvaluation

#: per neuron: its mean-probability call after calibration, or "unclear" (see .calibrate)
UNCLEAR_FILE = "neurons_unclear.csv"


def run_folders(runs: Sequence[str]) -> dict[str, str]:
    """A file-system-safe, distinct folder name per run."""
    folders: dict[str, str] = {}
    taken: set[str] = set()
    for run in runs:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", run).strip("._") or "run"
        name, n = base, 1
        while name.lower() in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name.lower())
        folders[run] = name
    return folders


def draw_run_figures(evaluation: RunEvaluation, folder: Path) -> dict[str, Path]:
    """The run's confusion matrices (each level and method) and expected-probability matrix;
    returns caption -> PNG path."""
    m = evaluation.metrics
    classes = evaluation.classes
    figures = {}
    for caption, file, level in (
        ("synapses: confusion matrix", "confusion_synapse.png", m["synapse"]),
        ("neurons by majority vote", "confusion_neuron_vote.png", m["neuron"]["vote"]),
        ("neurons by mean probability", "confusion_neuron_mean.png", m["neuron"]["mean"]),
        ("hemilineages by majority vote", "confusion_hemi_lineage_vote.png",
         m["hemi_lineage"]["vote"]),
        ("hemilineages by mean probability", "confusion_hemi_lineage_mean.png",
         m["hemi_lineage"]["mean"]),
    ):  # fmt: skip
        title = f"{evaluation.run}\n{caption}\naccuracy {_percent(level['accuracy'])}"
        figures[caption] = plots.plot_matrix(
            folder / file,
            np.array(level["confusion_normalized"], dtype=np.float64),
            classes,
            counts=np.array(level["confusion"]),
            title=title,
        )
    caption = "synapses: mean predicted probability per true class"
    figures[caption] = plots.plot_matrix(
        folder / "expected_probability_synapse.png",
        np.array(m["synapse"]["expected_probability"], dtype=np.float64),
        classes,
        row_totals=list(m["synapse"]["n_per_class"].values()),
        title=f"{evaluation.run}\nsynapses: mean predicted probability\nper true class",
        xlabel="mean probability of class",
    )
    if m.get("calibration") is not None:
        figures.update(draw_calibration_figures(m["calibration"], folder, evaluation.run))
    return figures


def _percent(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def merged_predictions(
    evaluation: RunEvaluation, tables: dict[str, pd.DataFrame], keys: list[str]
) -> pd.DataFrame:
    """Vote and mean predictions side by side, one row per neuron or hemilineage."""
    classes = evaluation.classes
    vote, mean = tables["vote"], tables["mean"]
    merged = vote.assign(
        true=[classes[i] for i in vote["true_idx"]],
        mean_pred_idx=mean["pred_idx"].to_numpy(),
        mean_tie=mean["tie"].to_numpy(),
        mean_support=mean["support"].to_numpy(),
    )
    if not vote[keys].equals(mean[keys]):
        raise AssertionError("vote and mean tables are not aligned")
    merged["vote_predicted"] = [classes[i] for i in merged["pred_idx"]]
    merged["mean_predicted"] = [classes[i] for i in merged["mean_pred_idx"]]
    return merged


def lineage_table(evaluation: RunEvaluation) -> pd.DataFrame:
    """Per (hemilineage, transmitter) unit: vote and mean predictions, for the report."""
    return merged_predictions(evaluation, evaluation.hemi_lineages, ["hemi_lineage_id", "true_idx"])


def write_run_tables(evaluation: RunEvaluation, folder: Path) -> None:
    """``neurons.csv`` and ``hemi_lineages.csv``: every unit's truth and both predictions, so a
    user can look up the neurons behind a confusion-matrix cell; ``neurons_unclear.csv``: each
    neuron's calibrated call or ``unclear``."""
    predictions = [
        "true",
        "vote_predicted",
        "vote_tie",
        "vote_share",
        "mean_predicted",
        "mean_tie",
        "mean_support",
    ]
    tables = [
        (
            "neurons.csv",
            merged_predictions(evaluation, evaluation.neurons, ["skeleton_id"]),
            ["skeleton_id", "hemi_lineage_id", "n_synapses"],
        ),
        (
            "hemi_lineages.csv",
            lineage_table(evaluation),
            ["hemi_lineage_id", "hemi_lineage_name", "n_neurons", "n_synapses"],
        ),
    ]
    for name, table, units in tables:
        table.rename(columns={"tie": "vote_tie", "support": "vote_share"}).reindex(
            columns=units + predictions
        ).to_csv(folder / name, index=False)
    if evaluation.unclear is not None and len(evaluation.unclear):
        evaluation.unclear.to_csv(folder / UNCLEAR_FILE, index=False)


@contextmanager
def staged_folder(out_dir: str | Path) -> Iterator[Path]:
    """A fresh folder beside ``out_dir`` to write into; on success its content becomes
    ``out_dir``'s, on an error it is removed (with the parents this made), so a failure leaves
    nothing behind.

    A new ``out_dir`` is the staged folder renamed; into an existing one each file is moved
    (replacing a file of the same name, keeping everything else).
    """
    out_dir = Path(out_dir).absolute()
    made = [p for p in reversed(out_dir.parents) if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            _check_mergeable(staging, out_dir)
            _merge_into(staging, out_dir)
            staging.rmdir()
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in reversed(made):
            try:
                parent.rmdir()
            except OSError:
                break
        raise


def _check_mergeable(source: Path, target: Path) -> None:
    """Refuse, before moving anything, where a file would replace a folder or the reverse."""
    for entry in source.iterdir():
        destination = target / entry.name
        if destination.exists() and entry.is_dir() != destination.is_dir():
            what = "a folder" if entry.is_dir() else "a file"
            raise ValueError(f"{destination} is in the way: the evaluation writes {what} there")
        if entry.is_dir() and destination.is_dir():
            _check_mergeable(entry, destination)


def _merge_into(source: Path, target: Path) -> None:
    """Move every file under ``source`` to the same place under ``target``."""
    for entry in sorted(source.iterdir()):
        destination = target / entry.name
        if entry.is_dir() and destination.is_dir():
            _merge_into(entry, destination)
            entry.rmdir()
        else:
            os.replace(entry, destination)
