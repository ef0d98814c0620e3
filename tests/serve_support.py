"""Shared set-up of the service tests: a small site (volume, model bundles, tables) and the real
service started as a subprocess (a warm one, see ``warm.py``) on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from warm import WARM

from synister.volumes import write_volume

CLASSES = ["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine", "dopamine"]
VOXEL_NM = (40, 4, 4)
SHAPE_VOX = (24, 128, 128)


def positions(n: int, seed: int) -> pd.DataFrame:
    """FlyWire-like rows inside the volume: id, neuron id, x, y, z in nm."""
    rng = np.random.default_rng(seed)
    extent_xyz = np.array(SHAPE_VOX[::-1]) * np.array(VOXEL_NM[::-1])
    xyz = rng.uniform(0.1, 0.9, (n, 3)) * extent_xyz
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64) + 1000,
            "pre_pt_root_id": rng.integers(0, 6, n).astype(np.int64) + 720575940600000000,
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
        }
    )


#: the random-weight bundles of the site: ``tiny`` (fast) and ``slow`` (for jobs that must last)
BUNDLES = {"tiny": ((4, 16, 16), 1), "slow": ((8, 32, 32), 8)}


def site_bundle(random_bundle, name: str) -> Path:
    """The session's random bundle ``name`` of :data:`BUNDLES` (the conftest's factory)."""
    input_shape, fmaps = BUNDLES[name]
    return random_bundle(input_shape, fmaps=fmaps, downsample_factors=[(1, 2, 2)] * 4)


def make_site(folder: Path, random_bundle) -> Path:
    """Volume and links to the bundles of :data:`BUNDLES` (read-only)."""
    rng = np.random.default_rng(0)
    write_volume(
        folder / "vol.zarr",
        rng.integers(0, 256, SHAPE_VOX, dtype=np.uint8),
        VOXEL_NM,
        chunks_vox=(8, 64, 64),
    )
    (folder / "bundles").mkdir()
    for name in BUNDLES:
        (folder / "bundles" / name).symlink_to(site_bundle(random_bundle, name))
    (folder / "not_a_volume").mkdir()
    return folder


def config_text(
    site: Path,
    port: int,
    database: str = "sqlite:///service.db",
    rows_per_job: int = 1000,
    limits: dict | None = None,
    **service,
) -> str:
    settings = {
        "port": port,
        "database": database,
        "results": "results",
        "workers": 1,
        "lease_seconds": 3.0,
        "heartbeat_seconds": 0.25,
        "poll_seconds": 0.1,
        "max_attempts": 5,
        "threads": 1,
        "shutdown_grace_seconds": 30.0,
    }
    settings.update(service)
    lines = ["[service]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    limit_values = {"upload_bytes": 300000, "rows_per_job": rows_per_job}
    limit_values |= {"queued_jobs_per_user": 3, **(limits or {})}
    lines += ["[limits]"] + [f"{k} = {json.dumps(v)}" for k, v in limit_values.items()]
    lines += [
        "[bundles.tiny]",
        f'path = "{site}/bundles/tiny"',
        'description = "tiny test network"',
        "[bundles.slow]",
        f'path = "{site}/bundles/slow"',
        "[volumes.vol]",
        f'url = "{site}/vol.zarr"',
        'dataset = "raw"',
        'description = "random test volume"',
        "[volumes.broken]",
        f'url = "{site}/not_a_volume"',
    ]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_pid(port: int) -> int:
    """The process listening on loopback ``port`` (the web app's, whichever program started
    it): its socket's inode in /proc/net/tcp, then the process holding that socket."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    for fd_folder in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) in inodes for fd in fd_folder.iterdir()):
                return int(fd_folder.parent.name)
        except OSError:  # gone, or not ours to read
            continue
    raise AssertionError(f"no process listens on port {port}")


