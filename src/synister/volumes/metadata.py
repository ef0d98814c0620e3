"""What a volume declares: its format (zarr v2/v3, N5, precomputed), its axes as z, y, x, and its
voxel size and offset in nm (funlib ``resolution``/``offset``, N5 ``pixelResolution``, OME-Zarr
``multiscales``, precomputed ``info``); checks of the shapes and triplets callers pass.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from .locate import kv_join, read_json_keys

#: tensorstore driver per format name used here.
DRIVERS = {
    "zarr2": "zarr",
    "zarr3": "zarr3",
    "n5": "n5",
    "precomputed": "neuroglancer_precomputed",
}
#: Multipliers from length units found in metadata to nanometres.
_UNIT_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "micron": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "angstrom": 0.1,
}


def as_zyx(values: Any, *, reverse: bool, field: str, where: str) -> np.ndarray:
    """Three numbers from metadata as z, y, x (``reverse`` for x, y, z conventions)."""
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: field {field!r} is not a list of numbers: {values!r}") from err
    if array.size == 4:  # a trailing/leading channel entry in 4D metadata
        array = array[:3] if reverse else array[1:]
    if array.size != 3 or not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: field {field!r} must hold 3 finite numbers, got {values!r}")
    return array[::-1].copy() if reverse else array


def _unit_factor(unit: Any, where: str) -> float:
    if unit is None or unit == "":
        return 1.0
    factor = _UNIT_TO_NM.get(str(unit).lower())
    if factor is None:
        warnings.warn(f"{where}: unknown length unit {unit!r}; taking it as nm", stacklevel=4)
        return 1.0
    return factor


def funlib_attrs(
    attrs: dict[str, Any] | None, *, xyz: bool, where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``resolution``/``offset`` (funlib, daisy) or N5 ``pixelResolution`` from one attr set."""
    if not attrs:
        return None, None
    voxel = offset = None
    if "resolution" in attrs:
        voxel = as_zyx(attrs["resolution"], reverse=xyz, field="resolution", where=where)
    elif isinstance(attrs.get("pixelResolution"), dict):
        pixel = attrs["pixelResolution"]
        voxel = as_zyx(
            pixel.get("dimensions"), reverse=True, field="pixelResolution.dimensions", where=where
        )
        voxel = voxel * _unit_factor(pixel.get("unit"), where)
    if "offset" in attrs:
        offset = as_zyx(attrs["offset"], reverse=xyz, field="offset", where=where)
    return voxel, offset


