"""Raw EM volumes through tensorstore: zarr v2/v3, N5 and neuroglancer precomputed; patch reads.

Every array a caller sees is z, y, x in voxels, whatever the on-disk axis order (N5 and precomputed
store x, y, z).  Voxel size and offset come from the dataset's metadata (funlib ``resolution`` /
``offset`` attributes, N5 ``pixelResolution``, OME-Zarr ``multiscales``, precomputed ``info``) and
can be overridden by the config.  Patch reads follow the convention in CONTRIBUTING.md and pad
with zeros outside the volume, so sampling near the border never crashes a training run.
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import tensorstore as ts

__all__ = [
    "PATCH_PLACEMENTS",
    "Volume",
    "VolumeWriter",
    "create_volume",
    "iter_blocks_vox",
    "normalize",
    "write_volume",
]

#: How a position picks the voxels of its patch (CONTRIBUTING.md "Patches"): "closest", the
#: original's daisy ``Roi(p - S//2 * v, S * v).snap_to_grid(v, mode="closest")``, or "floor",
#: the patch around the voxel that contains the position.
PATCH_PLACEMENTS = ("closest", "floor")

#: tensorstore driver per format name used here.
_DRIVERS = {
    "zarr2": "zarr",
    "zarr3": "zarr3",
    "n5": "n5",
    "precomputed": "neuroglancer_precomputed",
}
#: URL prefixes (neuroglancer style) that name the format explicitly.
_FORMAT_PREFIXES = {
    "precomputed://": "precomputed",
    "zarr2://": "zarr2",
    "zarr3://": "zarr3",
    "zarr://": None,  # v2 or v3, decided by the metadata file present
    "n5://": "n5",
}
#: Multipliers from length units found in metadata to nanometres.
_UNIT_TO_NM = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "micron": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "angstrom": 0.1,
}


# --------------------------------------------------------------------------------------------
# locations


def _split_location(container: str | Path) -> tuple[str | None, dict[str, Any], str]:
    """Turn a path or URL into (format hint, tensorstore kvstore spec, printable location)."""
    text = str(container)
    hint: str | None = None
    for prefix, fmt in _FORMAT_PREFIXES.items():
        if text.startswith(prefix):
            text = text[len(prefix) :]
            hint = fmt
            break
    if text.startswith(("http://", "https://")):
        url = urlsplit(text)
        kvstore: dict[str, Any] = {"driver": "http", "base_url": f"{url.scheme}://{url.netloc}"}
        if url.path.strip("/"):
            kvstore["path"] = "/" + url.path.strip("/") + "/"
    elif text.startswith(("gs://", "s3://")):
        scheme, rest = text.split("://", 1)
        bucket, _, path = rest.partition("/")
        if not bucket:
            raise ValueError(f"{container}: URL names no bucket")
        kvstore = {"driver": "gcs" if scheme == "gs" else "s3", "bucket": bucket}
        if path.strip("/"):
            kvstore["path"] = path.strip("/") + "/"
    else:
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif "://" in text:
            raise ValueError(
                f"{container}: unsupported URL scheme; use a local path, http(s)://, gs://, s3:// "
                "optionally behind precomputed://, zarr://, zarr2://, zarr3:// or n5://"
            )
        kvstore = {"driver": "file", "path": str(Path(text).expanduser().absolute()) + "/"}
    if hint is None:
        lowered = text.rstrip("/").lower()
        if lowered.endswith(".n5"):
            hint = "n5"
    return hint, kvstore, str(container)


def _kv_join(kvstore: dict[str, Any], key: str | None) -> dict[str, Any]:
    """A kvstore spec for the directory ``key`` below ``kvstore`` (``None``/"" keeps it)."""
    key = (key or "").strip("/")
    if not key:
        return dict(kvstore)
    joined = dict(kvstore)
    base = joined.get("path", "")
    if base and not base.endswith("/"):
        base += "/"
    joined["path"] = base + key + "/"
    return joined


def _read_json_keys(kvstore: dict[str, Any], keys: Sequence[str], where: str) -> dict[str, Any]:
    """Read several small JSON files concurrently; missing ones map to ``None``."""
    store = ts.KvStore.open(kvstore).result()
    futures = {key: store.read(key) for key in keys}
    found: dict[str, Any] = {}
    for key, future in futures.items():
        try:
            result = future.result()
        except Exception as err:  # network or permission errors name the file they hit
            raise OSError(f"{where}: cannot read {key}: {err}") from err
        if result.state != "value":
            found[key] = None
            continue
        try:
            found[key] = json.loads(bytes(result.value))
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}/{key}: not valid JSON ({err})") from err
    return found


# --------------------------------------------------------------------------------------------
# metadata -> voxel size and offset (z, y, x nm)


def _as_zyx(values: Any, *, reverse: bool, field: str, where: str) -> np.ndarray:
    """Three numbers from metadata as z, y, x (``reverse`` for x, y, z conventions)."""
    try:
        array = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: field {field!r} is not a list of numbers: {values!r}") from err
    if array.size == 4:  # a trailing/leading channel entry in 4D metadata
        array = array[:3] if reverse else array[1:]
    if array.size != 3 or not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: field {field!r} must hold 3 finite numbers, got {values!r}")
    return array[::-1].copy() if reverse else array


def _unit_factor(unit: Any, where: str) -> float:
    if unit is None or unit == "":
        return 1.0
    factor = _UNIT_TO_NM.get(str(unit).lower())
    if factor is None:
        warnings.warn(f"{where}: unknown length unit {unit!r}; taking it as nm", stacklevel=4)
        return 1.0
    return factor


def _funlib_attrs(
    attrs: dict[str, Any] | None, *, xyz: bool, where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``resolution``/``offset`` (funlib, daisy) or N5 ``pixelResolution`` from one attr set."""
    if not attrs:
        return None, None
    voxel = offset = None
    if "resolution" in attrs:
        voxel = _as_zyx(attrs["resolution"], reverse=xyz, field="resolution", where=where)
    elif isinstance(attrs.get("pixelResolution"), dict):
        pixel = attrs["pixelResolution"]
        voxel = _as_zyx(
            pixel.get("dimensions"), reverse=True, field="pixelResolution.dimensions", where=where
        )
        voxel = voxel * _unit_factor(pixel.get("unit"), where)
    if "offset" in attrs:
        offset = _as_zyx(attrs["offset"], reverse=xyz, field="offset", where=where)
    return voxel, offset


