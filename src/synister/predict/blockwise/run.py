"""``predict-volume``: plan, schedule the blocks on daisy, report, summarise per neuron."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ...files import remove_temporaries, write_atomic
from ...models import load_model
from ..neurons import MIN_MARGIN, MIN_SYNAPSES, add_neuron_sums, neuron_sums, summarize_sums
from ..positions import check_voxel_size
from .layout import OUTSIDE_SHARD, context_vox
from .plan import VolumePlan, prepare, write_outside_shard
from .source import Source
from .worker import Launcher, open_plan_volume, read_ahead_blocks

TASK_ID = "predict_volume"
DEFAULT_BLOCK_NM = (2560, 4096, 4096)  # 64 x 1024 x 1024 voxels of FAFB (see the benchmark)
#: shards whose per-neuron sums are added up at once
SUMS_AT_ONCE = 64


def default_workers() -> int:
    """One worker per GPU where there are GPUs, else one per 4 usable CPU cores."""
    import torch

    from ...data import usable_cpus

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, usable_cpus() // 4)


def incomplete_blocks(plan: VolumePlan) -> list[str]:
    """Shards without a done marker whose rows match the plan (checked, not trusted)."""
    return [name for name, n in plan.shards().items() if not plan.store.is_complete(name, n)]


class Progress:
    """daisy progress observer: blocks done/total, synapses/s, raw MB/s and ETA, from the done
    markers workers write (read when daisy reports a finished block, at most once a second)."""

    def __init__(self, plan: VolumePlan, todo: Sequence[str], enabled: bool = True):
        from tqdm import tqdm

        counts = plan.shards()
        self.store = plan.store
        self.todo = {name: counts[name] for name in todo}
        self.blocks_total = len(plan.blocks)
        self.blocks_done = self.blocks_total - len(self.todo)
        self.seen: set[str] = set()
        self.completed = -1
        self.synapses = 0
        self.voxel_bytes = 0
        self.started = time.perf_counter()
        self.scanned = -1.0
        done_synapses = sum(counts.values()) - sum(self.todo.values())
        self.bar = tqdm(
            total=sum(counts.values()),
            initial=done_synapses,
            unit=" synapses",
            desc="predict-volume",
            disable=not enabled,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} synapses "
            "[{elapsed}<{remaining} ETA, {rate_noinv_fmt}{postfix}]",
        )
        self._postfix()

    def _postfix(self) -> None:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(
            f"blocks {self.blocks_done}/{self.blocks_total}, "
            f"raw {self.voxel_bytes / seconds / 1e6:.3g} MB/s",
            refresh=False,
        )

    def update(self, force: bool = False) -> None:
        """Count the done markers that appeared (one directory scan, at most once a second)."""
        now = time.perf_counter()
        if not force and now - self.scanned < 1.0:
            return
        self.scanned = now
        for name in set(self.store.finished_markers()) - self.seen:
            if name not in self.todo:
                continue
            try:
                stats = json.loads(self.store.marker(name).read_text())
            except (OSError, ValueError):  # being replaced
                continue
            self.seen.add(name)
            self.blocks_done += 1
            self.synapses += int(stats.get("rows", 0))
            self.voxel_bytes += int(stats.get("voxel_bytes", 0))
            self.bar.update(int(stats.get("rows", 0)))
        self._postfix()
        self.bar.refresh()

    # daisy observer interface
    def on_start(self, states) -> None:
        self.update(force=True)

    def on_progress(self, states) -> None:
        state = states.get(TASK_ID)
        completed = int(state.completed_count) if state is not None else 0
        if completed != self.completed:
            self.completed = completed
            self.update()

    def on_finish(self, states) -> None:
        self.update(force=True)
        self.bar.close()


def schedule(
    plan: VolumePlan,
    todo: list[str],
    *,
    workers: int,
    launcher: Launcher,
    retries: int,
    block_timeout: float,
    progress: Progress,
):
    """Run the blocks named ``todo`` on daisy; returns daisy's task state."""
    import daisy.logging as daisy_logging
    import daisy.v2 as daisy

    Roi = daisy.Roi

    grid = plan.grid
    below, above = context_vox(plan.patch_vox)
    write_roi = Roi((0, 0, 0), grid.block_vox)
    skip = np.ones(grid.grid_shape, dtype=bool)
    wanted = set(todo)
    for linear in plan.blocks["block"].tolist():
        block = grid.block(linear)
        if block.name in wanted:
            skip[block.index] = False
    daisy_logging.set_log_basedir(plan.store.logs_dir.resolve())
    task = daisy.Task(
        TASK_ID,
        total_roi=Roi((0, 0, 0), grid.volume_shape_vox).grow(below, above),
        read_roi=write_roi.grow(below, above),
        write_roi=write_roi,
        process_function=launcher,
        read_write_conflict=False,
        fit="shrink",
        max_workers=workers,
        max_retries=retries,
        timeout=block_timeout,
        tracking_path=False,  # done markers with row counts are checked here (skip_mask)
        skip_mask=skip,
    )
    if tuple(task.block_grid_shape) != grid.grid_shape:
        raise RuntimeError(f"daisy's block grid {task.block_grid_shape} is not {grid.grid_shape}")
    states = daisy.run_blockwise(
        task, multiprocessing=True, progress=progress, return_states=True, summary=False
    )
    return states[TASK_ID]


