"""Training: ``synister train`` resumes a setup's newest checkpoint and trains on (and keeps
an average of the weights with ``ema_decay``)."""

from ..layout import averaged_path
from .averaging import WeightAverage
from .checkpoints import latest_checkpoint, save_training_checkpoint
from .curves import plot_training_curves, read_scalars
from .loop import LoopSettings, run_training
from .schedule import LearningRateSchedule
from .setup_run import NotATrainingSetup, train

__all__ = [
    "LearningRateSchedule",
    "LoopSettings",
    "NotATrainingSetup",
    "WeightAverage",
    "averaged_path",
    "latest_checkpoint",
    "plot_training_curves",
    "read_scalars",
    "run_training",
    "save_training_checkpoint",
    "train",
]
