"""Remote volumes against a real HTTP server on loopback (``loopback_http.py``): retries, clear
errors, each chunk fetched once (by one process, and by processes sharing a chunk stage), the
scale of a multiscale volume chosen by voxel size."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import zarr
from loopback_http import LoopbackServer, write_precomputed
from typer.testing import CliRunner

from synister.cli import app
from synister.predict import PatchBatches, predict_positions
from synister.predict.blockwise import Source, predict_volume
from synister.volumes import Volume, locate
from synister.volumes.locate import describe_error, redact, split_location
from synister.volumes.stage import ChunkStage, memory_stage_path, stage_folder

pytestmark = pytest.mark.timeout(300)

SHAPE_VOX = (16, 128, 128)  # z, y, x
INPUT_VOX = (4, 16, 16)
SCALES = {"4_4_40": (40.0, 4.0, 4.0), "8_8_40": (40.0, 8.0, 8.0)}  # key -> z, y, x nm


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A two-scale precomputed volume (raw chunks of 32 x 32 x 8 voxels) in ``pc/``."""
    root = tmp_path_factory.mktemp("served")
    raw = np.random.default_rng(5).integers(0, 256, SHAPE_VOX, dtype=np.uint8)
    write_precomputed(root / "pc", raw, (32, 32, 8))
    return root


