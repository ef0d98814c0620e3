"""The VGG of the original synister, state_dict-compatible with funlib.learn.torch's ``Vgg3D``.

Module layout (so original checkpoints load unchanged): ``features`` is one ``nn.Sequential``
holding, per level, ``n_convolutions`` x [Conv3d(k=3, padding=1), BatchNorm3d, ReLU] and then
MaxPool3d(factor); the feature maps grow by ``fmap_inc`` after each level. ``classifier`` is
Linear(flat, H), ReLU, Dropout, Linear(H, H), ReLU, Dropout, Linear(H, classes), applied to the
features flattened in C, Z, Y, X order, with H = ``classifier_units`` (funlib's 4096; its two
layers hold most of the weights, e.g. 34 M of a VGG on 8x64x64, so a VGG that trains in
minutes on a CPU needs far fewer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: funlib's width of the two hidden classifier layers (the default of ``classifier_units``).
HIDDEN_UNITS = 4096


def vgg_feature_shape(
    input_size: Sequence[int],
    fmaps: int,
    downsample_factors: Sequence[Sequence[int]],
    fmap_inc: Sequence[int],
) -> tuple[int, tuple[int, int, int]]:
    """Channels and z,y,x size (voxels) of the last feature map; pooling must divide exactly."""
    size = tuple(int(s) for s in input_size)
    channels, current = fmaps, fmaps
    for level, factor in enumerate(downsample_factors):
        if any(s % f for s, f in zip(size, factor, strict=True)):
            raise ValueError(
                f"Vgg3D: input size {tuple(input_size)} cannot be max-pooled at level {level}: "
                f"{size} is not divisible by {tuple(factor)}"
            )
        size = tuple(s // f for s, f in zip(size, factor, strict=True))
        channels = current
        current *= fmap_inc[level]
    return channels, size  # type: ignore[return-value]


class Vgg3D(nn.Module):
    """3D VGG classifier; input (B, input_fmaps, Z, Y, X) floats in [-1, 1], output logits."""

    def __init__(
        self,
        input_size: Sequence[int],
        fmaps: int = 12,
        downsample_factors: Sequence[Sequence[int]] = ((2, 2, 2),) * 4,
        fmap_inc: Sequence[int] = (2, 2, 2, 2),
        n_convolutions: Sequence[int] = (2, 2, 2, 2),
        output_classes: int = 6,
        input_fmaps: int = 1,
        classifier_units: int = HIDDEN_UNITS,
    ) -> None:
        super().__init__()
        if classifier_units < 1:
            raise ValueError(f"Vgg3D: classifier_units must be >= 1, got {classifier_units}")
        levels = len(downsample_factors)
        if len(fmap_inc) != levels or len(n_convolutions) != levels:
            raise ValueError(
                f"Vgg3D: fmap_inc ({len(fmap_inc)}) and n_convolutions ({len(n_convolutions)}) "
                f"need one value per level of downsample_factors ({levels})"
            )
        if any(n < 1 for n in n_convolutions):
            raise ValueError(f"Vgg3D: every level needs a convolution, got {tuple(n_convolutions)}")
        last_channels, last_size = vgg_feature_shape(
            input_size, fmaps, downsample_factors, fmap_inc
        )
        self.input_size = tuple(int(s) for s in input_size)
        self.input_fmaps = input_fmaps

        layers: list[nn.Module] = []
        channels_in, channels_out = input_fmaps, fmaps
        for level, factor in enumerate(downsample_factors):
            for _ in range(n_convolutions[level]):
                layers += [
                    nn.Conv3d(channels_in, channels_out, kernel_size=3, padding=1),
                    nn.BatchNorm3d(channels_out),
                    nn.ReLU(inplace=True),
                ]
                channels_in = channels_out
            layers.append(nn.MaxPool3d(tuple(factor)))
            channels_out = channels_in * fmap_inc[level]
        self.features = nn.Sequential(*layers)

        flat = last_channels * last_size[0] * last_size[1] * last_size[2]
        self.classifier = nn.Sequential(
            nn.Linear(flat, classifier_units),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(classifier_units, classifier_units),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(classifier_units, output_classes),
        )

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if raw.dim() == 4 and self.input_fmaps == 1:  # (B, Z, Y, X), as the original accepted
            raw = raw.unsqueeze(1)
        features = self.features(raw)
        return self.classifier(features.flatten(1))
