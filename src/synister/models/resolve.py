"""One way to load a trained model, whatever form it comes in: :func:`load_model`.

A model is given as

- a model bundle: its folder, its ``model.json``, or its weights file;
- a training setup folder and an iteration (default: its newest checkpoint);
- a checkpoint file: ours (it records its network), or one in a training setup (the
  ``train_config.ini`` beside it says the network, as for the original's checkpoints).

Each gives the same :class:`LoadedModel`: the weights file, the network settings, classes,
input shape (voxels, z, y, x), voxel size (nm, z, y, x), the softmax temperature (a bundle's
model.json, else the calibration file beside the weights, else none) and the neuron-level
"unclear" thresholds ``synister calibrate`` chose, and one identity (:attr:`LoadedModel.
identity`). The network is built when asked for (:meth:`LoadedModel.build`).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from synister.files import file_sha256, jsonable
from synister.layout import (
    checkpoint_path,
    is_train_setup,
    list_checkpoints,
)

from .bundle import ModelBundle, load_bundle
from .calibration import read_calibration
from .checkpoint import (
    CheckpointError,
    check_weights_fit,
    checkpoint_iteration,
    checkpoint_weights,
    load_checkpoint,
    read_checkpoint,
    recorded_network,
)
from .errors import ModelError
from .manifest import MANIFEST_FILE, record_config

__all__ = ["LoadedModel", "ModelError", "load_model"]


@dataclass(eq=False)
class LoadedModel:
    """A trained model, found and checked, its network not built yet (see :func:`load_model`).

    ``classes``, ``input_shape_vox``, ``voxel_size_nm`` and ``network`` describe the network
    that :meth:`build` makes: the one the files record, or the ``config`` given to
    :func:`load_model`. ``recorded`` is what the files say the weights were trained as (None:
    they say nothing), ``origin`` where that came from.
    """

    path: Path  # what was given, absolute
    weights: Path  # the weights file
    iteration: int | None
    config: Any = field(repr=False)  # the config the network is built from
    temperature: float | None
    calibration: dict | None  # the record synister calibrate stored beside the weights
    recorded: dict[str, Any] | None
    origin: str
    bundle: ModelBundle | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.config.classes)

    @property
    def input_shape_vox(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.config.input_shape)

    @property
    def voxel_size_nm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.config.voxel_size)

    @property
    def network(self) -> dict[str, Any]:
        """The network settings (config keys; see ``_ModelFields.network_settings``)."""
        return self.config.network_settings()

    @property
    def provenance(self) -> dict[str, Any]:
        """A bundle's provenance; empty for a checkpoint."""
        return dict(self.bundle.provenance) if self.bundle is not None else {}

    @property
    def unclear_thresholds(self) -> dict[str, Any] | None:
        """The neuron-level "unclear" thresholds stored with the calibration, if any."""
        return ((self.calibration or {}).get("unclear") or {}).get("thresholds")

    @cached_property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file (what a prediction run stores as ``checkpoint_sha256``)."""
        return file_sha256(self.weights)

    def identity_record(self) -> dict[str, Any]:
        """Everything that determines the model's outputs, as JSON values: the weights file's
        content, classes, input shape, voxel size, network settings and temperature."""
        return jsonable(
            {
                "checkpoint_sha256": self.weights_sha256,
                "classes": self.classes,
                "input_shape_vox": self.input_shape_vox,
                "voxel_size_nm": self.voxel_size_nm,
                "network": self.network,
                "temperature": self.temperature,
            }
        )

    @cached_property
    def identity(self) -> str:
        """The model's one identity: SHA-256 of :meth:`identity_record` as canonical JSON. The
        same weights file with the same network and temperature has the same identity whatever
        form it was given in; a bundle's provenance (or any other model.json field that does
        not change the outputs) does not count, its temperature does."""
        text = json.dumps(self.identity_record(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def build(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The network with the weights, on ``device``, in eval mode. Weights that do not fit
        raise :class:`~.checkpoint.CheckpointError` naming the setting that differs."""
        from . import build_model

        model = build_model(self.config)
        load_checkpoint(self.weights, model, map_location="cpu")
        return model.to(device).eval()

    def check_fit(self) -> None:
        """Raise :class:`~.checkpoint.CheckpointError` when the weights do not fit the network
        (by name and shape, on the meta device: no memory, no weights read)."""
        from . import build_model

        state = read_checkpoint(self.weights, mmap=zipfile.is_zipfile(self.weights))
        weights = checkpoint_weights(state, self.weights)
        with torch.device("meta"):
            model = build_model(self.config)
        check_weights_fit(self.weights, weights, model, self.recorded)


