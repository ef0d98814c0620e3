"""``synister predict-positions`` into a folder, resumably.

While it runs, finished batches go to ``DIR/parts/part-NNNNNN.parquet`` (each written under a
temporary name and renamed, so a part is whole or absent) and ``DIR/run.json`` says what the
run is (table, model, volume, precision: everything that determines the numbers) and that it
is ``running``. A run restarted with the same ``--out`` reads the parts and predicts only the
rest; one whose inputs differ is refused, naming what differs. At the end ``synapses.parquet``
(and ``synapses.csv``), ``neurons.parquet`` and ``report.html`` are written, each under a
temporary name and renamed, and only then does ``run.json`` say ``complete``: nothing
half-written ever looks complete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..files import file_sha256, remove_temporaries, write_atomic, write_json
from ..identity import RunIdentity
from ..memory import release_memory
from ..tables import spreadsheet_safe
from .neurons import MIN_MARGIN, MIN_SYNAPSES, SUMMARY_ROWS, summarize_neurons
from .positions import PositionsJob
from .progress import StoredCounter, progress_bar

MANIFEST = "run.json"
PARTS = "parts"
FORMAT = "synister-predict-positions"
#: a part holds at most about this many synapses, or what came within PART_SECONDS
PART_ROWS = 4096
PART_SECONDS = 2.0
OUTPUTS = ("synapses.parquet", "synapses.csv", "neurons.parquet", "report.html")


class RunMismatch(ValueError):
    """``--out`` holds a run of other inputs; names the first that differ."""


class PartWriter:
    """The sink of a positions run: batches of (row indices, probabilities) into part files."""

    def __init__(
        self,
        folder: Path,
        first_number: int,
        on_stored: Callable[[int], None],
        part_rows: int = PART_ROWS,
    ):
        self.folder = folder
        self.part_rows = part_rows
        self.number = first_number
        self.on_stored = on_stored
        self.rows: list[np.ndarray] = []
        self.probabilities: list[np.ndarray] = []
        self.count = 0
        self.last_flush = time.monotonic()

    def __call__(self, rows: np.ndarray, probabilities: np.ndarray) -> None:
        self.rows.append(np.asarray(rows, dtype=np.int64))
        self.probabilities.append(np.asarray(probabilities, dtype=np.float32))
        self.count += len(rows)
        if self.count >= self.part_rows or time.monotonic() - self.last_flush >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.count:
            return
        probabilities = np.concatenate(self.probabilities)
        columns = {"row": pa.array(np.concatenate(self.rows))}
        for k in range(probabilities.shape[1]):
            columns[f"p{k}"] = pa.array(probabilities[:, k])
        table = pa.table(columns)
        self.number += 1
        path = self.folder / f"part-{self.number:06d}.parquet"
        write_atomic(path, lambda tmp: pq.write_table(table, tmp))
        stored, self.count = self.count, 0
        self.rows, self.probabilities = [], []
        self.last_flush = time.monotonic()
        self.on_stored(stored)  # last: it may raise to stop the run (the part is kept)


def write_synapse_files(
    out: Path, synapses: pd.DataFrame, csv: bool, slice_rows: int = SUMMARY_ROWS
) -> None:
    """``synapses.parquet`` (and ``synapses.csv``, its text cells never run as formulas by a
    spreadsheet) written ``slice_rows`` rows at a time: converting a million-row table at
    once costs a copy of it, a slice at a time a quarter of a million rows (a service's worker
    stays bounded). The files are those of ``to_parquet``/``to_csv`` of the whole table."""
    schema = pa.Schema.from_pandas(synapses, preserve_index=False)
    slices = range(0, max(len(synapses), 1), slice_rows)

    def parquet(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in slices:
                part = synapses.iloc[start : start + slice_rows]
                writer.write_table(pa.Table.from_pandas(part, schema, preserve_index=False))

    def text(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            for start in slices:
                part = spreadsheet_safe(synapses.iloc[start : start + slice_rows])
                part.to_csv(handle, index=False, header=start == 0)

    write_atomic(out / "synapses.parquet", parquet)
    if csv:
        write_atomic(out / "synapses.csv", text)


def read_parts(folder: Path, probabilities: np.ndarray) -> tuple[np.ndarray, int]:
    """Fill ``probabilities`` (rows, classes) from the part files; returns a mask of the rows
    found and the highest part number."""
    found = np.zeros(len(probabilities), dtype=bool)
    last = 0
    for path in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(path).to_pandas()
        rows = table["row"].to_numpy()
        columns = [f"p{k}" for k in range(probabilities.shape[1])]
        probabilities[rows] = table[columns].to_numpy(dtype=np.float32)
        found[rows] = True
        last = max(last, int(path.stem.split("-")[1]))
    return found, last


def input_identity(
    job: PositionsJob, table_file: Path | None, neurons_file: Path | None
) -> RunIdentity:
    """The run's identity with the table (and --neurons file) by content, not path."""
    identity = job.identity()
    identity["table"].pop("source", None)
    identity["table"]["sha256"] = file_sha256(table_file) if table_file else None
    identity["table"]["neurons_sha256"] = file_sha256(neurons_file) if neurons_file else None
    return RunIdentity(identity, sections=tuple(identity))


