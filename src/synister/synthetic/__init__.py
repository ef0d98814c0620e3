"""A FAFB-like synthetic dataset whose Bayes-optimal accuracy is known (``synister synthetic``)."""

from .ceiling import ceiling_from_features, cross_validated_ceiling, image_ceiling
from .dataset import STRUCTURES_DATASET, VOXEL_SIZE_NM, generate
from .oracle import oracle_accuracy, oracle_from_latents
from .presets import FEATURES, PRESETS, get_preset
from .structures import STRUCTURE_LABELS

__all__ = [
    "FEATURES",
    "PRESETS",
    "STRUCTURES_DATASET",
    "STRUCTURE_LABELS",
    "VOXEL_SIZE_NM",
    "ceiling_from_features",
    "cross_validated_ceiling",
    "generate",
    "get_preset",
    "image_ceiling",
    "oracle_accuracy",
    "oracle_from_latents",
]
