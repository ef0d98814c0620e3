"""Typed configs and the one place that reads and writes the seed's ``.ini`` files.

The files keep the original synister format (``[Training]``, ``[Worker]``, ``[Predict]``;
lists as ``gaba, acetylcholine``, shapes as ``16, 160, 160``, downsample factors as
``(1, 2, 2), (2, 2, 2)``, ``None``, ``True``/``False``) so that old setups load unchanged and new
files stay readable by the original scripts. Errors name the file, section and key.

Relative paths (``raw_container``, ``db_credentials``, ``train_checkpoint`` and the file of a
``sqlite:///`` URL) are relative to BASE, the folder that holds the experiment folder
(``BASE/EXPERIMENT/02_train/setup_t<ID>``, see :mod:`synister.layout`), as in the seed's
``train_checkpoint`` example. :func:`load_train_setup` and :func:`load_predict_setup` return them
resolved.

- :mod:`.ini`: text <-> values in the seed's format, reading and writing one section;
- :mod:`.schema`: :class:`TrainConfig`, :class:`PredictConfig` and the fields they share;
- :mod:`.worker`: :class:`WorkerConfig` and :func:`submit_command`;
- :mod:`.database`: database URLs from ``db_url`` or the original's credentials file;
- :mod:`.paths`: setup folders' configs with paths resolved.
"""

from synister.layout import PREDICT_FILE, TRAIN_FILE, WORKER_FILE, experiment_base

from .database import mongo_url_from_credentials, url_with_database
from .ini import (
    ConfigError,
    ConfigWarning,
    _IniModel,
    _ParseError,
    build_config,
    read_ini,
    text_to_value,
    value_to_text,
    write_ini,
)
from .paths import load_predict_setup, load_train_setup, resolve_paths
from .schema import PredictConfig, TrainConfig, _ModelFields
from .worker import SUBMIT_PLACEHOLDERS, WorkerConfig, submit_command

__all__ = [
    "PREDICT_FILE",
    "SUBMIT_PLACEHOLDERS",
    "TRAIN_FILE",
    "WORKER_FILE",
    "ConfigError",
    "ConfigWarning",
    "PredictConfig",
    "TrainConfig",
    "WorkerConfig",
    "_IniModel",
    "_ModelFields",
    "_ParseError",
    "build_config",
    "experiment_base",
    "load_predict_setup",
    "load_train_setup",
    "mongo_url_from_credentials",
    "read_ini",
    "resolve_paths",
    "submit_command",
    "text_to_value",
    "url_with_database",
    "value_to_text",
    "write_ini",
]
