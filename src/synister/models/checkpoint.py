"""Checkpoints in the original synister format, and what a checkpoint says about its network.

A checkpoint file ``model_checkpoint_<iteration>`` is a ``torch.save`` of a dict with
``model_state_dict`` and ``optimizer_state_dict`` (what gunpowder's torch ``Train`` node wrote), to
which synister adds ``iteration`` and ``synister_network`` (the network settings, classes, input
shape and voxel size it was built with, see :func:`network_record`). Original checkpoints
therefore load directly, and ours load in the original code.

Files are read in torch's ``weights_only`` mode (a checkpoint cannot run code). When weights do
not fit the network, :func:`load_checkpoint` says in one line which setting differs, from the
shapes of the weights (:func:`describe_weights`), instead of torch's list of every tensor.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synister.files import write_atomic
from synister.layout import (
    checkpoint_iteration,
    checkpoint_path,
    list_checkpoints,
    train_config_beside,
)

from .errors import ModelError

__all__ = [
    "CheckpointError",
    "check_weights_fit",
    "checkpoint_iteration",
    "checkpoint_network",
    "checkpoint_path",
    "checkpoint_weights",
    "list_checkpoints",
    "load_checkpoint",
    "network_record",
    "read_checkpoint",
    "recorded_network",
    "save_checkpoint",
    "save_weights",
    "strip_wrapper_prefixes",
    "tag_model",
    "trained_input_shape",
    "unwrap_model",
]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile

#: key of the network record in our checkpoints (original code ignores it)
NETWORK_KEY = "synister_network"
#: attribute :func:`tag_model` sets on a network built from a config
_RECORD_ATTR = "synister_network"
_CHECK_SHAPE_ATTR = "synister_check_input_shape"


class CheckpointError(ModelError):
    """A checkpoint file is missing, unreadable or does not fit the model; names the file."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain network inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the ``module.`` / ``_orig_mod.`` prefixes that wrapped models add."""
    cleaned = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        cleaned[key] = value
    return cleaned


# ---- the network record --------------------------------------------------------------------------


def network_record(cfg) -> dict[str, Any]:
    """What a checkpoint records about its network: the config's network settings
    (:meth:`synister.config._ModelFields.network_settings`), classes in output order, input shape
    (voxels) and voxel size (nm), all plain JSON values."""
    return {
        "network": cfg.network_settings(),
        "classes": list(cfg.classes),
        "input_shape_vox": [int(s) for s in cfg.input_shape],
        "voxel_size_nm": [float(s) for s in cfg.voxel_size],
    }


def tag_model(model: nn.Module, cfg) -> nn.Module:
    """Attach ``cfg``'s :func:`network_record` to ``model`` (saved with its checkpoints).

    A prediction config (one with ``allow_other_input_shape``) also makes :func:`load_checkpoint`
    refuse weights trained on another input shape unless that key is True.
    """
    model.__dict__[_RECORD_ATTR] = network_record(cfg)
    allow = getattr(cfg, "allow_other_input_shape", True)
    model.__dict__[_CHECK_SHAPE_ATTR] = not allow
    return model


def model_record(model: nn.Module) -> dict[str, Any] | None:
    """The network record :func:`tag_model` attached to ``model``, or None."""
    return unwrap_model(model).__dict__.get(_RECORD_ATTR)


