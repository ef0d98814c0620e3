import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial import cKDTree

from synister.augment import AugmentPipeline
from synister.data import TrainingData, collate_samples, training_loader, training_synapses
from synister.volumes import normalize, write_volume

VOXEL_NM = (40, 4, 4)
OFFSET_NM = (400, 80, 120)
SHAPE_VOX = (24, 144, 144)
PATCH = (8, 32, 32)
CLASSES = ["gaba", "acetylcholine", "glutamate"]


@pytest.fixture(scope="module")
def raw_volume(tmp_path_factory):
    data = np.random.default_rng(0).integers(0, 256, size=SHAPE_VOX, dtype=np.uint8)
    path = tmp_path_factory.mktemp("vol") / "raw.zarr"
    volume = write_volume(path, data, VOXEL_NM, OFFSET_NM, chunks_vox=(8, 32, 32))
    return volume, data


def synapse_table(counts=(60, 8, 2), seed=0) -> pd.DataFrame:
    """Imbalanced classes, all far enough inside the volume for a jittered patch to fit."""
    rng = np.random.default_rng(seed)
    n = sum(counts)
    # the augmentation context, shifted by the jitter, stays inside the volume
    margin = np.asarray(AugmentPipeline(PATCH).context_shape_vox) // 2 + np.asarray(PATCH) // 4
    vox = rng.integers(margin, np.asarray(SHAPE_VOX) - margin, size=(n, 3))
    nm = np.asarray(OFFSET_NM) + (vox + rng.random((n, 3))) * np.asarray(VOXEL_NM)
    return pd.DataFrame(
        {
            "synapse_id": np.arange(100, 100 + n),
            "z": nm[:, 0],
            "y": nm[:, 1],
            "x": nm[:, 2],
            "skeleton_id": np.arange(n) // 2,
            "label": np.repeat(np.arange(len(counts)), counts),
        }
    )


def test_classes_are_drawn_uniformly_despite_imbalance(raw_volume):
    table = synapse_table()
    data = TrainingData(table, raw_volume[0], PATCH, CLASSES, augment=False)
    _, labels, ids = data.sample_locations(np.random.default_rng(1), 30000)
    freq = np.bincount(labels, minlength=3) / len(labels)
    np.testing.assert_allclose(freq, 1 / 3, atol=0.015)
    # within a class, every synapse is drawn; ids carry the right label
    id_to_label = dict(zip(table["synapse_id"], table["label"], strict=True))
    assert all(id_to_label[i] == k for i, k in zip(ids[:500], labels[:500], strict=True))
    assert set(ids[labels == 2]) == set(table.loc[table.label == 2, "synapse_id"])


@pytest.mark.parametrize(
    ("fraction", "expected_ranges"),
    [
        (1 / 8, [(4, 5), (14, 18), (14, 18)]),  # the original: 1/8 of every axis
        (1 / 2, [(2, 6), (8, 24), (8, 24)]),  # central 1/8 of the volume: +-1/4 of every axis
    ],
)
def test_synapse_lies_uniformly_in_the_central_region(raw_volume, fraction, expected_ranges):
    volume = raw_volume[0]
    table = synapse_table()
    data = TrainingData(
        table, volume, PATCH, CLASSES, augment=False, synapse_region_fraction=fraction
    )
    centers_nm, _, ids = data.sample_locations(np.random.default_rng(2), 20000)
    positions = table.set_index("synapse_id").loc[ids, ["z", "y", "x"]].to_numpy()
    first_vox = volume.patch_starts_vox(centers_nm, PATCH)
    index = volume.center_vox(positions, PATCH) - first_vox  # synapse voxel inside the patch
    for axis, (low, high) in enumerate(expected_ranges):
        np.testing.assert_array_equal(np.unique(index[:, axis]), np.arange(low, high))
        counts = np.bincount(index[:, axis] - low)
        assert counts.min() > 0.7 * counts.mean()


