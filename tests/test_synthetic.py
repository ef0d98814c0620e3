"""The synthetic dataset: format, metadata, reproducibility, designed class differences, oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synister.nt import TRANSMITTERS
from synister.synthetic import PRESETS, generate, oracle_accuracy, oracle_from_latents
from synister.synthetic.latents import sample_hierarchy
from synister.synthetic.layout import place_synapses
from synister.volumes import Volume

SMALL = (32, 448, 448)  # 75 synapses fit; ~0.1 s per section


@pytest.fixture(scope="module")
def easy_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("easy")
    generate(out, preset="easy", seed=3, shape_vox=SMALL)
    return out


@pytest.fixture(scope="module")
def fafb_n5_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fafb")
    generate(out, preset="fafb", seed=4, shape_vox=SMALL, format="n5", montages=False)
    return out


def _check_tables(d: Path, shape_vox) -> None:
    synapses = json.loads((d / "synapses.json").read_text())
    skeletons = json.loads((d / "skeletons.json").read_text())
    hemi_lineages = json.loads((d / "hemi_lineages.json").read_text())
    extent_nm = np.array(shape_vox) * [40, 4, 4]
    assert len(synapses) > 48
    for sid, rec in synapses.items():
        assert int(sid) > 0 and set(rec) == {"x", "y", "z", "skeleton_id", "prepost"}
        assert rec["prepost"] == "pre" and str(rec["skeleton_id"]) in skeletons
        zyx = np.array([rec["z"], rec["y"], rec["x"]])
        # a 16x160x160 patch fits in y,x; in z at least 2 sections stay free on each side
        assert np.all(zyx[1:] >= 80 * 4) and np.all(zyx[1:] <= extent_nm[1:] - 80 * 4)
        assert 2 * 40 <= zyx[0] <= extent_nm[0] - 2 * 40
    for rec in skeletons.values():
        assert str(rec["hemi_lineage_id"]) in hemi_lineages
        assert len(rec["nt_known"]) == 1 and rec["nt_known"][0] in TRANSMITTERS
        nt_guess = hemi_lineages[str(rec["hemi_lineage_id"])]["nt_guess"]
        assert nt_guess == rec["nt_known"]  # one transmitter per hemilineage
    for rec in hemi_lineages.values():
        assert isinstance(rec["hemi_lineage_name"], str)


def test_easy_zarr_dataset(easy_dir):
    _check_tables(easy_dir, SMALL)
    attrs = json.loads((easy_dir / "raw.zarr" / "raw" / "zarr.json").read_text())["attributes"]
    assert attrs["resolution"] == [40, 4, 4] and attrs["offset"] == [0, 0, 0]
    vol = Volume(easy_dir / "raw.zarr", "raw")
    raw = vol.read_region_vox((0, 0, 0), SMALL)
    assert raw.dtype == np.uint8 and raw.shape == SMALL
    assert 20 < raw.std() < 80 and 100 < raw.mean() < 200  # EM-like grey levels, not blank
    summary = json.loads((easy_dir / "summary.json").read_text())
    assert summary["raw_container"] == "raw.zarr" and summary["raw_dataset"] == "raw"
    assert summary["shape_vox"] == list(SMALL) and summary["voxel_size_nm"] == [40, 4, 4]
    counts = summary["counts_per_class"]
    assert all(counts[nt]["neurons"] >= 4 for nt in TRANSMITTERS)
    assert sum(c["synapses"] for c in counts.values()) == summary["n_synapses"]
    for nt in TRANSMITTERS:
        assert (easy_dir / f"montage_{nt}.png").stat().st_size > 10_000
    lat = pd.read_parquet(easy_dir / "latents.parquet")
    assert set(lat["synapse_id"].astype(str)) == set(
        json.loads((easy_dir / "synapses.json").read_text())
    )


def test_synapses_are_visible_in_the_volume(easy_dir):
    """Around a synapse the image holds dark structure (T-bar, vesicle rims) that a network sees."""
    vol = Volume(easy_dir / "raw.zarr", "raw")
    lat = pd.read_parquet(easy_dir / "latents.parquet")
    centers = lat[["z_nm", "y_nm", "x_nm"]].to_numpy()
    near = vol.read_patches(centers, (1, 24, 24)).astype(float)
    assert near.mean() < vol.read_region_vox((0, 0, 0), (SMALL[0], 60, 60)).mean() - 10


def test_fafb_n5_metadata(fafb_n5_dir):
    _check_tables(fafb_n5_dir, SMALL)
    attrs = json.loads((fafb_n5_dir / "raw.n5" / "raw" / "attributes.json").read_text())
    assert attrs["resolution"] == [4, 4, 40] and attrs["offset"] == [0, 0, 0]
    vol = Volume(fafb_n5_dir / "raw.n5", "raw")
    assert vol.read_region_vox((0, 0, 0), SMALL).shape == SMALL


def test_same_seed_same_dataset(easy_dir, tmp_path):
    generate(tmp_path, preset="easy", seed=3, shape_vox=SMALL, montages=False)
    for name in ("synapses.json", "skeletons.json", "hemi_lineages.json"):
        assert (tmp_path / name).read_text() == (easy_dir / name).read_text()
    a = Volume(tmp_path / "raw.zarr", "raw").read_region_vox((0, 0, 0), SMALL)
    b = Volume(easy_dir / "raw.zarr", "raw").read_region_vox((0, 0, 0), SMALL)
    np.testing.assert_array_equal(a, b)
    other = place_synapses(SMALL, 50, np.random.default_rng(4))
    assert not np.array_equal(other, place_synapses(SMALL, 50, np.random.default_rng(3)))


def _skeleton_split(synapses: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random group-disjoint split: about 30 % of each class's skeletons go to test."""
    rng = np.random.default_rng(seed)
    test = []
    for _, sk in synapses.groupby("nt")["skeleton_id"]:
        ids = np.unique(sk)
        test.extend(rng.choice(ids, max(1, round(0.3 * len(ids))), replace=False))
    is_test = synapses["skeleton_id"].isin(test).to_numpy()
    return synapses["synapse_id"][~is_test].to_numpy(), synapses["synapse_id"][is_test].to_numpy()


