"""The service's one door into the prediction engine of `synister predict-positions`.

The web app calls :func:`check_table` on an upload (its error becomes the 422 message) and a
worker calls :func:`run_job`. Everything else in :mod:`synister.serve` is independent of how
prediction is done.

INTERIM: until `predict-positions` (issue #12) is merged, this module reads tables and writes
outputs with a minimal stand-in around the one prediction engine
(:class:`synister.predict.engine.Predictor` with a model bundle); it goes when
`predict-positions` lands.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import VolumeChoice

SHORT_NAMES = {
    "gaba": "gaba",
    "acetylcholine": "ach",
    "glutamate": "glut",
    "octopamine": "oct",
    "serotonin": "ser",
    "dopamine": "da",
}
ID_COLUMNS = ("id", "synapse_id", "syn_id")
NEURON_COLUMNS = ("pre_pt_root_id", "bodyId", "body", "skeleton_id", "skid")
POSITION_COLUMNS = (("x", "y", "z"), ("pre_x", "pre_y", "pre_z"))
#: synapses predicted and stored together; a resumed job redoes at most one chunk
CHUNK_SYNAPSES = 128


class BadTable(ValueError):
    """A table predict-positions cannot read; its one-line message naming file and column."""


class JobStopped(Exception):  # noqa: N818 - a stop, not an error
    """Raised from the progress callback to stop a job at the next batch (what is stored stays)."""


@dataclass(frozen=True)
class EngineJob:
    """What a worker hands the engine: paths resolved from the config, never from a user."""

    table: Path
    bundle: Path
    volume: VolumeChoice
    options: dict = field(default_factory=dict)
    device: str | None = None  # torch device; default a GPU when present
    threads: int | None = None  # torch threads; default torch's


def check_table(path: Path, options: dict | None = None) -> int:
    """The number of rows predict-positions would predict from ``path``; raises
    :class:`BadTable` naming the file and the column of what is wrong."""
    return len(_read_positions(Path(path), options or {}))


def run_job(
    job: EngineJob,
    out_dir: Path,
    progress: Callable[[int, int], None],
    cancelled: Callable[[], bool],
) -> dict:
    """Predict ``job`` into ``out_dir`` (synapses.parquet/.csv, neurons.parquet/.csv,
    report.html), resuming what an earlier run of the same job stored there.

    ``progress(done, total)`` is called after each stored batch and may raise
    :class:`JobStopped`; ``cancelled()`` is polled between batches. Returns the run's figures
    (``total``, ``predicted``, ``resumed_from``, ``seconds``).
    """
    import time

    start = time.perf_counter()
    table = _read_positions(job.table, job.options)
    out_dir = Path(out_dir)
    parts = out_dir / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    bundle, predictor = _load_bundle(job.bundle, job.device, job.threads)
    columns = [SHORT_NAMES.get(c, c) for c in bundle.classes]
    volume = _open_volume(job.volume)
    total = len(table)
    chunks = range(0, total, CHUNK_SYNAPSES)
    stored = [parts / f"chunk_{i // CHUNK_SYNAPSES:06d}.parquet" for i in chunks]
    pairs = zip(chunks, stored, strict=True)
    done = sum(min(CHUNK_SYNAPSES, total - i) for i, p in pairs if p.exists())
    resumed_from = done
    progress(done, total)
    for i, path in zip(chunks, stored, strict=True):
        if path.exists():
            continue
        if cancelled():
            raise JobStopped("cancelled")
        rows = table.iloc[i : i + CHUNK_SYNAPSES]
        centers = rows[["z_nm", "y_nm", "x_nm"]].to_numpy()
        frame = pd.DataFrame(_predict(predictor, volume, centers), columns=columns)
        frame.to_parquet(path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        done += len(rows)
        progress(done, total)
    probabilities = pd.concat([pd.read_parquet(p) for p in stored], ignore_index=True)
    _write_outputs(table, probabilities, columns, job, out_dir)
    return {
        "total": total,
        "predicted": total - resumed_from,
        "resumed_from": resumed_from,
        "seconds": time.perf_counter() - start,
    }


# -- INTERIM stand-in for predict-positions (issue #12) ------------------------------------------


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".feather":
            return pd.read_feather(path)
    except Exception as error:  # noqa: BLE001 - any reader failure is a bad table
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadTable(f"{path}: not a readable {suffix[1:]} table: {first}") from None
    raise BadTable(f"{path}: unknown table type {suffix!r}; use .csv, .parquet or .feather")


def _read_positions(path: Path, options: dict) -> pd.DataFrame:
    table = _read_table(path)
    columns = next((c for c in POSITION_COLUMNS if set(c) <= set(table.columns)), None)
    if columns is None:
        raise BadTable(
            f"{path}: no position columns: expected x, y, z or pre_x, pre_y, pre_z "
            f"(columns: {', '.join(map(str, table.columns))})"
        )
    out = pd.DataFrame(index=table.index)
    id_column = next((c for c in ID_COLUMNS if c in table.columns), None)
    out["id"] = table[id_column] if id_column else np.arange(len(table))
    neuron = next((c for c in NEURON_COLUMNS if c in table.columns), None)
    out["neuron_id"] = table[neuron] if neuron else pd.NA
    units = options.get("units", "nm")
    voxel_xyz = options.get("voxel_size")
    if units == "voxels" and not voxel_xyz:
        raise BadTable(f"{path}: positions in voxels need a voxel size (x,y,z in nm)")
    scale = np.asarray(voxel_xyz if units == "voxels" else (1, 1, 1), float)
    for axis, column, factor in zip("xyz", columns, scale, strict=True):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna() | table[column].isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BadTable(
                f"{path}: column {column!r} row {row + 1}: {table[column].iloc[row]!r} "
                "is not a number"
            )
        out[axis] = table[column]
        out[f"{axis}_nm"] = values.to_numpy(float) * factor
    return out.reset_index(drop=True)


def _load_bundle(path: Path, device: str | None, threads: int | None):
    from synister.models.bundle import load_bundle
    from synister.predict.engine import Predictor

    bundle = load_bundle(path)
    predictor = Predictor(
        bundle.build_model(),
        bundle.input_shape_vox,
        bundle.classes,
        device=device,
        threads=threads,
        temperature=bundle.temperature,
    )
    return bundle, predictor


def _open_volume(choice: VolumeChoice):
    from synister.volumes import Volume

    return Volume(choice.url, choice.dataset, voxel_size_nm=choice.voxel_size_nm)


def _predict(predictor, volume, centers_zyx_nm: np.ndarray) -> np.ndarray:
    out = []
    ids = np.arange(len(centers_zyx_nm), dtype=np.int64)
    predictor.predict_volume(volume, ids, centers_zyx_nm, lambda ids, p: out.append(p))
    return np.concatenate(out)


def _write_outputs(table, probabilities, columns, job: EngineJob, out_dir: Path) -> None:
    synapses = pd.concat([table, probabilities], axis=1)
    values = probabilities.to_numpy()
    synapses["top_nt"] = np.asarray(columns)[values.argmax(axis=1)]
    synapses["top_nt_conf"] = values.max(axis=1)
    synapses["status"] = "ok"
    synapses.to_parquet(out_dir / "synapses.parquet", index=False)
    synapses.to_csv(out_dir / "synapses.csv", index=False)
    grouped = synapses.dropna(subset=["neuron_id"]).groupby("neuron_id")
    neurons = grouped[columns].mean()
    neurons.insert(0, "synapses", grouped.size())
    neurons["top_nt"] = neurons[columns].idxmax(axis=1)
    neurons["top_nt_conf"] = neurons[columns].max(axis=1)
    neurons = neurons.reset_index()
    neurons.to_parquet(out_dir / "neurons.parquet", index=False)
    neurons.to_csv(out_dir / "neurons.csv", index=False)
    rows = "".join(
        f"<tr><td>{html.escape(str(r.neuron_id))}</td><td>{r.synapses}</td>"
        f"<td>{html.escape(r.top_nt)}</td><td>{r.top_nt_conf:.2f}</td></tr>"
        for r in neurons.itertuples()
    )
    (out_dir / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>synister predictions</title>"
        f"<h1>Predictions</h1><p>{len(synapses)} synapses, {len(neurons)} neurons; model "
        f"{html.escape(job.bundle.name)}, volume {html.escape(job.volume.url)}</p>"
        f"<table><tr><th>neuron</th><th>synapses</th><th>top_nt</th><th>conf</th></tr>{rows}"
        "</table>"
    )
