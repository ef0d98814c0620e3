"""Stand-ins for the ``predict-positions`` conventions (issue #12), the only place they are
guessed until that front-end lands on ``main``; the rest of the package calls only these
names, and each is replaced by the real one then:

- :func:`discover_columns` / :class:`Columns`: finding id, neuron and position columns, units
  (``synister.predict.read_positions`` there);
- :func:`class_columns`: the output's class column names (short or full);
- :func:`patch_status`: ok / partly_outside / outside_volume;
- :func:`summarize_neurons`: the per-neuron table (``synister.summarize_neurons``; here from
  per-neuron sums, so that 244 million synapses never have to be in memory at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: the field's short class names (FlyWire's synapse table)
SHORT_NAMES = {
    "gaba": "gaba",
    "acetylcholine": "ach",
    "glutamate": "glut",
    "octopamine": "oct",
    "serotonin": "ser",
    "dopamine": "da",
}

STATUS_OK, STATUS_PARTLY, STATUS_OUTSIDE = "ok", "partly_outside", "outside_volume"

ID_COLUMNS = ("id", "synapse_id", "syn_id")
NEURON_COLUMNS = ("pre_pt_root_id", "bodyId", "body", "skeleton_id", "skid")
POSITION_COLUMNS = (("x", "y", "z"), ("pre_x", "pre_y", "pre_z"))
POSITION_LIST_COLUMN = "pre_pt_position"


# ---------------------------------------------------------------------------------------------
# patch status


def patch_status(starts_vox: np.ndarray, shape_vox: Sequence[int], volume_shape_vox) -> np.ndarray:
    """``ok`` (patch inside), ``partly_outside`` (zero-padded) or ``outside_volume`` (the
    centre voxel lies outside; no prediction), per patch."""
    starts = np.asarray(starts_vox, dtype=np.int64).reshape(-1, 3)
    shape = np.asarray(shape_vox, dtype=np.int64)
    volume_shape = np.asarray(volume_shape_vox, dtype=np.int64)
    centers = starts + shape // 2
    inside = np.all((starts >= 0) & (starts + shape <= volume_shape), axis=1)
    center_in = np.all((centers >= 0) & (centers < volume_shape), axis=1)
    status = np.full(len(starts), STATUS_PARTLY, dtype=object)
    status[inside] = STATUS_OK
    status[~center_in] = STATUS_OUTSIDE
    return status


# ---------------------------------------------------------------------------------------------
# predict-positions conventions


@dataclass(frozen=True)
class Columns:
    """Where a table keeps ids, neurons and positions, and in which unit."""

    id: str | None  # None: the row number, written as column ``id``
    neuron: str | None
    position: tuple[str, str, str] | str  # x, y, z columns or one list column (x, y, z)
    units: str = "nm"  # or "voxels"
    voxel_size_xyz_nm: tuple[float, float, float] | None = None

    def __post_init__(self):
        if self.units not in ("nm", "voxels"):
            raise ValueError(f"units must be nm or voxels, got {self.units!r}")
        if self.units == "voxels" and self.voxel_size_xyz_nm is None:
            raise ValueError("positions in voxels need --voxel-size (one number or x,y,z nm)")

    @property
    def id_name(self) -> str:
        return self.id or "id"

    def source_columns(self) -> list[str]:
        """Input columns carried into the output unchanged, in output order."""
        names = [c for c in (self.id, self.neuron) if c]
        names += [self.position] if isinstance(self.position, str) else list(self.position)
        return names

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "neuron": self.neuron,
            "position": self.position,
            "units": self.units,
            "voxel_size_xyz_nm": self.voxel_size_xyz_nm,
        }

    @classmethod
    def from_json(cls, data: dict) -> Columns:
        position = data["position"]
        voxel = data.get("voxel_size_xyz_nm")
        return cls(
            id=data.get("id"),
            neuron=data.get("neuron"),
            position=position if isinstance(position, str) else tuple(position),
            units=data.get("units", "nm"),
            voxel_size_xyz_nm=tuple(voxel) if voxel else None,
        )


def discover_columns(
    names: Sequence[str],
    where: str,
    *,
    id_column: str | None = None,
    neuron_column: str | None = None,
    position_columns: Sequence[str] | None = None,
    units: str = "nm",
    voxel_size_xyz_nm: Sequence[float] | None = None,
) -> Columns:
    """Find id, neuron and position columns by their usual names (overrides win)."""
    names = list(names)

    def need(column: str, option: str) -> str:
        if column not in names:
            raise ValueError(f"{where}: no column {column!r} ({option}); columns: {names}")
        return column

    if id_column is not None:
        id_name: str | None = need(id_column, "--id-column")
    else:
        id_name = next((c for c in ID_COLUMNS if c in names), None)
    if neuron_column is not None:
        neuron: str | None = need(neuron_column, "--neuron-column")
    else:
        neuron = next((c for c in NEURON_COLUMNS if c in names), None)
    if position_columns is not None:
        position: tuple[str, str, str] | str = tuple(
            need(c, "--position-columns") for c in position_columns
        )  # type: ignore[assignment]
        if len(position) != 3:
            raise ValueError(f"--position-columns needs 3 names (x y z), got {position_columns}")
    else:
        found = next((cols for cols in POSITION_COLUMNS if all(c in names for c in cols)), None)
        if found is not None:
            position = found
        elif POSITION_LIST_COLUMN in names:
            position = POSITION_LIST_COLUMN
        else:
            raise ValueError(
                f"{where}: no position columns (looked for x,y,z, pre_x,pre_y,pre_z or "
                f"{POSITION_LIST_COLUMN}; use --position-columns); columns: {names}"
            )
    voxel = None
    if voxel_size_xyz_nm is not None:
        voxel = tuple(float(v) for v in voxel_size_xyz_nm)
        voxel = voxel * 3 if len(voxel) == 1 else voxel
        if len(voxel) != 3 or min(voxel) <= 0:
            raise ValueError(f"--voxel-size must be one or three positive numbers, got {voxel}")
    return Columns(id_name, neuron, position, units, voxel)  # type: ignore[arg-type]


def class_columns(classes: Sequence[str], naming: str = "short") -> list[str]:
    """Output probability column per class: the field's short names or the full ones."""
    if naming not in ("short", "full"):
        raise ValueError(f"naming must be short or full, got {naming!r}")
    if naming == "full":
        return list(classes)
    return [SHORT_NAMES.get(c, c) for c in classes]


