"""Prediction setups, laid out as in the original synister (see :mod:`synister.layout`):
``BASE/EXPERIMENT/03_predict/setup_t<ID>_p<N>/`` holds ``predict_config.ini`` and
``worker_config.ini`` for one checkpoint and one split part."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synister import layout
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
from synister.identity import RunIdentity

from .training import (
    SetupError,
    check_raw_volume,
    default_train_config,
    predict_setup_dir,
    train_setup_dir,
)

__all__ = [
    "PredictionSetup",
    "prepare_prediction",
    "prepare_prediction_setups",
    "split_predict_settings",
]

_PREDICT_HEADER = """\
synister prediction setup {setup} (iteration {iteration}, {split_part} part)
Relative paths are relative to BASE = {base}. Run `synister predict` in this folder; the
predictions are stored as run {run_name}."""


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


def _existing_predictions(predict_root: Path, train_id: int) -> dict[int, PredictConfig | None]:
    """Predict number -> config of the existing setups of training ``train_id``."""
    found: dict[int, PredictConfig | None] = {}
    for number, folder in layout.predict_numbers(predict_root, train_id).items():
        config_file = folder / PREDICT_FILE
        found[number] = read_ini(config_file, PredictConfig) if config_file.is_file() else None
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


def _load(checkpoint: str | Path, config: Any):
    """:func:`synister.models.load_model` with its errors as :class:`SetupError`."""
    from synister.models import ModelError, load_model

    try:
        return load_model(checkpoint, config=config)
    except ModelError as exc:
        raise SetupError(str(exc)) from None


def _setup_checkpoints(
    experiment: str,
    train_setup: Path,
    iterations: list[int],
    checkpoint: str | Path | None,
    check_checkpoints: bool,
    data: TrainConfig,
) -> list[_Checkpoint]:
    """The checkpoints to make setups for: ``checkpoint`` (a file or bundle trained elsewhere,
    with what it records of its network; ``data`` builds it where it records nothing), or
    those of the training setup at ``iterations``."""
    if checkpoint is not None:
        if iterations:
            raise SetupError(
                "-i/--iterations pick checkpoints of the training setup; --checkpoint names the "
                "one to predict with"
            )
        loaded = _load(checkpoint, data)
        path = loaded.weights
        return [_Checkpoint(path, str(path), loaded.iteration, loaded.recorded, loaded.origin)]
    if not layout.is_train_setup(train_setup):
        raise SetupError(
            f"no training setup at {train_setup} (no {TRAIN_FILE}); to predict with a network "
            "trained elsewhere give --checkpoint FILE or a bundle folder"
        )
    wanted = list(dict.fromkeys(int(i) for i in iterations))
    if not wanted:
        raise SetupError("no iterations given")
    if check_checkpoints:
        missing = [i for i in wanted if not layout.checkpoint_path(train_setup, i).is_file()]
        if missing:
            have = [str(i) for i, _ in layout.list_checkpoints(train_setup)]
            raise SetupError(
                f"no checkpoint for iteration(s) {', '.join(map(str, missing))} in {train_setup}"
                f" (checkpoints there: {', '.join(have) or 'none'})"
            )
    train_id = layout.train_id_of(train_setup)
    return [
        _Checkpoint(
            layout.checkpoint_path(train_setup, i).absolute(),
            layout.relative_checkpoint(experiment, train_id, i),
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
    from synister.models import ModelError

    loaded = _load(item.path, cfg)
    try:
        loaded.check_fit()
    except ModelError as exc:
        raise SetupError(str(exc)) from None
    record = item.record or loaded.recorded
    trained = tuple(record["input_shape_vox"]) if record else None
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
    """The keys in which an existing setup's config differs from the one asked for."""
    if old is None:
        return [f"{PREDICT_FILE} (missing)"]
    identity = RunIdentity(resolve_paths(new, base).model_dump())
    return [key for key, *_ in identity.differences(resolve_paths(old, base).model_dump())]


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
    check_data: bool = False,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
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
    ``check_volume``, the raw volume must open; with ``check_data``, the database must hold
    the split with synapses of the part to predict, lying in the volume
    (:func:`synister.setup.checks.check_data`; ``warn`` hears its warnings, ``strict`` makes a
    misfit an error). An existing setup of the same checkpoint and part is kept and reported
    with the keys it differs in; ``force`` rewrites it.
    """
    split_part = part or ("validation" if validation else "test")
    if split_part not in SPLIT_PARTS:
        raise SetupError(f"part: expected one of {', '.join(SPLIT_PARTS)}, got {split_part!r}")
    base = Path(base_dir).expanduser()
    train_setup = train_setup_dir(base, experiment, train_id)
    trained_here = layout.is_train_setup(train_setup)
    if trained_here:
        data = read_ini(train_setup / TRAIN_FILE, TrainConfig)
        worker = read_ini(train_setup / WORKER_FILE, WorkerConfig)
    else:
        data, worker = default_train_config(), WorkerConfig()
    checkpoints = _setup_checkpoints(
        experiment, train_setup, list(iterations), checkpoint, check_checkpoints, data
    )
    predict_values, worker_values = split_predict_settings(dict(settings or {}))
    worker = build_config(WorkerConfig, {**dict(worker), **worker_values}, "[Worker]")
    shared = {key: getattr(data, key) for key in PredictConfig.model_fields if hasattr(data, key)}

    existing = _existing_predictions(layout.predict_root(base, experiment), train_id)
    by_checkpoint: dict[tuple[str, str], int] = {}
    for number, cfg in sorted(existing.items()):
        if cfg is not None:
            resolved = resolve_paths(cfg, base.resolve()).train_checkpoint
            by_checkpoint.setdefault((resolved, cfg.split_part), number)
    next_number = max(existing, default=-1) + 1

    planned = []
    checked_volumes: dict[tuple[str, str], object] = {}
    checked_data: set[tuple] = set()
    for item in checkpoints:
        values = dict(shared)
        if item.record is not None:
            values = _with_network(values, item.record)
            if not trained_here and "voxel_size" not in predict_values:
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
        where = (predict.raw_container, predict.raw_dataset)
        if check_volume and where not in checked_volumes:
            checked_volumes[where] = check_raw_volume(predict, base)
        key = (predict.db_url, predict.split_name, tuple(predict.classes), where)
        if check_data and key not in checked_data:
            from .checks import check_data as check

            volume = checked_volumes.get(where)
            for text in check(predict, base, (split_part,), volume, strict, every_class=False):
                warn(text) if warn else warnings.warn(text, stacklevel=2)
            checked_data.add(key)
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
            base=layout.experiment_base(path),
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
