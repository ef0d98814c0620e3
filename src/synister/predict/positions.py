"""``predict-positions`` without a database: a table of positions, a model bundle and a volume
through the one engine, into a per-synapse table with a status for every row.

Rows are predicted by their row number, never by their place in a filtered list: a position
outside the volume keeps its row, with status ``outside_volume`` and no probabilities, and no
other row moves (the original's companion tool paired predictions with an unfiltered id list
after dropping positions, so every later row got the wrong id).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import WorkerConfig
from ..data import usable_cpus
from ..models import LoadedModel, load_model
from ..tables import PositionTable, read_positions
from ..volumes import Volume
from ..volumes.sanity import (
    OUTSIDE_VOLUME,
    STATUSES,
    PositionCheck,
    PositionWarning,
    check_positions,
    locate,
    patch_status,
    require_fit,
)
from .engine import Augmenter, Predictor
from .neurons import probability_frame
from .sources import reading_order
from .threads import default_read_workers, default_threads

#: patches per network pass where the caller does not say
BATCH_SIZE = 32


class VolumeMismatch(ValueError):
    """The volume's voxel size is not the one the model was trained on."""


def synapse_table(
    rows: pd.DataFrame,
    probabilities: np.ndarray,
    classes: Sequence[str],
    status: np.ndarray,
    naming: str = "short",
) -> pd.DataFrame:
    """The per-synapse output of both front-ends (``predict-positions``, ``predict-volume``):
    ``rows`` (:func:`~synister.tables.position_rows`), one probability column per
    class, ``top_nt``, ``top_nt_conf`` and ``status``; ``probabilities`` is NaN where a row
    was not predicted."""
    rows = rows.reset_index(drop=True)
    frame = pd.concat([rows, probability_frame(probabilities, classes, naming)], axis=1)
    frame["status"] = pd.array(np.asarray(status, dtype=object), dtype="string")
    return frame


def check_voxel_size(model, volume: Volume) -> None:
    """A network sees patches at the voxel size it was trained on, or its output means
    nothing; raises :class:`VolumeMismatch` otherwise."""
    trained = np.asarray(model.voxel_size_nm, dtype=np.float64)
    if not np.allclose(volume.voxel_size_nm, trained):
        raise VolumeMismatch(
            f"{volume.location}: voxel size {volume.voxel_size_nm.tolist()} nm (z, y, x), but "
            f"the model {model.path} was trained on {trained.tolist()} nm; use a volume of "
            "that resolution (or allow it explicitly)"
        )


def open_model(model) -> LoadedModel:
    """``model`` (a path, or a loaded bundle) loaded (see :func:`~synister.models.load_model`),
    or as it is."""
    return model if isinstance(model, LoadedModel) else load_model(model)


@dataclass
class PositionsJob:
    """Everything checked and loaded, nothing predicted: the table, the model and its
    predictor, the volume and the status of every row."""

    table: PositionTable
    model: LoadedModel
    predictor: Predictor
    volume: Volume
    volume_source: str  # the --volume given
    dataset: str | None
    status: np.ndarray  # per row of table.rows
    #: where the positions fall in the volume, and the likely mix-up where most do not fit
    check: PositionCheck | None = None
    #: what the user must hear before trusting the output (a likely units or axis mix-up)
    warnings: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """The warnings, and why a run writes no per-neuron summary where it writes none."""
        missing = self.table.missing_neurons_note()
        return self.warnings + ([missing] if missing else [])

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes)

    @property
    def predictable(self) -> np.ndarray:
        """Indices into ``table.rows`` of the rows to predict."""
        return np.flatnonzero(self.status != OUTSIDE_VOLUME)

    def identity(self) -> dict:
        """What determines the stored numbers (a resumed run must agree on all of it)."""
        volume = self.volume
        return {
            "table": {k: v for k, v in self.table.describe().items() if k != "neurons_missing"},
            "bundle": self.model.identity_record(),
            "volume": {
                "location": volume.location,
                "shape_vox": list(volume.shape_vox),
                "voxel_size_nm": volume.voxel_size_nm.tolist(),
                "offset_nm": volume.offset_nm.tolist(),
                "placement": volume.placement,
            },
            "precision": self.predictor.precision,
            "tta": self.predictor.describe()["tta"],
        }

    def predict(
        self,
        rows: np.ndarray,
        sink: Callable[[np.ndarray, np.ndarray], None],
        *,
        on_computed: Callable[[int], None] | None = None,
        tune_threads: bool = False,
    ) -> int:
        """Predict ``rows`` (indices into ``table.rows``) in reading order; ``sink`` gets the
        indices and probabilities of each batch."""
        rows = np.asarray(rows, dtype=np.int64)
        block_nm = np.asarray(self.predictor.input_shape_vox) * self.volume.voxel_size_nm
        order = reading_order(self.table.centers_zyx_nm(rows), block_nm)
        rows = rows[order]
        del order
        return self.predictor.predict_volume(
            self.volume,
            rows,
            self.table.centers_zyx_nm(rows),  # again, in that order: one copy at a time
            sink,
            on_computed=on_computed,
            tune_threads=tune_threads,
        )

    def result(self, probabilities: np.ndarray, naming: str = "short") -> pd.DataFrame:
        """The per-synapse table: the input columns, one probability column per class,
        ``top_nt``, ``top_nt_conf`` and ``status``; ``probabilities`` (rows, classes) is NaN
        where a row was not predicted."""
        return synapse_table(self.table.rows, probabilities, self.classes, self.status, naming)


