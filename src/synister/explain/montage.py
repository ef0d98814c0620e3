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


#: Pixels between two sections of a row.
GAP_PX = 2


def _mosaic(images: list[np.ndarray], fill) -> np.ndarray:
    """Sections side by side, :data:`GAP_PX` of ``fill`` between them."""
    gap = np.full((images[0].shape[0], GAP_PX, *images[0].shape[2:]), fill, dtype=images[0].dtype)
    parts = [images[0]]
    for image in images[1:]:
        parts += [gap, image]
    return np.concatenate(parts, axis=1)


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
    centre voxel marked. A row is one image of its sections side by side (one axes per row:
    an axes per section made drawing several times slower than the attribution itself).
    """
    from matplotlib.patches import Rectangle

    raw = np.asarray(raw)
    if raw.ndim != 3:
        raise ValueError(f"raw must be (Z, Y, X), got shape {raw.shape}")
    for label, values in attributions.items():
        if np.shape(values) != raw.shape:
            raise ValueError(f"attribution {label!r} has shape {np.shape(values)}, raw {raw.shape}")
    sections = shown_sections(raw.shape[0])
    centre = raw.shape[0] // 2
    n_y, n_x = raw.shape[1:]
    rows = 1 + len(attributions)
    cell = 1.35
    fig, axes = plt.subplots(
        rows, 1, figsize=(cell * len(sections) + 1.2, cell * rows + 0.7), squeeze=False,
        gridspec_kw={"hspace": 0.12},
    )  # fmt: skip
    limits = {
        label: float(np.percentile(np.abs(values), 99.5)) for label, values in attributions.items()
    }
    em = np.ma.masked_invalid(_mosaic([raw[z].astype(np.float32) for z in sections], np.nan))
    gray = matplotlib.colormaps["gray"].with_extremes(bad="white")
    labels = ["EM", *attributions]
    for row, label in enumerate(labels):
        ax = axes[row, 0]
        ax.imshow(em, cmap=gray, vmin=0, vmax=255, interpolation="nearest")
        if row:
            overlays = [overlay_rgba(attributions[label][z], limits[label]) for z in sections]
            ax.imshow(_mosaic(overlays, 0.0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, fontsize=8)
        for column, z in enumerate(sections):
            left = column * (n_x + GAP_PX) - 0.5
            framed = z == centre
            ax.add_patch(Rectangle((left, -0.5), n_x, n_y, fill=False,
                                   edgecolor="#ffb000" if framed else "black",
                                   linewidth=2.5 if framed else 0.8))  # fmt: skip
            if framed:
                ax.plot([left + 0.5 + n_x // 2], [n_y // 2], marker="+", color="#ffb000",
                        markersize=7, mew=1.2)  # fmt: skip
            if row == 0:
                offset = z - centre
                depth = f" ({offset * voxel_size_nm[0]:+g} nm)" if voxel_size_nm is not None else ""
                ax.text(left + n_x / 2, -1.5, f"z {offset:+d}{depth}", fontsize=7,
                        ha="center", va="bottom")  # fmt: skip
    # a colour bar per row (intensity for the EM row) keeps the rows equally wide
    bars = [matplotlib.cm.ScalarMappable(Normalize(0, 255), "gray")] + [
        matplotlib.cm.ScalarMappable(Normalize(-limits[label], limits[label]), _CMAP)
        for label in attributions
    ]
    for row, mappable in enumerate(bars):
        bar = fig.colorbar(mappable, ax=axes[row, 0], fraction=0.02, pad=0.01)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
