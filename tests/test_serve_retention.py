"""What the service keeps on disk (:mod:`synister.serve.retention`): cancelled and failed jobs
lose their files, finished jobs older than ``results_days`` lose files and record, folders
without a record go after a day; `synister serve prune` and `synister serve jobs`."""

from __future__ import annotations

import json
import os
import time

from serve_support import run_cli

from synister.serve import files as job_files
from synister.serve.config import load_service_config
from synister.serve.retention import ORPHAN_SECONDS, prune
from synister.serve.store import NewJob, open_store

DAY = 86400.0


def _job(store, results, user: str, state: str, size: int) -> str:
    job_id = os.urandom(16).hex()
    folder = job_files.job_dir(results, job_id)
    folder.mkdir(parents=True)
    (folder / "input.csv").write_bytes(b"x" * size)
    store.submit(NewJob(job_id, user, "b", "v", "t.csv", "csv", 1), max_active=100)
    if state == "queued":
        return job_id
    if state == "cancelled":
        store.cancel(job_id)
        return job_id
    assert store.claim("w", 30, 3).id == job_id
    store.finish(job_id, "w", state, None if state == "done" else "it failed")
    return job_id


def test_prune_applies_the_retention_rules(tmp_path):
    path = tmp_path / "service.toml"
    path.write_text("[limits]\nresults_days = 30\n")
    config = load_service_config(path)
    results = config.results_dir
    with open_store(config.database_url) as store:
        done = _job(store, results, "alice", "done", 1000)
        failed = _job(store, results, "alice", "failed", 200)
        cancelled = _job(store, results, "bob", "cancelled", 30)
        queued = _job(store, results, "bob", "queued", 4)
        orphan = job_files.job_dir(results, "e" * 32)
        orphan.mkdir()
        (orphan / "upload.part").write_bytes(b"y" * 5)
        fresh = job_files.job_dir(results, "f" * 32)  # an upload under way
        fresh.mkdir()
        old = time.time() - ORPHAN_SECONDS - 60
        os.utime(orphan, (old, old))

        listed = run_cli(["serve", "prune", "--dry-run", "--json", "--config", str(path)])
        assert listed.returncode == 0, listed.stderr
        would = {r["job"]: r for r in json.loads(listed.stdout)}
        assert set(would) == {failed, cancelled, orphan.name}
        assert would[failed]["bytes"] == 200 and would[orphan.name]["reason"] == "orphan"
        assert job_files.job_dir(results, failed).exists()  # a dry run removes nothing

        removed = {r.job: r for r in prune(config, store)}
        assert set(removed) == set(would) and not any(r.record for r in removed.values())
        assert store.get_job(failed).error == "it failed"  # the record stays
        for job_id in (failed, cancelled, orphan.name):
            assert not job_files.job_dir(results, job_id).exists()
        assert fresh.exists() and job_files.job_dir(results, queued).exists()

        later = {r.job: r for r in prune(config, store, now=time.time() + 31 * DAY)}
        assert set(later) >= {done, failed, cancelled} and later[done].bytes == 1000
        assert later[done].record and store.get_job(done) is None
        assert store.get_job(queued).state == "queued"  # a queued job is never expired
        assert job_files.job_dir(results, queued).exists()

    jobs = run_cli(["serve", "jobs", "--json", "--config", str(path)])
    assert [(j["id"], j["bytes"]) for j in json.loads(jobs.stdout)] == [(queued, 4)]