def default_devices_and_threads() -> tuple[int | None, int, bool]:
    """torch threads, reading processes and whether to tune threads, as ``synister predict``
    chooses them for this machine (see :mod:`synister.predict.threads`)."""
    worker = WorkerConfig(num_cpus=usable_cpus())
    threads = default_threads(worker, 1)
    return threads, default_read_workers(worker, 1), threads is not None


def prepare_positions(
    bundle: str | Path | LoadedModel,
    volume: str | Path | Volume,
    table: str | Path | pd.DataFrame | PositionTable,
    *,
    dataset: str | None = None,
    units: str = "nm",
    voxel_size: str | float | Sequence[float] | None = None,
    id_column: str | None = None,
    neuron_column: str | None = None,
    position_columns: Sequence[str] | None = None,
    neurons: str | Path | Sequence | None = None,
    device: str | None = None,
    precision: str = "fp32",
    batch_size: int | None = None,
    threads: int | None = None,
    read_workers: int = 0,
    tta: Augmenter | None = None,
    allow_other_voxel_size: bool = False,
    strict: bool = False,
) -> PositionsJob:
    """Read the table, load the model (a bundle, or any form :func:`~synister.models.
    load_model` takes), open the volume and check they fit (see :func:`predict_positions`);
    errors name the file, column and row.

    Every front-end (the commands, the service) gets the positions check here: where most
    positions fall outside the volume (a units or axis mix-up, see
    :func:`synister.volumes.sanity.check_positions`) the job carries a warning naming the
    likely cause, or with ``strict`` this raises
    :class:`~synister.volumes.sanity.PositionMismatch`."""
    if not isinstance(table, PositionTable):
        table = read_positions(
            table,
            id_column=id_column,
            neuron_column=neuron_column,
            position_columns=position_columns,
            units=units,
            voxel_size=voxel_size,
            neurons=neurons,
        )
    model = open_model(bundle)
    source = str(volume) if not isinstance(volume, Volume) else volume.location
    if not isinstance(volume, Volume):
        volume = Volume(volume, dataset, scale_nm=model.voxel_size_nm)
    volume.require_uint8()
    volume.warn_out_of_bounds = False  # reported per row instead
    if not allow_other_voxel_size:
        check_voxel_size(model, volume)
    predictor = Predictor.from_model(
        model,
        device=device,
        batch_size=batch_size or BATCH_SIZE,
        precision=precision,
        threads=threads,
        read_workers=read_workers,
        tta=tta,
    )
    centers = table.centers_zyx_nm()
    status = locate(volume, centers, model.input_shape_vox)
    check = check_positions(
        volume,
        centers,
        model.input_shape_vox,
        units=table.units,
        voxel_size_xyz_nm=table.voxel_size_xyz_nm,
        status=status,
    )
    warning = require_fit(check, strict, table.source)
    notes = [warning] if warning else []
    return PositionsJob(table, model, predictor, volume, source, dataset, status, check, notes)


def predict_positions(
    bundle: str | Path | LoadedModel,
    volume: str | Path | Volume,
    table: str | Path | pd.DataFrame,
    *,
    naming: str = "short",
    **options,
) -> pd.DataFrame:
    """Predict every position of ``table`` with a model bundle (or any model
    :func:`~synister.models.load_model` takes) on a volume, in memory.

    ``table`` is a CSV/Parquet/Feather file or a DataFrame; columns are found by name (id:
    ``id``, ``synapse_id``, ``syn_id``; neuron: ``pre_pt_root_id``, ``bodyId``, ``body``,
    ``skeleton_id``, ``skid``; positions: ``x, y, z``, ``pre_x, pre_y, pre_z`` or a
    ``pre_pt_position`` list) unless named. ``options``: ``dataset``, ``units`` ("nm", or
    "voxels" with ``voxel_size``: one number or x, y, z nm), ``id_column``,
    ``neuron_column``, ``position_columns``, ``neurons``, ``device``, ``precision``,
    ``batch_size``, ``threads``, ``read_workers``, ``tta``, ``strict`` (the keywords of
    ``synister.predict.prepare_positions``, which checks and loads without predicting).
    Where most positions fall outside the volume a :class:`PositionWarning` names the likely
    units or axis mix-up (``strict=True``: a ``PositionMismatch`` error instead). Returns one
    row per input row in input order:
    ``row``, ``id``, ``neuron_id``, the caller's ``x, y, z``, ``x_nm, y_nm, z_nm``, one
    probability per class (``gaba, ach, glut, oct, ser, da`` or full names with
    ``naming="full"``), ``top_nt``, ``top_nt_conf`` and ``status`` (see :data:`STATUSES`).
    The command ``synister predict-positions`` writes the same table, resumably, with a
    per-neuron summary and a report.
    """
    job = prepare_positions(bundle, volume, table, **options)
    for text in job.warnings:
        warnings.warn(text, PositionWarning, stacklevel=2)
    probabilities = np.full((len(job.table.rows), len(job.classes)), np.nan, dtype=np.float32)

    def store(rows: np.ndarray, batch: np.ndarray) -> None:
        probabilities[rows] = batch

    job.predict(job.predictable, store)
    return job.result(probabilities, naming)


__all__ = [
    "BATCH_SIZE",
    "OUTSIDE_VOLUME",
    "PositionCheck",
    "PositionWarning",
    "STATUSES",
    "PositionsJob",
    "VolumeMismatch",
    "check_voxel_size",
    "default_devices_and_threads",
    "locate",
    "open_model",
    "patch_status",
    "predict_positions",
    "prepare_positions",
    "synapse_table",
]
