"""Reading processes that hand batches over through shared-memory slots."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest
from conftest import pipe_in_place_of

from synister.predict import PatchBatches
from synister.predict.ring import RingReader
from synister.volumes import Volume, write_volume

pytestmark = pytest.mark.timeout(120)

VOXEL_NM = np.array([40, 4, 4])
INPUT_VOX = (4, 16, 16)


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Volume:
    path = tmp_path_factory.mktemp("ring") / "raw.zarr"
    rng = np.random.default_rng(3)
    write_volume(path, rng.integers(0, 256, (16, 64, 64), dtype=np.uint8), VOXEL_NM)
    return Volume(path, "raw")


def batches_of(volume: Volume, n: int, batch_size: int, seed: int = 0) -> PatchBatches:
    rng = np.random.default_rng(seed)
    centers_nm = (2 + rng.random((n, 3)) * np.array([12, 60, 60])) * VOXEL_NM
    return PatchBatches(volume, np.arange(n) * 7, centers_nm, INPUT_VOX, batch_size)


@pytest.mark.filterwarnings("ignore:.*reach outside the volume:UserWarning")
@pytest.mark.parametrize("readers, slots", [(1, 1), (2, 2)])
def test_batches_arrive_in_order_equal_to_direct_reads(volume, readers, slots):
    batches = batches_of(volume, 53, 5)  # 11 batches, the last of 3
    got = [
        (ids.numpy().copy(), raw.numpy().copy())
        for ids, raw in RingReader(batches, readers, __name__, slots)
    ]
    assert len(got) == len(batches)
    for i, (ids, raw) in enumerate(got):
        want_ids, want_raw = batches[i]
        np.testing.assert_array_equal(ids, want_ids.numpy())
        np.testing.assert_array_equal(raw, want_raw.numpy())
    assert not multiprocessing.active_children()


def test_a_reading_error_names_the_batch_and_stops_the_readers(volume):
    batches = batches_of(volume, 20, 4)
    batches.centers_nm[9] = np.nan  # batch 2 cannot be read
    with pytest.raises(RuntimeError, match=r"reading batch 2: ValueError: centers_nm row 1"):
        for _ in RingReader(batches, 2, __name__):
            pass
    assert not multiprocessing.active_children()


def test_a_reading_process_that_dies_is_reported_not_waited_for(tmp_path):
    """The reader is killed while it waits for a chunk that cannot be read (a named pipe): the
    consumer, waiting for that batch, says which process ended and how."""
    raw = np.random.default_rng(0).integers(0, 256, (16, 64, 64), dtype=np.uint8)
    write_volume(tmp_path / "raw.zarr", raw, VOXEL_NM)
    for chunk in (tmp_path / "raw.zarr" / "raw" / "c").rglob("*"):
        if chunk.is_file():
            pipe_in_place_of(chunk)
    batches = batches_of(Volume(tmp_path / "raw.zarr", "raw"), 8, 4)

    def kill_the_reader():
        while not (readers := multiprocessing.active_children()):
            time.sleep(0.01)
        os.kill(readers[0].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_reader)
    killer.start()
    with pytest.raises(RuntimeError, match="prediction-reader-0 ended with exit code -9"):
        for _ in RingReader(batches, 1, __name__):
            pass
    killer.join()
    assert not multiprocessing.active_children()
