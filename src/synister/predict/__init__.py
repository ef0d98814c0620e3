"""Prediction of a split part with a trained checkpoint, into the database.

Three stages overlap so that the network never waits: reading processes (handing batches over
through shared-memory slots, see :mod:`synister.predict.ring`) or, with none, a thread read
uint8 patches (one tensorstore read of a virtual stack per batch), the predicting process
normalises them and runs the network, and a writer process stores the batches of softmax
probabilities, those that come within 0.2 s in one transaction.
Every stored group is committed and writes are upserts, so a run killed at any moment resumes
by predicting only the synapses without a stored prediction. ``num_block_workers`` processes
(one per GPU where there are GPUs) share the synapses; the parent shows their joint progress.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..config import PredictConfig, WorkerConfig, load_predict_setup
from ..data import WORKER_CONTEXT, job_cpus, training_synapses, worker_context
from ..db import PredictionRunExists, open_database
from ..db.writer import BatchWriter
from ..models import build_model, load_checkpoint
from ..volumes import Volume, normalize
from .ring import RingReader

log = logging.getLogger(__name__)

#: meta keys that must agree before a stored, incomplete run is resumed
RESUME_KEYS = ("split_name", "split_part", "iteration", "classes")

PROGRESS_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt} synapses {percentage:3.0f}%|{bar}| "
    "[{elapsed}<{remaining} ETA, {rate_noinv_fmt}]"
)


class PatchBatches(torch.utils.data.Dataset):
    """Batch ``i``: ids and uint8 patches (B, 1, Z, Y, X) of synapses ``i*B .. (i+1)*B``."""

    def __init__(
        self,
        volume: Volume,
        synapse_ids: np.ndarray,
        centers_nm: np.ndarray,
        input_shape_vox: tuple[int, int, int],
        batch_size: int,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.volume = volume
        self.synapse_ids = np.array(synapse_ids, dtype=np.int64)  # a writable copy for torch
        self.centers_nm = np.asarray(centers_nm, dtype=np.float64).reshape(-1, 3)
        if len(self.centers_nm) != len(self.synapse_ids):
            raise ValueError(
                f"{len(self.synapse_ids)} synapse ids but {len(self.centers_nm)} positions"
            )
        self.input_shape_vox = tuple(int(s) for s in input_shape_vox)
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return -(-len(self.synapse_ids) // self.batch_size)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """(B, 1, Z, Y, X) of a full batch."""
        return (self.batch_size, 1, *self.input_shape_vox)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        raw = self.volume.read_patches(self.centers_nm[rows], self.input_shape_vox)
        return torch.from_numpy(self.synapse_ids[rows]), torch.from_numpy(raw).unsqueeze(1)


def network_input(raw: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 patches to the network's float32 input in [-1, 1] on ``device``.

    Readers hand over uint8, normalised only here: float32 would move 4x the bytes between
    processes (and to a GPU).
    """
    if device.type == "cpu":
        return torch.from_numpy(normalize(raw.numpy()))
    return normalize(raw.to(device, non_blocking=True))


def read_ahead(batches, depth: int = 4):
    """Iterate ``batches`` in a background thread, up to ``depth`` items ahead.

    With no reading processes this still overlaps reading with the network: tensorstore and
    the network release the GIL. A reading error is raised here, in the consumer.
    """
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


def run_model(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    on_batch: Callable[[np.ndarray, np.ndarray], None],
    tuner: ThreadTuner | None = None,
) -> None:
    """Hand the softmax probabilities of every batch of ``loader`` to ``on_batch``."""
    model.eval()
    autocast = device.type == "cuda"
    with torch.inference_mode():
        for ids, raw in loader:
            with torch.autocast(device.type, enabled=autocast):
                logits = model(network_input(raw, device))
            probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
            on_batch(ids.numpy(), probabilities)
            if tuner is not None:
                tuner.step()


