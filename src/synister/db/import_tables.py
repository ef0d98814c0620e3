"""Synapse tables (CSV/TSV, Parquet, Feather) as database records: one row per synapse, its
transmitter from a column, a fixed label, or the file name (``gaba.csv``); every neuron a table
names becomes a skeleton whose ``nt_known`` is that label.

The file is read and checked by :mod:`synister.tables`, as ``predict-positions`` reads it (the
same columns found by name, the same x,y,z voxel size, the same one-line errors); ids must be
integers here, since the database keys synapses and skeletons by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..nt import TRANSMITTERS, UnknownTransmitter, canonical
from ..tables import (
    ID_COLUMNS,
    NEURON_COLUMNS,
    check_unique_ids,
    choose_columns,
    find_column,
    numbers,
    position_rows,
    read_frame,
    row_name,
    table_header,
    table_kind,
    table_stem,
)
from ..tables import TableError as BadInput

#: Synapse fields a table column can be mapped to (positions go through ``coordinate_columns``).
TABLE_FIELDS = ("synapse_id", "skeleton_id", "confidence", "brain_region", "prepost")
#: Column names of the optional fields understood without a mapping (case-insensitive); ids and
#: neurons are found as every table reader finds them (:data:`synister.tables.ID_COLUMNS`,
#: :data:`synister.tables.NEURON_COLUMNS`: the male-VNC tables' syn_id and body among them).
FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "confidence": ("confidence", "conf"),
    "brain_region": ("brain_region",),
    "prepost": ("prepost",),
}
#: how ``db import`` names the options behind the columns (in messages)
OPTION_NAMES = {
    "id": "--map COLUMN=synapse_id",
    "neuron": "--map COLUMN=skeleton_id",
    "positions": "--coords",
}


@dataclass(frozen=True)
class TableOptions:
    """How to read a synapse table.

    ``columns`` maps file column names to synister fields (:data:`TABLE_FIELDS`); unmapped
    fields are found by name. ``coordinate_columns`` are the three position columns of the
    file, holding the axes named in ``axis_order`` (e.g. ``"xyz"``); None finds them by name
    (x,y,z; pre_x,pre_y,pre_z; pre_pt_position). ``units`` is ``"nm"`` or ``"voxels"``; voxels
    are multiplied by ``voxel_size_nm`` (z, y, x, as every array inside synister). The label
    comes from ``label_column``, else ``label``, else the file name's stem.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    coordinate_columns: tuple[str, str, str] | None = None
    axis_order: str = "xyz"
    units: str = "nm"
    voxel_size_nm: tuple[float, float, float] | None = None
    label_column: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        for source, target in self.columns.items():
            if target not in TABLE_FIELDS:
                raise BadInput(
                    f"column mapping {source}->{target}: {target!r} is not a synapse field; "
                    f"fields: {', '.join(TABLE_FIELDS)} (positions: coordinate columns)"
                )
        if self.coordinate_columns is not None and len(self.coordinate_columns) != 3:
            raise BadInput(f"need three coordinate columns, got {list(self.coordinate_columns)}")
        if sorted(self.axis_order.lower()) != ["x", "y", "z"]:
            raise BadInput(f"axis order must be a permutation of xyz, got {self.axis_order!r}")
        if self.coordinate_columns is None and self.axis_order.lower() != "xyz":
            raise BadInput(
                f"axis order {self.axis_order!r} (--axis-order) needs the coordinate columns it "
                "applies to (--coords)"
            )
        if self.units not in ("nm", "voxels"):
            raise BadInput(f"units must be 'nm' or 'voxels', got {self.units!r}")
        if self.units == "voxels":
            size = self.voxel_size_nm
            if size is None or len(size) != 3 or not all(float(s) > 0 for s in size):
                raise BadInput(
                    "coordinates in voxels need a voxel size in nm (z, y, x, all positive), "
                    f"got {size}"
                )
        if self.label is not None:
            _canonical_or_bad(self.label, "the fixed label")

    def xyz_columns(self) -> tuple[str, ...] | None:
        """The file's x, y and z columns, in that order; None: found by name."""
        if self.coordinate_columns is None:
            return None
        by_axis = dict(zip(self.axis_order.lower(), self.coordinate_columns, strict=True))
        return tuple(by_axis[axis] for axis in "xyz")


#: the options of a table without any
DEFAULT_OPTIONS = TableOptions()


def _canonical_or_bad(name, where: str) -> str:
    try:
        return canonical(name)
    except UnknownTransmitter as error:
        raise BadInput(f"{where}: {error}") from None


def _field_columns(path: Path, header: list[str], options: TableOptions) -> dict[str, str]:
    """File column per synapse field: the mapping's, else found by name."""
    for source, target in options.columns.items():
        if source not in header:
            raise BadInput(
                f"{path}: column {source!r} (mapped to {target}) not found; "
                f"columns: {', '.join(header)}"
            )
    fields = {target: source for source, target in options.columns.items()}
    for name, candidates in FIELD_COLUMNS.items():
        found = find_column(header, candidates)
        if name not in fields and found is not None:
            fields[name] = found
    return fields


