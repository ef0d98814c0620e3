"""Reading synapses, skeletons and hemilineages from files into a database, as one transaction.

Two kinds of input:

* the original synister export: ``synapses*.json``, ``skeletons*.json`` and
  ``hemi_lineages*.json`` (or ``hemilineages*.json``), each a JSON object keyed by id
  (:mod:`~synister.db.import_json`);
* synapse tables (CSV/TSV, Parquet, Feather), one row per synapse, whose transmitter label
  comes from a column, a fixed label, or the file name (``gaba.csv``). Every neuron a table
  names becomes a skeleton whose ``nt_known`` is that label (:mod:`~synister.db.import_tables`,
  read by :mod:`synister.tables` as every command reads tables).

Every file is parsed and checked before anything is written, then the whole batch goes to the
database in one :meth:`Database.import_records` call, so bad input leaves the database as it
was. Errors name the file, the line (CSV), row (Parquet/Feather) or key (JSON), and the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..tables import FOLDER_ENDINGS, first_duplicate
from ..tables import TableError as BadInput
from .base import Database
from .import_json import EXPORT_KINDS, export_kind, read_export_file
from .import_tables import (
    DEFAULT_OPTIONS,
    TABLE_FIELDS,
    TableOptions,
    more,
    read_table,
    reject_conflicting_labels,
)

#: endings of the tables a folder contributes
TABLE_SUFFIXES = FOLDER_ENDINGS

__all__ = [
    "EXPORT_KINDS",
    "TABLE_FIELDS",
    "TABLE_SUFFIXES",
    "BadInput",
    "ImportSummary",
    "TableOptions",
    "expand_paths",
    "export_kind",
    "import_batch",
    "import_files",
    "read_export_file",
    "read_inputs",
    "read_table",
]


@dataclass
class ImportSummary:
    """What one import added.

    ``skeletons_without_transmitter``: imported skeletons whose ``nt_known`` was missing,
    null, empty or the original's ``["none"]``; they are stored as "unknown" and take no part
    in splits, so the count is shown rather than passed over.
    """

    files: list[str]
    synapses: int
    skeletons: int
    hemi_lineages: int
    skeletons_already_stored: int = 0
    skeletons_without_transmitter: int = 0
    #: the imported synapses' positions, lowest and highest per axis (z, y, x nm)
    low_nm: tuple[float, float, float] | None = None
    high_nm: tuple[float, float, float] | None = None

    def as_dict(self) -> dict:
        return {
            "files": self.files,
            "synapses": self.synapses,
            "skeletons": self.skeletons,
            "hemi_lineages": self.hemi_lineages,
            "skeletons_already_stored": self.skeletons_already_stored,
            "skeletons_without_transmitter": self.skeletons_without_transmitter,
            "low_nm": self.low_nm,
            "high_nm": self.high_nm,
        }


@dataclass
class _Batch:
    """Parsed input: record frames carrying ``_file`` and ``_at`` (line/row/key text)."""

    synapses: list[pd.DataFrame] = field(default_factory=list)
    skeletons: list[pd.DataFrame] = field(default_factory=list)
    hemi_lineages: list[pd.DataFrame] = field(default_factory=list)
    labels: list[pd.DataFrame] = field(default_factory=list)  # skeleton_id, nt, _file, _at
    files: list[str] = field(default_factory=list)


def _place(frame: pd.DataFrame, row: int) -> str:
    return f"{frame['_file'].iloc[row]}, {frame['_at'].iloc[row]}"


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    """Files to import: files as given; a folder gives its export JSON files, else its tables."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            exports = sorted(p for p in path.iterdir() if p.is_file() and export_kind(p))
            tables = sorted(
                p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(TABLE_SUFFIXES)
            )
            if not exports and not tables:
                raise BadInput(
                    f"{path}: folder holds no export files (synapses*.json, skeletons*.json, "
                    f"hemi_lineages*.json) and no tables ({', '.join(TABLE_SUFFIXES)})"
                )
            files.extend(exports or tables)
        elif path.is_file():
            files.append(path)
        else:
            raise BadInput(f"{path}: no such file or folder")
    return files


def read_inputs(
    paths: Iterable[Path | str], options: TableOptions = DEFAULT_OPTIONS, progress: bool = False
) -> _Batch:
    """Parse every input file (nothing is written)."""
    if not paths:
        raise BadInput("nothing to import: give export JSON files, tables or folders")
    batch = _Batch()
    files = expand_paths(paths)
    for path in tqdm(files, desc="reading", unit="file", disable=None if progress else True):
        batch.files.append(str(path))
        if path.suffix.lower() == ".json":
            frame = read_export_file(path)
            getattr(batch, export_kind(path)).append(frame)
        else:
            synapses, labels = read_table(path, options)
            batch.synapses.append(synapses)
            batch.labels.append(labels)
    return batch


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
    return pd.concat(frames, ignore_index=True) if frames else None


def _reject_repeats(frame: pd.DataFrame, id_name: str, what: str) -> None:
    twice = first_duplicate(frame[id_name])
    if twice is not None:
        n_ids = frame[id_name][frame[id_name].duplicated(keep=False)].nunique()
        raise BadInput(
            f"{what} id {frame[id_name].iloc[twice[0]]} appears twice: {_place(frame, twice[0])} "
            f"and {_place(frame, twice[1])}" + more(n_ids, "repeated ids")
        )


