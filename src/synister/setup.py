"""Training and prediction setup folders, laid out as in the original synister.

``BASE/EXPERIMENT/02_train/setup_t<ID>/`` holds ``train_config.ini`` and ``worker_config.ini``
(training then writes ``model_checkpoint_<iteration>``, ``log/`` and ``snapshots/`` there);
``BASE/EXPERIMENT/03_predict/setup_t<ID>_p<N>/`` holds ``predict_config.ini`` and
``worker_config.ini`` for one checkpoint and one split part.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synister import db
from synister.config import (
    PREDICT_FILE,
    TRAIN_FILE,
    WORKER_FILE,
    ConfigError,
    PredictConfig,
    TrainConfig,
    WorkerConfig,
    build_config,
    read_ini,
    write_ini,
)
from synister.nt import TRANSMITTERS

TRAIN_STAGE = "02_train"
PREDICT_STAGE = "03_predict"

#: Working defaults: the seed's FAFB network on the layout of ``synister synthetic`` output
#: (``raw.zarr`` with dataset ``raw``, 40x4x4 nm voxels, a split made with ``--name skeleton``).
DEFAULT_TRAINING: dict[str, Any] = {
    "synapse_types": list(TRANSMITTERS),
    "input_shape": (16, 160, 160),
    "fmaps": 12,
    "batch_size": 8,
    "db_name_data": "synister",
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

_PREDICT_HEADER = """\
synister prediction setup {setup} (iteration {iteration}, {split_part} part)
Relative paths are relative to BASE = {base}. Run `synister predict` in this folder; the
predictions are stored as run {run_name}."""


class SetupError(ValueError):
    """A setup folder cannot be made or removed; the message names the folder."""


@dataclass(frozen=True)
class PredictionSetup:
    """One prediction setup made or found by :func:`prepare_prediction_setups`."""

    path: Path
    iteration: int
    predict_number: int
    created: bool  # False: an existing setup of the same checkpoint and split part was reused


def _check_name(experiment: str) -> str:
    try:  # it becomes a folder and part of prediction run names
        return db.check_name(experiment, "experiment name")
    except db.BadName as error:
        raise SetupError(str(error)) from None


def train_setup_dir(base_dir: str | Path, experiment: str, train_id: int) -> Path:
    """``BASE/EXPERIMENT/02_train/setup_t<train_id>``."""
    return (
        Path(base_dir).expanduser() / _check_name(experiment) / TRAIN_STAGE / f"setup_t{train_id}"
    )


def predict_setup_dir(
    base_dir: str | Path, experiment: str, train_id: int, predict_number: int
) -> Path:
    """``BASE/EXPERIMENT/03_predict/setup_t<train_id>_p<predict_number>``."""
    name = f"setup_t{train_id}_p{predict_number}"
    return Path(base_dir).expanduser() / _check_name(experiment) / PREDICT_STAGE / name


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


def prepare_training(
    base_dir: str | Path, experiment: str, train_id: int, **overrides: Any
) -> Path:
    """Create ``BASE/EXPERIMENT/02_train/setup_t<train_id>`` with a working default config.

    ``overrides`` set training or worker keys (Python values or ini text such as
    ``input_shape="8, 64, 64"``). An existing setup is never overwritten.
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
    setup.mkdir(parents=True)
    base = setup.resolve().parents[2]
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


def _existing_predictions(predict_root: Path, train_id: int) -> dict[int, PredictConfig | None]:
    """Predict number -> config of the existing setups of training ``train_id``."""
    pattern = re.compile(rf"setup_t{train_id}_p(\d+)$")
    found: dict[int, PredictConfig | None] = {}
    if not predict_root.is_dir():
        return found
    for folder in predict_root.iterdir():
        match = pattern.match(folder.name)
        if match and folder.is_dir():
            config_file = folder / PREDICT_FILE
            found[int(match.group(1))] = (
                read_ini(config_file, PredictConfig) if config_file.is_file() else None
            )
    return found


