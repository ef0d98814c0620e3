"""``synister predict-positions`` and its Python API: the same numbers as ``synister predict``
through the database, rows that never shift, the male-VNC tables as they are, neuroglancer
links, bad input, resume after kill -9; on a small synthetic dataset with a briefly trained
network exported as a model bundle."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from conftest import EASY_SHAPE_VOX, TrainedSetup, pipe_in_place_of
from typer.testing import CliRunner
from warm import WARM

import synister
from synister.cli import app
from synister.predict import read_positions, summarize_neurons
from synister.tables import TableError
from synister.volumes import Volume

pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore::UserWarning")]

SHAPE_VOX = EASY_SHAPE_VOX
SHORT = ["gaba", "ach", "glut", "ser", "oct", "da"]


@pytest.fixture(scope="module")
def trained(trained_setup: TrainedSetup) -> TrainedSetup:
    """The session's trained setup (read-only): its bundle, volume, test part and the
    probabilities ``synister predict`` stored through the database."""
    return trained_setup


def run_cli(*args: str):
    return CliRunner().invoke(app, ["predict-positions", *map(str, args), "--no-progress"])


def run_on(trained: TrainedSetup, table: Path, out: Path, *extra: str):
    """``predict-positions`` of ``table`` with the trained bundle on the synthetic volume."""
    return run_cli(
        "--model", trained.bundle, "--volume", trained.volume, "--dataset", "raw",
        "--positions", table, "--out", out, *extra,
    )  # fmt: skip


def test_same_probabilities_as_synister_predict_through_the_database(trained, tmp_path):
    table = trained.synapses.rename(columns={"skeleton_id": "skid"})
    table[["synapse_id", "skid", "x", "y", "z"]].to_csv(tmp_path / "syn.csv", index=False)
    out = tmp_path / "out"
    outcome = run_on(trained, tmp_path / "syn.csv", out, "--csv")
    assert outcome.exit_code == 0, outcome.output
    got = pd.read_parquet(out / "synapses.parquet")
    assert list(got.columns) == [
        "row",
        "id",
        "neuron_id",
        "x",
        "y",
        "z",
        "x_nm",
        "y_nm",
        "z_nm",
        *SHORT,
        "top_nt",
        "top_nt_conf",
        "status",
    ]
    np.testing.assert_array_equal(got["id"], table["synapse_id"])  # input order, every row
    np.testing.assert_array_equal(got["neuron_id"], table["skid"])
    full = ["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine", "dopamine"]
    expected = trained.db_probabilities.loc[got["id"], [f"prob_{c}" for c in full]]
    np.testing.assert_allclose(got[SHORT].to_numpy(), expected.to_numpy(), atol=1e-5)
    top = np.asarray(SHORT)[expected.to_numpy().argmax(axis=1)]
    np.testing.assert_array_equal(got["top_nt"].to_numpy(dtype=str), top)
    csv = pd.read_csv(out / "synapses.csv")
    np.testing.assert_allclose(csv[SHORT].to_numpy(), got[SHORT].to_numpy(), atol=1e-6)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["state"] == "complete" and not (out / "parts").exists()
    neurons = pd.read_parquet(out / "neurons.parquet")
    assert neurons["n_synapses"].sum() == len(table)
    # the Python API gives the same table
    api = synister.predict_positions(
        trained.bundle, trained.volume, tmp_path / "syn.csv", dataset="raw"
    )
    pd.testing.assert_frame_equal(api, got, check_dtype=False)
    pd.testing.assert_frame_equal(
        synister.summarize_neurons(api).reset_index(drop=True), neurons, check_dtype=False
    )


def test_positions_outside_the_volume_keep_their_rows_and_never_shift_others(trained):
    table = trained.synapses.rename(columns={"synapse_id": "id"})[["id", "x", "y", "z"]]
    shifted = table.copy()
    outside = np.arange(len(table)) % 3 == 1
    shifted.loc[outside, "x"] = -5000.0  # every third position lies outside the volume
    volume = Volume(trained.volume, "raw")
    kept = synister.predict_positions(trained.bundle, volume, table[~outside])
    got = synister.predict_positions(trained.bundle, volume, shifted, naming="full")
    assert len(got) == len(table)
    np.testing.assert_array_equal(got["id"], table["id"])  # the right id in every row
    np.testing.assert_array_equal(got["status"] == "outside_volume", outside)
    assert got.loc[outside, ["gaba", "acetylcholine", "top_nt_conf"]].isna().all().all()
    assert got.loc[outside, "top_nt"].isna().all()
    full = ["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine", "dopamine"]
    np.testing.assert_allclose(
        got.loc[~outside, full].to_numpy(), kept[SHORT].to_numpy(), atol=1e-6
    )
    np.testing.assert_array_equal(got.loc[~outside, "id"], kept["id"])
    assert set(got.loc[~outside, "status"]) <= {"ok", "partly_outside"}


def malevnc_rows(shared_data: Path, bodies_per_table: int = 2) -> pd.DataFrame:
    """The smallest bodies of each male-VNC table, as they are (body,x,y,z,conf,syn_id)."""
    tables = []
    for name in ("acetylcholine", "gaba", "glutamate", "others"):
        table = pd.read_csv(shared_data / "malevnc_v0" / f"{name}.csv")
        small = table["body"].value_counts().sort_values(kind="stable").index[:bodies_per_table]
        tables.append(table[table["body"].isin(small)])
    return pd.concat(tables, ignore_index=True)


def test_malevnc_tables_in_8_nm_voxels_give_neurons_and_a_report(trained, shared_data, tmp_path):
    rows = malevnc_rows(shared_data)
    # positions mapped (affinely, whole voxels) into the synthetic volume's extent in 8 nm voxels
    mapped = rows.copy()
    extent_vox8 = np.array(SHAPE_VOX)[::-1] * np.array([4, 4, 40]) / 8  # x, y, z
    for axis, name in enumerate("xyz"):
        low, high = rows[name].min(), rows[name].max()
        unit = (rows[name] - low) / (high - low)
        mapped[name] = np.round((0.1 + 0.8 * unit) * extent_vox8[axis]).astype(int)
    mapped.to_csv(tmp_path / "manc.csv", index=False)
    out = tmp_path / "manc_out"
    outcome = run_on(trained, tmp_path / "manc.csv", out, "--units", "voxels", "--voxel-size", "8")
    assert outcome.exit_code == 0, outcome.output
    got = pd.read_parquet(out / "synapses.parquet")
    assert got["id"].dtype == np.int64
    np.testing.assert_array_equal(got["id"], rows["syn_id"])  # 17-digit ids exact
    np.testing.assert_array_equal(got[["x", "y", "z"]], mapped[["x", "y", "z"]])
    np.testing.assert_allclose(got["x_nm"], mapped["x"] * 8.0)
    neurons = pd.read_parquet(out / "neurons.parquet")
    assert set(neurons["neuron_id"]) == set(rows["body"])
    counts = rows["body"].value_counts()
    np.testing.assert_array_equal(
        neurons.set_index("neuron_id")["n_synapses"] + neurons.set_index("neuron_id")["n_outside"],
        counts.loc[neurons["neuron_id"]].to_numpy(),
    )
    small = neurons[neurons["n_synapses"] < 100]
    assert len(small) and not small["confident"].any()
    report = (out / "report.html").read_text()
    assert "Neurons not called confidently" in report and str(trained.bundle) in report
    check_neuroglancer_links(report, got, trained.volume)


def check_neuroglancer_links(report: str, synapses: pd.DataFrame, volume: Path) -> None:
    """Every neuron's link is a neuroglancer JSON state naming the volume, with one point per
    synapse of that neuron at its nm position."""
    import neuroglancer as ng

    links = re.findall(r'<a href="([^"]+)" target="_blank">([^<]+)</a>', report)
    assert len(links) == synapses["neuron_id"].nunique()
    for href, neuron in links:
        state = json.loads(unquote(href.split("#!", 1)[1].replace("&amp;", "&")))
        ng.ViewerState(state)  # neuroglancer's own parser accepts it
        layers = {layer["name"]: layer for layer in state["layers"]}
        image = layers["volume"]
        [source] = image["source"] if isinstance(image["source"], list) else [image["source"]]
        assert image["type"] == "image" and str(volume) in source["url"]
        [points] = [layer for layer in state["layers"] if layer["type"] == "annotation"]
        members = synapses[synapses["neuron_id"].astype(str) == neuron]
        assert len(points["annotations"]) == len(members)
        by_id = {a["id"]: a["point"] for a in points["annotations"]}
        first = members.iloc[0]
        np.testing.assert_allclose(
            by_id[str(first["id"])], first[["x_nm", "y_nm", "z_nm"]].to_numpy(dtype=float)
        )


def test_malevnc_tables_read_as_they_are(shared_data):
    for name, rows, bodies in (("gaba", 21606, 55), ("others", 7457, 4)):
        table = read_positions(
            shared_data / "malevnc_v0" / f"{name}.csv", units="voxels", voxel_size="8"
        )
        assert (table.id_column, table.neuron_column) == ("syn_id", "body")
        assert len(table.rows) == rows and table.rows["neuron_id"].nunique() == bodies
        raw = pd.read_csv(shared_data / "malevnc_v0" / f"{name}.csv")
        np.testing.assert_array_equal(table.rows["id"], raw["syn_id"])
        np.testing.assert_allclose(table.rows["z_nm"], raw["z"] * 8.0)


@pytest.mark.parametrize(
    ("name", "table", "options", "message"),
    [
        ("nopos", "id,a,b\n1,2,3\n", [], r"nopos.csv: no position columns \(looked for x,y,z"),
        ("text", "id,x,y,z\n1,2,3,4\n2,5,abc,6\n", [], r"text.csv, column y, line 3: 'abc'"),
        ("units", "id,x,y,z\n1,2,3,4\n", ["--units", "voxels"], r"units.csv: columns x, y, z"),
        ("nobundle", "id,x,y,z\n1,2,3,4\n", ["MISSING"], r"MISSING: not a model: no model bundle"),
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(
    trained, tmp_path, name, table, options, message
):
    file = tmp_path / f"{name}.csv"
    file.write_text(table)
    model = trained.bundle
    if options == ["MISSING"]:
        model, options = tmp_path / "MISSING", []
    out = tmp_path / "out"
    outcome = run_cli(
        "--model",
        model,
        "--volume",
        trained.volume,
        "--dataset",
        "raw",
        "--positions",
        file,
        "--out",
        out,
        *options,
    )
    assert outcome.exit_code == 1
    lines = outcome.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome.output
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()


def test_tables_columns_found_by_name_or_given(tmp_path):
    big = 720575940621836992  # a FlyWire root id: above 2**53, must stay exact
    frame = pd.DataFrame(
        {
            "pre_pt_root_id": [big, big + 2, big],
            "pre_pt_position": [[10, 20, 3], [11, 21, 4], [12, 22, 5]],
            "other": ["a", "b", "c"],
        }
    )
    frame.to_parquet(tmp_path / "t.parquet")
    table = read_positions(tmp_path / "t.parquet", units="voxels", voxel_size="4,4,40")
    assert table.id_column is None and table.neuron_column == "pre_pt_root_id"
    np.testing.assert_array_equal(table.rows["id"], [0, 1, 2])  # row numbers
    assert table.rows["neuron_id"].tolist() == [big, big + 2, big]
    np.testing.assert_allclose(table.rows[["x_nm", "y_nm", "z_nm"]].iloc[1], [44, 84, 160])
    frame.assign(pre_pt_position=frame["pre_pt_position"].map(str)).to_csv(
        tmp_path / "t.csv", index=False
    )
    again = read_positions(tmp_path / "t.csv", units="voxels", voxel_size="4,4,40")
    pd.testing.assert_frame_equal(again.rows, table.rows)
    (tmp_path / "ids.txt").write_text(f"pre_pt_root_id\n{big}\n# a comment\n12345\n")
    only = read_positions(
        tmp_path / "t.csv", units="voxels", voxel_size=[4, 4, 40], neurons=tmp_path / "ids.txt"
    )
    assert only.rows["row"].tolist() == [0, 2] and only.neurons_missing == ["12345"]

    pre = pd.DataFrame(
        {
            "syn": ["s1", "s2"],
            "pre_x": [1.0, 2],
            "pre_y": [3, 4],
            "pre_z": [5, 6],
            "cell": ["n1", None],
        }
    )
    pre.to_feather(tmp_path / "t.feather")
    table = read_positions(tmp_path / "t.feather", id_column="syn", neuron_column="cell")
    assert table.rows["id"].tolist() == ["s1", "s2"] and table.position_columns[0] == "pre_x"
    assert table.rows["neuron_id"].isna().tolist() == [False, True]
    with pytest.raises(TableError, match=r"t.feather, column syn: id s1 is on row 0 and row 1"):
        pre.assign(syn="s1").to_feather(tmp_path / "t.feather")
        read_positions(tmp_path / "t.feather", id_column="syn")
    with pytest.raises(TableError, match=r"no column 'nope' \(--neuron-column\)"):
        read_positions(tmp_path / "t.csv", neuron_column="nope")


def test_summarize_neurons_calls_only_clear_neurons_confident():
    rng = np.random.default_rng(0)
    clear = rng.dirichlet([20, 1, 1], 150)  # 150 synapses, clearly the first class
    close = np.tile([0.45, 0.40, 0.15], (150, 1))  # a runner-up within 0.05
    few = rng.dirichlet([20, 1, 1], 20)  # clear, but only 20 synapses
    probabilities = np.concatenate([clear, close, few])
    neuron = np.repeat(["clear", "close", "few"], [150, 150, 20])
    frame = pd.DataFrame(probabilities, columns=["gaba", "ach", "glut"])
    frame.insert(0, "neuron_id", neuron)
    frame["top_nt"] = np.asarray(["gaba", "ach", "glut"])[probabilities.argmax(axis=1)]
    frame["top_nt_conf"] = probabilities.max(axis=1)
    summary = summarize_neurons(frame).set_index("neuron_id")
    assert summary.loc["clear", "confident"] and summary.loc["clear", "top_nt"] == "gaba"
    assert not summary.loc["close", "confident"] and summary.loc["close", "runner_up_nt"] == "ach"
    np.testing.assert_allclose(summary.loc["close", "margin"], 0.05, atol=1e-9)
    assert not summary.loc["few", "confident"] and summary.loc["few", "n_synapses"] == 20
    np.testing.assert_allclose(
        summary.loc["clear", "top_nt_vote_share"], (clear.argmax(axis=1) == 0).mean()
    )
    assert list(summary.index) == ["clear", "close", "few"]  # by synapse count


def positions_command(trained: TrainedSetup, table: Path, out: Path, *extra: str) -> list[str]:
    return [
        *WARM.cli(),
        "predict-positions",
        "--model",
        str(trained.bundle),
        "--volume",
        str(trained.volume),
        "--dataset",
        "raw",
        "--positions",
        str(table),
        "--out",
        str(out),
        *extra,
    ]


def test_a_killed_run_continues_with_the_same_out(trained, tmp_path, kill_when):
    # 4,150 positions whose patches lie in the volume's first chunks, then 50 in its last chunk
    # (z 960-1280, y and x from 1024 nm), which cannot be read until the kill: positions are
    # read in z, y, x order, so the first part (4,096 rows) is stored before the run stops
    # there, and the kill lands half-way at any pace
    rng = np.random.default_rng(0)
    early = rng.uniform([200, 200, 320], [800, 800, 560], size=(4150, 3))  # x, y, z nm
    late = rng.uniform([1300, 1300, 1116], [1700, 1700, 1120], size=(50, 3))
    table = pd.DataFrame(np.concatenate([early, late]), columns=["x", "y", "z"])
    table.insert(0, "id", np.arange(len(table)) * 7 + 1)
    table.to_parquet(tmp_path / "many.parquet")
    volume = tmp_path / "raw.zarr"
    shutil.copytree(trained.volume, volume)
    last_chunk = volume / "raw" / "c" / "3" / "1" / "1"
    good = pipe_in_place_of(last_chunk)
    out = tmp_path / "out"
    options = ["--batch-size", "2", "--read-workers", "0", "--threads", "1", "--no-progress"]
    command = positions_command(trained, tmp_path / "many.parquet", out, *options)
    command[command.index("--volume") + 1] = str(volume)
    kill_when(command, lambda: any((out / "parts").glob("part-*.parquet")), "a part file written")
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["state"] == "running" and not (out / "synapses.parquet").exists()
    killed_write = out / ".synapses.parquet.tmp12200"
    killed_write.write_bytes(b"half a table")  # what a kill during the table's write leaves
    last_chunk.unlink()
    last_chunk.write_bytes(good)
    trained = dataclasses.replace(trained, volume=volume)

    outcome = run_on(trained, tmp_path / "many.parquet", out, "--json", *options[:-1])
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.stdout)
    predictable = len(table) - summary["outside_volume"]
    assert 0 < summary["resumed_from"] <= len(early)  # none of the last chunk's before the kill
    assert summary["predicted"] == predictable - summary["resumed_from"]
    assert not killed_write.exists()
    got = pd.read_parquet(out / "synapses.parquet")
    np.testing.assert_array_equal(got["id"], table["id"])
    whole = synister.predict_positions(trained.bundle, trained.volume, table, dataset="raw")
    np.testing.assert_allclose(got[SHORT].to_numpy(), whole[SHORT].to_numpy(), atol=1e-6)

    again = run_on(trained, tmp_path / "many.parquet", out)
    assert again.exit_code == 0 and "already complete" in again.output
    table.iloc[:10].to_parquet(tmp_path / "many.parquet")  # other input, same --out
    other = run_on(trained, tmp_path / "many.parquet", out)
    assert other.exit_code == 1 and "holds a run of other inputs (table." in other.output


def interrupted_at_third_batch(trained: TrainedSetup, folder: Path, **options):
    """Run the test part in batches of 4 into ``folder/out``, Ctrl-C during the third batch."""
    from synister.predict import prepare_positions
    from synister.predict.store import run_positions

    table = trained.synapses.rename(columns={"synapse_id": "id"})[["id", "x", "y", "z"]]
    table.to_parquet(folder / "t.parquet")
    job = prepare_positions(
        trained.bundle, trained.volume, folder / "t.parquet", dataset="raw", batch_size=4
    )
    network, calls = job.predictor.logits, []

    def interrupted(raw):
        calls.append(len(raw))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third batch
        return network(raw)

    job.predictor.logits = interrupted
    with pytest.raises(KeyboardInterrupt):
        run_positions(job, folder / "out", table_file=folder / "t.parquet", progress=False,
                      **options)  # fmt: skip
    return table


def test_an_interrupted_run_keeps_its_finished_batches(trained, tmp_path):
    from synister.predict import prepare_positions
    from synister.predict.store import run_positions

    table = interrupted_at_third_batch(trained, tmp_path)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["state"] == "running"
    again = prepare_positions(
        trained.bundle, trained.volume, tmp_path / "t.parquet", dataset="raw", batch_size=4
    )
    summary = run_positions(
        again, tmp_path / "out", table_file=tmp_path / "t.parquet", progress=False
    )
    assert summary["resumed_from"] == 8 and summary["predicted"] == len(table) - 8


def test_a_part_is_stored_every_part_rows_synapses(trained, tmp_path):
    interrupted_at_third_batch(trained, tmp_path, part_rows=4)
    assert len(list((tmp_path / "out" / "parts").glob("part-*.parquet"))) == 2  # one a batch


def test_a_calibrated_bundle_divides_the_logits_by_its_temperature_and_says_so(trained, tmp_path):
    """A bundle that ``synister calibrate`` gave a temperature: its probabilities are the
    softmax of logits / T, and the command's message, JSON summary, run.json and report say T."""
    import shutil

    from synister.evaluate.calibration import apply_temperature
    from synister.models.bundle import load_bundle

    calibrated = tmp_path / "calibrated_bundle"
    shutil.copytree(trained.bundle, calibrated)
    load_bundle(calibrated).save_temperature(2.5)
    table = trained.synapses.rename(columns={"skeleton_id": "skid"}).iloc[:12]
    table[["synapse_id", "skid", "x", "y", "z"]].to_csv(tmp_path / "syn.csv", index=False)
    raw = synister.predict_positions(trained.bundle, trained.volume, table, dataset="raw")

    out = tmp_path / "out"
    outcome = run_cli(
        "--model", calibrated, "--volume", trained.volume, "--dataset", "raw",
        "--positions", tmp_path / "syn.csv", "--out", out,
    )  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    assert "logits divided by the model's temperature 2.5" in outcome.output
    got = pd.read_parquet(out / "synapses.parquet")
    np.testing.assert_allclose(
        got[SHORT].to_numpy(), apply_temperature(raw[SHORT].to_numpy(), 2.5), atol=1e-5
    )
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["summary"]["temperature"] == 2.5
    assert manifest["identity"]["bundle"]["temperature"] == 2.5
    assert "2.5" in (out / "report.html").read_text()
    as_json = run_cli(
        "--model", calibrated, "--volume", trained.volume, "--dataset", "raw",
        "--positions", tmp_path / "syn.csv", "--out", tmp_path / "out_json", "--json",
    )  # fmt: skip
    assert json.loads(as_json.stdout)["temperature"] == 2.5
    # the raw bundle says nothing of a temperature and records none
    outcome = run_on(trained, tmp_path / "syn.csv", tmp_path / "out_raw")
    assert outcome.exit_code == 0 and "temperature" not in outcome.output
    assert (
        json.loads((tmp_path / "out_raw" / "run.json").read_text())["summary"]["temperature"]
        is None
    )
    # a run of the calibrated bundle does not resume with the raw one
    refused = run_on(trained, tmp_path / "syn.csv", out)
    assert refused.exit_code == 1 and "temperature" in refused.output
