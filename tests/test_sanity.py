"""The positions check every command that reads positions runs (synister.volumes.sanity).

The numbers are those of the README's demo: a 40 x 384 x 384 voxel volume of 40 x 4 x 4 nm and
a network that sees 8 x 48 x 48 voxels; 100 synapses whose patches lie wholly inside. Read the
wrong way they gave, with exit status 0, "0 ok, 100 partly outside" (voxels read as nm),
"100 outside the volume" (nm read as voxels) and every position outside (--voxel-size 40,4,4).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from synister.cli import app
from synister.predict import predict_positions, prepare_positions
from synister.volumes import Volume, create_volume
from synister.volumes.sanity import PositionMismatch, PositionWarning, check_positions

SHAPE_VOX = (40, 384, 384)
VOXEL_NM = (40.0, 4.0, 4.0)  # z, y, x
PATCH_VOX = (8, 48, 48)


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sanity") / "raw.zarr"
    create_volume(path, SHAPE_VOX, VOXEL_NM)  # never written: zeros, made in milliseconds
    return str(path)


@pytest.fixture(scope="module")
def synapses_vox() -> pd.DataFrame:
    """100 positions (x, y, z voxels) whose patches lie wholly inside the volume."""
    rng = np.random.default_rng(0)
    low = np.array(PATCH_VOX) // 2
    high = np.array(SHAPE_VOX) - np.array(PATCH_VOX) // 2 - 1
    zyx = rng.integers(low, high, size=(100, 3))
    return pd.DataFrame({"id": np.arange(100), "x": zyx[:, 2], "y": zyx[:, 1], "z": zyx[:, 0]})


def nm_table(vox: pd.DataFrame) -> pd.DataFrame:
    return vox.assign(x=vox.x * VOXEL_NM[2], y=vox.y * VOXEL_NM[1], z=vox.z * VOXEL_NM[0])


def check(volume, table: pd.DataFrame, units="nm", voxel_size=None):
    centers = table[["z", "y", "x"]].to_numpy(float)
    if units == "voxels":
        centers = centers * np.asarray(voxel_size, float)[::-1]
    return check_positions(
        Volume(volume, "raw"), centers, PATCH_VOX, units=units, voxel_size_xyz_nm=voxel_size
    )


def test_right_readings_pass(volume, synapses_vox):
    for result in (
        check(volume, nm_table(synapses_vox)),
        check(volume, synapses_vox, "voxels", (4, 4, 40)),
    ):
        assert (result.ok, result.count) == (100, 100) and not result.suspicious
        assert result.cause is None


def test_voxels_read_as_nm(volume, synapses_vox):
    result = check(volume, synapses_vox)
    assert (result.ok, result.partly_outside, result.outside) == (0, 100, 0)
    assert result.suspicious
    assert result.cause == "the table is in voxels, read as nm"
    assert result.fix == "--units voxels --voxel-size 4,4,40" and result.fixed_ok == 100
    message = result.message()
    assert "0 of 100 positions lie with their whole patch inside the volume" in message
    assert "the volume x 0-1,536, y 0-1,536, z 0-1,600 nm" in message


def test_nm_read_as_voxels(volume, synapses_vox):
    result = check(volume, nm_table(synapses_vox), "voxels", (4, 4, 40))
    assert (result.ok, result.outside) == (0, 100)
    assert result.cause == "the table is in nm, read as voxels"
    assert result.fix == "--units nm" and result.fixed_ok == 100


def test_voxel_size_typed_z_y_x(volume, synapses_vox):
    result = check(volume, synapses_vox, "voxels", (40, 4, 4))
    assert result.ok == 0 and result.outside >= 90
    assert result.cause == "--voxel-size 40,4,4 was typed z,y,x; it is read x,y,z"
    assert result.fix == "--voxel-size x=4,y=4,z=40" and result.fixed_ok == 100


def test_columns_holding_z_y_x(synapses_vox, tmp_path):
    """(In the demo's volume z and x span about as far: a swap fits. A flatter one tells.)"""
    flat = tmp_path / "flat.zarr"
    create_volume(flat, (10, 384, 384), VOXEL_NM)
    inside = nm_table(synapses_vox).assign(z=200.0)
    assert not check(str(flat), inside).suspicious
    result = check(str(flat), inside.rename(columns={"x": "z", "z": "x"}))
    assert result.cause == "the position columns hold z,y,x, read as x,y,z"


def test_no_mix_up_explains_positions_of_another_volume(volume, synapses_vox):
    far = nm_table(synapses_vox).assign(x=lambda t: t.x + 10**7)
    result = check(volume, far)
    assert result.suspicious and result.cause is None
    assert "no units or axis mix-up explains it" in result.message()


# -- through the engine's shared preparation: predict-positions, the service, predict_positions


def test_prepare_positions_warns_or_refuses(volume, synapses_vox, random_bundle, tmp_path):
    bundle = random_bundle(PATCH_VOX)
    table = tmp_path / "vox.csv"
    synapses_vox.to_csv(table, index=False)
    job = prepare_positions(bundle, volume, table, dataset="raw")
    [warning] = [w for w in job.warnings if "likely cause" in w]
    assert warning.startswith(f"{table}: 0 of 100 positions")
    assert "likely cause: the table is in voxels, read as nm" in warning
    with pytest.raises(PositionMismatch, match="likely cause: the table is in voxels"):
        prepare_positions(bundle, volume, table, dataset="raw", strict=True)
    right = prepare_positions(bundle, volume, table, dataset="raw", units="voxels", voxel_size=4)
    assert right.check.suspicious  # 4 nm isotropic: z stretched ten times too little
    assert right.check.fix == "--voxel-size 4,4,40"
    with pytest.warns(PositionWarning, match="in voxels, read as nm"):
        predict_positions(bundle, volume, table, dataset="raw", batch_size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PositionWarning)
        predict_positions(
            bundle, volume, table, dataset="raw", units="voxels", voxel_size="4,4,40",
            batch_size=100,
        )  # fmt: skip


def test_predict_positions_command_warns_and_strict_fails(
    volume, synapses_vox, random_bundle, tmp_path
):
    bundle = random_bundle(PATCH_VOX)
    table = tmp_path / "vox.csv"
    synapses_vox.to_csv(table, index=False)
    args = ["predict-positions", "--model", bundle, "--volume", volume, "--dataset", "raw"]
    args += ["--positions", table, "--no-progress", "--threads", "1", "--read-workers", "0"]
    runner = CliRunner()
    strict = runner.invoke(app, [str(a) for a in [*args, "--out", tmp_path / "s", "--strict"]])
    assert strict.exit_code == 1 and "Traceback" not in strict.output
    [line] = strict.stderr.strip().splitlines()
    assert line.startswith("error: ") and "likely cause: the table is in voxels" in line
    assert not (tmp_path / "s").exists()
    loose = runner.invoke(app, [str(a) for a in [*args, "--out", tmp_path / "l"]])
    assert loose.exit_code == 0, loose.output
    warned = [w for w in loose.stderr.splitlines() if w.startswith("WARNING: ")]
    assert any("--strict makes this an error" in w for w in warned)
    summary = json.loads((tmp_path / "l" / "run.json").read_text())["summary"]
    assert summary["positions_check"]["cause"] == "the table is in voxels, read as nm"
    assert "likely cause" in (tmp_path / "l" / "report.html").read_text()


def test_the_service_gets_the_warning(volume, synapses_vox, random_bundle, tmp_path):
    from synister.serve.config import VolumeChoice
    from synister.serve.engine import EngineJob, run_job

    table = tmp_path / "nm.csv"
    nm_table(synapses_vox).to_csv(table, index=False)
    job = EngineJob(
        table, random_bundle(PATCH_VOX), VolumeChoice(url=volume, dataset="raw"),
        options={"units": "voxels", "voxel_size": "4,4,40"}, threads=1,
    )  # fmt: skip
    summary = run_job(job, tmp_path / "out", lambda stored, total: None)
    assert any("the table is in nm, read as voxels" in w for w in summary["warnings"])
