"""Checkpoints in the original synister format.

A checkpoint file ``model_checkpoint_<iteration>`` is a ``torch.save`` of a dict with
``model_state_dict`` and ``optimizer_state_dict`` (what gunpowder's torch ``Train`` node wrote), to
which synister adds ``iteration``. Original checkpoints therefore load directly, and ours load
in the original code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

_ITERATION_RE = re.compile(r"model_checkpoint_(\d+)$")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


class CheckpointError(ValueError):
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


def checkpoint_path(setup_dir: str | Path, iteration: int) -> Path:
    """``<setup_dir>/model_checkpoint_<iteration>``, the original's file name."""
    return Path(setup_dir) / f"model_checkpoint_{int(iteration)}"


def checkpoint_iteration(path: str | Path) -> int | None:
    """The iteration in a ``model_checkpoint_<iteration>`` file name, else None."""
    match = _ITERATION_RE.search(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(setup_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the checkpoints in a training setup, by increasing iteration."""
    found = []
    for path in Path(setup_dir).glob("model_checkpoint_*"):
        iteration = checkpoint_iteration(path)
        if iteration is not None and path.is_file():
            found.append((iteration, path))
    return sorted(found)


def save_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, iteration: int
) -> Path:
    """Write a checkpoint atomically (a crash never leaves a truncated file under ``path``)."""
    path = Path(path)
    state = {
        "model_state_dict": unwrap_model(model).state_dict(),
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "iteration": int(iteration),
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> int:
    """Load weights (and optimizer state when given) from ``path``; returns the iteration.

    Accepts the original layout, ours, a bare state_dict, and keys with DDP ``module.`` or
    ``torch.compile`` ``_orig_mod.`` prefixes. The iteration is the stored one, else the one in
    the file name, else 0.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a dict, found {type(state).__name__}")
    weights = state.get("model_state_dict", state)
    try:
        unwrap_model(model).load_state_dict(strip_wrapper_prefixes(weights))
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model: {exc}") from exc
    if optimizer is not None:
        optimizer_state = state.get("optimizer_state_dict")
        if optimizer_state is None:
            raise CheckpointError(f"{path}: holds no optimizer_state_dict")
        optimizer.load_state_dict(optimizer_state)
    iteration = state.get("iteration")
    if iteration is None:
        iteration = checkpoint_iteration(path)
    return int(iteration or 0)
