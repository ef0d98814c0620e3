"""Training augmentations (moved into a package; split in the next commit)."""

from .elastic import (
    AugmentPipeline,
    Augmentation,
    ElasticAugment,
    IntensityAugment,
    SimpleAugment,
    central_offset_vox,
    crop_center,
)

__all__ = [
    "AugmentPipeline",
    "Augmentation",
    "ElasticAugment",
    "IntensityAugment",
    "SimpleAugment",
    "central_offset_vox",
    "crop_center",
]
