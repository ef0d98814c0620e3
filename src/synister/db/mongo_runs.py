"""Prediction runs on the original's MongoDB layout: ``<db>_predictions.<run>`` holds one
document ``{synapse_id, prediction: [p, ...]}`` per synapse, and ``<db>.prediction_runs``
(``{run, classes, meta}``, a synister addition) each run's class order. A run of the original
synister has no registry entry until ``synister db register-run`` records its class order (see
:mod:`synister.db.mongo`); its meta then also tells its split, part and expected synapses, read
from the original's layout."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .base import DatabaseError, PredictionRunExists
from .mongo_chunks import chunks, distinct
from .names import check_run_name
from .records import check_classes, check_predictions
from .urls import public_url

#: ``meta["origin"]`` of a run written by the original synister (registered afterwards).
ORIGINAL_ORIGIN = "funkelab/synister"
RUN_REGISTRY = "prediction_runs"


class OriginalRunWithoutClasses(DatabaseError):
    """A prediction run written by the original synister whose class order is not recorded."""


class MongoPredictionRuns:
    """The prediction-run half of :class:`~synister.db.mongo.MongoDatabase`, which mixes it in:
    it uses that class's ``url``, ``_db`` and ``_predictions_db``."""

    def create_prediction_run(
        self, run: str, classes: Sequence[str], meta: dict | None = None, overwrite: bool = False
    ) -> None:
        check_run_name(run)
        classes = check_classes(run, classes)
        if run in self.prediction_runs():
            if not overwrite:
                raise PredictionRunExists(
                    f"prediction run {run!r} exists; resume it or pass overwrite=True"
                )
            self.drop_prediction_run(run)
        self._db[RUN_REGISTRY].insert_one({"run": run, "classes": classes, "meta": meta or {}})
        self._predictions_db[run].create_index("synapse_id", unique=True)

    def _classes(self, run: str) -> list[str] | None:
        """The run's class order; None for a run made by the original code."""
        doc = self._db[RUN_REGISTRY].find_one({"run": run})
        if doc is not None:
            return list(doc["classes"])
        if run in self._predictions_db.list_collection_names():
            return None
        raise KeyError(f"no prediction run {run!r} in {public_url(self.url)}")

    def open_prediction_run(self, run: str) -> tuple[list[str], dict]:
        """Class order and meta of ``run``; :class:`OriginalRunWithoutClasses` for a run of the
        original synister whose class order has not been registered yet."""
        doc = self._db[RUN_REGISTRY].find_one({"run": run})
        if doc is None:
            self._classes(run)  # KeyError when there is no such run at all
            raise OriginalRunWithoutClasses(
                f"prediction run {run!r} in {public_url(self.url)} was written by the original "
                "synister, which stored no class order; record it once with `synister db "
                f"register-run {run} --classes gaba,acetylcholine,...` (the synapse_types of the "
                "run's train_config.ini in order, then neither if neither_class was set) or "
                "--train-config PATH, to evaluate it (synister does not add predictions to it)"
            )
        meta = dict(doc.get("meta") or {})
        if meta.get("origin") == ORIGINAL_ORIGIN:
            meta = {**self._original_layout(run), **meta}
        return list(doc["classes"]), meta

    def _original_layout(self, run: str) -> dict:
        """What the original's layout tells of its run ``run``: ``expected_synapses``, since it
        created one document per synapse of the split part (``prediction: null``) and filled
        them in; ``split_name``, the longest split in the run's name
        (``<split>_<experiment>_t<n>_p<m>``) that its synapses' ``splits`` field holds, and
        ``split_part``, its value there (absent where the split was removed since)."""
        collection = self._predictions_db[run]
        layout = {
            "expected_synapses": collection.count_documents({}),
            "expected_source": "documents",
        }
        first = collection.find_one({}, {"_id": 0, "synapse_id": 1})
        if first is None:
            return layout
        synapse = self._db.synapses.find_one(
            {"synapse_id": first["synapse_id"]}, {"_id": 0, "splits": 1}
        )
        splits = (synapse or {}).get("splits") or {}
        names = [name for name in splits if run.startswith(f"{name}_")]
        if names:
            name = max(names, key=len)
            layout.update(split_name=name, split_part=splits[name])
        return layout

    def register_prediction_run(
        self, run: str, classes: Sequence[str], meta: dict | None = None
    ) -> None:
        """Record the class order of a run written by the original synister, which makes it
        evaluable; refused when a stored prediction has another number of classes."""
        classes = check_classes(run, classes)
        if self._classes(run) is not None:
            raise DatabaseError(f"prediction run {run!r} already records its class order")
        widths = {len(d["prediction"]) for d in self._predicted(run)}
        wrong = sorted(w for w in widths if w != len(classes))
        if wrong:
            raise DatabaseError(
                f"prediction run {run!r} holds predictions of {', '.join(map(str, wrong))} "
                f"classes, but {len(classes)} classes were given ({', '.join(classes)})"
            )
        meta = {**(meta or {}), "origin": ORIGINAL_ORIGIN}
        self._db[RUN_REGISTRY].insert_one({"run": run, "classes": classes, "meta": meta})

    def write_predictions(self, run: str, synapse_ids, probabilities) -> None:
        classes, meta = self.open_prediction_run(run)
        if meta.get("origin") == ORIGINAL_ORIGIN:
            raise DatabaseError(
                f"prediction run {run!r} was written by the original synister; synister does "
                "not add predictions to it (resuming it is refused): predict into a new run"
            )
        ids, probs = check_predictions(synapse_ids, probabilities, len(classes), run)
        if not len(ids):
            return
        from pymongo import ReplaceOne

        collection = self._predictions_db[run]
        rows = list(zip(ids.tolist(), probs.tolist(), strict=True))
        for chunk in chunks(rows):
            collection.bulk_write(
                [
                    ReplaceOne({"synapse_id": i}, {"synapse_id": i, "prediction": p}, upsert=True)
                    for i, p in chunk
                ],
                ordered=False,
            )

    def _predicted(self, run: str) -> list[dict]:
        docs = self._predictions_db[run].find(
            {"prediction": {"$ne": None}}, {"_id": 0, "synapse_id": 1, "prediction": 1}
        )
        return sorted(docs, key=lambda d: d["synapse_id"])

    def predictions(self, run: str) -> pd.DataFrame:
        classes = self._classes(run)
        docs = self._predicted(run)
        width = (
            len(classes)
            if classes is not None
            else max((len(d["prediction"]) for d in docs), default=0)
        )
        names = [f"prob_{c}" for c in (classes if classes is not None else range(width))]
        probs = np.asarray([d["prediction"] for d in docs], dtype=np.float64).reshape(-1, width)
        frame = pd.DataFrame(probs, columns=names)
        frame.insert(0, "synapse_id", np.asarray([d["synapse_id"] for d in docs], dtype=np.int64))
        return frame

    def predicted_synapse_ids(self, run: str) -> np.ndarray:
        self._classes(run)
        ids = distinct(self._predictions_db[run], "synapse_id", {"prediction": {"$ne": None}})
        return np.sort(np.asarray(ids, dtype=np.int64))

    def prediction_runs(self) -> list[str]:
        registered = set(distinct(self._db[RUN_REGISTRY], "run"))
        return sorted(registered | set(self._predictions_db.list_collection_names()))

    def drop_prediction_run(self, run: str) -> None:
        """Delete run ``run`` (its collection and registry entry); KeyError if there is none."""
        self._classes(run)
        self._predictions_db.drop_collection(run)
        self._db[RUN_REGISTRY].delete_many({"run": run})
