"""The SQL logic shared by the SQLite and PostgreSQL backends.

Both speak the same schema and the same statements; a backend only supplies its connection,
column types, bulk loading (SQLite ``executemany``, PostgreSQL ``COPY``), temporary tables and
the name of a prediction run's table. Statements are written with ``?`` placeholders; the
PostgreSQL backend rewrites them to ``%s``.

Schema (positions in nm; transmitter sets as their order-free key, e.g. ``"gaba,octopamine"``,
``""`` for unknown, so that an ``nts=`` filter is one equality test):

- ``synapses(synapse_id PK, z, y, x, skeleton_id, brain_region, prepost, confidence)``
- ``skeletons(skeleton_id PK, hemi_lineage_id, nt_known)``
- ``hemi_lineages(hemi_lineage_id PK, hemi_lineage_name, nt_guess)``
- ``splits(name PK, meta JSON text)`` and ``split_parts(split, synapse_id, part)``
- ``prediction_runs(run PK, classes JSON text, meta JSON text)``, plus one table per run with
  ``synapse_id PK`` and one column ``p<i>`` per class (class names live in the registry, so any
  class name is allowed); prediction runs are in :mod:`synister.db.sql_runs`.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import pandas as pd

from ..nt import canonical_set, set_key
from .base import (
    Database,
    DatabaseError,
    UnknownSplit,
    ValidationReport,
    split_exists,
)
from .records import (
    SYNAPSE_COLUMNS,
    check_hemi_lineages,
    check_parts_filter,
    check_positions,
    check_skeletons,
    check_split_parts,
    check_synapses,
    duplicate_id_error,
    finish_hemi_lineages,
    finish_skeletons,
    finish_synapses,
    ids_text,
    stats_key,
)
from .sql_runs import SQLPredictionRuns
from .urls import public_url

SCHEMA_TABLES = (
    "synapses",
    "skeletons",
    "hemi_lineages",
    "splits",
    "split_parts",
    "prediction_runs",
)

_SYNAPSE_SELECT = (
    "s.synapse_id, s.z, s.y, s.x, s.skeleton_id, s.brain_region, s.prepost, s.confidence, "
    "k.nt_known, k.hemi_lineage_id"
)
_SYNAPSE_OUT = [*SYNAPSE_COLUMNS, "nt_known", "hemi_lineage_id"]
#: id tables that must be unique on import, in the order they are written
_ID_TABLES = (
    ("hemi_lineages", "hemi_lineage_id"),
    ("skeletons", "skeleton_id"),
    ("synapses", "synapse_id"),
)


class SQLDatabase(SQLPredictionRuns, Database):
    """A :class:`Database` over a DB-API connection; subclasses supply the dialect hooks."""

    #: column types of the dialect
    ID_PK = "BIGINT PRIMARY KEY"
    INT = "BIGINT"
    FLOAT = "DOUBLE PRECISION"
    TEXT = "TEXT"

    # ---- dialect hooks ------------------------------------------------------------------------
    @abstractmethod
    def _transaction(self, write: bool) -> AbstractContextManager:
        """A context yielding a cursor inside one transaction (commit on success, else rollback)."""

    @abstractmethod
    def _insert_frame(self, cur, table: str, frame: pd.DataFrame) -> None:
        """Bulk-insert all rows of ``frame`` (columns named as in ``table``) in one operation."""

    @abstractmethod
    def _temp_table(self, cur, name: str, columns: dict[str, str], frame: pd.DataFrame) -> None:
        """Create temporary table ``name`` (column: type) filled with ``frame``, for this
        transaction only."""

    @abstractmethod
    def _run_table(self, run: str) -> str:
        """The quoted (maybe schema-qualified) table name holding run ``run``."""

    @abstractmethod
    def _prepare_run_storage(self, cur) -> None:
        """Create what run tables need around them (PostgreSQL: their schema)."""

    @abstractmethod
    def _upsert_predictions(self, cur, table: str, n_classes: int, frame: pd.DataFrame) -> None:
        """Insert or replace rows (synapse_id, p0..) of a run table in one set-based operation."""

    @abstractmethod
    def _is_unique_violation(self, error: Exception) -> bool: ...

    @abstractmethod
    def _table_names(self, cur) -> set[str]:
        """Names of the tables of the database (not of prediction runs)."""

    # ---- schema -------------------------------------------------------------------------------
    def _schema_statements(self) -> list[str]:
        i, f, t = self.INT, self.FLOAT, self.TEXT
        return [
            f"CREATE TABLE IF NOT EXISTS synapses (synapse_id {self.ID_PK}, z {f} NOT NULL, "
            f"y {f} NOT NULL, x {f} NOT NULL, skeleton_id {i}, brain_region {t}, "
            f"prepost {t}, confidence {f})",
            "CREATE INDEX IF NOT EXISTS synapses_skeleton ON synapses (skeleton_id)",
            "CREATE INDEX IF NOT EXISTS synapses_position ON synapses (z, y, x)",
            f"CREATE TABLE IF NOT EXISTS skeletons (skeleton_id {self.ID_PK}, "
            f"hemi_lineage_id {i}, nt_known {t} NOT NULL DEFAULT '')",
            "CREATE INDEX IF NOT EXISTS skeletons_hemi_lineage ON skeletons (hemi_lineage_id)",
            "CREATE INDEX IF NOT EXISTS skeletons_nt ON skeletons (nt_known)",
            f"CREATE TABLE IF NOT EXISTS hemi_lineages (hemi_lineage_id {self.ID_PK}, "
            f"hemi_lineage_name {t}, nt_guess {t} NOT NULL DEFAULT '')",
            "CREATE INDEX IF NOT EXISTS hemi_lineages_name ON hemi_lineages (hemi_lineage_name)",
            f"CREATE TABLE IF NOT EXISTS splits (name {t} PRIMARY KEY, meta {t} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS split_parts (split {t} NOT NULL, synapse_id {i} NOT NULL, "
            f"part {t} NOT NULL, PRIMARY KEY (split, synapse_id))",
            "CREATE INDEX IF NOT EXISTS split_parts_part ON split_parts (split, part)",
            "CREATE INDEX IF NOT EXISTS split_parts_synapse ON split_parts (synapse_id)",
            f"CREATE TABLE IF NOT EXISTS prediction_runs (run {t} PRIMARY KEY, "
            f"classes {t} NOT NULL, meta {t} NOT NULL)",
        ]

    def _create_schema(self) -> None:
        with self._transaction(write=True) as cur:
            for statement in self._schema_statements():
                cur.execute(statement)

    def _require_schema(self) -> None:
        """For opening without creating: refuse a database that lacks synister's tables."""
        with self._transaction(write=False) as cur:
            missing = [t for t in SCHEMA_TABLES if t not in self._table_names(cur)]
        if missing:
            raise DatabaseError(
                f"{public_url(self.url)} holds no synister database (no table "
                f"{', '.join(missing)}); nothing was changed"
            )

    def _execute(self, cur, sql: str, params: Sequence = ()):
        cur.execute(sql, tuple(params))
        return cur

    def _rows(self, cur, sql: str, params: Sequence = ()) -> list[tuple]:
        return self._execute(cur, sql, params).fetchall()

    def _count(self, cur, table: str) -> int:
        return int(self._rows(cur, f"SELECT COUNT(*) FROM {table}")[0][0])

    # ---- writing ------------------------------------------------------------------------------
    def import_records(self, synapses=None, skeletons=None, hemi_lineages=None) -> None:
        frames = {
            "hemi_lineages": None if hemi_lineages is None else check_hemi_lineages(hemi_lineages),
            "skeletons": None if skeletons is None else check_skeletons(skeletons),
            "synapses": None if synapses is None else check_synapses(synapses),
        }
        try:
            with self._transaction(write=True) as cur:
                for table, _ in _ID_TABLES:
                    if frames[table] is not None and len(frames[table]):
                        self._insert_frame(cur, table, frames[table])
        except Exception as error:
            if not self._is_unique_violation(error):
                raise
            raise self._stored_duplicates(frames) from None

    def _stored_duplicates(self, frames: dict[str, pd.DataFrame | None]) -> DatabaseError:
        """The :class:`DuplicateIdError` for input ids that are already stored."""
        with self._transaction(write=False) as cur:
            for table, column in _ID_TABLES:
                frame = frames[table]
                if frame is None or not len(frame):
                    continue
                ids = pd.DataFrame({"v": frame[column].to_numpy()})
                self._temp_table(cur, f"new_{table}", {"v": self.INT}, ids)
                rows = self._rows(
                    cur,
                    f"SELECT n.v FROM new_{table} n JOIN {table} t ON t.{column} = n.v "
                    "ORDER BY n.v",
                )
                if rows:
                    return duplicate_id_error(table, [r[0] for r in rows], "already stored")
        return DatabaseError("import failed on a uniqueness constraint; nothing was imported")

    def write_split(self, name: str, parts: pd.DataFrame, meta: dict | None = None) -> None:
        rows = check_split_parts(name, parts)
        rows.insert(0, "split", name)
        meta_text = json.dumps(meta or {})
        with self._transaction(write=True) as cur:
            if self._rows(cur, "SELECT 1 FROM splits WHERE name = ?", [name]):
                raise split_exists(name)
            self._execute(cur, "INSERT INTO splits (name, meta) VALUES (?, ?)", [name, meta_text])
            if len(rows):
                self._insert_frame(cur, "split_parts", rows)
            unknown = self._rows(
                cur,
                "SELECT p.synapse_id FROM split_parts p LEFT JOIN synapses s "
                "ON s.synapse_id = p.synapse_id WHERE p.split = ? AND s.synapse_id IS NULL "
                "ORDER BY p.synapse_id",
                [name],
            )
            if unknown:
                raise DatabaseError(
                    f"split {name!r}: synapse id(s) not stored: {ids_text(r[0] for r in unknown)}"
                )

    def remove_split(self, name: str) -> None:
        with self._transaction(write=True) as cur:
            if not self._rows(cur, "SELECT 1 FROM splits WHERE name = ?", [name]):
                raise UnknownSplit(f"no split named {name!r}; stored: {sorted(self._names(cur))}")
            self._execute(cur, "DELETE FROM split_parts WHERE split = ?", [name])
            self._execute(cur, "DELETE FROM splits WHERE name = ?", [name])

    def _names(self, cur) -> list[str]:
        return [r[0] for r in self._rows(cur, "SELECT name FROM splits ORDER BY name")]

    def splits(self) -> dict[str, dict]:
        with self._transaction(write=False) as cur:
            rows = self._rows(cur, "SELECT name, meta FROM splits ORDER BY name")
        return {name: json.loads(meta) for name, meta in rows}

    # ---- reading ------------------------------------------------------------------------------
    def _skeleton_conditions(
        self, cur, alias: str, skeleton_ids, nts, hemi_lineage_ids, hemi_lineage_names
    ) -> tuple[list[str], list]:
        """WHERE terms (and their parameters) over a skeleton row ``alias`` for the filters."""
        conditions, params = [], []
        if skeleton_ids is not None:
            self._id_filter(cur, "f_skeleton_ids", skeleton_ids)
            conditions.append(f"{alias}.skeleton_id IN (SELECT v FROM f_skeleton_ids)")
        if nts is not None:
            conditions.append(f"{alias}.nt_known = ?")
            params.append(set_key(canonical_set(nts)))
        if hemi_lineage_ids is not None:
            self._id_filter(cur, "f_hemi_lineage_ids", hemi_lineage_ids)
            conditions.append(f"{alias}.hemi_lineage_id IN (SELECT v FROM f_hemi_lineage_ids)")
        if hemi_lineage_names is not None:
            names = (
                [hemi_lineage_names] if isinstance(hemi_lineage_names, str) else hemi_lineage_names
            )
            frame = pd.DataFrame({"v": pd.Series([str(n) for n in names], dtype=object)})
            self._temp_table(cur, "f_hemi_lineage_names", {"v": self.TEXT}, frame)
            conditions.append(
                f"{alias}.hemi_lineage_id IN (SELECT h.hemi_lineage_id FROM hemi_lineages h "
                "WHERE h.hemi_lineage_name IN (SELECT v FROM f_hemi_lineage_names))"
            )
        return conditions, params

    def _id_filter(self, cur, name: str, ids: Iterable[int]) -> None:
        values = np.unique(np.asarray(list(ids), dtype=np.int64))
        self._temp_table(cur, name, {"v": self.INT}, pd.DataFrame({"v": values}))

    def _require_split(self, cur, split: str) -> None:
        if not self._rows(cur, "SELECT 1 FROM splits WHERE name = ?", [split]):
            raise UnknownSplit(f"no split named {split!r}; stored: {self._names(cur)}")

    def synapses(
        self,
        *,
        synapse_ids=None,
        skeleton_ids=None,
        nts=None,
        positions_nm=None,
        hemi_lineage_ids=None,
        hemi_lineage_names=None,
        split=None,
        part=None,
    ) -> pd.DataFrame:
        parts = check_parts_filter(split, part)
        positions = None if positions_nm is None else check_positions(positions_nm)
        with self._transaction(write=False) as cur:
            sql = f"SELECT {_SYNAPSE_SELECT}"
            joins = " FROM synapses s LEFT JOIN skeletons k ON k.skeleton_id = s.skeleton_id"
            params: list = []
            if split is not None:
                self._require_split(cur, split)
                sql += ", p.part"
                joins += " JOIN split_parts p ON p.synapse_id = s.synapse_id AND p.split = ?"
                params.append(split)
            skeleton_terms, skeleton_params = self._skeleton_conditions(
                cur, "k", None, nts, hemi_lineage_ids, hemi_lineage_names
            )
            conditions = skeleton_terms
            params += skeleton_params
            if skeleton_ids is not None:
                self._id_filter(cur, "f_skeleton_ids", skeleton_ids)
                conditions.append("s.skeleton_id IN (SELECT v FROM f_skeleton_ids)")
            if synapse_ids is not None:
                self._id_filter(cur, "f_synapse_ids", synapse_ids)
                conditions.append("s.synapse_id IN (SELECT v FROM f_synapse_ids)")
            if positions is not None:
                frame = pd.DataFrame(positions, columns=["z", "y", "x"])
                floats = {"z": self.FLOAT, "y": self.FLOAT, "x": self.FLOAT}
                self._temp_table(cur, "f_positions", floats, frame)
                conditions.append(
                    "EXISTS (SELECT 1 FROM f_positions q WHERE q.z = s.z AND q.y = s.y "
                    "AND q.x = s.x)"
                )
            if parts is not None:
                conditions.append(f"p.part IN ({', '.join('?' for _ in parts)})")
                params += parts
            where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
            cur = self._execute(cur, sql + joins + where + " ORDER BY s.synapse_id", params)
            rows = cur.fetchall()
        columns = _SYNAPSE_OUT + (["part"] if split is not None else [])
        return finish_synapses(pd.DataFrame(rows, columns=columns), with_part=split is not None)

    def skeletons(
        self,
        *,
        skeleton_ids=None,
        nts=None,
        hemi_lineage_ids=None,
        hemi_lineage_names=None,
        split=None,
        part=None,
    ) -> pd.DataFrame:
        parts = check_parts_filter(split, part)
        with self._transaction(write=False) as cur:
            conditions, params = self._skeleton_conditions(
                cur, "k", skeleton_ids, nts, hemi_lineage_ids, hemi_lineage_names
            )
            if split is not None:
                self._require_split(cur, split)
                term = (
                    "k.skeleton_id IN (SELECT s.skeleton_id FROM split_parts p JOIN synapses s "
                    "ON s.synapse_id = p.synapse_id WHERE p.split = ?"
                )
                params.append(split)
                if parts is not None:
                    term += f" AND p.part IN ({', '.join('?' for _ in parts)})"
                    params += parts
                conditions.append(term + ")")
            where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
            rows = self._rows(
                cur,
                "SELECT k.skeleton_id, k.hemi_lineage_id, k.nt_known FROM skeletons k"
                + where
                + " ORDER BY k.skeleton_id",
                params,
            )
        return finish_skeletons(
            pd.DataFrame(rows, columns=["skeleton_id", "hemi_lineage_id", "nt_known"])
        )

    def hemi_lineages(self) -> pd.DataFrame:
        with self._transaction(write=False) as cur:
            rows = self._rows(
                cur,
                "SELECT hemi_lineage_id, hemi_lineage_name, nt_guess FROM hemi_lineages "
                "ORDER BY hemi_lineage_id",
            )
        columns = ["hemi_lineage_id", "hemi_lineage_name", "nt_guess"]
        return finish_hemi_lineages(pd.DataFrame(rows, columns=columns))

    def validate(self) -> ValidationReport:
        """Duplicates, synapses without a stored skeleton (none given, or one that is not stored)
        and skeletons whose given hemilineage is not stored (an unknown hemilineage is allowed)."""
        with self._transaction(write=False) as cur:
            duplicate_ids = self._rows(
                cur,
                "SELECT synapse_id FROM synapses GROUP BY synapse_id HAVING COUNT(*) > 1 "
                "ORDER BY synapse_id",
            )
            duplicate_locations = self._rows(
                cur,
                "SELECT z, y, x FROM synapses GROUP BY z, y, x HAVING COUNT(*) > 1 "
                "ORDER BY z, y, x",
            )
            orphan_synapses = self._rows(
                cur,
                "SELECT s.synapse_id FROM synapses s WHERE s.skeleton_id IS NULL OR NOT EXISTS "
                "(SELECT 1 FROM skeletons k WHERE k.skeleton_id = s.skeleton_id) "
                "ORDER BY s.synapse_id",
            )
            orphan_skeletons = self._rows(
                cur,
                "SELECT k.skeleton_id FROM skeletons k WHERE k.hemi_lineage_id IS NOT NULL AND "
                "NOT EXISTS (SELECT 1 FROM hemi_lineages h "
                "WHERE h.hemi_lineage_id = k.hemi_lineage_id) ORDER BY k.skeleton_id",
            )
        return ValidationReport(
            duplicate_synapse_ids=[int(r[0]) for r in duplicate_ids],
            duplicate_locations=[(float(z), float(y), float(x)) for z, y, x in duplicate_locations],
            synapses_without_skeleton=[int(r[0]) for r in orphan_synapses],
            skeletons_without_hemi_lineage=[int(r[0]) for r in orphan_skeletons],
        )

    def stats(self) -> dict:
        with self._transaction(write=False) as cur:
            counts = {
                table: self._count(cur, table)
                for table in ("synapses", "skeletons", "hemi_lineages", "splits", "prediction_runs")
            }
            skeletons_per_set = self._rows(
                cur, "SELECT nt_known, COUNT(*) FROM skeletons GROUP BY nt_known"
            )
            synapses_per_set = self._rows(
                cur,
                "SELECT COALESCE(k.nt_known, ''), COUNT(*) FROM synapses s LEFT JOIN skeletons k "
                "ON k.skeleton_id = s.skeleton_id GROUP BY COALESCE(k.nt_known, '')",
            )
        per_set: dict[str, dict[str, int]] = {}
        for kind, rows in (("skeletons", skeletons_per_set), ("synapses", synapses_per_set)):
            for key, count in rows:
                entry = per_set.setdefault(stats_key(key), {"skeletons": 0, "synapses": 0})
                entry[kind] += int(count)
        return {**counts, "transmitters": dict(sorted(per_set.items()))}
