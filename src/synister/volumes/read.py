"""Reading a volume: :class:`Volume` opens it (see :mod:`.locate` and :mod:`.metadata`) and
reads zero-padded patches placed as CONTRIBUTING.md "Patches" says; :func:`normalize` maps its
uint8 intensities to what the networks see.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts

from .boxes import Done, PendingRead, read_boxes
from .locate import (
    OPEN_TIMEOUT_S,
    describe_error,
    is_remote,
    kv_join,
    read_json_keys,
    reading_context,
    split_location,
)
from .metadata import (
    DRIVERS,
    as_zyx,
    checked_triplet,
    detect_format,
    funlib_attrs,
    group_error,
    ome_multiscales,
    orient_zyx,
    shape3,
)
from .scales import choose_scale, ome_scales, precomputed_scales

log = logging.getLogger(__name__)

#: How a position picks the voxels of its patch (CONTRIBUTING.md "Patches"): "closest", the
#: original's daisy ``Roi(p - S//2 * v, S * v).snap_to_grid(v, mode="closest")``, or "floor",
#: the patch around the voxel that contains the position.
PATCH_PLACEMENTS = ("closest", "floor")
#: reads of a staged volume tried again when a chunk left the stage between staging and reading
STAGED_READ_TRIES = 3


class Volume:
    """A raw EM volume (z, y, x) with its voxel size and offset in nm; reads zero-padded patches.

    ``container`` is a local path, an ``http(s)://``/``gs://``/``s3://`` URL (optionally behind a
    ``precomputed://``, ``zarr://``, ``zarr2://``, ``zarr3://`` or ``n5://`` prefix), or a full
    tensorstore spec dict.  ``dataset`` is the array inside the container (for precomputed: the
    scale key).  Without it, a multiscale container (precomputed scales, an OME-Zarr group)
    opens the scale of ``scale_nm`` (z, y, x; else ``voxel_size_nm``; else the first), says so
    in :attr:`scale_note`, and lists the scales there are when none matches.
    ``voxel_size_nm``/``offset_nm`` (z, y, x) override the metadata.  ``placement`` is how a
    position picks its patch (see :meth:`patch_starts_vox`).

    Chunks are cached, decoded, in the process's chunk cache (``cache_bytes``, shared by the
    volumes of a process, see :func:`~synister.volumes.locate.reading_context`) and not
    re-validated against the store while the volume is open (``recheck=True``: at every read,
    for a volume written while it is read): a run fetches a chunk once while it stays cached.
    Processes on one machine can share decoded chunks on disk instead (:meth:`stage_chunks`).
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
        scale_nm: Sequence[float] | None = None,
        recheck: bool = False,
    ) -> None:
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        if placement not in PATCH_PLACEMENTS:
            raise ValueError(f"placement must be one of {PATCH_PLACEMENTS}, got {placement!r}")
        self.placement = placement
        self.cache_bytes = int(cache_bytes)
        override_voxel = checked_triplet(voxel_size_nm, "voxel_size_nm", positive=True)
        override_offset = checked_triplet(offset_nm, "offset_nm", positive=False)
        wanted = checked_triplet(scale_nm, "scale_nm", positive=True)
        self.recheck = bool(recheck)
        #: which scale of a multiscale container was read, and why (None: not multiscale)
        self.scale_note: str | None = None

        if isinstance(container, dict):
            self.location = f"tensorstore spec {json.dumps(container)[:200]}"
            fmt, open_spec, found, kvstore = self._from_spec(container, dataset)
        else:
            hint, kvstore, where = split_location(container)
            self.location = where + (f" [{dataset}]" if dataset else "")
            fmt, found = detect_format(hint, kvstore, dataset, self.location)
            wanted = wanted if wanted is not None else override_voxel
            if fmt.endswith("-group"):
                dataset = self._group_scale(fmt, found, dataset, wanted, kvstore)
                self.location = where + f" [{dataset}]"
                fmt, found = detect_format(hint, kvstore, dataset, self.location)
            elif fmt == "precomputed" and not dataset:
                scales = precomputed_scales(found["info"], self.location)
                if len(scales) > 1:
                    dataset, self.scale_note = choose_scale(scales, wanted, self.location)
                    self.location = where + f" [{dataset}]"
            open_spec = {"driver": DRIVERS[fmt], "kvstore": kv_join(kvstore, dataset)}
            if fmt == "precomputed":
                open_spec["kvstore"] = kvstore
                if dataset:
                    open_spec["scale_metadata"] = {"key": dataset.strip("/")}
        if self.scale_note:
            log.info(self.scale_note)
        self.format = fmt
        #: whether the bytes come over a network (http(s)://, gs://, s3://)
        self.remote = is_remote(kvstore)
        self._stage = None
        try:
            store = self._open(open_spec).result(timeout=OPEN_TIMEOUT_S)
        except TimeoutError as err:
            raise OSError(f"{self.location}: no answer within {OPEN_TIMEOUT_S:g} s") from err
        except Exception as err:
            raise OSError(
                f"{self.location}: cannot open {fmt} array: {describe_error(err)}"
            ) from err
        view, origin_vox = orient_zyx(store, fmt, self.location)
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

    def _open(self, spec: dict[str, Any]) -> ts.Future:
        """Open for reading in the process's context; cached chunks are re-validated only
        when they were cached before this open (or at every read with ``recheck``)."""
        recheck: bool | str = True if self.recheck else "open"
        return ts.open(
            spec,
            read=True,
            context=reading_context(self.cache_bytes),
            recheck_cached_data=recheck,
            recheck_cached_metadata="open",
        )

    def _group_scale(
        self,
        fmt: str,
        found: dict[str, Any],
        dataset: str | None,
        wanted: np.ndarray | None,
        kvstore: dict[str, Any] | None = None,
    ) -> str:
        """The dataset of an OME-Zarr group's scale (see :mod:`.scales`)."""
        if fmt == "zarr3-group":
            attrs = (found.get("zarr.json") or {}).get("attributes")
        else:
            attrs = found.get(".zattrs")
        scales = ome_scales(attrs, self.location)
        if not scales:
            raise group_error(self.location, dataset, kvstore)
        name, note = choose_scale(scales, wanted, self.location)
        self.scale_note = note if len(scales) > 1 else None
        return "/".join(part for part in ((dataset or "").strip("/"), name) if part)

    def _from_spec(
        self, spec: dict[str, Any], dataset: str | None
    ) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """Accept a tensorstore spec dict; read the metadata files beside it if it has a kvstore."""
        formats = {driver: fmt for fmt, driver in DRIVERS.items()}
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
            kvstore = kv_join(kvstore, spec.get("path"))
            open_spec["kvstore"] = kv_join(kvstore, dataset)
            open_spec.pop("path", None)
            found = read_json_keys(
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
            voxel = as_zyx(scale["resolution"], reverse=True, field="resolution", where=where)
            return voxel, origin_vox * voxel
        if fmt == "n5":
            return funlib_attrs(found.get("attributes.json"), xyz=True, where=where)
        if fmt == "zarr3":
            attrs = (found.get("zarr.json") or {}).get("attributes")
        else:
            attrs = found.get(".zattrs")
        voxel, offset = funlib_attrs(attrs, xyz=False, where=where)
        if voxel is None and kvstore is not None and dataset and dataset.strip("/"):
            parent, _, name = dataset.strip("/").rpartition("/")
            key = "zarr.json" if fmt == "zarr3" else ".zattrs"
            group = read_json_keys(kv_join(kvstore, parent), [key], where)[key]
            if fmt == "zarr3" and group is not None:
                group = group.get("attributes")
            voxel, ome_offset = ome_multiscales(group, name, where)
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
        state["_stage"] = None  # a process stages through its own ChunkStage
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def store(self) -> ts.TensorStore:
        """The z, y, x tensorstore view (opened on first use after unpickling)."""
        if self._store is None:
            self._store = self._open(self._spec).result()
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
        half = shape3(shape_vox) // 2
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
        return self.patch_starts_vox(centers_nm, shape_vox) + shape3(shape_vox) // 2

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
        return self.submit_patches(centers_nm, shape_vox).result()

    def submit_patches(self, centers_nm: np.ndarray, shape_vox: Sequence[int]) -> PendingRead:
        """:meth:`read_patches` without waiting: the reads are issued now (their chunks
        fetched while the caller does other work, e.g. runs the network on the previous
        batch), the patches come from ``.result()``."""
        centers = np.asarray(centers_nm, dtype=np.float64)
        if centers.ndim != 2 or centers.shape[1] != 3:
            raise ValueError(f"centers_nm must have shape (N, 3) z, y, x; got {centers.shape}")
        bad = np.flatnonzero(~np.all(np.isfinite(centers), axis=1))
        if bad.size:
            raise ValueError(
                f"centers_nm row {int(bad[0])} is not finite: {centers[bad[0]].tolist()}"
            )
        shape = shape3(shape_vox)
        pending = self._submit_boxes(self.patch_starts_vox(centers, shape), shape)
        if pending.outside:
            self._note_out_of_bounds(pending.outside, len(centers))
        return pending

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
        return self._submit_boxes(start[None].astype(np.int64), shape3(shape_vox)).result()[0]

    def stage_chunks(self, stage) -> None:
        """Read through ``stage`` (a :class:`~synister.volumes.stage.ChunkStage` made for this
        volume): the processes of one machine that share it fetch each chunk once between
        them. Reads then wait until their chunks are staged."""
        if tuple(int(n) for n in stage.shape_vox) != self.shape_vox:
            raise ValueError(
                f"{self.location}: the stage in {stage.folder} holds a volume of shape "
                f"{stage.shape_vox.tolist()}, not {list(self.shape_vox)}"
            )
        self._stage = stage

    def _submit_boxes(self, starts: np.ndarray, shape: np.ndarray) -> PendingRead:
        """Issue the reads of boxes of one shape at ``starts`` (N, 3), zero outside."""
        if self._stage is None:
            return read_boxes(self.store, self.location, self.shape_vox, self.dtype, starts, shape)
        for _ in range(STAGED_READ_TRIES - 1):
            try:
                return self._read_staged(starts, shape)
            except OSError as err:  # a chunk left the stage since it was staged: again
                if "NOT_FOUND" not in str(err):
                    raise
        return self._read_staged(starts, shape)

    def _read_staged(self, starts: np.ndarray, shape: np.ndarray) -> PendingRead:
        """Stage the chunks of the boxes, then read them from the stage (done on return)."""
        try:
            self._stage.ensure(self.store, starts, starts + shape)
        except Exception as err:  # the source's errors, as unstaged reads give them
            raise OSError(f"{self.location}: reading failed: {describe_error(err)}") from err
        pending = read_boxes(
            self._stage.array, self.location, self.shape_vox, self.dtype, starts, shape
        )
        return PendingRead(self.location, Done(pending.result()), None, [], pending.outside)

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
