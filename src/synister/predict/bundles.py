"""Model bundles as the prediction front-ends load them.

TEMPORARY ADAPTER: the bundle format belongs to :mod:`synister.models.bundle` (``synister
export-model``), built in parallel. Where that module is present it is used as it is; until it
lands on main, a minimal reader of the same folder layout (``model.json`` with ``checkpoint``,
``network``, ``classes``, ``input_shape_vox``, ``voxel_size_nm``, ``normalization``,
``temperature``, ``provenance``; the weights beside it) stands in. Remove the fallback when it
lands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from .database import file_sha256

try:  # pragma: no cover - whichever is present
    from ..models.bundle import BundleError, ModelBundle, load_bundle
except ImportError:  # the stand-in below

    class BundleError(ValueError):
        """A bundle that is missing or malformed; names the file and field."""

    @dataclass
    class ModelBundle:
        path: Path
        classes: list[str]
        input_shape_vox: tuple[int, int, int]
        voxel_size_nm: tuple[float, float, float]
        network: dict[str, Any]
        normalization: dict[str, Any]
        temperature: float | None
        provenance: dict[str, Any]
        checkpoint: Path
        synister_version: str = ""
        _manifest: dict = field(default_factory=dict, repr=False)

        def build_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
            from ..models import build_model, load_checkpoint

            settings = SimpleNamespace(
                input_shape=self.input_shape_vox, classes=self.classes, **self.network
            )
            model = build_model(settings)
            load_checkpoint(self.checkpoint, model, map_location="cpu")
            return model.to(device).eval()

    def load_bundle(path: str | Path) -> ModelBundle:
        folder = Path(path).expanduser()
        manifest_file = folder / "model.json"
        if not manifest_file.is_file():
            raise BundleError(f"{folder}: not a model bundle (no model.json)")
        try:
            manifest = json.loads(manifest_file.read_text())
            checkpoint = folder / manifest["checkpoint"]
            bundle = ModelBundle(
                path=folder,
                classes=list(manifest["classes"]),
                input_shape_vox=tuple(int(v) for v in manifest["input_shape_vox"]),
                voxel_size_nm=tuple(float(v) for v in manifest["voxel_size_nm"]),
                network=dict(manifest["network"]),
                normalization=dict(manifest.get("normalization") or {}),
                temperature=manifest.get("temperature"),
                provenance=dict(manifest.get("provenance") or {}),
                checkpoint=checkpoint,
                synister_version=str(manifest.get("synister_version", "")),
                _manifest=manifest,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(
                f"{manifest_file}: malformed ({type(error).__name__}: {error})"
            ) from None
        if not checkpoint.is_file():
            raise BundleError(f"{manifest_file} checkpoint: no weights file at {checkpoint}")
        return bundle


__all__ = [
    "BundleError",
    "ModelBundle",
    "bundle_identity",
    "export_bundle",
    "load_bundle",
    "open_bundle",
]


def export_bundle(setup_dir: str | Path, iteration: int, out: str | Path) -> Path:
    """A bundle of training setup ``setup_dir`` at ``iteration`` (for tests and benchmarks):
    ``synister.models.bundle.export_model`` where present, else the stand-in layout."""
    try:
        from ..models.bundle import export_model
    except ImportError:
        pass
    else:  # pragma: no cover - once the bundle module is there
        return export_model(setup_dir, iteration, out)
    from ..config import load_train_setup

    cfg, _ = load_train_setup(setup_dir)
    out = Path(out)
    out.mkdir(parents=True)
    name = f"model_checkpoint_{int(iteration)}"
    (out / name).write_bytes((Path(setup_dir) / name).read_bytes())
    network = {
        key: json.loads(json.dumps(getattr(cfg, key)))
        for key in ("network", "fmaps", "fmap_inc", "n_convolutions", "downsample_factors")
    }
    manifest = {
        "format": "synister-model-bundle",
        "checkpoint": name,
        "network": network,
        "classes": list(cfg.classes),
        "input_shape_vox": list(cfg.input_shape),
        "voxel_size_nm": list(cfg.voxel_size),
        "normalization": {"input_dtype": "uint8", "formula": "raw / 255 * 2 - 1"},
        "temperature": None,
        "provenance": {"split_name": cfg.split_name, "iteration": int(iteration)},
    }
    (out / "model.json").write_text(json.dumps(manifest, indent=1))
    return out


def open_bundle(bundle: str | Path | ModelBundle) -> ModelBundle:
    """``bundle`` loaded (a folder), or as it is; a missing folder raises naming it."""
    if isinstance(bundle, str | Path):
        folder = Path(bundle).expanduser()
        if not folder.exists():
            raise BundleError(f"{folder}: no such model bundle")
        return load_bundle(folder)
    return bundle


def bundle_identity(bundle: ModelBundle) -> dict:
    """What makes two bundles predict the same numbers: the weights' and the manifest's
    content, and the temperature."""
    return {
        "checkpoint_sha256": file_sha256(bundle.checkpoint),
        "classes": list(bundle.classes),
        "input_shape_vox": list(bundle.input_shape_vox),
        "voxel_size_nm": list(bundle.voxel_size_nm),
        "network": json.loads(json.dumps(bundle.network)),
        "temperature": bundle.temperature,
    }
