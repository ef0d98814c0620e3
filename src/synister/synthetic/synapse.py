"""One synapse as EM shows it: its shape drawn from the latent features (bouton, T-bar, cleft,
vesicle cloud, postsynaptic partners) and its drawing into a section, layer by layer, so that
the structure labels and the image-level ceiling's measurements reuse the same layers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit

from .layout import PIXEL_NM, SECTION_NM

#: Half width (pixels) of the square drawn around a synapse: 30 px = 120 nm.
SYNAPSE_HALF_BOX_PX = 30


def bouton_depth_nm(cleft_nm):
    """Half depth (nm) of the presynaptic bouton: it reaches ~112 nm from the cleft's middle."""
    return (112.0 - cleft_nm / 2) / 2


#: The top of the T-bar platform sits this far (nm) above the presynaptic membrane.
TBAR_HEIGHT_NM = 34.0


@dataclass
class SynapseShape:
    """One synapse in its own frame (nm): u along the membrane, v along the normal (pre: v < 0)."""

    center_vox: np.ndarray  # z, y, x
    normal: np.ndarray  # unit (y, x)
    cleft_nm: float
    tbar_nm: float
    pre_ru_nm: float
    pre_rv_nm: float
    partners: np.ndarray  # (n, 4): u from, u to, depth (nm), grey value of each post profile
    pre_value: float
    vesicles: np.ndarray  # (n, 4): u, v, z (nm from centre), radius nm
    dense_core: np.ndarray  # (n,) bool


def _pack_vesicles(cand: np.ndarray, radius: np.ndarray, n_max: int) -> np.ndarray:
    """Indices of up to ``n_max`` candidates (u, v, z nm) taken in order, skipping any that would
    overlap an accepted vesicle."""
    taken: list[int] = []
    for i in range(len(cand)):
        if taken:
            d = np.linalg.norm(cand[taken] - cand[i], axis=1)
            if np.any(d < radius[taken] + radius[i] + 2.0):
                continue
        taken.append(i)
        if len(taken) == n_max:
            break
    return np.array(taken, dtype=int)


