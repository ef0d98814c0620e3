"""A daisy worker: keeps the network loaded, takes blocks from the scheduler until none is
left, and reads the next blocks while the network runs on the current one.

Started by daisy as its own process (locally), or as a cluster job through the submit
template of ``worker_config.ini`` (``python -m synister predict-volume-worker OUT --context
...``); either way it connects back to the scheduler with ``daisy.Client``.
"""

from __future__ import annotations

import os
import subprocess
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from ...files import write_atomic, write_json
from ...models import LoadedModel, load_model
from ..engine import Predictor, choose_device
from .block import predict_block, read_block
from .layout import Store
from .plan import VolumePlan, load_plan
from .source import BlockRows

#: raw bytes a worker may hold in blocks read ahead (a block's read is at most the block grown
#: by a patch)
READ_AHEAD_BYTES = 256 * 2**20
#: blocks a worker reads ahead at most
MAX_READ_AHEAD = 8


def read_ahead_blocks(block_vox: Sequence[int], patch_vox: Sequence[int]) -> int:
    """Blocks a worker reads while the network runs on one: as many as
    :data:`READ_AHEAD_BYTES` hold, 1 to :data:`MAX_READ_AHEAD`. A block's read waits at least
    one round trip for its chunks; small blocks are predicted in less, so several are read at
    once."""
    region = int(np.prod(np.asarray(block_vox, dtype=np.int64) + np.asarray(patch_vox)))
    return int(np.clip(READ_AHEAD_BYTES // region, 1, MAX_READ_AHEAD))


def open_plan_volume(settings: dict, scale_nm=None):
    """The run's volume, with the voxel size, offset and patch placement of its plan (``None``
    where the plan has none yet: the volume's own); of a multiscale volume the scale of
    ``scale_nm`` (the model's voxel size), else of the plan's voxel size."""
    from ...volumes import Volume

    volume = Volume(
        settings["volume"],
        settings["dataset"],
        voxel_size_nm=settings.get("voxel_size_nm"),
        offset_nm=settings.get("offset_nm"),
        placement=settings.get("placement", "closest"),
        scale_nm=scale_nm,
    )
    volume.require_uint8()
    return volume


def make_predictor(
    model: LoadedModel, device, batch_size: int, threads: int | None, precision: str
) -> Predictor:
    """The engine's predictor of a loaded model, its network on ``device``."""
    return Predictor.from_model(
        model,
        device=choose_device(device),
        batch_size=batch_size,
        precision=precision,
        threads=threads,
    )


class BlockRunner:
    """Reads, predicts and stores blocks of one plan with one loaded network."""

    def __init__(self, plan: VolumePlan, predictor: Predictor, volume, worker_id: int = 0):
        self.plan, self.predictor, self.volume = plan, predictor, volume
        self.worker_id = worker_id
        self.rows = BlockRows(plan.store.sorted_file, plan.block_table)

    def read(self, linear: int):
        """Rows and patches of block ``linear`` (runs in the read-ahead thread)."""
        block = self.plan.grid.block(linear)
        rows = self.rows.read(linear)
        return rows, read_block(block, rows, self.volume, self.plan.patch_vox)

    def finish(self, linear: int, rows, read) -> dict:
        """Predict a read block and store its shard, then its done marker."""
        store, block = self.plan.store, self.plan.grid.block(linear)
        table, stats = predict_block(
            block,
            rows,
            self.volume,
            self.predictor,
            classes=self.plan.classes,
            naming=self.plan.naming,
            read=read,
        )
        write_atomic(store.shard(block.name), lambda tmp: pq.write_table(table, tmp))
        stats.update(worker=self.worker_id, finished=time.time())
        write_json(store.marker(block.name), stats)
        store.failure(block.name).unlink(missing_ok=True)
        return stats

    def record_failure(self, linear: int, error: BaseException) -> None:
        name = self.plan.grid.block(linear).name
        text = "".join(traceback.format_exception_only(type(error), error)).strip()
        write_json(
            self.plan.store.failure(name),
            {"error": text, "traceback": traceback.format_exc()[-4000:], "worker": self.worker_id},
        )


def block_linear(plan: VolumePlan, daisy_block) -> int:
    """The grid index of a daisy block (ROIs in voxels)."""
    offset = [int(o) for o in daisy_block.write_roi.offset]
    index = [o // b for o, b in zip(offset, plan.grid.block_vox, strict=True)]
    return plan.grid.linear(index)


def run_worker(
    out: str,
    device: str | None,
    threads: int | None,
    batch_size: int,
    context: str | None = None,
    read_ahead: int = 1,
    stage: str | None = None,
) -> int:
    """Take blocks from the scheduler until none is left; returns how many were finished.

    ``context``: daisy's worker context (else ``DAISY_CONTEXT`` in the environment).
    ``read_ahead``: blocks read while the network runs on one. ``stage``: a
    :class:`~synister.volumes.stage.ChunkStage` folder shared with the other workers of this
    machine, read through.
    """
    import daisy.v2 as daisy

    from ...volumes.stage import ChunkStage

    if context is not None:
        os.environ[daisy.Context.ENV_VARIABLE] = context
    first = daisy.Context.from_env()
    clients = [daisy.Client(first)]
    for _ in range(read_ahead):
        helper = first.copy()
        helper["worker_id"] = -1  # a helper connection of the same worker
        clients.append(daisy.Client(helper))
    worker_id = max(clients[0].worker_id, 0)
    plan = load_plan(Store(out))
    device = str(choose_device(device, worker_id))
    predictor = make_predictor(
        load_model(plan.settings["bundle"]), device, batch_size, threads,
        plan.settings["precision"],
    )  # fmt: skip
    volume = open_plan_volume(plan.settings)
    if stage is not None:
        volume.stage_chunks(ChunkStage(stage))
    runner = BlockRunner(plan, predictor, volume, worker_id)
    reader = ThreadPoolExecutor(max_workers=read_ahead, thread_name_prefix="block-reader")
    try:
        return take_blocks(
            clients,
            lambda block: block_linear(plan, block),
            lambda linear: reader.submit(runner.read, linear),
            runner,
        )
    finally:
        reader.shutdown(wait=True, cancel_futures=True)


def take_blocks(
    clients: Sequence, linear_of: Callable, read: Callable[[int], Future], runner: BlockRunner
) -> int:
    """Finish blocks taken through ``clients`` until none is left; returns how many.

    Each connection holds one block at a time: the oldest held is predicted while the others
    (up to ``len(clients) - 1``) are read by ``read``. daisy 2.0 answers an acquire with "shut
    down" once no block is waiting, drops that connection and retries a block still held on
    it elsewhere, so a block must never share a connection with another: a connection is
    asked for a block only when it holds none, and not again once it got none.
    """
    free = list(range(len(clients)))[::-1]  # connections holding no block, first one last
    held: deque = deque()  # (connection, manager, linear, reading), oldest first
    done = 0

    def fill() -> None:
        while free:
            k = free.pop()
            manager = clients[k].acquire_block()
            block = manager.__enter__()
            if block is None:  # none waiting now: daisy dropped this connection
                manager.__exit__(None, None, None)
                return
            linear = linear_of(block)
            held.append((k, manager, linear, read(linear)))

    fill()
    while held:
        k, manager, linear, reading = held.popleft()
        try:
            rows, raw = reading.result()
            runner.finish(linear, rows, raw)
        except Exception as error:  # noqa: BLE001 - reported to daisy, which retries
            runner.record_failure(linear, error)
            try:
                manager.__exit__(type(error), error, error.__traceback__)
            except Exception:  # noqa: BLE001 - the same error, re-raised by daisy's manager
                pass
        else:
            manager.__exit__(None, None, None)
            done += 1
        free.append(k)
        fill()
    return done


@dataclass
class Launcher:
    """What daisy starts per worker slot: the worker itself, or a cluster job running it
    through ``worker_config``'s submission template (see :func:`synister.config.submit_command`;
    a template that waits for the job, ``srun``/``bsub -K``/``sbatch --wait``, or one that
    only queues it: the job connects back either way)."""

    out: str
    device: str | None = None
    threads: int | None = None
    batch_size: int = 32
    worker_config: str | None = None
    read_ahead: int = 1
    stage: str | None = None  # a ChunkStage folder shared by this machine's workers

    def __call__(self, *, context=None) -> None:
        if self.worker_config is None:
            run_worker(
                self.out, self.device, self.threads, self.batch_size,
                read_ahead=self.read_ahead, stage=self.stage,
            )  # fmt: skip
            return
        import daisy.v2 as daisy

        from ...config import WorkerConfig, read_ini, submit_command
        from ...submit import synister_argv

        context = context if context is not None else daisy.Context.from_env()
        worker = read_ini(self.worker_config, WorkerConfig)
        args = ["predict-volume-worker", self.out, "--context", context.to_env()]
        args += ["--batch-size", str(self.batch_size), "--read-ahead", str(self.read_ahead)]
        if self.device:
            args += ["--device", self.device]
        if self.threads:
            args += ["--threads", str(self.threads)]
        job = f"predict_volume_{context['worker_id']}"
        command = submit_command(worker, synister_argv(worker, args), job)
        status = subprocess.run(command, check=False).returncode
        if status != 0:
            raise RuntimeError(f"job submission exited with status {status}: {command}")
