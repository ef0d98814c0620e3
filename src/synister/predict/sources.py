"""Where the engine's batches come from: patches read from a volume at positions, or patches
already in memory. Each yields ``(ids, uint8 patches (B, 1, Z, Y, X))`` as torch tensors."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from ..volumes import Volume
from ..volumes.boxes import PendingRead

#: batches whose reads are in flight at once ahead of the network: their chunks are fetched
#: together, so a remote store's latency is paid once per this many batches
READS_IN_FLIGHT = 8


class PatchBatches(torch.utils.data.Dataset):
    """Batch ``i``: ids and uint8 patches (B, 1, Z, Y, X) of positions ``i*B .. (i+1)*B``,
    read from ``volume`` (zero outside it). Pickles without its open volume, so reading
    processes (:class:`synister.predict.ring.RingReader`) reopen it.

    ``streams`` readers that take batches in turn (reader ``r``: batches ``r``, ``r +
    streams``, ...) each get a contiguous run of the positions instead: batch ``i`` is the
    ``i // streams``-th batch of run ``i % streams``. Positions in reading order so keep each
    reader (each with its own chunk cache) to its part of the volume, and a chunk is fetched
    by one reader, not by all of them."""

    def __init__(
        self,
        volume: Volume,
        ids: np.ndarray,
        centers_nm: np.ndarray,
        input_shape_vox: Sequence[int],
        batch_size: int,
        streams: int = 1,
    ):
        if batch_size < 1 or streams < 1:
            raise ValueError(f"batch_size and streams must be >= 1, got {batch_size}, {streams}")
        self.volume = volume
        self.ids = np.array(ids, dtype=np.int64)  # a writable copy for torch
        self.centers_nm = np.asarray(centers_nm, dtype=np.float64).reshape(-1, 3)
        if len(self.centers_nm) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but {len(self.centers_nm)} positions")
        self.input_shape_vox = tuple(int(s) for s in input_shape_vox)
        self.batch_size = int(batch_size)
        self.streams = int(streams)
        runs = [len(range(r, len(self), self.streams)) for r in range(self.streams)]
        self._run_starts = np.cumsum([0, *runs[:-1]]).tolist()

    def __len__(self) -> int:
        return -(-len(self.ids) // self.batch_size)

    @property
    def dtype(self) -> np.dtype:
        return self.volume.dtype

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """(B, 1, Z, Y, X) of a full batch."""
        return (self.batch_size, 1, *self.input_shape_vox)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids, pending = self.submit(i)
        return ids, torch.from_numpy(pending.result()).unsqueeze(1)

    def submit(self, i: int) -> tuple[torch.Tensor, PendingRead]:
        """Batch ``i``'s ids and its patches being read (``.result()``: (B, Z, Y, X))."""
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        first = self._run_starts[i % self.streams] + i // self.streams
        rows = slice(first * self.batch_size, (first + 1) * self.batch_size)
        pending = self.volume.submit_patches(self.centers_nm[rows], self.input_shape_vox)
        return torch.from_numpy(self.ids[rows]), pending


def array_batches(
    ids: np.ndarray, patches: np.ndarray | torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of uint8 patches (N, Z, Y, X) already in memory (e.g. cut from one block
    array), as views: nothing is copied before the network's normalisation."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    patches = torch.as_tensor(patches)
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    if patches.dim() != 4 or patches.dtype != torch.uint8:
        raise ValueError(
            f"patches must be uint8 (N, Z, Y, X), got {patches.dtype} of shape "
            f"{tuple(patches.shape)}"
        )
    if len(ids) != len(patches):
        raise ValueError(f"{len(ids)} ids but {len(patches)} patches")
    for first in range(0, len(ids), batch_size):
        rows = slice(first, first + batch_size)
        yield ids[rows], patches[rows].unsqueeze(1)


def submitted_ahead(batches: PatchBatches, depth: int = READS_IN_FLIGHT):
    """Batches of ``batches`` in order, the reads of the next ``depth`` issued before the
    current one is awaited (many requests in flight, the next batches' chunks fetched while
    the current one is used)."""
    pending: collections.deque = collections.deque()
    for i in range(len(batches)):
        pending.append(batches.submit(i))
        if len(pending) >= depth:
            ids, read = pending.popleft()
            yield ids, torch.from_numpy(read.result()).unsqueeze(1)
    while pending:
        ids, read = pending.popleft()
        yield ids, torch.from_numpy(read.result()).unsqueeze(1)


def read_ahead(batches, depth: int = 4):
    """Iterate ``batches`` in a background thread, up to ``depth`` items ahead (for
    :class:`PatchBatches`: with :data:`READS_IN_FLIGHT` reads in flight, see
    :func:`submitted_ahead`).

    With no reading processes this still overlaps reading with the network: tensorstore and
    the network release the GIL. A reading error is raised here, in the consumer.
    """
    if isinstance(batches, PatchBatches):
        batches = submitted_ahead(batches)
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        """Queue ``item`` unless the consumer has gone; never blocks for good."""
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not put(item):
                    return
            put(done)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer
            put(error)

    thread = threading.Thread(target=produce, name="prediction-reader", daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def reading_order(positions: pd.DataFrame | np.ndarray, block_nm: np.ndarray) -> np.ndarray:
    """Row order of ``positions`` (columns z, y, x nm, or an N x 3 array of them) block by
    block (blocks of ``block_nm``), so that consecutive batches touch the same chunks and a
    remote volume's chunk cache is reused."""
    if len(positions) == 0:
        return np.arange(0)
    if isinstance(positions, pd.DataFrame):
        positions = positions[["z", "y", "x"]]
    zyx = np.asarray(positions, dtype=np.float64)
    blocks = zyx / block_nm
    np.floor(blocks, out=blocks)  # whole numbers as floats sort as the integers would
    return np.lexsort((zyx[:, 2], blocks[:, 2], blocks[:, 1], blocks[:, 0]))
