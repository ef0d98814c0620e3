"""Where the transmitter-specific structures of each synapse are: a label volume on raw's grid.

The generator knows every structure it draws, so it can say which voxels show them. The label
volume (dataset ``structures`` next to ``raw`` in the same container, uint8, same shape, voxel
size and offset) holds one label per structure kind (:data:`STRUCTURE_LABELS`); attribution
maps can be checked against it (how much attribution falls on the structures that tell the
classes apart, against their share of the patch). Misalignment is applied as to raw, blur is
not: a voxel is labelled when the structure covers its centre.
"""

from __future__ import annotations

import numpy as np

from .render import SYNAPSE_HALF_SECTIONS, Scene
from .synapse import cleft_mask, synapse_frame, tbar_layer, visible_vesicles

#: Label value -> structure kind.
STRUCTURE_LABELS: dict[int, str] = {
    0: "background",
    1: "clear_vesicle",
    2: "dense_core_vesicle",
    3: "t_bar",
    4: "synaptic_cleft",
}
CLEAR_VESICLE, DENSE_CORE_VESICLE, T_BAR, SYNAPTIC_CLEFT = 1, 2, 3, 4
#: A vesicle's label reaches this far (nm) past its apparent radius: half its dark rim.
VESICLE_RIM_NM = 2.0


def structure_labels_section(scene: Scene, z: int) -> np.ndarray:
    """Labels (uint8, Y x X) of section ``z``: cleft, T-bar, then vesicles on top."""
    _, n_y, n_x = scene.shape_vox
    labels = np.zeros((n_y, n_x), np.uint8)
    origin = scene.shift_px[z].astype(float)
    zs = np.array([s.center_vox[0] for s in scene.synapses])
    for i in np.flatnonzero(np.abs(zs - z) <= SYNAPSE_HALF_SECTIONS):
        syn = scene.synapses[i]
        frame = synapse_frame(syn, z, origin, (n_y, n_x))
        if frame is None:
            continue
        box = labels[frame.rows, frame.cols]
        in_cleft = cleft_mask(syn, frame) & (np.abs(frame.u) < syn.pre_ru_nm * frame.scale)
        box[in_cleft] = SYNAPTIC_CLEFT
        tbar = tbar_layer(syn, frame)
        if not np.isscalar(tbar):
            strength = 1.0 if frame.dz == 0 else 0.55
            box[tbar > 0.5 * 95.0 * strength] = T_BAR
        index, r_app, dense = visible_vesicles(syn, frame.dz)
        for k, r, is_dense in zip(index, r_app, dense, strict=True):
            u, v = syn.vesicles[k, :2]
            inside = (frame.u - u) ** 2 + (frame.v - v) ** 2 < (r + VESICLE_RIM_NM) ** 2
            box[inside] = DENSE_CORE_VESICLE if is_dense else CLEAR_VESICLE
    return labels


__all__ = ["STRUCTURE_LABELS", "structure_labels_section"]
