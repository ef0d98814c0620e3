"""Elastic deformation: jitter on a coarse control grid, rotation in the y, x plane and section
slips and shifts, applied as one resampling of the context patch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import make_interp_spline

from .base import Augmentation, Shape3, central_offset_vox, shape3


class ElasticAugment(Augmentation):
    """Elastic jitter, rotation in the y,x plane and section slips/shifts, in one resampling.

    The source coordinate of every output voxel ``p`` (context voxel units) is
    ``R(p - c) + c + jitter(p) + misalign(z)`` with ``c`` the output's centre, as in gunpowder.
    The field is built on a grid subsampled by ``subsample`` in y,x (every section is kept in z,
    because misalignment is per section), upsampled bilinearly (exact for the rotation, smooth
    for the jitter) and applied with ONE ``grid_sample`` per patch: bilinear per section when
    there is no z jitter (z coordinates stay integral, i.e. nearest in z), trilinear otherwise.

    Unlike gunpowder, which reads whatever source region a draw needs, the read region is fixed
    (:meth:`context_shape_vox`) so patches can be read in batches; to bound it, jitter is clipped
    to ``jitter_clip_sigmas`` standard deviations and the summed misalignment of a section to
    ``max_misalign_vox``. Within that context no output voxel samples outside real data.
    """

    def __init__(
        self,
        control_point_spacing_vox: Sequence[int] = (4, 40, 40),
        jitter_sigma_vox: Sequence[float] = (0.0, 2.0, 2.0),
        rotation_interval_rad: Sequence[float] = (0.0, math.pi / 2),
        prob_slip: float = 0.05,
        prob_shift: float = 0.05,
        max_misalign_vox: int = 10,
        subsample: int = 8,
        jitter_clip_sigmas: float = 3.0,
    ):
        self.control_point_spacing_vox = shape3(
            control_point_spacing_vox, "control_point_spacing_vox"
        )
        self.jitter_sigma_vox = tuple(float(s) for s in jitter_sigma_vox)
        if len(self.jitter_sigma_vox) != 3 or min(self.jitter_sigma_vox) < 0:
            raise ValueError(
                f"jitter_sigma_vox must be three non-negative numbers, got {jitter_sigma_vox}"
            )
        lo, hi = (float(a) for a in rotation_interval_rad)
        if hi < lo:
            raise ValueError(
                f"rotation_interval_rad must be (low, high), got {rotation_interval_rad}"
            )
        self.rotation_interval_rad = (lo, hi)
        if not (0 <= prob_slip and 0 <= prob_shift and prob_slip + prob_shift <= 1):
            raise ValueError(
                f"prob_slip={prob_slip}, prob_shift={prob_shift} must be >= 0 and sum to <= 1"
            )
        self.prob_slip, self.prob_shift = float(prob_slip), float(prob_shift)
        if max_misalign_vox < 0:
            raise ValueError(f"max_misalign_vox must be >= 0, got {max_misalign_vox}")
        self.max_misalign_vox = int(max_misalign_vox)
        if subsample < 1:
            raise ValueError(f"subsample must be >= 1, got {subsample}")
        self.subsample = int(subsample)
        self.jitter_clip_sigmas = float(jitter_clip_sigmas)
        self._weights_cache: dict[tuple, Any] = {}  # per-shape weights and contexts

    # ---- geometry ----------------------------------------------------------------------------
    def _jitter_bound_vox(self) -> tuple[float, float, float]:
        return tuple(self.jitter_clip_sigmas * s for s in self.jitter_sigma_vox)  # type: ignore[return-value]

    def _rotation_extent_vox(self, half_y: float, half_x: float) -> tuple[float, float]:
        """Largest |source - centre| in y and x over all angles of the rotation interval."""
        lo, hi = self.rotation_interval_rad
        angles = np.linspace(lo, hi, 2049)
        cos, sin = np.abs(np.cos(angles)), np.abs(np.sin(angles))
        ext_y = np.max(half_y * cos + half_x * sin)
        ext_x = np.max(half_y * sin + half_x * cos)
        # dense sampling can miss the true maximum by a hair; the sqrt bound never is exceeded
        radius = math.hypot(half_y, half_x)
        return min(radius, float(ext_y) + 1e-3 * radius), min(radius, float(ext_x) + 1e-3 * radius)

    def context_shape_vox(self, output_shape_vox: Sequence[int]) -> Shape3:
        """Shape to read around an output patch (same centre) so every sample hits real data."""
        out = shape3(output_shape_vox, "output_shape_vox")
        key = ("context", out)
        if key not in self._weights_cache:
            self._weights_cache[key] = self._context_shape_vox(out)
        return self._weights_cache[key]  # type: ignore[return-value]

    def _context_shape_vox(self, out: Shape3) -> Shape3:
        half = [(s - 1) / 2 for s in out]
        rot_y, rot_x = self._rotation_extent_vox(half[1], half[2])
        jit = self._jitter_bound_vox()
        reach = [
            half[0] + jit[0],
            rot_y + jit[1] + self.max_misalign_vox,
            rot_x + jit[2] + self.max_misalign_vox,
        ]
        # +1e-6 absorbs float error; a fractional reach needs the next voxel for interpolation
        pads = [max(0, math.ceil(r - h - 1e-6)) for r, h in zip(reach, half, strict=True)]
        return tuple(s + 2 * p for s, p in zip(out, pads, strict=True))  # type: ignore[return-value]

    def _subsampled_positions(self, size: int) -> np.ndarray:
        n = max(2, math.ceil((size - 1) / self.subsample) + 1) if size > 1 else 1
        return np.linspace(0.0, size - 1, n)

    def _spline_weights(self, size: int, spacing: int, positions: np.ndarray) -> np.ndarray:
        """(len(positions), n_control) cubic-spline interpolation matrix for one axis."""
        key = (size, spacing, len(positions))
        w = self._weights_cache.get(key)
        if w is None:
            n_control = max(1, round(size / spacing)) + 1
            if size == 1:
                w = np.zeros((len(positions), n_control))
                w[:, 0] = 1.0
            else:
                knots = np.linspace(0.0, size - 1, n_control)
                spline = make_interp_spline(knots, np.eye(n_control), k=min(3, n_control - 1))
                w = spline(positions)
            self._weights_cache[key] = w
        return w

    def control_grid_shape(self, output_shape_vox: Sequence[int]) -> Shape3:
        """Control points per axis: one every ``control_point_spacing_vox``, ends included."""
        out = shape3(output_shape_vox, "output_shape_vox")
        return tuple(
            max(1, round(s / c)) + 1
            for s, c in zip(out, self.control_point_spacing_vox, strict=True)
        )  # type: ignore[return-value]

    # ---- parameters --------------------------------------------------------------------------
    def make_params(self, rng: np.random.Generator, shape_vox: Sequence[int]) -> dict:
        out = shape3(shape_vox)
        lo, hi = self.rotation_interval_rad
        angle = float(rng.uniform(lo, hi)) if hi > lo else lo
        grid = self.control_grid_shape(out)
        sigma = np.array(self.jitter_sigma_vox)
        jitter = rng.standard_normal((*grid, 3)) * sigma
        bound = np.array(self._jitter_bound_vox())
        jitter = np.clip(jitter, -bound, bound)
        # per section: a slip moves that section only, a shift moves it and all following ones
        m = self.max_misalign_vox
        misalign = np.zeros((out[0], 2), dtype=np.int64)
        draws = rng.random(out[0])
        offsets = rng.integers(-m, m + 1, size=(out[0], 2))
        for z in range(out[0]):
            if draws[z] < self.prob_slip:
                misalign[z] += offsets[z]
            elif draws[z] < self.prob_slip + self.prob_shift:
                misalign[z:] += offsets[z]
        misalign = np.clip(misalign, -m, m)
        return {
            "output_shape_vox": list(out),
            "angle_rad": angle,
            "jitter_vox": jitter.round(6).tolist(),
            "misalign_vox": misalign.tolist(),
        }

    # ---- application -------------------------------------------------------------------------
    def source_coordinates_vox(self, context_shape_vox: Sequence[int], params: dict) -> np.ndarray:
        """Source coordinates (context voxels, z,y,x last) on the subsampled grid.

        Shape (Z, n_y, n_x, 3): every output section, y and x at ``subsample`` spacing.
        """
        out = shape3(params["output_shape_vox"], "params['output_shape_vox']")
        ctx = shape3(context_shape_vox, "context_shape_vox")
        need = self.context_shape_vox(out)
        if any(c < n for c, n in zip(ctx, need, strict=True)):
            raise ValueError(
                f"context patch of shape {ctx} is smaller than the {need} needed for output {out}"
            )
        off = central_offset_vox(ctx, out)
        centre = [o + (s - 1) / 2 for o, s in zip(off, out, strict=True)]
        zs = np.arange(out[0], dtype=np.float64)
        ys = self._subsampled_positions(out[1])
        xs = self._subsampled_positions(out[2])
        jitter = np.asarray(params["jitter_vox"], dtype=np.float64)
        if jitter.shape != (*self.control_grid_shape(out), 3):
            raise ValueError(
                f"params['jitter_vox'] has shape {jitter.shape}, expected "
                f"{(*self.control_grid_shape(out), 3)} for output {out}"
            )
        wz = self._spline_weights(out[0], self.control_point_spacing_vox[0], zs)
        wy = self._spline_weights(out[1], self.control_point_spacing_vox[1], ys)
        wx = self._spline_weights(out[2], self.control_point_spacing_vox[2], xs)
        field = np.einsum("az,by,cx,zyxd->abcd", wz, wy, wx, jitter, optimize=True)
        bound = np.array(self._jitter_bound_vox())
        field = np.clip(field, -bound, bound)
        misalign = np.asarray(params["misalign_vox"], dtype=np.float64)
        if misalign.shape != (out[0], 2):
            raise ValueError(
                f"params['misalign_vox'] has shape {misalign.shape}, expected {(out[0], 2)}"
            )
        angle = float(params["angle_rad"])
        cos, sin = math.cos(angle), math.sin(angle)
        dy = (ys - (out[1] - 1) / 2)[None, :, None]
        dx = (xs - (out[2] - 1) / 2)[None, None, :]
        coords = np.empty_like(field)
        coords[..., 0] = (off[0] + zs)[:, None, None] + field[..., 0]
        coords[..., 1] = (
            centre[1] + cos * dy - sin * dx + field[..., 1] + misalign[:, 0, None, None]
        )
        coords[..., 2] = (
            centre[2] + sin * dy + cos * dx + field[..., 2] + misalign[:, 1, None, None]
        )
        return coords

    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Resample a context patch ``x`` (Z', Y', X') to a float32 output (Z, Y, X)."""
        return self.resample(x, params)

    def resample(
        self,
        x: torch.Tensor,
        params: dict,
        mirror_yx: tuple[bool, bool] = (False, False),
        transpose_yx: bool = False,
    ) -> torch.Tensor:
        """:meth:`apply`, optionally followed by a y/x mirror and y/x transpose at no cost.

        ``x`` may be uint8: only the part the grid reaches is converted to float32.

        The mirror and transpose are folded into the sampling grid (reversing or transposing
        the subsampled grid, whose positions are symmetric), which saves a copy of the output.
        """
        if x.dim() != 3:
            raise ValueError(
                f"ElasticAugment expects a (Z, Y, X) patch, got shape {tuple(x.shape)}"
            )
        out = shape3(params["output_shape_vox"], "params['output_shape_vox']")
        coords = self.source_coordinates_vox(tuple(x.shape), params)
        if mirror_yx[0]:
            coords = coords[:, ::-1]
        if mirror_yx[1]:
            coords = coords[:, :, ::-1]
        if transpose_yx:
            if out[1] != out[2]:
                raise ValueError(f"cannot transpose y and x of a non-square output {out}")
            coords = coords.transpose(0, 2, 1, 3)
        # only the box the grid reaches is converted and sampled (bilinear upsampling of the
        # coarse grid stays inside its bounding box); a small angle needs far less than the
        # context, and a smaller input is kinder to the cache
        planar = self.jitter_sigma_vox[0] == 0
        low = np.floor(coords.min(axis=(0, 1, 2))).astype(np.int64)
        high = np.ceil(coords.max(axis=(0, 1, 2))).astype(np.int64) + 1
        low, high = np.maximum(low, 0), np.minimum(high, x.shape)
        if planar:  # z stays integral: exactly the output's sections
            low[0] = central_offset_vox(x.shape, out)[0]
            high[0] = low[0] + out[0]
        box = x[low[0] : high[0], low[1] : high[1], low[2] : high[2]].to(torch.float32)
        size = high - low
        # normalise for align_corners=True: index 0 -> -1, index size-1 -> +1
        scale = np.where(size > 1, 2.0 / np.maximum(size - 1, 1), 0.0)
        normed = ((coords - low) * scale - (size > 1)).astype(np.float32)
        # grid_sample wants x, y(, z) last
        coarse = torch.from_numpy(
            np.ascontiguousarray(normed[..., [2, 1]] if planar else normed[..., ::-1])
        )
        grid = self._upsample_yx(coarse, out[1], out[2])
        if planar:
            # one bilinear grid_sample with the sections as the batch (nearest in z)
            return F.grid_sample(
                box.unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=True
            )[:, 0]
        return F.grid_sample(
            box[None, None], grid[None], mode="bilinear", padding_mode="border", align_corners=True
        )[0, 0]

    def _upsample_yx(self, coarse: torch.Tensor, size_y: int, size_x: int) -> torch.Tensor:
        """Bilinear upsampling (align_corners) of (Z, n_y, n_x, D) to (Z, Y, X, D).

        Done as two small matrix products: about 5x faster than ``F.interpolate`` on CPU,
        and the result comes out channels-last, as ``grid_sample`` wants it.
        """
        z, n_y, n_x, d = coarse.shape
        w_y = self._linear_weights(size_y, n_y)
        w_x = self._linear_weights(size_x, n_x)
        along_x = torch.einsum("xa,zbad->zbxd", w_x, coarse).reshape(z, n_y, size_x * d)
        return torch.matmul(w_y, along_x).view(z, size_y, size_x, d)

    def _linear_weights(self, n_out: int, n_in: int) -> torch.Tensor:
        key = ("linear", n_out, n_in)
        w = self._weights_cache.get(key)
        if w is None:
            w = np.zeros((n_out, n_in), dtype=np.float32)
            if n_in == 1:
                w[:, 0] = 1.0
            else:
                pos = np.linspace(0.0, n_in - 1, n_out)
                left = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
                frac = pos - left
                w[np.arange(n_out), left] = 1.0 - frac
                w[np.arange(n_out), left + 1] += frac
            w = torch.from_numpy(w)
            self._weights_cache[key] = w
        return w
