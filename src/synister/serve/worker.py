"""A worker: claims one job at a time from the store and runs it through the engine.

While a job runs, a heartbeat thread renews the job's lease and stores its progress; it also
notices a user's cancel, a lost lease and a stop request (SIGTERM, or the service that started
the worker having gone). The engine is stopped after its next stored part by raising
:class:`~synister.serve.engine.JobStopped` from its progress callback; what it stored stays,
so the job resumes where it stopped. A stopped worker hands its job back to the queue; a killed
one stops renewing the lease, and after ``lease_seconds`` another worker (or this one,
restarted) takes the job again.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time

from synister.memory import release_memory

from . import engine
from . import files as job_files
from .config import ServiceConfig
from .store import Job, Store, open_store

log = logging.getLogger("synister.serve.worker")

#: the figures of a finished run that a job shows its user (never a path of the service)
RESULT_KEYS = (
    "rows",
    "ok",
    "partly_outside",
    "outside_volume",
    "predicted",
    "resumed_from",
    "neurons",
    "confident_neurons",
)


def _shown(name: str, description: str) -> str:
    """A bundle or volume as the service's users know it."""
    return f"{name} ({description})" if description else name


def worker_name() -> str:
    """host:pid:random, unique among the workers sharing a database."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class _Watch:
    """Progress of the running job, shared by the engine's thread and the heartbeat thread."""

    def __init__(self, total: int, stopping: threading.Event):
        self.stopping = stopping  # the worker is asked to stop: hand the job back
        self.done = 0
        self.total = total
        self.first: tuple[float, int] | None = None  # (time, done) at the first report
        self.last = 0.0
        self.stop_reason: str | None = None  # "cancel", "shutdown" or "lost"

    def progress(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = (now, done)
        self.done, self.total = int(done), int(total)
        self.last = now
        if self.cancelled():
            raise engine.JobStopped(self.stop_reason)

    def cancelled(self) -> bool:
        if self.stop_reason is None and self.stopping.is_set():
            self.stop_reason = "shutdown"
        return self.stop_reason is not None

    def rate(self) -> float | None:
        """Synapses/s of this attempt since its first report."""
        if self.first is None or self.done <= self.first[1]:
            return None
        return (self.done - self.first[1]) / max(self.last - self.first[0], 1e-9)


class Worker:
    def __init__(
        self,
        config: ServiceConfig,
        store: Store | None = None,
        name: str | None = None,
        parent_pid: int | None = None,
    ):
        self.config = config
        self.store = store or open_store(config.database_url)
        self.name = name or worker_name()
        self.parent_pid = parent_pid
        self.stopping = threading.Event()

    def parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def should_stop(self) -> bool:
        if self.parent_gone():
            self.stopping.set()
        return self.stopping.is_set()

    def run(self, max_jobs: int | None = None) -> int:
        """Claim and run jobs until stopped (or ``max_jobs`` ran); returns the jobs run."""
        service = self.config.service
        ran = 0
        log.info("worker started", extra={"event": "worker", "worker": self.name})
        while not self.should_stop() and (max_jobs is None or ran < max_jobs):
            job = self.store.claim(self.name, service.lease_seconds, service.max_attempts)
            if job is None:
                self.stopping.wait(service.poll_seconds)
                continue
            self.run_job(job)
            release_memory()  # the finished job's leftovers: an idle worker holds little
            ran += 1
        log.info("worker stopped", extra={"event": "worker", "worker": self.name})
        return ran

    def engine_job(self, job: Job) -> engine.EngineJob:
        bundle = self.config.bundles.get(job.bundle)
        volume = self.config.volumes.get(job.volume)
        if bundle is None or volume is None:
            missing = "bundle" if bundle is None else "volume"
            name = job.bundle if bundle is None else job.volume
            raise ValueError(f"the service no longer offers the {missing} {name!r}")
        table = job_files.input_path(self.config.results_dir, job.id, job.input_format)
        service = self.config.service
        return engine.EngineJob(
            table,
            bundle.path,
            volume,
            job.options,
            service.device,
            service.threads,
            input_name=job.input_name,
            part_rows=service.part_rows,
            table_limits=engine.table_limits(self.config.limits),
            shown_as={
                "bundle": _shown(job.bundle, bundle.description),
                "volume": _shown(job.volume, volume.description),
            },
        )

    def _message(self, error: BaseException, job: Job) -> str:
        """One line for the user, naming their file rather than where the service keeps it."""
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        text = text or type(error).__name__
        table = job_files.input_path(self.config.results_dir, job.id, job.input_format)
        text = text.replace(str(table), job.input_name)
        bundle = self.config.bundles.get(job.bundle)
        if bundle is not None:
            text = text.replace(str(bundle.path), f"bundle {job.bundle!r}")
        volume = self.config.volumes.get(job.volume)
        if volume is not None:
            text = text.replace(volume.url, f"volume {job.volume!r}")
        return text.replace(str(self.config.results_dir), "<results>")

    def run_job(self, job: Job) -> str:
        """Run one claimed job; returns how it ended (done, failed, cancelled, released, lost)."""
        service = self.config.service
        watch = _Watch(job.total, self.stopping)
        context = {"job": job.id, "user": job.user, "worker": self.name}
        log.info(
            "job started",
            extra={"event": "job", "state": "running", "attempt": job.attempts, **context},
        )
        beating = threading.Event()

        def heartbeat() -> None:
            while not beating.wait(service.heartbeat):
                if self.should_stop() and watch.stop_reason is None:
                    watch.stop_reason = "shutdown"
                try:
                    answer = self.store.heartbeat(
                        job.id,
                        self.name,
                        service.lease_seconds,
                        watch.done,
                        watch.total,
                        watch.rate(),
                    )
                except Exception as error:  # noqa: BLE001 - a database hiccup: try again
                    log.warning(
                        "heartbeat failed",
                        extra={"event": "heartbeat", "error": str(error), **context},
                    )
                    continue
                if answer != "ok" and watch.stop_reason is None:
                    watch.stop_reason = answer

        thread = threading.Thread(target=heartbeat, name="job-heartbeat", daemon=True)
        thread.start()
        start = time.perf_counter()
        outcome, error_text, result = "done", None, {}
        try:
            result = engine.run_job(
                self.engine_job(job),
                job_files.output_dir(self.config.results_dir, job.id),
                watch.progress,
            )
        except engine.JobStopped:
            outcome = {"cancel": "cancelled", "shutdown": "released", "lost": "lost"}[
                watch.stop_reason or "shutdown"
            ]
        except Exception as error:  # noqa: BLE001 - any failure of the job is the job's
            outcome, error_text = "failed", self._message(error, job)
            log.error("job failed", exc_info=True, extra={"event": "job", **context})
        finally:
            beating.set()
            thread.join()
        seconds = time.perf_counter() - start
        if outcome == "released":
            self.store.release(job.id, self.name)
        elif outcome == "cancelled":  # files first: a job shown cancelled has none left
            job_files.remove_job(self.config.results_dir, job.id)
            self.store.finish(job.id, self.name, "cancelled", "cancelled by the user")
        elif outcome in ("done", "failed"):
            result = {k: v for k, v in result.items() if k in RESULT_KEYS}
            result["seconds"] = round(seconds, 3)
            if outcome == "done" and result.get("predicted") and seconds > 0:
                result["synapses_per_second"] = result["predicted"] / seconds
            if not self.store.finish(job.id, self.name, outcome, error_text, result):
                outcome = "lost"
        if outcome == "failed":  # the record says why; the files are of no use (not when the
            job_files.remove_job(self.config.results_dir, job.id)  # job was lost: another runs it)
        log.info(
            f"job {outcome}",
            extra={
                "event": "job",
                "state": outcome,
                "seconds": round(seconds, 3),
                "error": error_text,
                "result": result,
                **context,
            },
        )
        return outcome


def run_worker(config: ServiceConfig, parent_pid: int | None = None) -> None:
    """The worker process's main: run until SIGTERM/SIGINT (or the parent service is gone)."""
    os.umask(config.service.umask_bits)  # default 077: results are the account's alone
    worker = Worker(config, parent_pid=parent_pid)

    def stop(signum, frame) -> None:
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run()
    finally:
        worker.store.close()
