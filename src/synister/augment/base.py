"""What every augmentation shares: the interface (random parameters drawn apart from applying
them) and the centring of an output patch in its context patch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

Shape3 = tuple[int, int, int]


def shape3(shape_vox: Sequence[int], name: str = "shape_vox") -> Shape3:
    shape = tuple(int(s) for s in shape_vox)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be three positive voxel counts (z, y, x), got {shape_vox}")
    return shape  # type: ignore[return-value]


def central_offset_vox(context_shape_vox: Sequence[int], shape_vox: Sequence[int]) -> Shape3:
    """Index in a context patch of the first voxel of the output patch centred with it.

    Both patches follow the project's patch convention (voxel ``S // 2`` holds the centre), so
    the offset is ``C // 2 - S // 2`` per axis, not ``(C - S) // 2``.
    """
    return tuple(
        int(c) // 2 - int(s) // 2 for c, s in zip(context_shape_vox, shape_vox, strict=True)
    )  # type: ignore[return-value]


def crop_center(x: torch.Tensor, shape_vox: Sequence[int]) -> torch.Tensor:
    """The output-shaped centre of a context patch ``x`` (..., Z, Y, X), as a view."""
    off = central_offset_vox(x.shape[-3:], shape_vox)
    if any(o < 0 for o in off):
        raise ValueError(f"patch of shape {tuple(x.shape[-3:])} is smaller than {tuple(shape_vox)}")
    return x[
        ...,
        off[0] : off[0] + shape_vox[0],
        off[1] : off[1] + shape_vox[1],
        off[2] : off[2] + shape_vox[2],
    ]


class Augmentation(ABC):
    """An augmentation whose randomness lives entirely in ``make_params``."""

    @abstractmethod
    def make_params(self, rng: np.random.Generator, shape_vox: Sequence[int]) -> dict:
        """Draw the random parameters for one patch of output shape ``shape_vox`` (JSON-able)."""

    @abstractmethod
    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Apply the augmentation described by ``params``; deterministic."""