def _reject_stored(frame: pd.DataFrame, id_name: str, stored: Iterable[int], what: str) -> None:
    stored = pd.Index(stored)
    clash = frame[id_name].isin(stored).to_numpy()
    if clash.any():
        row = int(np.flatnonzero(clash)[0])
        raise BadInput(
            f"{what} id {frame[id_name].iloc[row]} ({_place(frame, row)}) is already stored in the "
            f"database" + more(int(clash.sum()), "ids")
        )


def _label_skeletons(
    labels: pd.DataFrame, skeletons: pd.DataFrame | None, db: Database
) -> tuple[pd.DataFrame, int]:
    """New skeletons for labelled neurons; a label that disagrees with a stored or imported
    ``nt_known`` is an error naming both places. Returns (new skeletons, count already stored)."""
    reject_conflicting_labels(labels)
    labels = labels.drop_duplicates("skeleton_id").reset_index(drop=True)
    known = []
    if skeletons is not None:
        known.append(skeletons.assign(_source=skeletons["_file"] + ", " + skeletons["_at"]))
    stored = db.skeletons(skeleton_ids=labels["skeleton_id"].tolist())
    if len(stored):
        known.append(stored.assign(_source="the database"))
    n_stored = len(stored)
    if known:
        known_frame = pd.concat(known, ignore_index=True)
        merged = labels.merge(known_frame[["skeleton_id", "nt_known", "_source"]], on="skeleton_id")
        differs = [
            frozenset(k) != frozenset([nt])
            for k, nt in zip(merged["nt_known"], merged["nt"], strict=True)
        ]
        if any(differs):
            row = merged.loc[differs].iloc[0]
            known_text = ",".join(sorted(row["nt_known"])) or "unknown"
            raise BadInput(
                f"neuron {row['skeleton_id']} is labelled {row['nt']} at {row['_file']}, "
                f"{row['_at']} but {known_text} in {row['_source']}" + more(sum(differs), "neurons")
            )
        labels = labels.loc[~labels["skeleton_id"].isin(known_frame["skeleton_id"])]
    new = pd.DataFrame(
        {
            "skeleton_id": labels["skeleton_id"].astype("int64").to_numpy(),
            "hemi_lineage_id": pd.array([pd.NA] * len(labels), dtype="Int64"),
            "nt_known": [frozenset([nt]) for nt in labels["nt"]],
        }
    )
    return new, n_stored


def _public(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    if frame is None or frame.empty:
        return None
    return frame.drop(columns=[c for c in frame.columns if c.startswith("_")]).reset_index(
        drop=True
    )


def import_files(
    db: Database,
    paths: Sequence[Path | str],
    options: TableOptions = DEFAULT_OPTIONS,
    progress: bool = False,
) -> ImportSummary:
    """Import export JSON files, synapse tables or folders of them into ``db``, all or nothing.

    Raises :class:`BadInput` naming the file and line/key/field for malformed input, ids repeated
    in the input or already stored, and neurons labelled two ways; the database is unchanged then.
    """
    return import_batch(db, read_inputs(paths, options, progress))


def import_batch(db: Database, batch: _Batch) -> ImportSummary:
    """Import what :func:`read_inputs` read into ``db``, all or nothing (see
    :func:`import_files`); reading first checks every file before a database is opened."""
    synapses = _concat(batch.synapses)
    skeletons = _concat(batch.skeletons)
    hemi_lineages = _concat(batch.hemi_lineages)
    if synapses is not None:
        _reject_repeats(synapses, "synapse_id", "synapse")
        found = db.synapses(synapse_ids=synapses["synapse_id"].tolist())
        _reject_stored(synapses, "synapse_id", found["synapse_id"], "synapse")
    if skeletons is not None:
        _reject_repeats(skeletons, "skeleton_id", "skeleton")
        found = db.skeletons(skeleton_ids=skeletons["skeleton_id"].tolist())
        _reject_stored(skeletons, "skeleton_id", found["skeleton_id"], "skeleton")
    if hemi_lineages is not None:
        _reject_repeats(hemi_lineages, "hemi_lineage_id", "hemi lineage")
        stored = db.hemi_lineages()["hemi_lineage_id"]
        _reject_stored(hemi_lineages, "hemi_lineage_id", stored, "hemi lineage")
    n_stored = 0
    if batch.labels:
        labelled, n_stored = _label_skeletons(
            pd.concat(batch.labels, ignore_index=True), skeletons, db
        )
        skeletons = (
            pd.concat([_public(skeletons), labelled], ignore_index=True)
            if skeletons is not None
            else labelled
        )
    synapses, skeletons, hemi_lineages = map(_public, (synapses, skeletons, hemi_lineages))
    db.import_records(synapses=synapses, skeletons=skeletons, hemi_lineages=hemi_lineages)
    positions = None if synapses is None else synapses[["z", "y", "x"]].to_numpy(float)
    return ImportSummary(
        files=batch.files,
        synapses=0 if synapses is None else len(synapses),
        skeletons=0 if skeletons is None else len(skeletons),
        hemi_lineages=0 if hemi_lineages is None else len(hemi_lineages),
        skeletons_already_stored=n_stored,
        skeletons_without_transmitter=0
        if skeletons is None
        else int(sum(not known for known in skeletons["nt_known"])),
        low_nm=None if positions is None else tuple(positions.min(axis=0).tolist()),
        high_nm=None if positions is None else tuple(positions.max(axis=0).tolist()),
    )
