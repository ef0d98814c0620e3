"""synister.volumes: every format read through tensorstore must match numpy slicing."""

from __future__ import annotations

import functools
import http.server
import json
import multiprocessing
import os
import pickle
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import torch
import zarr

from synister.volumes import (
    Volume,
    create_volume,
    iter_blocks_vox,
    normalize,
    write_volume,
)
from synister.volumes.locate import split_location

SHAPE_VOX = (20, 64, 48)  # z, y, x
VOXEL_NM = np.array([40.0, 4.0, 8.0])
OFFSET_NM = np.array([400.0, 80.0, 160.0])  # a whole number of voxels, as in funlib volumes
PATCH_VOX = (6, 16, 10)


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    return np.random.default_rng(7).integers(1, 256, SHAPE_VOX, dtype=np.uint8)


def expected_box(raw: np.ndarray, start_vox, shape_vox) -> np.ndarray:
    """The box cut from ``raw`` by plain numpy, zeros outside: the reference for every reader."""
    box = np.zeros(shape_vox, dtype=raw.dtype)
    start = np.asarray(start_vox)
    lo = np.clip(start, 0, raw.shape)
    hi = np.clip(start + np.asarray(shape_vox), 0, raw.shape)
    if np.all(hi > lo):
        src = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        dst = tuple(slice(a, b) for a, b in zip(lo - start, hi - start, strict=True))
        box[dst] = raw[src]
    return box


def zarr_python(path: Path, raw: np.ndarray, zarr_format: int) -> tuple[Path, str]:
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    array = group.create_array("volumes/raw", shape=raw.shape, chunks=(8, 32, 32), dtype="uint8")
    array[...] = raw
    array.attrs.update(resolution=VOXEL_NM.tolist(), offset=OFFSET_NM.tolist())
    return path, "volumes/raw"


def n5_tensorstore(path: Path, raw: np.ndarray) -> tuple[Path, str]:
    """N5 as Java tools write it: dimensions and attributes in x, y, z."""
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(path / "volumes/raw")},
            "metadata": {
                "dimensions": list(raw.shape[::-1]),
                "blockSize": [32, 32, 8],
                "dataType": "uint8",
                "compression": {"type": "gzip"},
            },
            "create": True,
        }
    ).result()
    store.write(raw.T).result()
    attrs_path = path / "volumes/raw/attributes.json"
    attrs = json.loads(attrs_path.read_text())
    attrs.update(resolution=VOXEL_NM[::-1].tolist(), offset=OFFSET_NM[::-1].tolist())
    attrs_path.write_text(json.dumps(attrs))
    return path, "volumes/raw"


def precomputed_tensorstore(path: Path, raw: np.ndarray) -> tuple[str, None]:
    """Neuroglancer precomputed: axes x, y, z, channel; ``info`` resolution and voxel_offset."""
    voxel_offset_xyz = (OFFSET_NM / VOXEL_NM)[::-1].astype(int).tolist()
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(path)},
            "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
            "scale_metadata": {
                "size": list(raw.shape[::-1]),
                "resolution": VOXEL_NM[::-1].tolist(),
                "voxel_offset": voxel_offset_xyz,
                "chunk_size": [32, 32, 8],
                "encoding": "raw",
            },
            "create": True,
        }
    ).result()
    store.write(raw.T[..., None]).result()
    info = json.loads((path / "info").read_text())
    assert info["scales"][0]["voxel_offset"] == voxel_offset_xyz
    return f"precomputed://{path}", None


FORMATS = ["zarr2", "zarr3", "n5", "precomputed"]


@pytest.fixture(scope="module", params=FORMATS)
def written(request, raw, tmp_path_factory) -> tuple[str, str | Path, str | None]:
    path = tmp_path_factory.mktemp(request.param) / "volume"
    if request.param == "zarr2":
        return request.param, *zarr_python(path, raw, 2)
    if request.param == "zarr3":
        return request.param, *zarr_python(path, raw, 3)
    if request.param == "n5":
        return request.param, *n5_tensorstore(path.with_suffix(".n5"), raw)
    return request.param, *precomputed_tensorstore(path, raw)


def test_metadata_read_for_each_format(written):
    fmt, container, dataset = written
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # metadata present: no fallback warning
        volume = Volume(container, dataset)
    assert volume.format == fmt
    assert volume.shape_vox == SHAPE_VOX
    np.testing.assert_allclose(volume.voxel_size_nm, VOXEL_NM)
    np.testing.assert_allclose(volume.offset_nm, OFFSET_NM)
    assert volume.dtype == np.uint8