def test_unaugmented_patch_equals_normalised_numpy_slice(raw_volume):
    volume, data_array = raw_volume
    data = TrainingData(synapse_table(), volume, PATCH, CLASSES, augment=False, read_batch=3)
    stream = iter(data)
    for _ in range(5):
        sample = next(stream)
        assert sample["raw"].shape == (1, *PATCH) and sample["raw"].dtype == torch.float32
        start = volume.patch_starts_vox(np.asarray(sample["params"]["center_nm"]), PATCH)
        z, y, x = start
        expected = normalize(data_array[z : z + PATCH[0], y : y + PATCH[1], x : x + PATCH[2]])
        assert expected.shape == PATCH
        np.testing.assert_array_equal(sample["raw"][0].numpy(), expected)


def test_augmented_stream_is_deterministic_per_seed(raw_volume):
    table = synapse_table()

    def first(seed, n=4):
        stream = iter(TrainingData(table, raw_volume[0], PATCH, CLASSES, seed=seed, read_batch=2))
        return [next(stream) for _ in range(n)]

    a, b, c = first(5), first(5), first(6)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["raw"], y["raw"]) and x["params"] == y["params"]
        assert x["raw"].min() >= -1 and x["raw"].max() <= 1
    assert not all(torch.equal(x["raw"], z["raw"]) for x, z in zip(a, c, strict=True))


def test_a_logged_sample_replays_from_its_params(raw_volume):
    volume = raw_volume[0]
    data = TrainingData(synapse_table(), volume, PATCH, CLASSES, seed=1, read_batch=4)
    stream = iter(data)
    for _ in range(3):
        sample = next(stream)
        params = json.loads(json.dumps(sample["params"]))
        context = volume.read_patches(
            np.asarray([params["center_nm"]]), data.pipeline.context_shape_vox
        )
        replayed = data.pipeline.apply(context[0], params)
        assert torch.equal(replayed, sample["raw"][0])