def run_positions(
    job: PositionsJob,
    out: str | Path,
    *,
    table_file: Path | None,
    neurons_file: Path | None = None,
    naming: str = "short",
    csv: bool = False,
    min_synapses: int = MIN_SYNAPSES,
    min_margin: float = MIN_MARGIN,
    overwrite: bool = False,
    progress: bool = True,
    tune_threads: bool = False,
    viewer_source: str | None = None,
    viewer_url: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    shown_as: dict[str, str] | None = None,
    part_rows: int = PART_ROWS,
) -> dict:
    """Predict ``job`` into folder ``out`` (see the module docstring); returns a summary:
    out, state ("complete", or "already complete" when there was nothing to do), counts by
    status, predicted (this call), resumed_from, neurons, confident_neurons, temperature (the
    bundle's, which divided the logits; None: raw softmax), seconds,
    synapses_per_second (this call) and steady_synapses_per_second (after start-up).

    ``on_progress(stored, total)`` (for front-ends without a terminal, such as the service's
    workers) is called before the first batch and after each stored part; an exception it
    raises stops the run with every stored part kept, so a later call resumes there.
    ``shown_as`` ("bundle", "volume": text) names them in the report instead of their paths
    (the service shows the names its users chose). A part is stored once ``part_rows``
    synapses or :data:`PART_SECONDS` seconds came: a killed run redoes at most that much."""
    from .report import write_report

    start = time.perf_counter()
    out = Path(out).expanduser()
    manifest_file = out / MANIFEST
    identity = input_identity(job, table_file, neurons_file)
    if manifest_file.is_file() and not overwrite:
        stored = json.loads(manifest_file.read_text())
        differ = identity.diff(stored.get("identity"))
        if differ:
            raise RunMismatch(
                f"{out} holds a run of other inputs ({', '.join(differ[:4])} differ); use "
                "another --out, or --overwrite to replace it"
            )
        if stored.get("state") == "complete":
            return {**stored.get("summary", {}), "out": str(out), "state": "already complete"}
    elif out.exists() and any(out.iterdir()) and not manifest_file.is_file():
        raise RunMismatch(f"{out} holds other files; use an empty or new folder as --out")
    elif overwrite and out.exists():
        for name in (*OUTPUTS, MANIFEST):
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
        shutil.rmtree(out / PARTS, ignore_errors=True)
    parts = out / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)  # a killed run's half-written outputs (parts go at the end)
    write_json(
        manifest_file, {"format": FORMAT, "state": "running", "identity": identity.to_json()}
    )

    rows = job.table.rows
    probabilities = np.full((len(rows), len(job.classes)), np.nan, dtype=np.float32)
    found, last_part = read_parts(parts, probabilities)
    predictable = job.predictable
    todo = predictable[~found[predictable]]
    resumed_from = len(predictable) - len(todo)
    bar = progress_bar(len(predictable), resumed_from, out.name, progress)
    counter = StoredCounter(bar)

    def stored(n: int) -> None:
        counter(n)
        if on_progress is not None:
            on_progress(resumed_from + counter.count, len(predictable))

    def keep(batch_rows: np.ndarray, batch: np.ndarray) -> None:
        probabilities[batch_rows] = batch
        writer(batch_rows, batch)

    writer = PartWriter(parts, last_part, stored, part_rows)
    try:
        if on_progress is not None:
            on_progress(resumed_from, len(predictable))
        job.predict(todo, keep, on_computed=counter.computed, tune_threads=tune_threads)
        writer.flush()
    except BaseException:
        with contextlib.suppress(Exception):  # keep the finished batches (Ctrl-C, a bad read)
            writer.flush()
        raise
    finally:
        bar.close()

    release_memory()  # what the prediction's reading and batching left: the tables need it
    synapses = job.result(probabilities, naming)
    neurons = None
    if job.table.neuron_column is not None:
        neurons = summarize_neurons(synapses, min_synapses=min_synapses, min_margin=min_margin)
    counts = {s: int((synapses["status"] == s).sum()) for s in ("ok", "partly_outside")}
    counts["outside_volume"] = int((synapses["status"] == "outside_volume").sum())
    seconds = time.perf_counter() - start
    summary = {
        "out": str(out),
        "state": "complete",
        "rows": int(len(synapses)),
        **counts,
        "predicted": int(counter.count),
        "resumed_from": int(resumed_from),
        "neurons": None if neurons is None else int(len(neurons)),
        "confident_neurons": None if neurons is None else int(neurons["confident"].sum()),
        "temperature": job.model.temperature,  # divided the logits (synister calibrate)
        "warnings": job.notes(),  # a likely units or axis mix-up; no neuron column
        "positions_check": None if job.check is None else job.check.to_json(),
        "seconds": seconds,
        "synapses_per_second": counter.count / seconds if seconds > 0 else float("nan"),
        "steady_synapses_per_second": counter.steady_rate(),
        "outputs": ["synapses.parquet"]
        + (["synapses.csv"] if csv else [])
        + (["neurons.parquet"] if neurons is not None else [])
        + ["report.html"],
    }
    release_memory()
    write_synapse_files(out, synapses, csv)
    release_memory()
    if neurons is not None:
        write_atomic(out / "neurons.parquet", lambda tmp: neurons.to_parquet(tmp, index=False))
    settings = {
        "naming": naming,
        "min_synapses": min_synapses,
        "min_margin": min_margin,
        "viewer_source": viewer_source,
        "viewer_url": viewer_url,
        "shown_as": shown_as or {},
    }
    write_atomic(
        out / "report.html",
        lambda tmp: write_report(tmp, job, synapses, neurons, summary, settings),
    )
    clean = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in summary.items()}
    write_json(
        manifest_file,
        {"format": FORMAT, "state": "complete", "identity": identity.to_json(), "summary": clean},
    )
    shutil.rmtree(parts, ignore_errors=True)
    return clean


def read_result(out: str | Path) -> pd.DataFrame:
    """The per-synapse table of a complete run in ``out``."""
    out = Path(out)
    manifest = json.loads((out / MANIFEST).read_text())
    if manifest.get("state") != "complete":
        raise ValueError(f"{out}: the run is not complete (run.json state {manifest['state']!r})")
    return pd.read_parquet(out / "synapses.parquet")
