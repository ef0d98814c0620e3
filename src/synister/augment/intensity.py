"""Per-section intensity scale and shift (gunpowder's IntensityAugment)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .base import Augmentation, shape3


class IntensityAugment(Augmentation):
    """Per section (or whole patch) ``x' = (x - mean) * scale + mean + shift``, clipped to [0, 1].

    Expects intensities in [0, 1] on (..., Z, Y, X); the mean is taken over everything but z
    when ``z_section_wise`` (gunpowder's IntensityAugment with z_section_wise=True).
    """

    def __init__(
        self,
        scale_min: float = 0.9,
        scale_max: float = 1.1,
        shift_min: float = -0.1,
        shift_max: float = 0.1,
        z_section_wise: bool = True,
        clip: bool = True,
    ):
        if scale_max < scale_min or shift_max < shift_min:
            raise ValueError(
                f"need scale_min <= scale_max and shift_min <= shift_max, got "
                f"({scale_min}, {scale_max}), ({shift_min}, {shift_max})"
            )
        self.scale_range = (float(scale_min), float(scale_max))
        self.shift_range = (float(shift_min), float(shift_max))
        self.z_section_wise = bool(z_section_wise)
        self.clip = bool(clip)

    def make_params(self, rng: np.random.Generator, shape_vox: Sequence[int]) -> dict:
        n = shape3(shape_vox)[0] if self.z_section_wise else 1
        return {
            "scale": rng.uniform(*self.scale_range, size=n).tolist(),
            "shift": rng.uniform(*self.shift_range, size=n).tolist(),
        }

    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        scale = torch.tensor(params["scale"], dtype=x.dtype)
        shift = torch.tensor(params["shift"], dtype=x.dtype)
        z = x.shape[-3]
        if len(scale) not in (1, z) or len(shift) != len(scale):
            raise ValueError(
                f"params hold {len(scale)} scales and {len(shift)} shifts for {z} sections"
            )
        if len(scale) == z and self.z_section_wise:
            # mean over everything but z: move z first, flatten the rest
            mean = x.transpose(0, -3).reshape(z, -1).mean(dim=1)
            view = (z, 1, 1)
        else:
            mean = x.mean().reshape(1)
            view = (1, 1, 1)
        scale, shift, mean = scale.view(view), shift.view(view), mean.view(view)
        y = (x - mean) * scale + (mean + shift)
        return y.clamp_(0.0, 1.0) if self.clip else y

    def apply_to_raw(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """:meth:`apply` for intensities in [0, 255], followed by ``2x - 1``, in one pass.

        Per section the augmentation, the clip and the mapping to [-1, 1] are one affine map
        and a clamp.
        """
        if x.dim() != 3:
            raise ValueError(f"apply_to_raw expects a (Z, Y, X) patch, got shape {tuple(x.shape)}")
        scale = torch.tensor(params["scale"], dtype=torch.float64)
        shift = torch.tensor(params["shift"], dtype=torch.float64)
        z = x.shape[0]
        if len(scale) not in (1, z) or len(shift) != len(scale):
            raise ValueError(
                f"params hold {len(scale)} scales and {len(shift)} shifts for {z} sections"
            )
        if len(scale) == z and self.z_section_wise:
            mean = x.reshape(z, -1).mean(dim=1, dtype=torch.float64) / 255
        else:
            mean = x.mean(dtype=torch.float64).reshape(1) / 255
        gain = (2 * scale / 255).to(x.dtype).view(-1, 1, 1)
        bias = (2 * (mean * (1 - scale) + shift) - 1).to(x.dtype).view(-1, 1, 1)
        y = torch.addcmul(bias, x, gain)
        return y.clamp_(-1.0, 1.0) if self.clip else y
