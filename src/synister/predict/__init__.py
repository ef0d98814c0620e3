"""Prediction: one engine (:class:`Predictor`, :mod:`synister.predict.engine`) and its
front-ends; this module only re-exports.

- :mod:`~synister.predict.engine`: the predictor (network, precision, temperature, test-time
  augmentation hook) and its entry points for volume positions and in-memory patches;
- :mod:`~synister.predict.sources`, :mod:`~synister.predict.ring`: where batches come from
  (a reading thread, or reading processes handing batches over through shared memory);
- :mod:`~synister.predict.threads`, :mod:`~synister.predict.progress`: CPU threads and the
  progress display;
- :mod:`~synister.predict.database`: ``synister predict`` (a split part into the database);
- :mod:`~synister.tables`, :mod:`~synister.predict.positions`,
  :mod:`~synister.predict.neurons`, :mod:`~synister.predict.store`,
  :mod:`~synister.predict.report`: ``synister predict-positions`` (tables of positions with a
  model bundle, no database) and its Python API;
- :mod:`~synister.predict.blockwise`: ``synister predict-volume`` (every synapse of a dataset,
  block by block on daisy).

Every front-end loads its model with :func:`synister.models.load_model` and checks a resumed
run with :class:`synister.identity.RunIdentity`.
"""

from ..tables import PositionTable, TableError, read_positions
from .database import (
    RESUME_KEYS,
    BlockJob,
    PredictionPlan,
    PredictionRunComplete,
    open_setup_volume,
    plan_prediction,
    predict_setup,
    predict_synapses,
    prediction_meta,
    run_identity,
    setup_model,
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
from .neurons import class_columns, summarize_neurons
from .positions import STATUSES, PositionsJob, locate, predict_positions, prepare_positions
from .progress import PROGRESS_FORMAT, StoredCounter, progress_bar
from .ring import RingReader
from .sources import PatchBatches, array_batches, read_ahead, reading_order
from .threads import ThreadTuner, default_read_workers, default_threads

__all__ = [
    "PRECISIONS",
    "PROGRESS_FORMAT",
    "RESUME_KEYS",
    "STATUSES",
    "Augmenter",
    "BlockJob",
    "PatchBatches",
    "PositionTable",
    "PositionsJob",
    "PredictionPlan",
    "PredictionRunComplete",
    "Predictor",
    "RingReader",
    "Sink",
    "StoredCounter",
    "TableError",
    "ThreadTuner",
    "array_batches",
    "check_precision",
    "class_columns",
    "choose_device",
    "default_read_workers",
    "default_threads",
    "locate",
    "network_input",
    "open_setup_volume",
    "plan_prediction",
    "predict_positions",
    "predict_setup",
    "predict_synapses",
    "prediction_meta",
    "prepare_positions",
    "progress_bar",
    "read_ahead",
    "read_positions",
    "reading_order",
    "run_identity",
    "setup_model",
    "summarize_neurons",
]