def test_patches_match_numpy_inside_border_and_outside(written, raw):
    _, container, dataset = written
    volume = Volume(container, dataset, placement="floor")
    centers_vox = np.array(
        [
            [10, 32, 24],  # interior
            [0, 0, 0],  # corner: partly outside
            [19, 63, 47],  # opposite corner
            [3, 8, 5],  # touches the lower edge exactly (start 0 on all axes)
            [-50, 32, 24],  # wholly outside in z
            [10, 500, -300],  # wholly outside in y and x
        ]
    )
    # positions inside each voxel (not at its centre) must still select that voxel
    fraction = np.array([0.01, 0.5, 0.99])
    centers_nm = OFFSET_NM + (centers_vox + fraction) * VOXEL_NM
    with pytest.warns(UserWarning, match="4 of 6 patches"):
        patches = volume.read_patches(centers_nm, PATCH_VOX)
    assert patches.shape == (6, *PATCH_VOX) and patches.dtype == np.uint8
    half = np.array(PATCH_VOX) // 2
    for center, patch in zip(centers_vox, patches, strict=True):
        np.testing.assert_array_equal(patch, expected_box(raw, center - half, PATCH_VOX))
    assert not patches[4].any() and not patches[5].any()
    corner = patches[1]  # centre voxel 0 with S//2 = (3, 8, 5): data starts at (3, 8, 5)
    np.testing.assert_array_equal(corner[3:, 8:, 5:], raw[:3, :8, :5])
    assert not corner[:3].any() and not corner[:, :8].any() and not corner[:, :, :5].any()
    assert patches[0][tuple(half)] == raw[10, 32, 24]  # patch[S//2] holds the voxel of p_nm
    assert volume.out_of_bounds_count == 4


