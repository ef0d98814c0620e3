"""The database interface every backend implements.

Tables travel as pandas DataFrames so that every bulk operation is set-based (one statement or
one COPY per call, never a round trip per row).

Frame layouts (column: dtype, meaning). Positions are **nm**, stored per axis as z, y, x.

``synapses``
    synapse_id: int64; z, y, x: float64 (nm); skeleton_id: Int64 (nullable);
    brain_region: object (str or None); prepost: object ("pre", "post" or None);
    confidence: float64 (NaN when unknown).
``skeletons``
    skeleton_id: int64; hemi_lineage_id: Int64 (nullable);
    nt_known: object (frozenset of canonical transmitter names, empty = unknown).
``hemi_lineages``
    hemi_lineage_id: int64; hemi_lineage_name: object (str or None; the original's "unknown"
    names NA, NONE, NEW, UNKNOWN<n> are read as None); nt_guess: object (frozenset).

Synapse queries return the synapse columns plus ``nt_known`` and ``hemi_lineage_id`` of the
synapse's skeleton, and ``part`` when a split is named.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SPLIT_PARTS = ("train", "validation", "test")


class DatabaseError(RuntimeError):
    """Any failure of a database operation; the stored data is unchanged when it is raised."""


class DuplicateIdError(DatabaseError):
    """An import would store an id that is already stored (or appears twice in the input).

    ``ids`` holds the offending ids and ``table`` the table they belong to, so a caller can act.
    """

    def __init__(self, message: str, ids: Iterable[int] = (), table: str | None = None):
        super().__init__(message)
        self.ids = sorted(int(i) for i in ids)
        self.table = table


class SplitExists(DatabaseError):
    """A split of that name is already stored."""


def split_exists(name: str) -> SplitExists:
    """The error for a split name that is taken, saying how to free it."""
    return SplitExists(
        f"a split named {name!r} is already stored; remove it with `synister split remove "
        f"{name}` (Database.remove_split) or choose another name"
    )


class UnknownSplit(DatabaseError):
    """No split of that name is stored."""


class PredictionRunExists(DatabaseError):
    """A prediction run of that name exists and overwrite was not asked for."""


@dataclass
class ValidationReport:
    """What :meth:`Database.validate` found; ids are listed, not just counted, so a user can act."""

    duplicate_synapse_ids: list[int] = field(default_factory=list)
    duplicate_locations: list[tuple[float, float, float]] = field(default_factory=list)  # z,y,x nm
    synapses_without_skeleton: list[int] = field(default_factory=list)  # synapse ids
    skeletons_without_hemi_lineage: list[int] = field(default_factory=list)  # skeleton ids

    @property
    def ok(self) -> bool:
        return not (
            self.duplicate_synapse_ids
            or self.duplicate_locations
            or self.synapses_without_skeleton
            or self.skeletons_without_hemi_lineage
        )


class Database(ABC):
    """A synister database: synapses, skeletons, hemilineages, splits and prediction runs."""

    url: str

    # ---- writing -----------------------------------------------------------------------------
    @abstractmethod
    def import_records(
        self,
        synapses: pd.DataFrame | None = None,
        skeletons: pd.DataFrame | None = None,
        hemi_lineages: pd.DataFrame | None = None,
    ) -> None:
        """Add records in one transaction; on any error nothing is stored.

        Raises :class:`DuplicateIdError` when an id is already stored or repeated in the input.
        """

    @abstractmethod
    def write_split(self, name: str, parts: pd.DataFrame, meta: dict | None = None) -> None:
        """Store split ``name``: ``parts`` has columns synapse_id, part (train/validation/test).

        ``meta`` (JSON-able: grouping, fractions, seed, ...) is kept with it. Raises
        :class:`SplitExists` if the name is taken. One transaction.
        """

    @abstractmethod
    def remove_split(self, name: str) -> None:
        """Delete split ``name``; raises :class:`UnknownSplit` if there is none."""

    @abstractmethod
    def splits(self) -> dict[str, dict]:
        """All stored split names with their meta."""

    # ---- reading -----------------------------------------------------------------------------
    @abstractmethod
    def synapses(
        self,
        *,
        synapse_ids: Iterable[int] | None = None,
        skeleton_ids: Iterable[int] | None = None,
        nts: Iterable[str] | None = None,
        positions_nm: np.ndarray | None = None,
        hemi_lineage_ids: Iterable[int] | None = None,
        hemi_lineage_names: Iterable[str] | None = None,
        split: str | None = None,
        part: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Synapses matching all given filters (None = no filter), ordered by synapse_id.

        ``nts`` matches skeletons whose known set equals the given set (order-free);
        ``positions_nm`` is an (N, 3) z,y,x array of exact positions; ``part`` needs ``split``.
        """

    @abstractmethod
    def skeletons(
        self,
        *,
        skeleton_ids: Iterable[int] | None = None,
        nts: Iterable[str] | None = None,
        hemi_lineage_ids: Iterable[int] | None = None,
        hemi_lineage_names: Iterable[str] | None = None,
        split: str | None = None,
        part: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Skeletons matching all given filters, ordered by skeleton_id.

        With ``split``: skeletons with any synapse in it (in ``part``, when given)."""

    @abstractmethod
    def hemi_lineages(self) -> pd.DataFrame:
        """All hemilineages, ordered by id."""

    @abstractmethod
    def validate(self) -> ValidationReport:
        """Consistency checks over the whole database."""

    @abstractmethod
    def stats(self) -> dict:
        """Counts of synapses, skeletons, hemi_lineages, splits, prediction_runs, and under
        ``"transmitters"`` skeletons/synapses per transmitter set ("gaba,octopamine",
        "unknown"), JSON-able."""

    # ---- predictions (stored under ``<db_name>_predictions.<run>``) ---------------------------
    @abstractmethod
    def create_prediction_run(
        self, run: str, classes: Sequence[str], meta: dict | None = None, overwrite: bool = False
    ) -> None:
        """Create run ``run`` for class order ``classes``; an existing run raises
        :class:`PredictionRunExists` unless ``overwrite`` (then it is emptied first)."""

    @abstractmethod
    def open_prediction_run(self, run: str) -> tuple[list[str], dict]:
        """Class order and meta of an existing run (for resuming); KeyError if absent.

        MongoDB: a run written by the original synister raises ``OriginalRunWithoutClasses``
        (a :class:`DatabaseError`) until :meth:`register_prediction_run` recorded its classes.
        """

    def register_prediction_run(
        self, run: str, classes: Sequence[str], meta: dict | None = None
    ) -> None:
        """Record the class order of a run written by the original synister (only MongoDB
        databases hold such runs; here every run already records its classes)."""
        if run in self.prediction_runs():
            raise DatabaseError(f"prediction run {run!r} already records its class order")
        raise KeyError(f"no prediction run {run!r}")

    @abstractmethod
    def write_predictions(
        self, run: str, synapse_ids: np.ndarray, probabilities: np.ndarray
    ) -> None:
        """Store one batch: ``probabilities`` is (N, n_classes) in the run's class order.

        One transaction per call; a synapse already predicted in this run is replaced, so a
        resumed run never holds two predictions for one synapse.
        """

    @abstractmethod
    def predictions(self, run: str) -> pd.DataFrame:
        """synapse_id plus one float column ``prob_<class>`` per class, ordered by synapse_id."""

    @abstractmethod
    def predicted_synapse_ids(self, run: str) -> np.ndarray:
        """Ids already predicted in ``run`` (int64), for resuming."""

    @abstractmethod
    def prediction_runs(self) -> list[str]:
        """Names of all stored prediction runs."""

    @abstractmethod
    def drop_prediction_run(self, run: str) -> None:
        """Delete a prediction run."""

    def close(self) -> None:  # noqa: B027 - optional for backends without connections
        """Release connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