def prepare_prediction_setups(
    base_dir: str | Path,
    experiment: str,
    train_id: int,
    iterations: list[int],
    validation: bool,
    *,
    check_checkpoints: bool = True,
) -> list[PredictionSetup]:
    """Make (or reuse) one prediction setup per iteration; see :func:`prepare_prediction`."""
    train_setup = train_setup_dir(base_dir, experiment, train_id)
    if not (train_setup / TRAIN_FILE).is_file():
        raise SetupError(f"no training setup at {train_setup} (no {TRAIN_FILE})")
    train = read_ini(train_setup / TRAIN_FILE, TrainConfig)
    read_ini(train_setup / WORKER_FILE, WorkerConfig)  # fail early on a broken worker config
    split_part = "validation" if validation else "test"
    wanted = list(dict.fromkeys(int(i) for i in iterations))
    if not wanted:
        raise SetupError("no iterations given")
    if check_checkpoints:
        missing = [i for i in wanted if not (train_setup / f"model_checkpoint_{i}").is_file()]
        if missing:
            have = sorted(
                int(p.name.rsplit("_", 1)[1])
                for p in train_setup.glob("model_checkpoint_*")
                if p.name.rsplit("_", 1)[1].isdigit()
            )
            raise SetupError(
                f"no checkpoint for iteration(s) {', '.join(map(str, missing))} in {train_setup}"
                f" (checkpoints there: {', '.join(map(str, have)) or 'none'})"
            )

    predict_root = Path(base_dir).expanduser() / experiment / PREDICT_STAGE
    existing = _existing_predictions(predict_root, train_id)
    reusable = {}
    for number, cfg in sorted(existing.items()):
        try:
            reusable.setdefault((cfg.iteration, cfg.split_part), number)
        except (AttributeError, ConfigError):  # no config, or a checkpoint name without number
            continue
    next_number = max(existing, default=-1) + 1
    shared = {key: getattr(train, key) for key in PredictConfig.model_fields if hasattr(train, key)}
    results = []
    for iteration in wanted:
        number = reusable.get((iteration, split_part))
        if number is not None:
            path = predict_setup_dir(base_dir, experiment, train_id, number)
            results.append(PredictionSetup(path, iteration, number, created=False))
            continue
        number, next_number = next_number, next_number + 1
        checkpoint = f"{experiment}/{TRAIN_STAGE}/{train_setup.name}/model_checkpoint_{iteration}"
        predict = build_config(
            PredictConfig,
            {
                **shared,
                "train_checkpoint": checkpoint,
                "experiment": experiment,
                "train_number": train_id,
                "predict_number": number,
                "split_part": split_part,
                "overwrite": False,
            },
            "[Predict]",
        )
        path = predict_setup_dir(base_dir, experiment, train_id, number)
        path.mkdir(parents=True)
        header = _PREDICT_HEADER.format(
            setup=path.name,
            iteration=iteration,
            split_part=split_part,
            base=path.resolve().parents[2],
            run_name=predict.run_name,
        )
        write_ini(predict, path / PREDICT_FILE, header)
        shutil.copyfile(train_setup / WORKER_FILE, path / WORKER_FILE)
        results.append(PredictionSetup(path, iteration, number, created=True))
    return results


def prepare_prediction(
    base_dir: str | Path,
    experiment: str,
    train_id: int,
    iterations: list[int],
    validation: bool,
    *,
    check_checkpoints: bool = True,
) -> list[Path]:
    """One ``03_predict/setup_t<train_id>_p<N>`` per iteration, initialised from the training.

    ``validation`` picks the split part (validation, else test). An iteration that already has a
    setup for the same checkpoint and split part keeps it and its number, as in the original;
    new setups take the next free number. Returns the setup folders in the order of
    ``iterations``.
    """
    setups = prepare_prediction_setups(
        base_dir,
        experiment,
        train_id,
        iterations,
        validation,
        check_checkpoints=check_checkpoints,
    )
    return [setup.path for setup in setups]