@dataclass
class PredictionPlan:
    """What a prediction setup will do: the run, its synapses and those still to predict."""

    cfg: PredictConfig
    worker: WorkerConfig
    run: str
    synapses: pd.DataFrame  # synapse_id, z, y, x (nm) of the split part
    todo: pd.DataFrame  # the subset without a stored prediction, in reading order

    @property
    def resumed_from(self) -> int:
        return len(self.synapses) - len(self.todo)


def prediction_meta(cfg: PredictConfig) -> dict:
    """The meta stored with a run (what produced it)."""
    return {
        "split_name": cfg.split_name,
        "split_part": cfg.split_part,
        "experiment": cfg.experiment,
        "train_number": cfg.train_number,
        "predict_number": cfg.predict_number,
        "iteration": cfg.iteration,
        "checkpoint": str(cfg.train_checkpoint),
        "classes": list(cfg.classes),
    }


def reading_order(synapses: pd.DataFrame, block_nm: np.ndarray) -> pd.DataFrame:
    """Synapses sorted block by block (z, y, x blocks of ``block_nm``), so that consecutive
    batches touch the same chunks and a remote volume's chunk cache is reused."""
    if len(synapses) == 0:
        return synapses
    blocks = np.floor(synapses[["z", "y", "x"]].to_numpy() / block_nm).astype(np.int64)
    order = np.lexsort((synapses["x"].to_numpy(), blocks[:, 2], blocks[:, 1], blocks[:, 0]))
    return synapses.iloc[order].reset_index(drop=True)


def plan_prediction(setup_dir: str | Path) -> PredictionPlan:
    """Open (or create) the run of a predict setup and find what is left to predict.

    The synapses are those of the split part whose skeleton has exactly one known transmitter
    among the classes (the ones training and evaluation use). A stored run that is complete
    raises :class:`PredictionRunExists` unless the config says ``overwrite = True`` (then it is
    emptied); an incomplete one of the same checkpoint and classes is resumed.
    """
    setup_dir = Path(setup_dir)
    config_file = setup_dir / "predict_config.ini"
    cfg, worker = load_predict_setup(setup_dir)
    run = cfg.run_name
    checkpoint = Path(cfg.train_checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"{config_file} [Predict] train_checkpoint: no checkpoint file at {checkpoint}"
        )
    meta = prediction_meta(cfg)
    with open_database(cfg.database_url()) as db:
        synapses = training_synapses(db, cfg.split_name, cfg.classes, part=cfg.split_part)
        synapses = synapses[["synapse_id", "z", "y", "x"]]
        if len(synapses) == 0:
            raise ValueError(
                f"{config_file}: split {cfg.split_name!r} part {cfg.split_part!r} holds no "
                f"synapse of the classes {', '.join(cfg.classes)}"
            )
        is_done = np.zeros(len(synapses), dtype=bool)
        if run in db.prediction_runs() and not cfg.overwrite:
            classes, stored = db.open_prediction_run(run)
            stored = {**stored, "classes": list(classes)}
            differ = [k for k in RESUME_KEYS if k in stored and stored[k] != meta[k]]
            if differ:
                found = ", ".join(f"{k}={stored[k]!r} (now {meta[k]!r})" for k in differ)
                raise PredictionRunExists(
                    f"prediction run {run!r} exists with other settings: {found}; set "
                    f"overwrite = True in {config_file} to replace it"
                )
            is_done = np.isin(synapses["synapse_id"].to_numpy(), db.predicted_synapse_ids(run))
            if is_done.all():
                raise PredictionRunExists(
                    f"prediction run {run!r} exists and is complete ({len(synapses)} synapses); "
                    f"set overwrite = True in {config_file} to replace it"
                )
        else:
            db.create_prediction_run(run, cfg.classes, meta, overwrite=cfg.overwrite)
    todo = synapses[~is_done]
    block_nm = np.asarray(cfg.input_shape, float) * np.asarray(cfg.voxel_size, float)
    return PredictionPlan(
        cfg, worker, run, synapses.reset_index(drop=True), reading_order(todo, block_nm)
    )