def summarize_neurons(
    aggregates: pd.DataFrame,
    class_names: Sequence[str],
    neuron_column: str,
    *,
    min_synapses: int = 100,
    min_margin: float = 0.1,
) -> pd.DataFrame:
    """Per-neuron table from per-neuron sums: ``n``, ``sum_<class>`` and ``votes_<class>``.

    Columns: neuron id, synapses, mean probability per class, top_nt, top_nt_conf (mean
    probability of the top class), top_nt_votes (vote fraction), runner_up, margin, confident.
    """
    n = aggregates["n"].to_numpy(dtype=np.int64)
    sums = aggregates[[f"sum_{c}" for c in class_names]].to_numpy(dtype=np.float64)
    votes = aggregates[[f"votes_{c}" for c in class_names]].to_numpy(dtype=np.float64)
    means = sums / np.maximum(n, 1)[:, None]
    order = np.argsort(-means, axis=1, kind="stable")
    rows = np.arange(len(n))
    top, second = order[:, 0], order[:, 1] if len(class_names) > 1 else order[:, 0]
    names = np.asarray(class_names, dtype=object)
    margin = means[rows, top] - means[rows, second]
    table = pd.DataFrame({neuron_column: aggregates[neuron_column].to_numpy(), "synapses": n})
    for i, name in enumerate(class_names):
        table[name] = means[:, i]
    table["top_nt"] = names[top]
    table["top_nt_conf"] = means[rows, top]
    table["top_nt_votes"] = votes[rows, top] / np.maximum(n, 1)
    table["runner_up"] = names[second]
    table["margin"] = margin
    table["confident"] = (n >= min_synapses) & (margin >= min_margin)
    return table
