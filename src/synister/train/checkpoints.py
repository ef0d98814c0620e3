"""Which checkpoint a training setup resumes from, and writing the next one.

File names and contents are the original synister's (``synister.models.checkpoint``), so
prediction setups made by ``prepare-prediction`` find them by iteration.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synister.models import checkpoint_path, list_checkpoints, save_checkpoint


def latest_checkpoint(setup_dir: str | Path) -> tuple[int, Path] | None:
    """``(iteration, path)`` of the newest complete checkpoint, None when none was saved.

    Temporary files of an interrupted write (hidden, see :func:`synister.files.write_atomic`)
    never count.
    """
    checkpoints = list_checkpoints(setup_dir)
    return checkpoints[-1] if checkpoints else None


def save_training_checkpoint(
    setup_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, iteration: int
) -> Path:
    """Write ``<setup_dir>/model_checkpoint_<iteration>`` (through a temporary file, flushed and
    renamed: never truncated)."""
    return save_checkpoint(checkpoint_path(setup_dir, iteration), model, optimizer, iteration)