# ---- reading and writing -------------------------------------------------------------------------


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    iteration: int,
    network: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (a crash never leaves a truncated file under ``path``).

    ``network`` (default: the record :func:`tag_model` attached to the model, if any) is stored
    under ``synister_network``.
    """
    plain = unwrap_model(model)
    state = {
        "model_state_dict": plain.state_dict(),
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "iteration": int(iteration),
    }
    record = network if network is not None else model_record(plain)
    if record is not None:
        state[NETWORK_KEY] = record
    return write_atomic(path, lambda tmp: torch.save(state, tmp))


def save_weights(
    path: str | Path,
    weights: Mapping[str, torch.Tensor],
    iteration: int,
    network: dict | None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """A checkpoint of ``weights`` only (no optimizer state), atomically, in the same layout;
    ``extra``: more plain values to store beside them."""
    state = {
        **dict(extra or {}),
        "model_state_dict": dict(weights),
        "optimizer_state_dict": None,
        "iteration": int(iteration),
    }
    if network is not None:
        state[NETWORK_KEY] = network
    return write_atomic(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False
) -> dict:
    """The dict stored in a checkpoint file, read in torch's ``weights_only`` mode (``mmap``:
    tensors stay in the file until used, for a look at shapes).

    Raises :class:`CheckpointError` naming the file when it is missing, a folder, not a file
    ``torch.save`` wrote, or holds Python objects besides tensors and plain values.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if zipfile.is_zipfile(path) and "Weights only load failed" in str(exc):
            raise CheckpointError(
                f"{path}: holds Python objects besides weights; synister reads only tensors and "
                "plain values from checkpoints, so that loading one cannot run code"
            ) from None
        raise CheckpointError(f"{path}: not a checkpoint (not a file torch.save wrote)") from None
    except Exception:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: not a checkpoint (not a file torch.save wrote)") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{path}: not a checkpoint: holds a {type(state).__name__}, not a dict of weights"
        )
    return dict(state)


def checkpoint_weights(state: Mapping, path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of a checkpoint's dict (ours, the original's or a bare state_dict)."""
    weights = state.get("model_state_dict", state)
    if not isinstance(weights, Mapping) or not weights:
        raise CheckpointError(f"{path}: not a checkpoint: holds no model_state_dict")
    weights = strip_wrapper_prefixes(weights)
    odd = [key for key, value in weights.items() if not isinstance(value, torch.Tensor)]
    if odd:
        raise CheckpointError(
            f"{path}: not a checkpoint: no model_state_dict, and {odd[0]!r} is not a tensor"
        )
    return weights


def checkpoint_network(state: Mapping) -> dict[str, Any] | None:
    """The network record of a checkpoint's dict, or None (original checkpoints have none)."""
    record = state.get(NETWORK_KEY)
    return dict(record) if isinstance(record, Mapping) else None


def recorded_network(path: str | Path, state: Mapping) -> tuple[dict[str, Any] | None, str]:
    """What a checkpoint file says its network is, and where that came from: the record stored
    in it (ours), else the settings of the ``train_config.ini`` beside it (a checkpoint in its
    training setup, e.g. the original's), else ``(None, why)``. A bad ``train_config.ini``
    raises :class:`CheckpointError` naming it."""
    record = checkpoint_network(state)
    if record is not None:
        return record, "the network record in the checkpoint"
    beside = train_config_beside(path)
    if beside.is_file():
        from synister.config import ConfigError, TrainConfig, read_ini

        try:
            return network_record(read_ini(beside, TrainConfig)), str(beside)
        except (ConfigError, OSError) as exc:
            raise CheckpointError(str(exc)) from None
    return None, "nothing: the checkpoint records no network and has no train_config.ini beside it"


def trained_input_shape(path: str | Path, state: Mapping) -> tuple[int, ...] | None:
    """The input shape (voxels) the checkpoint's network was trained on (see
    :func:`recorded_network`); None when nothing says."""
    try:
        record, _ = recorded_network(path, state)
    except CheckpointError:
        return None
    if record and record.get("input_shape_vox"):
        return tuple(int(s) for s in record["input_shape_vox"])
    return None


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> int:
    """Load weights (and optimizer state when given) from ``path``; returns the iteration.

    Accepts the original layout, ours, a bare state_dict, and keys with DDP ``module.`` or
    ``torch.compile`` ``_orig_mod.`` prefixes. The iteration is the stored one, else the one in
    the file name, else 0. Weights that do not fit raise :class:`CheckpointError` naming the
    settings that differ; a network built from a prediction config refuses weights trained on
    another input shape unless the config allows it (see :func:`tag_model`).
    """
    path = Path(path)
    state = read_checkpoint(path, map_location)
    weights = checkpoint_weights(state, path)
    plain = unwrap_model(model)
    check_weights_fit(path, weights, plain, checkpoint_network(state))
    try:
        plain.load_state_dict(weights)
    except RuntimeError as exc:  # fits by shape but not otherwise: keep torch's first line
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the model: {first}") from None
    if plain.__dict__.get(_CHECK_SHAPE_ATTR):
        trained = trained_input_shape(path, state)
        wanted = tuple(model_record(plain)["input_shape_vox"])
        if trained is not None and trained != wanted:
            raise CheckpointError(
                f"{path}: input_shape: the network was trained on {_text(trained)} voxels, the "
                f"config says {_text(wanted)}; other patch sizes lower accuracy without a sign. "
                "Set allow_other_input_shape = True in predict_config.ini (prepare-prediction "
                "--allow-other-input-shape) to predict anyway"
            )
    if optimizer is not None:
        optimizer_state = state.get("optimizer_state_dict")
        if optimizer_state is None:
            raise CheckpointError(f"{path}: holds no optimizer_state_dict")
        optimizer.load_state_dict(optimizer_state)
    iteration = state.get("iteration")
    if iteration is None:
        iteration = checkpoint_iteration(path)
    return int(iteration or 0)


