"""The plan of a whole-volume run: what it predicts, its blocks, and (dry run) its cost.

:func:`prepare` stages the source into the store (see :mod:`.source`) once; a rerun with the
same settings reuses it, one with other settings is refused while finished blocks exist.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ...files import write_atomic, write_json
from ...identity import RunIdentity
from ...models import LoadedModel
from ...tables import TableColumns
from ...volumes.sanity import OUTSIDE_VOLUME, require_fit
from ..neurons import class_columns
from ..positions import open_model
from .block import result_table
from .layout import OUTSIDE_SHARD, BlockGrid, Store
from .source import BlockRows, Source, open_source, sort_by_block, stage

#: 2: the rows and columns of predict-positions (row, id, neuron_id, x, y, z, x_nm, ...)
PLAN_VERSION = 2


class PlanMismatch(ValueError):
    """The store holds a run with other settings."""


@dataclass
class VolumePlan:
    """A prepared run: settings, blocks with synapses, and where everything lives."""

    store: Store
    settings: dict
    grid: BlockGrid
    columns: TableColumns
    classes: list[str]  # the network's
    naming: str  # of the output's class columns
    block_table: pd.DataFrame  # block, n, first_row, lo_z..hi_x (patch starts); -1: outside
    n_synapses: int

    @property
    def class_names(self) -> list[str]:
        """The output's class columns."""
        return class_columns(self.classes, self.naming)

    @property
    def blocks(self) -> pd.DataFrame:
        """The blocks with synapses, ascending."""
        return self.block_table[self.block_table["block"] >= 0].reset_index(drop=True)

    @property
    def n_outside(self) -> int:
        outside = self.block_table["n"][self.block_table["block"] < 0]
        return int(outside.sum())

    @property
    def patch_vox(self) -> tuple[int, int, int]:
        return tuple(self.settings["input_shape_vox"])

    def shards(self) -> dict[str, int]:
        """Every shard the result must hold, with its row count."""
        shards = {
            self.grid.block(b).name: int(n)
            for b, n in zip(self.blocks["block"], self.blocks["n"], strict=True)
        }
        if self.n_outside:
            shards[OUTSIDE_SHARD] = self.n_outside
        return shards


def run_settings(
    model: LoadedModel,
    volume,
    volume_url: str,
    dataset: str | None,
    source: Source,
    grid: BlockGrid,
    columns: TableColumns,
    naming: str,
    precision: str = "fp32",
) -> RunIdentity:
    """Everything that decides the output (as stored in JSON); a resumed run must match it.
    ``model_identity`` is the model's one identity (:attr:`~synister.models.LoadedModel.
    identity`: weights, network and temperature; not the bundle's provenance)."""
    settings = {
        "bundle": str(Path(model.path).resolve()),
        "model_identity": model.identity,
        "classes": list(model.classes),
        "input_shape_vox": list(model.input_shape_vox),
        "volume": str(volume_url),
        "dataset": dataset,
        "volume_shape_vox": list(volume.shape_vox),
        "voxel_size_nm": [float(v) for v in volume.voxel_size_nm],
        "offset_nm": [float(v) for v in volume.offset_nm],
        "placement": volume.placement,
        "precision": precision,
        "temperature": model.temperature,  # divides the logits (synister calibrate)
        "block_vox": list(grid.block_vox),
        "source": source.public(),
        "columns": columns.to_json(),
        "naming": naming,
    }
    return RunIdentity(settings)


def load_plan(store: Store) -> VolumePlan:
    stored = store.read_plan()
    if stored is None:
        raise FileNotFoundError(f"{store.plan_file}: no plan (run predict-volume first)")
    settings = stored["settings"]
    grid = BlockGrid(tuple(settings["volume_shape_vox"]), tuple(settings["block_vox"]))
    return VolumePlan(
        store,
        settings,
        grid,
        TableColumns.from_json(settings["columns"]),
        list(settings["classes"]),
        settings["naming"],
        pq.read_table(store.blocks_file).to_pandas(),
        int(stored["n_synapses"]),
    )


