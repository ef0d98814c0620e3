"""Measure every synapse's latent features back from the rendered volume.

This is the first half of the image-level ceiling (:mod:`synister.synthetic.ceiling` is the
second): how well could anyone tell the classes apart from the pictures, rather than from the
latent features the pictures were drawn from? The estimators use what the generator knows about
*where* each structure lies (the synapse's centre and membrane normal, each vesicle's centre,
every section's misalignment, blur and defects) but not the sizes the latents set; those they
recover from the pixels:

- cleft width and T-bar width: least-squares fits of the renderer's own noise-free drawing
  (``render.membrane_layers``, ``render.tbar_layer``; the vesicles drawn with their measured
  radii, a plain grey where the neuropil shows through), blurred as the section was, to the
  observed pixels of the central three sections, over a grid of candidate widths (coarse, then
  fine around the best), with a free gain and offset per section;
- vesicle diameter: per vesicle, a fit of its blurred radial profile (bright lumen, dark rim,
  dark core if dense) around its known centre in the section through that centre; the
  synapse's diameter is twice the median radius (dense-core ones divided by the preset's size
  ratio);
- dense-core fraction: a vesicle is dense-core when its centre is darker than its surroundings
  (the core is ~80 grey values darker, the noise 13 per pixel);
- vesicle count and cloud radius: from the vesicle centres (every drawn vesicle is plainly
  visible in the section through its centre: a dark rim of ~30 pixels, 60 grey values deep),
  in-plane positions only for the radius (z is known only to a 40 nm section).

On a 2,000-synapse ``fafb`` dataset the classifier of these measurements is as accurate as
the same classifier of the exact drawn sizes (cleft, T-bar, vesicle radii and dense-core flags
as the renderer drew them): the estimators lose next to nothing, so what separates the image
ceiling from the oracle is what the drawing never showed (a few vesicles sample the cloud's
radius and dense-core fraction; the drawn count saturates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr

from ..volumes import Volume
from .layout import PIXEL_NM, SECTION_NM
from .presets import FEATURES
from .render import SYNAPSE_HALF_SECTIONS, Scene
from .synapse import (
    TBAR_HEIGHT_NM,
    SynapseFrame,
    SynapseShape,
    membrane_layers,
    synapse_frame,
    tbar_layer,
    vesicle_profile,
)

#: Pixels up to this far (nm) from a vesicle's centre belong to its radial profile.
VESICLE_PROFILE_NM = 40.0
#: A vesicle whose centre is this much darker than its surroundings (grey values) is dense-core.
DENSE_CORE_CONTRAST = 30.0
#: Candidate vesicle radii, cleft widths and T-bar widths (nm): (first, last, coarse step); the
#: fine search spans one coarse step on each side of the coarse best in :data:`FINE_STEPS`
#: steps, and a parabola through the best fine candidate and its neighbours refines it.
RADIUS_GRID_NM = (8.0, 45.0, 1.0)
CLEFT_GRID_NM = (8.0, 32.0, 3.0)
TBAR_GRID_NM = (40.0, 152.0, 8.0)
FINE_STEPS = 8
#: Pixels this close (nm) to the rim of a vesicle that could not be measured are left out.
VESICLE_CLEARANCE_NM = 6.0
#: Grey value that stands in for the (unknown) neuropil where the synapse's drawing lets it show.
NEUROPIL_GREY = 170.0


@dataclass
class _Section:
    """One observed section around a synapse: its frame and pixels (grey values)."""

    frame: SynapseFrame
    image: np.ndarray  # float32, the frame's box
    blur_px: float
    washed_out: bool


def _sections(raw: np.ndarray, start: np.ndarray, syn: SynapseShape, scene: Scene) -> list:
    """The usable sections (no fold) of ``syn`` within ``raw`` read at ``start`` (z, y, x)."""
    out = []
    cz = int(syn.center_vox[0])
    for dz in range(-SYNAPSE_HALF_SECTIONS, SYNAPSE_HALF_SECTIONS + 1):
        z = cz + dz
        if not 0 <= z < scene.shape_vox[0] or scene.defect[z] == 1:
            continue
        frame = synapse_frame(syn, z, scene.shift_px[z].astype(float), scene.shape_vox[1:])
        if frame is None:
            continue
        rows = slice(frame.rows.start - start[1], frame.rows.stop - start[1])
        cols = slice(frame.cols.start - start[2], frame.cols.stop - start[2])
        image = raw[z - start[0], rows, cols].astype(np.float32)
        out.append(_Section(frame, image, float(scene.blur_px[z]), bool(scene.defect[z] == 2)))
    return out


def _grid(first: float, last: float, step: float) -> np.ndarray:
    return np.arange(first, last + step / 2, step)


def _fine_grid(best: float, step: float, first: float, last: float) -> np.ndarray:
    return np.clip(np.linspace(best - step, best + step, FINE_STEPS + 1), first, last)


def _line_fit_sse(t: np.ndarray, y: np.ndarray, w: np.ndarray, sign: float = 1.0) -> np.ndarray:
    """Residual sum of squares of ``y ~ a + b t`` (weights ``w``: 0/1 masks) along the last
    axis, for every leading index; fits whose slope has the wrong ``sign`` count as no fit."""
    n = np.maximum(w.sum(-1), 1)
    mt = (w * t).sum(-1) / n
    my = (w * y).sum(-1) / n
    tc, yc = (t - mt[..., None]) * w, (y - my[..., None]) * w
    stt, sty, syy = (tc * tc).sum(-1), (tc * yc).sum(-1), (yc * yc).sum(-1)
    explained = np.where(sign * sty > 0, sty**2 / np.maximum(stt, 1e-12), 0.0)
    return syy - explained


def _refine(sse: np.ndarray, grid: np.ndarray) -> float:
    """The grid value of least ``sse``, refined by a parabola through its neighbours."""
    i = int(np.argmin(sse))
    if 0 < i < len(grid) - 1:
        a, b, c = sse[i - 1], sse[i], sse[i + 1]
        denom = a - 2 * b + c
        if denom > 0:
            return float(grid[i] + 0.5 * (a - c) / denom * (grid[1] - grid[0]))
    return float(grid[i])


# ---- vesicles --------------------------------------------------------------------------------


def _vesicle_template(d: np.ndarray, r: np.ndarray, blur_nm: np.ndarray, dense) -> np.ndarray:
    """A vesicle's radial profile (bright lumen, dark rim, dark core if dense) after the
    section's blur, treated as a 1D blur across rim and core edges."""
    rim_sd = 4.5 / np.sqrt(2)
    total_sd = np.sqrt(rim_sd**2 + blur_nm**2)
    lumen_sd = np.sqrt((1.7 * 2.0) ** 2 + blur_nm**2)
    core_sd = np.sqrt((1.7 * 2.5) ** 2 + blur_nm**2)
    rim = rim_sd / total_sd * np.exp(-((d - r) ** 2) / (2 * total_sd**2))
    core = dense * ndtr((0.5 * r - d) / core_sd)
    return 16.0 * ndtr((r - d) / lumen_sd) - 60.0 * rim - 80.0 * core