def stage_chunks(plan: VolumePlan, raw, workers: int, read_ahead: int):
    """A :class:`~synister.volumes.stage.ChunkStage` for workers on this machine reading a
    remote volume, so that a chunk near a block boundary is fetched once, not by each worker
    whose blocks touch it (``None`` for one worker, whose chunk cache does that, or a local
    volume). Its budget holds 4 times what the workers read at once; it is kept in memory
    where there is room, else in ``OUT/staging``."""
    if workers < 2 or not raw.remote:
        return None
    from ...volumes.stage import STAGE_BYTES, ChunkStage, stage_folder

    region = int(np.prod(np.asarray(plan.grid.block_vox) + np.asarray(plan.patch_vox)))
    budget = max(STAGE_BYTES, 4 * workers * read_ahead * region)
    folder = stage_folder(plan.store.staging_dir, budget)
    return ChunkStage.create(folder, raw.store, budget)


def failures(plan: VolumePlan, names: Sequence[str], last_error: str | None) -> dict[str, str]:
    """The last recorded error of each unfinished block."""
    listed = {}
    for name in names:
        record = plan.store.failure(name)
        if record.is_file():
            listed[name] = json.loads(record.read_text()).get("error", "failed")
        else:
            listed[name] = (last_error or "not finished (worker lost)").strip().splitlines()[-1]
    return listed


def neuron_table(
    plan: VolumePlan, min_synapses: int = MIN_SYNAPSES, min_margin: float = MIN_MARGIN
) -> pd.DataFrame | None:
    """Per-neuron summary over all shards, as ``predict-positions`` writes it: per-neuron sums
    of one shard at a time (:func:`~synister.predict.neurons.neuron_sums`), added up, so the
    synapses are never all in memory."""
    if plan.columns.neuron is None:
        return None
    classes = plan.class_names
    wanted = ["neuron_id", *classes, "top_nt"]
    pending: list[pd.DataFrame] = []
    for name in plan.shards():
        shard = pd.read_parquet(plan.store.shard(name), columns=wanted)
        pending.append(neuron_sums(shard, classes))
        if len(pending) >= SUMS_AT_ONCE:
            pending = [add_neuron_sums(pending)]
    sums = add_neuron_sums(pending)
    return summarize_sums(sums, classes, min_synapses=min_synapses, min_margin=min_margin)


