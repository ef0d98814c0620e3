"""``synister predict``: the split part of a predict setup, through the engine, into the database.

The front-end plans (which synapses, which run, what is left after a crash), then hands the
engine a volume source and a sink that stores each batch through a writer process (see
:mod:`synister.db.writer`: bounded, grouped commits, upserts). Every stored group is
committed, so a run killed at any moment resumes by predicting only the synapses without a
stored prediction. ``num_block_workers`` processes (one per GPU where there are GPUs) share the
synapses; the parent shows their joint progress.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import PredictConfig, WorkerConfig, load_predict_setup
from ..data import WORKER_CONTEXT, training_synapses, worker_context
from ..db import PredictionRunExists, open_database
from ..db.writer import BatchWriter
from ..identity import RunIdentity
from ..layout import PREDICT_FILE
from ..models import LoadedModel, load_model
from ..volumes import Volume
from ..volumes.sanity import check_positions, require_fit
from .engine import Predictor, check_precision, choose_device
from .progress import StoredCounter, progress_bar
from .sources import reading_order
from .threads import default_read_workers, default_threads

log = logging.getLogger(__name__)

#: meta keys that must agree before a stored, incomplete run is resumed: everything that
#: determines the stored numbers (and which synapses the run holds)
RESUME_KEYS = (
    "split_name",
    "split_part",
    "classes",
    "expected_synapses",
    "iteration",
    "checkpoint_sha256",
    "network",
    "input_shape",
    "raw_container",
    "raw_dataset",
    "voxel_size",
    "patch_placement",
    "precision",
    "temperature",
)
#: the network settings stored under meta "network"
NETWORK_KEYS = (
    "network",
    "fmaps",
    "fmap_inc",
    "n_convolutions",
    "downsample_factors",
    "neither_class",
)


class PredictionRunComplete(PredictionRunExists):
    """The run exists and holds a prediction for every synapse: nothing to do."""


@dataclass
class PredictionPlan:
    """What a prediction setup will do: the run, its synapses and those still to predict."""

    cfg: PredictConfig
    worker: WorkerConfig
    run: str
    synapses: pd.DataFrame  # synapse_id, z, y, x (nm) of the split part
    todo: pd.DataFrame  # the subset without a stored prediction, in reading order
    model: LoadedModel | None = None  # the setup's network and checkpoint
    created: bool = False  # whether this plan created the run (so a failure may drop it)
    temperature: float | None = None  # divides the logits (synister calibrate); None: raw

    @property
    def resumed_from(self) -> int:
        return len(self.synapses) - len(self.todo)


def prediction_meta(
    cfg: PredictConfig,
    *,
    expected_synapses: int,
    checkpoint_sha256: str,
    precision: str = "fp32",
    patch_placement: str = "closest",
    model: torch.nn.Module | None = None,
    temperature: float | None = None,
) -> dict:
    """The meta stored with a run (what produced it), as JSON gives it back.

    ``expected_synapses`` is how many synapses the run is meant to hold (evaluation tells
    complete from incomplete runs by it). ``model`` names a network that replaced the
    config's.
    """
    network = {key: getattr(cfg, key) for key in NETWORK_KEYS}
    if model is not None:
        network["custom"] = type(model).__name__
    meta = {
        "split_name": cfg.split_name,
        "split_part": cfg.split_part,
        "experiment": cfg.experiment,
        "train_number": cfg.train_number,
        "predict_number": cfg.predict_number,
        "iteration": cfg.iteration,
        "checkpoint": str(cfg.train_checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "classes": list(cfg.classes),
        "expected_synapses": int(expected_synapses),
        "network": network,
        "input_shape": list(cfg.input_shape),
        "raw_container": cfg.raw_container,
        "raw_dataset": cfg.raw_dataset,
        "voxel_size": list(cfg.voxel_size),
        "patch_placement": patch_placement,
        "precision": precision,
        "temperature": temperature,
    }
    return json.loads(json.dumps(meta))


def run_identity(meta: dict) -> RunIdentity:
    """The part of a run's meta a resumed run must agree on (:data:`RESUME_KEYS`)."""
    return RunIdentity({key: meta[key] for key in RESUME_KEYS})


