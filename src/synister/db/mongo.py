"""MongoDB backend on the ORIGINAL synister schema, so databases made by funkelab/synister open.

URL: ``mongodb://[user:password@]host:port/<db>``. Layout (as the original wrote it):

- ``<db>.synapses``: ``synapse_id, x, y, z`` (nm), ``skeleton_id``, ``prepost``,
  ``brain_region``, and ``splits``, a sub-document ``{split name: "train" | "validation" |
  "test"}``; synister adds ``confidence``.
- ``<db>.skeletons``: ``skeleton_id, hemi_lineage_id, nt_known`` (sorted list of lower-case
  transmitter names; the original wrote ``["none"]`` or ``["unknown"]`` for unknown, read here
  as the empty set, and synister writes ``[]``).
- ``<db>.hemi_lineages``: ``hemi_lineage_id, hemi_lineage_name, nt_guess`` (list).
- ``<db>_predictions.<run>``: one document ``{synapse_id, prediction: [p, ...]}`` per synapse.

Additions that old readers ignore: ``<db>.split_meta`` (``{name, meta}``) keeps a split's meta
(a split found only on synapse documents has meta ``{}``) and ``<db>.prediction_runs``
(``{run, classes, meta}``) keeps a run's class order. A run made by the original code has no
registry entry: it is listed and readable, its columns named ``prob_0, prob_1, ...``, and
documents still holding ``prediction: None`` (initialised but not predicted) are skipped. Its
class order (the ``synapse_types`` of its ``train_config.ini``, then ``neither`` with
``neither_class``) is nowhere in the database, so it is evaluable once
:meth:`MongoDatabase.register_prediction_run` (``synister db register-run``) has recorded it;
synister never adds predictions to such a run.

Without a replica set MongoDB has no multi-document transactions, so this backend checks
everything that can fail (duplicate ids, unknown synapses) before writing, and a prediction
batch is one ``bulk_write`` of upserts (``ReplaceOne(..., upsert=True)``), so a resumed run, or
one overlapping a writer left over from a crash, replaces a synapse's prediction instead of
tripping over the unique index. Every bulk operation is one request per
:data:`~synister.db.mongo_chunks.CHUNK` ids, never one per document, and no query names more
ids than that (:mod:`synister.db.mongo_chunks`). Prediction runs: :mod:`synister.db.mongo_runs`.

Verified only against ``mongomock`` (pass ``client=mongomock.MongoClient()``), not against a
MongoDB server.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ..nt import UNKNOWN_LABELS, canonical_set
from .base import (
    Database,
    DatabaseError,
    UnknownSplit,
    ValidationReport,
    split_exists,
)
from .mongo_chunks import chunks, distinct, find_in, plain
from .mongo_runs import (  # noqa: F401 - importable from here too
    ORIGINAL_ORIGIN,
    RUN_REGISTRY,
    MongoPredictionRuns,
    OriginalRunWithoutClasses,
)
from .records import (
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
    nt_set,
    stats_key,
)
from .urls import hide_secrets, public_url

SYNAPSE_FIELDS = ["synapse_id", "z", "y", "x", "skeleton_id", "brain_region", "prepost"]
SPLIT_META = "split_meta"


def _check_split_name(name: str) -> None:
    if "." in name or name.startswith("$"):
        raise DatabaseError(
            f"split name {name!r} cannot be stored in MongoDB: it must not contain '.' nor "
            "start with '$' (splits are fields of the synapse documents)"
        )


class MongoDatabase(MongoPredictionRuns, Database):
    """The original synister MongoDB layout behind the :class:`Database` interface."""

    def __init__(self, url: str, client=None, create: bool = True):
        """Connect (``client``: an existing client, e.g. ``mongomock.MongoClient()``).

        ``create`` makes the original's indexes (and so the database) where missing;
        ``create=False``, for read-only commands, refuses a database that does not exist and
        writes nothing.
        """
        from pymongo import ASCENDING, MongoClient, uri_parser
        from pymongo.errors import PyMongoError

        self.url = url
        try:
            name = uri_parser.parse_uri(url)["database"]
        except Exception as error:  # pymongo raises several types for bad URLs
            raise DatabaseError(
                f"bad MongoDB URL {public_url(url)!r}: {hide_secrets(error, url)}"
            ) from None
        if not name:
            raise DatabaseError(
                f"MongoDB URL {public_url(url)!r} names no database: use mongodb://host/<db>"
            )
        try:
            self._client = client if client is not None else MongoClient(url)
        except Exception as error:  # bad options raise ConfigurationError, ValueError, ...
            raise DatabaseError(
                f"cannot connect to MongoDB at {public_url(url)}: {hide_secrets(error, url)}"
            ) from None
        self._owns_client = client is None
        self._db = self._client[name]
        self._predictions_db = self._client[f"{name}_predictions"]
        try:
            if not create:
                if "synapses" not in self._db.list_collection_names():
                    raise DatabaseError(
                        f"no synister database {name!r} at {public_url(url)} (it has no "
                        "synapses collection): check the URL; nothing was created"
                    )
                return
            # the original's indexes (not unique, so old databases with duplicates still open)
            self._db.synapses.create_index([("z", ASCENDING), ("y", ASCENDING), ("x", ASCENDING)])
            self._db.synapses.create_index("synapse_id")
            self._db.synapses.create_index("skeleton_id")
            self._db.skeletons.create_index("skeleton_id")
            self._db.skeletons.create_index("hemi_lineage_id")
            self._db.hemi_lineages.create_index("hemi_lineage_id")
        except (PyMongoError, DatabaseError) as error:  # e.g. no server reachable
            self.close()
            if isinstance(error, DatabaseError):
                raise
            raise DatabaseError(
                f"cannot open MongoDB database {name!r} at {public_url(url)}: "
                f"{hide_secrets(error, url)}"
            ) from None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    # ---- writing ------------------------------------------------------------------------------
    def import_records(self, synapses=None, skeletons=None, hemi_lineages=None) -> None:
        """Check all input against the stored ids, then insert (see the module note on
        transactions: a failure of the server midway removes what this call inserted)."""
        frames = [
            ("hemi_lineages", "hemi_lineage_id", hemi_lineages, check_hemi_lineages),
            ("skeletons", "skeleton_id", skeletons, check_skeletons),
            ("synapses", "synapse_id", synapses, check_synapses),
        ]
        checked = [(t, c, check(f)) for t, c, f, check in frames if f is not None]
        for table, column, frame in checked:
            ids = frame[column].tolist()
            stored = set()
            for chunk in chunks(ids):
                stored |= set(self._db[table].distinct(column, {column: {"$in": chunk}}))
            if stored:
                raise duplicate_id_error(table, stored, "already stored")
        done: list[tuple[str, str, list[int]]] = []
        try:
            for table, column, frame in checked:
                documents = self._documents(table, frame)
                for chunk in chunks(documents):
                    self._db[table].insert_many(chunk, ordered=False)
                done.append((table, column, frame[column].tolist()))
        except Exception:
            for table, column, ids in done:
                for chunk in chunks(ids):
                    self._db[table].delete_many({column: {"$in": chunk}})
            if checked and len(done) < len(checked):
                table, column, frame = checked[len(done)]
                for chunk in chunks(frame[column].tolist()):
                    self._db[table].delete_many({column: {"$in": chunk}})
            raise

    @staticmethod
    def _documents(table: str, frame: pd.DataFrame) -> list[dict]:
        records = frame.astype(object).to_dict("records")
        documents = []
        for record in records:
            document = {k: plain(v) for k, v in record.items()}
            if table == "skeletons":
                document["nt_known"] = sorted(nt_set(document["nt_known"]))
            elif table == "hemi_lineages":
                document["nt_guess"] = sorted(nt_set(document["nt_guess"]))
            documents.append(document)
        return documents

    def write_split(self, name: str, parts: pd.DataFrame, meta: dict | None = None) -> None:
        rows = check_split_parts(name, parts)
        _check_split_name(name)
        if name in self.splits():
            raise split_exists(name)
        ids = rows.synapse_id.tolist()
        stored = set()
        for chunk in chunks(ids):
            stored |= set(self._db.synapses.distinct("synapse_id", {"synapse_id": {"$in": chunk}}))
        unknown = sorted(set(ids) - stored)
        if unknown:
            raise DatabaseError(f"split {name!r}: synapse id(s) not stored: {ids_text(unknown)}")
        try:
            self._db[SPLIT_META].insert_one({"name": name, "meta": meta or {}})
            for part, group in rows.groupby("part"):
                for chunk in chunks(group.synapse_id.tolist()):
                    self._db.synapses.update_many(
                        {"synapse_id": {"$in": chunk}}, {"$set": {f"splits.{name}": part}}
                    )
        except Exception:
            self._erase_split(name)
            raise

    def _erase_split(self, name: str) -> None:
        self._db.synapses.update_many(
            {f"splits.{name}": {"$exists": True}}, {"$unset": {f"splits.{name}": ""}}
        )
        self._db[SPLIT_META].delete_many({"name": name})

    def remove_split(self, name: str) -> None:
        if name not in self.splits():
            raise UnknownSplit(f"no split named {name!r}; stored: {sorted(self.splits())}")
        self._erase_split(name)

    def splits(self) -> dict[str, dict]:
        """Splits with meta, plus those the original wrote only onto synapse documents."""
        on_synapses = self._db.synapses.aggregate(
            [
                {"$match": {"splits": {"$type": "object"}}},
                {"$project": {"names": {"$objectToArray": "$splits"}}},
                {"$unwind": "$names"},
                {"$group": {"_id": "$names.k"}},
            ]
        )
        found = {doc["_id"]: {} for doc in on_synapses}
        for doc in self._db[SPLIT_META].find({}, {"_id": 0}):
            found[doc["name"]] = doc.get("meta") or {}
        return dict(sorted(found.items()))

    # ---- reading ------------------------------------------------------------------------------
    def _nts_query(self, nts) -> dict | None:
        """The skeleton query term for an exact transmitter set (None: no filter)."""
        if nts is None:
            return None
        wanted = sorted(canonical_set(nts))
        if wanted:
            return {"nt_known": {"$all": wanted, "$size": len(wanted)}}
        unknown = [{"nt_known": [label]} for label in sorted(UNKNOWN_LABELS)]
        return {
            "$or": [
                {"nt_known": {"$exists": False}},
                {"nt_known": None},
                {"nt_known": {"$size": 0}},
                *unknown,
            ]
        }

    def _skeleton_frame(
        self, skeleton_ids=None, nts=None, hemi_lineage_ids=None, hemi_lineage_names=None
    ) -> pd.DataFrame:
        """Skeleton documents matching all given filters; id lists are queried in chunks."""
        query = self._nts_query(nts)
        lineages = None if hemi_lineage_ids is None else {int(i) for i in hemi_lineage_ids}
        if hemi_lineage_names is not None:
            names = (
                [hemi_lineage_names] if isinstance(hemi_lineage_names, str) else hemi_lineage_names
            )
            docs = find_in(
                self._db.hemi_lineages,
                "hemi_lineage_name",
                [str(n) for n in names],
                None,
                {"_id": 0, "hemi_lineage_id": 1},
            )
            named = {int(d["hemi_lineage_id"]) for d in docs}
            lineages = named if lineages is None else lineages & named
        projection = {"_id": 0, "skeleton_id": 1, "hemi_lineage_id": 1, "nt_known": 1}
        skeletons = self._db.skeletons
        if skeleton_ids is not None:
            ids = [int(i) for i in skeleton_ids]
            docs = find_in(skeletons, "skeleton_id", ids, query, projection)
        elif lineages is not None:
            docs = find_in(skeletons, "hemi_lineage_id", lineages, query, projection)
        else:
            docs = list(skeletons.find(query or {}, projection))
        frame = pd.DataFrame(docs, columns=["skeleton_id", "hemi_lineage_id", "nt_known"])
        if lineages is not None and skeleton_ids is not None:
            frame = frame.loc[frame.hemi_lineage_id.isin(lineages)]
        return frame

    def _require_split(self, split: str) -> None:
        if split not in self.splits():
            raise UnknownSplit(f"no split named {split!r}; stored: {sorted(self.splits())}")

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
        wanted_skeletons = None if skeleton_ids is None else {int(i) for i in skeleton_ids}
        if nts is not None or hemi_lineage_ids is not None or hemi_lineage_names is not None:
            found = self._skeleton_frame(
                wanted_skeletons, nts, hemi_lineage_ids, hemi_lineage_names
            )
            wanted_skeletons = {int(i) for i in found.skeleton_id}
        query = None
        if split is not None:
            self._require_split(split)
            query = {f"splits.{split}": {"$in": list(parts or ("train", "validation", "test"))}}
        projection = {"_id": 0, "confidence": 1, **{f: 1 for f in SYNAPSE_FIELDS}}
        if split is not None:
            projection[f"splits.{split}"] = 1
        # one id list drives the (chunked) query; the others filter its result here
        collection = self._db.synapses
        if synapse_ids is not None:
            ids = [int(i) for i in synapse_ids]
            docs = find_in(collection, "synapse_id", ids, query, projection)
        elif wanted_skeletons is not None:
            docs = find_in(collection, "skeleton_id", wanted_skeletons, query, projection)
        elif positions is not None:
            zs = {float(z) for z in positions[:, 0]}
            docs = find_in(collection, "z", zs, query, projection)
        else:
            docs = list(collection.find(query or {}, projection))
        frame = pd.DataFrame(docs, columns=[*SYNAPSE_FIELDS, "confidence", "splits"])
        frame = frame.drop_duplicates("synapse_id") if synapse_ids is not None else frame
        if split is not None:
            frame["part"] = [s.get(split) if isinstance(s, dict) else None for s in frame.splits]
        frame = frame.drop(columns="splits")
        frame["skeleton_id"] = pd.array(
            [None if pd.isna(v) else int(v) for v in frame.skeleton_id], dtype="Int64"
        )
        if wanted_skeletons is not None and synapse_ids is not None:
            frame = frame.loc[frame.skeleton_id.isin(wanted_skeletons).fillna(False).to_numpy()]
        if positions is not None and len(frame):
            wanted = pd.DataFrame(positions, columns=["z", "y", "x"]).drop_duplicates()
            frame = frame.astype({"z": "float64", "y": "float64", "x": "float64"})
            frame = frame.merge(wanted, on=["z", "y", "x"], how="inner")
        skeleton_ids_found = [int(i) for i in frame.skeleton_id.dropna().unique()]
        skeletons = self._skeleton_frame(skeleton_ids_found)
        skeletons = skeletons.drop_duplicates("skeleton_id")
        skeletons["skeleton_id"] = skeletons.skeleton_id.astype("Int64")
        frame = frame.merge(skeletons, on="skeleton_id", how="left")
        return finish_synapses(frame, with_part=split is not None)

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
        if split is not None:
            self._require_split(split)
            in_split = distinct(
                self._db.synapses,
                "skeleton_id",
                {f"splits.{split}": {"$in": list(parts or ("train", "validation", "test"))}},
            )
            in_split = {int(i) for i in in_split}
            if skeleton_ids is not None:
                in_split &= {int(i) for i in skeleton_ids}
            skeleton_ids = in_split
        frame = self._skeleton_frame(skeleton_ids, nts, hemi_lineage_ids, hemi_lineage_names)
        return finish_skeletons(frame)

    def hemi_lineages(self) -> pd.DataFrame:
        docs = self._db.hemi_lineages.find({}, {"_id": 0})
        columns = ["hemi_lineage_id", "hemi_lineage_name", "nt_guess"]
        return finish_hemi_lineages(pd.DataFrame(list(docs), columns=columns))

    def _all(self, table: str, fields: Iterable[str]) -> pd.DataFrame:
        fields = list(fields)
        docs = self._db[table].find({}, {"_id": 0, **{f: 1 for f in fields}})
        return pd.DataFrame(list(docs), columns=fields)

    def validate(self) -> ValidationReport:
        """As the SQL backends: duplicates, synapses without a stored skeleton, and skeletons
        whose given hemilineage is not stored."""
        synapses = self._all("synapses", ["synapse_id", "z", "y", "x", "skeleton_id"])
        skeletons = self._all("skeletons", ["skeleton_id", "hemi_lineage_id"])
        lineage_ids = set(distinct(self._db.hemi_lineages, "hemi_lineage_id"))
        ids = synapses.synapse_id
        locations = synapses[["z", "y", "x"]].astype("float64")
        repeated = locations[locations.duplicated()].drop_duplicates().sort_values(["z", "y", "x"])
        orphans = synapses[~synapses.skeleton_id.isin(set(skeletons.skeleton_id.dropna()))]
        lineage = skeletons.hemi_lineage_id
        lost = skeletons[lineage.notna() & ~lineage.isin(lineage_ids)]
        return ValidationReport(
            duplicate_synapse_ids=sorted(int(i) for i in ids[ids.duplicated()].unique()),
            duplicate_locations=[tuple(float(v) for v in row) for row in repeated.to_numpy()],
            synapses_without_skeleton=sorted(int(i) for i in orphans.synapse_id),
            skeletons_without_hemi_lineage=sorted(int(i) for i in lost.skeleton_id),
        )

    def stats(self) -> dict:
        synapses = self._all("synapses", ["skeleton_id"])
        skeletons = self._all("skeletons", ["skeleton_id", "nt_known"])
        skeletons["key"] = [stats_key(",".join(sorted(nt_set(v)))) for v in skeletons.nt_known]
        per_set: dict[str, dict[str, int]] = {}
        for key, count in skeletons.key.value_counts().items():
            per_set.setdefault(key, {"skeletons": 0, "synapses": 0})["skeletons"] = int(count)
        keys = skeletons.drop_duplicates("skeleton_id").set_index("skeleton_id").key
        synapse_keys = synapses.skeleton_id.map(keys).fillna(stats_key(""))
        for key, count in synapse_keys.value_counts().items():
            per_set.setdefault(key, {"skeletons": 0, "synapses": 0})["synapses"] = int(count)
        return {
            "synapses": len(synapses),
            "skeletons": len(skeletons),
            "hemi_lineages": self._db.hemi_lineages.count_documents({}),
            "splits": len(self.splits()),
            "prediction_runs": len(self.prediction_runs()),
            "transmitters": dict(sorted(per_set.items())),
        }
