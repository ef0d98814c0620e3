"""The prediction engine: one predictor, fed from volume positions or from patches in memory,
with precision, temperature and a test-time augmentation hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synister.predict import Predictor, network_input
from synister.volumes import Volume, normalize, write_volume

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:.*reach outside the volume:UserWarning"),
]

VOXEL_NM = np.array([40, 4, 4])
INPUT_VOX = (4, 16, 16)
CLASSES = ["gaba", "acetylcholine", "glutamate"]


class TinyNet(torch.nn.Sequential):
    def __init__(self, classes: int = 3):
        torch.manual_seed(0)
        super().__init__(
            torch.nn.Conv3d(1, 4, 3),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool3d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(4, classes),
        )


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Volume:
    raw = np.random.default_rng(3).integers(0, 256, (12, 64, 64), dtype=np.uint8)
    return write_volume(tmp_path_factory.mktemp("engine") / "raw.zarr", raw, VOXEL_NM)


def positions(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3)) * np.array([12, 64, 64]) * VOXEL_NM


class Collect:
    """A sink that keeps what it gets."""

    def __init__(self):
        self.ids, self.probabilities = [], []

    def __call__(self, ids: np.ndarray, probabilities: np.ndarray) -> None:
        self.ids.append(ids.copy())
        self.probabilities.append(probabilities.copy())

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.ids), np.concatenate(self.probabilities)


@pytest.mark.parametrize("read_workers", [0, 1])
def test_volume_positions_and_patches_in_memory_give_the_same_probabilities(volume, read_workers):
    centers_nm = positions(45)
    ids = np.arange(45) * 10 + 7
    predictor = Predictor(TinyNet(), INPUT_VOX, CLASSES, batch_size=8, read_workers=read_workers)
    from_volume = Collect()
    assert predictor.predict_volume(volume, ids, centers_nm, from_volume) == 45
    patches = volume.read_patches(centers_nm, INPUT_VOX)  # what a blockwise runner cuts out
    from_memory = Collect()
    assert predictor.predict_patches(ids, patches, from_memory) == 45
    for got in (from_volume, from_memory):
        got_ids, probabilities = got.result()
        np.testing.assert_array_equal(got_ids, ids)  # in the given order, each once
        assert [len(i) for i in got.ids] == [8] * 5 + [5]
    np.testing.assert_allclose(from_volume.result()[1], from_memory.result()[1], atol=1e-6)
    with torch.inference_mode():
        logits = TinyNet()(torch.from_numpy(normalize(patches))[:, None])
    np.testing.assert_allclose(from_memory.result()[1], torch.softmax(logits, 1), atol=1e-6)


def test_temperature_divides_the_logits_and_tta_replaces_the_forward_pass(volume):
    patches = torch.from_numpy(volume.read_patches(positions(10, 1), INPUT_VOX))[:, None]
    with torch.inference_mode():
        logits = TinyNet()(network_input(patches, torch.device("cpu")))
    plain = Predictor(TinyNet(), INPUT_VOX, CLASSES)
    np.testing.assert_allclose(plain.probabilities(patches), torch.softmax(logits, 1), atol=1e-6)
    hot = Predictor(TinyNet(), INPUT_VOX, CLASSES, temperature=2.5)
    np.testing.assert_allclose(
        hot.probabilities(patches), torch.softmax(logits / 2.5, 1), atol=1e-6
    )

    def flip_x(network, x):
        return (network(x) + network(torch.flip(x, dims=[-1]))) / 2

    with torch.inference_mode():
        flipped = TinyNet()(network_input(torch.flip(patches, dims=[-1]), torch.device("cpu")))
    augmented = Predictor(TinyNet(), INPUT_VOX, CLASSES, tta=flip_x, temperature=2.0)
    np.testing.assert_allclose(
        augmented.probabilities(patches), torch.softmax((logits + flipped) / 4, 1), atol=1e-6
    )
    assert augmented.describe()["tta"] == "flip_x" and hot.describe()["temperature"] == 2.5


def test_precision_options(volume):
    with pytest.raises(ValueError, match="fp16 needs a GPU; on the CPU use fp32"):
        Predictor(TinyNet(), INPUT_VOX, CLASSES, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, bf16"):
        Predictor(TinyNet(), INPUT_VOX, CLASSES, precision="half")
    patches = volume.read_patches(positions(16, 2), INPUT_VOX)[:, None]
    fp32 = Predictor(TinyNet(), INPUT_VOX, CLASSES).probabilities(patches)
    bf16 = Predictor(TinyNet(), INPUT_VOX, CLASSES, precision="bf16").probabilities(patches)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.03)


def test_bad_networks_inputs_and_settings_are_named(volume):
    predictor = Predictor(TinyNet(2), INPUT_VOX, CLASSES)
    patches = volume.read_patches(positions(4, 3), INPUT_VOX)
    with pytest.raises(ValueError, match=r"logits of shape \(4, 2\), expected \(4, 3\)"):
        predictor.predict_patches(np.arange(4), patches, Collect())
    with pytest.raises(ValueError, match=r"uint8 \(N, Z, Y, X\), got torch.float32"):
        predictor.predict_patches(np.arange(4), patches.astype(np.float32), Collect())
    with pytest.raises(ValueError, match="4 ids but 3 patches"):
        predictor.predict_patches(np.arange(4), patches[:3], Collect())
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        Predictor(TinyNet(), INPUT_VOX, CLASSES, temperature=0)


def test_threads_are_set_for_the_run_and_restored(volume):
    previous = torch.get_num_threads()
    seen = []

    def sink(ids, probabilities):
        seen.append(torch.get_num_threads())

    Predictor(TinyNet(), INPUT_VOX, CLASSES, threads=1, batch_size=4).predict_volume(
        volume, np.arange(8), positions(8), sink
    )
    assert seen == [1, 1] and torch.get_num_threads() == previous
