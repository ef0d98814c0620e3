"""Time bulk import and a split-part query on the SQL backends.

    .venv/bin/python benchmarks/bench_db.py [--synapses 500000] [--skeletons 20000]

Imports synthetic synapses (plus their skeletons and hemilineages), writes a random split and
reads its test part back, on SQLite (a file in a temporary folder) and, when
``SYNISTER_TEST_POSTGRES_URL`` is set, on PostgreSQL (a fresh database dropped afterwards).
Goal: 500,000 synapses import into SQLite in well under a minute.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from synister.db import open_database
from synister.nt import TRANSMITTERS


def synthetic_records(n_synapses: int, n_skeletons: int, seed: int = 0):
    """Synapses on random skeletons, each skeleton with one transmitter and a hemilineage."""
    rng = np.random.default_rng(seed)
    n_lineages = max(1, n_skeletons // 50)
    hemi_lineages = pd.DataFrame(
        {
            "hemi_lineage_id": np.arange(n_lineages),
            "hemi_lineage_name": [f"HL{i}" for i in range(n_lineages)],
            "nt_guess": [[TRANSMITTERS[i % len(TRANSMITTERS)]] for i in range(n_lineages)],
        }
    )
    skeletons = pd.DataFrame(
        {
            "skeleton_id": np.arange(n_skeletons) + 1_000_000,
            "hemi_lineage_id": rng.integers(0, n_lineages, n_skeletons),
            "nt_known": [[TRANSMITTERS[i]] for i in rng.integers(0, 6, n_skeletons)],
        }
    )
    synapses = pd.DataFrame(
        {
            "synapse_id": np.arange(n_synapses) + 10_000_000,
            "z": rng.integers(0, 7000, n_synapses) * 40.0,
            "y": rng.integers(0, 300_000, n_synapses) * 4.0,
            "x": rng.integers(0, 300_000, n_synapses) * 4.0,
            "skeleton_id": skeletons.skeleton_id.to_numpy()[
                rng.integers(0, n_skeletons, n_synapses)
            ],
            "brain_region": rng.choice(["MB", "LH", "AL", "SLP"], n_synapses),
            "prepost": "pre",
            "confidence": rng.random(n_synapses),
        }
    )
    parts = pd.DataFrame(
        {
            "synapse_id": synapses.synapse_id,
            "part": rng.choice(["train", "validation", "test"], n_synapses, p=[0.7, 0.15, 0.15]),
        }
    )
    return synapses, skeletons, hemi_lineages, parts


def measure(url: str, records) -> dict[str, float]:
    synapses, skeletons, hemi_lineages, parts = records
    times = {}
    with open_database(url) as db:
        start = time.perf_counter()
        db.import_records(synapses=synapses, skeletons=skeletons, hemi_lineages=hemi_lineages)
        times["import_s"] = time.perf_counter() - start
        start = time.perf_counter()
        db.write_split("bench", parts, meta={"seed": 0})
        times["write_split_s"] = time.perf_counter() - start
        start = time.perf_counter()
        test = db.synapses(split="bench", part="test")
        times["query_part_s"] = time.perf_counter() - start
        times["rows_in_part"] = len(test)
    return times


def postgres_scratch_url(url: str):
    """A fresh database next to ``url`` (created and later dropped by the caller)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"synister_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    info = conninfo_to_dict(url)
    info["dbname"] = name
    from urllib.parse import urlencode

    return name, f"postgresql://?{urlencode(info)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synapses", type=int, default=500_000)
    parser.add_argument("--skeletons", type=int, default=20_000)
    args = parser.parse_args()
    records = synthetic_records(args.synapses, args.skeletons)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = measure(f"sqlite:///{Path(folder) / 'bench.db'}", records)
    admin_url = os.environ.get("SYNISTER_TEST_POSTGRES_URL")
    if admin_url:
        import psycopg

        name, url = postgres_scratch_url(admin_url)
        try:
            results["postgresql"] = measure(url, records)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    print(f"{args.synapses} synapses, {args.skeletons} skeletons")
    print(f"{'backend':<12}{'import s':>10}{'split s':>10}{'query s':>10}{'rows':>10}")
    for backend, t in results.items():
        print(
            f"{backend:<12}{t['import_s']:>10.2f}{t['write_split_s']:>10.2f}"
            f"{t['query_part_s']:>10.2f}{t['rows_in_part']:>10d}"
        )


if __name__ == "__main__":
    main()
