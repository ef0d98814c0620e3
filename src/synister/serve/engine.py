"""The service's one door into the engine of `synister predict-positions`.

The web app calls :func:`check_table` on an upload (a :class:`TableError` becomes the 422
message, word for word what `predict-positions` says) and a worker calls :func:`run_job`, which
is :func:`~synister.predict.positions.prepare_positions` and
:func:`~synister.predict.store.run_positions` into the job's output folder: the same tables,
report and resumable parts as the command. Nothing else in :mod:`synister.serve` knows how
prediction is done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from synister.tables import TableError, TableLimits

from .config import LimitsSection, VolumeChoice

#: rows of a CSV table read and checked at a time (see :func:`synister.tables.read_positions`)
CHUNK_ROWS = 65_536
#: the options of a job that reach the table reader (what the API lets a user set: those of
#: predict-positions)
TABLE_OPTIONS = ("id_column", "neuron_column", "position_columns", "units", "voxel_size")


class JobStopped(Exception):  # noqa: N818 - a stop, not an error
    """Raised from the progress callback to stop a job after a stored part (what is stored
    stays)."""


@dataclass(frozen=True)
class EngineJob:
    """What a worker hands the engine: paths resolved from the config, never from a user."""

    table: Path
    bundle: Path
    volume: VolumeChoice
    options: dict = field(default_factory=dict)
    device: str | None = None  # torch device; default a GPU when present
    threads: int | None = None  # torch threads; default as predict-positions chooses
    #: the name the user gave the table, shown in the report instead of the service's path
    input_name: str | None = None
    #: what the report calls the bundle and the volume ("bundle", "volume": the config's names)
    shown_as: dict = field(default_factory=dict)
    #: synapses stored at a time at most (default predict-positions'; see run_positions)
    part_rows: int | None = None
    #: the bounds the table was checked within when it was submitted
    table_limits: TableLimits = TableLimits()


def table_limits(limits: LimitsSection) -> TableLimits:
    """The table reader's bounds of the service's ``[limits]``."""
    return TableLimits(max_rows=limits.rows_per_job, max_row_bytes=limits.row_bytes)


def _table_options(options: dict | None) -> dict:
    return {k: v for k, v in (options or {}).items() if k in TABLE_OPTIONS}


def check_table(path: Path, options: dict | None = None, limits: TableLimits | None = None) -> int:
    """The number of rows predict-positions would read from ``path``, read within
    ``limits``; raises :class:`TableError` naming the file, column and row of what is wrong."""
    from synister.tables import read_positions

    table = read_positions(path, **_table_options(options), limits=limits, chunk_rows=CHUNK_ROWS)
    return len(table.rows)


def run_job(job: EngineJob, out_dir: Path, progress: Callable[[int, int], None]) -> dict:
    """Predict ``job`` into ``out_dir`` as ``synister predict-positions --csv`` does
    (synapses.parquet/.csv, neurons.parquet, report.html, run.json), resuming what an earlier
    attempt stored there.

    ``progress(stored, total)`` is called before the first batch and after each stored part;
    it may raise :class:`JobStopped`. Returns the run's summary (see
    :func:`~synister.predict.store.run_positions`).
    """
    from synister.memory import release_memory
    from synister.models import load_model
    from synister.predict.positions import default_devices_and_threads, prepare_positions
    from synister.predict.store import run_positions
    from synister.tables import read_positions
    from synister.volumes import Volume

    table = read_positions(
        job.table, **_table_options(job.options), limits=job.table_limits, chunk_rows=CHUNK_ROWS
    )
    release_memory()  # the reader's buffers, before the model and the volume
    if job.input_name:
        table = dataclasses.replace(table, source=job.input_name)
    threads, tune = job.threads, False
    if threads is None:
        threads, _, tune = default_devices_and_threads()
    choice = job.volume
    model = load_model(job.bundle)
    volume = Volume(
        choice.url, choice.dataset, voxel_size_nm=choice.voxel_size_nm,
        scale_nm=model.voxel_size_nm,
    )  # fmt: skip
    prepared = prepare_positions(
        model,
        volume,
        table,
        dataset=choice.dataset,
        device=job.device,
        threads=threads,
        read_workers=0,  # a reading thread: nothing is left behind when a worker is killed
    )
    return run_positions(
        prepared,
        out_dir,
        table_file=job.table,
        csv=True,
        progress=False,
        tune_threads=tune,
        viewer_source=choice.viewer_source,
        on_progress=progress,
        shown_as=job.shown_as,
        **({"part_rows": job.part_rows} if job.part_rows else {}),
    )


__all__ = ["EngineJob", "JobStopped", "TableError", "check_table", "run_job", "table_limits"]
