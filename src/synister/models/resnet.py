"""A 3D ResNet-18 for synapse patches: the alternative to the original's VGG.

Four stages of two basic residual blocks (3x3x3 convolutions with batch norm), channels
``start_channels`` x (1, 2, 4, 8). EM voxels are anisotropic (FAFB: 40x4x4 nm), so the
downsampling per stage is given as z,y,x factors (the VGG's ``downsample_factors``) instead of a
fixed stride of 2; a global average pool makes the network independent of the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

STAGE_WIDTHS = (1, 2, 4, 8)


class BasicBlock3D(nn.Module):
    """Two 3x3x3 convolutions with a shortcut; the shortcut is projected when shapes change."""

    def __init__(self, channels_in: int, channels_out: int, stride: Sequence[int]) -> None:
        super().__init__()
        stride = tuple(stride)
        self.conv1 = nn.Conv3d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(channels_out)
        self.conv2 = nn.Conv3d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(channels_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if channels_in != channels_out or any(s != 1 for s in stride):
            self.shortcut = nn.Sequential(
                nn.Conv3d(channels_in, channels_out, 1, stride=stride, bias=False),
                nn.BatchNorm3d(channels_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet3D(nn.Module):
    """3D ResNet-18 classifier; input (B, input_channels, Z, Y, X) in [-1, 1], output logits.

    ``downsample_factors`` (up to four z,y,x factors) are the strides of the stem and of stages
    2-4; missing ones are (1, 1, 1).
    """

    def __init__(
        self,
        output_classes: int = 6,
        input_channels: int = 1,
        start_channels: int = 12,
        downsample_factors: Sequence[Sequence[int]] = ((1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)),
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        if len(downsample_factors) > len(STAGE_WIDTHS):
            raise ValueError(
                f"ResNet3D: at most {len(STAGE_WIDTHS)} downsample factors (stem and stages 2-4), "
                f"got {len(downsample_factors)}"
            )
        if len(blocks_per_stage) != len(STAGE_WIDTHS):
            raise ValueError(f"ResNet3D: blocks_per_stage needs {len(STAGE_WIDTHS)} values")
        strides = [tuple(f) for f in downsample_factors]
        strides += [(1, 1, 1)] * (len(STAGE_WIDTHS) - len(strides))
        self.stem = nn.Sequential(
            nn.Conv3d(input_channels, start_channels, 3, stride=strides[0], padding=1, bias=False),
            nn.BatchNorm3d(start_channels),
            nn.ReLU(inplace=True),
        )
        stages = []
        channels = start_channels
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage, strict=True)):
            channels_out = start_channels * width
            stride = (1, 1, 1) if index == 0 else strides[index]
            layers = [BasicBlock3D(channels, channels_out, stride)]
            layers += [
                BasicBlock3D(channels_out, channels_out, (1, 1, 1)) for _ in range(blocks - 1)
            ]
            stages.append(nn.Sequential(*layers))
            channels = channels_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.classifier = nn.Linear(channels, output_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():  # start each residual branch near identity
            if isinstance(module, BasicBlock3D):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if raw.dim() == 4:
            raw = raw.unsqueeze(1)
        features = self.pool(self.stages(self.stem(raw)))
        return self.classifier(features.flatten(1))
