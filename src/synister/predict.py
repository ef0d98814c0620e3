"""Prediction of a split part with a trained checkpoint, into the database.

Three stages overlap so that the model never waits: DataLoader workers read and normalise
patches (one concurrent tensorstore request per batch), the main process runs the network, and
a writer thread stores each batch of softmax probabilities in one transaction. Because every
stored batch is a committed transaction and writes are upserts, a run that is killed at any
moment resumes by predicting only the synapses that have no stored prediction yet.
"""

from __future__ import annotations

import logging
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

from .config import PredictConfig, load_predict_setup
from .db import PredictionRunExists, open_database
from .models import build_model, load_checkpoint
from .volumes import Volume, normalize

log = logging.getLogger(__name__)


class PatchBatches(torch.utils.data.Dataset):
    """Batch ``i`` = normalised patches (B, 1, Z, Y, X) around synapses ``i*B .. (i+1)*B`` and their ids."""

    def __init__(
        self,
        volume: Volume,
        synapse_ids: np.ndarray,
        centers_nm: np.ndarray,
        input_shape_vox: tuple[int, int, int],
        batch_size: int,
    ):
        self.volume = volume
        self.synapse_ids = np.asarray(synapse_ids, dtype=np.int64)
        self.centers_nm = np.asarray(centers_nm, dtype=np.float64)
        self.input_shape_vox = tuple(input_shape_vox)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.synapse_ids) // self.batch_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
        raw = self.volume.read_patches(self.centers_nm[sl], self.input_shape_vox)
        patches = torch.from_numpy(normalize(raw)).unsqueeze(1)
        return torch.from_numpy(self.synapse_ids[sl]), patches


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def patch_loader(dataset: PatchBatches, num_workers: int, pin_memory: bool = False):
    """Batches in order, read ahead by ``num_workers`` processes (0: read in this process)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=4 if num_workers else None,
        # tensorstore does not survive fork() in a process that has used it
        multiprocessing_context="forkserver" if num_workers else None,
    )


class BatchWriter:
    """Stores batches of predictions from a background thread, one transaction per batch.

    The thread opens its own database connection (SQLite connections belong to one thread).
    An error in the thread is raised again in the caller at the next :meth:`put` or at
    :meth:`close`, so a failing write never goes unnoticed.
    """

    def __init__(self, db_url: str, run: str, max_pending: int = 8):
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, args=(db_url, run), daemon=True)
        self._thread.start()

    def _work(self, db_url: str, run: str) -> None:
        try:
            with open_database(db_url) as db:
                while (item := self._queue.get()) is not None:
                    db.write_predictions(run, *item)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self._error = e
            while self._queue.get() is not None:  # drain so put() never blocks forever
                pass

    def put(self, synapse_ids: np.ndarray, probabilities: np.ndarray) -> None:
        if self._error:
            raise self._error
        self._queue.put((synapse_ids, probabilities))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error:
            raise self._error


def run_model(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    on_batch: Callable[[np.ndarray, np.ndarray], None],
    progress: tqdm | None = None,
) -> int:
    """Softmax probabilities for every batch of ``loader``, handed to ``on_batch``; returns the count."""
    model.eval()
    done = 0
    autocast = device.type == "cuda"
    with torch.inference_mode():
        for ids, patches in loader:
            patches = patches.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=autocast):
                logits = model(patches)
            probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
            on_batch(ids.numpy(), probs)
            done += len(ids)
            if progress is not None:
                progress.update(len(ids))
    return done


@dataclass
class PredictionPlan:
    """What a prediction setup will do: the run, its synapses and what is already stored."""

    cfg: PredictConfig
    run: str
    synapses: pd.DataFrame  # synapse_id, z, y, x (nm) of the split part
    todo: pd.DataFrame  # the subset without a stored prediction
    checkpoint: Path


def resolve_checkpoint(setup_dir: Path, checkpoint: str) -> Path:
    """The seed writes ``train_checkpoint`` relative to the experiments' base folder."""
    path = Path(checkpoint)
    if path.is_absolute():
        return path
    for base in (setup_dir, setup_dir.parents[2] if len(setup_dir.parents) > 2 else setup_dir):
        if (base / path).exists():
            return (base / path).resolve()
    return (setup_dir.parents[2] / path).resolve()


