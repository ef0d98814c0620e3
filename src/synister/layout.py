"""The experiment's folders and file names, as the original synister laid them out, in one place.

::

    BASE/EXPERIMENT/02_train/setup_t<ID>/           a training setup
        train_config.ini, worker_config.ini
        model_checkpoint_<N>                        the weights at iteration N
        model_checkpoint_<N>.calibration.json       its calibration (synister calibrate)
        log/, snapshots/
    BASE/EXPERIMENT/03_predict/setup_t<ID>_p<K>/    prediction setup K of training ID
        predict_config.ini, worker_config.ini

Relative paths in the configs are relative to BASE (:func:`experiment_base`). A file that
belongs to one checkpoint sits beside it, named after it (:func:`beside_checkpoint`): copying
the pair keeps them together, and checkpoint listings ignore it. A new kind of such file is one
more suffix and one more function here.

Names are not checked here (the experiment name becomes a folder and part of run names:
:func:`synister.db.check_name` checks it where setups are made). This module imports nothing
from synister.
"""

from __future__ import annotations

import re
from pathlib import Path

TRAIN_STAGE = "02_train"
PREDICT_STAGE = "03_predict"

TRAIN_FILE = "train_config.ini"
WORKER_FILE = "worker_config.ini"
PREDICT_FILE = "predict_config.ini"

CHECKPOINT_PREFIX = "model_checkpoint_"
CALIBRATION_SUFFIX = ".calibration.json"
#: the weight average saved beside a checkpoint (``synister.train.averaging``)
AVERAGED_SUFFIX = ".averaged"

_CHECKPOINT_RE = re.compile(rf"{CHECKPOINT_PREFIX}(\d+)(?:{re.escape(AVERAGED_SUFFIX)})?$")
_TRAIN_SETUP_RE = re.compile(r"setup_t(\d+)$")
_PREDICT_SETUP_RE = re.compile(r"setup_t(\d+)_p(\d+)$")


# ---- setup folders -------------------------------------------------------------------------------


def train_setup_name(train_id: int) -> str:
    """``setup_t<train_id>``."""
    return f"setup_t{int(train_id)}"


def predict_setup_name(train_id: int, predict_number: int) -> str:
    """``setup_t<train_id>_p<predict_number>``."""
    return f"setup_t{int(train_id)}_p{int(predict_number)}"


def train_setup_dir(base_dir: str | Path, experiment: str, train_id: int) -> Path:
    """``BASE/EXPERIMENT/02_train/setup_t<train_id>``."""
    return Path(base_dir).expanduser() / experiment / TRAIN_STAGE / train_setup_name(train_id)


def predict_root(base_dir: str | Path, experiment: str) -> Path:
    """``BASE/EXPERIMENT/03_predict``, the folder of an experiment's prediction setups."""
    return Path(base_dir).expanduser() / experiment / PREDICT_STAGE


def predict_setup_dir(
    base_dir: str | Path, experiment: str, train_id: int, predict_number: int
) -> Path:
    """``BASE/EXPERIMENT/03_predict/setup_t<train_id>_p<predict_number>``."""
    return predict_root(base_dir, experiment) / predict_setup_name(train_id, predict_number)


def train_id_of(setup_dir: str | Path) -> int | None:
    """ID of a training setup folder named ``setup_t<ID>``, else None."""
    match = _TRAIN_SETUP_RE.fullmatch(Path(setup_dir).name)
    return int(match.group(1)) if match else None


def predict_numbers(predict_folder: str | Path, train_id: int) -> dict[int, Path]:
    """Predict number -> folder of the prediction setups of training ``train_id`` in
    ``predict_folder`` (an experiment's ``03_predict``)."""
    folder = Path(predict_folder)
    found: dict[int, Path] = {}
    if not folder.is_dir():
        return found
    for entry in folder.iterdir():
        match = _PREDICT_SETUP_RE.fullmatch(entry.name)
        if match and int(match.group(1)) == int(train_id) and entry.is_dir():
            found[int(match.group(2))] = entry
    return found


def experiment_of(setup_dir: str | Path) -> str | None:
    """The experiment name of a training setup ``.../EXPERIMENT/02_train/setup_t<ID>``; None
    for a folder elsewhere."""
    setup_dir = Path(setup_dir)
    return setup_dir.parent.parent.name if setup_dir.parent.name == TRAIN_STAGE else None


def experiment_base(setup_dir: str | Path) -> Path:
    """BASE of a setup folder ``BASE/EXPERIMENT/0X_stage/setup_...`` (``/`` for shallow paths)."""
    parents = Path(setup_dir).resolve().parents
    return parents[min(2, len(parents) - 1)]


def is_train_setup(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``train_config.ini``."""
    return (Path(folder) / TRAIN_FILE).is_file()


def is_predict_setup(folder: str | Path) -> bool:
    """Whether ``folder`` holds a ``predict_config.ini``."""
    return (Path(folder) / PREDICT_FILE).is_file()


# ---- checkpoints and the files beside them -------------------------------------------------------


def checkpoint_name(iteration: int) -> str:
    """``model_checkpoint_<iteration>``, the original's file name."""
    return f"{CHECKPOINT_PREFIX}{int(iteration)}"


def checkpoint_path(setup_dir: str | Path, iteration: int) -> Path:
    """``<setup_dir>/model_checkpoint_<iteration>``."""
    return Path(setup_dir) / checkpoint_name(iteration)


def checkpoint_iteration(path: str | Path) -> int | None:
    """The iteration in a ``model_checkpoint_<iteration>`` file name (or its weight average's,
    ``model_checkpoint_<iteration>.averaged``), else None."""
    match = _CHECKPOINT_RE.search(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(setup_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of the checkpoints in a folder, by increasing iteration. Files beside
    them (calibration, ...) and hidden temporary files never count."""
    found = []
    for path in Path(setup_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        iteration = checkpoint_iteration(path)
        if iteration is not None and path.is_file() and path.suffix != AVERAGED_SUFFIX:
            found.append((iteration, path))
    return sorted(found)


def beside_checkpoint(checkpoint: str | Path, suffix: str) -> Path:
    """``<checkpoint><suffix>`` in the checkpoint's folder: a file that belongs to it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + suffix)


def averaged_path(checkpoint: str | Path) -> Path:
    """``model_checkpoint_<N>.averaged`` beside the checkpoint ``model_checkpoint_<N>``."""
    return beside_checkpoint(checkpoint, AVERAGED_SUFFIX)


def calibration_path(checkpoint: str | Path) -> Path:
    """``<checkpoint>.calibration.json`` beside ``checkpoint``."""
    return beside_checkpoint(checkpoint, CALIBRATION_SUFFIX)


def train_config_beside(checkpoint: str | Path) -> Path:
    """The ``train_config.ini`` of the training setup a checkpoint file lies in (it may not
    exist: a checkpoint elsewhere)."""
    return Path(checkpoint).parent / TRAIN_FILE


def relative_checkpoint(experiment: str, train_id: int, iteration: int) -> str:
    """``EXPERIMENT/02_train/setup_t<ID>/model_checkpoint_<N>``: a checkpoint relative to BASE,
    as ``predict_config.ini`` names it."""
    setup = f"{experiment}/{TRAIN_STAGE}/{train_setup_name(train_id)}"
    return f"{setup}/{checkpoint_name(iteration)}"
