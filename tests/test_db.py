"""One behavioural contract for every database backend (SQLite, PostgreSQL, MongoDB/mongomock).

PostgreSQL tests read their server from ``SYNISTER_TEST_POSTGRES_URL`` (start one with
``.ci/postgres.sh``); they skip without it, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from conftest import scratch_postgres

from synister.db import (
    DatabaseError,
    DuplicateIdError,
    PredictionRunExists,
    SplitExists,
    UnknownSplit,
    open_database,
)

# hemilineage 2 uses one of the original's "unknown" names; skeleton 13 points at a missing
# hemilineage; synapse 8 at a missing skeleton, synapse 9 at none; 7 and 8 share a location.
HEMI_LINEAGES = pd.DataFrame(
    {"hemi_lineage_id": [1, 2], "hemi_lineage_name": ["LB7", "NA"], "nt_guess": [["GABA"], None]}
)
SKELETONS = pd.DataFrame(
    {
        "skeleton_id": [10, 11, 12, 13],
        "hemi_lineage_id": pd.array([1, 1, 2, 99], dtype="Int64"),
        "nt_known": [["gaba"], ["OA", "gaba"], "ACh", []],
    }
)
BRAIN_REGIONS = ["MB", "MB", None, "LH", "LH", "LH", None, None, None]
PREPOST = ["pre", "pre", "pre", "post", None, "pre", "pre", "pre", "pre"]
SYNAPSES = pd.DataFrame(
    {
        "synapse_id": [1, 2, 3, 4, 5, 6, 7, 8, 9],
        "z": [0.0, 0.0, 0.0, 8.0, 8.0, 8.0, 16.0, 16.0, 24.0],
        "y": [0.0, 0.0, 8.0, 0.0, 8.0, 8.0, 0.0, 0.0, 0.0],
        "x": [0.0, 8.0, 0.0, 0.0, 0.0, 8.5, 0.0, 0.0, 0.0],
        "skeleton_id": pd.array([10, 10, 11, 11, 12, 12, 13, 77, None], dtype="Int64"),
        "brain_region": pd.Series(BRAIN_REGIONS, dtype=object),
        "prepost": pd.Series(PREPOST, dtype=object),
        "confidence": [0.9, 0.8, np.nan, 0.5, 0.5, 0.5, 0.1, 0.2, 0.3],
    }
)
SPLIT = pd.DataFrame(
    {
        "synapse_id": [1, 2, 3, 4, 5, 6],
        "part": ["train", "train", "validation", "test", "test", "train"],
    }
)


def ids(frame: pd.DataFrame, column: str = "synapse_id") -> list[int]:
    return frame[column].tolist()


class DatabaseContract:
    """Behaviour every backend must show; subclasses provide an empty ``db`` fixture."""

    @pytest.fixture
    def filled(self, db):
        db.import_records(synapses=SYNAPSES, skeletons=SKELETONS, hemi_lineages=HEMI_LINEAGES)
        db.write_split("s1", SPLIT, meta={"seed": 3, "fractions": [0.5, 0.25, 0.25]})
        return db

    # ---- import and read back ----------------------------------------------------------------
    def test_synapses_read_back_with_skeleton_columns(self, filled):
        got = filled.synapses()
        assert ids(got) == list(range(1, 10))
        assert got.synapse_id.dtype == np.int64 and got.z.dtype == np.float64
        np.testing.assert_array_equal(got[["z", "y", "x"]].to_numpy(), SYNAPSES[["z", "y", "x"]])
        assert got.skeleton_id.dtype == "Int64" and got.skeleton_id.isna().tolist()[-1]
        assert got.brain_region.tolist() == BRAIN_REGIONS
        assert got.prepost.tolist() == PREPOST
        np.testing.assert_array_equal(got.confidence.to_numpy(), SYNAPSES.confidence.to_numpy())
        assert got.nt_known[2] == frozenset({"gaba", "octopamine"})
        assert got.nt_known[4] == frozenset({"acetylcholine"})
        assert got.nt_known[7] == frozenset() and got.nt_known[8] == frozenset()
        assert got.hemi_lineage_id.tolist()[:7] == [1, 1, 1, 1, 2, 2, 99]
        assert "part" not in got.columns

    def test_skeletons_and_hemi_lineages_read_back(self, filled):
        skeletons = filled.skeletons()
        assert ids(skeletons, "skeleton_id") == [10, 11, 12, 13]
        assert skeletons.nt_known.tolist() == [
            frozenset({"gaba"}),
            frozenset({"gaba", "octopamine"}),
            frozenset({"acetylcholine"}),
            frozenset(),
        ]
        lineages = filled.hemi_lineages()
        assert ids(lineages, "hemi_lineage_id") == [1, 2]
        assert lineages.hemi_lineage_name.tolist() == ["LB7", None]  # "NA" means unknown
        assert lineages.nt_guess.tolist() == [frozenset({"gaba"}), frozenset()]

    # ---- filters -----------------------------------------------------------------------------
    def test_filter_by_ids(self, filled):
        assert ids(filled.synapses(synapse_ids=[9, 2, 2, 100])) == [2, 9]
        assert ids(filled.synapses(skeleton_ids=np.array([11, 12]))) == [3, 4, 5, 6]
        assert ids(filled.synapses(synapse_ids=[])) == []

    def test_filter_by_transmitter_set_is_order_free_and_exact(self, filled):
        assert ids(filled.synapses(nts=["OA", "GABA"])) == [3, 4]
        assert ids(filled.synapses(nts=("gaba", "octopamine"))) == [3, 4]
        assert ids(filled.synapses(nts=["gaba"])) == [1, 2]  # not the {gaba, octopamine} ones
        assert ids(filled.synapses(nts=[])) == [7]  # unknown set of a stored skeleton
        assert ids(filled.skeletons(nts=["octopamine", "gaba"]), "skeleton_id") == [11]

    def test_filter_by_positions(self, filled):
        positions_nm = np.array([[0.0, 8.0, 0.0], [8.0, 8.0, 8.5], [1.0, 1.0, 1.0]])
        assert ids(filled.synapses(positions_nm=positions_nm)) == [3, 6]
        assert ids(filled.synapses(positions_nm=[[16.0, 0.0, 0.0]])) == [7, 8]
        with pytest.raises(DatabaseError, match="z,y,x"):
            filled.synapses(positions_nm=[1.0, 2.0, 3.0])

    def test_filter_by_hemi_lineage(self, filled):
        assert ids(filled.synapses(hemi_lineage_ids=[1])) == [1, 2, 3, 4]
        assert ids(filled.synapses(hemi_lineage_names=["LB7"])) == [1, 2, 3, 4]
        assert ids(filled.synapses(hemi_lineage_names=["nope"])) == []
        assert ids(filled.skeletons(hemi_lineage_ids=[2, 99]), "skeleton_id") == [12, 13]
        assert ids(filled.skeletons(hemi_lineage_names=["LB7"]), "skeleton_id") == [10, 11]

    def test_filter_by_split_and_part(self, filled):
        got = filled.synapses(split="s1")
        assert ids(got) == [1, 2, 3, 4, 5, 6]
        assert got.part.tolist() == SPLIT.part.tolist()
        assert ids(filled.synapses(split="s1", part="test")) == [4, 5]
        assert ids(filled.synapses(split="s1", part=["validation", "test"])) == [3, 4, 5]
        assert ids(filled.skeletons(split="s1", part="validation"), "skeleton_id") == [11]
        assert ids(filled.skeletons(split="s1", part="test"), "skeleton_id") == [11, 12]
        with pytest.raises(DatabaseError, match="split"):
            filled.synapses(part="test")
        with pytest.raises(DatabaseError, match="part"):
            filled.synapses(split="s1", part="holdout")

    def test_filters_combine_as_and(self, filled):
        got = filled.synapses(skeleton_ids=[11, 12], split="s1", part="test", nts=["ACh"])
        assert ids(got) == [5]
        assert ids(filled.synapses(hemi_lineage_ids=[1], synapse_ids=[1, 5])) == [1]

    # ---- splits ------------------------------------------------------------------------------
    def test_splits_write_list_remove(self, filled):
        assert filled.splits() == {"s1": {"seed": 3, "fractions": [0.5, 0.25, 0.25]}}
        with pytest.raises(SplitExists, match="s1"):
            filled.write_split("s1", SPLIT)
        filled.write_split("s2", SPLIT.iloc[:2])
        assert sorted(filled.splits()) == ["s1", "s2"]
        filled.remove_split("s1")
        assert list(filled.splits()) == ["s2"]
        with pytest.raises(UnknownSplit, match="s1"):
            filled.synapses(split="s1")
        with pytest.raises(UnknownSplit, match="s1"):
            filled.remove_split("s1")
        assert ids(filled.synapses(split="s2")) == [1, 2]

    def test_split_with_unknown_synapse_or_part_is_not_stored(self, filled):
        bad_id = pd.DataFrame({"synapse_id": [1, 1000], "part": ["train", "test"]})
        with pytest.raises(DatabaseError, match="1000"):
            filled.write_split("s3", bad_id)
        bad_part = pd.DataFrame({"synapse_id": [1], "part": ["holdout"]})
        with pytest.raises(DatabaseError, match="holdout"):
            filled.write_split("s3", bad_part)
        assert list(filled.splits()) == ["s1"]

    # ---- transactional imports ---------------------------------------------------------------
    def test_duplicate_stored_id_raises_and_changes_nothing(self, filled):
        before = filled.stats()
        new_synapses = pd.DataFrame(
            {"synapse_id": [50, 3, 51], "z": [1.0] * 3, "y": [0.0] * 3, "x": [0.0] * 3}
        )
        new_skeletons = pd.DataFrame({"skeleton_id": [500], "nt_known": [["gaba"]]})
        with pytest.raises(DuplicateIdError, match="synapses") as caught:
            filled.import_records(synapses=new_synapses, skeletons=new_skeletons)
        assert caught.value.ids == [3] and caught.value.table == "synapses"
        assert "3" in str(caught.value)
        assert filled.stats() == before
        assert ids(filled.skeletons(skeleton_ids=[500]), "skeleton_id") == []
        with pytest.raises(DuplicateIdError, match="skeletons") as caught:
            filled.import_records(skeletons=SKELETONS.iloc[[0, 2]])
        assert caught.value.ids == [10, 12] and caught.value.table == "skeletons"
        assert filled.stats() == before

    def test_duplicate_within_input_raises_and_changes_nothing(self, db):
        synapses = pd.DataFrame(
            {"synapse_id": [5, 6, 5], "z": [0.0] * 3, "y": [0.0] * 3, "x": [1.0, 2, 3]}
        )
        with pytest.raises(DuplicateIdError) as caught:
            db.import_records(synapses=synapses, skeletons=SKELETONS)
        assert caught.value.ids == [5]
        assert db.stats()["synapses"] == 0 and db.stats()["skeletons"] == 0

    def test_bad_input_names_the_field(self, db):
        with pytest.raises(DatabaseError, match="skeleton_id 10.*nt_known"):
            db.import_records(
                skeletons=pd.DataFrame({"skeleton_id": [10], "nt_known": [["coffee"]]})
            )
        with pytest.raises(DatabaseError, match="missing column.*x"):
            db.import_records(synapses=pd.DataFrame({"synapse_id": [1], "z": [0.0], "y": [0.0]}))
        bad = SYNAPSES.iloc[:1].assign(prepost="both")
        with pytest.raises(DatabaseError, match="synapse_id 1.*prepost"):
            db.import_records(synapses=bad)
        assert db.stats()["synapses"] == 0

    def test_synapse_without_stored_skeleton_is_allowed(self, db):
        db.import_records(synapses=SYNAPSES.iloc[:2])
        assert ids(db.synapses()) == [1, 2]
        db.import_records(skeletons=SKELETONS.iloc[:1])
        assert db.synapses().nt_known.tolist() == [frozenset({"gaba"})] * 2

    # ---- validate and stats ------------------------------------------------------------------
    def test_validate_reports_findings(self, filled):
        report = filled.validate()
        assert not report.ok
        assert report.duplicate_synapse_ids == []
        assert report.duplicate_locations == [(16.0, 0.0, 0.0)]
        assert report.synapses_without_skeleton == [8, 9]
        assert report.skeletons_without_hemi_lineage == [13]

    def test_validate_clean_database(self, db):
        db.import_records(
            synapses=SYNAPSES.iloc[:6], skeletons=SKELETONS.iloc[:3], hemi_lineages=HEMI_LINEAGES
        )
        assert db.validate().ok

    def test_stats(self, filled):
        filled.create_prediction_run("r", ["gaba"])
        stats = filled.stats()
        assert json.loads(json.dumps(stats)) == stats
        assert {
            k: stats[k]
            for k in ("synapses", "skeletons", "hemi_lineages", "splits", "prediction_runs")
        } == {
            "synapses": 9,
            "skeletons": 4,
            "hemi_lineages": 2,
            "splits": 1,
            "prediction_runs": 1,
        }
        assert stats["transmitters"] == {
            "acetylcholine": {"skeletons": 1, "synapses": 2},
            "gaba": {"skeletons": 1, "synapses": 2},
            "gaba,octopamine": {"skeletons": 1, "synapses": 2},
            "unknown": {"skeletons": 1, "synapses": 3},
        }

    # ---- prediction runs ---------------------------------------------------------------------
    def test_prediction_run_lifecycle(self, filled):
        classes = ["gaba", "acetylcholine", "glutamate"]
        filled.create_prediction_run("vgg_t1_p1", classes, meta={"checkpoint": 1000})
        assert filled.open_prediction_run("vgg_t1_p1") == (classes, {"checkpoint": 1000})
        assert filled.prediction_runs() == ["vgg_t1_p1"]
        with pytest.raises(PredictionRunExists):
            filled.create_prediction_run("vgg_t1_p1", classes)
        probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
        filled.write_predictions("vgg_t1_p1", np.array([4, 1, 5]), probs)
        # a resumed run writes synapse 5 again: it is replaced, not doubled
        filled.write_predictions("vgg_t1_p1", [5, 6], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
        got = filled.predictions("vgg_t1_p1")
        assert list(got.columns) == [
            "synapse_id",
            "prob_gaba",
            "prob_acetylcholine",
            "prob_glutamate",
        ]
        assert ids(got) == [1, 4, 5, 6]
        np.testing.assert_allclose(
            got.iloc[:, 1:].to_numpy(), [probs[1], probs[0], [0, 0, 1], [1, 0, 0]]
        )
        predicted = filled.predicted_synapse_ids("vgg_t1_p1")
        assert predicted.dtype == np.int64 and predicted.tolist() == [1, 4, 5, 6]

        filled.create_prediction_run("vgg_t1_p1", ["gaba", "dopamine"], overwrite=True)
        assert filled.open_prediction_run("vgg_t1_p1")[0] == ["gaba", "dopamine"]
        assert filled.predicted_synapse_ids("vgg_t1_p1").tolist() == []
        filled.drop_prediction_run("vgg_t1_p1")
        assert filled.prediction_runs() == []
        with pytest.raises(KeyError):
            filled.open_prediction_run("vgg_t1_p1")

    def test_prediction_batch_checks(self, filled):
        filled.create_prediction_run("r", ["gaba", "glutamate"])
        with pytest.raises(DatabaseError, match=r"\(2, 2\)"):
            filled.write_predictions("r", [1, 2], [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
        with pytest.raises(KeyError):
            filled.write_predictions("absent", [1], [[1.0, 0.0]])
        with pytest.raises(DatabaseError, match="run name"):
            filled.create_prediction_run("bad name!", ["gaba"])
        filled.write_predictions("r", [2, 2], [[1.0, 0.0], [0.25, 0.75]])  # last one wins
        np.testing.assert_allclose(filled.predictions("r").iloc[:, 1:].to_numpy(), [[0.25, 0.75]])

    def test_original_unknown_transmitter_lists_read_as_unknown(self, db):
        """The original database wrote ["none"] (or ["unknown"]) for "no known transmitter"."""
        skeletons = pd.DataFrame(
            {"skeleton_id": [1, 2, 3, 4], "nt_known": [["none"], ["UNKNOWN"], "none", ["gaba"]]}
        )
        db.import_records(skeletons=skeletons)
        assert db.skeletons().nt_known.tolist() == [frozenset()] * 3 + [frozenset({"gaba"})]
        assert ids(db.skeletons(nts=[]), "skeleton_id") == [1, 2, 3]
        assert ids(db.skeletons(nts=["none"]), "skeleton_id") == [1, 2, 3]

    # ---- opening without creating, and secrets --------------------------------------------
    def test_read_only_open_of_a_missing_database_creates_nothing(self, missing):
        open_read_only, exists, named = missing
        with pytest.raises(DatabaseError, match=named):
            open_read_only()
        assert not exists()

    def test_read_only_open_reads_what_is_stored(self, filled, reopen):
        with reopen(create=False) as again:
            assert again.stats() == filled.stats()
            assert ids(again.synapses(split="s1", part="test")) == [4, 5]

    def test_messages_never_show_the_password(self, filled):
        from synister.db import public_url

        secret = url_password(filled.url)
        messages = []
        for action in (
            lambda: filled.open_prediction_run("absent"),
            lambda: filled.drop_prediction_run("absent"),
            lambda: filled.predictions("absent"),
            lambda: filled.remove_split("absent"),
            lambda: filled.write_split("s1", SPLIT),
        ):
            with pytest.raises((KeyError, DatabaseError)) as caught:
                action()
            messages.append(str(caught.value))
        assert any(public_url(filled.url) in m for m in messages)
        if secret:
            assert not [m for m in messages if secret in m]


class TestSQLite(DatabaseContract):
    @pytest.fixture
    def db(self, tmp_path):
        with open_database(f"sqlite:///{tmp_path / 'new' / 'synister.db'}") as database:
            yield database

    @pytest.fixture
    def reopen(self, db):
        return lambda create: open_database(db.url, create=create)

    @pytest.fixture
    def missing(self, tmp_path):
        path = tmp_path / "typo" / "synistr.db"
        return (
            lambda: open_database(f"sqlite:///{path}", create=False),
            lambda: (tmp_path / "typo").exists(),
            str(path),
        )

    def test_read_only_open_refuses_a_file_without_synister_tables(self, tmp_path):
        path = tmp_path / "other.db"
        sqlite3.connect(path).close()  # an empty SQLite file, e.g. made by another tool
        with pytest.raises(DatabaseError, match="no synister database.*synapses"):
            open_database(f"sqlite:///{path}", create=False)
        with sqlite3.connect(path) as raw:
            assert raw.execute("SELECT name FROM sqlite_master").fetchall() == []

    def test_file_persists_and_runs_are_tables(self, tmp_path):
        path = tmp_path / "a.db"
        with open_database(f"sqlite:///{path}") as db:
            db.import_records(synapses=SYNAPSES.iloc[:3])
            db.create_prediction_run("vgg_t1_p1", ["gaba"])
            db.write_predictions("vgg_t1_p1", [1], [[0.5]])
        with open_database(f"sqlite:///{path}") as db:
            assert ids(db.synapses()) == [1, 2, 3]
        with sqlite3.connect(path) as raw:
            assert raw.execute('SELECT synapse_id, p0 FROM "predictions.vgg_t1_p1"').fetchall() == [
                (1, 0.5)
            ]


@pytest.mark.postgres
class TestPostgres(DatabaseContract):
    @pytest.fixture
    def db(self):
        with scratch_postgres() as url:
            with open_database(url) as database:
                yield database

    @pytest.fixture
    def reopen(self, db):
        return lambda create: open_database(db.url, create=create)

    @pytest.fixture
    def missing(self):
        """A database that exists on the server but holds no synister tables."""
        import psycopg

        with scratch_postgres() as url:

            def tables() -> bool:
                with psycopg.connect(url) as conn:
                    return bool(
                        conn.execute(
                            "SELECT 1 FROM information_schema.tables WHERE table_schema = 'public'"
                        ).fetchall()
                    )

            yield (
                lambda: open_database(url, create=False),
                tables,
                "no synister database",
            )

    def test_connection_errors_never_show_the_password(self):
        for url in (
            "postgresql://synister:pw-in-userinfo@127.0.0.1:1/nowhere",
            "postgresql://synister@127.0.0.1:1/nowhere?password=pw-in-query&sslmode=disable",
        ):
            with pytest.raises(DatabaseError) as caught:
                open_database(url, create=False)
            assert "pw-in" not in str(caught.value) and "127.0.0.1" in str(caught.value)

    def test_runs_live_in_the_predictions_schema(self, db):
        db.create_prediction_run("vgg_t1_p1", ["gaba"])
        db.write_predictions("vgg_t1_p1", [1], [[0.5]])
        schema = f"{db._connection.info.dbname}_predictions"
        row = db._connection.execute(
            f'SELECT synapse_id, p0 FROM "{schema}"."vgg_t1_p1"'
        ).fetchall()
        assert row == [(1, 0.5)]
        with pytest.raises(DatabaseError, match="63"):
            db.create_prediction_run("r" * 64, ["gaba"])


def url_password(url: str) -> str | None:
    """The password a test URL carries (userinfo or ``password=`` parameter), independently of
    synister's own parsing."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    return parts.password or (parse_qs(parts.query).get("password") or [None])[0]