def read_table(
    path: Path | str, options: TableOptions = DEFAULT_OPTIONS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A synapse table as (synapses, labels); both carry ``_file`` and ``_at``.

    ``labels`` has one row per neuron: skeleton_id and its transmitter ``nt``.
    """
    path = Path(path)
    where, csv = str(path), table_kind(path) == "csv"
    header = table_header(path)
    fields = _field_columns(path, header, options)
    voxel = None if options.voxel_size_nm is None else tuple(options.voxel_size_nm)[::-1]
    columns = choose_columns(
        header,
        where,
        id_column=fields.get("synapse_id"),
        neuron_column=fields.get("skeleton_id"),
        position_columns=options.xyz_columns(),
        units=options.units,
        voxel_size=voxel,
        option_names=OPTION_NAMES,
    )
    for found, what, names, target in (
        (columns.id, "synapse id", ID_COLUMNS, "synapse_id"),
        (columns.neuron, "neuron", NEURON_COLUMNS, "skeleton_id"),
    ):
        if found is None:
            raise BadInput(
                f"{path}: no {what} column (looked for {', '.join(names)}; map one with --map "
                f"COLUMN={target}); columns: {', '.join(header)}"
            )
    text = [columns.id, columns.neuron, options.label_column]
    text += [fields[name] for name in ("brain_region", "prepost") if name in fields]
    raw = read_frame(path, [c for c in text if c])
    rows = position_rows(raw, where, columns, csv=csv, integer_ids=True)
    check_unique_ids(rows, where, columns, csv)

    synapses = pd.DataFrame({"synapse_id": rows["id"].astype(np.int64)})
    for axis in "zyx":
        synapses[axis] = rows[f"{axis}_nm"]
    synapses["skeleton_id"] = rows["neuron_id"].astype("Int64")
    for name in ("brain_region", "prepost"):
        values = raw[fields[name]] if name in fields else pd.Series(None, index=raw.index)
        synapses[name] = values.map(lambda v: None if pd.isna(v) else str(v).strip()).astype(object)
    _check_prepost(synapses, raw, fields, where, csv)
    synapses["confidence"] = (
        numbers(raw[fields["confidence"]], where, fields["confidence"], csv, required=False)
        if "confidence" in fields
        else np.nan
    )
    synapses["_file"] = where
    synapses["_at"] = [row_name(i, csv) for i in range(len(synapses))]

    labels = _table_labels(path, raw, options, csv)
    labelled = synapses[["skeleton_id", "_file", "_at"]].assign(nt=labels)
    labelled = labelled.loc[labelled["skeleton_id"].notna()]
    reject_conflicting_labels(labelled)
    labelled = labelled.drop_duplicates("skeleton_id").reset_index(drop=True)
    labelled["skeleton_id"] = labelled["skeleton_id"].astype("int64")
    return synapses, labelled


def _check_prepost(synapses: pd.DataFrame, raw, fields: dict, where: str, csv: bool) -> None:
    if not synapses["prepost"].notna().any():
        return
    synapses["prepost"] = synapses["prepost"].map(lambda v: v.lower() if v else None)
    bad = (synapses["prepost"].notna() & ~synapses["prepost"].isin(["pre", "post"])).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BadInput(
            f"{where}, column {fields['prepost']}, {row_name(i, csv)}: "
            f"{raw[fields['prepost']].iloc[i]!r} is neither 'pre' nor 'post'"
        )


def _table_labels(path: Path, raw: pd.DataFrame, options: TableOptions, csv: bool) -> np.ndarray:
    column = options.label_column
    if column is not None:
        if column not in raw.columns:
            raise BadInput(
                f"{path}: label column {column!r} not found (columns: {', '.join(raw.columns)})"
            )
        values = raw[column]
        missing = values.isna().to_numpy()
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise BadInput(f"{path}, column {column}, {row_name(i, csv)}: no transmitter")
        names = {}
        for value in values.unique():
            i = int(np.flatnonzero((values == value).to_numpy())[0])
            where = f"{path}, column {column}, {row_name(i, csv)}"
            names[value] = _canonical_or_bad(value, where)
        return values.map(names).to_numpy()
    if options.label is not None:
        return np.full(len(raw), canonical(options.label), dtype=object)
    stem = table_stem(path)
    try:
        name = canonical(stem)
    except UnknownTransmitter:
        raise BadInput(
            f"{path}: the file name {stem!r} is not a transmitter; name the file after its "
            "transmitter (gaba.csv) or give a label column or a fixed label"
        ) from None
    if name not in TRANSMITTERS:
        # "others" (male-VNC) mixes transmitters: as a class it is a choice, never a file name's
        raise BadInput(
            f"{path}: the file name {stem!r} is a catch-all label, not a transmitter ("
            f"{', '.join(TRANSMITTERS)}); leave the file out, or import it deliberately as the "
            f"class {name!r} on its own: synister db import --label {name} {path}"
        )
    return np.full(len(raw), name, dtype=object)


def reject_conflicting_labels(labels: pd.DataFrame) -> None:
    """Raise when one neuron carries two labels, naming the two places."""
    per_neuron = labels.groupby("skeleton_id")["nt"].nunique()
    conflicted = per_neuron.index[per_neuron > 1]
    if len(conflicted):
        neuron = conflicted[0]
        rows = labels.loc[labels["skeleton_id"] == neuron].drop_duplicates("nt")
        a, b = rows.iloc[0], rows.iloc[1]
        raise BadInput(
            f"neuron {neuron} is labelled {a['nt']} at {a['_file']}, {a['_at']} and {b['nt']} at "
            f"{b['_file']}, {b['_at']}" + more(len(conflicted), "neurons")
        )


def more(count: int, what: str) -> str:
    return f" ({count - 1} more {what} like it)" if count > 1 else ""