@pytest.mark.parametrize("preset", ["easy", "fafb"])
def test_oracle_in_band_on_skeleton_split(preset):
    _, _, synapses, model = sample_hierarchy(PRESETS[preset], 20000, np.random.default_rng(11))
    train_ids, test_ids = _skeleton_split(synapses, 0)
    assert not set(synapses.set_index("synapse_id").loc[train_ids, "skeleton_id"]) & set(
        synapses.set_index("synapse_id").loc[test_ids, "skeleton_id"]
    )
    for ids in (train_ids, test_ids):
        acc = oracle_from_latents(synapses, model, ids)
        if preset == "easy":
            assert acc["synapse"] >= 0.95
        else:
            assert 0.85 <= acc["synapse"] <= 0.92
            assert acc["neuron"] >= acc["synapse"] + 0.03
        assert acc["neuron"] >= acc["neuron_vote"] - 0.02  # joint posterior ~ beats the vote


def test_oracle_accuracy_of_folder_matches_latents(fafb_n5_dir):
    lat = pd.read_parquet(fafb_n5_dir / "latents.parquet")
    some = lat["synapse_id"].to_numpy()[::2]
    part = oracle_accuracy(fafb_n5_dir, some)
    assert part["n_synapses"] == len(some)
    whole = oracle_accuracy(fafb_n5_dir)
    summary = json.loads((fafb_n5_dir / "summary.json").read_text())
    assert whole["synapse"] == summary["oracle_synapse_accuracy"]
    with pytest.raises(KeyError, match="not in the dataset"):
        oracle_accuracy(fafb_n5_dir, [1])


