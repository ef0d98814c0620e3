"""Do these positions belong to this volume? The check every command that reads positions runs.

A run where most positions fall outside the volume, or so close to its edge that their patch
reaches out, is almost always a units or axis mix-up, not a property of the data: a table in
voxels read as nm lands in the volume's corner (every patch partly outside), one in nm read as
voxels lands far outside, a voxel size typed z,y,x instead of x,y,z stretches the wrong axis.
:func:`check_positions` counts where the positions fall, compares the table's range with the
volume's extent (both in nm), and tries the usual mix-ups on the numbers as typed: the one that
puts most positions inside is named as the likely cause, with the option that fixes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

#: ``ok``: the whole patch lies inside the volume; ``partly_outside``: the centre is inside, the
#: patch reaches out (zero-padded); ``outside_volume``: the centre lies outside (not predicted)
STATUSES = ("ok", "partly_outside", "outside_volume")
OUTSIDE_VOLUME = STATUSES[2]
#: below this share of positions whose patch lies wholly inside, a run is suspicious
MIN_OK_SHARE = 0.5
#: positions a check looks at (a sample of larger tables: it is about where most of them lie)
SAMPLE = 100_000
_STATUS_NAMES = np.array(STATUSES, dtype=object)
_LOCATE_ROWS = 65536


class PositionWarning(UserWarning):
    """Most positions fall outside the volume; the message names the likely cause."""


class PositionMismatch(ValueError):
    """Most positions fall outside the volume (``--strict``); the message names the likely cause."""


def patch_status(
    starts_vox: np.ndarray, shape_vox: Sequence[int], volume_shape_vox: Sequence[int]
) -> np.ndarray:
    """The status (see :data:`STATUSES`) of each patch (first voxels ``starts_vox``, N x 3):
    ``outside_volume`` where its centre voxel (index ``S//2``) lies outside the volume, ``ok``
    where the whole patch lies inside, else ``partly_outside``. An object array whose entries
    are the three names themselves: 8 bytes a row (fixed-width text takes 56, and a job keeps
    its statuses while it runs)."""
    starts = np.asarray(starts_vox, dtype=np.int64).reshape(-1, 3)
    shape = np.asarray(shape_vox, dtype=np.int64)
    volume_shape = np.asarray(volume_shape_vox, dtype=np.int64)
    centers = starts + shape // 2
    inside = np.all((centers >= 0) & (centers < volume_shape), axis=1)
    whole = np.all((starts >= 0) & (starts + shape <= volume_shape), axis=1)
    code = np.where(inside, np.where(whole, 0, 1), 2).astype(np.int8)  # index into STATUSES
    return _STATUS_NAMES[code]


def locate(volume, centers_zyx_nm: np.ndarray, patch_vox: Sequence[int]) -> np.ndarray:
    """The status (see :data:`STATUSES`) of the patch of each position (N, 3; z, y, x nm) in
    ``volume`` (a :class:`~synister.volumes.Volume`)."""
    centers = np.asarray(centers_zyx_nm, dtype=np.float64).reshape(-1, 3)
    status = np.empty(len(centers), dtype=object)
    for first in range(0, len(centers), _LOCATE_ROWS):  # bounded temporaries on big tables
        part = centers[first : first + _LOCATE_ROWS]
        starts = volume.patch_starts_vox(part, patch_vox)
        status[first : first + len(part)] = patch_status(starts, patch_vox, volume.shape_vox)
    return status


def _xyz(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in list(values)[::-1])


def span(low: Sequence[float], high: Sequence[float]) -> str:
    """``x 0-1,536, y 0-1,536, z 0-1,600`` of z, y, x bounds in nm."""
    return ", ".join(
        f"{axis} {low[i]:,.0f}-{high[i]:,.0f}" for axis, i in (("x", 2), ("y", 1), ("z", 0))
    )


@dataclass(frozen=True)
class PositionCheck:
    """Where the positions fall in the volume, and the likely mix-up when most do not fit."""

    count: int  # positions looked at
    ok: int  # whole patch inside
    partly_outside: int
    outside: int
    table_low_nm: tuple[float, float, float] | None  # z, y, x; None without positions
    table_high_nm: tuple[float, float, float] | None
    volume_low_nm: tuple[float, float, float]
    volume_high_nm: tuple[float, float, float]
    cause: str | None = None  # the likely mix-up, e.g. "the table is in voxels, read as nm"
    fix: str | None = None  # the options that fix it
    fixed_ok: int = 0  # positions whose whole patch would lie inside with the fix

    @property
    def suspicious(self) -> bool:
        """Most positions fall outside the volume or reach out of it."""
        return self.count > 0 and self.ok < MIN_OK_SHARE * self.count

    def message(self) -> str:
        """One line: the counts, the table's range against the volume's extent, the cause."""
        text = (
            f"{self.ok:,} of {self.count:,} positions lie with their whole patch inside the "
            f"volume ({self.partly_outside:,} reach out of it, {self.outside:,} lie outside)"
        )
        if self.table_low_nm is not None:
            text += (
                f"; the positions span {span(self.table_low_nm, self.table_high_nm)} nm, the "
                f"volume {span(self.volume_low_nm, self.volume_high_nm)} nm"
            )
        if self.cause:
            text += (
                f"; likely cause: {self.cause} (with {self.fix}, {self.fixed_ok:,} of "
                f"{self.count:,} would fit)"
            )
        elif self.suspicious:
            text += (
                "; no units or axis mix-up explains it: are positions and volume from the same "
                "dataset and scale (--dataset)?"
            )
        return text

    def to_json(self) -> dict:
        return {
            "count": self.count,
            "ok": self.ok,
            "partly_outside": self.partly_outside,
            "outside_volume": self.outside,
            "table_low_nm": None if self.table_low_nm is None else list(self.table_low_nm),
            "table_high_nm": None if self.table_high_nm is None else list(self.table_high_nm),
            "volume_low_nm": list(self.volume_low_nm),
            "volume_high_nm": list(self.volume_high_nm),
            "suspicious": self.suspicious,
            "cause": self.cause,
            "fix": self.fix,
            "message": self.message() if self.suspicious else None,
        }


def _mix_ups(
    centers: np.ndarray, volume_voxel_nm: np.ndarray, units: str, table_voxel_zyx: np.ndarray | None
):
    """(cause, fix, centres in nm) of each usual mix-up, from the numbers as they were typed."""
    volume_xyz = _xyz(volume_voxel_nm)
    if units != "voxels" or table_voxel_zyx is None:
        typed = centers
        yield (
            "the table is in voxels, read as nm",
            f"--units voxels --voxel-size {volume_xyz}",
            typed * volume_voxel_nm,
        )
        yield (
            "the position columns hold z,y,x, read as x,y,z",
            "--position-columns naming them in x,y,z order",
            typed[:, ::-1],
        )
        return
    typed = centers / table_voxel_zyx
    yield "the table is in nm, read as voxels", "--units nm", typed
    if not np.allclose(table_voxel_zyx, table_voxel_zyx[::-1]):
        flipped = table_voxel_zyx[::-1]
        yield (
            f"--voxel-size {_xyz(table_voxel_zyx)} was typed z,y,x; it is read x,y,z",
            f"--voxel-size x={flipped[2]:g},y={flipped[1]:g},z={flipped[0]:g}",
            typed * flipped,
        )
    if not np.allclose(table_voxel_zyx, volume_voxel_nm):
        yield (
            f"the table's voxels are the volume's ({volume_xyz} nm), not {_xyz(table_voxel_zyx)}",
            f"--voxel-size {volume_xyz}",
            typed * volume_voxel_nm,
        )
    yield (
        "the position columns hold z,y,x, read as x,y,z",
        "--position-columns naming them in x,y,z order",
        typed[:, ::-1] * table_voxel_zyx,
    )


def check_positions(
    volume,
    centers_zyx_nm: np.ndarray,
    patch_vox: Sequence[int],
    *,
    units: str = "nm",
    voxel_size_xyz_nm: Sequence[float] | None = None,
    status: np.ndarray | None = None,
) -> PositionCheck:
    """Where positions (N, 3; z, y, x nm as read) fall in ``volume`` (a
    :class:`~synister.volumes.Volume`) for patches of ``patch_vox``; when most do not fit, the
    mix-up of ``units`` / ``voxel_size_xyz_nm`` (how the table was read) that fits best.
    ``status`` (:func:`patch_status` of every position) saves computing it again. Tables over
    :data:`SAMPLE` rows are judged on an even sample."""
    centers = np.asarray(centers_zyx_nm, dtype=np.float64).reshape(-1, 3)
    if status is None:
        status = locate(volume, centers, patch_vox)
    status = np.asarray(status)
    voxel = np.asarray(volume.voxel_size_nm, dtype=np.float64)
    low = np.asarray(volume.offset_nm, dtype=np.float64)
    finite = np.all(np.isfinite(centers), axis=1)
    finite = centers if finite.all() else centers[finite]  # no copy of a million rows
    counts = {name: int((status == name).sum()) for name in STATUSES}
    check = PositionCheck(
        len(centers),
        counts["ok"],
        counts["partly_outside"],
        counts[OUTSIDE_VOLUME],
        tuple(finite.min(axis=0).tolist()) if len(finite) else None,
        tuple(finite.max(axis=0).tolist()) if len(finite) else None,
        tuple(low.tolist()),
        tuple((low + np.asarray(volume.shape_vox) * voxel).tolist()),
    )
    if not check.suspicious or not len(finite):
        return check
    sample = finite[:: max(1, len(finite) // SAMPLE)]
    table_voxel = None if voxel_size_xyz_nm is None else np.asarray(voxel_size_xyz_nm)[::-1]
    best = None
    for cause, fix, moved in _mix_ups(sample, voxel, units, table_voxel):
        fits = int((locate(volume, moved, patch_vox) == "ok").sum())
        if best is None or fits > best[2]:
            best = (cause, fix, fits)
    cause, fix, fits = best
    fixed_ok = round(fits * len(centers) / len(sample))
    if fits >= MIN_OK_SHARE * len(sample) and fixed_ok > 2 * check.ok:
        return replace(check, cause=cause, fix=fix, fixed_ok=fixed_ok)
    return check


def require_fit(check: PositionCheck, strict: bool, what: str) -> str | None:
    """The warning for a suspicious check (None: nothing to say); with ``strict`` raises
    :class:`PositionMismatch` instead. ``what`` names the positions (a file, a split part)."""
    if not check.suspicious:
        return None
    text = f"{what}: {check.message()}"
    if strict:
        raise PositionMismatch(text)
    return text + " (--strict makes this an error)"


__all__ = [
    "MIN_OK_SHARE",
    "OUTSIDE_VOLUME",
    "STATUSES",
    "PositionCheck",
    "PositionMismatch",
    "PositionWarning",
    "check_positions",
    "locate",
    "patch_status",
    "require_fit",
    "span",
]
