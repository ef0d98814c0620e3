"""Load test of `synister serve` on loopback: concurrent clients poll while a job runs.

Starts the real service (uvicorn + one worker, SQLite) on a free port, then per round:
1. runs a prediction job alone and notes its rate;
2. runs the same job again while ``--clients`` clients (each its own keep-alive connection)
   each ask for the job's status and for their list of jobs, then wait ``--interval`` seconds,
   until the job is done; records every request's latency and every error.
Rounds alternate the two so that a machine whose load drifts affects both alike; a first job,
not measured, warms the worker up (imports, model loading).

Goal (issue #14): p99 < 200 ms, no errors, the job under load no more than 10 % slower.
``--http httptools`` serves with uvicorn's httptools parser instead of the service's bounded
h11 protocol (see synister.serve.http), to compare their latencies.

    .venv/bin/python benchmarks/bench_serve.py [--clients 50] [--interval 1.0] [--rows 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import bundle_factory  # noqa: E402
from serve_support import Service, make_site, positions, wait_job  # noqa: E402

API = "/api/v1"
#: `synister` whose service parses HTTP with httptools (without the h11 bounds)
HTTPTOOLS = """
import synister.serve.http as http
bounded = http.uvicorn_config
def with_httptools(app, config):
    settings = bounded(app, config)
    settings.http = "httptools"
    return settings
http.uvicorn_config = with_httptools
from synister.cli import main
main()
"""


def run_job(client: httpx.Client, table: Path, bundle: str) -> dict:
    response = client.post(
        f"{API}/jobs",
        params={"bundle": bundle, "volume": "vol", "filename": table.name},
        content=table.read_bytes(),
    )
    response.raise_for_status()
    return response.json()


def job_rate(job: dict) -> float:
    """Synapses/s of the worker's whole run of the job (model loading included)."""
    return job["result"]["predicted"] / job["result"]["seconds"]


async def http_get(reader, writer, path: str, token: str) -> int:
    """One GET over a kept-alive connection; returns the status. Plain asyncio streams: a
    client library would cost the (shared) CPU more than the server does."""
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def poll(
    port: int,
    token: str,
    job_id: str,
    interval: float,
    stop: asyncio.Event,
    latencies: list[float],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while not stop.is_set():
            for path in (f"{API}/jobs/{job_id}", f"{API}/jobs"):
                start = time.perf_counter()
                try:
                    status = await http_get(reader, writer, path, token)
                    if status != 200:
                        errors.append(f"{path}: {status}")
                except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                    errors.append(f"{path}: {type(error).__name__}: {error}")
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                latencies.append(time.perf_counter() - start)
            if interval:
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except TimeoutError:
                    pass
    finally:
        writer.close()


async def loaded_run(
    service: Service,
    token: str,
    table: Path,
    bundle: str,
    clients: int,
    interval: float,
    max_seconds: float,
) -> dict:
    with service.client(token) as client:
        job = run_job(client, table, bundle)
        latencies: list[float] = []
        errors: list[str] = []
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(
                poll(service.port, token, job["id"], interval, stop, latencies, errors)
            )
            for _ in range(clients)
        ]
        start = time.perf_counter()
        window = [time.time()]
        while time.perf_counter() - start < max_seconds:
            state = (await asyncio.to_thread(client.get, f"{API}/jobs/{job['id']}")).json()
            if state["state"] in ("done", "failed", "cancelled"):
                break
            await asyncio.sleep(0.5)
        seconds = time.perf_counter() - start
        window.append(time.time())
        stop.set()
        await asyncio.gather(*tasks)
    if state["state"] != "done":
        raise RuntimeError(f"the job under load ended {state['state']}: {state['error']}")
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "requests_per_second": len(latencies) / seconds,
        "errors": len(errors),
        "first_errors": errors[:5],
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "job_rate": job_rate(state),
        "window": window,
    }


def server_latencies(log: Path, window: list[float]) -> dict:
    """p50/p99 of the time the service itself took (its request log) within ``window``."""
    ms = []
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") != "request" or not entry["path"].startswith(f"{API}/jobs"):
            continue
        when = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        if window[0] <= when.timestamp() <= window[1]:
            ms.append(entry["ms"])
    return {
        "server_p50_ms": float(np.percentile(ms, 50)),
        "server_p99_ms": float(np.percentile(ms, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds each client waits between its polls (0: none)",
    )
    parser.add_argument("--rows", type=int, default=1500, help="synapses per job")
    parser.add_argument("--bundle", default="slow", choices=("tiny", "slow"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--http", default="h11", choices=("h11", "httptools"))
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp = Path(tmp)
        site = make_site(tmp / "site", bundle_factory(lambda: Path(tempfile.mkdtemp(dir=tmp))))
        table = tmp / "synapses.csv"
        positions(args.rows, seed=0).to_csv(table, index=False)
        service = Service(
            tmp / "service",
            site,
            workers=1,
            cli=None if args.http == "h11" else [sys.executable, "-c", HTTPTOOLS],
            rows_per_job=args.rows,
            lease_seconds=30.0,
            heartbeat_seconds=1.0,
        )
        service.start()
        load_before = os.getloadavg()
        rounds = []
        try:
            token = service.token("bench")
            with service.client(token) as client:  # warm-up: the worker's first job loads more
                job = run_job(client, table, args.bundle)
                wait_job(client, job["id"], "done", timeout=args.max_seconds)
            for _ in range(args.rounds):
                with service.client(token) as client:
                    alone = wait_job(
                        client,
                        run_job(client, table, args.bundle)["id"],
                        "done",
                        timeout=args.max_seconds,
                    )
                loaded = asyncio.run(
                    loaded_run(
                        service,
                        token,
                        table,
                        args.bundle,
                        args.clients,
                        args.interval,
                        args.max_seconds,
                    )
                )
                loaded["job_rate_alone"] = job_rate(alone)
                loaded["slowdown"] = 1 - loaded["job_rate"] / loaded["job_rate_alone"]
                rounds.append(loaded)
        finally:
            service.stop()
        for r in rounds:
            r.update(server_latencies(service.log, r.pop("window")))
    figures = {
        "http": args.http,
        "clients": args.clients,
        "interval_s": args.interval,
        "rows": args.rows,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "rounds": rounds,
        "p50_ms_max": max(r["p50_ms"] for r in rounds),
        "p99_ms_max": max(r["p99_ms"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "slowdown_median": float(np.median([r["slowdown"] for r in rounds])),
    }
    print(json.dumps(figures, indent=1))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
