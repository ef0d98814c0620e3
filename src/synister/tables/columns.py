"""Which columns of a table hold ids, neurons and positions, in which unit, and the voxel size.

Users type positions and voxel sizes x,y,z, as FlyWire, neuPrint and CATMAID write them, in
every command. ``--voxel-size`` takes one number (isotropic), ``x,y,z`` or ``x=..,y=..,z=..``
(axes named, any order).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .read import TableError

#: column names tried in this order (case-insensitive); the first present is used
ID_COLUMNS = ("id", "synapse_id", "syn_id")
NEURON_COLUMNS = ("pre_pt_root_id", "bodyId", "body", "body_id", "skeleton_id", "skid")
POSITION_COLUMNS = (("x", "y", "z"), ("pre_x", "pre_y", "pre_z"), ("pre_pt_position",))
UNITS = ("nm", "voxels")
#: how a command names the options behind each choice (error messages name them)
OPTION_NAMES = {
    "id": "--id-column",
    "neuron": "--neuron-column",
    "positions": "--position-columns",
    "units": "--units",
    "voxel_size": "--voxel-size",
}
_VOXEL_EXAMPLE = "one number or x,y,z in nm, e.g. 8 or 4,4,40 or x=4,y=4,z=40"


def _listed(values) -> list | None:
    return None if values is None else list(values)


def _voxel_values(text: str, option: str) -> tuple[list[float], bool]:
    """The numbers of a typed voxel size, in x,y,z order, and whether the axes were named."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    named = [p.partition("=") for p in parts]
    try:
        if parts and all(sep for _, sep, _ in named):
            by_axis = {axis.strip().lower(): float(value) for axis, _, value in named}
            if sorted(by_axis) != ["x", "y", "z"] or len(named) != 3:
                raise ValueError
            return [by_axis[a] for a in "xyz"], True
        return [float(p) for p in parts], False
    except ValueError:
        raise TableError(f"{option} {text!r}: expected {_VOXEL_EXAMPLE}") from None


def parse_voxel_size(
    text: str | float | Sequence[float] | None,
    option: str = "--voxel-size",
    *,
    was_zyx: bool = False,
) -> tuple[float, float, float] | None:
    """A voxel size in nm as x, y, z: one number (isotropic), x,y,z, or axes named
    (``x=4,y=4,z=40``).

    ``was_zyx``: the option read z,y,x before (``db import`` until 0.1); an unnamed value whose
    first and last numbers differ would change meaning silently, so it is refused with a message
    that spells out both readings.
    """
    if text is None:
        return None
    named = False
    if isinstance(text, int | float):
        values = [float(text)]
    elif isinstance(text, str):
        values, named = _voxel_values(text, option)
    else:
        values = [float(v) for v in text]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise TableError(f"{option} {text!r}: expected {_VOXEL_EXAMPLE}, all positive")
    if was_zyx and not named and values[0] != values[2]:
        x, y, z = (f"{v:g}" for v in values)
        raise TableError(
            f"{option} {text} is ambiguous: synister now reads it as x,y,z (FlyWire, neuPrint, "
            f"CATMAID order; x={x}, y={y}, z={z} nm), db import read it as z,y,x before (z={x}, "
            f"y={y}, x={z} nm); name the axes: {option} x={x},y={y},z={z} for the first, "
            f"{option} x={z},y={y},z={x} for the second"
        )
    return tuple(values)


