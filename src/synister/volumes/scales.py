"""Multiscale volumes given by their base: the scales there are (neuroglancer precomputed
``info`` scales, OME-Zarr ``multiscales`` datasets) and the one whose voxel size a model needs.

Choosing by voxel size, not taking the first scale, is what makes a base URL safe: a model
sees the resolution it was trained on or the run stops and lists what there is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metadata import as_zyx, ome_multiscales


def precomputed_scales(info: dict[str, Any], where: str) -> list[tuple[str, np.ndarray]]:
    """(scale key, voxel size z, y, x nm) of every scale in a precomputed ``info``."""
    return [
        (
            str(scale["key"]),
            as_zyx(scale["resolution"], reverse=True, field="resolution", where=where),
        )
        for scale in info.get("scales", [])
    ]


def ome_scales(group_attrs: dict[str, Any] | None, where: str) -> list[tuple[str, np.ndarray]]:
    """(dataset path, voxel size z, y, x nm) of every dataset of an OME-Zarr group's first
    ``multiscales`` entry; empty where the group declares none."""
    if not group_attrs:
        return []
    multiscales = group_attrs.get("multiscales") or (group_attrs.get("ome") or {}).get(
        "multiscales"
    )
    if not isinstance(multiscales, list) or not multiscales:
        return []
    scales = []
    for entry in multiscales[0].get("datasets", []):
        path = str(entry.get("path", "")).strip("/")
        voxel, _ = ome_multiscales(group_attrs, path, where)
        if voxel is not None:
            scales.append((path, voxel))
    return scales


def describe_scales(scales: list[tuple[str, np.ndarray]]) -> str:
    return ", ".join(f"{name} ({_nm(voxel)})" for name, voxel in scales)


def choose_scale(
    scales: list[tuple[str, np.ndarray]], voxel_size_nm: np.ndarray | None, where: str
) -> tuple[str, str]:
    """The scale of ``voxel_size_nm`` (z, y, x nm) and a sentence saying so; the first scale
    where no voxel size is asked for. None matching: a ValueError listing the scales."""
    if voxel_size_nm is None:
        name, voxel = scales[0]
        return name, f"{where}: read scale {name} ({_nm(voxel)}), the first of {len(scales)}"
    for name, voxel in scales:
        if np.allclose(voxel, voxel_size_nm):
            return name, (
                f"{where}: read scale {name} ({_nm(voxel)}), the one of {len(scales)} whose "
                "voxel size the model needs"
            )
    raise ValueError(
        f"{where}: no scale of voxel size {_nm(voxel_size_nm)}; the scales are "
        f"{describe_scales(scales)} (name one with --dataset, or use a model trained at one "
        "of them)"
    )


def _nm(voxel: np.ndarray) -> str:
    return " x ".join(f"{v:g}" for v in np.asarray(voxel).tolist()) + " nm z,y,x"
