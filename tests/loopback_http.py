"""A real HTTP server on loopback that serves a folder, as an object store would, for the
remote-volume tests and ``benchmarks/bench_remote.py``.

HTTP/1.1 with keep-alive and ETags (as GCS, S3 and nginx send them), every request counted
at the server, and what a network does to a run: a latency added to every response, a
bandwidth shared by all responses (one link), and faults injected per path (a status answered
instead of the file, a given number of times).
"""

from __future__ import annotations

import collections
import hashlib
import http.server
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np


def write_precomputed(
    folder: Path, raw_zyx: np.ndarray, chunk_xyz, encoding: str = "raw", **scale
) -> None:
    """Write ``raw_zyx`` (uint8) as neuroglancer precomputed into ``folder``: scales 4 x 4 x 40
    and 8 x 8 x 40 nm (every other voxel in y and x), chunks ``chunk_xyz``, ``encoding``
    (``scale``: more scale metadata, e.g. jpeg_quality)."""
    import tensorstore as ts

    for factor in (1, 2):
        data = raw_zyx[:, ::factor, ::factor]
        store = ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": {"driver": "file", "path": str(folder)},
                "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
                "scale_metadata": {
                    "size": list(data.shape[::-1]),
                    "resolution": [4 * factor, 4 * factor, 40],
                    "chunk_size": list(chunk_xyz),
                    "encoding": encoding,
                    **scale,
                },
                "create": True,
            }
        ).result()
        store.write(data.T[..., None]).result()


class LoopbackServer:
    """Serves ``root`` at :attr:`url` (http://127.0.0.1:PORT) until :meth:`close`; a context
    manager. ``latency_s`` is added to every response; ``bandwidth_bytes_s`` caps the bytes
    per second of all responses together (None: no cap)."""

    def __init__(
        self, root: str | Path, latency_s: float = 0.0, bandwidth_bytes_s: float | None = None
    ):
        self.root = Path(root)
        self.latency_s = float(latency_s)
        self.bandwidth_bytes_s = bandwidth_bytes_s
        self.requests: collections.Counter[str] = collections.Counter()  # path -> GET/HEADs
        self.statuses: collections.Counter[int] = collections.Counter()
        self.bytes_sent = 0
        self.faults: dict[str, list[int]] = {}  # path -> statuses to answer first, in order
        self._lock = threading.Lock()
        self._link_free = 0.0  # when the shared link has sent what was queued on it
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, path: str, *statuses: int) -> None:
        """Answer the next requests of ``path`` (relative to the root) with ``statuses``."""
        with self._lock:
            self.faults.setdefault("/" + path.strip("/"), []).extend(statuses)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.statuses.clear()
            self.bytes_sent = 0

    def count(self, prefix: str = "") -> int:
        """Requests of paths below ``prefix``."""
        prefix = "/" + prefix.strip("/")
        with self._lock:
            return sum(n for path, n in self.requests.items() if path.startswith(prefix))

    def distinct(self, prefix: str = "") -> int:
        """Distinct paths below ``prefix`` requested."""
        prefix = "/" + prefix.strip("/")
        with self._lock:
            return sum(1 for path in self.requests if path.startswith(prefix))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- used by the handler --------------------------------------------------------------

    def _note(self, path: str) -> int | None:
        """Count a request; the status to answer instead of the file, if one is queued."""
        with self._lock:
            self.requests[path] += 1
            queued = self.faults.get(path)
            return queued.pop(0) if queued else None

    def _send_delay(self, size: int) -> float:
        """Seconds until a response of ``size`` bytes has gone through the link."""
        now = time.monotonic()
        with self._lock:
            self.bytes_sent += size
            if not self.bandwidth_bytes_s:
                return self.latency_s
            start = max(now, self._link_free)
            self._link_free = start + size / self.bandwidth_bytes_s
            return self._link_free - now + self.latency_s


class _Server(http.server.ThreadingHTTPServer):
    # the stdlib's listen backlog of 5 drops connections when a client opens 32 at once, and
    # the client then waits 1 s to try again (TCP's SYN retransmission)
    request_queue_size = 1024
    daemon_threads = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as object stores answer
    disable_nagle_algorithm = True
    server_state: LoopbackServer

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        state = self.server_state
        path = unquote(urlsplit(self.path).path)
        status = state._note(path)
        file = (state.root / path.lstrip("/")).resolve()
        if status is None:
            inside = file.is_relative_to(state.root.resolve())
            status = 200 if inside and file.is_file() else 404
        payload = file.read_bytes() if status == 200 else b""
        etag = f'"{hashlib.md5(payload).hexdigest()}"' if status == 200 else None
        if etag is not None and self.headers.get("If-None-Match") == etag:
            status, payload = 304, b""
        time.sleep(state._send_delay(len(payload) if body else 0))
        with state._lock:
            state.statuses[status] += 1
        self.send_response(status)
        if etag is not None:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body and payload:
            self.wfile.write(payload)


def serve_until_told(root: str, latency_s: float, bandwidth_bytes_s: float | None) -> None:
    """Run a :class:`LoopbackServer` in this process, for a measured run in another (so that
    the server's threads do not share the measured process's GIL): prints its URL, then
    answers each line ``PREFIX`` of stdin with the JSON counts of requests below it, until
    stdin closes."""
    with LoopbackServer(root, latency_s, bandwidth_bytes_s) as server:
        print(server.url, flush=True)
        for line in sys.stdin:
            prefix = line.strip()
            counts = {
                "requests": server.count(prefix),
                "distinct": server.distinct(prefix),
                "bytes_sent": server.bytes_sent,
            }
            print(json.dumps(counts), flush=True)


if __name__ == "__main__":  # python loopback_http.py ROOT LATENCY_S BANDWIDTH_BYTES_S|none
    serve_until_told(
        sys.argv[1], float(sys.argv[2]), None if sys.argv[3] == "none" else float(sys.argv[3])
    )