def peak_rss(pid: int) -> int:
    """The peak resident memory of process ``pid`` so far (VmHWM, bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Service:
    """`synister serve --config FOLDER/service.toml` as a subprocess (its own session)."""

    def __init__(
        self,
        folder: Path,
        site: Path,
        workers: int | None = None,
        cli: list[str] | None = None,
        **service,
    ):
        self.cli = cli or WARM.cli()  # how `synister` is run (a benchmark may patch it)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = folder / "service.toml"
        self.config.write_text(config_text(site, self.port, **service))
        self.workers = workers
        self.log = folder / "service.log"
        self.process: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> Service:
        args = [*self.cli, "serve", "--config", str(self.config)]
        if self.workers is not None:
            args += ["--workers", str(self.workers)]
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def healthy():
            if self.process.poll() is not None:
                raise AssertionError(f"service exited: {self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.base}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout, "the service to answer /health", interval=0.2)
        return self

    def stop(self, timeout: float = 90) -> int:
        """SIGTERM (graceful); returns the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """kill -9 of the service and every process of its session (workers included)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        WARM.settle()  # the warm service and its workers die with their clients (warm.py)

    def token(self, user: str, admin: bool = False) -> str:
        from synister.serve.config import load_service_config
        from synister.serve.store import open_store

        with open_store(load_service_config(self.config).database_url) as store:
            return store.create_token(user, admin=admin)[1]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # idle connections dropped well before the service closes them (keep_alive_seconds,
        # 5 s): a request sent on one as the service closes it fails with "disconnected"
        limits = httpx.Limits(keepalive_expiry=2.0)
        return httpx.Client(base_url=self.base, headers=headers, timeout=60, limits=limits)

    def start_worker(self) -> subprocess.Popen:
        """An extra `synister serve worker` (as on another machine)."""
        with open(self.folder / "worker.log", "a") as log:
            return subprocess.Popen(
                [*WARM.cli(), "serve", "worker", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def predict_positions_command(site: Path, table: Path, out: Path, bundle: str = "tiny") -> list:
    """`synister predict-positions` on ``table`` directly (no service), with the site's
    volume and one torch thread as the service's workers have; ``--csv`` as the service."""
    return [*WARM.cli(), *predict_positions_args(site, table, out, bundle)]


def predict_positions_args(site: Path, table: Path, out: Path, bundle: str) -> list[str]:
    return [
        "predict-positions",
        "--model",
        str(site / "bundles" / bundle),
        "--volume",
        str(site / "vol.zarr"),
        "--dataset",
        "raw",
        "--positions",
        str(table),
        "--out",
        str(out),
        "--csv",
        "--threads",
        "1",
        "--no-progress",
    ]


def run_cli(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``synister ARGS`` in this process (typer's runner, from the folder ``cwd``), returned as
    a finished process: exit status, stdout, stderr. For commands whose process does not
    matter: a subprocess would import torch again (seconds of CPU)."""
    from typer.testing import CliRunner

    from synister.cli import app

    with contextlib.chdir(cwd or Path.cwd()):
        result = CliRunner().invoke(app, args)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def predict_positions(site: Path, table: Path, out: Path, bundle: str = "tiny"):
    """Run :func:`predict_positions_command` (in this process, see :func:`run_cli`)."""
    return run_cli(predict_positions_args(site, table, out, bundle))


def submit(client: httpx.Client, path: Path, bundle: str = "tiny", **params) -> httpx.Response:
    query = {"bundle": bundle, "volume": "vol", "filename": path.name, **params}
    return client.post("/api/v1/jobs", params=query, content=path.read_bytes())


def wait_job(
    client: httpx.Client,
    job_id: str,
    states,
    timeout: float = 300,
    what: str | None = None,
    predicate=None,
) -> dict:
    """Poll a job until its state is one of ``states`` (and ``predicate(job)`` holds)."""
    states = {states} if isinstance(states, str) else set(states)

    def check():
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in {"failed"} - states:
            raise AssertionError(f"job failed: {job['error']}")
        return job if job["state"] in states and (predicate is None or predicate(job)) else None

    return wait_for(check, timeout, what or f"job {job_id} to be {'/'.join(states)}")