def synapse_shape(
    row: pd.Series,
    center_vox: np.ndarray,
    rng: np.random.Generator,
    dense_core_scale: float = 1.7,
) -> SynapseShape:
    """Geometry of one synapse from its latent features (the features decide what is seen)."""
    theta = rng.uniform(0, 2 * np.pi)
    cleft = float(np.clip(row["cleft_width_nm"], 8, 32))
    tbar = float(np.clip(row["tbar_width_nm"], 40, 150))
    diameter = float(np.clip(row["vesicle_diameter_nm"], 22, 70))
    cloud_r = float(np.clip(row["cloud_radius_nm"], 28, 78))
    n_ves = int(np.clip(round(np.exp(row["log_vesicle_count"])), 4, 120))
    dense_fraction = 1.0 / (1.0 + np.exp(-row["dense_core_logit"]))

    # the bouton: a flat ellipse on the cleft, at most ~112 nm deep so it stays near the synapse
    pre_rv = bouton_depth_nm(cleft)
    pre_ru = float(rng.uniform(95, 112))
    # vesicles: an ellipsoidal cloud around the T-bar (tight or loose: cloud_r), no overlaps,
    # inside the bouton and off the T-bar
    top = -(cleft / 2 + TBAR_HEIGHT_NM)
    pts = rng.normal(size=(n_ves * 6, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    pts *= rng.uniform(0, 1, (len(pts), 1)) ** (1 / 3)
    u = pts[:, 0] * cloud_r * 1.3
    v = top - 10 + pts[:, 1] * cloud_r * 0.8
    z = pts[:, 2] * min(cloud_r * 1.2, 85.0)
    dense = rng.uniform(size=len(pts)) < dense_fraction
    radius = np.where(dense, dense_core_scale, 1.0) * diameter / 2 * rng.normal(1.0, 0.08, len(pts))
    bouton_v = -(cleft / 2 + pre_rv)
    in_bouton = (u / (pre_ru - radius - 4)) ** 2 + ((v - bouton_v) / (pre_rv - radius - 4)) ** 2 < 1
    off_membrane = v + radius < -(cleft / 2 + 6)
    on_tbar = (np.abs(u) < tbar / 2 + radius) & (v + radius > top - 14) & (np.abs(z) < 30)
    ok = np.flatnonzero(in_bouton & off_membrane & ~on_tbar)
    cand = np.stack([u, v, z], axis=1)[ok]
    keep = ok[_pack_vesicles(cand, radius[ok], n_ves)]

    # postsynaptic partners: 2-3 small profiles side by side across the cleft
    n_partners = int(rng.integers(2, 4))
    edges = np.linspace(-0.95, 0.95, n_partners + 1) * pre_ru
    edges[1:-1] += rng.uniform(-0.2, 0.2, n_partners - 1) * (edges[1] - edges[0])
    partners = np.column_stack(
        [
            edges[:-1] + 3.0,
            edges[1:] - 3.0,
            rng.uniform(28, (112.0 - cleft / 2) / 2, n_partners),
            rng.normal(172, 10, n_partners),
        ]
    )
    return SynapseShape(
        center_vox=np.asarray(center_vox, dtype=float),
        normal=np.array([np.sin(theta), np.cos(theta)]),
        cleft_nm=cleft,
        tbar_nm=tbar,
        pre_ru_nm=pre_ru,
        pre_rv_nm=pre_rv,
        partners=partners,
        pre_value=float(rng.normal(188, 6)),
        vesicles=np.stack([u[keep], v[keep], z[keep], radius[keep]], axis=1),
        dense_core=dense[keep],
    )


def _smooth_step(x: np.ndarray, width: float) -> np.ndarray:
    return expit(x / width)


@dataclass
class SynapseFrame:
    """Where section ``z`` of one synapse lies in a section image, and its in-plane frame.

    ``rows``/``cols`` select the box drawn around the synapse; ``u`` (along the membrane) and
    ``v`` (along the normal, presynaptic side negative) are the nm coordinates of its pixel
    centres relative to the synapse centre.
    """

    dz: int
    scale: float  # how much of the bouton's length this section cuts (1 at the centre)
    rows: slice
    cols: slice
    u: np.ndarray
    v: np.ndarray


def synapse_frame(
    syn: SynapseShape,
    z: int,
    origin: np.ndarray,
    shape_yx: tuple[int, int],
    half_box_px: int = SYNAPSE_HALF_BOX_PX,
) -> SynapseFrame | None:
    """The frame of ``syn`` in section ``z`` of an image of ``shape_yx`` whose tissue is shifted
    by ``origin`` (the section's misalignment); None when the box misses the image."""
    dz = int(z - syn.center_vox[0])
    scale = float(np.sqrt(max(0.0, 1 - (dz * SECTION_NM / 105.0) ** 2)))
    cy, cx = syn.center_vox[1] + 0.5 - origin[0], syn.center_vox[2] + 0.5 - origin[1]
    h = half_box_px
    y0, y1 = max(0, int(cy) - h), min(shape_yx[0], int(cy) + h + 1)
    x0, x1 = max(0, int(cx) - h), min(shape_yx[1], int(cx) + h + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = (yy + 0.5 - cy) * PIXEL_NM, (xx + 0.5 - cx) * PIXEL_NM
    ny, nx = syn.normal
    return SynapseFrame(
        dz=dz,
        scale=scale,
        rows=slice(y0, y1),
        cols=slice(x0, x1),
        u=dy * nx - dx * ny,
        v=dy * ny + dx * nx,
    )


def membrane_layers(syn: SynapseShape, frame: SynapseFrame, cleft_nm=None):
    """Bouton, partners, cleft and postsynaptic densities: (fill, mass, dark).

    The drawn section is ``background * (1 - mass) + fill - dark``. ``cleft_nm`` overrides the
    synapse's cleft width; it may be an array (K, 1, 1) of candidates, which gives (K, H, W)
    layers (the measurement of the image-level ceiling compares such candidates).
    """
    u, v, scale = frame.u, frame.v, frame.scale
    cleft = syn.cleft_nm if cleft_nm is None else cleft_nm
    half_cleft = cleft / 2
    ru = syn.pre_ru_nm * scale
    rv = bouton_depth_nm(cleft)
    pre_c = -(half_cleft + rv)
    s_pre = ((np.abs(u) / ru) ** 3 + (np.abs(v - pre_c) / rv) ** 2) ** 0.5
    d_pre = (s_pre - 1) * np.minimum(ru, rv)  # ~ nm to the outline, negative inside
    m_pre = _smooth_step(-d_pre, 3.0)
    fill = m_pre * syn.pre_value
    mass = m_pre
    membrane = np.exp(-((d_pre / 5.0) ** 2))
    psd = 0.0
    for u0, u1, depth, value in syn.partners:
        uc, hw = (u0 + u1) / 2 * scale, (u1 - u0) / 2 * scale
        vc = half_cleft + depth
        s_p = ((np.abs(u - uc) / hw) ** 3 + (np.abs(v - vc) / depth) ** 2) ** 0.5
        d_p = (s_p - 1) * min(hw, depth)
        m_p = _smooth_step(-d_p, 3.0)
        fill = fill + m_p * value
        mass = mass + m_p
        membrane = membrane + np.exp(-((d_p / 5.0) ** 2))
        # postsynaptic density: a dark band inside the partner's membrane facing the cleft
        psd = psd + (
            _smooth_step(0.75 * hw - np.abs(u - uc), 3.0)
            * _smooth_step(v - half_cleft, 2.0)
            * _smooth_step(half_cleft + 12 - v, 2.0)
        )
    m_cleft = cleft_mask(syn, frame, cleft_nm) * _smooth_step(ru - np.abs(u), 3.0)
    fill = fill + m_cleft * 150.0
    mass = np.clip(mass + m_cleft, 0, 1)
    dark = 85.0 * np.clip(membrane, 0, 1.2)
    if abs(frame.dz) <= 1:
        dark = dark + 45.0 * (1.0 if frame.dz == 0 else 0.55) * np.clip(psd, 0, 1)
    return fill, mass, dark


def cleft_mask(syn: SynapseShape, frame: SynapseFrame, cleft_nm=None) -> np.ndarray:
    """Pixels between the two membranes (along the normal; not cut at the bouton's ends)."""
    cleft = syn.cleft_nm if cleft_nm is None else cleft_nm
    return np.abs(frame.v) < cleft / 2


def tbar_layer(syn: SynapseShape, frame: SynapseFrame, tbar_nm=None, cleft_nm=None):
    """Darkening by the T-bar (pedestal on the membrane, platform above it); 0 beyond +-1
    section. ``tbar_nm``/``cleft_nm`` override the synapse's values (arrays broadcast)."""
    if abs(frame.dz) > 1:
        return 0.0
    strength = 1.0 if frame.dz == 0 else 0.55
    u, v = frame.u, frame.v
    half_cleft = (syn.cleft_nm if cleft_nm is None else cleft_nm) / 2
    tw = (syn.tbar_nm if tbar_nm is None else tbar_nm) / 2 * (1.0 if frame.dz == 0 else 0.7)
    top = -(half_cleft + TBAR_HEIGHT_NM)
    ped = (
        _smooth_step(0.32 * tw - np.abs(u), 2.0)
        * _smooth_step(v - top, 2.0)
        * _smooth_step(-half_cleft - v, 2.0)
    )
    plat = (
        _smooth_step(tw - np.abs(u), 2.5)
        * _smooth_step(v - (top - 13), 2.0)
        * _smooth_step(top - v, 2.0)
    )
    return 95.0 * strength * np.clip(ped + plat, 0, 1)


def visible_vesicles(syn: SynapseShape, dz: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices, apparent radii (nm) and dense-core flags of the vesicles section ``dz`` cuts."""
    ves = syn.vesicles
    sec_dz = np.maximum(np.abs(ves[:, 2] - dz * SECTION_NM) - SECTION_NM / 2, 0)
    index = np.flatnonzero(sec_dz < ves[:, 3])
    r_app = np.sqrt(ves[index, 3] ** 2 - sec_dz[index] ** 2)
    return index, r_app, syn.dense_core[index]


def vesicle_profile(d: np.ndarray, r_app, dense) -> np.ndarray:
    """Grey-value change at distance ``d`` (nm) from a vesicle's centre: bright lumen, dark
    rim, dark core for dense-core vesicles (``r_app``/``dense`` broadcast against ``d``)."""
    rim = np.exp(-(((d - r_app) / 4.5) ** 2))
    lumen = _smooth_step(r_app - d, 2.0)
    core = dense * _smooth_step(0.5 * r_app - d, 2.5)
    return 16.0 * lumen - 60.0 * rim - 80.0 * core


def draw_synapse(img: np.ndarray, syn: SynapseShape, z: int, origin: np.ndarray) -> None:
    """Bouton with vesicle cloud and T-bar, cleft, and postsynaptic partners with densities."""
    frame = synapse_frame(syn, z, origin, img.shape)
    if frame is None:
        return
    fill, mass, dark = membrane_layers(syn, frame)
    patch = img[frame.rows, frame.cols]
    out = patch * (1 - mass) + fill - dark - tbar_layer(syn, frame)
    index, r_app, dense = visible_vesicles(syn, frame.dz)
    if index.size:
        vv = syn.vesicles[index]
        d = np.sqrt(
            (frame.u[None] - vv[:, 0, None, None]) ** 2
            + (frame.v[None] - vv[:, 1, None, None]) ** 2
        )
        out += vesicle_profile(d, r_app[:, None, None], dense[:, None, None]).sum(0)
    patch[:] = out