def _ome_multiscales(
    group_attrs: dict[str, Any] | None, array_name: str, where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Scale and translation of ``array_name`` from OME-Zarr ``multiscales`` in the parent group."""
    if not group_attrs:
        return None, None
    multiscales = group_attrs.get("multiscales") or (group_attrs.get("ome") or {}).get(
        "multiscales"
    )
    if not isinstance(multiscales, list):
        return None, None
    for multiscale in multiscales:
        for entry in multiscale.get("datasets", []):
            if str(entry.get("path", "")).strip("/") != array_name:
                continue
            axes = multiscale.get("axes") or []
            ndim = len(axes) if axes else None
            scale, translation = _compose_transforms(
                entry.get("coordinateTransformations", []),
                multiscale.get("coordinateTransformations", []),
                ndim,
                where,
            )
            if scale is None:
                return None, None
            spatial = [
                i
                for i, axis in enumerate(axes)
                if isinstance(axis, dict) and axis.get("type", "space") == "space"
            ] or list(range(len(scale)))[-3:]
            if len(spatial) != 3:
                raise ValueError(f"{where}: OME-Zarr multiscales has {len(spatial)} spatial axes")
            unit = axes[spatial[0]].get("unit") if axes else None
            factor = _unit_factor(unit, where)
            return scale[spatial] * factor, translation[spatial] * factor
    return None, None


def _compose_transforms(
    own: list[dict[str, Any]], shared: list[dict[str, Any]], ndim: int | None, where: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Apply a dataset's OME transforms, then the multiscale-wide ones (scale then translate)."""
    scale: np.ndarray | None = None
    translation: np.ndarray | None = None
    for transform in list(own) + list(shared):
        kind = transform.get("type")
        if kind == "scale":
            values = np.asarray(transform.get("scale"), dtype=np.float64)
            scale = values if scale is None else scale * values
            if translation is not None:
                translation = translation * values
        elif kind == "translation":
            values = np.asarray(transform.get("translation"), dtype=np.float64)
            translation = values if translation is None else translation + values
        elif kind == "identity":
            continue
        else:
            raise ValueError(f"{where}: unsupported OME-Zarr coordinateTransformation {kind!r}")
    if scale is None:
        return None, None
    if ndim is not None and scale.size != ndim:
        raise ValueError(f"{where}: OME-Zarr scale {scale.tolist()} does not match {ndim} axes")
    if translation is None:
        translation = np.zeros_like(scale)
    return scale, translation


# --------------------------------------------------------------------------------------------
# opening


def _detect(
    hint: str | None, kvstore: dict[str, Any], dataset: str | None, where: str
) -> tuple[str, dict[str, Any]]:
    """Find the format from the metadata files present; returns (format, JSON files read)."""
    found: dict[str, Any] = {}
    if hint != "precomputed":
        keys = ["zarr.json", ".zarray", ".zattrs", "attributes.json"]
        found = _read_json_keys(_kv_join(kvstore, dataset), keys, where)
        if found["zarr.json"] is not None and hint in (None, "zarr3"):
            if found["zarr.json"].get("node_type") != "array":
                raise ValueError(
                    f"{where}: {dataset or '.'} is a zarr group, not an array; name the dataset "
                    "(e.g. 'volumes/raw' or 's0')"
                )
            return "zarr3", found
        if found[".zarray"] is not None and hint in (None, "zarr2"):
            return "zarr2", found
        n5_attrs = found["attributes.json"]
        if n5_attrs is not None and "dimensions" in n5_attrs and hint in (None, "n5"):
            return "n5", found
    info = _read_json_keys(kvstore, ["info"], where)["info"]
    if info is not None and hint in (None, "precomputed"):
        found["info"] = info
        return "precomputed", found
    looked = "info" if hint == "precomputed" else "zarr.json, .zarray, attributes.json or info"
    raise FileNotFoundError(
        f"{where}{' dataset ' + repr(dataset) if dataset else ''}: no "
        f"{hint or 'zarr/N5/precomputed'} array found (looked for {looked})"
    )


def _orient(store: ts.TensorStore, fmt: str, where: str) -> tuple[ts.TensorStore, np.ndarray]:
    """A 3D z, y, x view with origin 0; also returns the original z, y, x origin in voxels."""
    view = store
    if fmt == "precomputed":  # x, y, z, channel
        if view.shape[-1] != 1:
            raise ValueError(f"{where}: {view.shape[-1]} channels; only single-channel volumes")
        view = view[..., 0].T
    elif fmt == "n5":  # tensorstore presents N5 axes in stored (x, y, z) order
        view = view.T
    if view.rank == 4:
        if view.shape[0] == 1:
            view = view[0]
        elif view.shape[-1] == 1:
            view = view[..., 0]
        else:
            raise ValueError(
                f"{where}: 4D array of shape {tuple(view.shape)} (z, y, x order); only a single "
                "channel is supported"
            )
    if view.rank != 3:
        raise ValueError(f"{where}: expected a 3D volume, got shape {tuple(view.shape)}")
    origin_vox = np.asarray(view.domain.inclusive_min, dtype=np.int64)
    return view.translate_to[0, 0, 0], origin_vox


def _context(cache_bytes: int) -> ts.Context:
    return ts.Context({"cache_pool": {"total_bytes_limit": int(cache_bytes)}})


def _checked_triplet(
    values: Sequence[float] | None, name: str, *, positive: bool
) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size != 3 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be 3 finite numbers (z, y, x), got {values!r}")
    if positive and np.any(array <= 0):
        raise ValueError(f"{name} must be positive (z, y, x), got {values!r}")
    return array


def _shape3(shape_vox: Sequence[int], name: str = "shape_vox") -> np.ndarray:
    array = np.asarray(shape_vox).reshape(-1)
    if array.size != 3 or not np.issubdtype(array.dtype, np.integer) or np.any(array <= 0):
        raise ValueError(f"{name} must be 3 positive integers (z, y, x), got {shape_vox!r}")
    return array.astype(np.int64)


class Volume:
    """A raw EM volume (z, y, x) with its voxel size and offset in nm; reads zero-padded patches.

    ``container`` is a local path, an ``http(s)://``/``gs://``/``s3://`` URL (optionally behind a
    ``precomputed://``, ``zarr://``, ``zarr2://``, ``zarr3://`` or ``n5://`` prefix), or a full
    tensorstore spec dict.  ``dataset`` is the array inside the container (for precomputed: the
    scale key; default the first scale).  ``voxel_size_nm``/``offset_nm`` (z, y, x) override the
    metadata.  ``placement`` is how a position picks its patch (see :meth:`patch_starts_vox`).
    The object pickles as its spec, so DataLoader workers reopen it lazily with their own cache;
    those workers must be spawned, not forked (tensorstore aborts in a fork after use; reading in
    a forked child raises a RuntimeError instead).
    """

    def __init__(
        self,
        container: str | Path | dict[str, Any],
        dataset: str | None = None,
        *,
        voxel_size_nm: Sequence[float] | None = None,
        offset_nm: Sequence[float] | None = None,
        cache_bytes: int = 256 * 2**20,
        placement: str = "closest",
    ) -> None:
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        if placement not in PATCH_PLACEMENTS:
            raise ValueError(f"placement must be one of {PATCH_PLACEMENTS}, got {placement!r}")
        self.placement = placement
        self.cache_bytes = int(cache_bytes)
        override_voxel = _checked_triplet(voxel_size_nm, "voxel_size_nm", positive=True)
        override_offset = _checked_triplet(offset_nm, "offset_nm", positive=False)

        if isinstance(container, dict):
            self.location = f"tensorstore spec {json.dumps(container)[:200]}"
            fmt, open_spec, found, kvstore = self._from_spec(container, dataset)
        else:
            hint, kvstore, where = _split_location(container)
            self.location = where + (f" [{dataset}]" if dataset else "")
            fmt, found = _detect(hint, kvstore, dataset, self.location)
            open_spec = {"driver": _DRIVERS[fmt], "kvstore": _kv_join(kvstore, dataset)}
            if fmt == "precomputed":
                open_spec["kvstore"] = kvstore
                if dataset:
                    open_spec["scale_metadata"] = {"key": dataset.strip("/")}
        self.format = fmt
        context = _context(self.cache_bytes)
        try:
            store = ts.open(open_spec, read=True, context=context).result()
        except Exception as err:
            raise OSError(f"{self.location}: cannot open {fmt} array: {err}") from err
        view, origin_vox = _orient(store, fmt, self.location)
        self._store: ts.TensorStore | None = view
        self._opened_in_pid: int | None = os.getpid()
        self._spec = view.spec(minimal_spec=True, retain_context=False).to_json()
        self.shape_vox: tuple[int, int, int] = tuple(int(n) for n in view.shape)
        self.dtype = np.dtype(view.dtype.numpy_dtype)

        meta_voxel, meta_offset = self._metadata(fmt, found, store, kvstore, dataset, origin_vox)
        self.voxel_size_nm = self._resolve("voxel_size_nm", meta_voxel, override_voxel)
        self.offset_nm = self._resolve("offset_nm", meta_offset, override_offset)

        self.out_of_bounds_count = 0
        #: warn (once) when patches reach outside; front-ends that report it themselves unset it
        self.warn_out_of_bounds = True
        self._warned_out_of_bounds = False
        self._lock = threading.Lock()

    # -- construction helpers ---------------------------------------------------------------

    def _from_spec(
        self, spec: dict[str, Any], dataset: str | None
    ) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """Accept a tensorstore spec dict; read the metadata files beside it if it has a kvstore."""
        formats = {driver: fmt for fmt, driver in _DRIVERS.items()}
        driver = spec.get("driver")
        if driver not in formats:
            raise ValueError(
                f"{self.location}: driver {driver!r} is not one of {sorted(formats)} (key 'driver')"
            )
        fmt = formats[driver]
        open_spec = dict(spec)
        kvstore = spec.get("kvstore")
        if isinstance(kvstore, str):
            kvstore = ts.KvStore.Spec(kvstore).to_json()
        if isinstance(kvstore, dict) and fmt != "precomputed":
            kvstore = _kv_join(kvstore, spec.get("path"))
            open_spec["kvstore"] = _kv_join(kvstore, dataset)
            open_spec.pop("path", None)
            found = _read_json_keys(
                open_spec["kvstore"], [".zattrs", "zarr.json", "attributes.json"], self.location
            )
        else:
            found = {}
            if fmt == "precomputed" and dataset:
                open_spec["scale_metadata"] = {"key": dataset.strip("/")}
        return fmt, open_spec, found, kvstore if isinstance(kvstore, dict) else None

    def _metadata(
        self,
        fmt: str,
        found: dict[str, Any],
        store: ts.TensorStore,
        kvstore: dict[str, Any] | None,
        dataset: str | None,
        origin_vox: np.ndarray,
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Voxel size and offset (z, y, x nm) the dataset declares, ``None`` where it is silent."""
        where = self.location
        if fmt == "precomputed":
            scale = store.spec().to_json().get("scale_metadata", {})
            voxel = _as_zyx(scale["resolution"], reverse=True, field="resolution", where=where)
            return voxel, origin_vox * voxel
        if fmt == "n5":
            return _funlib_attrs(found.get("attributes.json"), xyz=True, where=where)
        if fmt == "zarr3":
            attrs = (found.get("zarr.json") or {}).get("attributes")
        else:
            attrs = found.get(".zattrs")
        voxel, offset = _funlib_attrs(attrs, xyz=False, where=where)
        if voxel is None and kvstore is not None and dataset and dataset.strip("/"):
            parent, _, name = dataset.strip("/").rpartition("/")
            key = "zarr.json" if fmt == "zarr3" else ".zattrs"
            group = _read_json_keys(_kv_join(kvstore, parent), [key], where)[key]
            if fmt == "zarr3" and group is not None:
                group = group.get("attributes")
            voxel, ome_offset = _ome_multiscales(group, name, where)
            offset = offset if offset is not None else ome_offset
        return voxel, offset

    def _resolve(
        self, name: str, from_metadata: np.ndarray | None, override: np.ndarray | None
    ) -> np.ndarray:
        """Config override wins (warning when it disagrees); voxel size falls back to 1 nm."""
        if override is not None:
            if from_metadata is not None and not np.allclose(from_metadata, override):
                warnings.warn(
                    f"{self.location}: {name} {override.tolist()} from the config overrides "
                    f"{from_metadata.tolist()} in the dataset metadata",
                    stacklevel=3,
                )
            return override
        if from_metadata is not None:
            return from_metadata
        if name == "voxel_size_nm":
            warnings.warn(
                f"{self.location}: no voxel size in the metadata and none given; using 1, 1, 1 nm "
                "(pass voxel_size_nm=(z, y, x) to set it)",
                stacklevel=3,
            )
            return np.ones(3)
        return np.zeros(3)

    # -- pickling ---------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None
        state["_opened_in_pid"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def store(self) -> ts.TensorStore:
        """The z, y, x tensorstore view (opened on first use after unpickling)."""
        if self._store is None:
            context = _context(self.cache_bytes)
            self._store = ts.open(self._spec, read=True, context=context).result()
            self._opened_in_pid = os.getpid()
        elif self._opened_in_pid != os.getpid():
            # tensorstore aborts the whole process when used in a fork of a process that used it
            raise RuntimeError(
                f"{self.location}: Volume used in a forked child process; tensorstore cannot "
                "work after fork. Start workers with spawn, e.g. "
                "DataLoader(..., multiprocessing_context='spawn')"
            )
        return self._store

    def __repr__(self) -> str:
        return (
            f"Volume({self.location!r}, format={self.format}, shape_vox={self.shape_vox}, "
            f"voxel_size_nm={self.voxel_size_nm.tolist()}, offset_nm={self.offset_nm.tolist()})"
        )

    # -- reading ----------------------------------------------------------------------------

    def patch_starts_vox(self, centers_nm: np.ndarray, shape_vox: Sequence[int]) -> np.ndarray:
        """First voxel (z, y, x, int64) of the patch of ``shape_vox`` placed at each position.

        "closest" (the default) reproduces the original synister: the box ``[p - S//2 * v,
        p - S//2 * v + S * v)`` (nm) snapped to the nearest voxel grid line, ties to even
        (numpy's rounding, as daisy's ``snap_to_grid(mode="closest")``), in world coordinates
        where the offset is a whole number of voxels (funlib/daisy volumes always are), else in
        the volume's own grid. So an even-sized patch is centred within half a voxel of ``p``.
        The original read integer nm positions (its database held integers); fractional ones
        are rounded as given. "floor": the patch around the voxel containing ``p``.
        """
        centers = np.asarray(centers_nm, dtype=np.float64)
        half = _shape3(shape_vox) // 2
        voxel = self.voxel_size_nm
        if self.placement == "floor":
            return np.floor((centers - self.offset_nm) / voxel).astype(np.int64) - half
        grid = self.offset_nm / voxel  # the volume's first voxel on the world grid
        aligned = np.isclose(grid, np.round(grid), rtol=0.0, atol=1e-9)
        origin_nm = np.where(aligned, 0.0, self.offset_nm)
        shift_vox = np.where(aligned, np.round(grid), 0.0)
        begin = np.rint((centers - origin_nm - half * voxel) / voxel) - shift_vox
        return begin.astype(np.int64)

    def center_vox(self, centers_nm: np.ndarray, shape_vox: Sequence[int]) -> np.ndarray:
        """The voxel (z, y, x, int64) at index ``S//2`` of each position's patch of
        ``shape_vox`` ``S`` (see :meth:`patch_starts_vox`)."""
        return self.patch_starts_vox(centers_nm, shape_vox) + _shape3(shape_vox) // 2

    def center_nm(self, center_vox: np.ndarray) -> np.ndarray:
        """Positions (z, y, x nm) whose patches of every shape have ``center_vox`` at index
        ``S//2``: voxel corners under "closest" (no tie, whatever the rounding), voxel centres
        under "floor". For samplers that choose the voxels first."""
        center = np.asarray(center_vox, dtype=np.float64)
        corner = 0.5 if self.placement == "floor" else 0.0
        return self.offset_nm + (center + corner) * self.voxel_size_nm

    def require_uint8(self) -> None:
        """Refuse intensities other than uint8: networks see ``raw / 255 * 2 - 1`` (see
        :func:`normalize`), which is wrong for any other type. Training and prediction share
        this rule."""
        if self.dtype != np.uint8:
            raise ValueError(
                f"{self.location}: intensities are {self.dtype}, but synister's networks read "
                "uint8 (normalised as raw / 255 * 2 - 1); convert the volume to uint8 first "
                "(map its intensity range to 0-255)"
            )

    def read_patches(self, centers_nm: np.ndarray, shape_vox: Sequence[int]) -> np.ndarray:
        """Patches (N, Z, Y, X) centred on ``centers_nm`` (N, 3; z, y, x nm), zero outside.

        All in-bounds reads are issued at once and then awaited, so tensorstore fetches and
        decodes chunks in parallel.  Patches reaching outside the volume are counted in
        ``out_of_bounds_count`` and warned about once per instance.
        """
        centers = np.asarray(centers_nm, dtype=np.float64)
        if centers.ndim != 2 or centers.shape[1] != 3:
            raise ValueError(f"centers_nm must have shape (N, 3) z, y, x; got {centers.shape}")
        bad = np.flatnonzero(~np.all(np.isfinite(centers), axis=1))
        if bad.size:
            raise ValueError(
                f"centers_nm row {int(bad[0])} is not finite: {centers[bad[0]].tolist()}"
            )
        shape = _shape3(shape_vox)
        starts = self.patch_starts_vox(centers, shape)
        patches, outside = self._read_boxes(starts, shape)
        if outside:
            self._note_out_of_bounds(outside, len(centers))
        return patches

    def read_patch(self, center_nm: Sequence[float], shape_vox: Sequence[int]) -> np.ndarray:
        """One patch (Z, Y, X) centred on ``center_nm`` (z, y, x nm)."""
        return self.read_patches(np.asarray(center_nm, dtype=np.float64)[None], shape_vox)[0]

    def read_region_vox(self, start_vox: Sequence[int], shape_vox: Sequence[int]) -> np.ndarray:
        """The box ``[start_vox, start_vox + shape_vox)`` (z, y, x voxels), zero outside.

        Meant for block-wise readers whose edge blocks overhang on purpose, so it neither warns
        nor counts.
        """
        start = np.asarray(start_vox).reshape(-1)
        if start.size != 3 or not np.issubdtype(start.dtype, np.integer):
            raise ValueError(f"start_vox must be 3 integers (z, y, x), got {start_vox!r}")
        return self._read_boxes(start[None].astype(np.int64), _shape3(shape_vox))[0][0]

    def _read_boxes(self, starts: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, int]:
        """Read boxes of one shape at ``starts`` (N, 3); returns them and the count not inside."""
        volume_shape = np.asarray(self.shape_vox, dtype=np.int64)
        ends = starts + shape
        inside = np.all((starts >= 0) & (ends <= volume_shape), axis=1)
        if len(starts) and inside.all():
            return self._read_inside(starts, ends), 0
        lo = np.clip(starts, 0, volume_shape)
        hi = np.clip(ends, 0, volume_shape)
        patches = np.zeros((len(starts), *shape.tolist()), dtype=self.dtype)
        if inside.any():
            patches[inside] = self._read_inside(starts[inside], ends[inside])
        store = self.store
        rows = np.flatnonzero(~inside & np.all(hi > lo, axis=1))  # partly inside
        lo_l, hi_l = lo[rows].tolist(), hi[rows].tolist()
        a_l, b_l = (lo[rows] - starts[rows]).tolist(), (hi[rows] - starts[rows]).tolist()
        with ts.Batch() as batch:
            pending = [
                store[z0:z1, y0:y1, x0:x1].read(batch=batch)
                for (z0, y0, x0), (z1, y1, x1) in zip(lo_l, hi_l, strict=True)
            ]
        for i, future, a, b in zip(rows.tolist(), pending, a_l, b_l, strict=True):
            patches[i, a[0] : b[0], a[1] : b[1], a[2] : b[2]] = future.result()
        return patches, int(len(starts) - inside.sum())

    def _read_inside(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Boxes [starts, ends) (N, 3, all inside, one shape) as one (N, Z, Y, X) array.

        One read of a virtual stack of the boxes: requests for the same chunk are merged and
        the result needs no copy (8x32x32 patches from the chunk cache: 18 us a patch, 28 us
        read one by one in a ``ts.Batch``, 41 us without). Python ints: tensorstore indexes
        with numpy scalars several times slower.
        """
        store = self.store
        boxes = [
            store[z0:z1, y0:y1, x0:x1].translate_to[0, 0, 0]
            for (z0, y0, x0), (z1, y1, x1) in zip(starts.tolist(), ends.tolist(), strict=True)
        ]
        return ts.stack(boxes).read().result()

    def _note_out_of_bounds(self, outside: int, total: int) -> None:
        with self._lock:
            self.out_of_bounds_count += outside
            first = self.warn_out_of_bounds and not self._warned_out_of_bounds
            self._warned_out_of_bounds = True
        if first:
            warnings.warn(
                f"{self.location}: {outside} of {total} patches reach outside the volume "
                f"(shape_vox {self.shape_vox}); they are zero-padded. Further cases are only "
                "counted in Volume.out_of_bounds_count",
                stacklevel=3,
            )


# --------------------------------------------------------------------------------------------
# intensities


def normalize(raw: Any) -> Any:
    """uint8 intensities to float32 in [-1, 1] as raw / 255 * 2 - 1 (the original convention).

    Works on numpy arrays (returns numpy) and torch tensors (returns a tensor on the same device).
    """
    if type(raw).__module__.startswith("torch"):
        import torch

        return raw.to(torch.float32) / 255.0 * 2.0 - 1.0
    out = np.array(raw, dtype=np.float32)  # a fresh array, then in place: one allocation
    out /= np.float32(255.0)
    out *= np.float32(2.0)
    out -= np.float32(1.0)
    return out


# --------------------------------------------------------------------------------------------
# writing

_WRITE_FORMATS = ("zarr", "zarr2", "n5")


class VolumeWriter:
    """An open, empty volume that takes z, y, x blocks, so a large volume never sits in memory."""

    def __init__(self, store: ts.TensorStore, path: Path, dataset: str, fmt: str) -> None:
        self._store = store  # z, y, x view
        self.path = path
        self.dataset = dataset
        self.format = fmt
        self.shape_vox: tuple[int, int, int] = tuple(int(n) for n in store.shape)

    def write_block(self, start_vox: Sequence[int], block: np.ndarray) -> None:
        """Write ``block`` (z, y, x, uint8) at ``start_vox``; it must lie inside the volume."""
        start = np.asarray(start_vox).reshape(-1)
        data = np.asarray(block)
        if start.size != 3 or not np.issubdtype(start.dtype, np.integer):
            raise ValueError(f"{self.path}: start_vox must be 3 integers, got {start_vox!r}")
        if data.ndim != 3 or data.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: block at {start.tolist()} must be a 3D uint8 array, got "
                f"{data.dtype} of shape {data.shape}"
            )
        end = start + np.asarray(data.shape)
        if np.any(start < 0) or np.any(end > np.asarray(self.shape_vox)):
            raise ValueError(
                f"{self.path}: block [{start.tolist()}, {end.tolist()}) lies outside the volume "
                f"of shape_vox {self.shape_vox}"
            )
        (z0, y0, x0), (z1, y1, x1) = start, end
        self._store[z0:z1, y0:y1, x0:x1].write(data).result()

    def write_blocks(self, blocks: Iterable[tuple[Sequence[int], np.ndarray]]) -> None:
        """Write (start_vox, block) pairs one after the other, as a generator yields them."""
        for start_vox, block in blocks:
            self.write_block(start_vox, block)

    def open(self, **kwargs: Any) -> Volume:
        """The written volume, for reading."""
        return Volume(self.path, self.dataset, **kwargs)


def _write_json(path: Path, content: dict[str, Any], *, merge: bool = True) -> None:
    if merge and path.exists():
        content = {**json.loads(path.read_text()), **content}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2))


