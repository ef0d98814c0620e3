"""A FAFB-like synthetic dataset whose Bayes-optimal accuracy is known (``synister synthetic``)."""

from .dataset import VOXEL_SIZE_NM, generate
from .oracle import oracle_accuracy, oracle_from_latents
from .presets import FEATURES, PRESETS, get_preset

__all__ = [
    "FEATURES",
    "PRESETS",
    "VOXEL_SIZE_NM",
    "generate",
    "get_preset",
    "oracle_accuracy",
    "oracle_from_latents",
]
