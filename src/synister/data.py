"""Training data: class-balanced synapse sampling, batched patch reads, augmentation, loaders.

Sampling follows the original synister training: draw a class uniformly, then one of its
training synapses uniformly, then shift the patch so that the synapse lies uniformly within a
central box of ``synapse_region_fraction`` of every axis. The original requested its synapse
points in a box of ``input_size / 8`` centred in the raw request (funkelab/synister
``train_pipeline.py``: ``request.add(synapses, input_size/8)``), i.e. 1/8 of every axis, which
is the default; 0.5 (the central 1/8 of the patch *volume*) is the wider alternative.
Optionally a "neither" class of locations 2-4 um from a known synapse and at least 2 um from
every synapse is drawn as one more class.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from synister.augment import AugmentPipeline
from synister.nt import canonical
from synister.volumes import Volume

NEITHER = "neither"
#: where the settings the messages name live (of a training setup)
TRAIN_KEYS = "train_config.ini [Training]"

TRAINING_COLUMNS = ["synapse_id", "z", "y", "x", "skeleton_id", "label"]

#: a "neither" location lies this far (min, max nm) from the known synapse it is drawn around
NEITHER_DISTANCE_NM = (2000.0, 4000.0)
#: and at least this far (nm) from every known synapse
NEITHER_MIN_DISTANCE_NM = 2000.0

#: DataLoader workers fork from a fork server, never from the caller (see :func:`worker_options`)
WORKER_CONTEXT = "forkserver"


def training_synapses(
    db, split_name: str, classes: Sequence[str], part: str = "train"
) -> pd.DataFrame:
    """Synapses of ``part`` of split ``split_name`` whose skeleton has exactly one known
    transmitter, that transmitter being one of ``classes``; ``label`` is its index in ``classes``.

    Skeletons with several known transmitters (e.g. gaba + octopamine) are left out, as in the
    original, because no single label is right for them. "neither" in ``classes`` is skipped
    (it has no synapses). Columns: synapse_id, z, y, x (nm), skeleton_id, label (int64).
    """
    names = [canonical(c) for c in classes]
    index = {name: i for i, name in enumerate(names) if name != NEITHER}
    table = db.synapses(split=split_name, part=part)
    single = table["nt_known"].map(
        lambda known: bool(known) and len(known) == 1 and next(iter(known)) in index
    )
    chosen = table.loc[single.astype(bool)].copy()
    chosen["label"] = (
        chosen["nt_known"].map(lambda known: index[next(iter(known))]).astype(np.int64)
    )
    return chosen[TRAINING_COLUMNS].reset_index(drop=True)


class SplitDataError(ValueError):
    """A split is missing, or a part of it lacks a class; names ``split_name`` and
    ``synapse_types``."""


class MissingSplit(SplitDataError):
    """No split of that name in the database."""


def part_counts(
    db, split_name: str, classes: Sequence[str], part: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The synapses of ``part`` that training and prediction use (:func:`training_synapses`)
    and their count per class ("neither" left out)."""
    synapses = training_synapses(db, split_name, classes, part=part)
    counts = np.bincount(synapses["label"].to_numpy(), minlength=len(classes))
    return synapses, {c: int(n) for c, n in zip(classes, counts, strict=True) if c != NEITHER}