def _checked(method):
    """A mongomock Collection method that fails on a ``$in`` of more ids (numbers) than the
    current chunk."""
    from synister.db import mongo_chunks

    def longest_in(value) -> int:
        if isinstance(value, dict):
            values = value.get("$in")
            numbers = isinstance(values, list) and all(isinstance(v, int | float) for v in values)
            here = len(values) if numbers else 0
            return max([here, *(longest_in(v) for v in value.values())])
        if isinstance(value, list | tuple):
            return max([0, *(longest_in(v) for v in value)])
        return 0

    def call(self, *args, **kwargs):
        longest = longest_in([args, kwargs])
        assert longest <= mongo_chunks.CHUNK, (
            f"a $in of {longest} ids (chunk: {mongo_chunks.CHUNK})"
        )
        return method(self, *args, **kwargs)

    return call


def _accept_sort(method):
    """mongomock 4.3 predates pymongo 4.11, whose ReplaceOne/UpdateOne pass ``sort=`` to the
    bulk builder; the real server takes it, mongomock's builder does not."""

    def call(self, *args, sort=None, **kwargs):
        assert sort is None, "synister's bulk writes never sort"
        return method(self, *args, **kwargs)

    return call


class TestMongo(DatabaseContract):
    @pytest.fixture
    def client(self, monkeypatch):
        mongomock = pytest.importorskip("mongomock")
        builder = mongomock.collection.BulkOperationBuilder
        for name in ("add_replace", "add_update"):
            monkeypatch.setattr(builder, name, _accept_sort(getattr(builder, name)))
        return mongomock.MongoClient()

    @pytest.fixture
    def db(self, client, small_chunks):
        from synister.db.mongo import MongoDatabase

        url = "mongodb://synister:pw-in-url@localhost:27017/synister_test"
        with MongoDatabase(url, client=client) as database:
            yield database

    @pytest.fixture
    def small_chunks(self, monkeypatch):
        """Chunks of 2 ids, and every query checked: no ``$in`` may name more than a chunk
        (a real server refuses a query document over 16 MB, about 800,000 ids)."""
        mongomock = pytest.importorskip("mongomock")
        from synister.db import mongo_chunks

        monkeypatch.setattr(mongo_chunks, "CHUNK", 2)
        collection = mongomock.collection.Collection
        for name in (
            "find",
            "find_one",
            "distinct",
            "count_documents",
            "update_many",
            "delete_many",
            "aggregate",
        ):
            monkeypatch.setattr(collection, name, _checked(getattr(collection, name)))

    @pytest.fixture
    def reopen(self, db, client):
        from synister.db.mongo import MongoDatabase

        return lambda create: MongoDatabase(db.url, client=client, create=create)

    @pytest.fixture
    def missing(self, client):
        from synister.db.mongo import MongoDatabase

        url = "mongodb://localhost:27017/synistr"
        return (
            lambda: MongoDatabase(url, client=client, create=False),
            lambda: "synistr" in client.list_database_names(),
            "no synister database 'synistr'",
        )

    def test_prediction_writes_are_upserts_in_bulk(self, db, client, monkeypatch):
        """One bulk_write of ReplaceOne upserts per chunk, never delete-then-insert: a writer
        left over from a crash may have stored a synapse between a delete and an insert."""
        from pymongo import ReplaceOne

        db.create_prediction_run("r", ["gaba", "glutamate"])
        db.write_predictions("r", [1, 2], [[1.0, 0.0], [1.0, 0.0]])
        collection = type(client["x"]["y"])
        calls = []
        monkeypatch.setattr(collection, "delete_many", lambda *a, **k: calls.append("delete"))
        original = collection.bulk_write

        def bulk_write(self, operations, **kwargs):
            calls.append([type(o) for o in operations])
            return original(self, operations, **kwargs)

        monkeypatch.setattr(collection, "bulk_write", bulk_write)
        db.write_predictions("r", [2, 3, 4, 5, 6], [[0.0, 1.0]] * 5)
        assert calls == [[ReplaceOne] * 2, [ReplaceOne] * 2, [ReplaceOne]]
        got = db.predictions("r")
        assert ids(got) == [1, 2, 3, 4, 5, 6] and got.prob_glutamate.tolist() == [0] + [1] * 5

    def test_runs_of_the_original_code_become_evaluable(self, client):
        """A run in the original's layout: ``{synapse_id, prediction}`` documents, no class order
        stored (the original took it from train_config.ini's synapse_types)."""
        from synister.db.mongo import MongoDatabase, OriginalRunWithoutClasses
        from synister.evaluate import evaluate_run

        db = MongoDatabase("mongodb://localhost/fafb", client=client)
        db.import_records(synapses=SYNAPSES, skeletons=SKELETONS, hemi_lineages=HEMI_LINEAGES)
        run = "skeleton_vgg_t1_p1"
        client["fafb_predictions"][run].insert_many(
            [
                {"synapse_id": 1, "prediction": [0.9, 0.05, 0.05]},  # gaba, right
                {"synapse_id": 2, "prediction": [0.1, 0.8, 0.1]},  # gaba, wrong
                {"synapse_id": 5, "prediction": [0.2, 0.7, 0.1]},  # acetylcholine, right
                {"synapse_id": 6, "prediction": None},  # initialised, never predicted
            ]
        )
        with pytest.raises(OriginalRunWithoutClasses, match=f"register-run {run} --classes"):
            db.open_prediction_run(run)
        with pytest.raises(DatabaseError, match="3 classes, but 2"):
            db.register_prediction_run(run, ["gaba", "acetylcholine"])
        db.register_prediction_run(run, ["gaba", "acetylcholine", "glutamate"])
        with pytest.raises(DatabaseError, match="already records"):
            db.register_prediction_run(run, ["gaba", "acetylcholine", "glutamate"])
        classes, meta = db.open_prediction_run(run)
        assert classes == ["gaba", "acetylcholine", "glutamate"]
        assert meta["origin"] == "funkelab/synister"
        evaluation = evaluate_run(db, run, allow_incomplete=True)  # 3 of its 4 documents
        assert evaluation.metrics["completeness"]["expected"] == 4
        assert evaluation.metrics["synapse"]["n"] == 3
        assert evaluation.metrics["synapse"]["accuracy"] == pytest.approx(2 / 3)
        with pytest.raises(DatabaseError, match="original synister.*new run"):
            db.write_predictions(run, [6], [[1.0, 0.0, 0.0]])

    def test_original_runs_report_completeness_split_and_part(self, client, tmp_path):
        """The original created one ``prediction: None`` document per synapse of the split's
        part and filled them in: a run stopped part-way is refused as synister's own are."""
        from synister.db.mongo import MongoDatabase
        from synister.evaluate import IncompleteRun, check_run, evaluate_runs

        raw = client["fafb"]
        raw.skeletons.insert_many(
            [
                {"skeleton_id": 10, "hemi_lineage_id": 1, "nt_known": ["gaba"]},
                {"skeleton_id": 11, "hemi_lineage_id": 1, "nt_known": ["acetylcholine"]},
            ]
        )
        # split "skeleton_v2" (whose name has an "_", as has "skeleton", a prefix of it):
        # synapses 1-10 in validation, 11-14 in train
        raw.synapses.insert_many(
            {
                "synapse_id": i,
                "x": i,
                "y": 0,
                "z": 0,
                "skeleton_id": 10 if i <= 5 else 11,
                "splits": {"skeleton": "test", "skeleton_v2": "validation" if i <= 10 else "train"},
            }
            for i in range(1, 15)
        )
        run = "skeleton_v2_vgg_t1_p1"
        documents = client["fafb_predictions"][run]
        documents.insert_many({"synapse_id": i, "prediction": None} for i in range(1, 11))
        for i in range(1, 8):  # stopped after 7 of its 10 synapses
            right = [0.9, 0.1] if i <= 5 else [0.1, 0.9]
            documents.update_one({"synapse_id": i}, {"$set": {"prediction": right}})
        db = MongoDatabase("mongodb://localhost/fafb", client=client)
        db.register_prediction_run(run, ["gaba", "acetylcholine"])

        _, meta = db.open_prediction_run(run)
        assert (meta["split_name"], meta["split_part"]) == ("skeleton_v2", "validation")
        assert check_run(db, run) == {
            "status": "incomplete", "predicted": 7, "expected": 10, "fraction": 0.7,
            "source": "documents", "reason": None,
        }  # fmt: skip
        out = tmp_path / "out"
        with pytest.raises(
            IncompleteRun, match=r"_v2_vgg_t1_p1 \(7 of 10 synapses, 70%\)"
        ) as error:
            evaluate_runs(db, [run], out, figures=False)
        assert "finish the run with the original synister, which wrote it" in str(error.value)
        assert not out.exists()
        results = evaluate_runs(db, [run], out, allow_incomplete=True, figures=False)
        assert results["runs"][run]["meta"]["split_part"] == "validation"
        assert [w.split(":")[1].split(" (")[0] for w in results["warnings"]] == [" incomplete"]
        assert "completeness unknown" not in " ".join(results["warnings"])

        for i in range(8, 11):
            documents.update_one({"synapse_id": i}, {"$set": {"prediction": [0.1, 0.9]}})
        assert check_run(db, run)["status"] == "complete"
        results = evaluate_runs(db, [run], tmp_path / "again", figures=False)
        assert results["warnings"] == [] and results["runs"][run]["synapse"]["accuracy"] == 1.0

    def test_reads_the_original_schema(self, client):
        """Documents as funkelab/synister wrote them (integers, splits on synapses, no registry)."""
        from synister.db.mongo import MongoDatabase

        raw = client["fafb"]
        raw.synapses.insert_many(
            [
                {
                    "synapse_id": 1,
                    "x": 3,
                    "y": 2,
                    "z": 1,
                    "skeleton_id": 10,
                    "source_id": "X",
                    "splits": {"skeleton": "train"},
                    "prepost": "pre",
                    "brain_region": "MB",
                },
                {
                    "synapse_id": 2,
                    "x": 6,
                    "y": 5,
                    "z": 4,
                    "skeleton_id": 10,
                    "source_id": "X",
                    "splits": {"skeleton": "test", "random": "train"},
                    "prepost": "pre",
                    "brain_region": None,
                },
            ]
        )
        raw.skeletons.insert_one({"skeleton_id": 10, "hemi_lineage_id": 7, "nt_known": ["gaba"]})
        raw.hemi_lineages.insert_one(
            {"hemi_lineage_id": 7, "hemi_lineage_name": "NONE", "nt_guess": ["none"]}
        )
        client["fafb_predictions"]["skeleton_vgg_t1_p1"].insert_many(
            [{"synapse_id": 2, "prediction": [0.9, 0.1]}, {"synapse_id": 1, "prediction": None}]
        )
        db = MongoDatabase("mongodb://somehost:27017/fafb", client=client)
        assert db.splits() == {"random": {}, "skeleton": {}}
        got = db.synapses(split="skeleton", part="test", positions_nm=[[4.0, 5.0, 6.0]])
        assert ids(got) == [2] and got.part.tolist() == ["test"]
        assert got.nt_known.tolist() == [frozenset({"gaba"})] and got.hemi_lineage_id.tolist() == [
            7
        ]
        assert db.hemi_lineages().hemi_lineage_name.tolist() == [None]
        assert db.prediction_runs() == ["skeleton_vgg_t1_p1"]
        assert db.predicted_synapse_ids("skeleton_vgg_t1_p1").tolist() == [2]
        assert list(db.predictions("skeleton_vgg_t1_p1").columns) == [
            "synapse_id",
            "prob_0",
            "prob_1",
        ]

    def test_writes_the_original_schema(self, db, client):
        db.import_records(synapses=SYNAPSES.iloc[:1], skeletons=SKELETONS.iloc[1:2])
        db.write_split("s1", SPLIT.iloc[:1])
        db.create_prediction_run("r", ["gaba"])
        db.write_predictions("r", [1], [[0.5]])
        synapse = client["synister_test"].synapses.find_one({"synapse_id": 1})
        assert synapse["splits"] == {"s1": "train"} and synapse["z"] == 0.0
        skeleton = client["synister_test"].skeletons.find_one({"skeleton_id": 11})
        assert skeleton["nt_known"] == ["gaba", "octopamine"]
        prediction = client["synister_test_predictions"]["r"].find_one({"synapse_id": 1})
        assert prediction["prediction"] == [0.5]