def original_patch_start_vox(position_nm, shape_vox, voxel_nm, offset_nm) -> np.ndarray:
    """The first voxel of the patch funkelab/synister's ``get_raw`` read, by its arithmetic
    with daisy 0.x: Coordinates hold ints (``int()``: ``size / 2`` truncates), the box
    ``Roi(loc - size / 2 * voxel, size * voxel)`` is snapped with ``snap_to_grid(voxel,
    mode="closest")``, i.e. ``np.round(float32(begin) / voxel)`` (ties to even) in world nm,
    its shape reset to ``size * voxel``, and ``dataset[roi]`` indexes from the offset."""
    loc = [int(p) for p in position_nm]
    voxel = [int(v) for v in voxel_nm]
    half = [int(s / 2) for s in shape_vox]
    begin_nm = [p - h * v for p, h, v in zip(loc, half, voxel, strict=True)]
    begin_vox = np.round(np.asarray(begin_nm, dtype=np.float32) / np.asarray(voxel))
    return ((begin_vox * voxel - np.asarray(offset_nm)) // voxel).astype(np.int64)


@pytest.mark.parametrize("shape_vox", [(6, 16, 10), (5, 15, 9), (7, 3, 1), (1, 2, 4)])
def test_patches_are_placed_as_the_original_placed_them(tmp_path, raw, shape_vox):
    """Every whole-nm residue within a voxel (ties included), odd and even patch sizes, on a
    volume whose offset is an odd number of voxels on every axis (ties round to even in world
    coordinates, not in the volume's grid)."""
    offset_nm = np.array([3, 5, 7]) * VOXEL_NM
    volume = write_volume(tmp_path / "v.zarr", raw, VOXEL_NM, offset_nm)
    assert volume.placement == "closest"
    corner = offset_nm + np.array([9, 30, 20]) * VOXEL_NM
    grids = [corner[a] + np.arange(-VOXEL_NM[a], 2 * VOXEL_NM[a]) for a in range(3)]
    positions = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, 3)
    expected = np.array(
        [original_patch_start_vox(p, shape_vox, VOXEL_NM, offset_nm) for p in positions]
    )
    np.testing.assert_array_equal(volume.patch_starts_vox(positions, shape_vox), expected)
    np.testing.assert_array_equal(
        volume.center_vox(positions, shape_vox), expected + np.array(shape_vox) // 2
    )
    sample = positions[:: max(1, len(positions) // 200)]
    patches = volume.read_patches(sample, shape_vox)
    for position, patch in zip(sample, patches, strict=True):
        start = original_patch_start_vox(position, shape_vox, VOXEL_NM, offset_nm)
        np.testing.assert_array_equal(patch, expected_box(raw, start, shape_vox))


def test_closest_and_floor_placement_and_positions_of_chosen_voxels(tmp_path, raw):
    volume = write_volume(tmp_path / "v.zarr", raw, VOXEL_NM, OFFSET_NM)
    floor = Volume(tmp_path / "v.zarr", "raw", placement="floor")
    voxel = np.array([[9, 30, 20]])
    upper = OFFSET_NM + (voxel + 0.75) * VOXEL_NM  # in the upper half of voxel (9, 30, 20)
    np.testing.assert_array_equal(floor.center_vox(upper, (4, 4, 4)), voxel)
    np.testing.assert_array_equal(volume.center_vox(upper, (4, 4, 4)), voxel + 1)
    # positions a sampler chooses by voxel map back exactly, for every shape and rule
    for vol in (volume, floor):
        for shape in [(4, 4, 4), (5, 3, 1)]:
            np.testing.assert_array_equal(vol.center_vox(vol.center_nm(voxel), shape), voxel)
    with pytest.raises(ValueError, match="placement must be one of"):
        Volume(tmp_path / "v.zarr", "raw", placement="round")


def test_intensities_other_than_uint8_are_refused(tmp_path):
    array = zarr.create_array(tmp_path / "u16.zarr", shape=(4, 8, 8), dtype="uint16")
    array[...] = 1000
    volume = Volume(tmp_path / "u16.zarr", voxel_size_nm=(40, 4, 4))
    with pytest.raises(ValueError, match=r"u16.zarr: intensities are uint16.*read uint8"):
        volume.require_uint8()
    write_volume(tmp_path / "u8.zarr", np.zeros((4, 8, 8), np.uint8), VOXEL_NM).require_uint8()


def test_read_patch_and_region(written, raw):
    _, container, dataset = written
    volume = Volume(container, dataset)
    center_nm = volume.center_nm(np.array([5, 40, 30]))
    patch = volume.read_patch(center_nm, (4, 4, 4))
    np.testing.assert_array_equal(patch, raw[3:7, 38:42, 28:32])
    region = volume.read_region_vox((-2, 60, 40), (5, 8, 12))
    np.testing.assert_array_equal(region, expected_box(raw, (-2, 60, 40), (5, 8, 12)))
    assert volume.out_of_bounds_count == 0  # regions overhang on purpose: not counted
    empty = volume.read_patches(np.empty((0, 3)), (4, 4, 4))
    assert empty.shape == (0, 4, 4, 4) and empty.dtype == raw.dtype


def test_out_of_bounds_warns_once_and_counts(tmp_path, raw):
    volume = write_volume(tmp_path / "v.zarr", raw, VOXEL_NM, OFFSET_NM)
    outside = OFFSET_NM + np.array([[-10.0, 0, 0], [0, 0, 0], [1e5, 1e5, 1e5]]) * VOXEL_NM
    with pytest.warns(UserWarning, match="3 of 3 patches") as first:
        volume.read_patches(outside, (2, 2, 2))
    assert len(first) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume.read_patches(outside[:2], (2, 2, 2))
        volume.read_patches(OFFSET_NM[None] + 5 * VOXEL_NM, (2, 2, 2))  # inside: not counted
    assert volume.out_of_bounds_count == 5


def test_override_wins_and_warns_naming_both(tmp_path, raw):
    container, dataset = zarr_python(tmp_path / "v.zarr", raw, 2)
    with pytest.warns(UserWarning, match=r"\[40.0, 8.0, 8.0\].*\[40.0, 4.0, 8.0\]"):
        volume = Volume(container, dataset, voxel_size_nm=(40, 8, 8))
    np.testing.assert_allclose(volume.voxel_size_nm, [40, 8, 8])
    np.testing.assert_allclose(volume.offset_nm, OFFSET_NM)  # not overridden: metadata stands
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # agreeing override: silent
        Volume(container, dataset, voxel_size_nm=VOXEL_NM, offset_nm=OFFSET_NM)


def test_missing_voxel_size_falls_back_to_one_nm_with_warning(tmp_path, raw):
    array = zarr.create_array(tmp_path / "bare.zarr", shape=raw.shape, dtype="uint8", zarr_format=3)
    array[...] = raw
    with pytest.warns(UserWarning, match="no voxel size.*1, 1, 1 nm"):
        volume = Volume(tmp_path / "bare.zarr")
    np.testing.assert_allclose(volume.voxel_size_nm, [1, 1, 1])
    np.testing.assert_allclose(volume.offset_nm, [0, 0, 0])
    np.testing.assert_array_equal(
        volume.read_patch((2.2, 3.3, 4.4), (1, 1, 1))[0, 0, 0], raw[2, 3, 4]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Volume(tmp_path / "bare.zarr", voxel_size_nm=(50, 5, 5))  # nothing to disagree with


def test_ome_zarr_multiscales(tmp_path, raw):
    group = zarr.open_group(tmp_path / "ome.zarr", mode="w", zarr_format=2)
    group.create_array("s0", shape=raw.shape, dtype="uint8")[...] = raw
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
            "datasets": [
                {
                    "path": "s0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [0.04, 0.004, 0.008]},
                        {"type": "translation", "translation": [0.4, 0.08, 0.16]},
                    ],
                }
            ],
        }
    ]
    volume = Volume(tmp_path / "ome.zarr", "s0")
    np.testing.assert_allclose(volume.voxel_size_nm, VOXEL_NM)
    np.testing.assert_allclose(volume.offset_nm, OFFSET_NM)


