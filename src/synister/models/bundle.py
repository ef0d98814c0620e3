"""Model bundles: a trained network in one folder that every front-end loads the same way.

A bundle is a folder::

    model.json              what the network is and how to feed it (schema: BundleManifest)
    model_checkpoint_<N>    its weights, in the checkpoint layout (no optimizer state)

``model.json`` holds the network settings (every network-shaping key of the training config,
see :meth:`synister.config._ModelFields.network_settings`), the classes in output order, the
input shape in voxels and voxel size in nm (both z, y, x), the intensity normalisation, the
synister version, an optional softmax ``temperature`` and the provenance (where the weights
came from, and the metrics of the setup's prediction runs). :func:`load_bundle` checks all of it,
names the field that is wrong, and checks that the weights fit the declared network.
Bundles are written into a temporary folder that is renamed at the end, so a crash never leaves
half a bundle (:func:`synister.files.replace_folder`).

:func:`bundle_from_checkpoint` makes a bundle of a checkpoint and its ``train_config.ini``;
:func:`synister.evaluate.provenance.export_model` one of a training setup with the metrics of its
prediction runs (it evaluates them, so it lives above evaluation). Front-ends load bundles, like
every other form of model, through :func:`synister.models.resolve.load_model`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

import synister
from synister.config import ConfigError, TrainConfig, read_ini
from synister.files import jsonable, replace_folder, write_json

from .checkpoint import (
    CheckpointError,
    check_weights_fit,
    checkpoint_iteration,
    checkpoint_network,
    checkpoint_path,
    checkpoint_weights,
    network_record,
    read_checkpoint,
    save_weights,
)
from .manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    NORMALIZATION,
    BundleError,
    BundleManifest,
    BundleNetwork,
    manifest_error,
    network_config,
    positive_numbers,
)

__all__ = [
    "MANIFEST_FILE",
    "BundleError",
    "BundleManifest",
    "ModelBundle",
    "bundle_from_checkpoint",
    "load_bundle",
    "weights_and_record",
    "write_bundle",
]

# ---- the bundle ----------------------------------------------------------------------------------


@dataclass
class ModelBundle:
    """A loaded, checked bundle (see :func:`load_bundle`)."""

    path: Path
    classes: list[str]
    input_shape_vox: tuple[int, int, int]
    voxel_size_nm: tuple[float, float, float]
    network: dict[str, Any]
    normalization: dict[str, Any]
    temperature: float | None
    provenance: dict[str, Any]
    synister_version: str
    checkpoint: Path  # the weights file
    _config: BundleNetwork = field(repr=False)

    @property
    def iteration(self) -> int | None:
        """Training iteration of the weights (from the provenance), if known."""
        value = self.provenance.get("iteration")
        return int(value) if value is not None else None

    def manifest(self) -> dict[str, Any]:
        """The content of model.json."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "synister_version": self.synister_version,
            "checkpoint": self.checkpoint.name,
            "network": dict(self.network),
            "classes": list(self.classes),
            "input_shape_vox": list(self.input_shape_vox),
            "voxel_size_nm": list(self.voxel_size_nm),
            "normalization": dict(self.normalization),
            "temperature": self.temperature,
            "provenance": self.provenance,
        }

    def build_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The network with the bundle's weights, on ``device``, in eval mode (see
        :meth:`synister.models.LoadedModel.build`)."""
        from .resolve import load_model

        return load_model(self).build(device)

    def with_temperature(self, temperature: float | None) -> ModelBundle:
        """A copy with another softmax temperature (not written; see :meth:`save_temperature`)."""
        if temperature is not None:
            try:
                temperature = positive_numbers([temperature], 1, float)[0]
            except ValueError:
                raise BundleError(
                    f"temperature: expected a positive number, got {temperature!r}"
                ) from None
        return replace(self, temperature=temperature)

    def save_temperature(self, temperature: float | None) -> ModelBundle:
        """Write ``temperature`` into model.json (atomically) and into this object; returns it."""
        updated = self.with_temperature(temperature)
        write_json(self.path / MANIFEST_FILE, updated.manifest())
        self.temperature = updated.temperature
        return self


def load_bundle(path: str | Path) -> ModelBundle:
    """Open and check a bundle folder (or its model.json).

    Checks every field of model.json (naming the one that is wrong), that the network settings
    are valid, that the weights file exists and fits the network, and that the classes agree
    with those the weights were trained with, where the weights record them.
    """
    path = Path(path)
    if path.name == MANIFEST_FILE and path.is_file():
        path = path.parent
    if not path.is_dir():
        raise BundleError(f"{path}: no model bundle there (folder not found)")
    manifest_file = path / MANIFEST_FILE
    if not manifest_file.is_file():
        raise BundleError(
            f"{path}: not a model bundle: no {MANIFEST_FILE} (make one with synister export-model)"
        )
    try:
        content = json.loads(manifest_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{manifest_file}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_file}: cannot read: {exc}") from None
    if not isinstance(content, dict):
        raise BundleError(f"{manifest_file}: expected a JSON object")
    try:
        manifest = BundleManifest(**content)
    except ValidationError as exc:
        raise manifest_error(exc, manifest_file) from None
    config = network_config(manifest, str(manifest_file))
    weights_file = path / manifest.checkpoint
    if not weights_file.is_file():
        raise BundleError(f"{manifest_file} checkpoint: no file {manifest.checkpoint!r} in {path}")
    _check_weights(weights_file, config, manifest_file)
    return ModelBundle(
        path=path,
        classes=list(manifest.classes),
        input_shape_vox=tuple(manifest.input_shape_vox),
        voxel_size_nm=tuple(manifest.voxel_size_nm),
        network=dict(manifest.network),
        normalization=manifest.normalization.model_dump(),
        temperature=manifest.temperature,
        provenance=dict(manifest.provenance),
        synister_version=manifest.synister_version,
        checkpoint=weights_file,
        _config=config,
    )


def _check_weights(weights_file: Path, config: BundleNetwork, where: Path | str) -> None:
    """The weights fit the network ``config`` builds (by shape, on the meta device) and, where
    the checkpoint records its classes, they are the declared ones in the same order."""
    from synister.models import build_model

    try:
        state = read_checkpoint(weights_file, mmap=_is_zip(weights_file))
        weights = checkpoint_weights(state, weights_file)
        with torch.device("meta"):
            model = build_model(config)
        check_weights_fit(weights_file, weights, model, checkpoint_network(state), "model.json")
    except CheckpointError as exc:
        raise BundleError(str(exc)) from None
    record = checkpoint_network(state)
    if not record:
        return
    declared = network_record(config)
    for key in ("classes", "input_shape_vox", "voxel_size_nm"):
        if record.get(key) and list(record[key]) != list(declared[key]):
            raise BundleError(
                f"{where} {key}: {json.dumps(declared[key])} differs from what the weights were "
                f"trained with: {json.dumps(list(record[key]))}"
            )
    trained_network = dict(record.get("network") or {})
    for key, value in declared["network"].items():
        if key in trained_network and trained_network[key] != value:
            raise BundleError(
                f"{where} network.{key}: {json.dumps(value)} differs from what the weights were "
                f"trained with: {json.dumps(trained_network[key])}"
            )


def _is_zip(path: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


# ---- writing bundles -----------------------------------------------------------------------------


def write_bundle(
    out: str | Path,
    weights: Mapping[str, torch.Tensor],
    iteration: int,
    record: dict[str, Any],
    provenance: dict[str, Any],
    overwrite: bool,
) -> Path:
    """Write a bundle of ``weights`` (network ``record``, see :func:`~.checkpoint.
    network_record`) into a temporary folder beside ``out``, check that it reads back, then
    rename it to ``out``. Returns ``out``."""
    out = Path(out).expanduser().absolute()
    if out.exists():
        if not overwrite:
            raise BundleError(f"{out} exists already; choose another --out or replace it (--force)")
        if not (out / MANIFEST_FILE).is_file():
            raise BundleError(f"{out} exists and is not a model bundle; not replacing it")

    def fill(folder: Path) -> None:
        weights_file = checkpoint_path(folder, iteration)
        save_weights(weights_file, weights, iteration, record)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "synister_version": synister.__version__,
            "checkpoint": weights_file.name,
            "network": record["network"],
            "classes": record["classes"],
            "input_shape_vox": record["input_shape_vox"],
            "voxel_size_nm": record["voxel_size_nm"],
            "normalization": NORMALIZATION,
            "temperature": None,
            "provenance": jsonable(provenance),
        }
        write_json(folder / MANIFEST_FILE, manifest)
        load_bundle(folder)  # what we wrote reads back

    return replace_folder(out, fill)


def weights_and_record(checkpoint: Path, config) -> tuple[dict, int, dict]:
    """The weights, iteration and network record of ``checkpoint`` built by ``config``'s
    network; the weights must fit it. A record stored in the checkpoint wins over the config's
    (it says what the weights were trained as)."""
    from synister.models import build_model

    try:
        state = read_checkpoint(checkpoint)
        weights = checkpoint_weights(state, checkpoint)
        record = checkpoint_network(state) or network_record(config)
        with torch.device("meta"):
            model = build_model(config)
        check_weights_fit(checkpoint, weights, model, checkpoint_network(state))
    except CheckpointError as exc:
        raise BundleError(str(exc)) from None
    iteration = state.get("iteration")
    if iteration is None:
        iteration = checkpoint_iteration(checkpoint) or 0
    return weights, int(iteration), record


def bundle_from_checkpoint(
    checkpoint: str | Path,
    train_config_ini: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
) -> Path:
    """A bundle from a checkpoint (an original funlib one or ours) and the ``train_config.ini``
    it was trained with (the seed's format). Returns the bundle folder."""
    checkpoint = Path(checkpoint).expanduser().absolute()
    train_config_ini = Path(train_config_ini).expanduser().absolute()
    try:
        config = read_ini(train_config_ini, TrainConfig)
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    weights, iteration, record = weights_and_record(checkpoint, config)
    provenance = {
        "source": "checkpoint",
        "checkpoint": str(checkpoint),
        "train_config": str(train_config_ini),
        "split_name": config.split_name,
        "db_name_data": config.db_name_data,
        "iteration": iteration,
        "metrics": {},
        "prediction_runs": [],
    }
    return write_bundle(out, weights, iteration, record, provenance, overwrite)
