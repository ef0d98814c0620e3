"""How many torch threads and reading processes a prediction uses on the CPU."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import torch

from ..config import WorkerConfig
from ..data import job_cpus

log = logging.getLogger(__name__)


class ThreadTuner:
    """Chooses the number of torch threads from the throughput of the first batches.

    Reading shares the CPUs with the network. A network that costs more than reading runs
    fastest with all of them (the FAFB VGG on 2 cores: 100 % of its bare rate with 2 threads,
    55 % with 1); a small one can run faster with a core left to reading (a two-layer CNN on
    2 cores: 1.1-1.3x faster with 1 thread than with 2; see benchmarks/bench_predict.py). So
    after a warm-up (``warmup`` batches and ``min_seconds``) the candidates take turns,
    ``rounds`` times each, every turn at least ``trial`` batches and ``min_seconds`` long, and
    the fastest in total keeps running. Trying costs time on the slower candidate, so a run of
    ``total`` batches whose rest would last less than ``worth`` times the trial keeps the first
    candidate untried.
    """

    def __init__(
        self,
        candidates: list[int],
        total: int,
        warmup: int = 8,
        trial: int = 8,
        min_seconds: float = 0.5,
        rounds: int = 2,
        worth: float = 10.0,
    ):
        self.warmup, self.trial, self.min_seconds = warmup, trial, min_seconds
        self.total, self.worth = total, worth
        self.turns = candidates * rounds
        self.timing = {c: [0, 0.0] for c in candidates}  # batches, seconds
        self.batches = 0
        self.turn = -1
        self.turn_batches = 0
        self.started = 0.0
        self.warmup_times: list[float] = []
        self.chosen: int | None = None

    def _worth_trying(self) -> bool:
        """Whether the rest of the run, at the pace of the warm-up's second half, is long
        enough to gain (the first batches can take 30x longer while chunks decode)."""
        times = self.warmup_times[len(self.warmup_times) // 2 :]
        per_batch = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        trial_seconds = len(self.turns) * max(self.min_seconds, self.trial * per_batch)
        left_seconds = (self.total - self.batches) * per_batch
        return left_seconds >= self.worth * trial_seconds

    def step(self) -> None:
        """Call after each batch."""
        if self.chosen is not None:
            return
        self.batches += 1
        self.turn_batches += 1
        now = time.perf_counter()
        if self.turn < 0:
            self.warmup_times.append(now)
            if self.batches < self.warmup or now - self.warmup_times[0] < self.min_seconds:
                return
            if not self._worth_trying():
                self.chosen = torch.get_num_threads()
                return
        elif self.turn_batches < self.trial or now - self.started < self.min_seconds:
            return
        else:
            timing = self.timing[self.turns[self.turn]]
            timing[0] += self.turn_batches
            timing[1] += now - self.started
        self.turn += 1
        if self.turn < len(self.turns):
            torch.set_num_threads(self.turns[self.turn])
            self.started, self.turn_batches = now, 0
            return
        rates = {c: b / s for c, (b, s) in self.timing.items()}
        self.chosen = max(rates, key=rates.__getitem__)
        torch.set_num_threads(self.chosen)
        log.info(
            "torch threads: %s batches/s; keeping %d",
            {c: round(r, 2) for c, r in rates.items()},
            self.chosen,
        )


def default_read_workers(worker: WorkerConfig, block_workers: int) -> int:
    """Reading processes per block worker: num_cache_workers, at most the job's CPUs (see
    :func:`synister.data.job_cpus`) per block worker less one for the model; none (a reading
    thread) with 2 CPUs or fewer per block worker, where a reading process gains nothing and
    costs its start-up (16x160x160 patches on 2 cores: 1,884/s with a process, 1,950/s with a
    thread, see benchmarks/bench_predict.py)."""
    per_block = job_cpus(worker.num_cpus) // block_workers
    if per_block <= 2:
        return 0
    return max(0, min(worker.num_cache_workers, per_block - 1))


def default_threads(worker: WorkerConfig, block_workers: int) -> int | None:
    """torch threads per block worker to start with: its share of the job's CPUs (see
    :func:`synister.data.job_cpus`; a long run then tries one fewer, see
    :class:`ThreadTuner`). None where ``OMP_NUM_THREADS`` is set: the user's choice stands.

    On a machine loaded by other work, fewer threads than cores can be far faster
    (``--threads``): one descheduled thread stalls a parallel operator.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, job_cpus(worker.num_cpus) // block_workers)