def create_volume(
    path: str | Path,
    shape_vox: Sequence[int],
    voxel_size_nm: Sequence[float],
    offset_nm: Sequence[float] = (0, 0, 0),
    *,
    format: str = "zarr",
    dataset: str = "raw",
    chunks_vox: Sequence[int] = (32, 128, 128),
) -> VolumeWriter:
    """Create an empty local uint8 volume (replacing ``dataset`` if it exists) to fill blockwise.

    ``format``: "zarr" (zarr v3), "zarr2" or "n5".  zarr stores ``resolution``/``offset`` attributes
    in z, y, x nm; N5 stores them in x, y, z (its convention) with the array dimensions reversed,
    as funlib and the N5 viewers expect.
    """
    if format not in _WRITE_FORMATS:
        raise ValueError(f"format must be one of {_WRITE_FORMATS}, got {format!r}")
    if "://" in str(path):
        raise ValueError(f"{path}: write_volume writes local paths only")
    shape = _shape3(shape_vox)
    voxel = _checked_triplet(voxel_size_nm, "voxel_size_nm", positive=True)
    offset = _checked_triplet(offset_nm, "offset_nm", positive=False)
    chunks = np.minimum(_shape3(chunks_vox, "chunks_vox"), shape)
    dataset = dataset.strip("/")
    if not dataset:
        raise ValueError("dataset must name the array inside the container, e.g. 'raw'")
    root = Path(path).expanduser().absolute()
    kvstore = {"driver": "file", "path": str(root / dataset) + "/"}
    resolution, offset_list = voxel.tolist(), offset.tolist()

    if format == "zarr":
        spec: dict[str, Any] = {
            "driver": "zarr3",
            "metadata": {
                "shape": shape.tolist(),
                "data_type": "uint8",
                "chunk_grid": {
                    "name": "regular",
                    "configuration": {"chunk_shape": chunks.tolist()},
                },
                "codecs": [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 3}}],
                "attributes": {"resolution": resolution, "offset": offset_list},
            },
        }
    elif format == "zarr2":
        spec = {
            "driver": "zarr",
            "metadata": {
                "shape": shape.tolist(),
                "dtype": "|u1",
                "chunks": chunks.tolist(),
                "compressor": {"id": "zstd", "level": 3},
            },
        }
    else:
        spec = {
            "driver": "n5",
            "metadata": {
                "dimensions": shape[::-1].tolist(),
                "blockSize": chunks[::-1].tolist(),
                "dataType": "uint8",
                "compression": {"type": "gzip", "level": 5},
            },
        }
    spec.update(kvstore=kvstore, create=True, delete_existing=True)
    store = ts.open(spec).result()

    # group metadata so zarr-python / N5 tools see a container, then the array attributes
    if format == "zarr":
        for parent in [root, *[root / p for p in Path(dataset).parents if str(p) != "."]]:
            if not (parent / "zarr.json").exists():
                _write_json(parent / "zarr.json", {"zarr_format": 3, "node_type": "group"})
    elif format == "zarr2":
        for parent in [root, *[root / p for p in Path(dataset).parents if str(p) != "."]]:
            _write_json(parent / ".zgroup", {"zarr_format": 2}, merge=False)
        _write_json(root / dataset / ".zattrs", {"resolution": resolution, "offset": offset_list})
    else:
        _write_json(root / "attributes.json", {"n5": "2.0.0"})
        _write_json(
            root / dataset / "attributes.json",
            {"resolution": resolution[::-1], "offset": offset_list[::-1]},
        )
        store = store.T
    return VolumeWriter(store, root, dataset, format)


