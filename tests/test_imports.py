from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from synister.db import open_database
from synister.db.imports import BadInput, TableOptions, import_files, read_table

BIG_ID = 77537584185632101  # a male-VNC synapse id: beyond float64's exact integers


@pytest.fixture
def db(tmp_path):
    with open_database(f"sqlite:///{tmp_path / 'imports.db'}") as database:
        yield database


def write_json(path, document) -> None:
    path.write_text(json.dumps(document, indent=1))


@pytest.fixture
def export_dir(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    write_json(
        folder / "synapses_v1.json",
        {
            "1": {"x": 10, "y": 20, "z": 40, "skeleton_id": 100, "brain_region": "MB"},
            "2": {"x": 11.5, "y": 21, "z": 80, "skeleton_id": 101, "prepost": "Pre"},
            "3": {"x": 12, "y": 22, "z": 120, "skeleton_id": None, "confidence": 0.5},
        },
    )
    write_json(
        folder / "skeletons_v1.json",
        {
            "100": {"hemi_lineage_id": 7, "nt_known": ["ACh"]},
            "101": {"hemi_lineage_id": 8, "nt_known": None},
        },
    )
    write_json(
        folder / "hemi_lineages_v1.json",
        {
            "7": {"nt_guess": ["gaba"], "hemi_lineage_name": "ALad1"},
            "8": {"nt_guess": None, "hemi_lineage_name": "unknown2"},
            "9": {"nt_guess": None, "hemi_lineage_name": "NA"},
        },
    )
    return folder


def assert_empty(db) -> None:
    stats = db.stats()
    assert (stats["synapses"], stats["skeletons"], stats["hemi_lineages"]) == (0, 0, 0)


def test_export_folder_is_imported(db, export_dir):
    summary = import_files(db, [export_dir])
    assert (summary.synapses, summary.skeletons, summary.hemi_lineages) == (3, 2, 3)
    synapses = db.synapses().set_index("synapse_id")
    assert synapses.loc[2, ["z", "y", "x"]].tolist() == [80.0, 21.0, 11.5]
    assert synapses.loc[1, "brain_region"] == "MB" and synapses.loc[2, "prepost"] == "pre"
    assert pd.isna(synapses.loc[3, "skeleton_id"]) and synapses.loc[3, "confidence"] == 0.5
    skeletons = db.skeletons().set_index("skeleton_id")
    assert skeletons.loc[100, "nt_known"] == frozenset({"acetylcholine"})
    assert skeletons.loc[101, "nt_known"] == frozenset()
    names = db.hemi_lineages().set_index("hemi_lineage_id")["hemi_lineage_name"]
    assert names[7] == "ALad1" and names[8] is None and names[9] is None


def test_original_none_transmitter_is_unknown_and_counted(db, tmp_path):
    """The original wrote ["none"] for a neuron without a known transmitter; a skeleton without
    nt_known (missing, null, none) is stored as unknown and counted in the summary."""
    write_json(
        tmp_path / "skeletons.json",
        {
            "1": {"hemi_lineage_id": 7, "nt_known": ["none"]},
            "2": {"hemi_lineage_id": 7, "nt_known": ["unknown"]},
            "3": {"hemi_lineage_id": 7},
            "4": {"hemi_lineage_id": 7, "nt_known": None},
            "5": {"hemi_lineage_id": 7, "nt_known": []},
            "6": {"hemi_lineage_id": 7, "nt_known": ["GABA"]},
        },
    )
    summary = import_files(db, [tmp_path / "skeletons.json"])
    assert summary.skeletons == 6 and summary.skeletons_without_transmitter == 5
    assert summary.as_dict()["skeletons_without_transmitter"] == 5
    known = db.skeletons().set_index("skeleton_id")["nt_known"]
    assert known.tolist() == [frozenset()] * 5 + [frozenset({"gaba"})]


def test_bad_json_names_file_line_and_column(db, export_dir):
    bad = export_dir / "synapses_v1.json"
    bad.write_text('{"1": {"x": 1, "y": 2, "z": 3},\n "2": {"x": 1 "y": 2}}')
    with pytest.raises(BadInput, match=r"synapses_v1\.json: line 2, column 15"):
        import_files(db, [export_dir])
    assert_empty(db)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"y": 1, "z": 1, "skeleton_id": 100}, r"key '5': field 'x' is missing"),
        ({"x": "ten", "y": 1, "z": 1}, r"key '5': field 'x' must be a number"),
        ({"x": 1, "y": 1, "z": 1, "skeleton_id": "s"}, r"key '5': field 'skeleton_id'"),
        ({"x": 1, "y": 1, "z": 1, "prepost": "both"}, r"key '5': field 'prepost'"),
    ],
)
def test_bad_synapse_records_name_key_and_field(db, export_dir, record, message):
    write_json(export_dir / "synapses_more.json", {"5": record})
    with pytest.raises(BadInput, match=message):
        import_files(db, [export_dir])
    assert_empty(db)


