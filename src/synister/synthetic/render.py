"""EM-like rendering, one section at a time: neuropil, mitochondria, microtubules and synapses
(drawn by :mod:`.synapse`).

Everything random is drawn up front into a :class:`Scene` (small: a few numbers per cell,
mitochondrion and synapse), so any section can be rendered alone and memory stays at a few
sections however large the volume. Tissue is laid out in pixel coordinates of the aligned volume;
a section's misalignment shifts where it samples the tissue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.spatial import cKDTree
from scipy.special import expit

from .layout import PIXEL_NM, SECTION_NM
from .synapse import SynapseShape, draw_synapse, synapse_shape

#: Mean spacing of neurite profiles (pixels) in the background partition.
CELL_SPACING_PX = 44.0
#: Sections on each side of a synapse that show any of its features.
SYNAPSE_HALF_SECTIONS = 2
#: Grid (sections, px, px) of the coarse random warp of the cell borders.
WARP_STEP: tuple[int, int, int] = (4, 8, 8)
#: Rows of a section handled at once by the cell partition (bounds its temporary memory).
STRIPE_ROWS = 128


@dataclass
class Scene:
    shape_vox: tuple[int, int, int]
    seeds_yx: np.ndarray  # (n, 2) px at section 0
    seed_drift: np.ndarray  # (n, 2) px / section
    seed_wobble: np.ndarray  # (n, 4): amp_y, amp_x, freq, phase
    seed_weight: np.ndarray  # (n,) px^2 (power diagram)
    cell_value: np.ndarray  # (n,) cytoplasm grey
    microtubules: np.ndarray  # (m, 3): seed index, dy, dx px
    mitos: np.ndarray  # (k, 7): z_nm, y, x px, long, short, height nm, angle
    synapses: list[SynapseShape]
    shift_px: np.ndarray  # (Z, 2) section misalignment
    gain: np.ndarray  # (Z,)
    bias: np.ndarray  # (Z,)
    blur_px: np.ndarray  # (Z,)
    defect: np.ndarray  # (Z,) 0 none, 1 fold, 2 low contrast
    noise_sigma: float
    warp: np.ndarray  # (2, z, y, x) coarse displacement field, px
    texture: list[np.ndarray] | None = None


def make_scene(
    shape_vox: tuple[int, int, int],
    latents: pd.DataFrame,
    centers_vox: np.ndarray,
    rng: np.random.Generator,
    *,
    noise_sigma: float,
    defect_probability: float,
    texture: list[np.ndarray] | None = None,
    dense_core_scale: float = 1.7,
) -> Scene:
    """Draw every random element of the volume (cells, organelles, synapse shapes, nuisances)."""
    n_z, n_y, n_x = shape_vox
    pad = 40.0
    area = (n_y + 2 * pad) * (n_x + 2 * pad)
    n_seeds = max(4, int(area / CELL_SPACING_PX**2))
    seeds = rng.uniform([-pad, -pad], [n_y + pad, n_x + pad], (n_seeds, 2))
    drift = rng.normal(0, 0.35, (n_seeds, 2))
    wobble = np.column_stack(
        [
            rng.normal(0, 2.5, (n_seeds, 2)),
            rng.uniform(0.05, 0.2, n_seeds),
            rng.uniform(0, 2 * np.pi, n_seeds),
        ]
    )
    weight = (rng.lognormal(np.log(14.0), 0.6, n_seeds)) ** 2
    dark_cell = rng.uniform(size=n_seeds) < 0.08
    cell_value = np.where(dark_cell, rng.normal(135, 8, n_seeds), rng.normal(172, 11, n_seeds))

    # microtubules ride with their neurite's seed; about a third of the neurites carry some
    carriers = np.flatnonzero(rng.uniform(size=n_seeds) < 0.35)
    per = rng.integers(3, 14, len(carriers))
    mt_seed = np.repeat(carriers, per)
    mt_off = rng.normal(0, 9.0, (len(mt_seed), 2))
    microtubules = np.column_stack([mt_seed, mt_off])

    # mitochondria: ellipsoids, drawn before the synapses (which cover them where they meet)
    vol_um3 = n_z * SECTION_NM * n_y * n_x * PIXEL_NM**2 / 1e9
    n_mito = rng.poisson(vol_um3 * 1.2)
    mz = rng.uniform(0, n_z * SECTION_NM, n_mito)
    myx = rng.uniform([0, 0], [n_y, n_x], (n_mito, 2))
    long_nm = rng.uniform(110, 260, n_mito)
    short_nm = long_nm * rng.uniform(0.35, 0.7, n_mito)
    height_nm = rng.uniform(100, 300, n_mito)
    angle = rng.uniform(0, np.pi, n_mito)
    mitos = np.column_stack([mz, myx, long_nm, short_nm, height_nm, angle])
    coarse = (n_z // WARP_STEP[0] + 2, n_y // WARP_STEP[1] + 3, n_x // WARP_STEP[2] + 3)
    warp = np.stack([gaussian_filter(rng.normal(0, 1, coarse), (0.7, 1.5, 1.5)) for _ in range(2)])
    warp = (warp / warp.std() * 9.0).astype(np.float32)
    synapses = [
        synapse_shape(row, c, rng, dense_core_scale)
        for (_, row), c in zip(latents.iterrows(), centers_vox, strict=True)
    ]

    # section nuisances: alignment jitter, rare slipped sections, brightness/contrast, blur, defects
    shift = rng.normal(0, 0.7, (n_z, 2))
    slips = rng.uniform(size=n_z) < 0.04
    shift[slips] += rng.normal(0, 8.0, (int(slips.sum()), 2))
    shift = np.round(shift).astype(int)
    defect = np.where(
        rng.uniform(size=n_z) < defect_probability, rng.integers(1, 3, n_z), 0
    ).astype(int)
    return Scene(
        shape_vox=tuple(int(s) for s in shape_vox),
        seeds_yx=seeds,
        seed_drift=drift,
        seed_wobble=wobble,
        seed_weight=weight,
        cell_value=cell_value,
        microtubules=microtubules,
        mitos=mitos,
        synapses=synapses,
        shift_px=shift,
        gain=rng.normal(1.0, 0.06, n_z),
        bias=rng.normal(0, 6.0, n_z),
        blur_px=rng.uniform(0.6, 1.1, n_z),
        defect=defect,
        noise_sigma=noise_sigma,
        warp=warp,
        texture=texture,
    )


def _seeds_at(scene: Scene, z: int) -> np.ndarray:
    w = scene.seed_wobble
    wob = w[:, :2] * np.sin(w[:, 2:3] * z + w[:, 3:4])
    return scene.seeds_yx + scene.seed_drift * z + wob


def _neuropil(scene: Scene, z: int, rng: np.random.Generator, origin: np.ndarray) -> np.ndarray:
    """Cell profiles (power diagram of drifting seeds) with dark membranes and microtubules."""
    _, n_y, n_x = scene.shape_vox
    seeds = _seeds_at(scene, z)
    w_max = scene.seed_weight.max()
    lift = np.sqrt(w_max - scene.seed_weight)
    tree = cKDTree(np.column_stack([seeds, lift]))
    to_border_px = np.empty((n_y, n_x), np.float32)
    label = np.empty((n_y, n_x), np.int32)
    # row stripes keep the query's temporaries small whatever the section size
    for r0 in range(0, n_y, STRIPE_ROWS):
        r1 = min(n_y, r0 + STRIPE_ROWS)
        yy, xx = np.mgrid[r0:r1, 0:n_x].astype(np.float32)
        # a smooth random warp (continuous across sections) bends cell borders into round profiles
        ty, tx = yy + origin[0], xx + origin[1]
        coords = [np.full(yy.shape, z / WARP_STEP[0]), ty / WARP_STEP[1] + 1, tx / WARP_STEP[2] + 1]
        wy = map_coordinates(scene.warp[0], coords, order=1, mode="nearest")
        wx = map_coordinates(scene.warp[1], coords, order=1, mode="nearest")
        pts = np.column_stack([(ty + wy).ravel(), (tx + wx).ravel(), np.zeros(yy.size)])
        dist, idx = tree.query(pts, k=2, workers=-1)
        gap = np.linalg.norm(seeds[idx[:, 0]] - seeds[idx[:, 1]], axis=1)
        border = (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2 * np.maximum(gap, 1e-6))
        to_border_px[r0:r1] = border.reshape(r1 - r0, n_x)
        label[r0:r1] = idx[:, 0].reshape(r1 - r0, n_x)
    img = scene.cell_value[label].astype(np.float32)

    # granular cytoplasm and microtubule cross-sections, smoothed together
    detail = rng.normal(0, 10.0, (n_y, n_x)).astype(np.float32)
    mt = scene.microtubules
    if len(mt):
        pos = seeds[mt[:, 0].astype(int)] + mt[:, 1:] - origin
        iy, ix = np.round(pos).astype(int).T
        ok = (iy >= 0) & (iy < n_y) & (ix >= 0) & (ix < n_x)
        iy, ix, owner = iy[ok], ix[ok], mt[ok, 0].astype(int)
        inside = (label[iy, ix] == owner) & (to_border_px[iy, ix] > 4)
        np.add.at(detail, (iy[inside], ix[inside]), -260.0)
    img += gaussian_filter(detail, 1.3)
    img -= 95.0 * np.exp(-((to_border_px / 1.6) ** 2))
    return img


def _texture_background(scene: Scene, z: int) -> np.ndarray:
    """A user's EM sections, mirrored to fill the section, scaled to the synthetic grey levels."""
    tex = scene.texture[z % len(scene.texture)].astype(np.float32)
    _, n_y, n_x = scene.shape_vox
    reps = (-(-n_y // tex.shape[0]) + 1, -(-n_x // tex.shape[1]) + 1)
    tiled = np.block(
        [
            [tex[:: (-1 if i % 2 else 1), :: (-1 if j % 2 else 1)] for j in range(reps[1])]
            for i in range(reps[0])
        ]
    )[:n_y, :n_x]
    return (tiled - tiled.mean()) / (tiled.std() + 1e-6) * 30.0 + 165.0


def _draw_mitos(img: np.ndarray, scene: Scene, z: int, origin: np.ndarray) -> None:
    z_nm = (z + 0.5) * SECTION_NM
    m = scene.mitos
    if not len(m):
        return
    dz = np.abs(m[:, 0] - z_nm)
    for mz, my, mx, long_nm, short_nm, h_nm, ang in m[dz < m[:, 5]]:
        s = np.sqrt(1 - ((mz - z_nm) / h_nm) ** 2)
        a, b = long_nm * s / PIXEL_NM, short_nm * s / PIXEL_NM
        cy, cx = my - origin[0], mx - origin[1]
        r = int(a) + 4
        y0, y1 = max(0, int(cy) - r), min(img.shape[0], int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(img.shape[1], int(cx) + r + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = dy * np.sin(ang) + dx * np.cos(ang)
        v = dy * np.cos(ang) - dx * np.sin(ang)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        d_px = (rho - 1) * b  # ~ distance to the outline
        inside = expit(-d_px / 0.8)
        cristae = 14.0 * np.sin(u * PIXEL_NM / 22.0 * 2 * np.pi + mz) * (rho < 0.8)
        value = 118.0 + cristae
        patch = img[y0:y1, x0:x1]
        patch[:] = patch * (1 - inside) + inside * value - 70 * np.exp(-((d_px / 1.4) ** 2))


def render_section(scene: Scene, z: int, seed: int) -> np.ndarray:
    """Section ``z`` as uint8 (Y, X); depends only on the scene, ``z`` and ``seed``."""
    rng = np.random.default_rng([seed, 7, z])
    origin = scene.shift_px[z].astype(float)
    if scene.texture:
        img = _texture_background(scene, z)
    else:
        img = _neuropil(scene, z, rng, origin)
        _draw_mitos(img, scene, z, origin)
    zs = np.array([s.center_vox[0] for s in scene.synapses])
    for i in np.flatnonzero(np.abs(zs - z) <= SYNAPSE_HALF_SECTIONS):
        draw_synapse(img, scene.synapses[i], z, origin)
    img = gaussian_filter(img, scene.blur_px[z])
    if scene.defect[z] == 1:  # a fold: a dark band across the section
        n_y, n_x = img.shape
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:n_y, 0:n_x]
        off = (yy - rng.uniform(0, n_y)) * np.cos(ang) - (xx - rng.uniform(0, n_x)) * np.sin(ang)
        img -= 110.0 * np.exp(-((off / rng.uniform(4, 14)) ** 2))
    elif scene.defect[z] == 2:  # washed out
        img = 0.35 * (img - img.mean()) + img.mean() + 30
    img = scene.gain[z] * (img - 160.0) + 160.0 + scene.bias[z]
    img += rng.normal(0, scene.noise_sigma, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def load_texture(directory: str | Path) -> list[np.ndarray]:
    """Greyscale sections from the PNG files of ``directory`` (sorted by name)."""
    from PIL import Image

    d = Path(directory)
    files = sorted(d.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no PNG sections in texture folder {d}")
    out = []
    for f in files:
        a = np.asarray(Image.open(f).convert("L"))
        if min(a.shape) < 32:
            raise ValueError(f"texture section {f} is {a.shape} pixels; need at least 32x32")
        out.append(a)
    return out


__all__ = ["Scene", "SynapseShape", "load_texture", "make_scene", "render_section"]