def write_volume(
    path: str | Path,
    data_uint8_zyx: np.ndarray | Iterable[tuple[Sequence[int], np.ndarray]],
    voxel_size_nm: Sequence[float],
    offset_nm: Sequence[float] = (0, 0, 0),
    *,
    format: str = "zarr",
    dataset: str = "raw",
    chunks_vox: Sequence[int] = (32, 128, 128),
    shape_vox: Sequence[int] | None = None,
) -> Volume:
    """Write a uint8 z, y, x volume and return it opened for reading.

    ``data_uint8_zyx`` is either the whole array or an iterable/generator of
    ``(start_vox, block)`` pairs; the latter needs ``shape_vox`` and keeps only one block in
    memory at a time.
    """
    if isinstance(data_uint8_zyx, np.ndarray):
        if shape_vox is not None and tuple(shape_vox) != data_uint8_zyx.shape:
            raise ValueError(
                f"{path}: shape_vox {tuple(shape_vox)} disagrees with the data's shape "
                f"{data_uint8_zyx.shape}"
            )
        writer = create_volume(
            path,
            data_uint8_zyx.shape,
            voxel_size_nm,
            offset_nm,
            format=format,
            dataset=dataset,
            chunks_vox=chunks_vox,
        )
        writer.write_block((0, 0, 0), data_uint8_zyx)
    else:
        if shape_vox is None:
            raise ValueError(f"{path}: writing from blocks needs shape_vox (z, y, x)")
        writer = create_volume(
            path,
            shape_vox,
            voxel_size_nm,
            offset_nm,
            format=format,
            dataset=dataset,
            chunks_vox=chunks_vox,
        )
        writer.write_blocks(data_uint8_zyx)
    return writer.open()


def iter_blocks_vox(
    shape_vox: Sequence[int], block_vox: Sequence[int]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(start_vox, block shape) tiling ``shape_vox`` in z, y, x order; edge blocks are cut short."""
    shape = _shape3(shape_vox)
    block = _shape3(block_vox, "block_vox")
    counts = [math.ceil(int(s) / int(b)) for s, b in zip(shape, block, strict=True)]
    for index in np.ndindex(*counts):
        start = np.asarray(index, dtype=np.int64) * block
        yield start, np.minimum(block, shape - start)
