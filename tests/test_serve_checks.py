"""Table checks of the service in checker processes (:mod:`synister.serve.checks`): at most
``checks`` at once and ``checks_per_user`` per user, each within its memory bound."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pandas as pd
from table_corpus import counted_frames

from synister.serve import checks
from synister.serve.config import LimitsSection
from synister.tables import TableLimits

MB = 2**20


def test_checks_run_at_most_n_at_once_and_per_user(monkeypatch):
    running: Counter = Counter()
    most = {"all": 0, "user": 0}
    release = asyncio.Event()

    class Checker:
        alive = True

        async def ask(self, request, seconds):
            user = request["options"]["user"]
            running[user] += 1
            most["all"] = max(most["all"], sum(running.values()))
            most["user"] = max(most["user"], running[user])
            await release.wait()
            running[user] -= 1
            return {"rows": 1}

    async def start(memory_bytes):
        return Checker()

    monkeypatch.setattr(checks._Checker, "start", staticmethod(start))

    async def main():
        pool = checks.CheckPool(LimitsSection(checks=2, checks_per_user=1))
        users = ["ann", "ann", "ann", "ben", "ben", "cy"]
        tasks = [
            asyncio.create_task(pool.check(u, "t.csv", {"user": u}, TableLimits())) for u in users
        ]
        while sum(running.values()) < 2:
            await asyncio.sleep(0)
        for _ in range(100):  # the others had every chance to start too
            await asyncio.sleep(0)
        assert sum(running.values()) == 2 and max(running.values()) == 1
        release.set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == [{"rows": 1}] * 6
    assert most == {"all": 2, "user": 1}


def test_a_checker_refuses_a_table_that_needs_more_memory_than_a_check_may_take(tmp_path):
    rng = np.random.default_rng(0)
    n = 500_000
    big = pd.DataFrame({"id": np.arange(n), "x": rng.random(n), "y": 1.0, "z": 2.0})
    big.to_parquet(tmp_path / "big.parquet")
    big.head(10).to_csv(tmp_path / "small.csv", index=False)
    limits = TableLimits(max_rows=10**6, max_row_bytes=4096)

    async def main():
        pool = checks.CheckPool(LimitsSection(check_memory_bytes=16 * MB))
        try:
            return [
                await pool.check("ann", tmp_path / name, {}, limits)
                for name in ("big.parquet", "small.csv", "small.csv")
            ]
        finally:
            await pool.close()

    big_answer, small, again = asyncio.run(main())
    assert big_answer["error"] == (
        f"{tmp_path / 'big.parquet'}: reading the table needs more than the {16 * MB} bytes "
        "of memory a check may take"
    )
    assert small["rows"] == again["rows"] == 10
    assert small["peak_rss_bytes"] >= small["rss_bytes"] > 0


def test_the_check_and_the_job_read_a_csv_table_in_chunks(tmp_path, monkeypatch, random_bundle):
    from synister.serve import engine
    from synister.serve.config import VolumeChoice
    from synister.volumes import create_volume

    create_volume(tmp_path / "raw.zarr", (16, 64, 64), (40, 4, 4))  # zeros, never written
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"id": np.arange(250), "pre_pt_root_id": rng.integers(0, 9, 250)})
    table[["x", "y", "z"]] = rng.uniform(40, 200, (250, 3)) * [1, 1, 2.5]
    table.to_csv(tmp_path / "t.csv", index=False)
    seen = counted_frames(monkeypatch)
    monkeypatch.setattr(engine, "CHUNK_ROWS", 100)
    assert engine.check_table(tmp_path / "t.csv") == 250
    assert seen == [100, 100, 50]
    job = engine.EngineJob(
        tmp_path / "t.csv",
        random_bundle((4, 16, 16), fmaps=1),
        VolumeChoice(url=str(tmp_path / "raw.zarr"), dataset="raw"),
        threads=1,
    )
    summary = engine.run_job(job, tmp_path / "out", lambda stored, total: None)
    assert seen == [100, 100, 50] * 2
    assert summary["rows"] == summary["predicted"] == 250
