"""Decoded chunks of a remote volume, shared on local disk by the processes of one machine.

Each process keeps its own chunk cache (:func:`~synister.volumes.locate.reading_context`), so
``predict-volume`` workers reading one remote volume would each fetch the chunks near their
blocks' boundaries. A :class:`ChunkStage` is a folder they share instead: the first worker
that needs a chunk takes its lock (an exclusive ``flock`` per chunk, which the system
releases when a holder dies, even by ``kill -9``), fetches and decodes it and writes it as one
uncompressed zarr chunk (tensorstore's file writes are atomic); a worker that finds the lock
taken waits on it and then reads what was written. Every read goes through this local
mirror, opened so that a chunk not there is an error, never zeros.

The folder is bounded: beyond its budget the chunks used least recently are removed (a read
that then misses its chunk stages it again). It lives in memory (``/dev/shm``, see
:func:`stage_folder`) where there is room: its many small files then cost no disk writes,
which on disk made two workers' remote reads 1.3 times slower. Layout::

    stage.json  shape, chunk shape and padding (z, y, x voxels), budget
    chunks/     the mirror: a zarr array, one file per chunk of the remote volume
    locks/      one lock file per chunk
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import tensorstore as ts

from ..files import write_json

#: default budget of a stage folder (bytes of decoded chunks)
STAGE_BYTES = 2**30
#: lock files open at once per process (each holds a file descriptor)
LOCKS_AT_ONCE = 256
_CHUNK_NAME = re.compile(r"^\d+\.\d+\.\d+$")
#: where stages are kept in memory when there is room
MEMORY_ROOT = Path("/dev/shm")


def memory_stage_path(on_disk: str | Path, root: str | Path = MEMORY_ROOT) -> Path:
    """The folder in ``root`` for the stage whose place on disk is ``on_disk``: named after
    it, so that a rerun replaces or removes what a killed run left there."""
    key = hashlib.sha256(str(Path(on_disk).resolve()).encode()).hexdigest()[:16]
    return Path(root) / f"synister-stage-{key}"


def stage_folder(on_disk: str | Path, budget_bytes: int, root: str | Path = MEMORY_ROOT) -> Path:
    """Where a stage of ``budget_bytes`` is kept: in memory (:func:`memory_stage_path`)
    where ``root`` is a writable folder with room for twice the budget, else ``on_disk``.
    Stages in ``root`` whose run has ended without removing them are removed first."""
    root = Path(root)
    remove_abandoned_stages(root)
    try:
        room = shutil.disk_usage(root).free if os.access(root, os.W_OK) else 0
    except OSError:  # no such folder
        room = 0
    return memory_stage_path(on_disk, root) if room >= 2 * budget_bytes else Path(on_disk)


def remove_abandoned_stages(root: str | Path = MEMORY_ROOT) -> list[Path]:
    """Remove the stages in ``root`` whose creating process has ended (a run killed before
    it could remove its stage would otherwise hold their memory until the machine restarts);
    returns them."""
    removed = []
    for folder in Path(root).glob("synister-stage-*"):
        try:
            owner = int(json.loads((folder / "stage.json").read_text())["owner_pid"])
            os.kill(owner, 0)
        except ProcessLookupError:  # ended
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except (OSError, ValueError, KeyError):  # being made, not ours, or not a stage
            continue
    return removed


class ChunkStage:
    """A stage folder made by :meth:`create`, opened by each process that reads through it
    (see :meth:`synister.volumes.Volume.stage_chunks`)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        settings = json.loads((self.folder / "stage.json").read_text())
        self.shape_vox = np.asarray(settings["shape_vox"], dtype=np.int64)
        self.chunk_vox = np.asarray(settings["chunk_vox"], dtype=np.int64)
        self.pad_vox = np.asarray(settings["pad_vox"], dtype=np.int64)
        self.budget_bytes = int(settings["budget_bytes"])
        self.fetched = 0  # chunks this process fetched from the source
        self._since_evict = 0  # bytes this process staged since it last checked the budget
        # the files are the cache; the stage is made anew by each run, so no fsync
        no_cache = ts.Context({"cache_pool": {"total_bytes_limit": 0}, "file_io_sync": False})
        self._mirror = ts.open(
            {
                "driver": "zarr",
                "kvstore": {"driver": "file", "path": str(self.chunks_dir)},
                "fill_missing_data_reads": False,
            },
            context=no_cache,
        ).result()
        low, high = self.pad_vox, self.pad_vox + self.shape_vox
        #: the mirror in the source's voxel coordinates (z, y, x from 0)
        self.array = self._mirror[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
        self.array = self.array.translate_to[0, 0, 0]

    chunks_dir = property(lambda self: self.folder / "chunks")
    locks_dir = property(lambda self: self.folder / "locks")

    @classmethod
    def create(
        cls, folder: str | Path, source: ts.TensorStore, budget_bytes: int = STAGE_BYTES
    ) -> ChunkStage:
        """An empty stage for ``source`` (a 3D uint8 view from 0) in ``folder``, replacing
        what a killed run left there; its chunks are ``source``'s read chunks, on the same
        grid (padded at the start where that grid does not begin at voxel 0)."""
        folder = Path(folder)
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "locks").mkdir(parents=True)
        layout = source.chunk_layout
        chunk = np.asarray(layout.read_chunk.shape, dtype=np.int64)
        origin = np.asarray(layout.grid_origin, dtype=np.int64)
        pad = np.mod(origin, chunk)  # the grid's lines at -pad + k * chunk: chunk k starts there
        pad = np.where(pad == 0, 0, chunk - pad)
        shape = np.asarray(source.shape, dtype=np.int64)
        ts.open(
            {
                "driver": "zarr",
                "kvstore": {"driver": "file", "path": str(folder / "chunks")},
                "metadata": {
                    "shape": (shape + pad).tolist(),
                    "chunks": chunk.tolist(),
                    "dtype": "|u1",
                    "compressor": None,
                    "fill_value": 0,
                },
                "create": True,
            }
        ).result()
        write_json(
            folder / "stage.json",
            {
                "shape_vox": shape,
                "chunk_vox": chunk,
                "pad_vox": pad,
                "budget_bytes": budget_bytes,
                "owner_pid": os.getpid(),
            },
        )
        return cls(folder)

    # -- which chunks ---------------------------------------------------------------------------

    def chunk_indices(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Grid indices (K, 3) of the chunks that the boxes ``[starts, ends)`` (N, 3 voxels of
        the source) touch inside the volume."""
        low = np.clip(np.asarray(starts).reshape(-1, 3), 0, self.shape_vox)
        high = np.clip(np.asarray(ends).reshape(-1, 3), 0, self.shape_vox)
        keep = np.all(high > low, axis=1)
        first = (low[keep] + self.pad_vox) // self.chunk_vox
        last = (high[keep] - 1 + self.pad_vox) // self.chunk_vox
        if len(first) == 0:
            return np.zeros((0, 3), dtype=np.int64)
        span = (last - first).max(axis=0) + 1
        steps = np.stack(np.meshgrid(*map(np.arange, span), indexing="ij"), -1).reshape(-1, 3)
        candidates = first[:, None, :] + steps[None]
        inside = np.all(candidates <= last[:, None, :], axis=2)
        return np.unique(candidates[inside], axis=0)

    def _name(self, index) -> str:
        return ".".join(str(int(i)) for i in index)

    # -- staging ----------------------------------------------------------------------------------

    def ensure(self, source: ts.TensorStore, starts: np.ndarray, ends: np.ndarray) -> None:
        """Stage every chunk the boxes ``[starts, ends)`` touch: fetched from ``source`` by
        this process where no other has it or is fetching it, else waited for. The budget is
        checked first, so that these chunks are not the ones removed."""
        if self._since_evict > self.budget_bytes // 8:
            self.evict()
        indices = self.chunk_indices(starts, ends)
        for first in range(0, len(indices), LOCKS_AT_ONCE):
            self._ensure(source, [tuple(i) for i in indices[first : first + LOCKS_AT_ONCE]])

    def _ensure(self, source: ts.TensorStore, indices: list[tuple]) -> None:
        mine: list[tuple] = []  # (index, lock) to fetch here
        theirs: list[tuple] = []  # (index, lock) being fetched by another process
        try:
            for index in indices:
                name = self._name(index)
                with contextlib.suppress(FileNotFoundError):
                    os.utime(self.chunks_dir / name)  # used now: removed last
                    continue
                lock = os.open(self.locks_dir / name, os.O_CREAT | os.O_RDWR, 0o644)
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    theirs.append((index, lock))
                    continue
                mine.append((index, lock))
            self._fetch(source, [i for i, _ in mine if not self._staged(i)])
            while mine:
                os.close(mine.pop()[1])  # released: the chunk is there for those waiting
            while theirs:  # one lock held at a time: no process waits on one that waits
                index, lock = theirs[-1]
                fcntl.flock(lock, fcntl.LOCK_EX)  # until the process fetching it is done
                if not self._staged(index):  # it failed or died
                    self._fetch(source, [index])
                os.close(theirs.pop()[1])
        finally:
            for _, lock in mine + theirs:
                os.close(lock)

    def _staged(self, index) -> bool:
        return (self.chunks_dir / self._name(index)).exists()

    def _fetch(self, source: ts.TensorStore, indices: list[tuple]) -> None:
        """Read chunks ``indices`` from ``source`` (all at once) and write them to the mirror."""
        boxes = []
        for index in indices:
            low = np.asarray(index) * self.chunk_vox  # mirror voxels
            high = np.minimum(low + self.chunk_vox, self.shape_vox + self.pad_vox)
            inner_low = np.maximum(low - self.pad_vox, 0)  # source voxels
            inner_high = high - self.pad_vox
            view = source[tuple(slice(a, b) for a, b in zip(inner_low, inner_high, strict=True))]
            boxes.append((low, high, inner_low + self.pad_vox - low, view.read()))
        writes = []
        for low, high, offset, reading in boxes:
            data = reading.result()
            chunk = np.zeros(high - low, dtype=np.uint8)  # whole chunks: no read before writing
            chunk[tuple(slice(o, o + s) for o, s in zip(offset, data.shape, strict=True))] = data
            where = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
            writes.append(self._mirror[where].write(chunk))
            self._since_evict += chunk.nbytes
        for write in writes:
            write.result()
        self.fetched += len(indices)

    def evict(self) -> int:
        """Remove the chunks used least recently until the stage holds at most 3/4 of its
        budget (when it holds more than the budget); returns how many were removed. A chunk
        whose lock is held (being fetched) stays."""
        self._since_evict = 0
        found = []
        with os.scandir(self.chunks_dir) as entries:
            for entry in entries:
                if _CHUNK_NAME.match(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        stat = entry.stat()
                        found.append((stat.st_mtime_ns, stat.st_size, entry.name))
        total = sum(size for _, size, _ in found)
        if total <= self.budget_bytes:
            return 0
        removed = 0
        for _, size, name in sorted(found):
            if total <= self.budget_bytes * 3 // 4:
                break
            lock = os.open(self.locks_dir / name, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                (self.chunks_dir / name).unlink(missing_ok=True)
                total -= size
                removed += 1
            except BlockingIOError:
                continue
            finally:
                os.close(lock)
        return removed
