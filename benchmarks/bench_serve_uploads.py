"""Memory of `synister serve` while it is sent decompression bombs and big tables (issue #22).

Starts the real service (uvicorn, one worker, the default limits: 100 MiB and 1,000,000 rows
per table) on loopback with this Python, then uploads, one user:

1. a 681 kB Parquet file of 50 million rows of zeros, a 137 kB one of 10 million, a 66 kB
   Feather file of 10 million, and a 3 kB Parquet file of 300 rows whose neuron ids are 1 MB
   strings (each is refused: 422);
2. the largest table the limits let through: 1,000,000 rows with text neuron ids (a 60 MB
   CSV), checked and queued: the worker starts it;
3. ten 31 MB CSV tables (385,000 rows each) at once: each is checked (two checks at once in
   the service, one per user) and queued; all jobs are then cancelled.

and reports the peak resident memory above its baseline of the web app's process (VmHWM), of
each table check (its checker process, from the service's log) and of the worker, with the
answers and their times. The worker's baseline is its memory after a first small job (torch,
the model and the volume loaded). Goal: <= 300 MB above baseline for any upload within the
limit.

    .venv/bin/python benchmarks/bench_serve_uploads.py [--out figures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import bundle_factory  # noqa: E402
from serve_support import config_text, free_port, make_site, positions, wait_for  # noqa: E402

API = "/api/v1"
MB = 2**20


def status_bytes(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def write_bombs(folder: Path) -> dict[str, Path]:
    zeros = pa.array(np.zeros(1_000_000))
    table = pa.table({"x": zeros, "y": zeros, "z": zeros})
    bombs = {}
    for millions in (50, 10):
        path = bombs[f"parquet_{millions}M_zero_rows"] = folder / f"zeros_{millions}M.parquet"
        with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
            for _ in range(millions):
                writer.write_table(table)
    path = bombs["feather_10M_zero_rows"] = folder / "zeros_10M.feather"
    options = ipc.IpcWriteOptions(compression="zstd")
    with ipc.new_file(path, table.schema, options=options) as writer:
        for _ in range(10):
            writer.write_table(table)
    rows = pa.Table.from_pandas(positions(300, seed=1), preserve_index=False)
    ids = pa.DictionaryArray.from_arrays(pa.array(np.zeros(300, np.int32)), pa.array(["n" * MB]))
    path = bombs["parquet_300_rows_1MB_ids"] = folder / "long_ids.parquet"
    pq.write_table(rows.set_column(1, "pre_pt_root_id", ids), path, compression="zstd")
    return bombs


def upload(base: str, token: str, path: Path) -> dict:
    start = time.perf_counter()
    with httpx.Client(base_url=base, timeout=600) as client:
        response = client.post(
            f"{API}/jobs",
            params={"bundle": "tiny", "volume": "vol", "filename": path.name},
            headers={"Authorization": f"Bearer {token}"},
            content=path.read_bytes(),
        )
    body = response.json()
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "status": response.status_code,
        "answer": body.get("detail") or f"job {body['id']}: {body['rows']} rows",
        "seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv-rows", type=int, default=385_000)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--finish-largest",
        action="store_true",
        help="let the 1,000,000-row job run to its end (its output tables and report) before "
        "the others are cancelled; without it every job stops after the first stored part",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_uploads_") as tmp:
        tmp = Path(tmp)
        site = make_site(tmp / "site", bundle_factory(lambda: Path(tempfile.mkdtemp(dir=tmp))))
        bombs = write_bombs(tmp)
        big = tmp / "synapses_31MB.csv"
        positions(args.csv_rows, seed=2).to_csv(big, index=False)
        largest = tmp / "synapses_1M_rows.csv"
        table = positions(1_000_000, seed=4)
        table["pre_pt_root_id"] = "neuron_" + (table["pre_pt_root_id"] % 10_000).astype(str)
        table.to_csv(largest, index=False)
        service = tmp / "service"
        service.mkdir()
        port = free_port()
        limits = {"upload_bytes": 100 * MB, "queued_jobs_per_user": 12}  # all are checked
        (service / "service.toml").write_text(
            config_text(site, port, rows_per_job=1_000_000, limits=limits, lease_seconds=30.0)
        )
        log = open(service / "service.log", "w")
        process = subprocess.Popen(
            [sys.executable, "-m", "synister", "serve", "--config", "service.toml"],
            cwd=service,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            def healthy():
                try:
                    return httpx.get(f"{base}/health").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(healthy, 120, "the service")
            workers = wait_for(
                lambda: [p for p in children(process.pid) if "serve worker" in command_line(p)],
                60,
                "the worker",
            )
            token = subprocess.run(
                [sys.executable, "-m", "synister", "serve", "token", "create", "bench"],
                cwd=service,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
            small = tmp / "warm_up.csv"
            positions(300, seed=3).to_csv(small, index=False)
            first = upload(base, token, small)["answer"].split()[1].rstrip(":")
            wait_for(
                lambda: client.get(f"{API}/jobs/{first}").json()["state"] == "done",
                300,
                "the first job",
                interval=0.5,
            )
            web_base = status_bytes(process.pid, "VmRSS")
            worker_base = status_bytes(workers[0], "VmRSS")
            answers = [upload(base, token, path) for path in [*bombs.values(), largest]]
            with ThreadPoolExecutor(10) as pool:
                answers += list(pool.map(lambda _: upload(base, token, big), range(10)))

            def a_job_ran() -> bool:
                jobs = client.get(f"{API}/jobs").json()
                return any(j["state"] == "running" and j["progress"]["done"] for j in jobs)

            wait_for(a_job_ran, 300, "the worker to store a first part of a big job", interval=0.5)
            if args.finish_largest:  # the largest upload was queued first: the worker runs it
                largest_job = answers[len(bombs)]["answer"].split()[1].rstrip(":")
                wait_for(
                    lambda: (
                        client.get(f"{API}/jobs/{largest_job}").json()["state"]
                        in ("done", "failed")
                    ),
                    4 * 3600,
                    "the 1,000,000-row job",
                    interval=5,
                )
            largest_end = None
            if args.finish_largest:
                record = client.get(f"{API}/jobs/{largest_job}").json()
                largest_end = {k: record.get(k) for k in ("state", "error", "result")}
            for job in client.get(f"{API}/jobs").json():
                client.post(f"{API}/jobs/{job['id']}/cancel")
            wait_for(
                lambda: all(
                    j["state"] in ("cancelled", "done", "failed")
                    for j in client.get(f"{API}/jobs").json()
                ),
                300,
                "the jobs to stop",
            )
            web_peak = status_bytes(process.pid, "VmHWM")
            worker_peak = status_bytes(workers[0], "VmHWM")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(120)
            log.close()
        checks = [
            entry
            for line in (service / "service.log").read_text().splitlines()
            if line.startswith("{") and (entry := json.loads(line)).get("event") == "check"
        ]
    figures = {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "uploads": answers,
        "web_baseline_mb": round(web_base / MB, 1),
        "web_peak_above_baseline_mb": round((web_peak - web_base) / MB, 1),
        "check_peaks_above_their_start_mb": [
            round((c["peak_rss_bytes"] - c["rss_bytes"]) / MB, 1) for c in checks
        ],
        "checker_baseline_mb": round(min(c["rss_bytes"] for c in checks) / MB, 1),
        "worker_baseline_mb": round(worker_base / MB, 1),
        "worker_peak_above_baseline_mb": round((worker_peak - worker_base) / MB, 1),
        "largest_job_at_its_end": largest_end,  # --finish-largest
    }
    figures["check_peak_max_mb"] = max(figures["check_peaks_above_their_start_mb"])
    print(json.dumps(figures, indent=1))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