def test_n5_pixel_resolution_and_channel_axis(tmp_path, raw):
    path = tmp_path / "c.n5"
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(path / "raw")},
            "metadata": {
                "dimensions": [*raw.shape[::-1], 1],  # x, y, z, channel
                "blockSize": [32, 32, 8, 1],
                "dataType": "uint8",
                "compression": {"type": "raw"},
            },
            "create": True,
        }
    ).result()
    store.write(raw.T[..., None]).result()
    attrs_path = path / "raw/attributes.json"
    attrs = json.loads(attrs_path.read_text())
    attrs["pixelResolution"] = {"dimensions": [0.004, 0.004, 0.04], "unit": "um"}
    attrs_path.write_text(json.dumps(attrs))
    volume = Volume(path, "raw")
    assert volume.shape_vox == SHAPE_VOX
    np.testing.assert_allclose(volume.voxel_size_nm, [40, 4, 4])
    np.testing.assert_array_equal(volume.read_region_vox((0, 0, 0), SHAPE_VOX), raw)


def test_pickle_round_trip_reopens_lazily(tmp_path, raw):
    volume = write_volume(tmp_path / "v.n5", raw, VOXEL_NM, OFFSET_NM, format="n5")
    centers_nm = OFFSET_NM + np.array([[4, 10, 10], [15, 50, 40]]) * VOXEL_NM
    before = volume.read_patches(centers_nm, PATCH_VOX)
    copy = pickle.loads(pickle.dumps(volume))
    assert copy._store is None  # nothing opened until the first read in the child
    np.testing.assert_array_equal(copy.read_patches(centers_nm, PATCH_VOX), before)
    np.testing.assert_allclose(copy.voxel_size_nm, VOXEL_NM)
    assert copy.shape_vox == SHAPE_VOX


def test_reads_in_a_spawned_worker_process(tmp_path, raw):
    """DataLoader workers must use spawn: tensorstore aborts in a forked child once used."""
    volume = write_volume(tmp_path / "v.zarr", raw, VOXEL_NM, OFFSET_NM)
    volume.read_patch(OFFSET_NM + 5 * VOXEL_NM, (2, 2, 2))  # the parent's store is open and warm
    center_nm = volume.center_nm(np.array([9, 20, 30]))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        patch = pool.apply(volume.read_patch, (center_nm, (3, 3, 3)))
    np.testing.assert_array_equal(patch, raw[8:11, 19:22, 29:32])


def test_forked_use_raises_instead_of_aborting(tmp_path, raw, monkeypatch):
    volume = write_volume(tmp_path / "v.zarr", raw, VOXEL_NM, OFFSET_NM)
    monkeypatch.setattr(os, "getpid", lambda: -1)  # what a forked child sees: another pid
    with pytest.raises(RuntimeError, match="spawn"):
        volume.read_patch(OFFSET_NM + 5 * VOXEL_NM, (2, 2, 2))


def test_tensorstore_spec_dict(tmp_path, raw):
    write_volume(tmp_path / "v.zarr", raw, VOXEL_NM, OFFSET_NM, format="zarr2", dataset="a/raw")
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(tmp_path / "v.zarr")}}
    volume = Volume(spec, "a/raw")
    np.testing.assert_allclose(volume.offset_nm, OFFSET_NM)
    np.testing.assert_array_equal(volume.read_region_vox((1, 2, 3), (2, 2, 2)), raw[1:3, 2:4, 3:5])


