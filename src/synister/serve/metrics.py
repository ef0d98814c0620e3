"""``/metrics`` in the Prometheus text format (version 0.0.4), from the job store."""

from __future__ import annotations

from .store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:g}" for labels, value in samples]
    return "\n".join(lines)


def _process_memory() -> tuple[int, int]:
    """This process's resident memory now and at its peak (bytes; Linux)."""
    found = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in found:
                    found[key] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return found["VmRSS"], found["VmHWM"]


def render(store: Store, requests: dict[tuple[str, int], int]) -> str:
    """The service's metrics; ``requests`` counts HTTP requests by (method, status)."""
    counts = store.counts()
    families = [
        _family(
            "synister_queue_length",
            "gauge",
            "Jobs waiting for a worker.",
            [("", counts["queued"])],
        ),
        _family(
            "synister_jobs",
            "gauge",
            "Jobs by state.",
            [(f'{{state="{state}"}}', n) for state, n in counts.items()],
        ),
        _family(
            "synister_synapses_per_second",
            "gauge",
            "Prediction rate of the running jobs, summed (synapses/s).",
            [("", store.running_rate())],
        ),
        _family(
            "synister_synapses_predicted_total",
            "counter",
            "Synapses predicted by all jobs.",
            [("", store.predicted_total())],
        ),
        _family(
            "synister_http_requests_total",
            "counter",
            "HTTP requests answered by this process, by method and status.",
            [
                (f'{{method="{method}",status="{status}"}}', n)
                for (method, status), n in sorted(requests.items())
            ],
        ),
    ]
    rss, peak = _process_memory()
    families += [
        _family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the web app's process (tables are checked in other processes).",
            [("", rss)],
        ),
        _family(
            "synister_process_peak_resident_memory_bytes",
            "gauge",
            "Peak resident memory of the web app's process since it started.",
            [("", peak)],
        ),
    ]
    return "\n".join(families) + "\n"