def plan_prediction(
    setup_dir: str | Path,
    *,
    precision: str = "fp32",
    patch_placement: str = "closest",
    model: torch.nn.Module | None = None,
) -> PredictionPlan:
    """Open (or create) the run of a predict setup and find what is left to predict.

    The synapses are those of the split part whose skeleton has exactly one known transmitter
    among the classes (the ones training and evaluation use). A stored run that is complete
    raises :class:`PredictionRunComplete` unless the config says ``overwrite = True`` (then it
    is emptied); an incomplete one is resumed only where everything in :data:`RESUME_KEYS`
    agrees, else :class:`PredictionRunExists` names what differs.
    """
    config_file = Path(setup_dir) / PREDICT_FILE
    cfg, worker = load_predict_setup(setup_dir)
    run = cfg.run_name
    loaded = setup_model(setup_dir, cfg)
    temperature = None if model is not None else loaded.temperature
    created = False
    with open_database(cfg.database_url()) as db:
        synapses = training_synapses(db, cfg.split_name, cfg.classes, part=cfg.split_part)
        synapses = synapses[["synapse_id", "z", "y", "x"]]
        if len(synapses) == 0:
            raise ValueError(
                f"{config_file}: split {cfg.split_name!r} part {cfg.split_part!r} holds no "
                f"synapse of the classes {', '.join(cfg.classes)}"
            )
        meta = prediction_meta(
            cfg,
            expected_synapses=len(synapses),
            checkpoint_sha256=loaded.weights_sha256,
            precision=precision,
            patch_placement=patch_placement,
            model=model,
            temperature=temperature,
        )
        is_done = np.zeros(len(synapses), dtype=bool)
        if run in db.prediction_runs() and not cfg.overwrite:
            classes, stored = db.open_prediction_run(run)
            conflicts = run_identity(meta).diff({**stored, "classes": list(classes)})
            if conflicts:
                raise PredictionRunExists(
                    f"prediction run {run!r} exists with other settings: "
                    f"{'; '.join(conflicts)}; set overwrite = True in {config_file} to "
                    "replace it"
                )
            is_done = np.isin(synapses["synapse_id"].to_numpy(), db.predicted_synapse_ids(run))
            if is_done.all():
                raise PredictionRunComplete(
                    f"prediction run {run!r} exists and is complete ({len(synapses)} synapses); "
                    f"set overwrite = True in {config_file} to replace it"
                )
        else:
            db.create_prediction_run(run, cfg.classes, meta, overwrite=cfg.overwrite)
            created = True
    todo = synapses[~is_done]
    block_nm = np.asarray(cfg.input_shape, float) * np.asarray(cfg.voxel_size, float)
    todo = todo.iloc[reading_order(todo, block_nm)].reset_index(drop=True)
    return PredictionPlan(
        cfg, worker, run, synapses.reset_index(drop=True), todo, loaded, created, temperature
    )


def setup_model(setup_dir: str | Path, cfg: PredictConfig) -> LoadedModel:
    """The model a prediction setup predicts with: its checkpoint, built as its config says
    (see :func:`~synister.models.load_model`), with the temperature stored with it."""
    checkpoint = Path(cfg.train_checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"{Path(setup_dir) / PREDICT_FILE} [Predict] train_checkpoint: no "
            f"checkpoint file at {checkpoint}"
        )
    return load_model(checkpoint, config=cfg)


def open_setup_volume(cfg: PredictConfig, placement: str = "closest") -> Volume:
    """The raw volume a prediction setup names, checked to hold uint8 intensities."""
    volume = Volume(
        cfg.raw_container, cfg.raw_dataset, voxel_size_nm=cfg.voxel_size, placement=placement
    )
    volume.require_uint8()
    return volume


@dataclass
class BlockJob:
    """What a prediction process needs (picklable: block workers get one each)."""

    plan: PredictionPlan
    precision: str
    placement: str
    read_workers: int
    threads: int | None
    tune_threads: bool
    model: torch.nn.Module | None = None  # None: the config's network and checkpoint


def predict_synapses(
    job: BlockJob,
    todo: pd.DataFrame,
    device: torch.device,
    on_written: Callable[[int], None] | None = None,
    on_computed: Callable[[int], None] | None = None,
    volume: Volume | None = None,
) -> int:
    """Predict ``todo`` (synapse_id, z, y, x nm) into the job's run, storing every batch
    before it returns; ``on_written`` gets the number of synapses of each stored group of
    batches, ``on_computed`` that of each batch that went through the network. Returns the
    number of torch threads it ended with."""
    plan = job.plan
    if len(todo) == 0:
        return job.threads or torch.get_num_threads()
    predictor = Predictor.from_model(
        plan.model,
        network=job.model,
        device=device,
        batch_size=plan.cfg.batch_size,
        precision=job.precision,
        threads=job.threads,
        read_workers=job.read_workers,
        temperature=plan.temperature,
    )
    volume = volume if volume is not None else open_setup_volume(plan.cfg, job.placement)
    writer = BatchWriter(plan.cfg.database_url(), plan.run, on_written)
    try:
        predictor.predict_volume(
            volume,
            todo["synapse_id"].to_numpy(),
            todo[["z", "y", "x"]].to_numpy(),
            writer.put,
            on_computed=on_computed,
            tune_threads=job.tune_threads,
        )
    except BaseException:
        with contextlib.suppress(BaseException):  # the first error is the one to report
            writer.close()
        raise
    writer.close()
    return predictor.threads or torch.get_num_threads()


def _block_worker(
    rank: int, job: BlockJob, n: int, device: str | None, progress: multiprocessing.SimpleQueue
) -> None:
    # contiguous shares keep each worker's reads spatially together (see reading_order)
    todo = job.plan.todo
    share = todo.iloc[np.array_split(np.arange(len(todo)), n)[rank]]
    predict_synapses(job, share, choose_device(device, rank), progress.put)