def test_unknown_transmitter_names_key_and_field(db, tmp_path):
    write_json(
        tmp_path / "skeletons.json", {"4": {"hemi_lineage_id": 1, "nt_known": ["GABA", "xx"]}}
    )
    with pytest.raises(BadInput, match=r"skeletons\.json, key '4': field 'nt_known'.*'xx'"):
        import_files(db, [tmp_path / "skeletons.json"])
    assert_empty(db)


def test_repeated_ids_across_files_name_both_places(db, export_dir):
    write_json(export_dir / "synapses_more.json", {"2": {"x": 1, "y": 1, "z": 1}})
    with pytest.raises(BadInput, match=r"synapse id 2 appears twice: .*synapses_more\.json.*v1"):
        import_files(db, [export_dir])
    assert_empty(db)


def test_ids_already_stored_are_refused_and_nothing_changes(db, export_dir, tmp_path):
    import_files(db, [export_dir])
    before = db.stats()
    extra = tmp_path / "new"
    extra.mkdir()
    write_json(
        extra / "synapses.json", {"50": {"x": 1, "y": 1, "z": 1}, "3": {"x": 1, "y": 1, "z": 2}}
    )
    with pytest.raises(
        BadInput, match=r"synapse id 3 \(.*synapses\.json, key 3\) is already stored"
    ):
        import_files(db, [extra])
    assert db.stats() == before
    assert 50 not in db.synapses()["synapse_id"].tolist()


def test_table_with_mapping_voxels_and_axis_order(db, tmp_path):
    table = tmp_path / "acetylcholine.csv"
    table.write_text(
        f"neuron,p0,p1,p2,score,sid\n5,1,2,3,0.9,{BIG_ID}\n5,4,5,6,0.8,2\n6,7,8,9,,3\n"
    )
    options = TableOptions(
        columns={"neuron": "skeleton_id", "score": "confidence", "sid": "synapse_id"},
        coordinate_columns=("p0", "p1", "p2"),
        axis_order="zyx",
        units="voxels",
        voxel_size_nm=(40.0, 4.0, 8.0),
    )
    summary = import_files(db, [table], options)
    assert (summary.synapses, summary.skeletons) == (3, 2)
    synapses = db.synapses().set_index("synapse_id")
    assert synapses.loc[BIG_ID, ["z", "y", "x"]].tolist() == [40.0, 8.0, 24.0]
    assert np.isnan(synapses.loc[3, "confidence"]) and synapses.loc[2, "confidence"] == 0.8
    skeletons = db.skeletons().set_index("skeleton_id")["nt_known"]
    assert skeletons.to_dict() == {5: frozenset({"acetylcholine"}), 6: frozenset({"acetylcholine"})}


@pytest.mark.parametrize("suffix", ["parquet", "feather"])
def test_parquet_and_feather_tables_with_label_column(db, tmp_path, suffix):
    frame = pd.DataFrame(
        {
            "body": [1, 1, 2],
            "x": [1.0, 2.0, 3.0],
            "y": [0.0, 0.0, 0.0],
            "z": [5.0, 5.0, 5.0],
            "syn_id": [10, 11, 12],
            "nt": ["GABA", "gaba", "Glu"],
        }
    )
    path = tmp_path / f"table.{suffix}"
    getattr(frame, f"to_{suffix}")(path)
    import_files(db, [path], TableOptions(label_column="nt"))
    skeletons = db.skeletons().set_index("skeleton_id")["nt_known"]
    assert skeletons.to_dict() == {1: frozenset({"gaba"}), 2: frozenset({"glutamate"})}
    assert db.synapses()["x"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("text", "options", "message"),
    [
        (
            "body,x,y,z,syn_id\n1,1,2,3,1\n1,a,2,3,2\n",
            {},
            r"gaba\.csv, column x, line 3: 'a' is not a number",
        ),
        ("body,x,y,z,syn_id\n1,1,2,3,1\n1,,2,3,2\n", {}, r"gaba\.csv, column x, line 3: no value"),
        ("body,x,y,syn_id\n1,1,2,1\n", {}, r"no position columns \(looked for x,y,z or"),
        (
            "x,y,z,syn_id\n1,1,2,1\n",
            {},
            r"no neuron column \(looked for .*body.*--map COLUMN=skeleton_id",
        ),
        (
            "body,x,y,z,syn_id\n1,1,2,3,1.5\n",
            {},
            r"column syn_id, line 2: '1.5' is not an integer id",
        ),
        (
            "body,x,y,z,syn_id,nt\n1,1,2,3,1,gaba\n2,1,2,3,2,glycine\n",
            {"label_column": "nt"},
            r"column nt, line 3: unknown transmitter 'glycine'",
        ),
        (
            "body,x,y,z,syn_id,nt\n1,1,2,3,1,gaba\n1,1,2,3,2,ach\n",
            {"label_column": "nt"},
            r"neuron 1 is labelled gaba at .*line 2 and acetylcholine at .*line 3",
        ),
    ],
)
def test_bad_tables_name_file_line_and_field(db, tmp_path, text, options, message):
    (tmp_path / "gaba.csv").write_text(text)
    with pytest.raises(BadInput, match=message):
        import_files(db, [tmp_path / "gaba.csv"], TableOptions(**options))
    assert_empty(db)


