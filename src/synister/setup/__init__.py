"""Training and prediction setup folders, laid out as in the original synister (see
:mod:`synister.layout`).

``BASE/EXPERIMENT/02_train/setup_t<ID>/`` holds ``train_config.ini`` and ``worker_config.ini``
(training then writes ``model_checkpoint_<iteration>``, ``log/`` and ``snapshots/`` there):
:mod:`.training`. ``BASE/EXPERIMENT/03_predict/setup_t<ID>_p<N>/`` holds ``predict_config.ini``
and ``worker_config.ini`` for one checkpoint and one split part: :mod:`.prediction`.
"""

from .prediction import (
    PredictionSetup,
    prepare_prediction,
    prepare_prediction_setups,
    split_predict_settings,
)
from .training import (
    DEFAULT_TRAINING,
    PREDICT_STAGE,
    TRAIN_STAGE,
    SetupError,
    check_raw_volume,
    default_train_config,
    predict_setup_dir,
    prepare_training,
    remove_training,
    split_overrides,
    train_setup_dir,
)

__all__ = [
    "DEFAULT_TRAINING",
    "PREDICT_STAGE",
    "TRAIN_STAGE",
    "PredictionSetup",
    "SetupError",
    "check_raw_volume",
    "default_train_config",
    "predict_setup_dir",
    "prepare_prediction",
    "prepare_prediction_setups",
    "prepare_training",
    "remove_training",
    "split_overrides",
    "split_predict_settings",
    "train_setup_dir",
]
