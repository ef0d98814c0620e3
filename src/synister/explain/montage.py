"""PNG montage of a patch's sections with attributions overlaid (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

#: At most this many sections are drawn (the central ones); more would make thumbnails.
MAX_SECTIONS = 12
_CMAP = "RdBu_r"


def shown_sections(n_sections: int) -> list[int]:
    """The section indices drawn: all of them, or the :data:`MAX_SECTIONS` around the centre."""
    if n_sections <= MAX_SECTIONS:
        return list(range(n_sections))
    start = n_sections // 2 - MAX_SECTIONS // 2
    return list(range(start, start + MAX_SECTIONS))


def overlay_rgba(attribution: np.ndarray, limit: float) -> np.ndarray:
    """Red (positive: for the score) and blue (against) RGBA whose opacity grows with |value|
    up to ``limit``; voxels near 0 stay transparent so the EM shows through."""
    limit = float(limit) if limit > 0 else 1.0
    rgba = matplotlib.colormaps[_CMAP](Normalize(-limit, limit)(attribution))
    rgba[..., 3] = np.clip(np.abs(attribution) / limit, 0.0, 1.0) * 0.85
    return rgba


def draw_montage(
    path: str | Path,
    raw: np.ndarray,
    attributions: dict[str, np.ndarray],
    *,
    title: str = "",
    voxel_size_nm: Sequence[float] | None = None,
) -> Path:
    """One row of sections of the raw patch, then one row per attribution drawn over them.

    Each attribution row is scaled to the 99.5th percentile of its absolute values (a few
    extreme voxels would otherwise hide the rest); the synapse's section is framed and its
    centre voxel marked.
    """
    raw = np.asarray(raw)
    if raw.ndim != 3:
        raise ValueError(f"raw must be (Z, Y, X), got shape {raw.shape}")
    for label, values in attributions.items():
        if np.shape(values) != raw.shape:
            raise ValueError(f"attribution {label!r} has shape {np.shape(values)}, raw {raw.shape}")
    sections = shown_sections(raw.shape[0])
    centre = raw.shape[0] // 2
    rows = 1 + len(attributions)
    cell = 1.35
    fig, axes = plt.subplots(
        rows, len(sections), figsize=(cell * len(sections) + 1.2, cell * rows + 0.7),
        squeeze=False, gridspec_kw={"wspace": 0.04, "hspace": 0.12},
    )  # fmt: skip
    limits = {
        label: float(np.percentile(np.abs(values), 99.5)) for label, values in attributions.items()
    }
    for column, z in enumerate(sections):
        for row in range(rows):
            ax = axes[row, column]
            ax.imshow(raw[z], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if row:
                label = list(attributions)[row - 1]
                ax.imshow(overlay_rgba(attributions[label][z], limits[label]),
                          interpolation="nearest")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if z == centre:
                for spine in ax.spines.values():
                    spine.set_edgecolor("#ffb000")
                    spine.set_linewidth(2.5)
                cy, cx = raw.shape[1] // 2, raw.shape[2] // 2
                ax.plot([cx], [cy], marker="+", color="#ffb000", markersize=7, mew=1.2)
            if row == 0:
                offset = z - centre
                depth = f" ({offset * voxel_size_nm[0]:+g} nm)" if voxel_size_nm is not None else ""
                ax.set_title(f"z {offset:+d}{depth}", fontsize=7)
        axes[0, 0].set_ylabel("EM", fontsize=8)
        for row, label in enumerate(attributions, start=1):
            axes[row, 0].set_ylabel(label, fontsize=8)
    # a colour bar per row (intensity for the EM row) keeps the rows equally wide
    bars = [("EM", matplotlib.cm.ScalarMappable(Normalize(0, 255), "gray"))] + [
        (label, matplotlib.cm.ScalarMappable(Normalize(-limits[label], limits[label]), _CMAP))
        for label in attributions
    ]
    for row, (_, mappable) in enumerate(bars):
        bar = fig.colorbar(mappable, ax=list(axes[row]), fraction=0.02, pad=0.01)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