def _vesicle_pixels(sections: list[_Section], syn: SynapseShape) -> list:
    """Per vesicle: distances (nm) and grey values of its profile pixels in the section through
    its centre, the blur there (nm) and whether that section is washed out; None where that
    section is not usable."""
    ves = syn.vesicles
    centre_dz = np.round(ves[:, 2] / SECTION_NM).astype(int)
    pixels: list = [None] * len(ves)
    for section in sections:
        dz = section.frame.dz
        targets = np.flatnonzero(centre_dz == dz)
        if not targets.size:
            continue
        # profile pixels go to their nearest vesicle among those this section may show
        near = np.flatnonzero(np.abs(ves[:, 2] - dz * SECTION_NM) < SECTION_NM)
        u, v = section.frame.u, section.frame.v
        dist = np.sqrt(
            (u[None] - ves[near, 0, None, None]) ** 2 + (v[None] - ves[near, 1, None, None]) ** 2
        )
        nearest = near[np.argmin(dist, axis=0)]
        for k in targets:
            d = dist[np.searchsorted(near, k)]
            mask = (nearest == k) & (d < VESICLE_PROFILE_NM)
            if mask.sum() >= 8:
                blur_nm = section.blur_px * PIXEL_NM
                pixels[k] = (d[mask], section.image[mask], blur_nm, section.washed_out)
    return pixels