def predict_volume(
    bundle: str | Path,
    volume: str,
    synapses: Source,
    out: str | Path,
    *,
    dataset: str | None = None,
    block_nm: Sequence[float] = DEFAULT_BLOCK_NM,
    workers: int | None = None,
    device: str | None = None,
    threads: int | None = None,
    batch_size: int = 32,
    precision: str = "fp32",
    naming: str = "short",
    retries: int = 2,
    block_timeout: float = 3600.0,
    worker_config: str | Path | None = None,
    read_ahead: int | None = None,
    overwrite: bool = False,
    column_options: dict | None = None,
    min_synapses: int = MIN_SYNAPSES,
    min_margin: float = MIN_MARGIN,
    strict: bool = False,
    progress: bool = True,
    log=print,
) -> dict:
    """Predict every synapse of ``synapses`` in ``volume`` block by block into ``out``.

    ``read_ahead``: blocks each worker reads while its network runs on one (default: from the
    block size, see :func:`~.worker.read_ahead_blocks`). Local workers reading a remote volume
    share the chunks they fetch (see :func:`stage_chunks`).

    Returns a summary: synapses, blocks (total, with synapses, run now, skipped as finished),
    synapses predicted now and per second, failed blocks with their errors (empty when
    complete), seconds, and the output paths. A rerun with the same arguments continues where
    a killed or failed run stopped. ``strict``: refuse a table most of whose synapses fall
    outside the volume (see :func:`~synister.predict.blockwise.plan.prepare`).
    """
    from ...volumes.stage import memory_stage_path

    if read_ahead is not None and read_ahead < 1:
        raise ValueError(f"read_ahead must be >= 1, got {read_ahead}")
    started = time.perf_counter()
    model = load_model(bundle)
    raw = open_plan_volume(
        {"volume": volume, "dataset": dataset, "voxel_size_nm": None, "offset_nm": None},
        scale_nm=model.voxel_size_nm,
    )
    if raw.scale_note:
        log(raw.scale_note)
    check_voxel_size(model, raw)
    plan = prepare(
        out, model, raw, volume, dataset, synapses, block_nm, naming=naming,
        precision=precision, overwrite=overwrite, column_options=column_options,
        strict=strict, log=log,
    )  # fmt: skip
    for folder in (plan.store.path, plan.store.shards_dir, plan.store.done_dir):
        remove_temporaries(folder)  # a killed run's half-written files
    todo = incomplete_blocks(plan)
    for name in todo:  # a marker that does not match its shard is no marker
        plan.store.marker(name).unlink(missing_ok=True)
    if OUTSIDE_SHARD in todo:  # no raw data to read: written here
        write_outside_shard(plan)
        todo.remove(OUTSIDE_SHARD)
    workers = workers or default_workers()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = max(1, min(workers, len(todo)))
    local = worker_config is None  # cluster jobs use the cores their job has
    if threads is None and local and "OMP_NUM_THREADS" not in os.environ:  # CPU workers share
        from ...data import usable_cpus

        threads = max(1, usable_cpus() // workers)
    n_blocks = len(plan.blocks)
    log(
        f"{n_blocks - len(todo)} of {n_blocks} blocks with synapses already finished; "
        f"{len(todo)} to run on {workers} worker(s)"
    )
    last_error = None
    try:
        if todo:
            if read_ahead is None:
                read_ahead = read_ahead_blocks(plan.grid.block_vox, plan.patch_vox)
            stage = stage_chunks(plan, raw, workers, read_ahead) if local else None
            if stage is not None:
                log(
                    f"the workers share the chunks they fetch in {stage.folder} (up to "
                    f"{stage.budget_bytes / 2**30:.1f} GiB, removed at the end)"
                )
            launcher = Launcher(
                str(plan.store.path.resolve()), device, threads, batch_size,
                str(worker_config) if worker_config else None, read_ahead,
                str(stage.folder.resolve()) if stage else None,
            )  # fmt: skip
            observer = Progress(plan, todo, enabled=progress)
            state = schedule(
                plan, todo, workers=workers, launcher=launcher, retries=retries,
                block_timeout=block_timeout, progress=observer,
            )  # fmt: skip
            last_error = state.last_worker_error
    finally:  # the stage lasts one run (also what a killed run left)
        for folder in (plan.store.staging_dir, memory_stage_path(plan.store.staging_dir)):
            shutil.rmtree(folder, ignore_errors=True)
    unfinished = incomplete_blocks(plan)
    seconds = time.perf_counter() - started
    counts = plan.shards()
    predicted = sum(counts[name] for name in set(todo) - set(unfinished))
    summary = {
        "out": str(plan.store.path),
        "synapses": plan.n_synapses,
        "outside_volume": plan.n_outside,
        "blocks": plan.grid.n_blocks,
        "blocks_with_synapses": len(plan.blocks),
        "blocks_run": len(todo) - len(unfinished),
        "blocks_skipped": n_blocks - len(todo),
        "predicted": predicted,
        "synapses_per_second": predicted / seconds if seconds > 0 else float("nan"),
        "temperature": model.temperature,
        "failed": failures(plan, unfinished, last_error),
        "seconds": seconds,
    }
    if not unfinished:
        neurons = neuron_table(plan, min_synapses, min_margin)
        if neurons is not None:
            write_atomic(plan.store.neurons_file, lambda tmp: neurons.to_parquet(tmp, index=False))
            summary["neurons"] = len(neurons)
        summary["synapses_file"] = str(plan.store.shards_dir)
    return summary
