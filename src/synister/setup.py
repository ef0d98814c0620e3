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
    _ModelFields,
    build_config,
    read_ini,
    resolve_paths,
    value_to_text,
    write_ini,
)
from synister.db import SPLIT_PARTS
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
    iteration: int | None  # None: a checkpoint whose iteration is not known
    predict_number: int
    created: bool  # False: an existing setup of the same checkpoint and split part was kept
    state: str = "created"  # created, kept (an existing setup) or rewritten (force)
    differs: tuple[str, ...] = ()  # keys in which a kept or rewritten setup differed
    network_from: str = "the training setup"  # where its network settings came from


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


def check_raw_volume(config, base_dir: str | Path) -> None:
    """Open the config's raw volume as training and prediction will; raise :class:`SetupError`
    saying which folder a relative ``raw_container`` was resolved against (BASE, not the folder
    the command ran in)."""
    from synister.volumes import Volume

    base = Path(base_dir).expanduser().resolve()
    resolved = resolve_paths(config, base)
    try:
        Volume(resolved.raw_container, resolved.raw_dataset, voxel_size_nm=config.voxel_size)
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
    **overrides: Any,
) -> Path:
    """Create ``BASE/EXPERIMENT/02_train/setup_t<train_id>`` with a working default config.

    ``overrides`` set training or worker keys (Python values or ini text such as
    ``input_shape="8, 64, 64"``). An existing setup is never overwritten. With
    ``check_volume`` the raw volume must open (see :func:`check_raw_volume`).
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
    if check_volume:
        check_raw_volume(train, base_dir)
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


def split_predict_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sort ``key=value`` settings of a prediction setup into Predict and Worker keys; the keys
    prepare-prediction itself sets, and unknown keys, raise."""
    predict, worker = {}, {}
    for key, value in settings.items():
        if key in _MANAGED_PREDICT_KEYS:
            raise ConfigError(f"setting {key!r} is set by prepare-prediction itself")
        if key in PredictConfig.model_fields:
            predict[key] = value
        elif key in WorkerConfig.model_fields:
            worker[key] = value
        else:
            known = sorted(
                (set(PredictConfig.model_fields) - _MANAGED_PREDICT_KEYS)
                | set(WorkerConfig.model_fields)
            )
            raise ConfigError(f"unknown setting {key!r}; known: {', '.join(known)}")
    return predict, worker


_MANAGED_PREDICT_KEYS = frozenset(
    {"train_checkpoint", "experiment", "train_number", "predict_number", "split_part"}
)


@dataclass(frozen=True)
class _Checkpoint:
    """A checkpoint to make a prediction setup for, and what is known of its network."""

    path: Path  # absolute
    text: str  # as written into predict_config.ini
    iteration: int | None
    record: dict[str, Any] | None  # network record (bundle, checkpoint, train_config beside)
    origin: str = "the training setup"  # where the record came from


def _setup_checkpoints(
    experiment: str,
    train_setup: Path,
    iterations: list[int],
    checkpoint: str | Path | None,
    check_checkpoints: bool,
) -> list[_Checkpoint]:
    from synister.models.bundle import BundleError, network_source
    from synister.models.checkpoint import checkpoint_path, list_checkpoints

    if checkpoint is not None:
        if iterations:
            raise SetupError(
                "-i/--iterations pick checkpoints of the training setup; --checkpoint names the "
                "one to predict with"
            )
        try:
            source = network_source(checkpoint)
        except BundleError as exc:
            raise SetupError(str(exc)) from None
        path, record = source.checkpoint, source.record
        return [_Checkpoint(path, str(path), source.iteration, record, source.origin)]
    if not (train_setup / TRAIN_FILE).is_file():
        raise SetupError(
            f"no training setup at {train_setup} (no {TRAIN_FILE}); to predict with a network "
            "trained elsewhere give --checkpoint FILE or a bundle folder"
        )
    wanted = list(dict.fromkeys(int(i) for i in iterations))
    if not wanted:
        raise SetupError("no iterations given")
    if check_checkpoints:
        missing = [i for i in wanted if not checkpoint_path(train_setup, i).is_file()]
        if missing:
            have = [str(i) for i, _ in list_checkpoints(train_setup)]
            raise SetupError(
                f"no checkpoint for iteration(s) {', '.join(map(str, missing))} in {train_setup}"
                f" (checkpoints there: {', '.join(have) or 'none'})"
            )
    relative = f"{experiment}/{TRAIN_STAGE}/{train_setup.name}"
    return [
        _Checkpoint(
            checkpoint_path(train_setup, i).absolute(),
            f"{relative}/model_checkpoint_{i}",
            i,
            None,  # the training config is the network's
        )
        for i in wanted
    ]