def test_class_means_differ_as_designed():
    _, _, syn, _ = sample_hierarchy(PRESETS["fafb"], 8000, np.random.default_rng(5))
    means = syn.groupby("nt").mean(numeric_only=True)
    dense = 1 / (1 + np.exp(-means["dense_core_logit"]))
    for monoamine in ("dopamine", "octopamine", "serotonin"):
        assert dense[monoamine] > dense["acetylcholine"] + 0.05
        assert dense[monoamine] > dense["glutamate"]
    assert (
        means.loc["octopamine", "vesicle_diameter_nm"]
        > means.loc["acetylcholine", "vesicle_diameter_nm"] + 3
    )
    assert (
        means.loc["acetylcholine", "tbar_width_nm"] > means.loc["glutamate", "tbar_width_nm"] + 10
    )
    assert (
        means.loc["glutamate", "cleft_width_nm"]
        > means.loc["acetylcholine", "cleft_width_nm"] + 1.5
    )
    # a neuron's synapses share an offset: within-neuron spread is below the class spread
    ach = syn[syn["nt"] == "acetylcholine"]
    within = ach.groupby("skeleton_id")["vesicle_diameter_nm"].std().mean()
    assert within < ach["vesicle_diameter_nm"].std()


def test_fafb_class_proportions_are_imbalanced_with_a_floor():
    _, skeletons, _, _ = sample_hierarchy(PRESETS["fafb"], 20000, np.random.default_rng(0))
    n = skeletons["nt"].value_counts()
    assert n["acetylcholine"] > n["gaba"] > n["dopamine"] > n["glutamate"] >= 4
    assert n["octopamine"] >= 4 and n["serotonin"] >= 4


def test_bad_requests_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="at most"):
        generate(tmp_path, preset="easy", shape_vox=SMALL, n_synapses=10_000)
    with pytest.raises(ValueError, match="unknown preset"):
        generate(tmp_path, preset="hard", shape_vox=SMALL)


def test_texture_from_real_em(shared_data, tmp_path):
    from PIL import Image

    tex_dir = shared_data / "isbi2012" / "train-volume"
    generate(
        tmp_path,
        preset="easy",
        seed=1,
        shape_vox=(32, 448, 448),
        texture_dir=tex_dir,
        montages=False,
    )
    raw = Volume(tmp_path / "raw.zarr", "raw").read_region_vox((0, 0, 0), (1, 64, 64))[0]
    tex = np.asarray(Image.open(tex_dir / "00.png").convert("L"))[:64, :64]
    r = np.corrcoef(raw.ravel().astype(float), tex.ravel().astype(float))[0, 1]
    assert r > 0.6  # the corner (no synapse) is the real section, blurred and noised


def test_oracle_command_per_split_part(easy_dir, tmp_path):
    from typer.testing import CliRunner

    from synister.cli import app
    from synister.db import open_database
    from synister.db.imports import read_export_file

    url = f"sqlite:///{tmp_path / 'syn.db'}"
    with open_database(url) as db:
        db.import_records(
            synapses=read_export_file(easy_dir / "synapses.json", "synapses"),
            skeletons=read_export_file(easy_dir / "skeletons.json", "skeletons"),
            hemi_lineages=read_export_file(easy_dir / "hemi_lineages.json", "hemi_lineages"),
        )
        lat = pd.read_parquet(easy_dir / "latents.parquet")
        train_ids, test_ids = _skeleton_split(lat, 1)
        parts = pd.DataFrame(
            {
                "synapse_id": np.r_[train_ids, test_ids],
                "part": ["train"] * len(train_ids) + ["test"] * len(test_ids),
            }
        )
        db.write_split("by_skeleton", parts)
    result = CliRunner().invoke(
        app, ["synthetic-oracle", str(easy_dir), "--db", url, "--split", "by_skeleton", "--json"]
    )
    assert result.exit_code == 0, result.output
    parts_out = json.loads(result.stdout)["parts"]
    assert set(parts_out) == {"train", "test"}
    assert parts_out["test"]["n_synapses"] == len(test_ids)
    assert parts_out["test"]["synapse"] == oracle_accuracy(easy_dir, test_ids)["synapse"]
    summary = json.loads((easy_dir / "summary.json").read_text())
    assert summary["oracle_by_split"]["by_skeleton"]["train"]["n_synapses"] == len(train_ids)