def choose_device(requested: str | None, rank: int = 0) -> torch.device:
    """``requested``, else GPU ``rank`` (round robin) when there are GPUs, else the CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}")
    return torch.device("cpu")


def predict_synapses(
    cfg: PredictConfig,
    run: str,
    todo: pd.DataFrame,
    device: torch.device,
    read_workers: int,
    on_written: Callable[[int], None] | None = None,
    model: torch.nn.Module | None = None,
    tune_threads: bool = False,
    on_computed: Callable[[int], None] | None = None,
) -> int:
    """Predict ``todo`` (synapse_id, z, y, x nm) into ``run``, storing every batch before it
    returns; ``on_written`` gets the number of synapses of each stored group of batches,
    ``on_computed`` that of each batch that went through the network.

    ``model`` replaces the network of the config and its checkpoint (custom networks). With
    ``tune_threads``, a long run on the CPU tries the current number of torch threads and one
    fewer (see :class:`ThreadTuner`). Returns the number of torch threads it ended with.
    """
    if read_workers < 0:
        raise ValueError(f"read workers must be >= 0, got {read_workers}")
    threads = torch.get_num_threads()
    if len(todo) == 0:
        return threads
    tuner = None
    if tune_threads and device.type == "cpu" and threads > 1:
        tuner = ThreadTuner([threads, threads - 1], -(-len(todo) // cfg.batch_size))
    # the writer process starts first: its start-up overlaps loading the model
    writer = BatchWriter(cfg.database_url(), run, on_written)
    try:
        if model is None:
            model = build_model(cfg)
            load_checkpoint(cfg.train_checkpoint, model, map_location="cpu")
        model.to(device)
        volume = Volume(cfg.raw_container, cfg.raw_dataset, voxel_size_nm=cfg.voxel_size)
        batches = PatchBatches(
            volume,
            todo["synapse_id"].to_numpy(),
            todo[["z", "y", "x"]].to_numpy(),
            cfg.input_shape,
            cfg.batch_size,
        )
        if read_workers:
            loader = RingReader(batches, read_workers, preload=__name__)
        else:
            loader = read_ahead(batches)

        def store(ids: np.ndarray, probabilities: np.ndarray) -> None:
            if on_computed is not None:
                on_computed(len(ids))
            writer.put(ids, probabilities)

        run_model(model, loader, device, store, tuner)
    except BaseException:
        with contextlib.suppress(BaseException):  # the first error is the one to report
            writer.close()
        raise
    writer.close()
    return torch.get_num_threads()


def _block_worker(
    rank: int,
    plan: PredictionPlan,
    n: int,
    device: str | None,
    read_workers: int,
    threads: int,
    progress: multiprocessing.SimpleQueue,
    model: torch.nn.Module | None,
    tune_threads: bool,
) -> None:
    torch.set_num_threads(threads)
    # contiguous shares keep each worker's reads spatially together (see reading_order)
    share = plan.todo.iloc[np.array_split(np.arange(len(plan.todo)), n)[rank]]
    device = choose_device(device, rank)
    predict_synapses(
        plan.cfg, plan.run, share, device, read_workers, progress.put, model, tune_threads
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


class StoredCounter:
    """Counts stored synapses for the progress bar, and the rate after start-up: from the
    first computed batch (after model loading, reader start and the first reads) to the last
    stored one."""

    def __init__(self, bar: tqdm):
        self.bar = bar
        self.count = 0
        self.first_count = 0
        self.first_time: float | None = None
        self.last_time: float | None = None

    def computed(self, n: int) -> None:
        """Note a batch of ``n`` synapses that went through the network."""
        if self.first_time is None:
            self.first_time, self.first_count = time.perf_counter(), n

    def __call__(self, n: int) -> None:
        self.computed(n)  # where computed batches are not reported (block workers)
        self.count += n
        self.last_time = time.perf_counter()
        self.bar.update(n)

    def steady_rate(self) -> float:
        """Synapses/s after start-up (NaN with fewer than 2 batches)."""
        if self.first_time is None or self.last_time <= self.first_time:
            return float("nan")
        return (self.count - self.first_count) / (self.last_time - self.first_time)


def predict_setup(
    setup_dir: str | Path,
    *,
    device: str | None = None,
    block_workers: int | None = None,
    read_workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    model: torch.nn.Module | None = None,
) -> dict:
    """Predict the split part of one predict setup (see :func:`plan_prediction`).

    ``block_workers`` (default: num_block_workers of worker_config.ini) processes share the
    synapses, one per GPU where there are GPUs; each has ``read_workers`` reading processes and
    ``threads`` torch threads (defaults: :func:`default_read_workers`, :func:`default_threads`,
    with which a long run also tries one thread fewer, see :class:`ThreadTuner`).
    ``model`` replaces the network built from the config and its checkpoint. Progress
    (done/total, synapses/s, ETA) goes to stderr.

    Returns run, total, predicted, resumed_from, seconds, synapses_per_second (whole call),
    steady_synapses_per_second (after start-up, see :class:`StoredCounter`), and the
    block_workers, read_workers and threads used.
    """
    start = time.perf_counter()
    plan = plan_prediction(setup_dir)
    n = block_workers or plan.worker.num_block_workers
    if n < 1:
        raise ValueError(f"block workers must be >= 1, got {n}")
    n = min(n, max(1, len(plan.todo)))
    if read_workers is None:
        read_workers = default_read_workers(plan.worker, n)
    tune_threads = False
    if threads is None:
        threads = default_threads(plan.worker, n)
        tune_threads = threads is not None
        threads = threads or torch.get_num_threads()
    log.info(
        "prediction run %s: %d of %d synapses to predict (%d stored before); %d block "
        "worker(s) with %d reader(s) and %d thread(s) each",
        plan.run,
        len(plan.todo),
        len(plan.synapses),
        plan.resumed_from,
        n,
        read_workers,
        threads,
    )
    bar = tqdm(
        total=len(plan.synapses),
        initial=plan.resumed_from,
        desc=plan.run,
        unit=" synapses",
        bar_format=PROGRESS_FORMAT,
        disable=not progress,
        dynamic_ncols=True,
    )
    counter = StoredCounter(bar)
    try:
        if n == 1:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                threads = predict_synapses(
                    plan.cfg,
                    plan.run,
                    plan.todo,
                    choose_device(device),
                    read_workers,
                    counter,
                    model,
                    tune_threads,
                    counter.computed,
                )
            finally:
                torch.set_num_threads(previous)
        else:
            _run_block_workers(plan, n, device, read_workers, threads, counter, model, tune_threads)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return {
        "run": plan.run,
        "total": len(plan.synapses),
        "predicted": counter.count,
        "resumed_from": plan.resumed_from,
        "seconds": seconds,
        "synapses_per_second": counter.count / seconds if seconds > 0 else float("nan"),
        "steady_synapses_per_second": counter.steady_rate(),
        "block_workers": n,
        "read_workers": read_workers,
        "threads": threads,
    }


def _run_block_workers(
    plan: PredictionPlan,
    n: int,
    device: str | None,
    read_workers: int,
    threads: int,
    counter: StoredCounter,
    model: torch.nn.Module | None,
    tune_threads: bool,
) -> None:
    """Run ``n`` block worker processes and count what they store."""
    context = worker_context(__name__)
    counts = context.SimpleQueue()

    def drain() -> None:
        while not counts.empty():
            counter(counts.get())

    workers = torch.multiprocessing.start_processes(
        _block_worker,
        args=(plan, n, device, read_workers, threads, counts, model, tune_threads),
        nprocs=n,
        join=False,
        start_method=WORKER_CONTEXT,
    )
    while not workers.join(timeout=0.2):
        drain()
    drain()