@pytest.mark.parametrize("fmt", ["zarr", "zarr2", "n5"])
def test_write_volume_blockwise_round_trip(tmp_path, raw, fmt):
    blocks = (
        (start, raw[tuple(slice(s, s + n) for s, n in zip(start, shape, strict=True))])
        for start, shape in iter_blocks_vox(raw.shape, (8, 30, 30))
    )
    volume = write_volume(
        tmp_path / f"b.{fmt}",
        blocks,
        VOXEL_NM,
        OFFSET_NM,
        format=fmt,
        shape_vox=raw.shape,
        chunks_vox=(8, 16, 16),
    )
    assert volume.format == {"zarr": "zarr3", "zarr2": "zarr2", "n5": "n5"}[fmt]
    np.testing.assert_allclose(volume.voxel_size_nm, VOXEL_NM)
    np.testing.assert_allclose(volume.offset_nm, OFFSET_NM)
    np.testing.assert_array_equal(volume.read_region_vox((0, 0, 0), raw.shape), raw)
    if fmt != "n5":  # zarr-python reads what we wrote, attributes included
        array = zarr.open_array(tmp_path / f"b.{fmt}" / "raw", mode="r")
        np.testing.assert_array_equal(array[...], raw)
        assert array.attrs["resolution"] == VOXEL_NM.tolist()


def test_bad_input_names_the_problem(tmp_path, raw):
    writer = create_volume(tmp_path / "v.zarr", (4, 4, 4), (1, 1, 1))
    with pytest.raises(ValueError, match=r"\[2, 0, 0\].*outside"):
        writer.write_block((2, 0, 0), np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        Volume(tmp_path / "nowhere.zarr", "raw")
    with pytest.raises(ValueError, match="zarr group"):
        Volume(tmp_path / "v.zarr")
    volume = writer.open()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        volume.read_patches(np.zeros((3, 2)), (2, 2, 2))
    with pytest.raises(ValueError, match="row 1"):
        volume.read_patches(np.array([[0, 0, 0], [np.nan, 0, 0]]), (2, 2, 2))
    two_channels = zarr.create_array(tmp_path / "c.zarr", shape=(2, 4, 4, 4), dtype="uint8")
    with pytest.raises(ValueError, match="single channel"):
        Volume(two_channels.store_path.store.root)
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        Volume("ftp://example.org/v.zarr")


def test_normalize_numpy_and_torch():
    values = np.array([0, 51, 255], dtype=np.uint8)
    expected = np.array([-1.0, -0.6, 1.0], dtype=np.float32)
    as_numpy = normalize(values)
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32
    np.testing.assert_allclose(as_numpy, expected, atol=1e-6)
    assert as_numpy[0] == -1.0 and as_numpy[2] == 1.0
    as_torch = normalize(torch.from_numpy(values))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    np.testing.assert_allclose(as_torch.numpy(), expected, atol=1e-6)


@pytest.fixture
def local_http_server(tmp_path):
    """Serve ``tmp_path`` over http on 127.0.0.1 (the URL code path, with no outside network)."""
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_http_urls_for_zarr_and_precomputed(tmp_path, local_http_server, raw):
    zarr_python(tmp_path / "v.zarr", raw, 2)
    precomputed_tensorstore(tmp_path / "pc", raw)
    over_http = Volume(f"{local_http_server}/v.zarr", "volumes/raw")
    assert over_http.format == "zarr2"
    np.testing.assert_array_equal(over_http.read_region_vox((0, 0, 0), SHAPE_VOX), raw)
    url = f"precomputed://{local_http_server}/pc/"
    precomputed = Volume(url, "8_4_40")  # the scale key tensorstore wrote (x_y_z resolution)
    np.testing.assert_allclose(precomputed.voxel_size_nm, VOXEL_NM)
    np.testing.assert_allclose(precomputed.offset_nm, OFFSET_NM)
    center_nm = precomputed.center_nm(np.array([7, 30, 20]))
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(precomputed)).read_patch(center_nm, (2, 2, 2)),
        raw[6:8, 29:31, 19:21],
    )


def test_cloud_urls_map_to_tensorstore_kvstores():
    _, gcs, _ = split_location("precomputed://gs://bucket/fafb/v14/")
    assert gcs == {"driver": "gcs", "bucket": "bucket", "path": "fafb/v14/"}
    hint, https, _ = split_location("https://example.org/data/v14.n5")
    assert hint == "n5"
    assert https == {"driver": "http", "base_url": "https://example.org", "path": "/data/v14.n5/"}
