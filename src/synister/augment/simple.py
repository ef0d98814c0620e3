"""Mirror and transpose (gunpowder's SimpleAugment)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .base import Augmentation, shape3


class SimpleAugment(Augmentation):
    """Mirror along each of ``mirror_axes`` with probability 1/2, then permute ``transpose_axes``.

    Axes count from z = 0 over the last three dimensions. Axes of unequal size are never
    transposed (the shape would change); with the defaults y and x swap when the patch is square.
    """

    def __init__(
        self, mirror_axes: Sequence[int] = (0, 1, 2), transpose_axes: Sequence[int] = (1, 2)
    ):
        for a in (*mirror_axes, *transpose_axes):
            if a not in (0, 1, 2):
                raise ValueError(f"axes must be 0 (z), 1 (y) or 2 (x), got {a}")
        self.mirror_axes = tuple(int(a) for a in mirror_axes)
        self.transpose_axes = tuple(int(a) for a in transpose_axes)

    def make_params(self, rng: np.random.Generator, shape_vox: Sequence[int]) -> dict:
        shape = shape3(shape_vox)
        mirror = [bool(a in self.mirror_axes and rng.random() < 0.5) for a in range(3)]
        permutation = [0, 1, 2]
        axes = list(self.transpose_axes)
        if len(axes) > 1 and len({shape[a] for a in axes}) == 1:
            for a, b in zip(axes, rng.permutation(axes), strict=True):
                permutation[a] = int(b)
        return {"mirror": mirror, "transpose": permutation}

    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Works on (..., Z, Y, X); returns a contiguous tensor."""
        lead = x.dim() - 3
        dims = [lead + a for a, m in enumerate(params["mirror"]) if m]
        if dims:
            x = torch.flip(x, dims)
        permutation = [int(p) for p in params["transpose"]]
        if sorted(permutation) != [0, 1, 2]:
            raise ValueError(f"params['transpose'] must permute (0, 1, 2), got {permutation}")
        if permutation != [0, 1, 2]:
            x = x.permute(*range(lead), *(lead + p for p in permutation))
        return x.contiguous()