@pytest.fixture
def server(folder):
    with LoopbackServer(folder) as running:
        yield running


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Positions (x, y, z nm) spread over the volume, some near its border."""
    rng = np.random.default_rng(1)
    zyx = rng.random((60, 3)) * np.array(SHAPE_VOX) * np.array(SCALES["4_4_40"])
    return pd.DataFrame({"id": np.arange(60), "x": zyx[:, 2], "y": zyx[:, 1], "z": zyx[:, 0]})


def chunk_keys(folder, key: str) -> list[str]:
    return sorted(f"pc/{key}/{p.name}" for p in (folder / "pc" / key).iterdir())


def test_a_500_then_200_is_retried_and_gives_the_local_results(
    folder, server, table, random_bundle
):
    bundle = random_bundle(INPUT_VOX)
    failing = chunk_keys(folder, "4_4_40")[:3]
    for key in failing:
        server.fail(key, 500)
    remote = predict_positions(bundle, f"precomputed://{server.url}/pc", table, read_workers=0)
    local = predict_positions(bundle, folder / "pc", table, dataset="4_4_40", read_workers=0)
    pd.testing.assert_frame_equal(remote, local)
    assert server.statuses[500] == 3
    assert all(server.requests["/" + key] == 2 for key in failing)  # the 500, then the 200


def test_each_chunk_is_fetched_once_in_a_run(folder, server, table, random_bundle):
    predict_positions(random_bundle(INPUT_VOX), f"{server.url}/pc", table, batch_size=4)
    requests, distinct = server.count("pc/4_4_40"), server.distinct("pc/4_4_40")
    assert distinct > 20  # many batches read the same chunks
    assert requests / distinct <= 1.05, (requests, distinct)
    assert server.statuses[304] == 0  # nor re-validated


def test_reading_processes_each_read_their_own_run_of_the_positions():
    """With ``streams`` readers taking batches in turn, reader ``r``'s batches are one
    contiguous run of the positions (in reading order: one part of the volume)."""
    volume = Volume.__new__(Volume)  # not read here
    ids = np.arange(53)
    batches = PatchBatches(volume, ids, np.zeros((53, 3)), INPUT_VOX, 5, streams=2)
    rows = [batches.ids[batches._run_starts[i % 2] * 5 + (i // 2) * 5 :][:5] for i in range(11)]
    seen = np.concatenate(rows)
    assert sorted(seen.tolist()) == ids.tolist()
    first, second = np.concatenate(rows[0::2]), np.concatenate(rows[1::2])
    assert np.all(np.diff(first) == 1) and np.all(np.diff(second) == 1)


def test_a_missing_volume_is_one_line_naming_the_url_and_nothing_is_written(
    server, table, random_bundle, tmp_path
):
    positions = tmp_path / "positions.csv"
    table.to_csv(positions, index=False)
    url = f"precomputed://{server.url}/no-such-volume"
    out = tmp_path / "out"
    outcome = CliRunner().invoke(
        app,
        ["predict-positions", "--model", str(random_bundle(INPUT_VOX)), "--volume", url,
         "--positions", str(positions), "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert outcome.exit_code == 1
    lines = outcome.output.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "no precomputed array" in lines[0], lines
    assert not out.exists()


def test_a_forbidden_chunk_stops_the_run_with_one_line_naming_its_url(
    folder, server, table, random_bundle, tmp_path
):
    key = chunk_keys(folder, "4_4_40")[5]
    server.fail(key, *[403] * 10)
    positions = tmp_path / "positions.csv"
    table.to_csv(positions, index=False)
    out = tmp_path / "out"
    outcome = CliRunner().invoke(
        app,
        ["predict-positions", "--model", str(random_bundle(INPUT_VOX)), "--volume",
         f"{server.url}/pc", "--positions", str(positions), "--out", str(out), "--no-progress",
         "--batch-size", "4"],
    )  # fmt: skip
    assert outcome.exit_code == 1
    lines = outcome.output.strip().splitlines()  # the scale read, no neuron column, the error
    note, error = lines[0], lines[-1]
    assert sum(line.startswith("error: ") for line in lines) == 1
    assert "read scale 4_4_40" in note and "the one of 2 whose voxel size the model needs" in note
    assert error.startswith("error: ") and f"{server.url}/{key}" in error and "403" in error
    assert not (out / "synapses.parquet").exists()  # finished parts stay for the rerun
    assert json.loads((out / "run.json").read_text())["state"] == "running"


def test_retries_are_bounded_and_the_error_names_the_url(folder, server, monkeypatch):
    monkeypatch.setattr(locate, "RETRIES", {"max_retries": 3, "initial_delay": "1ms",
                                            "max_delay": "2ms"})  # fmt: skip
    key = chunk_keys(folder, "4_4_40")[0]
    server.fail(key, *[503] * 10)
    volume = Volume(f"{server.url}/pc", cache_bytes=2**20 + 1)  # its own context
    with pytest.raises(OSError) as error:
        volume.read_region_vox((0, 0, 0), (4, 4, 4))
    message = str(error.value)
    assert "\n" not in message and f"{server.url}/{key}" in message, message
    assert 1 < server.requests["/" + key] <= 4  # tried again, but not forever
    forbidden = chunk_keys(folder, "4_4_40")[1]
    server.fail(forbidden, 403)
    with pytest.raises(OSError, match="403"):
        volume.read_region_vox((8, 0, 0), (4, 4, 4))  # chunk x, y 0-32, z 8-16
    assert server.requests["/" + forbidden] == 1  # not retried


def test_a_multiscale_base_url_reads_the_scale_of_the_model(server, table, random_bundle):
    url = f"precomputed://{server.url}/pc"
    coarse = Volume(url, scale_nm=SCALES["8_8_40"])
    assert coarse.location.endswith("[8_8_40]")
    np.testing.assert_allclose(coarse.voxel_size_nm, SCALES["8_8_40"])
    assert "8_8_40" in coarse.scale_note and "of 2" in coarse.scale_note
    assert server.count("pc/4_4_40") == 0  # nothing read from the other scale
    bundle = random_bundle(INPUT_VOX, voxel_size_nm=SCALES["8_8_40"])
    result = predict_positions(bundle, url, table)
    assert (result["status"] != "outside_volume").any()
    assert server.count("pc/8_8_40") > 0 and server.count("pc/4_4_40") == 0
    with pytest.raises(ValueError, match=r"no scale of voxel size 40 x 2 x 2 nm.*4_4_40 \(40 x "
                                         r"4 x 4 nm z,y,x\), 8_8_40 \(40 x 8 x 8 nm"):  # fmt: skip
        predict_positions(random_bundle(INPUT_VOX, voxel_size_nm=(40, 2, 2)), url, table)


def test_an_ome_zarr_group_reads_the_scale_of_the_model(tmp_path):
    group = zarr.open_group(tmp_path / "ome.zarr", mode="w", zarr_format=2)
    for name, factor in (("s0", 1), ("s1", 2)):
        group.create_array(name, shape=(8, 64 // factor, 64 // factor), dtype="uint8")[...] = factor
    group.attrs["multiscales"] = [
        {
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
            "datasets": [
                {"path": f"s{i}", "coordinateTransformations": [
                    {"type": "scale", "scale": [40, 4 * 2**i, 4 * 2**i]}]}
                for i in range(2)
            ],
        }
    ]  # fmt: skip
    volume = Volume(tmp_path / "ome.zarr", scale_nm=(40, 8, 8))
    assert volume.location.endswith("[s1]") and volume.shape_vox == (8, 32, 32)
    assert volume.read_region_vox((0, 0, 0), (1, 1, 1))[0, 0, 0] == 2
    with pytest.raises(ValueError, match="s0 .*s1 "):
        Volume(tmp_path / "ome.zarr", scale_nm=(40, 16, 16))


def test_urls_as_users_write_them():
    assert split_location("gs://bucket/fafb/v14")[:2] == (
        None, {"driver": "gcs", "bucket": "bucket", "path": "fafb/v14/"}
    )  # fmt: skip
    assert split_location("zarr://s3://bucket/data.zarr")[:2] == (
        None, {"driver": "s3", "bucket": "bucket", "path": "data.zarr/"}
    )  # fmt: skip
    assert split_location("n5://https://host.org/v.n5")[:2] == (
        "n5", {"driver": "http", "base_url": "https://host.org", "path": "/v.n5/"}
    )  # fmt: skip
    hint, kvstore, shown = split_location("precomputed://https://host.org/v?X-Amz-Signature=s")
    assert hint == "precomputed" and kvstore["base_url"] == "https://host.org?X-Amz-Signature=s"
    assert "Signature" not in shown and shown.startswith("precomputed://https://host.org/v")
    with pytest.raises(ValueError, match="credentials in a URL are not accepted") as error:
        split_location("https://user:secret@host.org/v")
    assert "secret" not in str(error.value)
    assert redact("https://host.org/a?token=t") == "https://host.org/a?…"
    long = ValueError('NOT_FOUND: "https://h/a?sig=1" [tensorstore_spec=\'{"secret": 1}\']\nmore')
    assert describe_error(long) == 'NOT_FOUND: "https://h/a?…"'


def test_an_unreachable_bucket_is_one_line_naming_it():
    """No network here (or a bucket that does not exist): either way one line, soon (retries
    are bounded, see synister.volumes.locate.RETRIES)."""
    url = "gs://synister-no-such-bucket-for-tests/volume"
    with pytest.raises(OSError) as error:
        Volume(url)
    assert "\n" not in str(error.value) and re.match(re.escape(url), str(error.value))


# -- chunks shared by the processes of one machine (predict-volume's workers) -------------------


def own_volume(url: str, n: int) -> Volume:
    """A Volume with a chunk cache of its own, as another process would have."""
    return Volume(url, cache_bytes=2**20 + n)


@pytest.mark.filterwarnings("ignore:.*reach outside the volume:UserWarning")
def test_volumes_sharing_a_stage_fetch_each_chunk_once(folder, server, tmp_path):
    url = f"precomputed://{server.url}/pc"
    local = Volume(folder / "pc", "4_4_40")
    first, second = own_volume(url, 10), own_volume(url, 11)
    stage = ChunkStage.create(tmp_path / "stage", first.store)
    first.stage_chunks(stage)
    second.stage_chunks(ChunkStage(tmp_path / "stage"))
    # two blocks' regions overlapping by half a patch, as neighbouring blocks read them
    a = first.read_region_vox((0, 0, 0), (16, 72, 64))
    b = second.read_region_vox((0, 56, 0), (16, 72, 64))
    np.testing.assert_array_equal(a, local.read_region_vox((0, 0, 0), (16, 72, 64)))
    np.testing.assert_array_equal(b, local.read_region_vox((0, 56, 0), (16, 72, 64)))
    assert server.distinct("pc/4_4_40") == 2 * 4 * 2  # z, y, x chunks of 8, 32, 32
    assert server.count("pc/4_4_40") == server.distinct("pc/4_4_40")
    patches = second.read_patches(
        np.array([[-40.0, 60.0, 500.0], [300.0, 200.0, 200.0]]), (4, 16, 16)
    )
    np.testing.assert_array_equal(patches, local.read_patches(
        np.array([[-40.0, 60.0, 500.0], [300.0, 200.0, 200.0]]), (4, 16, 16)))  # fmt: skip


def test_a_stage_is_kept_in_memory_where_there_is_room(tmp_path):
    on_disk = tmp_path / "out" / "staging"
    memory = tmp_path / "shm"
    memory.mkdir()
    kept = stage_folder(on_disk, 2**20, root=memory)
    assert kept.parent == memory and kept == memory_stage_path(on_disk, memory)
    assert kept != memory_stage_path(tmp_path / "other" / "staging", memory)  # one per run
    assert stage_folder(on_disk, 2**62, root=memory) == on_disk  # no room for it
    assert stage_folder(on_disk, 2**20, root=tmp_path / "none") == on_disk  # no such folder


def test_a_stage_whose_run_ended_is_removed_when_the_next_one_is_placed(tmp_path):
    memory = tmp_path / "shm"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    stages = {}
    for name, owner in (("ended", int(ended.stdout)), ("running", os.getpid())):
        stages[name] = memory / f"synister-stage-{name}"
        stages[name].mkdir(parents=True)
        (stages[name] / "stage.json").write_text(json.dumps({"owner_pid": owner}))
    being_made = memory / "synister-stage-new"  # its stage.json not written yet
    being_made.mkdir()
    stage_folder(tmp_path / "out" / "staging", 2**20, root=memory)
    assert not stages["ended"].exists()
    assert stages["running"].exists() and being_made.exists()


def test_a_chunk_being_fetched_elsewhere_is_waited_for_not_fetched(folder, server, tmp_path):
    """Another process holds the chunk's lock: the read waits for it and reads what it
    wrote; a holder that ends without writing (died) leaves the fetch to the reader."""
    url = f"precomputed://{server.url}/pc"
    local = Volume(folder / "pc", "4_4_40")
    volume = own_volume(url, 12)
    stage = ChunkStage.create(tmp_path / "stage", volume.store)
    volume.stage_chunks(stage)
    other = ChunkStage(tmp_path / "stage")  # the other process
    for index, writes in (((0, 0, 0), True), ((1, 0, 0), False)):
        lock = os.open(other.locks_dir / ".".join(map(str, index)), os.O_CREAT | os.O_RDWR)
        fcntl.flock(lock, fcntl.LOCK_EX)
        box = np.asarray(index) * (8, 32, 32)
        with ThreadPoolExecutor(1) as pool:
            reading = pool.submit(volume.read_region_vox, box, (8, 32, 32))
            if writes:
                other._fetch(own_volume(url, 13).store, [index])
            os.close(lock)
            np.testing.assert_array_equal(reading.result(), local.read_region_vox(box, (8, 32, 32)))
        key = f"/pc/4_4_40/{box[2]}-{box[2] + 32}_{box[1]}-{box[1] + 32}_{box[0]}-{box[0] + 8}"
        assert server.requests[key] == 1, key
    assert stage.fetched == 1  # the second chunk only


def test_the_stage_stays_within_its_budget_and_refetches_what_it_removed(
    folder, server, tmp_path, monkeypatch
):
    url = f"precomputed://{server.url}/pc"
    local = Volume(folder / "pc", "4_4_40")
    volume = Volume(url, cache_bytes=0)  # every chunk staged comes from the server
    chunk_bytes = 8 * 32 * 32
    stage = ChunkStage.create(tmp_path / "stage", volume.store, budget_bytes=4 * chunk_bytes)
    volume.stage_chunks(stage)
    for y in range(0, 128, 32):  # 2 x 1 x 4 chunks each
        volume.read_region_vox((0, y, 0), (16, 32, 128))
        stage.evict()
        assert sum(p.stat().st_size for p in stage.chunks_dir.glob("*.*.*")) <= 4 * chunk_bytes
    np.testing.assert_array_equal(
        volume.read_region_vox((0, 0, 0), (16, 128, 128)),
        local.read_region_vox((0, 0, 0), (16, 128, 128)),
    )
    assert server.count("pc/4_4_40") == 32 + 32 - 3  # all again but the 3 kept last

    ensure = stage.ensure  # another process removes a chunk between staging and reading

    def ensure_then_lose_one(source, starts, ends):
        ensure(source, starts, ends)
        monkeypatch.setattr(stage, "ensure", ensure)
        (stage.chunks_dir / "0.0.0").unlink()

    monkeypatch.setattr(stage, "ensure", ensure_then_lose_one)
    np.testing.assert_array_equal(
        volume.read_region_vox((0, 0, 0), (8, 32, 32)),
        local.read_region_vox((0, 0, 0), (8, 32, 32)),
    )


@pytest.mark.usefixtures("warm_executable")  # daisy's workers start warm
def test_two_predict_volume_workers_fetch_each_chunk_once_and_leave_no_stage(
    folder, server, table, random_bundle, tmp_path
):
    bundle = random_bundle(INPUT_VOX)
    positions = tmp_path / "positions.parquet"
    table.to_parquet(positions, index=False)
    summary = predict_volume(
        bundle, f"precomputed://{server.url}/pc", Source(str(positions)), tmp_path / "out",
        block_nm=(320, 128, 128), workers=2, threads=1, progress=False, log=lambda *a: None,
    )  # fmt: skip
    assert summary["failed"] == {} and summary["blocks_run"] > 10
    requests, distinct = server.count("pc/4_4_40"), server.distinct("pc/4_4_40")
    assert requests / distinct <= 1.05, (requests, distinct)
    assert not (tmp_path / "out" / "staging").exists()
    assert not memory_stage_path(tmp_path / "out" / "staging").exists()
    result = pd.read_parquet(tmp_path / "out" / "synapses").sort_values("row")
    local = predict_positions(bundle, folder / "pc", table, dataset="4_4_40", read_workers=0)
    np.testing.assert_allclose(
        result[["gaba", "ach"]].to_numpy(), local[["gaba", "ach"]].to_numpy(), rtol=1e-5
    )
