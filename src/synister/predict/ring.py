"""Reading processes that hand batches over through a ring of shared-memory slots.

A DataLoader worker puts every batch into freshly allocated shared memory, which the
predicting process then maps: ~0.4 ms a 16x160x160 uint8 patch, so that one reading process
was slower than a reading thread on 2 cores. Here the slots are allocated once; a reader
copies a batch into a free slot and sends its number, the predicting process hands the slot
back when it asks for the next batch. Readers have their own GIL, so their Python work (~25 us
a patch) no longer competes with the network's.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
from collections.abc import Iterator

import numpy as np
import torch

from ..data import worker_context

#: free slot numbers are polled this often (s), to notice a parent that died
POLL_SECONDS = 0.5


def _read_batches(batches, rank: int, readers: int, ring: torch.Tensor, free, ready) -> None:
    """Reader ``rank``: batches ``rank``, ``rank + readers``, ... into free slots of ``ring``,
    the next one's read issued before the current one is copied (its chunks fetched while
    this reader waits for a slot)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the readers
    torch.set_num_threads(1)
    parent = multiprocessing.parent_process()
    mine = range(rank, len(batches), readers)
    i = None
    try:
        if len(mine):
            i = mine[0]
            pending = batches.submit(i)
        for k, current in enumerate(mine):
            while True:
                try:
                    slot = free.get(timeout=POLL_SECONDS)
                    break
                except queue.Empty:
                    if parent is not None and not parent.is_alive():
                        return
            ids, read = pending
            if k + 1 < len(mine):
                i = mine[k + 1]
                pending = batches.submit(i)
            i = current
            raw = torch.from_numpy(read.result())
            ring[slot, : len(raw), 0].copy_(raw)
            ready.put((current, slot, ids.numpy()))  # numpy: a tensor would travel as shared memory
    except Exception as error:  # noqa: BLE001 - handed to the parent
        ready.put(("error", RuntimeError(f"reading batch {i}: {type(error).__name__}: {error}")))


class RingReader:
    """Iterates ``batches`` (a :class:`synister.predict.sources.PatchBatches`) in order,
    read ahead by ``readers`` processes with ``slots`` slots each.

    A yielded patch tensor is a view of a slot: it is valid until the next batch is asked for.
    Readers start from a fork server that has imported ``preload`` (tensorstore aborts in a
    child forked after it started threads; see :func:`synister.data.worker_context`).
    """

    def __init__(self, batches, readers: int, preload: str, slots: int = 4):
        if readers < 1 or slots < 1:
            raise ValueError(f"readers and slots must be >= 1, got {readers} and {slots}")
        self.batches = batches
        self.readers = readers
        self.slots = slots
        self.preload = preload

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if len(self.batches) == 0:
            return
        dtype = torch.from_numpy(np.empty(0, self.batches.dtype)).dtype
        ring = torch.zeros((self.readers * self.slots, *self.batches.batch_shape), dtype=dtype)
        ring.share_memory_()
        context = worker_context(self.preload)
        free = [context.Queue() for _ in range(self.readers)]
        ready = [context.Queue() for _ in range(self.readers)]
        processes = []
        try:
            for rank in range(self.readers):
                for slot in range(rank * self.slots, (rank + 1) * self.slots):
                    free[rank].put(slot)
                process = context.Process(
                    target=_read_batches,
                    args=(self.batches, rank, self.readers, ring, free[rank], ready[rank]),
                    name=f"prediction-reader-{rank}",
                    daemon=True,
                )
                process.start()
                processes.append(process)
            for i in range(len(self.batches)):
                rank = i % self.readers
                item = self._next_ready(ready[rank], processes[rank])
                if item[0] == "error":
                    raise item[1]
                index, slot, ids = item
                assert index == i, (index, i)
                yield torch.from_numpy(ids), ring[slot, : len(ids)]
                free[rank].put(slot)  # the consumer is done with it: it asked for the next
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.join()
            for q in free + ready:
                q.close()
                q.cancel_join_thread()

    @staticmethod
    def _next_ready(ready, process) -> tuple:
        while True:
            try:
                return ready.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not process.is_alive():
                    return (
                        "error",
                        RuntimeError(
                            f"reading process {process.name} ended with exit code "
                            f"{process.exitcode}; see its messages above"
                        ),
                    )
