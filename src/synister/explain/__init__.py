"""Attribution of transmitter predictions to the voxels of the EM patch (``synister explain``),
and the measure of how much of it falls on known structures."""

from .attribution import METHODS, attribute, attribution_mass_ratio, occlusion_window
from .montage import draw_montage
from .run import ExplainInputError, explain_positions

__all__ = [
    "METHODS",
    "ExplainInputError",
    "attribute",
    "attribution_mass_ratio",
    "draw_montage",
    "explain_positions",
    "occlusion_window",
]