def prepare(
    out: str | Path,
    model: LoadedModel,
    volume,
    volume_url: str,
    dataset: str | None,
    source: Source,
    block_nm,
    *,
    naming: str = "short",
    precision: str = "fp32",
    overwrite: bool = False,
    column_options: dict | None = None,
    strict: bool = False,
    log=print,
) -> VolumePlan:
    """Open the run in ``out``: reuse its plan when the settings match, else stage the source.
    ``model`` is a loaded model, or anything :func:`~synister.models.load_model` takes.

    A store with finished blocks and other settings raises :class:`PlanMismatch` (naming what
    differs) unless ``overwrite``, which empties it first. Where most synapses fall outside
    the volume (a units or axis mix-up) a new plan logs a WARNING naming the likely cause, or
    with ``strict`` raises :class:`~synister.volumes.sanity.PositionMismatch`.
    """
    store = Store(out)
    model = open_model(model)
    grid = BlockGrid.from_nm(volume.shape_vox, block_nm, volume.voxel_size_nm)
    batches = open_source(source, **(column_options or {}))
    identity = run_settings(
        model, volume, volume_url, dataset, source, grid, batches.columns, naming, precision
    )
    settings = identity.to_json()
    stored = store.read_plan()
    if stored is not None and stored.get("version") == PLAN_VERSION and not overwrite:
        differ = identity.diff(stored["settings"])
        if not differ:
            return load_plan(store)
        if store.finished_markers():
            raise PlanMismatch(
                f"{store.path} holds a run with other settings: {'; '.join(differ)}. Use "
                "another --out, or --overwrite to discard its results"
            )
    _clear(store, overwrite)
    created = not store.path.exists()
    store.make_dirs()
    started = time.perf_counter()
    try:
        blocks, n, check = _stage_and_sort(store, batches, volume, grid, settings)
        warning = require_fit(check, strict, batches.where)
        n_outside = int(blocks["n"][blocks["block"] < 0].sum())
        write_json(
            store.plan_file,
            {
                "version": PLAN_VERSION,
                "settings": settings,
                "n_synapses": n,
                "positions_check": check.to_json(),
                "n_outside": n_outside,
                "n_blocks": grid.n_blocks,
                "n_blocks_with_synapses": int((blocks["block"] >= 0).sum()),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
    except BaseException:  # bad input: leave nothing behind
        _clear(store, overwrite=True)
        if created:
            shutil.rmtree(store.path, ignore_errors=True)
        raise
    if warning:
        log(f"WARNING: {warning}")
    log(
        f"planned {n:,} synapses ({n_outside:,} outside the volume) in "
        f"{int((blocks['block'] >= 0).sum()):,} of "
        f"{grid.n_blocks:,} blocks of {grid.block_vox} voxels"
    )
    return load_plan(store)


def _stage_and_sort(store, batches, volume, grid, settings):
    """Stage the source and sort it by block; returns the block table, the synapse count and
    the positions check."""
    staged = store.plan_dir / "staged.parquet"
    n, numeric, check = stage(batches, volume, grid, settings["input_shape_vox"], staged)
    tmp = store.plan_dir / "duckdb_tmp"
    blocks = sort_by_block(staged, store.sorted_file, batches, numeric, tmp)
    blocks.to_parquet(store.blocks_file, index=False)
    staged.unlink()
    shutil.rmtree(tmp, ignore_errors=True)
    return blocks, n, check


def _clear(store: Store, overwrite: bool) -> None:
    """Remove what this tool wrote in ``store`` (never other files)."""
    ours = {"plan.json", "plan", "synapses", "done", "failed", "neurons.parquet", "logs", "staging"}
    if store.path.exists():
        foreign = [p.name for p in store.path.iterdir() if p.name not in ours]
        if foreign and not overwrite:
            raise PlanMismatch(
                f"{store.path} holds files predict-volume did not write "
                f"({', '.join(foreign[:5])}); choose an empty or new --out"
            )
    for name in ours:
        target = store.path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def write_outside_shard(plan: VolumePlan) -> None:
    """The synapses outside the volume: their rows with status outside_volume and no
    probabilities, in input order, from the sorted copy (where they come first)."""
    store = plan.store
    rows = BlockRows(store.sorted_file, plan.block_table).read(-1)
    status = np.full(rows.num_rows, OUTSIDE_VOLUME, dtype=object)
    empty = np.zeros((0, len(plan.classes)), dtype=np.float32)
    table = result_table(rows, plan.classes, status, empty, plan.naming)
    write_atomic(store.shard(OUTSIDE_SHARD), lambda tmp: pq.write_table(table, tmp))
    write_json(store.marker(OUTSIDE_SHARD), {"rows": table.num_rows, "predicted": 0})
