"""`synister serve` on a lab network: each finding of issue #22 (decompression bombs, long
strings, retention, slow and huge requests, non-UTF-8 ids, framing, Host and forwarded
headers), the corpus of malformed tables through the API and `predict-positions`, and what a
finished job's files look like. The real service on loopback, as in test_serve.py."""

from __future__ import annotations

import json
import re
import socket
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from serve_support import (
    Service,
    listening_pid,
    make_site,
    peak_rss,
    positions,
    predict_positions,
    submit,
    wait_for,
    wait_job,
)
from table_corpus import repeated, write_corpus, zeros_parquet

pytestmark = pytest.mark.slow

API = "/api/v1"
MB = 2**20
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "gina", "hugo", "root")


@pytest.fixture(scope="module")
def site(tmp_path_factory, random_bundle):
    folder = make_site(tmp_path_factory.mktemp("site"), random_bundle)
    positions(300, seed=1).to_csv(folder / "flywire.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def web(site, tmp_path_factory):
    """The web app alone (tests start workers), with short HTTP timeouts and a disk quota."""
    limits = {"header_seconds": 1.0, "body_seconds": 1.0, "user_bytes": 700_000}
    service = Service(tmp_path_factory.mktemp("web"), site, workers=0, limits=limits).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def tokens(web):
    return {user: web.token(user, admin=user == "root") for user in USERS}


def job_folders(web) -> set[Path]:
    return set((web.folder / "results" / "jobs").iterdir())


def log_entries(web) -> list[dict]:
    return [json.loads(line) for line in web.log.read_text().splitlines() if line.startswith("{")]


def metric(web, tokens, name: str) -> float:
    with web.client(tokens["root"]) as root:
        text = root.get("/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.M)[1])


def raw_request(web, data: bytes, timeout: float = 60) -> bytes:
    """Send ``data`` on a new connection and read until the service closes it."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=timeout) as conn:
        try:
            conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it was all sent
        reply = b""
        try:
            while chunk := conn.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    return reply


# -- finding 1: decompression in the web process ---------------------------------------------


def test_decompression_bombs_are_refused_from_their_footer_outside_the_web_process(
    web, tokens, tmp_path
):
    parquet = tmp_path / "zeros.parquet"
    zeros_parquet(parquet, 10_000_000)  # 135 kB, 240 MB decoded
    arrow = tmp_path / "zeros.feather"
    zeros = pa.array(np.zeros(1_000_000))
    batch = pa.record_batch([zeros, zeros, zeros], names=["x", "y", "z"])
    options = ipc.IpcWriteOptions(compression="zstd")
    with ipc.new_file(arrow, batch.schema, options=options) as writer:
        for _ in range(10):
            writer.write_batch(batch)
    web_process = listening_pid(web.port)
    before, folders = peak_rss(web_process), job_folders(web)
    with web.client(tokens["alice"]) as alice:
        responses = {path: submit(alice, path) for path in (parquet, arrow)}
    assert peak_rss(web_process) - before < 30 * MB  # 240 MB if decoded
    name = "synister_process_peak_resident_memory_bytes"
    assert abs(metric(web, tokens, name) - peak_rss(web_process)) < 2 * MB
    for path, response in responses.items():
        assert path.stat().st_size < 300_000
        assert response.status_code == 422, response.text
        assert response.json()["detail"] == f"{path.name}: 10000000 rows; at most 1000"

    def alices_checks():  # a background thread writes the log
        found = [e for e in log_entries(web) if e.get("event") == "check" and e["user"] == "alice"]
        return found if len(found) >= 2 else None

    checks = wait_for(alices_checks, 30, "the checks' log lines")
    assert len(checks) == 2 and all(e["refused"] for e in checks)
    assert all(e["peak_rss_bytes"] - e["rss_bytes"] < 30 * MB for e in checks)
    assert job_folders(web) == folders


# -- finding 2: long strings -----------------------------------------------------------------


def test_long_and_unprintable_ids_are_refused(web, tokens, tmp_path):
    long = tmp_path / "long_neuron_ids.parquet"
    table = pa.Table.from_pandas(positions(300, seed=2), preserve_index=False)
    table = table.set_column(1, "pre_pt_root_id", repeated("n" * MB, 300))
    pq.write_table(table, long, compression="zstd")
    assert long.stat().st_size < 20_000  # 300 MB of ids once decoded
    rows = positions(5, seed=3).astype({"pre_pt_root_id": object})
    rows.loc[2, "pre_pt_root_id"] = "ok\u202etxt.exe"
    rows.to_csv(tmp_path / "bidi.csv", index=False)
    rows.loc[2, "pre_pt_root_id"] = "n" * 101
    rows.to_csv(tmp_path / "long.csv", index=False)
    with web.client(tokens["bob"]) as bob:
        detail = submit(bob, long).json()["detail"]
        assert detail.startswith("long_neuron_ids.parquet, column pre_pt_root_id: ")
        assert "an id is at most 100 characters" in detail
        for name, problem in (("bidi.csv", "U+202E"), ("long.csv", "an id of 101 characters")):
            response = submit(bob, tmp_path / name)
            assert response.status_code == 422
            assert response.json()["detail"].startswith(f"{name}, column pre_pt_root_id, line 4:")
            assert problem in response.json()["detail"]
        assert bob.get(f"{API}/jobs").json() == []


# -- finding 3: retention and quota ----------------------------------------------------------


def test_cancelled_jobs_leave_no_files_and_jobs_can_be_deleted(web, site, tokens):
    with web.client(tokens["carol"]) as carol, web.client(tokens["dave"]) as dave:
        for _ in range(4):
            job = submit(carol, site / "flywire.csv").json()
            assert (web.folder / "results" / "jobs" / job["id"]).is_dir()
            assert carol.post(f"{API}/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
            assert not (web.folder / "results" / "jobs" / job["id"]).exists()
        queued = submit(carol, site / "flywire.csv").json()
        assert dave.delete(f"{API}/jobs/{queued['id']}").status_code == 404  # not theirs
        assert carol.delete(f"{API}/jobs/{queued['id']}").status_code == 204
        assert carol.get(f"{API}/jobs/{queued['id']}").status_code == 404
        assert not (web.folder / "results" / "jobs" / queued["id"]).exists()
        cancelled = carol.get(f"{API}/jobs").json()[0]
        assert cancelled["state"] == "cancelled"
        assert carol.delete(cancelled["links"]["delete"]).status_code == 204
        assert len(carol.get(f"{API}/jobs").json()) == 3


def test_a_user_past_the_disk_quota_is_refused(web, tokens, tmp_path):
    table = positions(800, seed=4).assign(notes="n" * 260)
    table.to_csv(tmp_path / "wide.csv", index=False)
    size = (tmp_path / "wide.csv").stat().st_size
    assert 350_000 < 2 * size < 700_000 < 3 * size
    with web.client(tokens["erin"]) as erin:
        ids = [submit(erin, tmp_path / "wide.csv").json()["id"] for _ in range(2)]
        third = submit(erin, tmp_path / "wide.csv")
        assert third.status_code == 413 and "700000 bytes allowed" in third.text
        erin.delete(f"{API}/jobs/{ids[0]}")
        assert submit(erin, tmp_path / "wide.csv").status_code == 201
        for job in erin.get(f"{API}/jobs").json():
            erin.delete(f"{API}/jobs/{job['id']}")


# -- finding 4: request headers and bodies ---------------------------------------------------


def test_request_headers_are_bounded_in_size_and_time(web, tokens):
    huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 * MB) + b"\r\n\r\n"
    reply = raw_request(web, huge)
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]  # 400, or closed
    # request line and headers that never end: closed after header_seconds
    assert raw_request(web, b"GET /health HTTP/1.1\r\nHost: x\r\n") == b""
    # an upload that stalls: 408, nothing kept
    folders = job_folders(web)
    head = (
        f"POST {API}/jobs?bundle=tiny&volume=vol&filename=t.csv HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {tokens['frank']}\r\nContent-Length: 100000\r\n\r\n"
    )
    reply = raw_request(web, head.encode() + b"id,x,y,z\n1,2,3,4\n")
    assert reply.startswith(b"HTTP/1.1 408") and b"sent nothing for 1 s" in reply
    assert job_folders(web) == folders
    with web.client() as client:
        assert client.get("/health").status_code == 200


# -- finding 5: non-UTF-8 bytes in a Parquet id column ---------------------------------------


def test_non_utf8_ids_in_parquet_are_a_422_naming_the_column(web, tokens, tmp_path):
    table = pa.Table.from_pandas(positions(10, seed=5), preserve_index=False)
    binary = pa.array([b"\xff\xfe" + bytes([i]) for i in range(10)], pa.binary())
    pq.write_table(table.set_column(0, "id", binary), tmp_path / "binary.parquet")
    pq.write_table(table.set_column(0, "id", binary.view(pa.string())), tmp_path / "text.parquet")
    with web.client(tokens["gina"]) as gina:
        for name in ("binary.parquet", "text.parquet"):
            response = submit(gina, tmp_path / name)
            assert response.status_code == 422, response.text
            assert response.json()["detail"].startswith(f"{name}, column id: ")
    assert "Traceback" not in web.log.read_text()


# -- finding 6: framing, and the other headers a page owes -----------------------------------


def test_every_response_forbids_framing_and_inline_script(web, tokens):
    with web.client(tokens["hugo"]) as client:
        responses = [client.get(p) for p in ("/", "/static/app.js", "/health", f"{API}/me")]
        responses.append(client.get(f"{API}/jobs/{'0' * 32}"))
    for response in responses:
        headers = response.headers
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-content-type-options"] == "nosniff"
        policy = dict(
            (part.split()[0], part.split()[1:])
            for part in headers["content-security-policy"].split(";")
        )
        assert policy["frame-ancestors"] == ["'none'"] and policy["script-src"] == ["'self'"]
    assert responses[3].headers["cache-control"] == "no-store"
    page = responses[0].text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)  # scripts come from files
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page)
    assert "version" not in responses[2].json()


# -- finding 7: Host and X-Forwarded-For -----------------------------------------------------


def test_no_redirect_from_host_and_no_forwarded_client_unless_from_a_proxy(web, tokens):
    reply = raw_request(
        web,
        f"GET {API}/me/ HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer "
        f"{tokens['hugo']}\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n".encode(),
    )
    assert b"evil.example" not in reply and not reply.startswith(b"HTTP/1.1 30"), reply
    logged = wait_for(  # a background thread writes the log
        lambda: [e for e in log_entries(web) if e.get("path") == f"{API}/me/"], 30, "the log line"
    )
    assert all(e["client"] == "127.0.0.1" for e in logged)
    assert "203.0.113.9" not in web.log.read_text()


def test_forwarded_headers_are_believed_from_configured_proxies_only(tmp_path):
    from synister.serve.config import load_service_config
    from synister.serve.http import uvicorn_config

    path = tmp_path / "service.toml"
    path.write_text('[service]\ntrusted_proxies = ["10.1.2.3", "192.168.0.0/24"]\n')
    config = uvicorn_config(None, load_service_config(path))
    assert config.proxy_headers and config.forwarded_allow_ips == ["10.1.2.3", "192.168.0.0/24"]
    path.write_text("[service]\n")
    assert not uvicorn_config(None, load_service_config(path)).proxy_headers
    path.write_text('[service]\ntrusted_proxies = ["proxy.lab"]\n')
    with pytest.raises(Exception, match="service.trusted_proxies|not an IP address"):
        load_service_config(path)


# -- the corpus of malformed tables ----------------------------------------------------------


def test_malformed_tables_get_one_clear_error_from_the_api_and_predict_positions(
    web, site, tokens, tmp_path
):
    corpus = write_corpus(tmp_path / "corpus")
    assert len(corpus) >= 30
    folders = job_folders(web)
    answers = {}
    with web.client(tokens["hugo"]) as hugo:
        for name, path in corpus.items():
            response = submit(hugo, path)
            assert response.status_code in (415, 422), (name, response.text)
            detail = response.json()["detail"]
            assert detail and "\n" not in detail and str(web.folder) not in detail, name
            answers[name] = response.status_code
        assert hugo.get(f"{API}/jobs").json() == []
    assert job_folders(web) == folders
    assert "Traceback" not in web.log.read_text() and '"status": 500' not in web.log.read_text()
    for name, path in corpus.items():
        out = tmp_path / "out" / name
        ran = predict_positions(site, path, out)
        lines = ran.stderr.strip().splitlines()
        assert ran.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (
            name,
            ran.stderr,
        )
        assert not out.exists()
    print(f"corpus: {len(corpus)} files; API: {sorted(answers.values())}; all refused")


# -- a finished job: private files, spreadsheet-safe CSV, no server path -------------------


def test_a_job_s_files_are_private_its_csv_safe_and_its_report_has_no_server_path(
    web, site, tokens, tmp_path
):
    table = positions(40, seed=6).astype({"pre_pt_root_id": object})
    table.loc[:3, "pre_pt_root_id"] = ['=HYPERLINK("http://x","y")', "+1+2", "@SUM(A1)", "-7"]
    table.to_csv(tmp_path / "formulas.csv", index=False)
    worker = web.start_worker()
    try:
        with web.client(tokens["root"]) as root:
            job = wait_job(root, submit(root, tmp_path / "formulas.csv").json()["id"], "done")
            folder = web.folder / "results" / "jobs" / job["id"]
            csv = root.get(f"{API}/jobs/{job['id']}/results/synapses.csv").text
            cells = pd.read_csv(pd.io.common.StringIO(csv), dtype={"neuron_id": str})
            assert cells["neuron_id"].tolist()[:4] == [
                "'=HYPERLINK(\"http://x\",\"y\")", "'+1+2", "'@SUM(A1)", "-7",
            ]  # fmt: skip
            report = root.get(f"{API}/jobs/{job['id']}/report").text
            assert str(site) not in report and "--viewer-source" not in report
            assert "viewer_source in service.toml" in report
            for path in (web.folder / "results", folder, *folder.rglob("*")):
                mode = stat.S_IMODE(path.stat().st_mode)
                assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
            assert stat.S_IMODE((web.folder / "service.db").stat().st_mode) == 0o600
            assert root.delete(f"{API}/jobs/{job['id']}").status_code == 204
            assert not folder.exists()
    finally:
        worker.terminate()
        worker.wait(60)


# -- the column options of predict-positions -------------------------------------------------


def test_the_api_takes_the_column_options_and_lists_the_columns_when_one_is_missing(
    web, tokens, tmp_path
):
    table = positions(20, seed=8).rename(
        columns={"id": "syn", "pre_pt_root_id": "cell", "x": "x_nm", "y": "y_nm", "z": "z_nm"}
    )
    table.to_parquet(tmp_path / "named.parquet")
    with web.client(tokens["gina"]) as gina:
        refused = submit(gina, tmp_path / "named.parquet")
        assert refused.status_code == 422 and "no position columns" in refused.json()["detail"]
        assert refused.json()["columns"] == ["syn", "cell", "x_nm", "y_nm", "z_nm"]
        options = {
            "id_column": "syn",
            "neuron_column": "cell",
            "position_columns": "x_nm,y_nm,z_nm",
        }
        job = submit(gina, tmp_path / "named.parquet", **options).json()
        assert job["rows"] == 20 and job["options"] == {
            "units": "nm", "id_column": "syn", "neuron_column": "cell",
            "position_columns": ["x_nm", "y_nm", "z_nm"],
        }  # fmt: skip
        options["id_column"] = "nope"
        missing = submit(gina, tmp_path / "named.parquet", **options)
        assert "no column 'nope' (--id-column)" in missing.json()["detail"]
        gina.delete(f"{API}/jobs/{job['id']}")
        positions(5, seed=9).to_csv(tmp_path / "t.csv", index=False)
        odd = submit(gina, tmp_path / "t.csv", filename="evil\u202egpj.\x01x.csv\r\n").json()
        assert odd["input_name"] == "evil_gpj._x.csv"
        gina.delete(f"{API}/jobs/{odd['id']}")
