"""Networks (``Vgg3D``, ``ResNet3D``), :func:`build_model` from a config, checkpoints, bundles,
and :func:`load_model`, the one way to load a trained model in any of its forms."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .checkpoint import (
    CheckpointError,
    checkpoint_iteration,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    strip_wrapper_prefixes,
    tag_model,
    unwrap_model,
)
from .errors import ModelError
from .resnet import ResNet3D
from .vgg import Vgg3D, vgg_feature_shape

if TYPE_CHECKING:
    from synister.config import PredictConfig, TrainConfig

__all__ = [
    "CheckpointError",
    "LoadedModel",
    "ModelError",
    "ResNet3D",
    "Vgg3D",
    "build_model",
    "checkpoint_iteration",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "strip_wrapper_prefixes",
    "tag_model",
    "unwrap_model",
    "vgg_feature_shape",
]


def build_model(cfg: TrainConfig | PredictConfig) -> nn.Module:
    """The network a training or prediction config describes, with ``len(cfg.classes)`` outputs.

    The network carries the config's network record (:func:`tag_model`): its checkpoints store
    it, and loading weights trained on another input shape for prediction is refused.
    """
    return tag_model(_network(cfg), cfg)


def _network(cfg: TrainConfig | PredictConfig) -> nn.Module:
    if cfg.network == "VGG":
        return Vgg3D(
            input_size=cfg.input_shape,
            fmaps=cfg.fmaps,
            downsample_factors=cfg.downsample_factors,
            fmap_inc=cfg.fmap_inc,
            n_convolutions=cfg.n_convolutions,
            output_classes=len(cfg.classes),
            classifier_units=cfg.classifier_units,
        )
    if cfg.network == "ResNet18":
        return ResNet3D(
            output_classes=len(cfg.classes),
            start_channels=cfg.fmaps,
            downsample_factors=cfg.downsample_factors,
        )
    raise ValueError(f"network: unknown network {cfg.network!r}; use VGG or ResNet18")


from .resolve import LoadedModel, load_model  # noqa: E402  (it builds with build_model above)
