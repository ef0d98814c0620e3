"""Prediction: one engine (:class:`Predictor`, :mod:`synister.predict.engine`) and its
front-ends; this module only re-exports.

- :mod:`~synister.predict.engine`: the predictor (network, precision, temperature, test-time
  augmentation hook) and its entry points for volume positions and in-memory patches;
- :mod:`~synister.predict.sources`, :mod:`~synister.predict.ring`: where batches come from
  (a reading thread, or reading processes handing batches over through shared memory);
- :mod:`~synister.predict.threads`, :mod:`~synister.predict.progress`: CPU threads and the
  progress display;
- :mod:`~synister.predict.database`: ``synister predict`` (a split part into the database).
"""

from .database import (
    RESUME_KEYS,
    BlockJob,
    PredictionPlan,
    PredictionRunComplete,
    file_sha256,
    load_network,
    open_volume,
    plan_prediction,
    predict_setup,
    predict_synapses,
    prediction_meta,
)
from .engine import (
    PRECISIONS,
    Augmenter,
    Predictor,
    Sink,
    check_precision,
    choose_device,
    network_input,
)
from .progress import PROGRESS_FORMAT, StoredCounter, progress_bar
from .ring import RingReader
from .sources import PatchBatches, array_batches, read_ahead, reading_order
from .threads import ThreadTuner, default_read_workers, default_threads

__all__ = [
    "PRECISIONS",
    "PROGRESS_FORMAT",
    "RESUME_KEYS",
    "Augmenter",
    "BlockJob",
    "PatchBatches",
    "PredictionPlan",
    "PredictionRunComplete",
    "Predictor",
    "RingReader",
    "Sink",
    "StoredCounter",
    "ThreadTuner",
    "array_batches",
    "check_precision",
    "choose_device",
    "default_read_workers",
    "default_threads",
    "file_sha256",
    "load_network",
    "network_input",
    "open_volume",
    "plan_prediction",
    "predict_setup",
    "predict_synapses",
    "prediction_meta",
    "progress_bar",
    "read_ahead",
    "reading_order",
]