def _measure_vesicles(sections: list[_Section], syn: SynapseShape) -> tuple[np.ndarray, np.ndarray]:
    """Per vesicle: dense-core call (1.0 or 0.0) and fitted radius (nm; strays replaced by the
    median of their kind), NaN where the section through its centre is unusable."""
    n = len(syn.vesicles)
    radius, dense = np.full(n, np.nan), np.full(n, np.nan)
    pixels = _vesicle_pixels(sections, syn)
    seen = [k for k, item in enumerate(pixels) if item is not None]
    if not seen:
        return radius, dense
    for k in seen:
        d, y, _, washed = pixels[k]
        contrast = y[d < 5.0].mean() - np.median(y) if np.any(d < 5.0) else 0.0
        dense[k] = float(contrast < -DENSE_CORE_CONTRAST * (0.35 if washed else 1.0))
    size = max(len(pixels[k][0]) for k in seen)
    d_all, y_all, w_all = (np.zeros((len(seen), size)) for _ in range(3))
    for i, k in enumerate(seen):
        d, y = pixels[k][0], pixels[k][1]
        d_all[i, : len(d)], y_all[i, : len(d)], w_all[i, : len(d)] = d, y, 1.0
    blur = np.array([pixels[k][2] for k in seen])[:, None]
    is_dense = dense[seen][:, None]
    first, last, step = RADIUS_GRID_NM
    coarse = _grid(first, last, step)
    sse = _line_fit_sse(
        _vesicle_template(d_all, coarse[:, None, None], blur, is_dense), y_all, w_all
    )
    best = coarse[np.argmin(sse, axis=0)]  # per vesicle
    offsets = np.linspace(-step, step, FINE_STEPS + 1)[:, None]
    fine = np.clip(best[None, :] + offsets, first, last)
    sse = _line_fit_sse(_vesicle_template(d_all, fine[:, :, None], blur, is_dense), y_all, w_all)
    for i, k in enumerate(seen):
        radius[k] = _refine(sse[:, i], fine[:, i])
    # a vesicle beside the T-bar or a membrane may take their darkness for its rim: such fits
    # stray far from the synapse's other vesicles of its kind, which share one diameter
    for kind in (0.0, 1.0):
        group = dense == kind
        if group.any():
            typical = np.median(radius[group])
            stray = group & (np.abs(radius - typical) > 0.25 * typical)
            radius[stray] = typical
    return radius, dense


def _vesicle_layer(section: _Section, syn: SynapseShape, radius: np.ndarray, dense) -> np.ndarray:
    """The vesicles' grey-value change in a section, drawn with the measured radii."""
    ves = syn.vesicles
    sec_dz = np.maximum(np.abs(ves[:, 2] - section.frame.dz * SECTION_NM) - SECTION_NM / 2, 0)
    index = np.flatnonzero(np.isfinite(radius) & (sec_dz < np.nan_to_num(radius)))
    layer = np.zeros(section.image.shape, np.float32)
    for k in index:
        r_app = np.sqrt(radius[k] ** 2 - sec_dz[k] ** 2)
        d = np.sqrt((section.frame.u - ves[k, 0]) ** 2 + (section.frame.v - ves[k, 1]) ** 2)
        near = d < r_app + 20
        layer[near] += vesicle_profile(d[near], r_app, float(dense[k]))
    return layer


def _unmeasured_vesicles_free(section: _Section, syn: SynapseShape, radius: np.ndarray):
    """Pixels that no vesicle without a measured radius may reach (those are not drawn in the
    templates, so their pixels are left out)."""
    ves = syn.vesicles
    z_nm = section.frame.dz * SECTION_NM
    free = np.ones(section.image.shape, bool)
    for k in np.flatnonzero(~np.isfinite(radius) & (np.abs(ves[:, 2] - z_nm) < 60.0)):
        reach = 40.0 + VESICLE_CLEARANCE_NM
        free &= (section.frame.u - ves[k, 0]) ** 2 + (section.frame.v - ves[k, 1]) ** 2 > reach**2
    return free