def load_model(
    source: str | Path | ModelBundle, iteration: int | None = None, *, config: Any = None
) -> LoadedModel:
    """The model at ``source`` (see the module doc; or a bundle loaded already, with the
    temperature it holds); ``iteration`` picks a checkpoint of a training setup folder
    (default: its newest).

    ``config`` (a training or prediction config) is the network to build instead of the one
    the files record, as ``synister predict`` builds what ``predict_config.ini`` says; the
    weights must fit it when built. Raises :class:`ModelError` (or a subclass) naming the file.
    """
    if isinstance(source, ModelBundle):
        return _loaded_bundle(source, Path(source.path).absolute(), config)
    path = Path(source).expanduser().absolute()
    if path.name == MANIFEST_FILE and path.is_file():
        path = path.parent
    if path.is_dir():
        if (path / MANIFEST_FILE).is_file():
            return _from_bundle(path, iteration, config)
        if is_train_setup(path):
            return _from_checkpoint(_setup_checkpoint(path, iteration), config, path)
        raise ModelError(
            f"{path}: not a model bundle: no {MANIFEST_FILE} (make one with synister "
            "export-model), nor a training setup (no train_config.ini)"
        )
    if not path.exists():
        raise ModelError(
            f"{path}: not a model: no model bundle there (nor a training setup or a checkpoint "
            "file: not found)"
        )
    if iteration is not None:
        raise ModelError(f"{path}: a checkpoint file is one iteration; give no iteration")
    if (path.parent / MANIFEST_FILE).is_file():
        bundle = load_bundle(path.parent)
        if bundle.checkpoint.resolve() == path.resolve():
            return _loaded_bundle(bundle, path, config)
    return _from_checkpoint(path, config, path)


def _setup_checkpoint(setup: Path, iteration: int | None) -> Path:
    checkpoints = list_checkpoints(setup)
    if iteration is None:
        if not checkpoints:
            raise ModelError(f"{setup}: the training setup holds no checkpoint yet")
        return checkpoints[-1][1]
    checkpoint = checkpoint_path(setup, iteration)
    if not checkpoint.is_file():
        have = ", ".join(str(i) for i, _ in checkpoints) or "none"
        raise ModelError(
            f"{setup}: no checkpoint of iteration {iteration} (checkpoints there: {have})"
        )
    return checkpoint


def _from_bundle(path: Path, iteration: int | None, config: Any) -> LoadedModel:
    bundle = load_bundle(path)
    if iteration is not None and bundle.iteration is not None and iteration != bundle.iteration:
        raise ModelError(f"{path}: the bundle holds iteration {bundle.iteration}, not {iteration}")
    return _loaded_bundle(bundle, path, config)


def _loaded_bundle(bundle: ModelBundle, path: Path, config: Any) -> LoadedModel:
    recorded = {
        "network": dict(bundle.network),
        "classes": list(bundle.classes),
        "input_shape_vox": list(bundle.input_shape_vox),
        "voxel_size_nm": list(bundle.voxel_size_nm),
    }
    return LoadedModel(
        path=path,
        weights=bundle.checkpoint,
        iteration=bundle.iteration,
        config=config if config is not None else bundle._config,
        temperature=bundle.temperature,
        calibration=read_calibration(bundle.checkpoint),
        recorded=recorded,
        origin=f"bundle {bundle.path}",
        bundle=bundle,
    )


def _from_checkpoint(checkpoint: Path, config: Any, path: Path) -> LoadedModel:
    state = read_checkpoint(checkpoint, mmap=zipfile.is_zipfile(checkpoint))
    checkpoint_weights(state, checkpoint)  # a dict of tensors, or a clear error
    try:
        recorded, origin = recorded_network(checkpoint, state)
    except CheckpointError as error:  # a bad train_config.ini beside it
        if config is None:
            raise
        recorded, origin = None, str(error)
    if config is None:
        if recorded is None:
            raise ModelError(
                f"{checkpoint}: cannot tell the network: {origin}; make a bundle with synister "
                "export-model --train-config, or put the checkpoint in its training setup"
            )
        config = record_config(recorded, str(checkpoint))
    stored = state.get("iteration")
    if stored is None:
        stored = checkpoint_iteration(checkpoint)
    calibration = read_calibration(checkpoint)
    return LoadedModel(
        path=path,
        weights=checkpoint,
        iteration=None if stored is None else int(stored),
        config=config,
        temperature=None if calibration is None else calibration["temperature"],
        calibration=calibration,
        recorded=recorded,
        origin=origin,
    )