def test_file_name_must_be_a_transmitter_without_label(tmp_path):
    (tmp_path / "neurons.csv").write_text("body,x,y,z,syn_id\n1,1,2,3,1\n")
    with pytest.raises(BadInput, match="'neurons' is not a transmitter"):
        read_table(tmp_path / "neurons.csv")
    synapses, labels = read_table(tmp_path / "neurons.csv", TableOptions(label="5-HT"))
    assert labels["nt"].tolist() == ["serotonin"] and len(synapses) == 1


def test_voxel_units_need_a_voxel_size():
    with pytest.raises(BadInput, match="voxel size"):
        TableOptions(units="voxels")


def test_neuron_labelled_two_ways_across_files_and_database(db, tmp_path):
    (tmp_path / "gaba.csv").write_text("body,x,y,z,syn_id\n1,1,2,3,1\n2,1,2,3,2\n")
    (tmp_path / "glutamate.csv").write_text("body,x,y,z,syn_id\n3,1,2,3,3\n1,1,2,3,4\n")
    with pytest.raises(
        BadInput,
        match=r"neuron 1 is labelled gaba at .*gaba\.csv, line 2 and "
        r"glutamate at .*glutamate\.csv, line 3",
    ):
        import_files(db, [tmp_path])
    assert_empty(db)

    import_files(db, [tmp_path / "gaba.csv"])
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "gaba.csv").write_text("body,x,y,z,syn_id\n1,1,2,3,10\n")
    summary = import_files(db, [tmp_path / "more" / "gaba.csv"])  # same label: skeleton reused
    assert (summary.synapses, summary.skeletons, summary.skeletons_already_stored) == (1, 0, 1)
    with pytest.raises(
        BadInput, match=r"neuron 2 is labelled glutamate at .* but gaba in the database"
    ):
        (tmp_path / "more" / "glutamate.csv").write_text("body,x,y,z,syn_id\n2,1,2,3,11\n")
        import_files(db, [tmp_path / "more" / "glutamate.csv"])
    assert db.stats()["synapses"] == 3


def test_label_disagreeing_with_imported_skeleton(db, tmp_path):
    write_json(tmp_path / "skeletons.json", {"1": {"hemi_lineage_id": None, "nt_known": ["gaba"]}})
    (tmp_path / "dopamine.csv").write_text("body,x,y,z,syn_id\n1,1,2,3,1\n")
    with pytest.raises(
        BadInput, match=r"labelled dopamine .* but gaba in .*skeletons\.json, key 1"
    ):
        import_files(db, [tmp_path / "skeletons.json", tmp_path / "dopamine.csv"])
    assert_empty(db)


def test_real_fafb_skeletons_and_hemi_lineages(db, shared_data):
    summary = import_files(db, [shared_data / "fafb_v3"])
    assert (summary.skeletons, summary.hemi_lineages) == (2804, 90)
    assert summary.skeletons_without_transmitter == 2804 - 688
    per_nt = db.skeletons()["nt_known"].map(lambda s: ",".join(sorted(s))).value_counts()
    assert per_nt["acetylcholine"] == 397 and per_nt["gaba"] == 165 and per_nt["dopamine"] == 83
    assert per_nt["gaba,octopamine"] == 1
    names = db.hemi_lineages()["hemi_lineage_name"]
    assert names.isna().sum() >= 4  # unknown, unknown2, unknown4, new, ...
    assert "ALad1" in set(names)


def test_real_male_vnc_tables(db, shared_data):
    options = TableOptions(units="voxels", voxel_size_nm=(8.0, 8.0, 8.0))
    folder = shared_data / "malevnc_v0"
    transmitters = [folder / f"{nt}.csv" for nt in ("acetylcholine", "gaba", "glutamate")]
    summary = import_files(db, transmitters, options)
    assert (summary.synapses, summary.skeletons) == (87_403 - 7_457, 191 - 4)
    # "others" mixes transmitters: a class only when asked for, never from the file name
    with pytest.raises(BadInput, match=r"others\.csv: the file name 'others' is a catch-all"):
        import_files(db, [folder / "others.csv"], options)
    others = import_files(db, [folder / "others.csv"], replace(options, label="others"))
    assert (others.synapses, others.skeletons) == (7_457, 4)
    raw = pd.read_csv(shared_data / "malevnc_v0" / "gaba.csv", nrows=1)
    raw = {column: raw[column].iloc[0] for column in raw.columns}  # keeps int64 ids exact
    stored = db.synapses(synapse_ids=[int(raw["syn_id"])]).iloc[0]
    assert stored[["z", "y", "x"]].tolist() == [8.0 * raw["z"], 8.0 * raw["y"], 8.0 * raw["x"]]
    assert stored["skeleton_id"] == raw["body"] and stored["nt_known"] == frozenset({"gaba"})
    assert db.stats()["synapses"] == 87_403