def test_sqlite_file_that_is_no_database_names_the_path(tmp_path):
    from synister.db import DatabaseError, open_database

    path = tmp_path / "notes.db"
    path.write_text("not a database, just text\n" * 100)
    with pytest.raises(DatabaseError, match="notes.db"):
        open_database(f"sqlite:///{path}")


def test_text_ids_above_2_to_the_53_are_stored_exactly(tmp_path):
    import pandas as pd

    from synister.db import open_database

    big = "77537584185632101"  # a male-VNC synapse id; float64 would round it to ...096
    with open_database(f"sqlite:///{tmp_path / 'ids.db'}") as db:
        db.import_records(
            synapses=pd.DataFrame(
                {"synapse_id": [big], "z": [0.0], "y": [0.0], "x": [0.0], "skeleton_id": [None]}
            )
        )
        assert db.synapses()["synapse_id"].tolist() == [int(big)]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///runs/synister.db", "sqlite:///runs/synister.db"),
        ("postgresql://bob:secret@host:5432/db", "postgresql://bob@host:5432/db"),
        (
            "postgresql://bob@host/db?password=secret&sslmode=require",
            "postgresql://bob@host/db?sslmode=require",
        ),
        ("postgresql://?host=h&password=secret&dbname=x", "postgresql://?host=h&dbname=x"),
        ("postgres://bob:se%40cr/et@host/db", "postgres://bob@host/db"),
        (
            "postgresql://bob:sec?ret@host/db?sslmode=require",
            "postgresql://bob@host/db?sslmode=require",
        ),
        (
            "mongodb://u:secret@h1:27017,h2:27018/db?authSource=admin",
            "mongodb://u@h1:27017,h2:27018/db?authSource=admin",
        ),
        (
            "mongodb+srv://u:p%40ss@cluster.example.net/db?w=1",
            "mongodb+srv://u@cluster.example.net/db?w=1",
        ),
        ("mongodb://host/db", "mongodb://host/db"),
    ],
)
def test_public_url_drops_every_password(url, shown):
    from synister.db import hide_secrets, public_url

    assert public_url(url) == shown
    secret = {"se%40cr/et": "se@cr/et", "sec?ret": "sec?ret", "p%40ss": "p@ss"}
    written = next((s for s in ("secret", *secret) if s in url), None)
    if written:  # a driver error quoting the URL, or the password decoded
        quoted = hide_secrets(f"cannot use {url} (password {secret.get(written, written)})", url)
        assert written not in quoted and secret.get(written, written) not in quoted


