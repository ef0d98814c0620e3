"""Where synapses go: a lattice that keeps them apart and away from the volume's borders."""

from __future__ import annotations

import numpy as np

#: The synthetic volume's voxel size (nm): section thickness and in-plane pixel, FAFB's.
SECTION_NM = 40.0
PIXEL_NM = 4.0
#: Lattice cell in voxels (z, y, x): 5 sections x 224 nm. Each synapse draws within +-2 sections
#: and ~+-112 nm of its centre, so neighbours never overlap.
CELL_VOX: tuple[int, int, int] = (5, 56, 56)
#: Half of the largest network patch (16 x 160 x 160): the margin kept where the volume allows.
HALF_PATCH_VOX: tuple[int, int, int] = (8, 80, 80)


def margins_vox(shape_vox: tuple[int, int, int]) -> tuple[int, ...]:
    """Border margin per axis: half a 16x160x160 patch, shrunk for thin volumes (>= 2 sections)."""
    return tuple(
        int(min(h, max(2 if a == 0 else 16, (s - c) // 2)))
        for a, (s, h, c) in enumerate(zip(shape_vox, HALF_PATCH_VOX, CELL_VOX, strict=True))
    )


def lattice_capacity(shape_vox: tuple[int, int, int]) -> int:
    """How many synapses fit ``shape_vox`` at the minimum spacing."""
    m = margins_vox(shape_vox)
    n = [max(0, (s - 2 * mi) // c) for s, mi, c in zip(shape_vox, m, CELL_VOX, strict=True)]
    return int(np.prod(n))


def place_synapses(
    shape_vox: tuple[int, int, int], n_synapses: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, 3) z,y,x voxel centres of ``n_synapses`` synapses on a random subset of lattice sites.

    Raises ValueError naming the capacity when the volume cannot hold that many.
    """
    m = margins_vox(shape_vox)
    n_cells = [max(0, (s - 2 * mi) // c) for s, mi, c in zip(shape_vox, m, CELL_VOX, strict=True)]
    capacity = int(np.prod(n_cells))
    if n_synapses > capacity:
        raise ValueError(
            f"{n_synapses} synapses do not fit a volume of shape {tuple(shape_vox)} (z,y,x vox): "
            f"at most {capacity} at the minimum spacing {CELL_VOX} voxels; ask for fewer synapses "
            "or a larger --shape"
        )
    sites = rng.choice(capacity, n_synapses, replace=False)
    idx = np.stack(np.unravel_index(sites, n_cells), axis=1)
    # centre the used lattice in the volume
    used = np.array(n_cells) * np.array(CELL_VOX)
    start = (np.array(shape_vox) - used) // 2 + np.array(CELL_VOX) // 2
    return (start + idx * np.array(CELL_VOX)).astype(np.int64)