def check_split(
    db,
    split_name: str,
    classes: Sequence[str],
    parts: Sequence[str],
    where: str,
    every_class: bool = True,
    settings: str = TRAIN_KEYS,
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Synapse counts per part and class of split ``split_name`` (in database ``where``), and
    warnings. Raises :class:`SplitDataError` where the split is missing (:class:`MissingSplit`)
    or ``parts[0]``, the part a step reads, lacks a class (training: ``every_class``) or holds
    none of them (prediction); a class missing elsewhere is a warning (it cannot be measured
    there). Messages name the setting to change, in ``settings`` (the config file)."""
    if split_name not in db.splits():
        stored = ", ".join(sorted(db.splits())) or "none"
        raise MissingSplit(
            f"no split named {split_name!r} in {where} (split_name in {settings}); stored: "
            f"{stored}; make it with synister split make --name {split_name}"
        )
    counts = {part: part_counts(db, split_name, classes, part)[1] for part in parts}
    held = counts[parts[0]]
    empty = [c for c, n in held.items() if n == 0]
    if empty and (every_class or len(empty) == len(held)):
        kept = [c for c, n in held.items() if n]
        raise SplitDataError(
            f"split {split_name!r} has no {parts[0]} synapses of {', '.join(empty)} "
            f"(synapse_types in {settings}); it holds "
            + (", ".join(f"{c} {held[c]:,}" for c in kept) or "none of the classes")
            + (f"; to train on these: synapse_types = {', '.join(kept)}" if kept else "")
            + "; or make a split that has them (synister split make --nt ...)"
        )
    warnings = [
        f"split {split_name!r} has no {part} synapses of {', '.join(missing)}: they cannot be "
        f"measured on the {part} part"
        for part in parts[0 if empty else 1 :]
        if (missing := [c for c, n in counts[part].items() if n == 0])
    ]
    return counts, warnings


class TrainingData(IterableDataset):
    """An endless, class-balanced stream of augmented training patches.

    Each DataLoader worker draws from its own ``numpy`` Generator seeded with
    ``(seed, worker id)``, so a run is reproducible for a given seed and worker count. Samples
    are drawn ``read_batch`` at a time and read with one ``Volume.read_patches`` call, context
    included, so tensorstore fetches their chunks concurrently.

    Yields dict(raw=float32 (1, Z, Y, X) in [-1, 1], label=int, synapse_id=int (-1 for
    neither), params=dict) where params holds ``center_nm`` (z, y, x of the patch centre) and the
    augmentation parameters (see :class:`synister.augment.AugmentPipeline`), enough to replay it.
    """

    def __init__(
        self,
        synapses: pd.DataFrame,
        volume: Volume,
        input_shape_vox: Sequence[int],
        classes: Sequence[str],
        *,
        augment: bool = True,
        elastic: bool = True,
        neither: bool = False,
        seed: int = 0,
        pipeline: AugmentPipeline | None = None,
        read_batch: int = 8,
        all_synapses_nm: np.ndarray | None = None,
        synapse_region_fraction: float = 1 / 8,
    ):
        self.classes = [canonical(c) for c in classes]
        volume.require_uint8()
        self.volume = volume
        self.input_shape_vox = tuple(int(s) for s in input_shape_vox)
        if len(self.input_shape_vox) != 3 or min(self.input_shape_vox) < 1:
            raise ValueError(
                f"input_shape_vox must be three positive voxel counts, got {input_shape_vox}"
            )
        if not 0 < synapse_region_fraction <= 1:
            raise ValueError(
                f"synapse_region_fraction must be in (0, 1], got {synapse_region_fraction}"
            )
        shape = np.asarray(self.input_shape_vox)
        region = np.maximum(1, np.round(shape * synapse_region_fraction)).astype(np.int64)
        #: voxels [first, first + size) of the patch, per axis, where the synapse may lie
        self.synapse_region_vox = (shape // 2 - region // 2, region)
        self.seed = int(seed)
        self.read_batch = int(read_batch)
        if self.read_batch < 1:
            raise ValueError(f"read_batch must be >= 1, got {read_batch}")
        self.neither = bool(neither)
        if self.neither != (NEITHER in self.classes):
            raise ValueError(
                f"classes {self.classes} {'lack' if self.neither else 'include'} 'neither' but "
                f"neither={self.neither}; the class list and the neither option must agree"
            )
        self.neither_label = self.classes.index(NEITHER) if self.neither else -1

        missing = [c for c in ("synapse_id", "z", "y", "x", "label") if c not in synapses.columns]
        if missing:
            raise ValueError(f"synapses table lacks column(s) {missing}")
        labels = synapses["label"].to_numpy(dtype=np.int64)
        bad = np.flatnonzero(
            (labels < 0) | (labels >= len(self.classes)) | (labels == self.neither_label)
        )
        if bad.size:
            synapse_id = int(synapses["synapse_id"].iloc[bad[0]])
            raise ValueError(
                f"synapses row {int(bad[0])} (synapse_id {synapse_id}) has label "
                f"{int(labels[bad[0]])}, not a synapse class index of {self.classes}"
            )
        self.positions_nm = synapses[["z", "y", "x"]].to_numpy(dtype=np.float64)
        self.synapse_ids = synapses["synapse_id"].to_numpy(dtype=np.int64)
        self.members = [np.flatnonzero(labels == k) for k in range(len(self.classes))]
        empty = [
            c
            for k, c in enumerate(self.classes)
            if k != self.neither_label and not self.members[k].size
        ]
        if empty:
            raise ValueError(
                f"no training synapses for class(es) {empty}; drop them from the classes"
            )

        if pipeline is None:
            pipeline = AugmentPipeline(
                self.input_shape_vox,
                elastic=augment and elastic,
                simple=augment,
                intensity=augment,
            )
        elif tuple(pipeline.output_shape_vox) != self.input_shape_vox:
            raise ValueError(
                f"pipeline output {pipeline.output_shape_vox} differs from input_shape_vox "
                f"{self.input_shape_vox}"
            )
        self.pipeline = pipeline

        self.all_synapses_nm = (
            self.positions_nm
            if all_synapses_nm is None
            else np.asarray(all_synapses_nm, dtype=np.float64)
        )
        self._tree: cKDTree | None = None
        if self.neither:
            # fail at construction, not in a worker, when the volume has no room for neither
            self.neither_locations(np.random.default_rng(self.seed), 1)

    # ---- sampling ----------------------------------------------------------------------------
    def _volume_bounds_nm(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.asarray(self.volume.offset_nm, dtype=np.float64)
        high = low + np.asarray(self.volume.shape_vox) * np.asarray(self.volume.voxel_size_nm)
        return low, high

    def neither_locations(
        self, rng: np.random.Generator, n: int, max_rounds: int = 200
    ) -> np.ndarray:
        """(n, 3) z,y,x nm: each 2-4 um from a random known synapse, >= 2 um from all, inside."""
        if self._tree is None:
            self._tree = cKDTree(self.all_synapses_nm)
        low, high = self._volume_bounds_nm()
        near, far = NEITHER_DISTANCE_NM
        found: list[np.ndarray] = []
        count = 0
        tries = max(64, 4 * n)
        for _ in range(max_rounds):
            anchors = self.positions_nm[rng.integers(len(self.positions_nm), size=tries)]
            direction = rng.standard_normal((tries, 3))
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            candidates = anchors + direction * rng.uniform(near, far, size=(tries, 1))
            inside = np.all((candidates >= low) & (candidates < high), axis=1)
            candidates = candidates[inside]
            if len(candidates):
                distance, _ = self._tree.query(candidates, k=1)
                candidates = candidates[distance >= NEITHER_MIN_DISTANCE_NM]
            found.append(candidates)
            count += len(candidates)
            if count >= n:
                return np.concatenate(found)[:n]
        raise ValueError(
            f"found no 'neither' location ({near:g}-{far:g} nm from a training synapse, >= "
            f"{NEITHER_MIN_DISTANCE_NM:g} nm from all {len(self.all_synapses_nm)} synapses) "
            f"inside the volume {self.volume!r} bounds {low.tolist()}-{high.tolist()} nm after "
            f"{max_rounds * tries} tries; the synapses are too dense or the volume too small"
        )

    def sample_locations(
        self, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw n samples: (patch centres (n, 3) z,y,x nm, labels (n,), synapse ids (n,)).

        The patch is the one prediction reads for the synapse (see
        :meth:`synister.volumes.Volume.patch_starts_vox`) shifted by a whole number of voxels,
        uniform so that the synapse's reference voxel (index ``S//2`` of its prediction patch)
        lands uniformly in :attr:`synapse_region_vox` of the patch.
        """
        labels = rng.integers(len(self.classes), size=n)
        points = np.empty((n, 3))
        ids = np.full(n, -1, dtype=np.int64)
        for k in np.unique(labels):
            where = np.flatnonzero(labels == k)
            if k == self.neither_label:
                points[where] = self.neither_locations(rng, len(where))
            else:
                chosen = self.members[k][rng.integers(len(self.members[k]), size=len(where))]
                points[where] = self.positions_nm[chosen]
                ids[where] = self.synapse_ids[chosen]
        shape = np.asarray(self.input_shape_vox)
        first, size = self.synapse_region_vox
        index_in_patch = rng.integers(first, first + size, size=(n, 3))
        synapse_vox = self.volume.center_vox(points, shape)
        center_vox = synapse_vox + shape // 2 - index_in_patch
        return self.volume.center_nm(center_vox), labels.astype(np.int64), ids

    # ---- iteration ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if info is not None:
            torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, 0 if info is None else info.id])
        context = self.pipeline.context_shape_vox
        while True:
            centers_nm, labels, ids = self.sample_locations(rng, self.read_batch)
            params = [self.pipeline.make_params(rng) for _ in range(self.read_batch)]
            patches = self.volume.read_patches(centers_nm, context)
            for i in range(self.read_batch):
                raw = self.pipeline.apply(patches[i], params[i])
                yield {
                    "raw": raw.unsqueeze(0),
                    "label": int(labels[i]),
                    "synapse_id": int(ids[i]),
                    "params": {"center_nm": centers_nm[i].tolist(), **params[i]},
                }