def predict_setup(
    setup_dir: str | Path,
    *,
    device: str | None = None,
    block_workers: int | None = None,
    read_workers: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    model: torch.nn.Module | None = None,
    precision: str = "fp32",
    patch_placement: str = "closest",
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
) -> dict:
    """Predict the split part of one predict setup (see :func:`plan_prediction`).

    The volume is opened and the network loaded before the run is created, and a run this
    call created is dropped again when it fails before storing anything: a failed call leaves
    nothing behind. ``block_workers`` (default: num_block_workers of worker_config.ini)
    processes share the synapses, one per GPU where there are GPUs; each has
    ``read_workers`` reading processes and ``threads`` torch threads (defaults:
    :func:`~synister.predict.threads.default_read_workers` and
    :func:`~synister.predict.threads.default_threads`, with which a long run also tries one
    thread fewer). ``model`` replaces the network built from the config and its checkpoint;
    ``precision`` is fp32, fp16 (GPU) or bf16. Progress (done/total, synapses/s, ETA) goes to
    stderr.

    Where most synapses fall outside the volume (a units or axis mix-up, see
    :func:`synister.volumes.sanity.check_positions`) ``warn`` (default: the log) hears why
    before anything is predicted, or with ``strict`` the call fails.

    Returns run, total, predicted, resumed_from, seconds, synapses_per_second (whole call),
    steady_synapses_per_second (after start-up, see
    :class:`~synister.predict.progress.StoredCounter`), and the block_workers, read_workers,
    threads and precision used.
    """
    start = time.perf_counter()
    cfg, worker = load_predict_setup(setup_dir)
    check_precision(precision, choose_device(device))
    loaded = setup_model(setup_dir, cfg)
    # everything that can fail before predicting fails before the run exists
    volume = open_setup_volume(cfg, patch_placement)
    network = model if model is not None else loaded.build()
    plan = plan_prediction(
        setup_dir, precision=precision, patch_placement=patch_placement, model=model
    )
    n = block_workers or plan.worker.num_block_workers
    try:
        centers = plan.synapses[["z", "y", "x"]].to_numpy(dtype=np.float64)
        check = check_positions(volume, centers, plan.cfg.input_shape)
        where = f"split {plan.cfg.split_name!r} part {plan.cfg.split_part!r} (from the database)"
        warning = require_fit(check, strict, where)
        if warning:
            (warn or log.warning)(warning)
        if n < 1:
            raise ValueError(f"block workers must be >= 1, got {n}")
        n = min(n, max(1, len(plan.todo)))
        if read_workers is None:
            read_workers = default_read_workers(plan.worker, n)
        tune_threads = False
        if threads is None:
            threads = default_threads(plan.worker, n)
            tune_threads = threads is not None
        job = BlockJob(plan, precision, patch_placement, read_workers, threads, tune_threads)
        log.info(
            "prediction run %s: %d of %d synapses to predict (%d stored before); %d block "
            "worker(s) with %d reader(s) and %s thread(s) each",
            plan.run,
            len(plan.todo),
            len(plan.synapses),
            plan.resumed_from,
            n,
            read_workers,
            threads or torch.get_num_threads(),
        )
        bar = progress_bar(len(plan.synapses), plan.resumed_from, plan.run, progress)
        counter = StoredCounter(bar)
        try:
            if n == 1:
                job.model = network
                threads = predict_synapses(
                    job, plan.todo, choose_device(device), counter, counter.computed, volume
                )
            else:
                job.model = model
                _run_block_workers(job, n, device, counter)
                threads = threads or torch.get_num_threads()
        finally:
            bar.close()
    except BaseException:
        if plan.created:
            _drop_if_empty(plan)
        raise
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
        "precision": precision,
        "temperature": plan.temperature,
        "warnings": [warning] if warning else [],
    }


def _drop_if_empty(plan: PredictionPlan) -> None:
    """Drop a run this call created when it holds nothing (a failure before any store)."""
    with contextlib.suppress(Exception), open_database(plan.cfg.database_url()) as db:
        if len(db.predicted_synapse_ids(plan.run)) == 0:
            db.drop_prediction_run(plan.run)
            log.info("dropped the empty prediction run %s after the failure", plan.run)


def _run_block_workers(job: BlockJob, n: int, device: str | None, counter: StoredCounter) -> None:
    """Run ``n`` block worker processes and count what they store."""
    context = worker_context(__name__)
    counts = context.SimpleQueue()

    def drain() -> None:
        while not counts.empty():
            counter(counts.get())

    workers = torch.multiprocessing.start_processes(
        _block_worker,
        args=(job, n, device, counts),
        nprocs=n,
        join=False,
        start_method=WORKER_CONTEXT,
    )
    while not workers.join(timeout=0.2):
        drain()
    drain()
