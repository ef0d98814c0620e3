"""A daisy worker: keeps the network loaded, takes blocks from the scheduler until none is
left, and reads the next block while the network runs on the current one.

Started by daisy as its own process (locally), or as a cluster job through the submit
template of ``worker_config.ini`` (``python -m synister.predict.blockwise.worker OUT``); either
way it connects back to the scheduler with ``daisy.Client`` (``DAISY_CONTEXT``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow.parquet as pq

from .adapters import Predictor, load_bundle, submit_command
from .block import predict_block, read_block
from .layout import Store, write_json
from .plan import VolumePlan, load_plan
from .source import BlockRows

log = logging.getLogger(__name__)


def choose_device(requested: str | None, worker_id: int) -> str:
    """``requested``, else GPU ``worker_id`` (round robin) where there are GPUs, else CPU."""
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return f"cuda:{worker_id % torch.cuda.device_count()}"
    return "cpu"


def open_volume(settings: dict):
    """The run's volume, with the voxel size and offset the plan was made with."""
    from ...volumes import Volume

    return Volume(
        settings["volume"],
        settings["dataset"],
        voxel_size_nm=settings["voxel_size_nm"],
        offset_nm=settings["offset_nm"],
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
            columns=self.plan.columns,
            class_names=self.plan.class_names,
            read=read,
        )
        shard = store.shard(block.name)
        tmp = shard.with_name(f".{shard.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, shard)
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


def run_worker(out: str, device: str | None, threads: int | None, batch_size: int) -> int:
    """Take blocks from the scheduler until none is left; returns how many were finished.

    The worker holds at most two blocks, the one the network runs on and the one being read,
    each through its own connection: daisy 2.0 answers an acquire with "shut down" once no
    block is waiting, drops that connection and retries a block still held on it elsewhere,
    so the read-ahead block must never share a connection with the current one.
    """
    import daisy.v2 as daisy
    import torch

    context = daisy.Context.from_env()
    second = context.copy()
    second["worker_id"] = -1  # a helper connection of the same worker
    clients = (daisy.Client(context), daisy.Client(second))
    worker_id = max(clients[0].worker_id, 0)
    if threads:
        torch.set_num_threads(threads)
    plan = load_plan(Store(out))
    device = choose_device(device, worker_id)
    bundle = load_bundle(plan.settings["bundle"])
    runner = BlockRunner(
        plan, Predictor(bundle, device, batch_size), open_volume(plan.settings), worker_id
    )
    done = 0
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="block-reader")

    def acquire(k: int):
        manager = clients[k].acquire_block()
        block = manager.__enter__()
        if block is None:
            manager.__exit__(None, None, None)
            return None
        linear = block_linear(plan, block)
        return k, manager, linear, reader.submit(runner.read, linear)

    try:
        current = acquire(0)
        while current is not None:
            k, manager, linear, pending = current
            following = acquire(1 - k)  # read while this one is predicted
            try:
                rows, read = pending.result()
                runner.finish(linear, rows, read)
            except Exception as error:  # noqa: BLE001 - reported to daisy, which retries
                runner.record_failure(linear, error)
                try:
                    manager.__exit__(type(error), error, error.__traceback__)
                except Exception:  # noqa: BLE001 - the same error, re-raised by daisy's manager
                    pass
            else:
                manager.__exit__(None, None, None)
                done += 1
            current = following if following is not None else acquire(k)
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
    return done


@dataclass
class Launcher:
    """What daisy starts per worker slot: the worker itself, or a cluster job running it."""

    out: str
    device: str | None = None
    threads: int | None = None
    batch_size: int = 32
    worker_config: str | None = None

    def command(self) -> list[str]:
        command = [sys.executable, "-m", __name__, self.out, "--batch-size", str(self.batch_size)]
        if self.device:
            command += ["--device", self.device]
        if self.threads:
            command += ["--threads", str(self.threads)]
        return command

    def __call__(self, *, context=None) -> None:
        line = None
        if self.worker_config is not None:
            env = ["env", f"DAISY_CONTEXT={context.to_env()}"] if context is not None else []
            line = submit_command(self.worker_config, [*env, *self.command()])
        if line is None:
            run_worker(self.out, self.device, self.threads, self.batch_size)
            return
        result = subprocess.run(line, shell=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"cluster job exited with status {result.returncode}: {line}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A predict-volume worker (started by daisy).")
    parser.add_argument("out")
    parser.add_argument("--device")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    finished = run_worker(args.out, args.device, args.threads, args.batch_size)
    print(json.dumps({"blocks": finished}))


if __name__ == "__main__":
    main()
