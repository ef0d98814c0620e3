from __future__ import annotations

import json

import pandas as pd
import pytest

from synister.db import open_database
from synister.db.exports import ExportExists, export_database
from synister.db.imports import import_files

SYNAPSES = {
    "1": {"x": 10, "y": 20, "z": 40, "skeleton_id": 100, "brain_region": "MB"},
    "2": {"x": 11.5, "y": 21, "z": 80, "skeleton_id": 101, "prepost": "pre", "confidence": 0.25},
    "3": {"x": 12, "y": 22, "z": 120, "skeleton_id": None},
    "77537584185632101": {"x": 1, "y": 2, "z": 3, "skeleton_id": 100},
}
SKELETONS = {
    "100": {"hemi_lineage_id": 7, "nt_known": ["acetylcholine"]},
    "101": {"hemi_lineage_id": None, "nt_known": ["gaba", "octopamine"]},
    "102": {"hemi_lineage_id": 8, "nt_known": None},
}
HEMI_LINEAGES = {
    "7": {"nt_guess": ["gaba"], "hemi_lineage_name": "ALad1"},
    "8": {"nt_guess": None, "hemi_lineage_name": None},
}


@pytest.fixture(params=["sqlite", "mongomock"])
def db(request, tmp_path):
    """Imports and exports only use the Database interface; check two backends."""
    if request.param == "sqlite":
        database = open_database(f"sqlite:///{tmp_path / 'exports.db'}")
    else:
        mongomock = pytest.importorskip("mongomock")
        from synister.db.mongo import MongoDatabase

        database = MongoDatabase("mongodb://localhost/exports", client=mongomock.MongoClient())
    with database:
        yield database


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "source"
    folder.mkdir()
    for name, document in (
        ("synapses", SYNAPSES),
        ("skeletons", SKELETONS),
        ("hemi_lineages", HEMI_LINEAGES),
    ):
        (folder / f"{name}.json").write_text(json.dumps(document))
    return folder


def read(path):
    return json.loads(path.read_text())


def test_json_round_trip_reproduces_records(db, source, tmp_path):
    import_files(db, [source])
    paths = export_database(db, tmp_path / "out", "json")
    assert [p.name for p in paths] == ["synapses.json", "skeletons.json", "hemi_lineages.json"]
    assert read(paths[0]) == SYNAPSES
    assert read(paths[1]) == SKELETONS
    assert read(paths[2]) == HEMI_LINEAGES


def test_real_fafb_round_trip(db, shared_data, tmp_path):
    import_files(db, [shared_data / "fafb_v3"])
    out = tmp_path / "out"
    export_database(db, out, "json")
    skeletons = read(out / "skeletons.json")
    original = read(shared_data / "fafb_v3" / "skeletons_v3.json")
    assert skeletons == {
        key: {
            "hemi_lineage_id": r["hemi_lineage_id"],
            "nt_known": r["nt_known"] and sorted(r["nt_known"]),
        }
        for key, r in original.items()
    }
    hemi = read(out / "hemi_lineages.json")
    original = read(shared_data / "fafb_v3" / "hemi_lineages_v3.json")
    assert hemi.keys() == original.keys()
    for key, record in original.items():
        assert hemi[key]["nt_guess"] == record["nt_guess"]
        assert hemi[key]["hemi_lineage_name"] in (record["hemi_lineage_name"], None)
    assert hemi["7"]["hemi_lineage_name"] is None  # "unknown2"
    # and the export reads back into an equal database
    with open_database(f"sqlite:///{tmp_path / 'again.db'}") as again:
        import_files(again, [out])
        pd.testing.assert_frame_equal(again.skeletons(), db.skeletons())
        pd.testing.assert_frame_equal(again.hemi_lineages(), db.hemi_lineages())


def test_parquet_export(db, source, tmp_path):
    import_files(db, [source])
    paths = export_database(db, tmp_path / "pq", "parquet")
    synapses = pd.read_parquet(paths[0]).set_index("synapse_id")
    assert list(synapses.columns) == [
        "z",
        "y",
        "x",
        "skeleton_id",
        "brain_region",
        "prepost",
        "confidence",
    ]
    assert synapses.loc[2, ["z", "y", "x"]].tolist() == [80.0, 21.0, 11.5]
    assert 77537584185632101 in synapses.index
    skeletons = pd.read_parquet(paths[1]).set_index("skeleton_id")
    assert list(skeletons.loc[101, "nt_known"]) == ["gaba", "octopamine"]
    assert len(skeletons.loc[102, "nt_known"]) == 0
    hemi = pd.read_parquet(paths[2]).set_index("hemi_lineage_id")
    assert hemi.loc[7, "hemi_lineage_name"] == "ALad1"


def test_existing_files_are_kept_unless_overwrite(db, source, tmp_path):
    import_files(db, [source])
    out = tmp_path / "out"
    export_database(db, out, "json")
    (out / "synapses.json").write_text("{}")
    with pytest.raises(ExportExists, match="synapses.json"):
        export_database(db, out, "json")
    assert read(out / "synapses.json") == {}
    export_database(db, out, "json", overwrite=True)
    assert read(out / "synapses.json") == SYNAPSES
    with pytest.raises(ValueError, match="format"):
        export_database(db, out, "csv")
