"""``train``: train a setup folder made by ``synister prepare-training``.

Reads its configs, resumes from its newest checkpoint (weights and Adam state; without one,
from the weights of ``init_checkpoint`` if set), builds the network, optimizer and
class-balanced batches, and hands them to :func:`run_training`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..data import job_cpus, usable_cpus
from ..layout import TRAIN_FILE, averaged_path, is_train_setup
from .averaging import WeightAverage
from .checkpoints import latest_checkpoint
from .distributed import init_distributed, shutdown
from .loop import LoopSettings, run_training
from .schedule import LearningRateSchedule


class NotATrainingSetup(FileNotFoundError):
    """The folder holds no train_config.ini."""


def set_compute_threads(num_cpus: int, num_workers: int) -> int:
    """Give the network the job's CPUs that the loader workers leave free.

    More torch threads than free cores is ruinous: on a busy 2-core machine two threads made a
    training step 7x slower than one. ``OMP_NUM_THREADS``, when set, wins.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, job_cpus(num_cpus) - num_workers))
    return torch.get_num_threads()


def make_optimizer(model: torch.nn.Module, learning_rate: float) -> torch.optim.Adam:
    """Adam, as the original; the fused kernel where torch has one (2x faster steps on CPU)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=learning_rate, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=learning_rate)


def data_seed(seed: int, rank: int, start_iteration: int) -> int:
    """Seed of the sample stream: differs per rank and per resume point, fixed given both.

    A resumed run thus draws new samples instead of replaying the ones the first run saw.
    """
    return int(np.random.SeedSequence([seed, rank, start_iteration]).generate_state(1)[0])


def train(
    setup_dir: str | Path,
    num_iterations: int,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_checkpoint: Callable[[int, Path], None] | None = None,
) -> dict:
    """Train the setup in ``setup_dir`` up to iteration ``num_iterations``.

    The learning-rate schedule spans ``schedule_iterations`` of the config, else
    ``num_iterations``. ``on_checkpoint(iteration, path)`` is called after each checkpoint.

    Resumes from the newest ``model_checkpoint_<iteration>`` (weights and Adam state, and the
    weight average beside it when ``ema_decay`` is set); when that is already at or past
    ``num_iterations`` nothing is trained. Returns the final ``iteration``,
    ``start_iteration``, last ``loss``, ``checkpoint`` path, ``interrupted`` (stopped by
    SIGINT/SIGTERM), ``elapsed_s`` and ``samples_per_s``. Sets torch's CPU thread
    count for the process (see :func:`set_compute_threads`).
    """
    from synister.config import load_train_setup
    from synister.models import build_model, load_checkpoint

    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    setup_dir = Path(setup_dir).resolve()
    if not is_train_setup(setup_dir):
        raise NotATrainingSetup(
            f"{setup_dir} is not a training setup (no {TRAIN_FILE}); make one with "
            "`synister prepare-training`"
        )
    cfg, worker = load_train_setup(setup_dir)
    latest = latest_checkpoint(setup_dir)
    start_iteration = latest[0] if latest else 0
    if num_iterations <= start_iteration:
        return {
            "iteration": start_iteration,
            "start_iteration": start_iteration,
            "loss": float("nan"),
            "checkpoint": str(latest[1]),
            "interrupted": False,
            "elapsed_s": 0.0,
            "samples_per_s": float("nan"),
            "already_done": True,
        }

    ctx, device = init_distributed(device)
    try:
        torch.manual_seed(cfg.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        model = build_model(cfg).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        optimizer = make_optimizer(model, cfg.learning_rate)
        if latest:
            load_checkpoint(latest[1], model, optimizer, map_location=device)
            for group in optimizer.param_groups:  # the config, not the checkpoint, sets the rate
                group["lr"] = cfg.learning_rate
        elif cfg.init_checkpoint:  # weights only: the optimizer starts afresh
            load_checkpoint(cfg.init_checkpoint, model, map_location=device)
        average = None
        if cfg.ema_decay and ctx.is_main:
            average = WeightAverage(model, cfg.ema_decay)
            if latest and averaged_path(latest[1]).is_file():  # continue it
                average.load(averaged_path(latest[1]))
        if cfg.compile_model and device.type == "cuda":
            model = torch.compile(model)
        if ctx.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        batches, class_counts = _training_batches(
            cfg, worker, seed=data_seed(cfg.seed, ctx.rank, start_iteration), device=device
        )
        settings = LoopSettings(
            checkpoint_every=cfg.checkpoint_every,
            snapshot_every=cfg.snapshot_every,
            log_every=cfg.log_every,
            mixed_precision=cfg.mixed_precision,
            # about 100 samples per class, so the per-class curves are not mostly noise
            accuracy_window_samples=max(100 * len(cfg.classes), cfg.batch_size * cfg.log_every),
            label_smoothing=cfg.label_smoothing,
            logit_offsets=log_frequencies(class_counts) if cfg.logit_adjustment else None,
            channels_last=cfg.channels_last,
            learning_rate=LearningRateSchedule(
                cfg.learning_rate,
                cfg.lr_schedule,
                warmup=cfg.warmup_iterations,
                total=cfg.schedule_iterations or num_iterations,
                final_fraction=cfg.lr_final_fraction,
            ),
        )
        result = run_training(
            model,
            optimizer,
            batches,
            setup_dir,
            cfg.classes,
            start_iteration=start_iteration,
            num_iterations=num_iterations,
            settings=settings,
            ctx=ctx,
            device=device,
            progress=progress,
            on_checkpoint=on_checkpoint,
            average=average,
        )
        result["already_done"] = False
        return result
    finally:
        shutdown(ctx)


def log_frequencies(counts: np.ndarray) -> tuple[float, ...]:
    """log of each class's share of the training synapses (logit adjustment's offsets)."""
    counts = np.asarray(counts, dtype=float)
    return tuple(float(v) for v in np.log(np.maximum(counts, 1) / counts.sum()))


def _training_batches(
    cfg, worker, *, seed: int, device: torch.device
) -> tuple[Iterator[dict], np.ndarray]:
    """Endless class-balanced batches of the split's training part, and the part's synapse
    count per class."""
    from synister.data import TrainingData, check_split, training_loader, training_synapses
    from synister.db import open_database, public_url
    from synister.volumes import Volume

    url = cfg.database_url()
    with open_database(url, create=False) as db:
        # the split and a train synapse of every class, or a message naming the setting
        check_split(db, cfg.split_name, cfg.classes, ("train",), public_url(url))
        synapses = training_synapses(db, cfg.split_name, cfg.synapse_types, part="train")
        # "neither" locations keep their distance from every known synapse, not only these
        all_synapses_nm = db.synapses()[["z", "y", "x"]].to_numpy() if cfg.neither_class else None
    try:
        volume = Volume(cfg.raw_container, cfg.raw_dataset, voxel_size_nm=cfg.voxel_size)
    except (OSError, ValueError) as error:
        raise type(error)(
            f"the raw volume (raw_container, raw_dataset in train_config.ini): {error}"
        ) from None
    dataset = TrainingData(
        synapses,
        volume,
        cfg.input_shape,
        cfg.classes,
        augment=cfg.augment,
        elastic=cfg.elastic_augment,
        neither=cfg.neither_class,
        seed=seed,
        all_synapses_nm=all_synapses_nm,
    )
    num_workers = min(worker.num_cache_workers, usable_cpus())
    set_compute_threads(worker.num_cpus, num_workers)
    loader = training_loader(
        dataset,
        cfg.batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        seed=seed,
    )
    counts = np.bincount(synapses["label"].to_numpy(), minlength=len(cfg.classes))
    return iter(loader), counts


def summary_line(result: dict) -> str:
    """What :func:`train` did, in one line (``synister train`` and ``python -m synister.train``
    print it)."""
    if result.get("already_done"):
        return (
            f"nothing to do: the newest checkpoint is already at iteration {result['iteration']} "
            f"({result['checkpoint']})"
        )
    how = "stopped at" if result["interrupted"] else "trained to"
    return (
        f"{how} iteration {result['iteration']} (from {result['start_iteration']}, "
        f"{result['samples_per_s']:.1f} samples/s), last loss {result['loss']:.4f}; "
        f"checkpoint {result['checkpoint']}"
    )