def ome_multiscales(
    group_attrs: dict[str, Any] | None, array_name: str, where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Scale and translation of ``array_name`` from OME-Zarr ``multiscales`` in the parent group."""
    if not group_attrs:
        return None, None
    multiscales = group_attrs.get("multiscales") or (group_attrs.get("ome") or {}).get(
        "multiscales"
    )
    if not isinstance(multiscales, list):
        return None, None
    for multiscale in multiscales:
        for entry in multiscale.get("datasets", []):
            if str(entry.get("path", "")).strip("/") != array_name:
                continue
            axes = multiscale.get("axes") or []
            ndim = len(axes) if axes else None
            scale, translation = _compose_transforms(
                entry.get("coordinateTransformations", []),
                multiscale.get("coordinateTransformations", []),
                ndim,
                where,
            )
            if scale is None:
                return None, None
            spatial = [
                i
                for i, axis in enumerate(axes)
                if isinstance(axis, dict) and axis.get("type", "space") == "space"
            ] or list(range(len(scale)))[-3:]
            if len(spatial) != 3:
                raise ValueError(f"{where}: OME-Zarr multiscales has {len(spatial)} spatial axes")
            unit = axes[spatial[0]].get("unit") if axes else None
            factor = _unit_factor(unit, where)
            return scale[spatial] * factor, translation[spatial] * factor
    return None, None


def _compose_transforms(
    own: list[dict[str, Any]], shared: list[dict[str, Any]], ndim: int | None, where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Apply a dataset's OME transforms, then the multiscale-wide ones (scale then translate)."""
    scale: np.ndarray | None = None
    translation: np.ndarray | None = None
    for transform in list(own) + list(shared):
        kind = transform.get("type")
        if kind == "scale":
            values = np.asarray(transform.get("scale"), dtype=np.float64)
            scale = values if scale is None else scale * values
            if translation is not None:
                translation = translation * values
        elif kind == "translation":
            values = np.asarray(transform.get("translation"), dtype=np.float64)
            translation = values if translation is None else translation + values
        elif kind == "identity":
            continue
        else:
            raise ValueError(f"{where}: unsupported OME-Zarr coordinateTransformation {kind!r}")
    if scale is None:
        return None, None
    if ndim is not None and scale.size != ndim:
        raise ValueError(f"{where}: OME-Zarr scale {scale.tolist()} does not match {ndim} axes")
    if translation is None:
        translation = np.zeros_like(scale)
    return scale, translation


def detect_format(
    hint: str | None, kvstore: dict[str, Any], dataset: str | None, where: str
) -> tuple[str, dict[str, Any]]:
    """Find the format from the metadata files present; returns (format, JSON files read).
    A zarr group (v2 or v3) comes back as "zarr2-group"/"zarr3-group": the caller picks one
    of its arrays (see :mod:`.scales`) or asks for one."""
    found: dict[str, Any] = {}
    if hint != "precomputed":
        keys = ["zarr.json", ".zarray", ".zattrs", ".zgroup", "attributes.json"]
        found = read_json_keys(kv_join(kvstore, dataset), keys, where)
        if found["zarr.json"] is not None and hint in (None, "zarr3"):
            if found["zarr.json"].get("node_type") != "array":
                return "zarr3-group", found
            return "zarr3", found
        if found[".zarray"] is not None and hint in (None, "zarr2"):
            return "zarr2", found
        if found[".zgroup"] is not None and hint in (None, "zarr2"):
            return "zarr2-group", found
        n5_attrs = found["attributes.json"]
        if n5_attrs is not None and "dimensions" in n5_attrs and hint in (None, "n5"):
            return "n5", found
    info = read_json_keys(kvstore, ["info"], where)["info"]
    if info is not None and hint in (None, "precomputed"):
        found["info"] = info
        return "precomputed", found
    looked = "info" if hint == "precomputed" else "zarr.json, .zarray, attributes.json or info"
    raise FileNotFoundError(
        f"{where}{' dataset ' + repr(dataset) if dataset else ''}: no "
        f"{hint or 'zarr/N5/precomputed'} array found (looked for {looked})"
        + _local_hint(kvstore, dataset)
    )


def group_error(
    where: str, dataset: str | None, kvstore: dict[str, Any] | None = None
) -> ValueError:
    hint = _local_hint(kvstore, dataset) if kvstore else ""
    return ValueError(
        f"{where}: {dataset or '.'} is a zarr group, not an array; name the dataset "
        "(e.g. 'volumes/raw' or 's0')" + hint
    )


def _local_hint(kvstore: dict[str, Any], dataset: str | None) -> str:
    """What a local folder holds instead (a mistyped path or ``--dataset``): that it does not
    exist, or the arrays in it; nothing for remote stores."""
    if kvstore.get("driver") != "file":
        return ""
    root = Path(kvstore["path"])
    if not root.is_dir():
        return f"; no such folder: {root}"
    arrays = local_arrays(root)
    if not arrays:
        return f"; {root} holds no array"
    shown = ", ".join(arrays[:10]) + (" ..." if len(arrays) > 10 else "")
    return f"; arrays in {root}: {shown}"


def local_arrays(root: Path, depth: int = 4) -> list[str]:
    """The zarr (v2, v3) and N5 arrays in a local folder, as dataset paths ("." for the folder
    itself), down to ``depth`` levels."""
    found = []
    for level in range(depth + 1):
        for folder in sorted(root.glob("/".join(["*"] * level))) if level else [root]:
            if folder.is_dir() and _holds_array(folder):
                found.append(folder.relative_to(root).as_posix())
    return found


def _holds_array(folder: Path) -> bool:
    if (folder / ".zarray").is_file():
        return True
    for name, is_array in (
        ("zarr.json", lambda meta: meta.get("node_type") == "array"),
        ("attributes.json", lambda meta: "dimensions" in meta),
    ):
        try:
            meta = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and is_array(meta):
            return True
    return False


def orient_zyx(store: ts.TensorStore, fmt: str, where: str) -> tuple[ts.TensorStore, np.ndarray]:
    """A 3D z, y, x view with origin 0; also returns the original z, y, x origin in voxels."""
    view = store
    if fmt == "precomputed":  # x, y, z, channel
        if view.shape[-1] != 1:
            raise ValueError(f"{where}: {view.shape[-1]} channels; only single-channel volumes")
        view = view[..., 0].T
    elif fmt == "n5":  # tensorstore presents N5 axes in stored (x, y, z) order
        view = view.T
    if view.rank == 4:
        if view.shape[0] == 1:
            view = view[0]
        elif view.shape[-1] == 1:
            view = view[..., 0]
        else:
            raise ValueError(
                f"{where}: 4D array of shape {tuple(view.shape)} (z, y, x order); only a single "
                "channel is supported"
            )
    if view.rank != 3:
        raise ValueError(f"{where}: expected a 3D volume, got shape {tuple(view.shape)}")
    origin_vox = np.asarray(view.domain.inclusive_min, dtype=np.int64)
    return view.translate_to[0, 0, 0], origin_vox


def checked_triplet(
    values: Sequence[float] | None, name: str, *, positive: bool
) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size != 3 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be 3 finite numbers (z, y, x), got {values!r}")
    if positive and np.any(array <= 0):
        raise ValueError(f"{name} must be positive (z, y, x), got {values!r}")
    return array


def shape3(shape_vox: Sequence[int], name: str = "shape_vox") -> np.ndarray:
    array = np.asarray(shape_vox).reshape(-1)
    if array.size != 3 or not np.issubdtype(array.dtype, np.integer) or np.any(array <= 0):
        raise ValueError(f"{name} must be 3 positive integers (z, y, x), got {shape_vox!r}")
    return array.astype(np.int64)
