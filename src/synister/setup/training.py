"""Training setup folders, laid out as in the original synister (see :mod:`synister.layout`):
``BASE/EXPERIMENT/02_train/setup_t<ID>/`` with ``train_config.ini`` and ``worker_config.ini``
(training then writes ``model_checkpoint_<iteration>``, ``log/`` and ``snapshots/`` there)."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synister import db, layout
from synister.config import (
    TRAIN_FILE,
    WORKER_FILE,
    ConfigError,
    TrainConfig,
    WorkerConfig,
    build_config,
    resolve_paths,
    write_ini,
)
from synister.layout import PREDICT_STAGE, TRAIN_STAGE
from synister.nt import TRANSMITTERS

__all__ = [
    "DEFAULT_TRAINING",
    "PREDICT_STAGE",
    "TRAIN_STAGE",
    "SetupError",
    "check_raw_volume",
    "default_train_config",
    "predict_setup_dir",
    "prepare_training",
    "remove_training",
    "split_overrides",
    "train_setup_dir",
]

#: Working defaults: the seed's FAFB network on the layout of ``synister synthetic`` output
#: (``raw.zarr`` with dataset ``raw``, 40x4x4 nm voxels, a split made with ``--name skeleton``).
DEFAULT_TRAINING: dict[str, Any] = {
    "synapse_types": list(TRANSMITTERS),
    "input_shape": (16, 160, 160),
    "fmaps": 12,
    "batch_size": 8,
    "split_name": "skeleton",
    "voxel_size": (40, 4, 4),
    "raw_container": "raw.zarr",
    "raw_dataset": "raw",
    "downsample_factors": [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)],
    "network": "VGG",
    "fmap_inc": (2, 2, 2, 2),
    "n_convolutions": (2, 2, 2, 2),
}

_TRAIN_HEADER = """\
synister training setup {setup}
Relative paths (raw_container, db_credentials, the file of a sqlite:/// URL) are relative to
BASE = {base}, the folder that holds the experiment folder.
Edit db_url, split_name, raw_container and raw_dataset to point at your data, then run
`synister train <iterations>` in this folder."""


class SetupError(ValueError):
    """A setup folder cannot be made or removed; the message names the folder."""


def _check_name(experiment: str) -> str:
    try:  # it becomes a folder and part of prediction run names
        return db.check_name(experiment, "experiment name")
    except db.BadName as error:
        raise SetupError(str(error)) from None


def train_setup_dir(base_dir: str | Path, experiment: str, train_id: int) -> Path:
    """``BASE/EXPERIMENT/02_train/setup_t<train_id>``."""
    return layout.train_setup_dir(base_dir, _check_name(experiment), train_id)


def predict_setup_dir(
    base_dir: str | Path, experiment: str, train_id: int, predict_number: int
) -> Path:
    """``BASE/EXPERIMENT/03_predict/setup_t<train_id>_p<predict_number>``."""
    return layout.predict_setup_dir(base_dir, _check_name(experiment), train_id, predict_number)


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sort ``key=value`` overrides into training and worker keys; unknown keys raise."""
    train, worker = {}, {}
    for key, value in overrides.items():
        if key in TrainConfig.model_fields:
            train[key] = value
        elif key in WorkerConfig.model_fields:
            worker[key] = value
        else:
            known = sorted(set(TrainConfig.model_fields) | set(WorkerConfig.model_fields))
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(known)}")
    return train, worker


def default_train_config(**overrides: Any) -> TrainConfig:
    """The working default training config with ``overrides`` (Python values or ini text).

    ``db_url`` defaults to the database the other commands use (``$SYNISTER_DB``, else
    ``synister.db`` in the working folder).
    """
    values = {**DEFAULT_TRAINING, "db_url": db.default_url(), **overrides}
    if "downsample_factors" in overrides:  # per-level defaults follow the new number of levels
        for key in ("fmap_inc", "n_convolutions"):
            if key not in overrides:
                del values[key]
    return build_config(TrainConfig, values, "[Training]")


def check_raw_volume(config, base_dir: str | Path):
    """Open the config's raw volume as training and prediction will and return it; raise
    :class:`SetupError` saying which folder a relative ``raw_container`` was resolved against
    (BASE, not the folder the command ran in)."""
    from synister.volumes import Volume

    base = Path(base_dir).expanduser().resolve()
    resolved = resolve_paths(config, base)
    try:
        return Volume(resolved.raw_container, resolved.raw_dataset, voxel_size_nm=config.voxel_size)
    except (OSError, ValueError) as exc:
        relative = ""
        if resolved.raw_container != config.raw_container:
            relative = (
                f"; raw_container {config.raw_container!r} is relative, so it was resolved "
                f"against BASE = {base}, the folder that holds the experiment folder, not the "
                "folder the command ran in"
            )
        raise SetupError(
            f"cannot open the raw volume: {exc}{relative} (--skip-volume-check if only the "
            "compute nodes reach it)"
        ) from None


def prepare_training(
    base_dir: str | Path,
    experiment: str,
    train_id: int,
    *,
    check_volume: bool = True,
    check_data: bool = False,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
    **overrides: Any,
) -> Path:
    """Create ``BASE/EXPERIMENT/02_train/setup_t<train_id>`` with a working default config.

    ``overrides`` set training or worker keys (Python values or ini text such as
    ``input_shape="8, 64, 64"``). An existing setup is never overwritten. With
    ``check_volume`` the raw volume must open (see :func:`check_raw_volume`); with
    ``check_data`` the database must hold the split and classes training needs, and the
    synapses must lie in the volume (:func:`synister.setup.checks.check_data`; ``warn`` hears
    its warnings, or with ``strict`` a misfit is an error).
    """
    setup = train_setup_dir(base_dir, experiment, train_id)
    if setup.exists():
        raise SetupError(
            f"training setup {setup} exists already; choose another train id or remove it "
            "(synister prepare-training ... -c)"
        )
    train_values, worker_values = split_overrides(overrides)
    train = default_train_config(**train_values)
    worker = build_config(WorkerConfig, worker_values, "[Worker]")
    volume = check_raw_volume(train, base_dir) if check_volume else None
    if check_data:
        from .checks import check_data as check

        for text in check(train, base_dir, ("train", "validation", "test"), volume, strict):
            warn(text) if warn else warnings.warn(text, stacklevel=2)
    setup.mkdir(parents=True)
    base = layout.experiment_base(setup)
    write_ini(train, setup / TRAIN_FILE, _TRAIN_HEADER.format(setup=setup.name, base=base))
    write_ini(worker, setup / WORKER_FILE, f"synister compute resources for {setup.name}")
    return setup


def remove_training(base_dir: str | Path, experiment: str, train_id: int) -> Path:
    """Delete a training setup folder and everything in it (checkpoints, logs, snapshots)."""
    setup = train_setup_dir(base_dir, experiment, train_id)
    if not (setup / TRAIN_FILE).is_file():
        raise SetupError(f"no training setup at {setup} (no {TRAIN_FILE})")
    shutil.rmtree(setup)
    return setup