def test_loader_batches_and_workers_are_reproducible(raw_volume):
    data = TrainingData(synapse_table(), raw_volume[0], PATCH, CLASSES, seed=3, read_batch=2)

    def batches(n=3):
        loader = training_loader(data, batch_size=4, num_workers=2, seed=3)
        it = iter(loader)
        got = [next(it) for _ in range(n)]
        del it, loader
        return got

    one, two = batches(), batches()
    batch = one[0]
    assert batch["raw"].shape == (4, 1, *PATCH) and batch["raw"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["synapse_id"].dtype == torch.int64
    assert len(batch["params"]) == 4 and "elastic" in batch["params"][0]
    for x, y in zip(one, two, strict=True):
        assert torch.equal(x["raw"], y["raw"]) and torch.equal(x["label"], y["label"])
    # the two workers draw different streams
    assert not torch.equal(one[0]["raw"], one[1]["raw"])


def test_collate_keeps_params_as_a_list():
    samples = [
        {"raw": torch.zeros(1, 2, 2, 2), "label": k, "synapse_id": -1, "params": {"k": k}}
        for k in range(3)
    ]
    batch = collate_samples(samples)
    assert batch["raw"].shape == (3, 1, 2, 2, 2)
    assert batch["label"].tolist() == [0, 1, 2]
    assert batch["params"] == [{"k": 0}, {"k": 1}, {"k": 2}]


# ---- neither -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coarse_volume(tmp_path_factory):
    """8 x 8 x 8 um at 250 nm voxels: room for locations 2-4 um from a synapse."""
    path = tmp_path_factory.mktemp("coarse") / "raw.zarr"
    return write_volume(path, np.zeros((32, 32, 32), np.uint8), (250, 250, 250))


def neither_table() -> pd.DataFrame:
    nm = np.array([[2000, 2000, 2000], [6000, 6000, 6000], [2000, 6000, 4000]], dtype=float)
    return pd.DataFrame(
        {"synapse_id": [1, 2, 3], "z": nm[:, 0], "y": nm[:, 1], "x": nm[:, 2], "label": [0, 1, 1]}
    )


def test_neither_locations_keep_their_distances_and_stay_inside(coarse_volume):
    table = neither_table()
    others = np.array([[4000, 4000, 4000]], dtype=float)  # a synapse outside the training table
    all_nm = np.vstack([table[["z", "y", "x"]].to_numpy(), others])
    classes = ["gaba", "acetylcholine", "neither"]
    data = TrainingData(
        table, coarse_volume, (4, 4, 4), classes, neither=True, all_synapses_nm=all_nm
    )
    points = data.neither_locations(np.random.default_rng(0), 500)
    assert points.shape == (500, 3)
    nearest_any, _ = cKDTree(all_nm).query(points)
    nearest_known, _ = cKDTree(table[["z", "y", "x"]].to_numpy()).query(points)
    assert nearest_any.min() >= 2000 and nearest_known.max() <= 4000
    assert points.min() >= 0 and points.max() < 8000
    _, labels, ids = data.sample_locations(np.random.default_rng(1), 3000)
    assert abs(np.mean(labels == 2) - 1 / 3) < 0.03
    assert np.all(ids[labels == 2] == -1) and np.all(ids[labels != 2] > 0)


def test_neither_without_room_is_a_clear_error(tmp_path):
    tiny = write_volume(tmp_path / "tiny.zarr", np.zeros((8, 8, 8), np.uint8), (100, 100, 100))
    table = neither_table().assign(z=400.0, y=400.0, x=400.0)
    with pytest.raises(ValueError, match="no 'neither' location"):
        TrainingData(table, tiny, (4, 4, 4), ["gaba", "acetylcholine", "neither"], neither=True)


def test_class_list_and_neither_option_must_agree(raw_volume):
    with pytest.raises(ValueError, match="neither"):
        TrainingData(synapse_table(), raw_volume[0], PATCH, CLASSES, neither=True)


def test_a_class_without_synapses_is_named(raw_volume):
    table = synapse_table()
    table = table[table.label != 1]
    with pytest.raises(ValueError, match="acetylcholine"):
        TrainingData(table, raw_volume[0], PATCH, CLASSES)


# ---- training_synapses ---------------------------------------------------------------------------
class TableDatabase:
    """Just the ``synapses`` query of the Database interface, answering from a frame."""

    def __init__(self, frame):
        self.frame = frame
        self.calls = []

    def synapses(self, *, split=None, part=None):
        self.calls.append((split, part))
        return self.frame[self.frame.part == part].reset_index(drop=True)


def test_training_synapses_keeps_single_known_transmitters_among_the_classes():
    frame = pd.DataFrame(
        {
            "synapse_id": [1, 2, 3, 4, 5, 6],
            "z": [1.0] * 6,
            "y": [2.0] * 6,
            "x": [3.0] * 6,
            "skeleton_id": [10, 11, 12, 13, 14, 15],
            "nt_known": [
                frozenset({"gaba"}),
                frozenset({"gaba", "octopamine"}),  # two transmitters: no single label
                frozenset(),  # unknown
                frozenset({"dopamine"}),  # not a class
                frozenset({"glutamate"}),
                frozenset({"gaba"}),
            ],
            "part": ["train"] * 5 + ["test"],
        }
    )
    db = TableDatabase(frame)
    table = training_synapses(db, "s1", ["GABA", "acetylcholine", "glutamate", "neither"])
    assert db.calls == [("s1", "train")]
    assert table["synapse_id"].tolist() == [1, 5]
    assert table["label"].tolist() == [0, 2]
    assert list(table.columns) == ["synapse_id", "z", "y", "x", "skeleton_id", "label"]


def test_elastic_part_can_be_left_out_of_augmentation(raw_volume):
    """Without the elastic part a patch is read at its own size (no context) and still gets
    mirrored/transposed and intensity-augmented."""
    volume = raw_volume[0]
    data = TrainingData(synapse_table(), volume, PATCH, CLASSES, seed=2, elastic=False)
    assert data.pipeline.elastic is None and data.pipeline.simple is not None
    assert data.pipeline.context_shape_vox == tuple(PATCH)
    sample = next(iter(data))
    assert sample["params"]["elastic"] is None and sample["params"]["intensity"] is not None
    assert TrainingData(synapse_table(), volume, PATCH, CLASSES).pipeline.elastic is not None
