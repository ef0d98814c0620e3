"""Prediction runs in the SQL schema: a registry row per run (its class order and meta) and one
table per run with one column ``p<i>`` per class (see :mod:`synister.db.sql`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .base import PredictionRunExists
from .names import check_run_name
from .records import check_classes, check_predictions
from .urls import public_url


class SQLPredictionRuns:
    """The prediction-run half of :class:`~synister.db.sql.SQLDatabase`, which mixes it in: it
    uses that class's transactions, statement helpers and dialect hooks (``_run_table``,
    ``_prepare_run_storage``, ``_upsert_predictions``)."""

    def create_prediction_run(
        self, run: str, classes: Sequence[str], meta: dict | None = None, overwrite: bool = False
    ) -> None:
        check_run_name(run)
        classes = check_classes(run, classes)
        table = self._run_table(run)
        with self._transaction(write=True) as cur:
            if self._rows(cur, "SELECT 1 FROM prediction_runs WHERE run = ?", [run]):
                if not overwrite:
                    raise PredictionRunExists(
                        f"prediction run {run!r} exists; resume it or pass overwrite=True"
                    )
                self._execute(cur, f"DROP TABLE IF EXISTS {table}")
                self._execute(cur, "DELETE FROM prediction_runs WHERE run = ?", [run])
            self._prepare_run_storage(cur)
            columns = ", ".join(f"p{i} {self.FLOAT} NOT NULL" for i in range(len(classes)))
            self._execute(cur, f"CREATE TABLE {table} (synapse_id {self.ID_PK}, {columns})")
            self._execute(
                cur,
                "INSERT INTO prediction_runs (run, classes, meta) VALUES (?, ?, ?)",
                [run, json.dumps(classes), json.dumps(meta or {})],
            )

    def _run_info(self, cur, run: str) -> tuple[list[str], dict]:
        rows = self._rows(cur, "SELECT classes, meta FROM prediction_runs WHERE run = ?", [run])
        if not rows:
            raise KeyError(f"no prediction run {run!r} in {public_url(self.url)}")
        return json.loads(rows[0][0]), json.loads(rows[0][1])

    def open_prediction_run(self, run: str) -> tuple[list[str], dict]:
        with self._transaction(write=False) as cur:
            return self._run_info(cur, run)

    def write_predictions(self, run: str, synapse_ids, probabilities) -> None:
        with self._transaction(write=True) as cur:
            classes, _ = self._run_info(cur, run)
            ids, probs = check_predictions(synapse_ids, probabilities, len(classes), run)
            if not len(ids):
                return
            frame = pd.DataFrame(probs, columns=[f"p{i}" for i in range(len(classes))])
            frame.insert(0, "synapse_id", ids)
            self._upsert_predictions(cur, self._run_table(run), len(classes), frame)

    def predictions(self, run: str) -> pd.DataFrame:
        with self._transaction(write=False) as cur:
            classes, _ = self._run_info(cur, run)
            columns = ", ".join(f"p{i}" for i in range(len(classes)))
            rows = self._rows(
                cur,
                f"SELECT synapse_id, {columns} FROM {self._run_table(run)} ORDER BY synapse_id",
            )
        names = ["synapse_id"] + [f"prob_{c}" for c in classes]
        frame = pd.DataFrame(rows, columns=names)
        frame["synapse_id"] = frame["synapse_id"].astype("int64")
        return frame.astype({name: "float64" for name in names[1:]})

    def predicted_synapse_ids(self, run: str) -> np.ndarray:
        with self._transaction(write=False) as cur:
            self._run_info(cur, run)
            rows = self._rows(
                cur, f"SELECT synapse_id FROM {self._run_table(run)} ORDER BY synapse_id"
            )
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def prediction_runs(self) -> list[str]:
        with self._transaction(write=False) as cur:
            return [r[0] for r in self._rows(cur, "SELECT run FROM prediction_runs ORDER BY run")]

    def drop_prediction_run(self, run: str) -> None:
        """Delete run ``run`` (its table and registry entry); KeyError if there is none."""
        with self._transaction(write=True) as cur:
            self._run_info(cur, run)
            self._execute(cur, f"DROP TABLE IF EXISTS {self._run_table(run)}")
            self._execute(cur, "DELETE FROM prediction_runs WHERE run = ?", [run])
