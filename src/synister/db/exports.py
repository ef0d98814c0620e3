"""Writing a database back out: the original synister JSON export, or Parquet tables.

The JSON files have the layout :mod:`synister.db.imports` reads, so JSON -> database -> JSON
gives back the records (up to the normalisations done on import: canonical transmitter names,
sorted transmitter lists, the original's "unknown" hemilineage names as null).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .base import Database

EXPORT_FORMATS = ("json", "parquet")
EXPORT_FILES = ("synapses", "skeletons", "hemi_lineages")


class ExportExists(FileExistsError):
    """An export file is already there and overwriting was not asked for."""


def _nt_list(values) -> list[str] | None:
    return sorted(values) if values else None


def _number(value: float) -> int | float:
    """Integral floats as ints, so integer nm positions read back exactly as written."""
    return int(value) if float(value).is_integer() else float(value)


def _optional_int(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _synapse_records(synapses: pd.DataFrame) -> dict[str, dict]:
    records = {}
    columns = ["synapse_id", "x", "y", "z", "skeleton_id", "brain_region", "prepost", "confidence"]
    for ident, x, y, z, skeleton, region, prepost, confidence in synapses[columns].itertuples(
        index=False, name=None
    ):
        record = {"x": _number(x), "y": _number(y), "z": _number(z)}
        record["skeleton_id"] = _optional_int(skeleton)
        if region is not None:
            record["brain_region"] = region
        if prepost is not None:
            record["prepost"] = prepost
        if confidence is not None and not math.isnan(confidence):
            record["confidence"] = float(confidence)
        records[str(int(ident))] = record
    return records


def export_json(db: Database, out_dir: Path | str, overwrite: bool = False) -> list[Path]:
    """Write ``synapses.json``, ``skeletons.json`` and ``hemi_lineages.json`` to ``out_dir``."""
    out_dir = Path(out_dir)
    paths = _targets(out_dir, "json", overwrite)
    synapses = db.synapses()
    skeletons = db.skeletons()
    hemi_lineages = db.hemi_lineages()
    documents = {
        "synapses": _synapse_records(synapses),
        "skeletons": {
            str(int(ident)): {"hemi_lineage_id": _optional_int(hemi), "nt_known": _nt_list(nts)}
            for ident, hemi, nts in skeletons[
                ["skeleton_id", "hemi_lineage_id", "nt_known"]
            ].itertuples(index=False, name=None)
        },
        "hemi_lineages": {
            str(int(ident)): {"nt_guess": _nt_list(nts), "hemi_lineage_name": name}
            for ident, name, nts in hemi_lineages[
                ["hemi_lineage_id", "hemi_lineage_name", "nt_guess"]
            ].itertuples(index=False, name=None)
        },
    }
    for kind, path in zip(EXPORT_FILES, paths, strict=True):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(documents[kind], f)
    return paths


def export_parquet(db: Database, out_dir: Path | str, overwrite: bool = False) -> list[Path]:
    """Write ``synapses.parquet``, ``skeletons.parquet`` and ``hemi_lineages.parquet``.

    Transmitter sets become sorted lists of names (empty = unknown); positions are nm.
    """
    out_dir = Path(out_dir)
    paths = _targets(out_dir, "parquet", overwrite)
    synapses = db.synapses()
    synapses = synapses.drop(columns=[c for c in ("nt_known", "hemi_lineage_id") if c in synapses])
    skeletons = db.skeletons()
    skeletons["nt_known"] = skeletons["nt_known"].map(sorted)
    hemi_lineages = db.hemi_lineages()
    hemi_lineages["nt_guess"] = hemi_lineages["nt_guess"].map(sorted)
    for frame, path in zip((synapses, skeletons, hemi_lineages), paths, strict=True):
        frame.to_parquet(path, index=False)
    return paths


def export_database(
    db: Database, out_dir: Path | str, fmt: str = "json", overwrite: bool = False
) -> list[Path]:
    """Export ``db`` to ``out_dir`` in format ``fmt`` (json or parquet); returns the files."""
    if fmt == "json":
        return export_json(db, out_dir, overwrite)
    if fmt == "parquet":
        return export_parquet(db, out_dir, overwrite)
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")


def _targets(out_dir: Path, suffix: str, overwrite: bool) -> list[Path]:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportExists(f"{out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{kind}.{suffix}" for kind in EXPORT_FILES]
    present = [str(p) for p in paths if p.exists()]
    if present and not overwrite:
        raise ExportExists(f"{', '.join(present)}: already there (ask to overwrite)")
    return paths
