"""The training loop behind ``synister train``, independent of where the model and batches
come from (:mod:`synister.train.setup_run` builds them from a setup folder).

Rank 0 writes checkpoints, tensorboard scalars and snapshots; SIGINT/SIGTERM stop cleanly.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from synister.models import checkpoint_path

from .averaging import WeightAverage, save_average
from .checkpoints import save_training_checkpoint
from .distributed import Distributed, any_rank, barrier
from .metrics import WindowedAccuracy
from .schedule import LearningRateSchedule
from .snapshots import write_snapshot

LOG_DIR = "log"
SNAPSHOT_DIR = "snapshots"


@dataclass(frozen=True)
class LoopSettings:
    """How often to write what, the loss, the learning-rate schedule (None: leave the
    optimizer's rate alone) and the speed options (which only act on a GPU)."""

    checkpoint_every: int = 1000
    snapshot_every: int = 100
    log_every: int = 10
    mixed_precision: bool = False
    accuracy_window_samples: int = 400
    label_smoothing: float = 0.0
    learning_rate: LearningRateSchedule | None = None
    #: subtracted from the logits in the loss only (logit adjustment: log class frequencies)
    logit_offsets: tuple[float, ...] | None = None
    #: hand the network its input channels-last (its weights must be converted already)
    channels_last: bool = False

    def __post_init__(self):
        for name in ("checkpoint_every", "snapshot_every", "log_every", "accuracy_window_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the running iteration.

    The loop then saves a checkpoint at the iteration it reached, so Ctrl-C (or a cluster
    scheduler's SIGTERM) loses no finished work. A second signal aborts at once.
    """

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{signal.Signals(signum).name}: stopping after this iteration and saving a "
            "checkpoint (send it again to abort without saving)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def run_training(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[dict],
    setup_dir: str | Path,
    classes: Sequence[str],
    *,
    start_iteration: int,
    num_iterations: int,
    settings: LoopSettings,
    ctx: Distributed | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    stop: StopRequest | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    average: WeightAverage | None = None,
) -> dict:
    """Train iterations ``start_iteration + 1 .. num_iterations``; one batch per iteration.

    ``batches`` yields dicts with ``raw`` (B, 1, Z, Y, X) float32 in [-1, 1], ``label`` (B,),
    ``synapse_id`` (B,) and ``params`` (list of B augmentation dicts). Rank 0 writes
    checkpoints, tensorboard scalars under ``log/`` and snapshots under ``snapshots/``, and
    calls ``on_checkpoint(iteration, path)`` after writing each checkpoint. ``average`` (rank 0
    only): a weight average updated after every step and saved beside every checkpoint.
    """
    ctx = ctx or Distributed()
    device = torch.device(device)
    setup_dir = Path(setup_dir)
    amp = settings.mixed_precision and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    offsets = None
    if settings.logit_offsets is not None:
        offsets = torch.tensor(settings.logit_offsets, dtype=torch.float32, device=device)
    accuracy = WindowedAccuracy(len(classes), settings.accuracy_window_samples)
    writer = None
    if ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides what a killed run logged after the checkpoint we resume from
        writer = SummaryWriter(
            str(setup_dir / LOG_DIR), purge_step=start_iteration + 1, flush_secs=30
        )
    bar = tqdm(
        total=num_iterations,
        initial=start_iteration,
        disable=not (progress and ctx.is_main),
        unit="it",
        dynamic_ncols=True,
        desc="train",
    )
    iteration = start_iteration
    saved_iteration = start_iteration if start_iteration > 0 else None
    last_loss = float("nan")
    interval_losses: list[float] = []
    interval_start = run_start = time.perf_counter()
    interval_samples = total_samples = 0
    interrupted = False
    checkpoint = checkpoint_path(setup_dir, start_iteration) if start_iteration > 0 else None
    previous = None  # the last batch
    model.train()
    with stop or StopRequest() as stop:
        try:
            while iteration < num_iterations:
                if any_rank(stop.requested, ctx, device):
                    interrupted = True
                    break
                try:
                    batch = next(batches)
                except Exception:
                    # Ctrl-C in a terminal also reaches the loader's worker processes, which
                    # then exit, maybe mid-transfer; the loader reports that as some error
                    if not stop.requested:
                        raise
                    if not ctx.enabled or previous is None:
                        interrupted = True
                        break
                    # other ranks, which saw no stop at the check above, are on their way
                    # into this iteration's gradient all-reduce: take part with the previous
                    # batch, then every rank stops at the next check
                    batch = previous
                previous = batch
                if settings.learning_rate is not None:
                    for group in optimizer.param_groups:
                        group["lr"] = settings.learning_rate.rate(iteration + 1)
                raw = batch["raw"].to(device, non_blocking=True)
                if settings.channels_last and raw.dim() == 5:
                    raw = raw.contiguous(memory_format=torch.channels_last_3d)
                labels = batch["label"].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    logits = model(raw)
                loss = loss_fn(
                    logits.float() if offsets is None else logits.float() - offsets, labels
                )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                iteration += 1
                if average is not None:
                    average.update(model)

                last_loss = float(loss.detach())
                if not math.isfinite(last_loss) and not amp:
                    raise FloatingPointError(
                        f"loss became {last_loss} at iteration {iteration} (newest checkpoint: "
                        f"{saved_iteration or 'none'}); lower learning_rate in "
                        f"{setup_dir / 'train_config.ini'} and resume"
                    )
                samples = raw.shape[0] * ctx.world_size
                interval_samples += samples
                total_samples += samples
                interval_losses.append(last_loss)
                predicted = logits.detach().argmax(dim=1)
                accuracy.update(labels.cpu().numpy(), predicted.cpu().numpy())
                bar.update(1)

                if writer is not None and iteration % settings.log_every == 0:
                    elapsed = time.perf_counter() - interval_start
                    _log_scalars(
                        writer,
                        iteration,
                        loss=float(np.mean(interval_losses)),
                        accuracy=accuracy,
                        classes=classes,
                        learning_rate=optimizer.param_groups[0]["lr"],
                        samples_per_s=interval_samples / max(elapsed, 1e-9),
                    )
                    bar.set_postfix(loss=f"{np.mean(interval_losses):.3f}")
                    interval_losses.clear()
                    interval_samples = 0
                    interval_start = time.perf_counter()
                if ctx.is_main and iteration % settings.snapshot_every == 0:
                    write_snapshot(
                        setup_dir / SNAPSHOT_DIR,
                        iteration,
                        raw=raw.detach().float().cpu().numpy(),
                        labels=batch["label"].numpy(),
                        probabilities=torch.softmax(logits.detach().float(), 1).cpu().numpy(),
                        synapse_ids=batch["synapse_id"].numpy(),
                        params=batch.get("params", [{}] * raw.shape[0]),
                        classes=classes,
                        loss=last_loss,
                    )
                if iteration % settings.checkpoint_every == 0:
                    checkpoint = _save(setup_dir, model, optimizer, iteration, ctx, average)
                    saved_iteration = iteration
                    if on_checkpoint is not None and ctx.is_main:
                        on_checkpoint(iteration, checkpoint)
            if iteration not in (saved_iteration, 0):
                checkpoint = _save(setup_dir, model, optimizer, iteration, ctx, average)
                saved_iteration = iteration
                if on_checkpoint is not None and ctx.is_main and not interrupted:
                    on_checkpoint(iteration, checkpoint)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
    elapsed = time.perf_counter() - run_start
    return {
        "iteration": iteration,
        "start_iteration": start_iteration,
        "loss": last_loss,
        "checkpoint": str(checkpoint) if checkpoint else None,
        "interrupted": interrupted,
        "elapsed_s": elapsed,
        "samples_per_s": total_samples / elapsed if elapsed > 0 else float("nan"),
    }


def _save(setup_dir, model, optimizer, iteration, ctx: Distributed, average) -> Path:
    path = None
    if ctx.is_main:
        if average is not None:  # first: a checkpoint is never without its average
            save_average(average, checkpoint_path(setup_dir, iteration), model, iteration)
        path = save_training_checkpoint(setup_dir, model, optimizer, iteration)
    barrier(ctx)
    return path if path is not None else checkpoint_path(setup_dir, iteration)


def _log_scalars(writer, iteration, *, loss, accuracy, classes, learning_rate, samples_per_s):
    writer.add_scalar("loss", loss, iteration)
    per_class = accuracy.per_class()
    for name, value in zip(classes, per_class, strict=True):
        if not math.isnan(value):
            writer.add_scalar(f"accuracy/{name}", value, iteration)
    if not np.all(np.isnan(per_class)):
        writer.add_scalar("accuracy/mean", float(np.nanmean(per_class)), iteration)
    writer.add_scalar("learning_rate", learning_rate, iteration)
    writer.add_scalar("samples_per_s", samples_per_s, iteration)