# ---- what the weights say about the network ------------------------------------------------------


def _text(values) -> str:
    return ", ".join(str(v) for v in values)


def _indexed(weights: Mapping[str, torch.Tensor], pattern: str, ndim: int) -> list:
    """(index, shape) of the weights whose key matches ``pattern`` (one int group), sorted."""
    regex = re.compile(pattern)
    found = []
    for key, value in weights.items():
        match = regex.fullmatch(key)
        if match and value.dim() == ndim:
            found.append((int(match.group(1)), tuple(value.shape)))
    return sorted(found)


def describe_weights(weights: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The network settings a state_dict's shapes encode (keys as in the config).

    VGG: fmaps, n_convolutions (their count = levels of downsample_factors), fmap_inc (all but
    the last level: the last one shapes no weight), classifier_units, output classes and the
    voxels of the last feature map (input_shape divided by the downsample factors).
    ResNet18: fmaps, blocks per stage, output classes. Anything else: ``network`` None.
    """
    convs = _indexed(weights, r"features\.(\d+)\.weight", 5)
    linears = _indexed(weights, r"classifier\.(\d+)\.weight", 2)
    if convs and linears:
        levels: list[list[tuple]] = [[convs[0][1]]]
        for (previous, _), (index, shape) in zip(convs, convs[1:], strict=False):
            if index - previous == 3:  # conv, batch norm, relu, next conv
                levels[-1].append(shape)
            else:  # a max pool in between: a new level
                levels.append([shape])
        channels = [level[-1][0] for level in levels]
        in_features = linears[0][1][1]
        return {
            "network": "VGG",
            "input_channels": convs[0][1][1],
            "fmaps": channels[0],
            "n_convolutions": tuple(len(level) for level in levels),
            "fmap_inc": tuple(b / a for a, b in zip(channels, channels[1:], strict=False)),
            "classifier_units": linears[0][1][0] if len(linears) > 1 else None,
            "output_classes": linears[-1][1][0],
            "feature_voxels": in_features / channels[-1],
            "feature_channels": channels[-1],
        }
    stem = weights.get("stem.0.weight")
    fc = weights.get("classifier.weight")
    if stem is not None and fc is not None:
        blocks = _indexed(weights, r"stages\.(\d+)\.\d+\.conv1\.weight", 5)
        per_stage: dict[int, int] = {}
        for stage, _ in blocks:
            per_stage[stage] = per_stage.get(stage, 0) + 1
        return {
            "network": "ResNet18",
            "input_channels": int(stem.shape[1]),
            "fmaps": int(stem.shape[0]),
            "blocks_per_stage": tuple(per_stage[s] for s in sorted(per_stage)),
            "output_classes": int(fc.shape[0]),
        }
    return {"network": None}


def _number(value) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def weights_mismatch(
    checkpoint: Mapping[str, torch.Tensor],
    model: Mapping[str, torch.Tensor],
    checkpoint_record: Mapping | None = None,
    model_record_: Mapping | None = None,
    source: str = "config",
) -> list[str]:
    """Settings in which the network of ``checkpoint`` differs from that of ``model`` (state
    dicts), each as ``"fmaps: checkpoint has 8, config says 12"``; records, where given, name
    input shapes and classes."""
    have, want = describe_weights(checkpoint), describe_weights(model)
    if have["network"] is None:
        return ["network: the checkpoint's weights are of no network synister knows"]
    if have["network"] != want["network"]:
        return [f"network: checkpoint has {have['network']}, {source} says {want['network']}"]
    differ = []
    if have["output_classes"] != want["output_classes"]:
        names = f" ({', '.join(model_record_['classes'])})" if model_record_ else ""
        differ.append(
            f"classes: checkpoint has {have['output_classes']} outputs, {source} says "
            f"{want['output_classes']}{names}"
        )
    for key in ("input_channels", "fmaps"):
        if have[key] != want[key]:
            differ.append(f"{key}: checkpoint has {have[key]}, {source} says {want[key]}")
    if have["network"] == "ResNet18":
        if have["blocks_per_stage"] != want["blocks_per_stage"]:
            differ.append(
                f"blocks per stage: checkpoint has {_text(have['blocks_per_stage'])}, "
                f"{source}'s network has {_text(want['blocks_per_stage'])}"
            )
        return differ
    levels = len(have["n_convolutions"]), len(want["n_convolutions"])
    if levels[0] != levels[1]:
        differ.append(
            f"downsample_factors: checkpoint has {levels[0]} levels, {source} says {levels[1]}"
        )
        return differ
    for key in ("n_convolutions", "fmap_inc"):
        if have[key] != want[key]:
            shown = [_text(_number(v) for v in d[key]) for d in (have, want)]
            what = " (all but the last level)" if key == "fmap_inc" else ""
            differ.append(f"{key}{what}: checkpoint has {shown[0]}, {source} says {shown[1]}")
    if have["classifier_units"] != want["classifier_units"]:
        differ.append(
            f"classifier_units: checkpoint has {have['classifier_units']}, {source} says "
            f"{want['classifier_units']}"
        )
    if not differ and have["feature_voxels"] != want["feature_voxels"]:
        shapes = [
            r.get("input_shape_vox") if r else None for r in (checkpoint_record, model_record_)
        ]
        if all(shapes):
            differ.append(
                f"input_shape: checkpoint has {_text(shapes[0])}, {source} says {_text(shapes[1])}"
            )
        else:
            differ.append(
                f"input_shape: the checkpoint's classifier takes a last feature map of "
                f"{_number(have['feature_voxels'])} voxels, the {source}'s input_shape and "
                f"downsample_factors give {_number(want['feature_voxels'])}"
            )
    return differ


def check_weights_fit(
    path: str | Path,
    weights: Mapping[str, torch.Tensor],
    model: nn.Module,
    record: Mapping | None = None,
    source: str = "config",
) -> None:
    """Raise :class:`CheckpointError` in one line when ``weights`` do not fit ``model``'s
    tensors by name and shape, naming the settings that differ. ``model`` may live on the meta
    device (no memory)."""
    expected = unwrap_model(model).state_dict()
    if set(expected) == set(weights) and all(
        tuple(expected[key].shape) == tuple(weights[key].shape) for key in expected
    ):
        return
    differ = weights_mismatch(weights, expected, record, model_record(model), source)
    if not differ:  # no setting explains it: name the first tensor that differs
        missing = [key for key in expected if key not in weights]
        extra = [key for key in weights if key not in expected]
        shaped = [
            key
            for key in expected
            if key in weights and tuple(expected[key].shape) != tuple(weights[key].shape)
        ]
        if shaped:
            key = shaped[0]
            differ = [
                f"{key}: checkpoint has shape {tuple(weights[key].shape)}, the network "
                f"{tuple(expected[key].shape)}"
            ]
        else:
            differ = [
                f"{len(missing)} tensors missing (first: {missing[0] if missing else '-'}), "
                f"{len(extra)} unexpected (first: {extra[0] if extra else '-'})"
            ]
    raise CheckpointError(
        f"{path}: the checkpoint does not fit the network of the {source}: {'; '.join(differ)}"
    )