def find_column(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    """The first of ``wanted`` among ``columns``, compared without case."""
    lowered = {c.lower(): c for c in columns}
    for name in wanted:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


@dataclass(frozen=True)
class TableColumns:
    """Where a table keeps its ids, neurons and positions, and in which unit."""

    id: str | None  # None: row numbers are the ids
    neuron: str | None
    positions: tuple[str, ...]  # x, y, z or one list column of x, y, z
    units: str = "nm"
    voxel_size_xyz_nm: tuple[float, float, float] | None = None

    def source_columns(self) -> list[str]:
        """The columns to read, each once."""
        return list(dict.fromkeys(c for c in (self.id, self.neuron, *self.positions) if c))

    def text_columns(self) -> list[str]:
        """Id columns, read as text (ids are never parsed through floats)."""
        return [c for c in (self.id, self.neuron) if c is not None]

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "neuron": self.neuron,
            "positions": list(self.positions),
            "units": self.units,
            "voxel_size_xyz_nm": _listed(self.voxel_size_xyz_nm),
        }

    @classmethod
    def from_json(cls, data: dict) -> TableColumns:
        voxel = data.get("voxel_size_xyz_nm")
        return cls(
            data.get("id"),
            data.get("neuron"),
            tuple(data["positions"]),
            data.get("units", "nm"),
            None if voxel is None else tuple(float(v) for v in voxel),
        )


def choose_columns(
    columns: Sequence[str],
    where: str,
    *,
    id_column: str | None = None,
    neuron_column: str | None = None,
    position_columns: Sequence[str] | None = None,
    units: str = "nm",
    voxel_size: str | float | Sequence[float] | None = None,
    option_names: Mapping[str, str] | None = None,
) -> TableColumns:
    """The id, neuron and position columns of a table with these column names: the
    overrides, else found by name (:data:`ID_COLUMNS`, :data:`NEURON_COLUMNS`,
    :data:`POSITION_COLUMNS`); and the unit. Reads no rows. ``option_names`` says how the
    calling command names its options (default :data:`OPTION_NAMES`)."""
    names = {**OPTION_NAMES, **(option_names or {})}
    if units not in UNITS:
        raise TableError(f"{names['units']} must be nm or voxels, got {units!r}")
    voxel = parse_voxel_size(voxel_size, names["voxel_size"])
    columns = list(columns)
    for name, role in ((id_column, "id"), (neuron_column, "neuron")):
        if name is not None and name not in columns:
            raise TableError(
                f"{where}: no column {name!r} ({names[role]}); columns: {columns}",
                columns=columns,
            )
    if position_columns:
        positions = tuple(position_columns)
        if len(positions) not in (1, 3):
            raise TableError(
                f"{where}: {names['positions']} takes x,y,z or one list column, got {positions}"
            )
        missing = [c for c in positions if c not in columns]
        if missing:
            raise TableError(
                f"{where}: no column {missing[0]!r} ({names['positions']}); columns: {columns}",
                columns=columns,
            )
    else:
        found = [tuple(find_column(columns, [c]) for c in group) for group in POSITION_COLUMNS]
        positions = next((group for group in found if None not in group), None)
        if positions is None:
            tried = " or ".join(",".join(group) for group in POSITION_COLUMNS)
            raise TableError(
                f"{where}: no position columns (looked for {tried}; name them with "
                f"{names['positions']}); columns: {columns}",
                columns=columns,
            )
    if units == "voxels" and voxel is None:
        raise TableError(
            f"{where}: columns {', '.join(positions)} are in voxels ({names['units']} voxels) "
            f"but no {names['voxel_size']} was given ({_VOXEL_EXAMPLE})"
        )
    neuron = neuron_column or find_column(columns, NEURON_COLUMNS)
    if neuron is None and (misspelt := _near(columns, NEURON_COLUMNS, positions)):
        raise TableError(
            f"{where}: no neuron column (looked for {', '.join(NEURON_COLUMNS)}), but "
            f"{misspelt!r} looks like one misspelt: fix the header, or name it "
            f"({names['neuron']}); columns: {columns}"
        )
    return TableColumns(
        id_column or find_column(columns, ID_COLUMNS), neuron, positions, units, voxel
    )


def _near(columns: Sequence[str], wanted: Sequence[str], taken: Sequence[str]) -> str | None:
    """A column (not one of ``taken``) whose name is close to one of ``wanted`` (a typo such
    as ``bodyld`` or ``skeletonid``), compared without case."""
    lowered = {c.lower(): c for c in columns if c not in taken}
    for name in wanted:
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.8)
        if close:
            return lowered[close[0]]
    return None
