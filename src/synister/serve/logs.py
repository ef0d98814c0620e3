"""Structured logs: one JSON object per line on stderr, for requests, jobs and errors.

A record's ``extra`` fields become keys (``event``, ``job``, ``user``, ``status``, ...). No
request header is ever logged, so tokens never reach a log.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time
from collections import Counter

#: the web app's records (requests, jobs, health) share one logger
APP_LOG = logging.getLogger("synister.serve.app")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO, stream=None) -> None:
    """Send every log record (uvicorn's and Python warnings too) to ``stream`` (stderr) as
    JSON lines. Records are formatted where they are logged and written by a background
    thread, so the web app's event loop never waits for a write."""
    output = logging.StreamHandler(stream or sys.stderr)  # writes the JSON text as it is
    records: queue.SimpleQueue = queue.SimpleQueue()
    handler = logging.handlers.QueueHandler(records)
    handler.setFormatter(JsonFormatter())
    listener = logging.handlers.QueueListener(records, output)
    listener.start()
    atexit.register(listener.stop)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class RequestLog:
    """ASGI middleware: one JSON log line per request (method, path, status, ms, user)."""

    def __init__(self, app, counts: Counter):
        self.app = app
        self.counts = counts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.counts[(scope["method"], status[0])] += 1
            APP_LOG.info(
                "request",
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status[0],
                    "ms": round((time.perf_counter() - start) * 1000, 2),
                    "user": scope.get("state", {}).get("user"),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