# ---- cleft and T-bar -------------------------------------------------------------------------


def _crop(frame: SynapseFrame, mask: np.ndarray, margin: int = 4):
    """The frame cut to the bounding box of ``mask`` plus ``margin`` pixels, with the cut."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    r0, r1 = max(0, rows[0] - margin), min(mask.shape[0], rows[-1] + margin + 1)
    c0, c1 = max(0, cols[0] - margin), min(mask.shape[1], cols[-1] + margin + 1)
    cut = (slice(r0, r1), slice(c0, c1))
    sub = SynapseFrame(
        dz=frame.dz,
        scale=frame.scale,
        rows=slice(frame.rows.start + r0, frame.rows.start + r1),
        cols=slice(frame.cols.start + c0, frame.cols.start + c1),
        u=frame.u[cut],
        v=frame.v[cut],
    )
    return sub, cut


def _fit_width(sections, roi_of, template_of, grid_nm) -> float:
    """Best candidate width: the sum over sections of the residuals of line fits of the
    blurred candidate drawings to the observed pixels of each section's region of interest."""
    first, last, step = grid_nm
    prepared = []
    for section in sections:
        roi = roi_of(section)
        if roi.sum() < 12:
            continue
        sub, cut = _crop(section.frame, roi)
        prepared.append((section, sub, cut, roi[cut], section.image[cut]))
    if not prepared:
        return float("nan")

    def sse_of(candidates: np.ndarray) -> np.ndarray:
        total = np.zeros(len(candidates))
        for section, sub, cut, roi, image in prepared:
            t = template_of(section, sub, cut, candidates.astype(np.float32)[:, None, None])
            t = gaussian_filter(t.astype(np.float32), (0, section.blur_px, section.blur_px))
            total += _line_fit_sse(t[:, roi], image[roi][None], np.ones(roi.sum())[None])
        return total

    coarse = _grid(first, last, step)
    best = coarse[int(np.argmin(sse_of(coarse)))]
    fine = _fine_grid(best, step, first, last)
    return _refine(sse_of(fine), fine)


def _drawn(syn, sub, fill, mass, dark):
    """Where the synapse covers the background, a plain neuropil grey stands in for it."""
    return NEUROPIL_GREY * (1 - mass) + fill - dark


def _measure_cleft(sections, syn: SynapseShape, vesicles: dict) -> float:
    """Cleft width: the membranes on both sides, away from the T-bar's pedestal (|u| > 32 nm)
    and the gaps between postsynaptic partners."""
    _, hi, _ = CLEFT_GRID_NM
    edges = np.concatenate([syn.partners[:, 0], syn.partners[:, 1]])

    def roi_of(section: _Section) -> np.ndarray:
        f = section.frame
        along = np.abs(f.u)
        roi = (np.abs(f.v) < hi / 2 + 12) & (along > 32) & (along < 0.8 * syn.pre_ru_nm * f.scale)
        for edge in edges * f.scale:
            roi &= np.abs(f.u - edge) > 8
        return roi & vesicles["free"][section.frame.dz]

    def template_of(section, sub, cut, candidates):
        layers = membrane_layers(syn, sub, cleft_nm=candidates)
        return _drawn(syn, sub, *layers) + vesicles["layer"][section.frame.dz][cut]

    return _fit_width(
        [s for s in sections if abs(s.frame.dz) <= 1], roi_of, template_of, CLEFT_GRID_NM
    )


def _measure_tbar(sections, syn: SynapseShape, vesicles: dict, cleft_nm: float) -> float:
    """T-bar width: the platform and the top of its pedestal along the known T-bar axis."""
    top = -(cleft_nm / 2 + TBAR_HEIGHT_NM)

    def roi_of(section: _Section) -> np.ndarray:
        f = section.frame
        roi = (f.v > top - 24) & (f.v < top + 10) & (np.abs(f.u) < 0.8 * syn.pre_ru_nm * f.scale)
        return roi & vesicles["free"][section.frame.dz]

    base: dict = {}  # what does not change with the candidates, per section

    def template_of(section, sub, cut, candidates):
        dz = section.frame.dz
        if dz not in base:
            drawn = _drawn(syn, sub, *membrane_layers(syn, sub, cleft_nm=cleft_nm))
            base[dz] = drawn + vesicles["layer"][dz][cut]
        return base[dz] - tbar_layer(syn, sub, tbar_nm=candidates, cleft_nm=cleft_nm)

    return _fit_width(
        [s for s in sections if abs(s.frame.dz) <= 1], roi_of, template_of, TBAR_GRID_NM
    )


