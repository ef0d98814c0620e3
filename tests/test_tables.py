"""The one table reader (:mod:`synister.tables`): ``db import`` and ``predict-positions`` read a
table alike (the same errors, the same nm positions) and every ``--voxel-size`` is x,y,z."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synister.cli import app
from synister.db import open_database
from synister.db.imports import BadInput, import_files
from synister.tables import TableError, parse_voxel_size, read_positions
from synister.volumes import write_volume

GOOD = "syn_id,body,x,y,z\n1,5,1,2,3\n"
BAD_TABLES = {
    "text": GOOD + "2,5,1,abc,3\n",
    "empty position": GOOD + "2,5,1,,3\n",
    "infinite position": GOOD + "2,5,1,inf,3\n",
    "no id": GOOD + ",5,1,2,3\n",
    "id twice": GOOD + "1,6,4,5,6\n",
    "list column": "syn_id,body,pre_pt_position\n1,5,[1 2 3]\n2,5,[1 2]\n",
    "unreadable": 'syn_id,body,x,y,z\n1,5,"1,2,3\n',
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_db_import_and_predict_positions_give_the_same_message(tmp_path, case):
    path = tmp_path / "gaba.csv"
    path.write_text(BAD_TABLES[case])
    with pytest.raises(TableError) as predicting:
        read_positions(path)
    with open_database(f"sqlite:///{tmp_path / 'db.sqlite'}") as db:
        with pytest.raises(BadInput) as importing:
            import_files(db, [path])
        assert db.stats()["synapses"] == 0
    message = str(predicting.value)
    assert str(importing.value) == message
    assert message.startswith(f"{path}") and "\n" not in message


def test_the_same_message_for_parquet_rows(tmp_path):
    path = tmp_path / "gaba.parquet"
    pd.DataFrame({"syn_id": [1.0, 2.5], "body": [5, 5], "x": 1.0, "y": 2.0, "z": 3.0}).to_parquet(
        path
    )
    with pytest.raises(TableError) as predicting:
        read_positions(path)
    with open_database(f"sqlite:///{tmp_path / 'db.sqlite'}") as db:
        with pytest.raises(BadInput) as importing:
            import_files(db, [path])
    assert str(importing.value) == str(predicting.value)
    assert "gaba.parquet, column syn_id, row 1: id 2.5 is not a whole number" in str(
        importing.value
    )


def test_voxel_size_is_x_y_z_or_named():
    assert parse_voxel_size("4,4,40") == (4.0, 4.0, 40.0)
    assert parse_voxel_size("x=4,y=4,z=40") == (4.0, 4.0, 40.0)
    assert parse_voxel_size("Z=40 y=4 x=4") == (4.0, 4.0, 40.0)
    assert parse_voxel_size("8") == parse_voxel_size(8) == (8.0, 8.0, 8.0)
    assert parse_voxel_size([4, 4, 40]) == (4.0, 4.0, 40.0)
    for bad in ("x=4,y=4", "x=4,x=4,z=40", "4,4", "a,b,c", "0,4,4", "x=4,y=4,w=4"):
        with pytest.raises(TableError, match="--voxel-size"):
            parse_voxel_size(bad)


def test_voxel_size_of_an_option_that_read_z_y_x_refuses_to_guess():
    with pytest.raises(TableError) as error:
        parse_voxel_size("4,4,40", was_zyx=True)
    message = str(error.value)
    assert message.startswith("--voxel-size 4,4,40 is ambiguous: synister now reads it as x,y,z")
    assert "--voxel-size x=4,y=4,z=40" in message and "--voxel-size x=40,y=4,z=4" in message
    assert parse_voxel_size("x=4,y=4,z=40", was_zyx=True) == (4.0, 4.0, 40.0)
    assert parse_voxel_size("8", was_zyx=True) == (8.0, 8.0, 8.0)
    assert parse_voxel_size("4,8,4", was_zyx=True) == (4.0, 8.0, 4.0)  # same either way


@pytest.fixture(scope="module")
def site(tmp_path_factory, random_bundle):
    """A random volume in 4x4x40 nm voxels (x,y,z), a random-weight bundle, and a table of
    positions in those voxels (x,y,z columns), named after its transmitter."""
    base = tmp_path_factory.mktemp("axes")
    rng = np.random.default_rng(0)
    write_volume(
        base / "raw.zarr", rng.integers(0, 256, (24, 128, 128), dtype=np.uint8), (40, 4, 4)
    )
    (base / "bundle").symlink_to(random_bundle((4, 16, 16), fmaps=1), target_is_directory=True)
    n = 12
    table = pd.DataFrame(
        {
            "syn_id": np.arange(n, dtype=np.int64) + 100,
            "body": rng.integers(1, 4, n),
            "x": rng.integers(10, 118, n),
            "y": rng.integers(10, 118, n),
            "z": rng.integers(3, 21, n),
        }
    )
    table.to_csv(base / "gaba.csv", index=False)
    return base, table


def cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_db_import_and_predict_positions_put_voxels_at_the_same_nm(site, tmp_path):
    base, table = site
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    voxels = ("--units", "voxels")
    for typed in ("4,4,40", "40,4,4"):  # x,y,z as FlyWire writes it; z,y,x as db import read
        refused = cli(
            "db", "import", "--db", url, *voxels, "--voxel-size", typed, base / "gaba.csv"
        )
        assert refused.exit_code == 1 and "Traceback" not in refused.output
        [line] = refused.output.strip().splitlines()
        assert f"--voxel-size {typed} is ambiguous" in line and "x=4,y=4,z=40" in line
    imported = cli(
        "db", "import", "--db", url, *voxels, "--voxel-size", "x=4,y=4,z=40", base / "gaba.csv"
    )
    assert imported.exit_code == 0, imported.output
    out = tmp_path / "out"
    predicted = cli(
        "predict-positions", "--model", base / "bundle", "--volume", base / "raw.zarr",
        "--dataset", "raw", "--positions", base / "gaba.csv", "--out", out, *voxels,
        "--voxel-size", "4,4,40", "--no-progress",
    )  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    with open_database(url, create=False) as db:
        stored = db.synapses().set_index("synapse_id").loc[table["syn_id"]]
    got = pd.read_parquet(out / "synapses.parquet").set_index("id").loc[table["syn_id"]]
    expected = table[["x", "y", "z"]].to_numpy() * [4.0, 4.0, 40.0]
    np.testing.assert_array_equal(got[["x_nm", "y_nm", "z_nm"]].to_numpy(), expected)
    np.testing.assert_array_equal(stored[["x", "y", "z"]].to_numpy(), expected)
    assert (got["status"] != "outside_volume").all()


def test_db_import_and_predict_positions_print_the_same_error_line(site, tmp_path):
    base, table = site
    bad = table.astype({"y": object})
    bad.loc[3, "y"] = "twelve"
    bad.to_csv(tmp_path / "gaba.csv", index=False)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    imported = cli("db", "import", "--db", url, "--units", "voxels", "--voxel-size", "8",
                   tmp_path / "gaba.csv")  # fmt: skip
    predicted = cli(
        "predict-positions", "--model", base / "bundle", "--volume", base / "raw.zarr",
        "--dataset", "raw", "--positions", tmp_path / "gaba.csv", "--out", tmp_path / "out",
        "--units", "voxels", "--voxel-size", "8", "--no-progress",
    )  # fmt: skip
    assert imported.exit_code == predicted.exit_code == 1
    assert imported.output == predicted.output
    assert imported.output.strip() == (
        f"error: {tmp_path / 'gaba.csv'}, column y, line 5: 'twelve' is not a number"
    )
