"""Options that several commands take, each declared once: one name, one help text, one type.

A command takes ``db_url: opt.Db = None`` (after ``from . import options as opt``) and shows
the same ``--db`` as every other command (tests/test_cli.py checks that options of one name
agree, apart from the few whose meaning differs by command, listed there). How to read a table
of positions is in :mod:`.tables`.

This module imports typer and the standard library only, so that declaring the options loads
no torch, tensorstore or pandas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        "--db-url",
        help="Database URL: sqlite:///file.db, postgresql://..., mongodb://.../name (default: "
        "the database of the setup(s) read, if any; else $SYNISTER_DB, else "
        "sqlite:///./synister.db).",
    ),
]
Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (messages go to stderr).")
]
Out = Annotated[Path, typer.Option("--out", help="Output folder.")]
Progress = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show progress on stderr.")
]
Seed = Annotated[
    int, typer.Option("--seed", help="Random seed: the same seed gives the same result.")
]

# -- models, volumes, tables of positions ---------------------------------------------------------
Model = Annotated[
    Path,
    typer.Option(
        "--model",
        help="A model bundle folder (synister export-model); explain also takes a checkpoint "
        "file of a training setup.",
    ),
]
Volume = Annotated[
    str,
    typer.Option(
        "--volume",
        help="EM volume: a zarr/N5/precomputed folder, or an http(s)://, gs://, s3:// URL "
        "(optionally behind precomputed://, zarr://, n5://); see docs/how-to/remote-volumes.md.",
    ),
]
Dataset = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="Array inside the volume, e.g. raw or volumes/raw/s0 (precomputed: the scale key).",
    ),
]
Positions = Annotated[
    Path,
    typer.Option(
        "--positions",
        help="Table of synapse positions: CSV, Parquet or Feather (columns found by name: "
        "x,y,z, pre_x,pre_y,pre_z or pre_pt_position, or see --position-columns).",
    ),
]
Strict = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Fail where most positions fall outside the volume or reach out of it (almost "
        "always a units or axis mix-up; the warning names the likely one) instead of warning.",
    ),
]
Part = Annotated[
    str | None, typer.Option("--part", help="Part of the split: train, validation or test.")
]

# -- running a network --------------------------------------------------------------------------
Device = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="torch device, e.g. cpu or cuda:1 (default: a GPU when present, the GPUs in turn "
        "for several workers, else the CPU).",
    ),
]
Precision = Annotated[
    Literal["fp32", "fp16", "bf16"],
    typer.Option(
        "--precision",
        help="Network precision: fp32 (default; the same numbers as the original and as on "
        "the CPU), fp16 (GPU only) or bf16.",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="torch threads per worker on the CPU (default: the worker's share of the CPUs, "
        "or OMP_NUM_THREADS; one fewer where that ran faster on the first batches).",
    ),
]
ReadWorkers = Annotated[
    int | None,
    typer.Option(
        "--read-workers",
        min=0,
        help="Patch-reading processes per worker; 0: a reading thread (default: the worker "
        "config's num_cache_workers, at most the CPUs less one).",
    ),
]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Patches per network batch.")]
ReadAhead = Annotated[
    int | None,
    typer.Option(
        "--read-ahead",
        min=1,
        help="Blocks each worker reads while its network runs on one (default: as many as "
        "256 MiB hold, 1 to 8).",
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite/--no-overwrite",
        help="Replace a run in --out made with other inputs or settings (else it is refused).",
    ),
]
Submit = Annotated[
    bool,
    typer.Option(
        "--submit",
        help="Submit it as a cluster job with the worker config's submit_command (or "
        "bsub/singularity from its queue and container) instead of running here.",
    ),
]
Local = Annotated[
    bool,
    typer.Option(
        "--local", help="Run here even where the worker config is set up for submitted jobs."
    ),
]

# -- evaluation, synthetic data ----------------------------------------------------------------
TargetAccuracy = Annotated[
    float,
    typer.Option(
        "--target-accuracy",
        min=0.01,
        max=1.0,
        help="Accuracy the confident neuron calls must reach: the 'unclear' thresholds are "
        "chosen for it, by calibrate on the validation run, by evaluate on the run itself "
        "(unless synister calibrate stored the model's own).",
    ),
]
Preset = Annotated[
    str,
    typer.Option(
        "--preset",
        help="Synthetic dataset preset: easy (oracle accuracy >= 0.95; minutes of training on "
        "2 cores) or fafb (FAFB-like ceilings).",
    ),
]
