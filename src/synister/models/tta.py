"""Test-time augmentation: average a network's logits over the in-plane symmetries of a patch.

EM sections have no preferred in-plane direction, so the 8 flips and transposes of the y,x plane
(the dihedral group of the square) show the same synapse; training's mirror/transpose
augmentation teaches the network so. Averaging over them removes the part of the network's
output that still depends on orientation. A y/x transpose is a symmetry of the patch only when
it is square in y,x; other patches get the 4 flips.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def in_plane_symmetries(shape_zyx) -> list[tuple[bool, bool, bool]]:
    """(flip y, flip x, transpose y/x) of every in-plane symmetry of a patch of that shape:
    8 for square y,x, else the 4 flips."""
    transposes = (False, True) if int(shape_zyx[-1]) == int(shape_zyx[-2]) else (False,)
    return list(itertools.product((False, True), (False, True), transposes))


def _transform(x: torch.Tensor, flip_y: bool, flip_x: bool, transpose: bool) -> torch.Tensor:
    dims = [d for d, flip in ((-2, flip_y), (-1, flip_x)) if flip]
    if dims:
        x = torch.flip(x, dims)
    return x.transpose(-1, -2) if transpose else x


def flip_average_logits(model: nn.Module, raw: torch.Tensor) -> torch.Tensor:
    """Mean logits (B, classes) of ``model`` over the in-plane symmetries of ``raw``
    (B, [C,] Z, Y, X): 8 network passes for square y,x, 4 otherwise.

    Call it where ``model(raw)`` would be called (eval mode, under ``torch.no_grad()``).
    """
    if raw.dim() not in (4, 5):
        raise ValueError(f"raw must be (B, Z, Y, X) or (B, C, Z, Y, X), got {tuple(raw.shape)}")
    total = None
    symmetries = in_plane_symmetries(raw.shape)
    for flip_y, flip_x, transpose in symmetries:
        logits = model(_transform(raw, flip_y, flip_x, transpose).contiguous())
        total = logits if total is None else total + logits
    return total / len(symmetries)


__all__ = ["flip_average_logits", "in_plane_symmetries"]