def test_mongodb_connection_errors_never_show_the_password():
    pytest.importorskip("pymongo")
    url = "mongodb://synister:pw-in-url@127.0.0.1:1/db?serverSelectionTimeoutMS=200"
    for create in (True, False):
        with pytest.raises(DatabaseError) as caught:
            open_database(url, create=create)
        assert "pw-in-url" not in str(caught.value) and "127.0.0.1:1" in str(caught.value)
    with pytest.raises(DatabaseError) as caught:
        open_database("mongodb://synister:pw-in-url@127.0.0.1:1")  # no database named
    assert "pw-in-url" not in str(caught.value)


@pytest.mark.parametrize("name", ["skeleton", "hemi-lineage_2", "x" * 24, "Ünïcode"[:1] + "a"])
def test_names_that_fit_a_run_name_pass(name):
    from synister.db import check_name

    if name.isascii():
        assert check_name(name, "split name") == name
    else:
        from synister.db import BadName

        with pytest.raises(BadName, match="holds 'Ü'"):
            check_name(name, "split name")


def test_longest_names_leave_room_for_the_run_suffix():
    from synister.db import MAX_NAME_BYTES, BadName, check_name
    from synister.db.names import MAX_IDENTIFIER_BYTES

    run = f"{'s' * MAX_NAME_BYTES}_{'e' * MAX_NAME_BYTES}_t123456_p1234"
    assert len(run.encode()) <= MAX_IDENTIFIER_BYTES
    with pytest.raises(BadName, match="25 bytes long; at most 24"):
        check_name("s" * 25, "split name")
    with pytest.raises(BadName, match="non-empty"):
        check_name("", "experiment name")


@pytest.mark.parametrize(
    ("name", "unknown"),
    [
        ("unknown", True),
        ("unknown2", True),
        ("unknown4", True),
        ("unknown6_ventral", True),
        ("new", True),
        ("new2_ventral", True),
        ("NA", True),
        ("NONE", True),
        (None, True),
        ("", True),
        ("ALad1", False),
        ("Primary", False),
        ("LHa2_ventral", False),
        ("newton", False),
    ],
)
def test_unknown_hemi_lineage_rule(name, unknown):
    """One rule for import (stored as None), splits and evaluation."""
    from synister.db import unknown_hemi_lineage
    from synister.db.records import hemi_lineage_name

    assert unknown_hemi_lineage(name) is unknown
    assert (hemi_lineage_name(name) is None) is unknown
    assert unknown_hemi_lineage("LHa2_ventral", pattern="lha.*") is True