def collate_samples(samples: list[dict]) -> dict:
    """Stack samples into a batch: raw (B, 1, Z, Y, X), label and synapse_id (B,) int64,
    params as a list of dicts (left uncollated so they stay JSON-able).

    ``raw`` goes through ``default_collate``, which in a worker stacks straight into shared
    memory, saving a copy of every batch on its way to the main process.
    """
    return {
        "raw": default_collate([s["raw"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
        "synapse_id": torch.tensor([s["synapse_id"] for s in samples], dtype=torch.int64),
        "params": [s["params"] for s in samples],
    }


def _init_worker(worker_id: int) -> None:
    """Workers share few cores: one intra-op thread each avoids oversubscription."""
    torch.set_num_threads(1)


def worker_context(preload: str):
    """The multiprocessing context for worker processes: a fork server that has imported
    module ``preload``.

    Workers are not forked from the caller: tensorstore aborts a process forked after it has
    started its threads (as soon as the main process has read any volume). A fork server that
    has imported ``preload`` but never used tensorstore starts them in well under a second,
    where "spawn" re-imports torch in every worker.
    """
    context = multiprocessing.get_context(WORKER_CONTEXT)
    # only takes effect before the process's fork server starts; harmless after
    context.set_forkserver_preload([preload])
    return context


def worker_options(preload: str) -> dict:
    """DataLoader options for worker processes, each with one torch thread, started from
    :func:`worker_context`."""
    return {"worker_init_fn": _init_worker, "multiprocessing_context": worker_context(preload)}


def training_loader(
    dataset: TrainingData,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader of collated batches; workers are persistent and single-threaded.

    Sampling randomness comes from ``dataset.seed`` and the worker id; ``seed`` seeds the
    loader's torch generator (torch-side randomness in workers). Batches come from the workers
    in turn, so the stream is reproducible for a given seed and ``num_workers``.

    Workers fork from a fork server that has imported this module (see :func:`worker_options`).
    """
    if batch_size < 1 or num_workers < 0:
        raise ValueError(
            f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}"
        )
    extra = {}
    if num_workers > 0:
        extra = {"persistent_workers": True, **worker_options(__name__)}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_samples,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(int(seed)),
        **extra,
    )


def usable_cpus() -> int:
    """CPUs this process may run on (a batch job's allocation, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def job_cpus(num_cpus: int) -> int:
    """CPUs a training or prediction job uses: worker_config.ini's num_cpus, at most those
    this process may run on."""
    return max(1, min(num_cpus, usable_cpus()))