# ---- one synapse, a whole volume ---------------------------------------------------------------


def measure_synapse(
    raw: np.ndarray,
    start_vox: np.ndarray,
    syn: SynapseShape,
    scene: Scene,
    dense_core_scale: float = 1.7,
) -> np.ndarray:
    """The synapse's features (``FEATURES`` order, natural units) measured from ``raw``, a box
    of the volume read at ``start_vox`` (z, y, x) that holds every section of the synapse;
    ``dense_core_scale`` is the preset's size of dense-core vesicles relative to clear ones."""
    sections = _sections(raw, start_vox, syn, scene)
    radius, dense = _measure_vesicles(sections, syn)
    n_ves = len(syn.vesicles)
    measured = np.isfinite(dense)
    # dense-core vesicles are a fixed multiple of the clear ones' size (the renderer's rule)
    clear_equivalent = radius[measured] / np.where(dense[measured] == 1.0, dense_core_scale, 1.0)
    clear_r = np.median(clear_equivalent) if measured.any() else np.nan
    vesicles = {
        "layer": {s.frame.dz: _vesicle_layer(s, syn, radius, dense) for s in sections},
        "free": {s.frame.dz: _unmeasured_vesicles_free(s, syn, radius) for s in sections},
    }
    cleft = _measure_cleft(sections, syn, vesicles)
    tbar = _measure_tbar(sections, syn, vesicles, cleft if np.isfinite(cleft) else 16.0)
    uv = syn.vesicles[:, :2]
    if n_ves >= 2:
        du, dv = uv[:, 0] - uv[:, 0].mean(), uv[:, 1] - uv[:, 1].mean()
        cloud = float(np.sqrt(2.5 * np.mean((du / 1.3) ** 2 + (dv / 0.8) ** 2)))
    else:
        cloud = np.nan
    n_dense, n_called = float(np.nansum(dense)), float(measured.sum())
    dense_logit = np.log((n_dense + 0.5) / (n_called - n_dense + 0.5))
    values = {
        "vesicle_diameter_nm": 2 * clear_r,
        "log_vesicle_count": np.log(max(n_ves, 1)),
        "cloud_radius_nm": cloud,
        "dense_core_logit": dense_logit,
        "tbar_width_nm": tbar,
        "cleft_width_nm": cleft,
    }
    return np.array([values[f] for f in FEATURES], dtype=float)


def measure_features(
    volume: Volume, scene: Scene, dense_core_scale: float = 1.7, progress=None
) -> np.ndarray:
    """(n_synapses, n_features) features measured from the written ``volume`` of ``scene``
    (rendered with ``dense_core_scale``); ``progress(1)`` after each synapse."""
    half = SYNAPSE_HALF_SECTIONS
    out = np.full((len(scene.synapses), len(FEATURES)), np.nan)
    for i, syn in enumerate(scene.synapses):
        frames = []
        cz = int(syn.center_vox[0])
        for z in range(max(0, cz - half), min(scene.shape_vox[0], cz + half + 1)):
            frame = synapse_frame(syn, z, scene.shift_px[z].astype(float), scene.shape_vox[1:])
            if frame is not None:
                frames.append(frame)
        if not frames:
            continue
        start = np.array(
            [
                max(0, cz - half),
                min(f.rows.start for f in frames),
                min(f.cols.start for f in frames),
            ]
        )
        stop = np.array(
            [
                min(scene.shape_vox[0], cz + half + 1),
                max(f.rows.stop for f in frames),
                max(f.cols.stop for f in frames),
            ]
        )
        raw = volume.read_region_vox(start, stop - start)
        out[i] = measure_synapse(raw, start, syn, scene, dense_core_scale)
        if progress is not None:
            progress(1)
    return out


__all__ = ["measure_features", "measure_synapse"]
