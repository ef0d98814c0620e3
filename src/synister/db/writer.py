"""A prediction writer in its own process: ``BatchWriter`` here, ``python -m synister.db.writer``
there.

A process, not a thread: a writer thread in the predicting process competes with reading and
the network for the GIL, which halved the throughput of small networks (see
benchmarks/bench_predict.py); the original wrote from processes too. A plain subprocess, not
multiprocessing, so that it neither re-runs the caller's ``__main__`` nor imports torch, and it
sees the end of its input when its parent dies, however it dies.

Protocol: the parent pickles ``{"db_url": ..., "run": ...}`` to the child's stdin (never on its
command line, where ``ps`` would show a password), then ``(synapse_ids, probabilities)``
batches and ``None`` at the end; the child pickles ``("written", n)`` after each commit, then
``("error", exception)`` or ``("done", 0)``, to its stdout. The parent holds at most
``max_pending_rows`` synapses sent but not yet committed: a slow database holds the network
back instead of filling memory, and a crash loses at most that backlog.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from . import open_database

_END = object()
#: the pipe to the writer holds this much (the usual Linux maximum), so that the predicting
#: process runs on while the writer starts (~0.5 s) or waits for a database lock
PIPE_BYTES = 2**20
#: a commit stores what came within this many seconds of its first batch, up to GROUP_ROWS
#: synapses; a crash loses at most that much work, which a resumed run predicts again
GROUP_SECONDS = 0.2
GROUP_ROWS = 4096
#: synapses sent to the writer but not yet committed, at most (a few groups, so that the
#: predicting process runs on while a group commits)
MAX_PENDING_ROWS = 4 * GROUP_ROWS


def _read_batches(stream, batches: queue.Queue) -> None:
    """Unpickle batches from ``stream`` into ``batches`` until ``None`` or end of input."""
    try:
        while (item := pickle.load(stream)) is not None:
            batches.put(item)
    except EOFError:  # the parent is gone: store what came, then end
        pass
    batches.put(_END)


def _take(
    batches: queue.Queue,
    seconds: float = GROUP_SECONDS,
    rows: int = GROUP_ROWS,
    clock: Callable[[], float] = time.monotonic,
) -> list:
    """The next batch and those that follow within ``seconds`` of it (by ``clock``), up to
    ``rows`` synapses; [] at the end (the end mark stays). Without the wait a writer that keeps
    up commits every batch: 17 us a synapse for batches of 32 on SQLite, 3 us for groups of
    320."""
    taken = []
    item = batches.get()
    deadline = clock() + seconds
    count = 0
    while item is not _END:
        taken.append(item)
        count += len(item[0])
        left = deadline - clock()
        if count >= rows or left <= 0:
            return taken
        try:
            item = batches.get(timeout=left)
        except queue.Empty:
            return taken
    batches.put(_END)
    return taken


def _send(stream, event: tuple) -> None:
    pickle.dump(event, stream)
    stream.flush()


def serve(db_url: str, run: str, source, sink) -> None:
    """Store the batches pickled to ``source`` into ``run``, a group of batches (see
    :func:`_take`) in one transaction, and report to ``sink``."""
    batches: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_batches, args=(source, batches), daemon=True)
    reader.start()
    try:
        with open_database(db_url) as db:
            while taken := _take(batches):
                ids = np.concatenate([ids for ids, _ in taken])
                db.write_predictions(run, ids, np.concatenate([p for _, p in taken]))
                _send(sink, ("written", len(ids)))
    except Exception as error:  # noqa: BLE001 - handed to the parent
        try:
            pickle.dumps(error)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            error = RuntimeError(f"{type(error).__name__}: {error}")
        _send(sink, ("error", error))
        reader.join()  # keep reading, so the parent never blocks on a full pipe
        return
    _send(sink, ("done", 0))


class BatchWriter:
    """Stores batches of predictions through a writer process (see the module docstring).

    ``on_written(n)`` is called, from a relay thread, after each commit, so progress counts
    stored synapses. :meth:`put` blocks while ``max_pending_rows`` synapses wait to be
    committed. A write error is raised again at the next :meth:`put` or at :meth:`close`.
    """

    def __init__(
        self,
        db_url: str,
        run: str,
        on_written: Callable[[int], None] | None = None,
        max_pending_rows: int = MAX_PENDING_ROWS,
    ):
        if max_pending_rows < 1:
            raise ValueError(f"max_pending_rows must be >= 1, got {max_pending_rows}")
        self._error: BaseException | None = None
        self._ended = False
        self._on_written = on_written
        self.max_pending_rows = int(max_pending_rows)
        self.pending_rows = 0
        self._room = threading.Condition()
        # the child finds synister where this process found it, installed or not
        path = os.pathsep.join(p for p in sys.path if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        with contextlib.suppress(AttributeError, OSError):  # Linux: room for ~500 batches
            fcntl.fcntl(self._process.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._relay = threading.Thread(target=self._relay_events, name="writer-events", daemon=True)
        self._relay.start()
        try:
            _send(self._process.stdin, {"db_url": db_url, "run": run})
        except BrokenPipeError:
            self._relay.join()
            self._check()
            raise

    def _relay_events(self) -> None:
        try:
            while True:
                kind, value = pickle.load(self._process.stdout)
                if kind == "written":
                    with self._room:
                        self.pending_rows -= value
                        self._room.notify_all()
                    if self._on_written is not None:
                        self._on_written(value)
                elif kind == "error":
                    with self._room:
                        self._error = value
                        self._room.notify_all()
                elif kind == "done":
                    return
        except (EOFError, pickle.UnpicklingError) as error:
            if self._error is None:
                self._error = RuntimeError(
                    f"the prediction writer process ended (exit code {self._process.wait()}) "
                    f"before storing everything ({type(error).__name__}); see its messages above"
                )
        finally:
            with self._room:
                self._ended = True
                self._room.notify_all()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(
        self, synapse_ids: np.ndarray, probabilities: np.ndarray, timeout: float | None = None
    ) -> None:
        """Send one batch; blocks while the writer holds ``max_pending_rows`` unstored
        synapses (a batch larger than that goes alone). Raises TimeoutError where there is
        no room within ``timeout`` seconds (None: wait as long as it takes)."""
        rows = len(synapse_ids)
        with self._room:
            room = self._room.wait_for(
                lambda: (
                    self._ended
                    or self._error is not None
                    or self.pending_rows == 0
                    or self.pending_rows + rows <= self.max_pending_rows
                ),
                timeout,
            )
            self._check()
            if not room:
                raise TimeoutError(
                    f"the prediction writer holds {self.pending_rows} synapses not yet stored "
                    f"(at most {self.max_pending_rows}); the database is slow or locked"
                )
            self.pending_rows += rows
        try:
            _send(self._process.stdin, (np.asarray(synapse_ids), np.asarray(probabilities)))
        except BrokenPipeError:
            self._relay.join()
            self._check()
            raise

    def close(self) -> None:
        """Wait until every batch is stored; re-raise a write error."""
        try:
            _send(self._process.stdin, None)
            self._process.stdin.close()
        except BrokenPipeError:
            pass  # the process has ended; the relay says why
        self._relay.join()
        self._process.wait()
        self._process.stdout.close()
        self._check()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends it by closing its input
    sink, sys.stdout = sys.stdout.buffer, sys.stderr  # stray prints must not enter the protocol
    try:
        settings = pickle.load(sys.stdin.buffer)
    except EOFError:
        return  # the parent ended before saying what to store
    serve(settings["db_url"], settings["run"], sys.stdin.buffer, sink)


if __name__ == "__main__":
    main()