def plan_prediction(setup_dir: str | Path) -> PredictionPlan:
    """Open (or create) the run of a predict setup and find what is left to predict.

    An existing run that is complete aborts with :class:`PredictionRunExists` unless the config
    says ``overwrite = True`` (then it is emptied); an incomplete one is resumed.
    """
    setup_dir = Path(setup_dir).resolve()
    cfg, _ = load_predict_setup(setup_dir)
    run = cfg.run_name
    checkpoint = resolve_checkpoint(setup_dir, cfg.train_checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"{setup_dir / 'predict_config.ini'}: train_checkpoint {checkpoint} not found")
    with open_database(cfg.database_url()) as db:
        synapses = db.synapses(split=cfg.split_name, part=cfg.split_part)
        synapses = synapses[synapses["nt_known"].map(lambda s: len(s & set(cfg.classes)) == 1)]
        synapses = synapses[["synapse_id", "z", "y", "x"]].reset_index(drop=True)
        if len(synapses) == 0:
            raise ValueError(
                f"split {cfg.split_name!r} part {cfg.split_part!r} holds no synapse of the classes "
                f"{', '.join(cfg.classes)}"
            )
        meta = {
            "split_name": cfg.split_name,
            "split_part": cfg.split_part,
            "experiment": cfg.experiment,
            "train_number": cfg.train_number,
            "predict_number": cfg.predict_number,
            "iteration": cfg.iteration,
            "checkpoint": str(checkpoint),
            "classes": list(cfg.classes),
        }
        done = np.empty(0, dtype=np.int64)
        if run in db.prediction_runs() and not cfg.overwrite:
            classes, _ = db.open_prediction_run(run)
            done = db.predicted_synapse_ids(run)
            if list(classes) != list(cfg.classes):
                raise PredictionRunExists(
                    f"prediction run {run!r} exists with classes {classes}, not {cfg.classes}; "
                    "set overwrite = True in predict_config.ini to replace it"
                )
            if np.isin(synapses["synapse_id"], done).all():
                raise PredictionRunExists(
                    f"prediction run {run!r} exists and is complete ({len(done)} synapses); "
                    "set overwrite = True in predict_config.ini to replace it"
                )
        else:
            db.create_prediction_run(run, cfg.classes, meta, overwrite=cfg.overwrite)
    todo = synapses[~np.isin(synapses["synapse_id"], done)].reset_index(drop=True)
    return PredictionPlan(cfg, run, synapses, todo, checkpoint)


def _device(requested: str | None, worker: int = 0) -> torch.device:
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device(f"cuda:{worker % torch.cuda.device_count()}")
    return torch.device("cpu")


def _predict_shard(plan: PredictionPlan, shard: slice, device: torch.device, read_workers: int,
                   progress: tqdm | None) -> int:
    cfg = plan.cfg
    todo = plan.todo.iloc[shard]
    if len(todo) == 0:
        return 0
    model = build_model(cfg)
    load_checkpoint(plan.checkpoint, model, map_location="cpu")
    model.to(device)
    volume = Volume(cfg.raw_container, cfg.raw_dataset, voxel_size_nm=cfg.voxel_size)
    batches = PatchBatches(
        volume,
        todo["synapse_id"].to_numpy(),
        todo[["z", "y", "x"]].to_numpy(),
        cfg.input_shape,
        cfg.batch_size,
    )
    loader = patch_loader(batches, read_workers, pin_memory=device.type == "cuda")
    writer = BatchWriter(cfg.database_url(), plan.run)
    try:
        return run_model(model, loader, device, writer.put, progress)
    finally:
        writer.close()


def _block_worker(rank: int, plan: PredictionPlan, n: int, device: str | None, read_workers: int):
    torch.set_num_threads(max(1, torch.get_num_threads() // n))
    _predict_shard(plan, slice(rank, None, n), _device(device, rank), read_workers, None)


def predict_setup(
    setup_dir: str | Path,
    *,
    device: str | None = None,
    block_workers: int | None = None,
    read_workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Predict the split part of one predict setup; returns counts and synapses/s.

    ``block_workers`` (default: worker_config's num_block_workers) processes share the synapses,
    one per GPU where GPUs exist.
    """
    setup_dir = Path(setup_dir).resolve()
    _, worker_cfg = load_predict_setup(setup_dir)
    plan = plan_prediction(setup_dir)
    n = block_workers or worker_cfg.num_block_workers or 1
    if read_workers is None:
        read_workers = max(1, min(worker_cfg.num_cache_workers, (torch.get_num_threads() or 2) // n))
    start = time.perf_counter()
    bar = tqdm(
        total=len(plan.synapses),
        initial=len(plan.synapses) - len(plan.todo),
        desc=plan.run,
        unit="syn",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        if n == 1:
            done = _predict_shard(plan, slice(None), _device(device), read_workers, bar)
        else:
            torch.multiprocessing.spawn(
                _block_worker, args=(plan, n, device, read_workers), nprocs=n, join=True
            )
            done = len(plan.todo)
            bar.update(done)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return {
        "run": plan.run,
        "total": len(plan.synapses),
        "predicted": done,
        "resumed_from": len(plan.synapses) - len(plan.todo),
        "seconds": seconds,
        "synapses_per_second": done / seconds if seconds > 0 else float("nan"),
    }
