"""``synister explain``: attributions land where a known network looks, the files per synapse,
positions outside the volume, the second class, and bad input that writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from torch import nn
from typer.testing import CliRunner

from synister.cli import app
from synister.config import load_train_setup
from synister.explain import attribute, attribution_mass_ratio, explain_positions
from synister.models import build_model, save_checkpoint
from synister.models.bundle import bundle_from_checkpoint
from synister.setup import prepare_training
from synister.volumes import write_volume

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:.*reach outside the volume:UserWarning"),
]

CLASSES = ["gaba", "acetylcholine", "glutamate"]
VOXEL_NM = (40, 4, 4)
SHAPE_VOX = (16, 96, 96)
INPUT_VOX = (8, 32, 32)
BOX = (slice(2, 5), slice(8, 16), slice(20, 28))  # where the hand-made network looks


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny networks gain nothing from threads; on a loaded machine one is several times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class BoxNetwork(nn.Module):
    """Class 0's logit is the mean input inside BOX (weights 1 there), class 1's that of the
    whole patch; class 2 is constant."""

    def forward(self, x):
        box = x[:, 0, BOX[0], BOX[1], BOX[2]].mean(dim=(1, 2, 3))
        return torch.stack([5 * box, x.mean(dim=(1, 2, 3, 4)), torch.zeros_like(box)], dim=1)


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_attribution_lands_where_the_network_looks(method):
    rng = np.random.default_rng(0)
    patch = rng.integers(150, 256, INPUT_VOX, dtype=np.uint8)  # bright: far from the baseline
    options = {"window_vox": (1, 4, 4), "stride_vox": (1, 4, 4)} if method == "occlusion" else {}
    values, score = attribute(BoxNetwork(), patch, 0, method=method, **options)
    assert values.shape == INPUT_VOX and values.dtype == np.float32
    mask = np.zeros(INPUT_VOX, dtype=bool)
    mask[BOX] = True
    assert np.abs(values[~mask]).max() < 1e-6  # nothing outside the box
    assert attribution_mass_ratio(values, mask) == pytest.approx(1 / mask.mean(), rel=1e-4)
    # a linear score: integrated gradients sum to the score minus the mid-grey baseline's (0);
    # occlusion gives each voxel its box's whole drop (boxes of 16 voxels, not overlapping)
    per_voxel = 16 if method == "occlusion" else 1
    assert values.sum() == pytest.approx(per_voxel * score, rel=1e-3)
    # class 0 against class 1: the whole patch speaks against class 0 a little
    contrast, difference = attribute(BoxNetwork(), patch, 0, other=1, method=method, **options)
    assert difference == pytest.approx(score - float(torch.from_numpy(patch).float().mean()
                                                     / 255 * 2 - 1), rel=1e-4)  # fmt: skip
    assert (contrast[~mask] < 0).all()
    assert contrast.sum() == pytest.approx(per_voxel * difference, rel=1e-3)


def test_mass_ratio_against_hand_computed_values():
    attribution = np.array([[3.0, -1.0], [0.0, 0.0]])
    mask = np.array([[True, False], [False, False]])
    assert attribution_mass_ratio(attribution, mask) == pytest.approx((3 / 4) / (1 / 4))
    assert np.isnan(attribution_mass_ratio(np.zeros((2, 2)), mask))
    with pytest.raises(ValueError, match="differ in shape"):
        attribution_mass_ratio(attribution, mask[:1])


@pytest.fixture(scope="module")
def model_and_volume(tmp_path_factory):
    base = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(1)
    write_volume(base / "raw.zarr", rng.integers(0, 256, SHAPE_VOX, dtype=np.uint8), VOXEL_NM,
                 offset_nm=(400, 40, 40))  # fmt: skip
    setup = prepare_training(
        base, "exp", 0, synapse_types=CLASSES, input_shape=INPUT_VOX, fmaps=2,
        downsample_factors=[(1, 2, 2), (2, 2, 2)], network="ResNet18",
        db_url=f"sqlite:///{base / 'unused.db'}", split_name="s", raw_container="raw.zarr",
        raw_dataset="raw", voxel_size=VOXEL_NM,
    )  # fmt: skip
    cfg, _ = load_train_setup(setup)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(setup / "model_checkpoint_5", build_model(cfg), None, 5)
    bundle = bundle_from_checkpoint(checkpoint, setup / "train_config.ini", base / "bundle")
    positions = pd.DataFrame(
        {   # nm, x, y, z: inside; near the corner (partly outside); far outside
            "synapse_id": [11, 12, 13],
            "x": [240.0, 44.0, 9000.0],
            "y": [200.0, 44.0, 200.0],
            "z": [720.0, 400.0, 720.0],
        }
    )  # fmt: skip
    table = base / "positions.csv"
    positions.to_csv(table, index=False)
    return bundle, base / "raw.zarr", table, checkpoint


def test_explain_writes_a_zarr_and_a_montage_per_synapse(model_and_volume, tmp_path):
    checkpoint, volume, table, _ = model_and_volume
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["explain", "--model", str(checkpoint), "--volume", str(volume), "--dataset", "raw",
         "--positions", str(table), "--out", str(out), "--second-class", "ACh", "--steps", "8",
         "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "explained 2 synapses" in result.output and "1 outside the volume" in result.output
    index = pd.read_csv(out / "explanations.csv")
    assert index["id"].tolist() == [11, 12, 13]
    assert index["status"].tolist() == ["ok", "partly_outside", "outside_volume"]
    assert index["x"].tolist() == [240.0, 44.0, 9000.0]
    assert pd.isna(index.loc[2, "zarr"])

    group = zarr.open_group(out / "synapse_11.zarr", mode="r")
    raw = group["raw"][:]
    assert raw.shape == INPUT_VOX and raw.dtype == np.uint8
    # the patch is the box [p - S//2 voxels, + S) snapped to the nearest voxel grid line (nm)
    half_nm = np.array(INPUT_VOX) // 2 * VOXEL_NM
    start_nm = np.rint((np.array([720, 200, 240]) - half_nm) / VOXEL_NM) * VOXEL_NM
    assert group["raw"].attrs["offset"] == pytest.approx(start_nm.tolist())
    assert group.attrs["resolution"] == list(VOXEL_NM)
    predicted = index.loc[0, "predicted"]
    names = sorted(k for k in group.array_keys() if k != "raw")
    contrast = "acetylcholine" if predicted != "acetylcholine" else None
    assert f"attribution_{predicted}" in names and len(names) == 2
    if contrast:
        assert f"attribution_{predicted}_vs_acetylcholine" in names
    values = group[f"attribution_{predicted}"][:]
    assert values.shape == INPUT_VOX and np.isfinite(values).all() and np.abs(values).sum() > 0
    assert sum(group.attrs["probabilities"]) == pytest.approx(1)
    assert (out / "synapse_11.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "synapse_12.png").is_file() and not (out / "synapse_13.png").exists()


def test_explain_resumes_and_redoes_on_other_settings(model_and_volume, tmp_path):
    _, volume, table, checkpoint = model_and_volume  # a checkpoint in its setup
    out = tmp_path / "out"
    kwargs = {"dataset": "raw", "progress": False}
    explain_positions(checkpoint, str(volume), table, out, n_steps=4, **kwargs)
    written = (out / "synapse_11.png").stat().st_mtime_ns
    explain_positions(checkpoint, str(volume), table, out, n_steps=4, **kwargs)
    assert (out / "synapse_11.png").stat().st_mtime_ns == written  # kept
    explain_positions(checkpoint, str(volume), table, out, method="occlusion",
                      window_vox=(4, 16, 16), **kwargs)  # fmt: skip
    attrs = json.loads((out / "synapse_11.zarr" / "zarr.json").read_text())["attributes"]
    assert attrs["settings"]["method"] == "occlusion"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--second-class": "histamine"}, "--second-class: unknown transmitter"),
        ({"--second-class": "dopamine"}, "'dopamine' is not a class of the model"),
        ({"--positions": "no_xyz.csv"}, r"no_xyz.csv: no position columns \(looked for x,y,z"),
        ({"--positions": "text.csv"}, r"text.csv, column y, line 3: 'abc' is not a number"),
        ({"--units": "voxels"}, "no --voxel-size was given"),
        ({"--model": "nothing"}, "nothing: not a model"),
        ({"--model": "."}, "not a model bundle: no model.json"),
        ({"--method": "saliency"}, "--method must be one of"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(model_and_volume, tmp_path, change, message):
    checkpoint, volume, table, _ = model_and_volume
    pd.DataFrame({"x": [1.0], "q": [2.0]}).to_csv(tmp_path / "no_xyz.csv", index=False)
    pd.DataFrame({"x": [1.0, 2.0], "y": ["3", "abc"], "z": [1, 2]}).to_csv(
        tmp_path / "text.csv", index=False
    )
    args = {"--model": str(checkpoint), "--volume": str(volume), "--dataset": "raw",
            "--positions": str(table), "--out": str(tmp_path / "out")}  # fmt: skip
    for key, value in change.items():
        args[key] = str(tmp_path / value) if key in ("--positions", "--model") else value
    result = CliRunner().invoke(app, ["explain", *[x for kv in args.items() for x in kv]])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1, result.output
    import re

    assert re.search(message, result.output), result.output
    assert not (tmp_path / "out").exists()


def test_second_class_equal_to_the_prediction_contrasts_with_the_runner_up(model_and_volume,
                                                                         tmp_path):  # fmt: skip
    checkpoint, volume, table, _ = model_and_volume
    out = tmp_path / "first"
    first = explain_positions(checkpoint, str(volume), table, out, dataset="raw", n_steps=4,
                              progress=False)  # fmt: skip
    predicted = first.loc[0, "predicted"]
    index = explain_positions(checkpoint, str(volume), table, tmp_path / "second",
                              dataset="raw", second_class=predicted, n_steps=4,
                              progress=False)  # fmt: skip
    explained = index.loc[0, "explained"].split(";")
    assert explained[0] == predicted and explained[1].startswith(f"{predicted}_vs_")
    assert Path(tmp_path / "second" / "synapse_11.zarr").is_dir()


def test_limit_keeps_the_first_rows_and_parquet_tables_work(model_and_volume, tmp_path):
    """Also: tables are read as predict-positions reads them (voxel units, named columns)."""
    bundle, volume, table, _ = model_and_volume
    parquet = tmp_path / "positions.parquet"
    pd.read_csv(table).to_parquet(parquet)
    index = explain_positions(bundle, str(volume), parquet, tmp_path / "out", dataset="raw",
                              limit=1, n_steps=2, progress=False)  # fmt: skip
    assert index["id"].tolist() == [11]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "explanations.csv", "synapse_11.png", "synapse_11.zarr"
    ]  # fmt: skip
    voxels = pd.read_csv(table)
    voxels = pd.DataFrame({"syn": voxels["synapse_id"], "px": voxels["x"] / 4,
                           "py": voxels["y"] / 4, "pz": voxels["z"] / 40})  # fmt: skip
    voxels.to_csv(tmp_path / "voxels.csv", index=False)
    again = explain_positions(
        bundle, str(volume), tmp_path / "voxels.csv", tmp_path / "voxels", dataset="raw",
        limit=1, n_steps=2, progress=False, table_options={
            "units": "voxels", "voxel_size": "4,4,40", "id_column": "syn",
            "position_columns": ["px", "py", "pz"]},
    )  # fmt: skip
    assert again["id"].tolist() == [11]
    assert (
        again.loc[0, ["x_nm", "y_nm", "z_nm"]].tolist()
        == index.loc[0, ["x_nm", "y_nm", "z_nm"]].tolist()
    )
    assert again.loc[0, "probability"] == pytest.approx(index.loc[0, "probability"])
