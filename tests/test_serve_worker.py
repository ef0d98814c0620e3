"""Workers of `synister serve`: jobs survive kill -9 of a worker and of the whole service, and a
graceful stop hands the running job back; a running job can be cancelled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from urllib.parse import parse_qsl

import pandas as pd
import pytest
from conftest import scratch_postgres
from serve_support import (
    Service,
    make_site,
    positions,
    predict_positions_command,
    submit,
    wait_for,
    wait_job,
)

from synister.serve import files as job_files
from synister.serve.config import load_service_config
from synister.serve.store import open_store

pytestmark = pytest.mark.slow

#: synapses of the job that is killed and stopped while it runs
ROWS = 2000


@pytest.fixture(scope="module")
def site(tmp_path_factory, random_bundle):
    return make_site(tmp_path_factory.mktemp("site"), random_bundle)


def stored_job(service: Service, job_id: str):
    with open_store(load_service_config(service.config).database_url) as store:
        return store.get_job(job_id)


def stored_parts(service: Service, job_id: str) -> int:
    """Parquet files the engine has stored in the job's output folder (its resumable parts)."""
    out = job_files.output_dir(service.folder / "results", job_id)
    return len(list(out.rglob("*.parquet")))


def test_job_survives_worker_kill_graceful_stop_and_service_kill(site, tmp_path):
    table = tmp_path / "synapses.csv"
    positions(ROWS, seed=5).to_csv(table, index=False)
    # the direct `predict-positions` run to compare with goes on beside the service (one
    # torch thread each)
    direct = subprocess.Popen(
        predict_positions_command(site, table, tmp_path / "direct", "slow"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # small parts: progress moves in steps of 64 synapses, so every step below comes long
    # before the job's end (parts of predict-positions' default 2 s could hold the rest)
    service = Service(
        tmp_path / "service", site, workers=1, rows_per_job=ROWS, part_rows=64
    ).start()
    try:
        client = service.client(service.token("alice"))
        job_id = submit(client, table, bundle="slow").json()["id"]

        def progressed(attempts: int, beyond: int):
            return lambda j: j["attempts"] == attempts and j["progress"]["done"] > beyond

        # 1: kill -9 the worker while it runs; the service starts another, which takes the
        # job once its lease runs out and resumes it
        job = wait_job(client, job_id, "running", predicate=progressed(1, 0))
        wait_for(lambda: stored_parts(service, job_id), 300, "a stored part of the job")
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        assert job["state"] == "running", "the job ended before the test could kill it"
        worker_pid = int(stored_job(service, job_id).worker.split(":")[1])
        os.kill(worker_pid, signal.SIGKILL)
        done = job["progress"]["done"]
        job = wait_job(client, job_id, "running", predicate=progressed(2, done))
        assert job["progress"]["done"] < ROWS, "the job ended before the test could stop it"

        # 2: SIGTERM the service: the worker stops at the next batch and hands the job back
        assert service.stop() == 0
        stopped = stored_job(service, job_id)
        assert (stopped.state, stopped.attempts, stopped.worker) == ("queued", 1, None)
        log = [json.loads(line) for line in service.log.read_text().splitlines()]
        assert any(e.get("state") == "released" and e.get("job") == job_id for e in log)
        done = stopped.done

        # 3: start again, then kill -9 the service and its worker while the job runs
        service.start()
        job = wait_job(client, job_id, "running", predicate=progressed(2, done))
        assert job["progress"]["done"] < ROWS, "the job ended before the test could kill it"
        service.kill()
        assert stored_job(service, job_id).state == "running"

        # 4: start again: the job is taken once its lease runs out and finishes
        service.start()
        job = wait_job(client, job_id, "done", timeout=600)
        assert job["attempts"] == 3 and job["error"] is None
        assert 0 < job["result"]["resumed_from"] < ROWS
        assert str(service.folder) not in json.dumps(job)
        served = client.get(f"/api/v1/jobs/{job_id}/results/synapses.parquet")
        served_path = tmp_path / "served.parquet"
        served_path.write_bytes(served.content)
    finally:
        service.stop()
        _, errors = direct.communicate(timeout=600)
    assert direct.returncode == 0, errors
    pd.testing.assert_frame_equal(
        pd.read_parquet(served_path), pd.read_parquet(tmp_path / "direct" / "synapses.parquet")
    )


def test_running_job_can_be_cancelled(site, tmp_path):
    table = tmp_path / "synapses.csv"
    positions(1000, seed=6).to_csv(table, index=False)
    service = Service(tmp_path / "service", site, workers=1, part_rows=64).start()
    try:
        client = service.client(service.token("alice"))
        job_id = submit(client, table, bundle="slow").json()["id"]
        wait_job(client, job_id, "running", predicate=lambda j: j["progress"]["done"] > 0)
        refused = client.delete(f"/api/v1/jobs/{job_id}")
        assert refused.status_code == 409 and "cancel it" in refused.text
        assert client.post(f"/api/v1/jobs/{job_id}/cancel").json()["cancel_requested"]
        job = wait_job(client, job_id, "cancelled", timeout=120)
        assert job["error"] == "cancelled by the user" and job["progress"]["done"] < 1000
        assert not job_files.job_dir(service.folder / "results", job_id).exists()
        assert client.get(f"/api/v1/jobs/{job_id}/results").status_code == 409
        # the worker is free again: the next job runs
        second = submit(client, table, bundle="tiny")
        wait_job(client, second.json()["id"], "done", timeout=300)
    finally:
        service.stop()


@pytest.mark.postgres
def test_workers_share_a_postgresql_queue(site, tmp_path):
    """Two workers on one PostgreSQL queue: every job runs once, to the end."""
    table = tmp_path / "synapses.csv"
    positions(200, seed=9).to_csv(table, index=False)
    with scratch_postgres("synister_serve") as url:
        service = Service(tmp_path / "service", site, workers=2, database=url).start()
        try:
            ids = []
            for user in ("alice", "bob", "carol"):
                client = service.client(service.token(user))
                ids.append((client, submit(client, table).json()["id"]))
            jobs = [wait_job(client, job_id, "done", timeout=300) for client, job_id in ids]
        finally:
            service.stop()
    assert [j["attempts"] for j in jobs] == [1, 1, 1]
    assert all(j["result"]["predicted"] == 200 for j in jobs)
    log = [json.loads(line) for line in service.log.read_text().splitlines()]
    started = [e["job"] for e in log if e.get("message") == "job started"]
    assert sorted(started) == sorted(job_id for _, job_id in ids)
    assert len({e["worker"] for e in log if e.get("message") == "job started"}) <= 2
    password = dict(parse_qsl(url.split("?", 1)[1])).get("password")
    assert not password or password not in service.log.read_text()
