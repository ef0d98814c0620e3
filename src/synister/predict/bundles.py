"""Model bundles as the prediction front-ends load them (the format is
:mod:`synister.models.bundle`'s), and what makes two bundles predict the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

from ..models.bundle import BundleError, ModelBundle, load_bundle
from .database import file_sha256

__all__ = ["BundleError", "ModelBundle", "bundle_identity", "open_bundle"]


def open_bundle(bundle: str | Path | ModelBundle) -> ModelBundle:
    """``bundle`` loaded and checked (a folder), or as it is."""
    if isinstance(bundle, str | Path):
        return load_bundle(Path(bundle).expanduser())
    return bundle


def bundle_identity(bundle: ModelBundle) -> dict:
    """The weights' content, the classes, shapes, network and temperature (a resumed run of
    another bundle would mix two models' numbers)."""
    return {
        "checkpoint_sha256": file_sha256(bundle.checkpoint),
        "classes": list(bundle.classes),
        "input_shape_vox": list(bundle.input_shape_vox),
        "voxel_size_nm": list(bundle.voxel_size_nm),
        "network": json.loads(json.dumps(bundle.network)),
        "temperature": bundle.temperature,
    }
