"""Raw EM volumes through tensorstore (moved into a package; split in the next commit)."""

from .read import (
    PATCH_PLACEMENTS,
    Volume,
    VolumeWriter,
    _split_location,
    create_volume,
    iter_blocks_vox,
    normalize,
    write_volume,
)

__all__ = [
    "PATCH_PLACEMENTS",
    "Volume",
    "VolumeWriter",
    "_split_location",
    "create_volume",
    "iter_blocks_vox",
    "normalize",
    "write_volume",
]
