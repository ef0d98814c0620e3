"""Raw EM volumes through tensorstore: zarr v2/v3, N5 and neuroglancer precomputed; patch reads.

Every array a caller sees is z, y, x in voxels, whatever the on-disk axis order (N5 and precomputed
store x, y, z).  Voxel size and offset come from the dataset's metadata (funlib ``resolution`` /
``offset`` attributes, N5 ``pixelResolution``, OME-Zarr ``multiscales``, precomputed ``info``) and
can be overridden by the config.  Patch reads follow the convention in CONTRIBUTING.md and pad
with zeros outside the volume, so sampling near the border never crashes a training run.

Modules, one step each: :mod:`.locate` (paths and URLs, metadata files, the chunk cache),
:mod:`.metadata` (format, axes, voxel size and offset), :mod:`.read` (:class:`Volume`, patch
reads, :func:`normalize`), :mod:`.write` (block-wise writing of local volumes).
"""

from .read import PATCH_PLACEMENTS, Volume, normalize
from .write import VolumeWriter, create_volume, iter_blocks_vox, write_volume

__all__ = [
    "PATCH_PLACEMENTS",
    "Volume",
    "VolumeWriter",
    "create_volume",
    "iter_blocks_vox",
    "normalize",
    "write_volume",
]
