"""Training augmentations, with random parameters drawn apart from applying them.

Each augmentation's ``make_params(rng, shape_vox)`` returns a JSON-able dict and
``apply(x, params)`` is a pure function of its input and that dict, so the augmentation of any
batch can be logged and replayed bit-for-bit. The defaults reproduce the original synister
training (gunpowder 1.4: ElasticAugment, SimpleAugment, IntensityAugment, IntensityScaleShift).

Arrays are z, y, x; augmentations accept leading (batch/channel) dimensions where noted.
Modules: :mod:`.base` (the interface, patch centring), one per augmentation (:mod:`.elastic`,
:mod:`.simple`, :mod:`.intensity`), :mod:`.pipeline` (the original's order, fused).
"""

from .base import Augmentation, Shape3, central_offset_vox, crop_center
from .elastic import ElasticAugment
from .intensity import IntensityAugment
from .pipeline import AugmentPipeline
from .simple import SimpleAugment

__all__ = [
    "AugmentPipeline",
    "Augmentation",
    "ElasticAugment",
    "IntensityAugment",
    "Shape3",
    "SimpleAugment",
    "central_offset_vox",
    "crop_center",
]
