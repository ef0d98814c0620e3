"""`synister serve`: the web app on uvicorn in this process, the workers in child processes.

The service process restarts a worker that dies (a job it ran is taken again once its lease
runs out). SIGTERM or SIGINT stop it gracefully: the web app stops taking requests, then each
worker stops its job at the next batch and hands it back to the queue, or is killed after
``shutdown_grace_seconds``. A worker whose service died (kill -9) notices and stops itself.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from synister.config import ConfigError

from .config import ServiceConfig

log = logging.getLogger("synister.serve")

#: a worker that dies sooner than this after its start is restarted only after a pause
RESTART_PAUSE_SECONDS = 5.0


def check_choices(config: ServiceConfig) -> None:
    """Fail early, naming the config key, where a bundle or a local volume is missing."""
    where = config.source or "service config"
    for name, bundle in config.bundles.items():
        if not bundle.path.is_dir():
            raise ConfigError(f"{where}: bundles.{name}.path: no bundle folder at {bundle.path}")
    for name, volume in config.volumes.items():
        if "://" not in volume.url and not Path(volume.url).exists():
            raise ConfigError(f"{where}: volumes.{name}.url: nothing at {volume.url}")
    if not config.bundles or not config.volumes:
        raise ConfigError(f"{where}: name at least one [bundles.NAME] and one [volumes.NAME]")


def worker_command(config_path: Path, parent_pid: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from synister.cli import main; main()",
        "serve",
        "worker",
        "--config",
        str(config_path),
        "--parent-pid",
        str(parent_pid),
    ]


class WorkerPool:
    """Worker processes, restarted when they die until :meth:`stop`."""

    def __init__(self, config: ServiceConfig, count: int):
        self.config = config
        self.count = count
        self.processes: list[subprocess.Popen | None] = [None] * count
        self.started: list[float] = [0.0] * count
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="worker-pool", daemon=True)

    def _start(self, slot: int) -> None:
        process = subprocess.Popen(worker_command(self.config.source, os.getpid()))
        self.processes[slot], self.started[slot] = process, time.monotonic()
        log.info("worker process started", extra={"event": "worker", "pid": process.pid})

    def start(self) -> None:
        for slot in range(self.count):
            self._start(slot)
        self._thread.start()

    def _supervise(self) -> None:
        while not self.stopping.wait(0.5):
            for slot, process in enumerate(self.processes):
                if process is None or process.poll() is None:
                    continue
                if time.monotonic() - self.started[slot] < RESTART_PAUSE_SECONDS:
                    continue  # a worker that cannot start: do not spin
                log.warning(
                    "worker process died; starting another",
                    extra={"event": "worker", "pid": process.pid, "returncode": process.returncode},
                )
                if not self.stopping.is_set():
                    self._start(slot)

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM every worker; SIGKILL those still running after ``grace_seconds``."""
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        live = [p for p in self.processes if p is not None and p.poll() is None]
        for process in live:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for process in live:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "worker did not stop in time; killing it",
                    extra={"event": "worker", "pid": process.pid},
                )
                process.kill()
                process.wait()


def file_modes(config: ServiceConfig) -> None:
    """Files this process creates get the modes of ``[service] umask`` (default 077: 0600,
    folders 0700), and so do the results folder and a SQLite job database made before."""
    umask = config.service.umask_bits
    os.umask(umask)
    paths = [config.results_dir, config.results_dir / "jobs"]
    if config.database_url.startswith("sqlite:///"):
        database = Path(config.database_url.removeprefix("sqlite:///"))
        paths += [database, *database.parent.glob(database.name + "-*")]  # -wal, -shm
    for path in paths:
        if path.exists() and path.stat().st_uid == os.getuid():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


class Pruner:
    """Applies the retention rules (:func:`~synister.serve.retention.prune`) now and every
    :data:`~synister.serve.retention.PRUNE_SECONDS`, in a thread."""

    def __init__(self, config: ServiceConfig, store):
        self.config, self.store = config, store
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pruner", daemon=True)

    def _run(self) -> None:
        from .retention import PRUNE_SECONDS, prune_logged

        while True:
            prune_logged(self.config, self.store, log)
            if self.stopping.wait(PRUNE_SECONDS):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join()


def serve(config: ServiceConfig, workers: int | None = None) -> None:
    """Run the service until SIGTERM/SIGINT."""
    import uvicorn

    from .app import create_app
    from .http import uvicorn_config

    check_choices(config)
    file_modes(config)
    app = create_app(config)
    pool = WorkerPool(config, config.service.workers if workers is None else workers)
    pruner = Pruner(config, app.state.store)
    stop_signal: list[int] = []

    def remember(signum, frame) -> None:  # uvicorn re-raises the signal after its shutdown
        stop_signal.append(signum)

    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = uvicorn.Server(uvicorn_config(app, config))
    pool.start()
    pruner.start()
    try:
        server.run()
    finally:
        log.info("stopping workers", extra={"event": "shutdown"})
        pruner.stop()
        pool.stop(config.service.shutdown_grace_seconds + 5)
        app.state.store.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("service stopped", extra={"event": "shutdown"})
