"""The original's order of augmentations, fused where that saves passes over the data."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .base import Shape3, crop_center, shape3
from .elastic import ElasticAugment
from .intensity import IntensityAugment
from .simple import SimpleAugment


class AugmentPipeline:
    """Context patch (uint8) -> augmented output patch in [-1, 1], the original's order.

    Elastic deformation, mirror/transpose, per-section intensity, then ``2x - 1``. Each step
    can be switched off (``False``) or given as a configured instance. With every step off the
    result equals :func:`synister.volumes.normalize` of the patch centre.
    """

    def __init__(
        self,
        output_shape_vox: Sequence[int],
        elastic: bool | ElasticAugment = True,
        simple: bool | SimpleAugment = True,
        intensity: bool | IntensityAugment = True,
    ):
        self.output_shape_vox = shape3(output_shape_vox, "output_shape_vox")
        self.elastic = ElasticAugment() if elastic is True else (elastic or None)
        self.simple = SimpleAugment() if simple is True else (simple or None)
        self.intensity = IntensityAugment() if intensity is True else (intensity or None)

    @property
    def context_shape_vox(self) -> Shape3:
        """What to read around each sample (same centre) for the deformation to have data."""
        if self.elastic is None:
            return self.output_shape_vox
        return self.elastic.context_shape_vox(self.output_shape_vox)

    def make_params(self, rng: np.random.Generator) -> dict:
        shape = self.output_shape_vox
        return {
            name: (step.make_params(rng, shape) if step is not None else None)
            for name, step in (
                ("elastic", self.elastic),
                ("simple", self.simple),
                ("intensity", self.intensity),
            )
        }

    def apply(self, raw_uint8_context: np.ndarray | torch.Tensor, params: dict) -> torch.Tensor:
        """float32 (Z, Y, X) in [-1, 1] from a uint8 context patch (Z', Y', X').

        Same result (to float rounding) as applying the steps one after the other on [0, 1]
        intensities, with fewer passes over the data: y/x mirror and transpose ride on the
        elastic sampling grid, and the intensity change, clip and ``2x - 1`` are one affine map.
        """
        raw = torch.as_tensor(raw_uint8_context)
        if raw.dtype != torch.uint8 or raw.dim() != 3:
            raise ValueError(
                f"expected a uint8 (Z, Y, X) patch, got {raw.dtype} of shape {tuple(raw.shape)}"
            )
        if tuple(raw.shape) != self.context_shape_vox:
            raise ValueError(
                f"patch of shape {tuple(raw.shape)} is not the context shape "
                f"{self.context_shape_vox}"
            )
        elastic = params.get("elastic") if self.elastic is not None else None
        simple = params.get("simple") if self.simple is not None else None
        intensity = params.get("intensity") if self.intensity is not None else None
        fusable = simple is not None and [int(p) for p in simple["transpose"]] in (
            [0, 1, 2],
            [0, 2, 1],
        )
        if elastic is not None and fusable:
            mirror = simple["mirror"]
            x = self.elastic.resample(
                raw,
                elastic,
                mirror_yx=(bool(mirror[1]), bool(mirror[2])),
                transpose_yx=[int(p) for p in simple["transpose"]] == [0, 2, 1],
            )
            if mirror[0]:
                x = torch.flip(x, [0])
        else:
            if elastic is not None:
                x = self.elastic.resample(raw, elastic)
            else:
                x = crop_center(raw, self.output_shape_vox).to(torch.float32)
            if simple is not None:
                x = self.simple.apply(x, simple)
        if intensity is not None:
            return self.intensity.apply_to_raw(x, intensity)
        return x.div_(255).mul_(2).sub_(1)