def _with_network(values: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the network, classes, input shape and voxel size of ``record``."""
    network_keys = set(_ModelFields.model_fields) - _ModelFields.NOT_NETWORK
    values = {key: value for key, value in values.items() if key not in network_keys}
    classes = list(record["classes"])
    neither = bool(classes) and classes[-1] == "neither"
    values.update(record["network"])
    values["synapse_types"] = classes[:-1] if neither else classes
    values["neither_class"] = neither
    values["input_shape"] = tuple(record["input_shape_vox"])
    return values


def _check_network(cfg: PredictConfig, item: _Checkpoint) -> None:
    """The weights fit the config's network; its input shape and voxel size are the ones the
    network was trained with (input shape: unless allowed)."""
    import zipfile

    import torch

    from synister.models import CheckpointError, build_model
    from synister.models.checkpoint import (
        check_weights_fit,
        checkpoint_network,
        checkpoint_weights,
        read_checkpoint,
        trained_input_shape,
    )

    try:
        state = read_checkpoint(item.path, mmap=zipfile.is_zipfile(item.path))
        weights = checkpoint_weights(state, item.path)
        with torch.device("meta"):
            model = build_model(cfg)
        check_weights_fit(item.path, weights, model, checkpoint_network(state))
    except CheckpointError as exc:
        raise SetupError(str(exc)) from None
    record = item.record or checkpoint_network(state)
    trained = tuple(record["input_shape_vox"]) if record else trained_input_shape(item.path, state)
    if trained and tuple(trained) != tuple(cfg.input_shape) and not cfg.allow_other_input_shape:
        raise SetupError(
            f"input_shape: the network was trained on {value_to_text(trained)} voxels, this "
            f"setup would predict on {value_to_text(cfg.input_shape)}; other patch sizes lower "
            "accuracy without a sign. Pass --allow-other-input-shape to predict anyway"
        )
    if record and [float(v) for v in record["voxel_size_nm"]] != [float(v) for v in cfg.voxel_size]:
        raise SetupError(
            f"voxel_size: the network was trained on {value_to_text(record['voxel_size_nm'])} nm "
            f"voxels, the data settings say {value_to_text(cfg.voxel_size)}; predict on a volume "
            "of the network's voxel size"
        )


def _differences(new: PredictConfig, old: PredictConfig | None, base: Path) -> list[str]:
    if old is None:
        return ["predict_config.ini (missing)"]
    new_values = resolve_paths(new, base).model_dump()
    old_values = resolve_paths(old, base).model_dump()
    return [key for key in new_values if new_values[key] != old_values.get(key)]


def prepare_prediction_setups(
    base_dir: str | Path,
    experiment: str,
    train_id: int,
    iterations: list[int] | tuple[int, ...] = (),
    validation: bool = False,
    *,
    part: str | None = None,
    checkpoint: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    allow_other_input_shape: bool = False,
    force: bool = False,
    check_checkpoints: bool = True,
    check_volume: bool = True,
) -> list[PredictionSetup]:
    """Make (or find) one prediction setup per checkpoint; see :func:`prepare_prediction`.

    The checkpoints are the training setup's ``model_checkpoint_<iteration>`` files, or
    ``checkpoint``: a checkpoint file or a model bundle trained elsewhere, whose network
    settings (from the bundle, the checkpoint's record or the ``train_config.ini`` beside it)
    replace the config's. Data and database settings come from the training setup if there is
    one, else the defaults; ``settings`` (Predict or Worker keys, Python values or ini text)
    override both. ``part`` (train, validation or test) wins over ``validation``.

    Before anything is written the weights must fit the network, the input shape and voxel
    size must be the trained ones (``allow_other_input_shape`` lifts the first) and, with
    ``check_volume``, the raw volume must open. An existing setup of the same checkpoint and
    part is kept and reported with the keys it differs in; ``force`` rewrites it.
    """
    split_part = part or ("validation" if validation else "test")
    if split_part not in SPLIT_PARTS:
        raise SetupError(f"part: expected one of {', '.join(SPLIT_PARTS)}, got {split_part!r}")
    base = Path(base_dir).expanduser()
    train_setup = train_setup_dir(base, experiment, train_id)
    checkpoints = _setup_checkpoints(
        experiment, train_setup, list(iterations), checkpoint, check_checkpoints
    )
    predict_values, worker_values = split_predict_settings(dict(settings or {}))
    if (train_setup / TRAIN_FILE).is_file():
        data = read_ini(train_setup / TRAIN_FILE, TrainConfig)
        worker = read_ini(train_setup / WORKER_FILE, WorkerConfig)
    else:
        data, worker = default_train_config(), WorkerConfig()
    worker = build_config(WorkerConfig, {**dict(worker), **worker_values}, "[Worker]")
    shared = {key: getattr(data, key) for key in PredictConfig.model_fields if hasattr(data, key)}

    predict_root = base / experiment / PREDICT_STAGE
    existing = _existing_predictions(predict_root, train_id)
    by_checkpoint: dict[tuple[str, str], int] = {}
    for number, cfg in sorted(existing.items()):
        if cfg is not None:
            resolved = resolve_paths(cfg, base.resolve()).train_checkpoint
            by_checkpoint.setdefault((resolved, cfg.split_part), number)
    next_number = max(existing, default=-1) + 1

    planned = []
    checked_volumes: set[tuple[str, str]] = set()
    for item in checkpoints:
        values = dict(shared)
        if item.record is not None:
            values = _with_network(values, item.record)
            if not (train_setup / TRAIN_FILE).is_file() and "voxel_size" not in predict_values:
                values["voxel_size"] = tuple(item.record["voxel_size_nm"])
        number = by_checkpoint.get((str(item.path.resolve()), split_part))
        values.update(predict_values)
        values.update(
            train_checkpoint=item.text,
            experiment=experiment,
            train_number=train_id,
            predict_number=next_number if number is None else number,
            split_part=split_part,
        )
        if allow_other_input_shape:
            values["allow_other_input_shape"] = True
        if number is None:
            next_number += 1
        predict = build_config(PredictConfig, values, "[Predict]")
        if check_checkpoints:
            _check_network(predict, item)
        if check_volume and (predict.raw_container, predict.raw_dataset) not in checked_volumes:
            check_raw_volume(predict, base)
            checked_volumes.add((predict.raw_container, predict.raw_dataset))
        planned.append((item, predict, number))

    results = []
    for item, predict, number in planned:
        path = predict_setup_dir(base, experiment, train_id, predict.predict_number)
        differs: tuple[str, ...] = ()
        if number is not None:
            old = existing.get(number)
            differs = tuple(_differences(predict, old, base.resolve()))
            if not differs or not force:
                results.append(
                    PredictionSetup(
                        path, item.iteration, number, False, "kept", differs, item.origin
                    )
                )
                continue
        path.mkdir(parents=True, exist_ok=True)
        header = _PREDICT_HEADER.format(
            setup=path.name,
            iteration=item.iteration,
            split_part=split_part,
            base=path.resolve().parents[2],
            run_name=predict.run_name,
        )
        write_ini(predict, path / PREDICT_FILE, header)
        write_ini(worker, path / WORKER_FILE, f"synister compute resources for {path.name}")
        state = "created" if number is None else "rewritten"
        results.append(
            PredictionSetup(
                path, item.iteration, predict.predict_number, True, state, differs, item.origin
            )
        )
    return results


def prepare_prediction(
    base_dir: str | Path,
    experiment: str,
    train_id: int,
    iterations: list[int] | tuple[int, ...] = (),
    validation: bool = False,
    **options: Any,
) -> list[Path]:
    """One ``03_predict/setup_t<train_id>_p<N>`` per checkpoint, initialised from the training.

    ``validation`` picks the split part (validation, else test; ``part=`` may name train too).
    An iteration that already has a setup for the same checkpoint and split part keeps it and
    its number, as in the original; new setups take the next free number. Returns the setup
    folders in the order of ``iterations``. ``options`` are those of
    :func:`prepare_prediction_setups`.
    """
    setups = prepare_prediction_setups(
        base_dir, experiment, train_id, iterations, validation, **options
    )
    return [setup.path for setup in setups]
