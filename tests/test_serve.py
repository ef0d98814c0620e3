"""`synister serve` over HTTP on loopback: the real service (uvicorn) and real workers as
subprocesses, a real SQLite file, real uploads."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal

import httpx
import pandas as pd
import pytest
from serve_support import (
    Service,
    make_site,
    positions,
    predict_positions,
    run_cli,
    submit,
    wait_for,
    wait_job,
)

pytestmark = pytest.mark.slow

API = "/api/v1"


@pytest.fixture(scope="module")
def site(tmp_path_factory, random_bundle):
    folder = make_site(tmp_path_factory.mktemp("site"), random_bundle)
    tables = folder / "tables"
    tables.mkdir()
    good = positions(300, seed=1)
    good.to_parquet(tables / "flywire.parquet")
    good.to_csv(tables / "flywire.csv", index=False)
    bad = good.astype({"x": object})
    bad.loc[4, "x"] = "12,5 nm"
    bad.to_csv(tables / "text_in_x.csv", index=False)
    good.drop(columns=["x"]).to_csv(tables / "no_x.csv", index=False)
    positions(1001, seed=2).to_csv(tables / "too_many_rows.csv", index=False)
    positions(9000, seed=3).to_csv(tables / "too_big.csv", index=False)  # > 300,000 bytes
    (tables / "junk.csv").write_bytes(os.urandom(2000))
    return folder


@pytest.fixture(scope="module")
def web(site, tmp_path_factory):
    """The web app alone (no workers: queued jobs stay queued); tests start workers."""
    service = Service(tmp_path_factory.mktemp("web"), site, workers=0).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def tokens(web):
    return {
        user: web.token(user, admin=user == "root")
        for user in ("alice", "bob", "carol", "dave", "erin", "root")
    }


def cancel_all(client):
    for job in client.get(f"{API}/jobs").json():
        if job["state"] in ("queued", "running"):
            client.post(f"{API}/jobs/{job['id']}/cancel")


# -- no token needed: the page and /health -------------------------------------------------


def test_page_and_health_need_no_token(web):
    with web.client() as client:
        assert client.get("/health").json()["status"] == "ok"
        page = client.get("/")
        assert page.status_code == 200 and "Sign in" in page.text
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/style.css").status_code == 200


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", f"{API}/me"),
        ("GET", f"{API}/choices"),
        ("POST", f"{API}/jobs?bundle=tiny&volume=vol"),
        ("GET", f"{API}/jobs"),
        ("GET", f"{API}/jobs/{'0' * 32}"),
        ("POST", f"{API}/jobs/{'0' * 32}/cancel"),
        ("GET", f"{API}/jobs/{'0' * 32}/results"),
        ("GET", f"{API}/jobs/{'0' * 32}/results/synapses.parquet"),
        ("GET", f"{API}/jobs/{'0' * 32}/report"),
        ("GET", "/metrics"),
        ("GET", "/api/openapi.json"),
    ],
)
def test_every_other_route_needs_a_token(web, method, path):
    for headers in (
        {},
        {"Authorization": "Bearer syn_000000000000_" + "a" * 43},
        {"Authorization": "Basic YWxpY2U6cHc="},
    ):
        response = httpx.request(method, web.base + path, headers=headers, content=b"x,y,z\n")
        assert response.status_code == 401, (path, headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


def test_openapi_describes_the_api(web, tokens):
    with web.client(tokens["alice"]) as client:
        schema = client.get("/api/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/results",
        "/api/v1/jobs/{job_id}/report",
        "/api/v1/jobs/{job_id}/results/{name}",
        "/health",
        "/metrics",
    ):
        assert path in paths, path
    body = paths["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert {"text/csv", "application/vnd.apache.parquet"} <= set(body)
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "JobOut" in schema["components"]["schemas"]


def test_me_and_choices(web, tokens):
    with web.client(tokens["root"]) as client:
        assert client.get(f"{API}/me").json() == {"user": "root", "admin": True}
        choices = client.get(f"{API}/choices").json()
    assert [b["name"] for b in choices["bundles"]] == ["tiny", "slow"]
    assert [v["name"] for v in choices["volumes"]] == ["vol", "broken"]
    assert choices["rows_per_job"] == 1000 and choices["upload_bytes"] == 300000
    assert "path" not in json.dumps(choices) and "bundles/" not in json.dumps(choices)


# -- what a submission must pass ------------------------------------------------------------


def _job_folders(web) -> set:
    return set((web.folder / "results" / "jobs").iterdir())


def test_malformed_tables_give_the_predict_positions_message(web, site, tokens, tmp_path):
    tables = site / "tables"
    before = _job_folders(web)
    with web.client(tokens["bob"]) as client:
        for name in ("text_in_x.csv", "no_x.csv"):
            response = submit(client, tables / name)
            assert response.status_code == 422, response.text
            copy = tmp_path / name  # the command on a copy: its message names that path
            shutil.copy(tables / name, copy)
            direct = predict_positions(site, copy, tmp_path / f"out_{name}")
            assert direct.returncode == 1
            expected = direct.stderr.strip().splitlines()[-1].removeprefix("error: ")
            assert response.json()["detail"] == expected.replace(str(copy), name)
            assert "\n" not in response.json()["detail"]
        detail = submit(client, tables / "text_in_x.csv").json()["detail"]
        assert (
            detail.startswith("text_in_x.csv, column x, line 6:") and str(web.folder) not in detail
        )

        response = submit(client, tables / "too_many_rows.csv")
        assert response.status_code == 422 and "more than 1000 rows; at most 1000" in response.text

        response = submit(client, tables / "flywire.csv", units="voxels")
        assert response.status_code == 422 and "no --voxel-size was given" in response.text
        response = submit(client, tables / "flywire.csv", units="voxels", voxel_size="8,x,8")
        assert response.status_code == 422 and "--voxel-size '8,x,8'" in response.text

        response = submit(client, tables / "flywire.csv", bundle="../../etc")
        assert response.status_code == 422 and "tiny, slow" in response.text
        response = client.post(
            f"{API}/jobs", params={"bundle": "tiny", "volume": "/tmp"}, content=b"x,y,z\n1,2,3\n"
        )
        assert response.status_code == 422 and "vol, broken" in response.text
        assert client.get(f"{API}/jobs").json() == []
    assert _job_folders(web) == before


def test_only_declared_file_types(web, site, tokens):
    tables = site / "tables"
    before = _job_folders(web)
    with web.client(tokens["bob"]) as client:
        assert submit(client, tables / "junk.csv").status_code == 415
        response = client.post(
            f"{API}/jobs",
            params={"bundle": "tiny", "volume": "vol", "filename": "t.xlsx"},
            content=b"x,y,z\n1,2,3\n",
        )
        assert response.status_code == 415 and "'xlsx'" in response.text
        response = client.post(
            f"{API}/jobs",
            params={"bundle": "tiny", "volume": "vol", "filename": "t.csv"},
            content=(tables / "flywire.parquet").read_bytes(),
        )
        assert response.status_code == 415 and "looks like parquet" in response.text
        assert client.get(f"{API}/jobs").json() == []
    assert _job_folders(web) == before


def test_oversized_upload_is_refused_while_streaming(web, site, tokens):
    data = (site / "tables" / "too_big.csv").read_bytes()
    assert len(data) > 300000
    before = _job_folders(web)
    with web.client(tokens["bob"]) as client:
        response = submit(client, site / "tables" / "too_big.csv")  # with Content-Length
        assert response.status_code == 413

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            for start in range(0, len(data), 16384):
                yield data[start : start + 16384]

        response = client.post(
            f"{API}/jobs", params={"bundle": "tiny", "volume": "vol"}, content=chunks()
        )
        assert response.status_code == 413 and "300000 bytes" in response.text
        assert client.get(f"{API}/jobs").json() == []
        assert client.get("/api/v1/me").status_code == 200  # the service still answers
    assert _job_folders(web) == before


def test_queue_limit_gives_429(web, site, tokens):
    with web.client(tokens["carol"]) as client:
        ids = [submit(client, site / "tables" / "flywire.csv").json()["id"] for _ in range(3)]
        response = submit(client, site / "tables" / "flywire.csv")
        assert response.status_code == 429 and "3 queued or running" in response.text
        assert len(client.get(f"{API}/jobs").json()) == 3
        with web.client(tokens["dave"]) as other:  # the limit is per user
            assert submit(other, site / "tables" / "flywire.csv").status_code == 201
            cancel_all(other)
        assert client.post(f"{API}/jobs/{ids[0]}/cancel").json()["state"] == "cancelled"
        assert submit(client, site / "tables" / "flywire.csv").status_code == 201
        cancel_all(client)


def test_other_users_jobs_are_404_and_admins_see_all(web, site, tokens):
    with web.client(tokens["alice"]) as alice, web.client(tokens["bob"]) as bob:
        job = submit(alice, site / "tables" / "flywire.parquet").json()
        assert job["state"] == "queued" and job["rows"] == 300 and job["user"] == "alice"
        assert job["input_name"] == "flywire.parquet" and job["input_format"] == "parquet"
        unknown = "f" * 32
        for path in ("", "/results", "/results/synapses.parquet", "/report"):
            theirs = bob.get(f"{API}/jobs/{job['id']}{path}")
            nobodys = bob.get(f"{API}/jobs/{unknown}{path}")
            assert theirs.status_code == nobodys.status_code == 404
            assert theirs.json()["detail"].replace(job["id"], unknown) == nobodys.json()["detail"]
        assert bob.post(f"{API}/jobs/{job['id']}/cancel").status_code == 404
        assert bob.get(f"{API}/jobs/..%2F..%2Fservice.db").status_code == 404
        assert job["id"] not in bob.get(f"{API}/jobs").text
        assert bob.get(f"{API}/jobs", params={"all": "true"}).status_code == 403
        assert alice.get(f"{API}/jobs/{job['id']}/results").status_code == 409
        with web.client(tokens["root"]) as root:
            assert root.get(f"{API}/jobs/{job['id']}").json()["user"] == "alice"
            assert job["id"] not in root.get(f"{API}/jobs").text  # own jobs by default
            assert job["id"] in root.get(f"{API}/jobs", params={"all": "true"}).text
        cancelled = alice.post(f"{API}/jobs/{job['id']}/cancel").json()
        assert cancelled["state"] == "cancelled"
        again = alice.post(f"{API}/jobs/{job['id']}/cancel")
        assert again.status_code == 409 and "already cancelled" in again.text


def test_metrics_in_prometheus_format(web, site, tokens):
    with web.client(tokens["erin"]) as erin:
        assert erin.get("/metrics").status_code == 403
        job = submit(erin, site / "tables" / "flywire.csv").json()
        with web.client(tokens["root"]) as root:
            text = root.get("/metrics")
        erin.post(f"{API}/jobs/{job['id']}/cancel")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = text.text.splitlines()
    samples = dict(line.rsplit(" ", 1) for line in lines if not line.startswith("#"))
    assert int(samples["synister_queue_length"]) >= 1
    assert samples['synister_jobs{state="queued"}'] == samples["synister_queue_length"]
    assert {f'synister_jobs{{state="{s}"}}' for s in ("running", "done", "failed")} <= set(samples)
    assert "synister_synapses_per_second" in samples
    assert "# TYPE synister_synapses_predicted_total counter" in lines


# -- jobs that run --------------------------------------------------------------------------


def test_job_runs_and_results_equal_a_direct_run(web, site, tokens, tmp_path):
    worker = web.start_worker()
    try:
        with web.client(tokens["alice"]) as client:
            response = submit(client, site / "tables" / "flywire.csv")
            assert response.status_code == 201
            job = wait_job(client, response.json()["id"], "done", timeout=300)
            assert job["progress"] == {"done": 300, "total": 300}
            assert job["result"]["predicted"] == 300 and job["attempts"] == 1
            listing = client.get(f"{API}/jobs/{job['id']}/results").json()
            names = [f["name"] for f in listing["files"]]
            assert {"synapses.parquet", "neurons.parquet", "report.html"} <= set(names)
            served = {}
            for name in ("synapses.parquet", "neurons.parquet", "synapses.csv"):
                download = client.get(f"{API}/jobs/{job['id']}/results/{name}")
                assert download.status_code == 200
                assert "attachment" in download.headers["content-disposition"]
                served[name] = download.content
            report = client.get(f"{API}/jobs/{job['id']}/report")
            assert report.headers["content-type"].startswith("text/html")
            assert "sandbox" in report.headers["content-security-policy"]
            assert f"Transmitter predictions: {job['id']}" in report.text
            assert "flywire.csv" in report.text and str(web.folder) not in report.text
            assert "tiny (tiny test network)" in report.text  # not the bundle's path
            assert client.get(f"{API}/jobs/{job['id']}/results/service.db").status_code == 404
            assert client.get(f"{API}/jobs/{job['id']}/results/..%2Finput.csv").status_code == 404
        direct = tmp_path / "direct"
        ran = predict_positions(site, site / "tables" / "flywire.csv", direct)
        assert ran.returncode == 0, ran.stderr
        for name in ("synapses.parquet", "neurons.parquet"):
            pd.testing.assert_frame_equal(
                pd.read_parquet(io.BytesIO(served[name])), pd.read_parquet(direct / name)
            )
        pd.testing.assert_frame_equal(
            pd.read_csv(io.BytesIO(served["synapses.csv"])), pd.read_csv(direct / "synapses.csv")
        )
        with web.client(tokens["root"]) as root:
            metrics = root.get("/metrics").text
        assert "synister_synapses_predicted_total 300" in metrics
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0


def test_failed_job_shows_the_reason(web, site, tokens):
    worker = web.start_worker()
    try:
        with web.client(tokens["dave"]) as client:
            job = submit(client, site / "tables" / "flywire.csv", volume="broken").json()
            job = wait_job(client, job["id"], "failed", timeout=300)
        assert "volume 'broken'" in job["error"] and str(site) not in job["error"]
        assert "\n" not in job["error"]
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0


def test_logs_are_json_lines_without_tokens(web, tokens):
    with web.client(tokens["alice"]) as client:
        assert client.get(f"{API}/jobs").status_code == 200

    def logged():  # a background thread writes the log
        entries = [json.loads(line) for line in web.log.read_text().splitlines()]
        requests = [e for e in entries if e.get("event") == "request"]
        seen = any(e["user"] == "alice" and e["path"] == f"{API}/jobs" for e in requests)
        return (entries, requests) if seen else None

    entries, requests = wait_for(logged, 30, "the request's log line")
    assert all({"time", "level", "message", "method", "status", "ms"} <= set(e) for e in requests)
    assert any(e.get("event") == "job" and e.get("state") == "queued" for e in entries)
    text = web.log.read_text() + (web.folder / "worker.log").read_text()
    for token in tokens.values():
        assert token not in text and token.split("_", 2)[2] not in text  # the secret may hold "_"


def test_token_commands(web):
    def run(*args):
        return run_cli(["serve", "token", *args, "--config", str(web.config)])

    created = run("create", "frank")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("syn_") and "frank" in created.stderr and token not in created.stderr
    with web.client(token) as client:
        assert client.get(f"{API}/me").json()["user"] == "frank"
    listed = json.loads(run("list", "--json").stdout)
    key_id = next(t["id"] for t in listed if t["user"] == "frank")
    assert token not in json.dumps(listed)
    assert run("revoke", key_id).returncode == 0
    with web.client(token) as client:
        assert client.get(f"{API}/me").status_code == 401
    assert run("revoke", key_id).returncode == 1
    bad = run("create", "no/slash")
    assert bad.returncode == 1 and "user name" in bad.stderr
