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
half a bundle.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError

import synister
from synister.config import TRAIN_FILE, ConfigError, TrainConfig, read_ini

from .checkpoint import (
    CheckpointError,
    check_weights_fit,
    checkpoint_iteration,
    checkpoint_network,
    checkpoint_path,
    checkpoint_weights,
    list_checkpoints,
    load_checkpoint,
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
    "NetworkSource",
    "bundle_from_checkpoint",
    "export_model",
    "load_bundle",
    "network_source",
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
        """The network with the bundle's weights, on ``device``, in eval mode."""
        from synister.models import build_model

        model = build_model(self._config)
        try:
            load_checkpoint(self.checkpoint, model, map_location="cpu")
        except CheckpointError as exc:
            raise BundleError(str(exc)) from None
        return model.to(device).eval()

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
        _write_json(self.path / MANIFEST_FILE, updated.manifest())
        self.temperature = updated.temperature
        return self


def _write_json(path: Path, content: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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


def _write_bundle(
    out: str | Path,
    weights: Mapping[str, torch.Tensor],
    iteration: int,
    record: dict[str, Any],
    provenance: dict[str, Any],
    overwrite: bool,
) -> Path:
    """Write a bundle into a temporary folder beside ``out``, check it, then rename it."""
    from synister.evaluate.outputs import jsonable

    out = Path(out).expanduser().absolute()
    if out.exists():
        if not overwrite:
            raise BundleError(f"{out} exists already; choose another --out or replace it (--force)")
        if not (out / MANIFEST_FILE).is_file():
            raise BundleError(f"{out} exists and is not a model bundle; not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    old = out.with_name(f".{out.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        weights_file = checkpoint_path(tmp, iteration)
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
        _write_json(tmp / MANIFEST_FILE, manifest)
        load_bundle(tmp)  # what we wrote reads back
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def _weights_and_record(checkpoint: Path, config) -> tuple[dict, int, dict]:
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
    weights, iteration, record = _weights_and_record(checkpoint, config)
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
    return _write_bundle(out, weights, iteration, record, provenance, overwrite)


def export_model(
    setup_dir: str | Path,
    iteration: int | Literal["best"],
    out: str | Path,
    *,
    overwrite: bool = False,
) -> Path:
    """A bundle of training setup ``setup_dir`` at ``iteration``, or at the best validation
    iteration (``"best"``), with the metrics of the setup's prediction runs as provenance (see
    :mod:`synister.models.provenance`). Returns the bundle folder."""
    from .provenance import best_validation_iteration, setup_provenance

    setup_dir = Path(setup_dir).expanduser().resolve()
    if not (setup_dir / TRAIN_FILE).is_file():
        raise BundleError(
            f"{setup_dir}: not a training setup (no {TRAIN_FILE}); make one with "
            "synister prepare-training"
        )
    config, provenance = setup_provenance(setup_dir)
    if iteration == "best":
        iteration = best_validation_iteration(setup_dir, provenance)
        provenance["iteration_chosen"] = "best validation synapse accuracy"
    else:
        provenance["iteration_chosen"] = "given"
    iteration = int(iteration)
    checkpoint = checkpoint_path(setup_dir, iteration)
    if not checkpoint.is_file():
        have = ", ".join(str(i) for i, _ in list_checkpoints(setup_dir)) or "none"
        raise BundleError(
            f"{setup_dir}: no checkpoint of iteration {iteration} (checkpoints there: {have})"
        )
    weights, _, record = _weights_and_record(checkpoint, config)
    provenance["iteration"] = iteration
    provenance["metrics"] = {
        run["split_part"]: run
        for run in reversed(provenance["prediction_runs"])  # the first run of a part wins
        if run["iteration"] == iteration
        and run["complete"]
        and run.get("synapse_accuracy") is not None
    }
    return _write_bundle(out, weights, iteration, record, provenance, overwrite)


# ---- a network to predict with -------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkSource:
    """A trained network found from a checkpoint file or a bundle folder (for prediction)."""

    checkpoint: Path  # the weights file
    iteration: int | None
    record: dict[str, Any] | None  # see checkpoint.network_record; None: not known
    origin: str  # where the record came from, for messages


def network_source(path: str | Path) -> NetworkSource:
    """The weights and network settings of a bundle folder or a checkpoint file.

    For a file, the settings are those the checkpoint records (ours do), else those of the
    ``train_config.ini`` beside it (a checkpoint in its training setup), else unknown. Raises
    :class:`BundleError` for a bad bundle or a file that is not a checkpoint.
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        bundle = load_bundle(path)
        record = {
            "network": dict(bundle.network),
            "classes": list(bundle.classes),
            "input_shape_vox": list(bundle.input_shape_vox),
            "voxel_size_nm": list(bundle.voxel_size_nm),
        }
        return NetworkSource(bundle.checkpoint, bundle.iteration, record, f"bundle {path}")
    try:
        state = read_checkpoint(path, mmap=path.is_file() and _is_zip(path))
        checkpoint_weights(state, path)
    except CheckpointError as exc:
        raise BundleError(str(exc)) from None
    iteration = state.get("iteration")
    if iteration is None:
        iteration = checkpoint_iteration(path)
    record = checkpoint_network(state)
    origin = "the network record in the checkpoint"
    beside = path.parent / TRAIN_FILE
    if record is None and beside.is_file():
        try:
            record, origin = network_record(read_ini(beside, TrainConfig)), str(beside)
        except ConfigError as exc:
            raise BundleError(str(exc)) from None
    if record is None:
        origin = "nothing: the checkpoint records no network and has no train_config.ini beside it"
    return NetworkSource(path, None if iteration is None else int(iteration), record, origin)
